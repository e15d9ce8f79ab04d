//! `talosctl gen config` in Rust: the machine config documents for one role and
//! version contract, from a secrets bundle and options. Documents are JSON values
//! with keys in Talos's struct order; golden outputs from Talos's own test data
//! are the oracle (tests/talos_config.rs). This file writes the v1alpha1
//! document; `multidoc` writes the documents beside it.

use serde_json::{json, Map, Value};

use super::secrets::{Bundle, CertAndKey};
use crate::model::contract::Contract;
use crate::model::inventory::Role;

#[derive(Debug, Clone)]
pub struct Options {
    pub contract: Contract,
    pub cluster_name: String,
    /// `https://host:port`
    pub endpoint: String,
    /// Without the leading `v`: `1.33.0`.
    pub kubernetes_version: String,
    pub install_disk: Option<String>,
    pub install_image: Option<String>,
    pub install_extra_kernel_args: Vec<String>,
    pub additional_sans: Vec<String>,
    pub dns_domain: String,
    pub allow_scheduling_on_control_planes: bool,
    pub local_api_server_port: Option<u16>,
    pub sysctls: Vec<(String, String)>,
    pub cni_custom_url: Option<String>,
    pub registry_mirrors: Vec<(String, Vec<String>)>,
    pub discovery: bool,
}

