//! kubeconfig for the operator: one cluster/user/context per kiln cluster, with
//! an admin client certificate signed by that cluster's Kubernetes CA (CN=admin,
//! O=system:masters, as Talos's admin kubeconfig), server = the cluster endpoint.

use serde::{Deserialize, Serialize};

use crate::talos::secrets::{b64, issue_client_cert_from, Bundle, SecretsError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeConfig {
    #[serde(rename = "apiVersion", default = "v1")]
    pub api_version: String,
    #[serde(default = "config_kind")]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    pub users: Vec<Named<UserEntry>>,
    #[serde(default)]
    pub contexts: Vec<Named<ContextEntry>>,
    #[serde(rename = "current-context", default)]
    pub current_context: String,
    /// Anything else kubectl wrote (preferences, extensions) is kept.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

fn v1() -> String {
    "v1".into()
}
fn config_kind() -> String {
    "Config".into()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named<T> {
    pub name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context", flatten)]
    pub item: T,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEntry {
    pub cluster: serde_json::Value,
}
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    pub user: serde_json::Value,
}
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEntry {
    pub context: serde_json::Value,
}

fn upsert<T>(v: &mut Vec<Named<T>>, n: Named<T>) {
    match v.iter_mut().find(|x| x.name == n.name) {
        Some(x) => *x = n,
        None => v.push(n),
    }
}

impl KubeConfig {
    pub fn parse(text: &str) -> Result<KubeConfig, String> {
        crate::problems::parse_yaml(text)
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string_with_options(self, crate::talos::yaml_options()).unwrap_or_default()
    }

    /// Add or replace `other`'s entries (same names replace); its current context wins.
    pub fn merge(&mut self, other: KubeConfig) {
        for c in other.clusters {
            upsert(&mut self.clusters, c);
        }
        for u in other.users {
            upsert(&mut self.users, u);
        }
        for c in other.contexts {
            upsert(&mut self.contexts, c);
        }
        if !other.current_context.is_empty() {
            self.current_context = other.current_context;
        }
        if self.api_version.is_empty() {
            self.api_version = v1();
        }
        if self.kind.is_empty() {
            self.kind = config_kind();
        }
    }

    pub fn context_names(&self) -> Vec<String> {
        self.contexts.iter().map(|c| c.name.clone()).collect()
    }
}

/// An admin kubeconfig for one cluster (`admin@<cluster>`), with a fresh certificate.
pub fn admin(cluster: &str, endpoint: &str, bundle: &Bundle) -> Result<KubeConfig, SecretsError> {
    let ca = bundle.certs.k8s.as_ref().ok_or(SecretsError::Crypto {
        what: "kubeconfig",
        message: "no certs.k8s".into(),
    })?;
    let (crt, key) = issue_client_cert_from(ca, Some("admin"), &["system:masters"])?;
    let user = format!("admin@{cluster}");
    Ok(KubeConfig {
        api_version: v1(),
        kind: config_kind(),
        clusters: vec![Named {
            name: cluster.into(),
            item: ClusterEntry {
                cluster: serde_json::json!({ "server": endpoint, "certificate-authority-data": ca.crt }),
            },
        }],
        users: vec![Named {
            name: user.clone(),
            item: UserEntry {
                user: serde_json::json!({ "client-certificate-data": b64(&crt), "client-key-data": b64(&key) }),
            },
        }],
        contexts: vec![Named {
            name: user.clone(),
            item: ContextEntry {
                context: serde_json::json!({ "cluster": cluster, "namespace": "default", "user": user }),
            },
        }],
        current_context: user,
        other: Default::default(),
    })
}
