//! First-class profile settings (validated data); `talos::settings` renders
//! them into config patches per contract.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// kubelet-serving-cert-approver, the manifest the seed's kubelet-certificates patch adds.
pub const CERT_APPROVER: &str = "https://raw.githubusercontent.com/alex1989hu/kubelet-serving-cert-approver/main/deploy/standalone-install.yaml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Cni {
    /// `flannel` (Talos's default) or `none`.
    Name(String),
    /// `{urls: [...]}`: a custom CNI from manifests.
    Custom { urls: Vec<String> },
    #[default]
    #[serde(skip)]
    Default,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub install_disk: Option<String>,
    pub stable_interface_names: bool,
    pub dhcp_interfaces: Vec<String>,
    pub vip: Option<Ipv4Addr>,
    /// Link the VIP lives on; default the first DHCP interface, else eth0.
    pub vip_interface: Option<String>,
    pub allow_workloads: bool,
    pub cni: Cni,
    pub kubelet_serving_certs: bool,
}

impl Settings {
    pub fn vip_link(&self) -> String {
        self.vip_interface
            .clone()
            .or_else(|| self.dhcp_interfaces.first().cloned())
            .unwrap_or_else(|| "eth0".into())
    }
}
