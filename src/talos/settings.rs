//! First-class profile settings, rendered into config patches per contract: what
//! the seed did with seven patch files, a profile says in a few keys.

use serde_json::{json, Map, Value};

use crate::model::contract::Contract;
use crate::model::inventory::Role;

use super::multidoc::doc;
use crate::model::settings::{Cni, Settings, CERT_APPROVER};

impl Settings {
    /// Strategic-merge patch documents equivalent to the settings. Longer than
    /// most: one short block per setting, in the order the seed's patches had.
    pub fn patches(&self, role: Role, c: Contract) -> Vec<Value> {
        if c.multidoc_kubernetes() {
            return self.documents(role);
        }
        let mut machine = Map::new();
        let mut cluster = Map::new();
        let mut install = Map::new();
        if let Some(d) = &self.install_disk {
            install.insert("disk".into(), json!(d));
        }
        if self.stable_interface_names {
            // Effective only where the installed bootloader builds its own command
            // line; kiln also puts net.ifnames=0 on the PXE kernel line.
            install.insert("extraKernelArgs".into(), json!(["net.ifnames=0"]));
        }
        if !install.is_empty() {
            machine.insert("install".into(), Value::Object(install));
        }
        let vip = self.vip.filter(|_| role == Role::Controlplane);
        let mut extra = Vec::new();
        if c.multidoc_network_config() {
            for i in &self.dhcp_interfaces {
                extra.push(json!({ "apiVersion": "v1alpha1", "kind": "DHCPv4Config", "name": i }));
            }
            if let Some(ip) = vip {
                extra.push(json!({ "apiVersion": "v1alpha1", "kind": "Layer2VIPConfig", "name": ip.to_string(), "link": self.vip_link() }));
            }
        } else {
            let mut ifaces: Vec<Value> = self
                .dhcp_interfaces
                .iter()
                .map(|i| json!({ "interface": i, "dhcp": true }))
                .collect();
            if let Some(ip) = vip {
                let link = self.vip_link();
                match ifaces.iter_mut().find(|v| v["interface"] == json!(link)) {
                    Some(v) => {
                        v["vip"] = json!({ "ip": ip.to_string() });
                    }
                    None => {
                        ifaces.push(json!({ "interface": link, "vip": { "ip": ip.to_string() } }))
                    }
                }
            }
            if !ifaces.is_empty() {
                machine.insert("network".into(), json!({ "interfaces": ifaces }));
            }
        }
        if self.kubelet_serving_certs {
            machine.insert(
                "kubelet".into(),
                json!({ "extraArgs": { "rotate-server-certificates": true } }),
            );
            cluster.insert("extraManifests".into(), json!([CERT_APPROVER]));
        }
        if self.allow_workloads {
            cluster.insert("allowSchedulingOnControlPlanes".into(), json!(true));
        }
        match &self.cni {
            Cni::Name(n) if n == "none" => {
                cluster.insert("network".into(), json!({ "cni": { "name": "none" } }));
            }
            Cni::Custom { urls } => {
                cluster.insert(
                    "network".into(),
                    json!({ "cni": { "name": "custom", "urls": urls } }),
                );
            }
            _ => {}
        }
        let mut out = Vec::new();
        if !machine.is_empty() || !cluster.is_empty() {
            let mut d = Map::new();
            if !machine.is_empty() {
                d.insert("machine".into(), Value::Object(machine));
            }
            if !cluster.is_empty() {
                d.insert("cluster".into(), Value::Object(cluster));
            }
            out.push(Value::Object(d));
        }
        out.extend(extra);
        out
    }
}

impl Settings {
    /// The same settings as v1.14 documents (V1_14.md §2.6): nothing lands in
    /// a v1alpha1 field a v1.14 document conflicts with. Flannel deletes and
    /// external manifests go to control planes only (the documents Talos
    /// accepts there only, and the manifests only control planes apply); the
    /// taint delete is field-level, on control planes (workers carry none).
    fn documents(&self, role: Role) -> Vec<Value> {
        let cp = role == Role::Controlplane;
        let mut out = Vec::new();
        if let Some(d) = &self.install_disk {
            let m = super::multidoc::install_disk_match(d);
            out.push(doc(
                "UnattendedInstallConfig",
                json!({ "provisioning": { "diskSelector": { "match": m }, "wipe": false } }),
            ));
        }
        // stable_interface_names: UnattendedInstallConfig has no kernel
        // arguments; the installer's schematic carries net.ifnames=0 (kiln
        // check says so) and kiln puts it on the PXE kernel line.
        for i in &self.dhcp_interfaces {
            out.push(doc("DHCPv4Config", json!({ "name": i })));
        }
        if let Some(ip) = self.vip.filter(|_| cp) {
            out.push(doc(
                "Layer2VIPConfig",
                json!({ "name": ip.to_string(), "link": self.vip_link() }),
            ));
        }
        if self.kubelet_serving_certs {
            out.push(doc(
                "KubeletConfig",
                json!({ "extraArgs": { "rotate-server-certificates": "true" } }),
            ));
            if cp {
                out.push(doc(
                    "KubeExternalManifestConfig",
                    json!({ "name": "kubelet-serving-cert-approver", "url": CERT_APPROVER }),
                ));
            }
        }
        if self.allow_workloads && cp {
            out.push(doc(
                "KubeNodeConfig",
                json!({ "taints": { "$patch": "delete" } }),
            ));
        }
        match &self.cni {
            Cni::Name(n) if n == "none" && cp => {
                out.push(doc("KubeFlannelCNIConfig", json!({ "$patch": "delete" })));
            }
            Cni::Custom { urls } if cp => {
                out.push(doc("KubeFlannelCNIConfig", json!({ "$patch": "delete" })));
                for (i, u) in urls.iter().enumerate() {
                    let name = match i {
                        0 => "custom-cni".to_string(),
                        n => format!("custom-cni-{}", n + 1),
                    };
                    out.push(doc(
                        "KubeExternalManifestConfig",
                        json!({ "name": name, "url": u }),
                    ));
                }
            }
            _ => {}
        }
        out
    }
}

/// The per-machine part: its hostname, in the form the contract uses.
pub fn hostname_patch(hostname: &str, c: Contract) -> Value {
    if c.multidoc_network_config() {
        json!({ "apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": { "$patch": "delete" }, "hostname": hostname })
    } else {
        json!({ "machine": { "network": { "hostname": hostname } } })
    }
}