impl Options {
    /// What `talosctl gen config NAME ENDPOINT` uses when no flag is given, minus
    /// the CLI-only defaults (install disk and image).
    pub fn new(contract: Contract, cluster_name: &str, endpoint: &str) -> Options {
        Options {
            contract,
            cluster_name: cluster_name.into(),
            endpoint: endpoint.into(),
            kubernetes_version: contract.default_kubernetes().into(),
            install_disk: None,
            install_image: None,
            install_extra_kernel_args: Vec::new(),
            additional_sans: Vec::new(),
            dns_domain: "cluster.local".into(),
            allow_scheduling_on_control_planes: false,
            local_api_server_port: None,
            sysctls: Vec::new(),
            cni_custom_url: None,
            registry_mirrors: Vec::new(),
            discovery: true,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenError {
    #[error("endpoint {0:?} is not a URL like https://10.0.0.10:6443")]
    Endpoint(String),
    #[error("cluster name {0:?} is not valid (letters, digits, '-', '.', at most 63)")]
    ClusterName(String),
    #[error("secrets bundle has no {0}")]
    Secrets(&'static str),
    #[error("secrets bundle: {0} is not base64-encoded PEM")]
    Pem(&'static str),
}

pub(super) fn ck(c: &Option<CertAndKey>, what: &'static str) -> Result<CertAndKey, GenError> {
    c.clone().ok_or(GenError::Secrets(what))
}

fn pair(c: &CertAndKey) -> Value {
    json!({ "crt": c.crt, "key": c.key })
}

pub(super) fn pod_security() -> Value {
    json!({
        "name": "PodSecurity",
        "configuration": {
            "apiVersion": "pod-security.admission.config.k8s.io/v1alpha1",
            "defaults": {
                "audit": "restricted", "audit-version": "latest",
                "enforce": "baseline", "enforce-version": "latest",
                "warn": "restricted", "warn-version": "latest"
            },
            "exemptions": { "namespaces": ["kube-system"], "runtimeClasses": [], "usernames": [] },
            "kind": "PodSecurityConfiguration"
        }
    })
}

pub(super) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Generate the documents for `role`.
pub fn generate(o: &Options, b: &Bundle, role: Role) -> Result<Vec<Value>, GenError> {
    let host = crate::model::config::endpoint_host(&o.endpoint)
        .ok_or_else(|| GenError::Endpoint(o.endpoint.clone()))?;
    if o.cluster_name.is_empty()
        || o.cluster_name.len() > 63
        || !o
            .cluster_name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
    {
        return Err(GenError::ClusterName(o.cluster_name.clone()));
    }
    let cp = role == Role::Controlplane;
    let mut docs = vec![json!({
        "version": "v1alpha1",
        "debug": false,
        "persist": true,
        "machine": machine(o, b, cp)?,
        "cluster": cluster(o, b, cp, &host)?,
    })];
    docs.extend(super::multidoc::documents(o, b, cp, &host)?);
    Ok(docs)
}

/// The v1alpha1 document's `machine` section.
fn machine(o: &Options, b: &Bundle, cp: bool) -> Result<Map<String, Value>, GenError> {
    let c = o.contract;
    let os = ck(&b.certs.os, "certs.os")?;
    let kv = &o.kubernetes_version;
    let mut m = Map::new();
    m.insert(
        "type".into(),
        json!(if cp { "controlplane" } else { "worker" }),
    );
    m.insert("token".into(), json!(b.trustdinfo.token));
    m.insert(
        "ca".into(),
        if cp {
            pair(&os)
        } else {
            json!({ "crt": os.crt, "key": "" })
        },
    );
    m.insert("certSANs".into(), json!(o.additional_sans));
    if !c.multidoc_kubernetes() {
        m.insert(
            "kubelet".into(),
            json!({
                "image": format!("ghcr.io/siderolabs/kubelet:v{kv}"),
                "defaultRuntimeSeccompProfileEnabled": true,
                "disableManifestsDirectory": true
            }),
        );
    }
    if !c.kubespan_multidoc() {
        m.insert("network".into(), json!({}));
    }
    if !c.unattended_install() {
        m.insert("install".into(), Value::Object(install(o)));
    }
    if !o.sysctls.is_empty() && !c.multidoc_sysctl() {
        let s: Map<String, Value> = o
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        m.insert("sysctls".into(), Value::Object(s));
    }
    if !c.multidoc_network_config() && !o.registry_mirrors.is_empty() {
        let mirrors: Map<String, Value> = o
            .registry_mirrors
            .iter()
            .map(|(h, eps)| (h.clone(), json!({ "endpoints": eps })))
            .collect();
        m.insert("registries".into(), json!({ "mirrors": mirrors }));
    }
    m.insert("features".into(), Value::Object(features(c)));
    if cp && c.add_exclude_from_external_lb() && !c.multidoc_kubernetes() {
        m.insert(
            "nodeLabels".into(),
            json!({ "node.kubernetes.io/exclude-from-external-load-balancers": "" }),
        );
    }
    Ok(m)
}

/// `machine.install` (contracts before v1.14).
fn install(o: &Options) -> Map<String, Value> {
    let mut install = Map::new();
    if let Some(d) = &o.install_disk {
        install.insert("disk".into(), json!(d));
    }
    if !o.install_extra_kernel_args.is_empty() {
        install.insert("extraKernelArgs".into(), json!(o.install_extra_kernel_args));
    }
    if let Some(i) = &o.install_image {
        install.insert("image".into(), json!(i));
    }
    install.insert("wipe".into(), json!(false));
    if o.contract.grub_use_uki_cmdline() {
        install.insert("grubUseUKICmdline".into(), json!(true));
    }
    install
}

fn features(c: Contract) -> Map<String, Value> {
    let mut features = Map::new();
    if !c.hide_deprecated_machine_features() {
        features.insert("rbac".into(), json!(true));
        features.insert("stableHostname".into(), json!(true));
        features.insert("apidCheckExtKeyUsage".into(), json!(true));
    }
    features.insert("diskQuotaSupport".into(), json!(true));
    if !c.multidoc_kubernetes() {
        features.insert("kubePrism".into(), json!({ "enabled": true, "port": 7445 }));
    }
    if !c.host_dns_multidoc() {
        let mut hostdns = obj(json!({ "enabled": true }));
        if c.host_dns_forward_kube_dns() {
            hostdns.insert("forwardKubeDNSToHost".into(), json!(true));
        }
        features.insert("hostDNS".into(), Value::Object(hostdns));
    }
    features
}

/// The v1alpha1 document's `cluster` section.
fn cluster(o: &Options, b: &Bundle, cp: bool, host: &str) -> Result<Map<String, Value>, GenError> {
    let c = o.contract;
    let k8s = ck(&b.certs.k8s, "certs.k8s")?;
    let mut cl = Map::new();
    if c.multidoc_kubernetes() {
        // v1.14+: everything else moved to documents of its own.
        cl.insert("token".into(), json!(b.secrets.bootstraptoken));
        if cp {
            let etcd = ck(&b.certs.etcd, "certs.etcd")?;
            cl.insert("etcd".into(), json!({ "ca": pair(&etcd) }));
        }
        return Ok(cl);
    }
    cl.insert("id".into(), json!(b.cluster.id));
    cl.insert("secret".into(), json!(b.cluster.secret));
    let mut cpl = obj(json!({ "endpoint": o.endpoint }));
    if cp {
        if let Some(p) = o.local_api_server_port {
            cpl.insert("localAPIServerPort".into(), json!(p));
        }
    }
    cl.insert("controlPlane".into(), Value::Object(cpl));
    if cp || c.cluster_name_for_workers() {
        cl.insert("clusterName".into(), json!(o.cluster_name));
    }
    let mut net = Map::new();
    if let Some(u) = &o.cni_custom_url {
        net.insert("cni".into(), json!({ "name": "custom", "urls": [u] }));
    }
    net.insert("dnsDomain".into(), json!(o.dns_domain));
    net.insert("podSubnets".into(), json!(["10.244.0.0/16"]));
    net.insert("serviceSubnets".into(), json!(["10.96.0.0/12"]));
    cl.insert("network".into(), Value::Object(net));
    cl.insert("token".into(), json!(b.secrets.bootstraptoken));
    if cp {
        control_plane_cluster(&mut cl, o, b, host)?;
    } else {
        cl.insert("ca".into(), json!({ "crt": k8s.crt, "key": "" }));
    }
    if o.discovery {
        let mut regs = Map::new();
        if c.kubernetes_discovery_backend_disabled() {
            regs.insert("kubernetes".into(), json!({ "disabled": true }));
        }
        regs.insert("service".into(), json!({}));
        cl.insert(
            "discovery".into(),
            json!({ "enabled": true, "registries": regs }),
        );
    }
    if cp {
        cl.insert(
            "etcd".into(),
            json!({ "ca": pair(&ck(&b.certs.etcd, "certs.etcd")?) }),
        );
        if o.allow_scheduling_on_control_planes {
            cl.insert("allowSchedulingOnControlPlanes".into(), json!(true));
        }
    }
    Ok(cl)
}

/// What only control planes carry: the Kubernetes CAs, encryption secret,
/// service-account key and the control-plane components.
fn control_plane_cluster(
    cl: &mut Map<String, Value>,
    o: &Options,
    b: &Bundle,
    host: &str,
) -> Result<(), GenError> {
    let k8s = ck(&b.certs.k8s, "certs.k8s")?;
    let kv = &o.kubernetes_version;
    match (
        &b.secrets.secretboxencryptionsecret,
        &b.secrets.aescbcencryptionsecret,
    ) {
        (Some(s), _) => cl.insert("secretboxEncryptionSecret".into(), json!(s)),
        (None, Some(s)) => cl.insert("aescbcEncryptionSecret".into(), json!(s)),
        (None, None) => return Err(GenError::Secrets("secrets.secretboxencryptionsecret")),
    };
    cl.insert("ca".into(), pair(&k8s));
    cl.insert(
        "aggregatorCA".into(),
        pair(&ck(&b.certs.k8saggregator, "certs.k8saggregator")?),
    );
    cl.insert(
        "serviceAccount".into(),
        json!({ "key": ck(&b.certs.k8sserviceaccount, "certs.k8sserviceaccount")?.key }),
    );
    cl.insert("apiServer".into(), Value::Object(api_server(o, host)));
    cl.insert(
        "controllerManager".into(),
        json!({ "image": format!("registry.k8s.io/kube-controller-manager:v{kv}") }),
    );
    cl.insert(
        "proxy".into(),
        json!({ "image": format!("registry.k8s.io/kube-proxy:v{kv}") }),
    );
    cl.insert(
        "scheduler".into(),
        json!({ "image": format!("registry.k8s.io/kube-scheduler:v{kv}") }),
    );
    Ok(())
}

fn api_server(o: &Options, host: &str) -> Map<String, Value> {
    let c = o.contract;
    let kv = &o.kubernetes_version;
    let mut api = obj(json!({ "image": format!("registry.k8s.io/kube-apiserver:v{kv}") }));
    let sans = api_server_sans(o, host);
    if !sans.is_empty() {
        api.insert("certSANs".into(), json!(sans));
    }
    if c.populate_endpoint_sans() {
        api.insert("disablePodSecurityPolicy".into(), json!(true));
    }
    api.insert("admissionControl".into(), json!([pod_security()]));
    api.insert("auditPolicy".into(), json!({ "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{ "level": "Metadata" }] }));
    api
}

/// The API server's extra certificate SANs (`GetAPIServerSANs`): the endpoint's
/// host up to v1.11, then the additional SANs, without duplicates.
pub(super) fn api_server_sans(o: &Options, host: &str) -> Vec<String> {
    let mut sans: Vec<String> = Vec::new();
    if o.contract.populate_endpoint_sans() {
        sans.push(host.to_string());
    }
    for s in &o.additional_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    sans
}

/// talosctl's `--install-image` default for a contract: the talosctl of each
/// release line used `ghcr.io/siderolabs/installer` through v1.13; v1.14's
/// uses the Image Factory's `metal-installer` of the empty schematic.
pub fn default_install_image(contract: Contract, release: &str) -> String {
    if contract.minor >= 14 {
        format!(
            "factory.talos.dev/metal-installer/{}:{release}",
            crate::model::schematic::EMPTY_ID
        )
    } else {
        format!("ghcr.io/siderolabs/installer:{release}")
    }
}
