//! kiln.yaml as the operator writes it, read through figment with `KILN_`
//! environment overrides; `config` validates it into the model.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format};
use figment::Figment;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::problems::Problems;

/// Read the file (and the environment); every problem is named by key.
pub(super) fn read(path: &Path, problems: &mut Problems) -> Option<Wire> {
    match Figment::new()
        .merge(serde_saphyr::figment::Yaml::file_exact(path))
        .merge(
            Env::prefixed("KILN_")
                // KILN_LOG (log filter) and KILN_CONFIG (the file's path) are not keys.
                .filter(|k| {
                    !["log", "config"]
                        .iter()
                        .any(|x| k.as_str().eq_ignore_ascii_case(x))
                })
                .split("__"),
        )
        .extract()
    {
        Ok(w) => Some(w),
        Err(e) => {
            for err in e {
                let key = err.path.join(".");
                let mut msg = err.kind.to_string();
                if let Some(m) = &err.metadata {
                    if m.name.contains("environment") {
                        msg = format!("{msg} (from the environment)");
                    }
                }
                problems.push(path, &key, msg);
            }
            None
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Wire {
    pub(super) interface: String,
    pub(super) server_address: Ipv4Addr,
    #[serde(default)]
    pub(super) listen_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub(super) ports: Ports,
    #[serde(default)]
    pub(super) dhcp: DhcpWire,
    #[serde(default)]
    pub(super) unknown_machines: UnknownMachines,
    #[serde(default)]
    pub(super) default_profile: Option<String>,
    #[serde(default = "default_state_dir")]
    pub(super) state_dir: PathBuf,
    #[serde(default = "default_boot_assets")]
    pub(super) boot_assets: PathBuf,
    #[serde(default)]
    pub(super) ipxe_dirs: Option<Vec<PathBuf>>,
    /// Talos Image Factory (a self-hosted image-factory works too).
    #[serde(default = "default_factory_url")]
    pub(super) factory_url: String,
    #[serde(default = "default_profiles")]
    pub(super) profiles: PathBuf,
    #[serde(default = "default_machines")]
    pub(super) machines: PathBuf,
    #[serde(default = "default_token_ttl")]
    pub(super) boot_token_ttl: String,
    #[serde(default)]
    pub(super) clusters: std::collections::BTreeMap<String, ClusterWire>,
    #[serde(default)]
    pub(super) ipv6_router_advertisements: Option<bool>,
    #[serde(default)]
    pub(super) api_tcp: bool,
    #[serde(default)]
    pub(super) limits: Limits,
    #[serde(default)]
    pub(super) store: super::store::StoreWire,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterWire {
    pub(super) endpoint: String,
    pub(super) talos_version: Option<String>,
    pub(super) kubernetes_version: Option<String>,
    pub(super) secrets: Option<PathBuf>,
    #[serde(default)]
    pub(super) additional_sans: Vec<String>,
    pub(super) dns_domain: Option<String>,
    pub(super) install_image: Option<String>,
    /// Image defaults for the cluster's profiles (each profile adds its own).
    #[serde(default)]
    pub(super) extensions: Vec<String>,
    #[serde(default)]
    pub(super) extra_kernel_args: Vec<String>,
    #[serde(default = "yes")]
    pub(super) auto_bootstrap: bool,
}

fn yes() -> bool {
    true
}

fn default_state_dir() -> PathBuf {
    "./state".into()
}
fn default_factory_url() -> String {
    "https://factory.talos.dev".into()
}

fn default_boot_assets() -> PathBuf {
    "./boot-assets".into()
}
fn default_profiles() -> PathBuf {
    "./profiles".into()
}
fn default_machines() -> PathBuf {
    "./machines.yaml".into()
}
fn default_token_ttl() -> String {
    "15m".into()
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Ports {
    pub dhcp: u16,
    pub proxy_dhcp: u16,
    pub tftp: u16,
    pub http: u16,
    /// Talos events sink (gRPC, plaintext), on server_address.
    pub events: u16,
    /// Talos kernel log stream (JSON lines over TCP), on server_address.
    pub kmsg: u16,
    /// kiln's own JSON API (`kiln machines`), on 127.0.0.1 only.
    pub api: u16,
    /// Where nodes' Talos API (apid) listens.
    pub talos_api: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            dhcp: 67,
            proxy_dhcp: 4011,
            tftp: 69,
            http: 8080,
            events: 4002,
            kmsg: 4003,
            api: 8081,
            talos_api: 50000,
        }
    }
}

/// Resource bounds: what one client (or a spoofed packet) can cost kiln.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// TFTP transfers at once; more get a TFTP error ("busy") at once.
    pub tftp_transfers: usize,
    /// Resends of one unacknowledged TFTP block before the transfer ends.
    pub tftp_retries: u32,
    /// Wait for a TFTP ACK before resending; a client's `timeout` option is
    /// accepted up to `tftp_max_client_timeout`, else left out of the OACK.
    #[serde(deserialize_with = "de_duration")]
    pub tftp_timeout: std::time::Duration,
    #[serde(deserialize_with = "de_duration")]
    pub tftp_max_client_timeout: std::time::Duration,
    /// Open HTTP connections at once (the accept loop waits beyond it).
    pub http_connections: usize,
    /// A request's headers must arrive within this, counted from the end of
    /// the previous response on a kept-alive connection (slow-header and
    /// idle clients are dropped).
    #[serde(deserialize_with = "de_duration")]
    pub http_header_timeout: std::time::Duration,
    /// A response write that makes no progress this long (the client stopped
    /// reading) ends the connection.
    #[serde(deserialize_with = "de_duration")]
    pub http_stall_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        use std::time::Duration;
        Limits {
            // dnsmasq allows 50; a rack booting at once wants more, each
            // transfer costs a socket and one window of blocks.
            tftp_transfers: 256,
            tftp_retries: 5,
            tftp_timeout: Duration::from_secs(1),
            tftp_max_client_timeout: Duration::from_secs(5),
            http_connections: 4096,
            http_header_timeout: Duration::from_secs(10),
            http_stall_timeout: Duration::from_secs(60),
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration (like 10s): {e}")))
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DhcpModeName {
    #[default]
    Proxy,
    Full,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DhcpWire {
    #[serde(default)]
    pub(super) mode: DhcpModeName,
    pub(super) subnet: Option<Ipv4Net>,
    pub(super) range: Option<Vec<Ipv4Addr>>,
    pub(super) router: Option<Ipv4Addr>,
    #[serde(default)]
    pub(super) dns: Vec<Ipv4Addr>,
    pub(super) domain: Option<String>,
    pub(super) lease_time: Option<String>,
    pub(super) decline_probation: Option<String>,
    pub(super) ping_check: Option<String>,
    /// Further subnets served through DHCP relays (giaddr inside them).
    #[serde(default)]
    pub(super) relay_subnets: Vec<SubnetWire>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubnetWire {
    pub(super) subnet: Ipv4Net,
    pub(super) range: Vec<Ipv4Addr>,
    pub(super) router: Option<Ipv4Addr>,
    #[serde(default)]
    pub(super) dns: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnknownMachines {
    #[default]
    Ignore,
    Boot,
    /// Answer them with a script that waits and asks again: a machine added
    /// to the inventory meanwhile boots without a power cycle.
    Hold,
}
