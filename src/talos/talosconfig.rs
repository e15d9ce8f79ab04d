//! talosconfig (pkg/machinery/client/config): contexts with endpoints, the OS CA
//! and an `os:admin` client certificate, as talosctl reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::secrets::{b64, issue_client_cert, Bundle, SecretsError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub ca: String,
    #[serde(default)]
    pub crt: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TalosConfig {
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

impl TalosConfig {
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string_with_options(self, crate::model::yaml::yaml_options())
            .unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<TalosConfig, crate::model::yaml::YamlError> {
        crate::model::problems::parse_yaml(text)
    }

    /// Add or replace contexts from `other`; `other`'s current context wins.
    pub fn merge(&mut self, other: TalosConfig) {
        self.contexts.extend(other.contexts);
        if !other.context.is_empty() {
            self.context = other.context;
        }
    }
}

/// A context for `cluster` with a fresh admin certificate.
pub fn admin_context(bundle: &Bundle, endpoints: Vec<String>) -> Result<Context, SecretsError> {
    let (crt, key) = issue_client_cert(bundle, &["os:admin"])?;
    Ok(Context {
        endpoints,
        nodes: Vec::new(),
        ca: bundle.os().crt.clone(),
        crt: b64(&crt),
        key: b64(&key),
    })
}

pub fn single(cluster: &str, ctx: Context) -> TalosConfig {
    TalosConfig {
        context: cluster.to_string(),
        contexts: BTreeMap::from([(cluster.to_string(), ctx)]),
    }
}
