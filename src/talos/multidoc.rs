//! The documents beside v1alpha1, in the order `talosctl gen config` writes
//! them (generate/init.go, worker.go, kubernetes.go on release-1.14): discovery,
//! install, resolver, sysctls, volumes, security profile, registries, hostname
//! (v1.12+), then the Kubernetes documents (v1.14+). Certificates and keys are
//! plain PEM here, not the base64 the v1alpha1 document carries.

use base64::Engine;
use serde_json::{json, Value};

use super::generate::{api_server_sans, ck, pod_security, GenError, Options};
use super::secrets::{Bundle, CertAndKey};

/// The Kubernetes API server's default anonymous-auth paths (k8s.DefaultAuthenticationConfig).
const ANONYMOUS_PATHS: [&str; 3] = ["/livez", "/readyz", "/healthz"];

/// A v1alpha1 document of `kind` with `body`'s fields (generation, settings
/// and migration all write them this way).
pub(super) fn doc(kind: &str, body: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("apiVersion".into(), json!("v1alpha1"));
    m.insert("kind".into(), json!(kind));
    if let Value::Object(b) = body {
        m.extend(b);
    }
    Value::Object(m)
}

fn pem(b64: &str, what: &'static str) -> Result<String, GenError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| GenError::Pem(what))?;
    String::from_utf8(bytes).map_err(|_| GenError::Pem(what))
}

fn pem_pair(c: &CertAndKey, what: &'static str) -> Result<Value, GenError> {
    Ok(json!({ "cert": pem(&c.crt, what)?, "key": pem(&c.key, what)? }))
}

/// Go's `%q` for the strings a disk path holds (quotes and backslashes escaped).
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// The CEL selector talosctl writes for `--install-disk`.
pub fn install_disk_match(disk: &str) -> String {
    format!("disk.dev_path == {}", go_quote(disk))
}

/// Everything after the v1alpha1 document, for one role.
pub(super) fn documents(
    o: &Options,
    b: &Bundle,
    cp: bool,
    host: &str,
) -> Result<Vec<Value>, GenError> {
    let c = o.contract;
    let mut docs = Vec::new();
    if c.discovery_multidoc() {
        if o.discovery {
            docs.push(doc(
                "DiscoveryServiceConfig",
                json!({ "name": "default", "endpoint": "https://discovery.talos.dev/" }),
            ));
        }
        docs.push(doc(
            "DiscoveryIdentityConfig",
            json!({ "clusterID": b.cluster.id, "clusterSecret": b.cluster.secret }),
        ));
    }
    if c.unattended_install() {
        if let Some(disk) = &o.install_disk {
            let installer = match &o.install_image {
                Some(i) => json!({ "image": i }),
                None => json!({}),
            };
            docs.push(doc(
                "UnattendedInstallConfig",
                json!({
                    "installer": installer,
                    "provisioning": { "diskSelector": { "match": install_disk_match(disk) }, "wipe": false }
                }),
            ));
        }
    }
    if c.host_dns_multidoc() {
        docs.push(doc(
            "ResolverConfig",
            json!({ "hostDNS": { "enabled": true, "forwardKubeDNSToHost": true } }),
        ));
    }
    if c.multidoc_sysctl() && !o.sysctls.is_empty() {
        let params: serde_json::Map<String, Value> = o
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        docs.push(doc("SysctlConfig", json!({ "params": params })));
    }
    if c.filesystem_trim() {
        docs.push(doc(
            "VolumeConfig",
            json!({ "name": "EPHEMERAL", "mount": { "secure": true } }),
        ));
        docs.push(doc(
            "FilesystemTrimConfig",
            json!({ "interval": "168h0m0s" }),
        ));
    }
    if c.workload_isolation() {
        docs.push(doc(
            "SecurityProfileConfig",
            json!({ "workloadIsolation": true }),
        ));
    }
    if c.multidoc_network_config() {
        let mut mirrors: Vec<&(String, Vec<String>)> = o.registry_mirrors.iter().collect();
        mirrors.sort_by(|a, b| a.0.cmp(&b.0));
        for (h, eps) in mirrors {
            let eps: Vec<Value> = eps.iter().map(|u| json!({ "url": u })).collect();
            docs.push(doc(
                "RegistryMirrorConfig",
                json!({ "name": h, "endpoints": eps }),
            ));
        }
        docs.push(doc("HostnameConfig", json!({ "auto": "stable" })));
    }
    if c.multidoc_kubernetes() {
        docs.extend(kubernetes_universal(o, b, cp)?);
        if cp {
            docs.extend(kubernetes_control_plane(o, b, host)?);
        }
    }
    Ok(docs)
}

