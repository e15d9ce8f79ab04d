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
    pub fn parse(text: &str) -> Result<KubeConfig, crate::model::yaml::YamlError> {
        crate::model::problems::parse_yaml(text)
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string_with_options(self, crate::model::yaml::yaml_options())
            .unwrap_or_default()
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

/// DELETE `/api/v1/nodes/<hostname>` on `cluster`'s endpoint with the admin
/// credentials kiln keeps; returns the HTTP status.
pub fn delete_node(
    cfg: &crate::model::config::Config,
    cluster: &str,
    hostname: &str,
) -> Result<u16, String> {
    use std::sync::Arc;
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let path = cfg.state_dir.join("kubeconfig");
    let kc = KubeConfig::parse(
        &std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
    )
    .map_err(|e| e.to_string())?;
    let cl = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .ok_or_else(|| format!("no cluster {cluster} in {}", path.display()))?;
    let user = kc
        .users
        .iter()
        .find(|u| u.name == format!("admin@{cluster}"))
        .ok_or("no admin user")?;
    let field = |v: &serde_json::Value, k: &str| -> Result<Vec<u8>, String> {
        let b = v[k].as_str().ok_or_else(|| format!("{k} missing"))?;
        crate::talos::secrets::pem_of(b)
            .map(String::into_bytes)
            .ok_or_else(|| format!("{k} is not base64 PEM"))
    };
    let server = cl.item.cluster["server"]
        .as_str()
        .ok_or("no server")?
        .trim_end_matches('/')
        .to_string();
    let ca_pem = field(&cl.item.cluster, "certificate-authority-data")?;
    let crt_pem = field(&user.item.user, "client-certificate-data")?;
    let key_pem = field(&user.item.user, "client-key-data")?;
    let ca = Certificate::from_pem(&ca_pem)
        .map_err(|e| e.to_string())?
        .to_owned();
    let crt = Certificate::from_pem(&crt_pem)
        .map_err(|e| e.to_string())?
        .to_owned();
    let key = PrivateKey::from_pem(&key_pem)
        .map_err(|e| e.to_string())?
        .to_owned();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
        .client_cert(Some(ClientCert::new_with_certs(&[crt], key)))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(15)))
        .build()
        .into();
    let url = format!("{server}/api/v1/nodes/{hostname}");
    let r = agent
        .delete(&url)
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(r.status().as_u16())
}
