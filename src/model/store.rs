//! `store:` in kiln.yaml: where kiln keeps its state. The embedded redb file
//! under `state_dir` (the default, for one daemon), or an etcd cluster shared
//! by several daemons (docs/ha.md).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    #[default]
    Redb,
    Etcd,
}

/// As written in kiln.yaml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreWire {
    #[serde(default)]
    pub(super) backend: Backend,
    #[serde(default)]
    pub(super) endpoints: Vec<String>,
    #[serde(default)]
    pub(super) prefix: Option<String>,
    #[serde(default)]
    pub(super) tls: Option<EtcdTls>,
    #[serde(default)]
    pub(super) daemon: Option<String>,
    #[serde(default)]
    pub(super) secrets_key: Option<PathBuf>,
    #[serde(default)]
    pub(super) segment: Option<String>,
    #[serde(default)]
    pub(super) service_address: Option<std::net::Ipv4Addr>,
}

/// Client TLS to etcd: its CA, and a client certificate if etcd asks for one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    pub ca: PathBuf,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http(s)://host:port` or `unix:///path`.
    pub endpoints: Vec<String>,
    /// Every key kiln writes starts with it (default `/kiln`).
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    /// This daemon's name among those sharing the prefix (default: the
    /// host's name): DHCP clients are split among the names alive.
    pub daemon: String,
    /// A 0600 file holding the key (32 bytes, hex) cluster secrets are
    /// sealed with in etcd, the same on every daemon. None: each daemon
    /// keeps its own copy of each secrets file (docs/ha.md).
    pub secrets_key: Option<PathBuf>,
    /// The L2 segment this daemon answers DHCP on: daemons on one segment
    /// split its clients, daemons on others (one per rack) answer their own.
    /// Default: full mode's subnets; in proxy mode `proxy` (set it per
    /// segment when daemons serve different ones).
    pub segment: String,
    /// An address one live daemon holds at a time (elected through etcd,
    /// announced with gratuitous ARP), that machines are told for TFTP,
    /// HTTP, configs, events and kernel logs; DHCP stays on each daemon's
    /// own server_address.
    pub service_address: Option<std::net::Ipv4Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreSettings {
    #[default]
    Redb,
    Etcd(EtcdSettings),
}

impl StoreWire {
    /// Validate; `rel` resolves paths against the config file's folder.
    pub(super) fn settings(
        &self,
        rel: impl Fn(&std::path::Path) -> PathBuf,
    ) -> Result<StoreSettings, (&'static str, String)> {
        match self.backend {
            Backend::Redb => {
                if !self.endpoints.is_empty()
                    || self.tls.is_some()
                    || self.secrets_key.is_some()
                    || self.segment.is_some()
                    || self.service_address.is_some()
                {
                    return Err((
                        "store.endpoints",
                        "endpoints, tls, secrets_key, segment and service_address are for `backend: etcd`".into(),
                    ));
                }
                Ok(StoreSettings::Redb)
            }
            Backend::Etcd => {
                if self.endpoints.is_empty() {
                    return Err((
                        "store.endpoints",
                        "`backend: etcd` needs at least one endpoint (http://host:2379, https://..., unix:///path)".into(),
                    ));
                }
                for e in &self.endpoints {
                    if !["http://", "https://", "unix://"]
                        .iter()
                        .any(|p| e.starts_with(p))
                    {
                        return Err((
                            "store.endpoints",
                            format!("{e:?}: an endpoint is http://host:port, https://host:port or unix:///path"),
                        ));
                    }
                }
                let prefix = self.prefix.clone().unwrap_or_else(|| "/kiln".into());
                if !prefix.starts_with('/') || prefix.len() < 2 {
                    return Err((
                        "store.prefix",
                        format!("{prefix:?}: a prefix starts with / and names something (default /kiln)"),
                    ));
                }
                let tls = self.tls.as_ref().map(|t| EtcdTls {
                    ca: rel(&t.ca),
                    cert: t.cert.as_deref().map(&rel),
                    key: t.key.as_deref().map(&rel),
                });
                if let Some(t) = &tls {
                    if t.cert.is_some() != t.key.is_some() {
                        return Err(("store.tls", "cert and key go together".into()));
                    }
                }
                let daemon = match &self.daemon {
                    Some(d) => d.clone(),
                    None => host_name(),
                };
                if daemon.is_empty()
                    || !daemon
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err((
                        "store.daemon",
                        format!("{daemon:?}: a daemon name is letters, digits, - _ and ."),
                    ));
                }
                Ok(StoreSettings::Etcd(EtcdSettings {
                    endpoints: self.endpoints.clone(),
                    prefix,
                    tls,
                    daemon,
                    secrets_key: self.secrets_key.as_deref().map(&rel),
                    // Empty: the config fills it in from the DHCP mode.
                    segment: self.segment.clone().unwrap_or_default(),
                    service_address: self.service_address,
                }))
            }
        }
    }
}

/// The host's name (`/proc/sys/kernel/hostname`), or `kiln`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kiln".into())
}