/// Documents every machine gets (generateKubernetesUniversalConfigs).
fn kubernetes_universal(o: &Options, b: &Bundle, cp: bool) -> Result<Vec<Value>, GenError> {
    let kv = &o.kubernetes_version;
    let k8s = ck(&b.certs.k8s, "certs.k8s")?;
    let mut node = serde_json::Map::new();
    node.insert("nodeIP".into(), json!({}));
    if cp {
        let mut labels = serde_json::Map::new();
        labels.insert("node-role.kubernetes.io/control-plane".into(), json!(""));
        if o.contract.add_exclude_from_external_lb() {
            labels.insert(
                "node.kubernetes.io/exclude-from-external-load-balancers".into(),
                json!(""),
            );
        }
        node.insert("labels".into(), Value::Object(labels));
        if !o.allow_scheduling_on_control_planes {
            node.insert(
                "taints".into(),
                json!({ "node-role.kubernetes.io/control-plane": "NoSchedule" }),
            );
        }
    }
    let ca = if cp {
        json!({ "issuingCA": pem_pair(&k8s, "certs.k8s")? })
    } else {
        json!({ "acceptedCAs": [pem(&k8s.crt, "certs.k8s")?] })
    };
    Ok(vec![
        doc(
            "KubeClusterConfig",
            json!({ "clusterName": o.cluster_name, "endpoint": o.endpoint }),
        ),
        doc("KubeNodeConfig", Value::Object(node)),
        doc(
            "KubeletConfig",
            json!({
                "image": format!("ghcr.io/siderolabs/kubelet:v{kv}"),
                "config": {},
                "defaultRuntimeSeccompProfileEnabled": true
            }),
        ),
        doc(
            "KubeNetworkConfig",
            json!({
                "dnsDomain": o.dns_domain,
                "podSubnets": ["10.244.0.0/16"],
                "serviceSubnets": ["10.96.0.0/12"]
            }),
        ),
        doc("KubeAPIServerCAConfig", ca),
        doc("KubePrismConfig", json!({ "port": 7445 })),
    ])
}

/// The etcd encryption providers, in the order and with the names the legacy
/// renderer used, so a cluster regenerated on v1.14 still decrypts its secrets
/// (an AES-CBC secret of an old bundle is a secretbox `key1`, as Talos writes it).
fn etcd_encryption(b: &Bundle) -> Result<Value, GenError> {
    let mut providers = Vec::new();
    if let Some(s) = &b.secrets.secretboxencryptionsecret {
        providers.push(json!({ "secretbox": { "keys": [{ "name": "key2", "secret": s }] } }));
    }
    if let Some(s) = &b.secrets.aescbcencryptionsecret {
        providers.push(json!({ "secretbox": { "keys": [{ "name": "key1", "secret": s }] } }));
    }
    if providers.is_empty() {
        return Err(GenError::Secrets("secrets.secretboxencryptionsecret"));
    }
    Ok(doc(
        "KubeEtcdEncryptionConfig",
        json!({ "config": { "resources": [{ "providers": providers, "resources": ["secrets"] }] } }),
    ))
}

/// Documents only control planes get (generateKubernetesControlplaneConfigs).
fn kubernetes_control_plane(o: &Options, b: &Bundle, host: &str) -> Result<Vec<Value>, GenError> {
    let kv = &o.kubernetes_version;
    let agg = ck(&b.certs.k8saggregator, "certs.k8saggregator")?;
    let sa = ck(&b.certs.k8sserviceaccount, "certs.k8sserviceaccount")?;
    let pod_security = pod_security();
    let mut api = serde_json::Map::new();
    api.insert(
        "image".into(),
        json!(format!("registry.k8s.io/kube-apiserver:v{kv}")),
    );
    if let Some(p) = o.local_api_server_port {
        api.insert("apiPort".into(), json!(p));
    }
    let sans = api_server_sans(o, host);
    if !sans.is_empty() {
        api.insert("certExtraSANs".into(), json!(sans));
    }
    let conditions: Vec<Value> = ANONYMOUS_PATHS
        .iter()
        .map(|p| json!({ "path": p }))
        .collect();
    let mut docs = vec![
        doc(
            "KubeAggregatorCAConfig",
            json!({ "issuingCA": pem_pair(&agg, "certs.k8saggregator")? }),
        ),
        doc(
            "KubeAdmissionControlConfig",
            json!({ "name": pod_security["name"], "configuration": pod_security["configuration"] }),
        ),
        doc(
            "KubeAuditPolicyConfig",
            json!({ "configuration": { "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{ "level": "Metadata" }] } }),
        ),
        doc(
            "KubeAuthenticationConfig",
            json!({ "configuration": { "anonymous": { "conditions": conditions, "enabled": true }, "jwt": [] } }),
        ),
        doc(
            "KubeAuthorizerConfig",
            json!({ "name": "node", "type": "Node" }),
        ),
        doc(
            "KubeAuthorizerConfig",
            json!({ "name": "rbac", "type": "RBAC" }),
        ),
        etcd_encryption(b)?,
        doc(
            "KubeServiceAccountConfig",
            json!({ "issuer": { "privateKey": pem(&sa.key, "certs.k8sserviceaccount")?, "issuerURL": o.endpoint } }),
        ),
        doc("KubeAPIServerConfig", Value::Object(api)),
        doc(
            "KubeControllerManagerConfig",
            json!({ "image": format!("registry.k8s.io/kube-controller-manager:v{kv}") }),
        ),
        doc(
            "KubeSchedulerConfig",
            json!({ "image": format!("registry.k8s.io/kube-scheduler:v{kv}"), "config": {} }),
        ),
        doc(
            "KubeProxyConfig",
            json!({ "image": format!("registry.k8s.io/kube-proxy:v{kv}"), "config": {} }),
        ),
    ];
    if o.cni_custom_url.is_none() {
        docs.push(doc(
            "KubeFlannelCNIConfig",
            json!({ "backendType": "vxlan", "backendPort": 4789 }),
        ));
    }
    docs.push(doc("KubeCoreDNSConfig", json!({ "enabled": true })));
    if let Some(u) = &o.cni_custom_url {
        docs.push(doc(
            "KubeExternalManifestConfig",
            json!({ "name": "custom-cni", "url": u }),
        ));
    }
    Ok(docs)
}
