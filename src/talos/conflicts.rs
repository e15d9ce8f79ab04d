//! The checks a Talos node runs on a multi-document config before it accepts
//! it (pkg/machinery/config/container/validate.go on release-1.14): every
//! document's `V1Alpha1ConflictValidate` against the v1alpha1 document, in
//! document order, then the container rules (control-plane-only kinds, etcd
//! encryption, discovery identity). `talosctl gen config` writes configs that
//! fail these; a node refuses them at boot. kiln runs them before any machine
//! boots. The messages are Talos's own, byte for byte.

use serde_json::Value;

/// One rule a config breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The field (dotted path in the v1alpha1 document) or document kind at fault.
    pub field: String,
    /// Talos's message.
    pub message: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// How a legacy field counts as set (Go: pointer non-nil, string non-empty, ...).
#[derive(Clone, Copy)]
enum Set {
    /// Present and not null (a Go pointer or map that is non-nil), even if empty.
    Present,
    /// A non-empty string, list or map, a non-zero number, `true`.
    NonEmpty,
    /// Boolean `true`.
    True,
    /// A list holding at least one IP address (v1alpha1 `Resolvers()`).
    HasIp,
    /// A Go duration that is not zero (`0s`, `0m0s` are zero).
    Duration,
}

/// (document kind, v1alpha1 path, test, Talos's message); a kind's rows are
/// tried in order and the first hit is its error, as in Talos.
const RULES: &[(&str, &str, Set, &str)] = &[
    ("KubeletConfig", "machine.kubelet", Set::Present, "kubelet config is already set in v1alpha1 config (.machine.kubelet)"),
    ("KubeCredentialProviderConfig", "machine.kubelet", Set::Present, "cannot use KubeCredentialProviderConfig with legacy kubelet configuration (.machine.kubelet)"),
    ("KubeNodeConfig", "cluster.allowSchedulingOnControlPlanes", Set::Present, ".cluster.allowSchedulingOnControlPlanes is already set in v1alpha1 config"),
    ("KubeNodeConfig", "cluster.allowSchedulingOnMasters", Set::Present, ".cluster.allowSchedulingOnMasters is already set in v1alpha1 config"),
    ("KubeNodeConfig", "machine.kubelet.skipNodeRegistration", Set::Present, ".machine.kubelet.skipNodeRegistration is already set in v1alpha1 config"),
    ("KubeNodeConfig", "machine.kubelet.registerWithFQDN", Set::Present, ".machine.kubelet.registerWithFQDN is already set in v1alpha1 config"),
    ("KubeNodeConfig", "machine.kubelet.nodeIP", Set::Present, ".machine.kubelet.nodeIP is already set in v1alpha1 config"),
    ("KubeNodeConfig", "machine.nodeLabels", Set::Present, ".machine.nodeLabels is already set in v1alpha1 config"),
    ("KubeNodeConfig", "machine.nodeAnnotations", Set::Present, ".machine.nodeAnnotations is already set in v1alpha1 config"),
    ("KubeNodeConfig", "machine.nodeTaints", Set::Present, ".machine.nodeTaints is already set in v1alpha1 config"),
    ("KubeNetworkConfig", "cluster.network", Set::Present, "cluster network config is already set in the v1alpha1 config (.machine.cluster.network). Please remove it and use only the new KubeNetworkConfig document to avoid conflicts"),
    ("KubeFlannelCNIConfig", "cluster.network", Set::Present, "cluster network config in v1alpha1 config (.machine.cluster.network) can't be used with KubeFlannelCNIConfig document, please remove it to avoid conflicts"),
    ("UnattendedInstallConfig", "machine.install", Set::Present, "UnattendedInstallConfig config is incompatible with v1alpha1 config (.machine.install)"),
    ("KubeClusterConfig", "cluster.clusterName", Set::NonEmpty, "cluster name is already set in the v1alpha1 config (.cluster.clusterName). Please remove it and use only the new KubeClusterConfig document to avoid conflicts"),
    ("KubeClusterConfig", "cluster.controlPlane.endpoint", Set::Present, "cluster endpoint is already set in the v1alpha1 config (.cluster.controlPlane.endpoint). Please remove it and use only the new KubeClusterConfig document to avoid conflicts"),
    ("KubeAPIServerConfig", "cluster.apiServer", Set::Present, "kube-apiserver config is already set in v1alpha1 config (.cluster.apiServer)"),
    ("KubeAPIServerConfig", "cluster.controlPlane.localAPIServerPort", Set::NonEmpty, "kube-apiserver API port is already set in v1alpha1 config (.cluster.controlPlane.localAPIServerPort)"),
    ("KubeControllerManagerConfig", "cluster.controllerManager", Set::Present, "kube-controller-manager config is already set in v1alpha1 config (.cluster.controllerManager)"),
    ("KubeControllerManagerConfig", "machine.controlPlane.controllerManager", Set::Present, "kube-controller-manager config is already set in v1alpha1 config (.machine.controlplane.controllerManager)"),
    ("KubeSchedulerConfig", "cluster.scheduler", Set::Present, "kube-scheduler config is already set in v1alpha1 config (.cluster.scheduler)"),
    ("KubeSchedulerConfig", "machine.controlPlane.scheduler", Set::Present, "kube-scheduler config is already set in v1alpha1 config (.machine.controlplane.scheduler)"),
    ("KubeProxyConfig", "cluster.proxy", Set::Present, "cluster proxy config in v1alpha1 config (.machine.cluster.proxy) can't be used with KubeProxyConfig document, please remove it to avoid conflicts"),
    ("KubeCoreDNSConfig", "cluster.coreDNS", Set::Present, "CoreDNS config is already set in v1alpha1 config (.cluster.coreDNS)"),
    ("KubeAPIServerCAConfig", "cluster.ca", Set::Present, "kube-apiserver CA is already set in v1alpha1 config (.cluster.ca)"),
    ("KubeAggregatorCAConfig", "cluster.aggregatorCA", Set::Present, "kube-apiserver aggregator CA is already set in v1alpha1 config (.cluster.aggregatorCA), please remove it and use the new KubeAggregatorCAConfig document instead"),
    ("KubeServiceAccountConfig", "cluster.serviceAccount", Set::Present, "service account is already set in v1alpha1 config (.cluster.serviceAccount)"),
    ("KubeAdmissionControlConfig", "cluster.apiServer.admissionControl", Set::NonEmpty, "admission control plugin config is already set in v1alpha1 config"),
    ("KubeAuthorizerConfig", "cluster.apiServer.admissionControl", Set::NonEmpty, "admission control plugin config is already set in v1alpha1 config"),
    ("KubeAuditPolicyConfig", "cluster.apiServer.auditPolicy", Set::NonEmpty, "audit policy config is already set in v1alpha1 config"),
    ("KubeEtcdEncryptionConfig", "cluster.secretboxEncryptionSecret", Set::NonEmpty, "etcd encryption config is already set in v1alpha1 config"),
    ("KubeEtcdEncryptionConfig", "cluster.aescbcEncryptionSecret", Set::NonEmpty, "etcd encryption config is already set in v1alpha1 config"),
    ("KubePrismConfig", "machine.features.kubePrism", Set::Present, "KubePrism config in v1alpha1 config (.machine.features.kubePrism) can't be used with KubePrismConfig document, please remove it to avoid conflicts"),
    ("KubeTalosAPIAccessConfig", "machine.features.kubernetesTalosAPIAccess", Set::Present, ".machine.features.kubernetesTalosAPIAccess is already set in v1alpha1 config"),
    ("DiscoveryIdentityConfig", "cluster.id", Set::NonEmpty, "cluster identity is already configured in .cluster.id/.cluster.secret of the v1alpha1 config"),
    ("DiscoveryIdentityConfig", "cluster.secret", Set::NonEmpty, "cluster identity is already configured in .cluster.id/.cluster.secret of the v1alpha1 config"),
    ("DiscoveryServiceConfig", "cluster.discovery", Set::Present, "discovery service is already configured in .cluster.discovery of the v1alpha1 config"),
    ("HostnameConfig", "machine.network.hostname", Set::NonEmpty, "static hostname is already set in v1alpha1 config"),
    ("HostnameConfig", "machine.features.stableHostname", Set::True, "stable hostname is already set in v1alpha1 config"),
    ("ResolverConfig", "machine.network.searchDomains", Set::Present, ".machine.network.searchDomains is already set in v1alpha1 config"),
    ("ResolverConfig", "machine.network.nameservers", Set::HasIp, ".machine.network.nameservers is already set in v1alpha1 config"),
    ("ResolverConfig", "machine.network.disableSearchDomain", Set::True, ".machine.network.disableSearchDomain is already set in v1alpha1 config"),
    ("KubeSpanConfig", "machine.network.kubespan", Set::Present, "kubespan is already configured in v1alpha1 machine.network.kubespan"),
    ("TimeSyncConfig", "machine.time.disabled", Set::True, "time sync cannot be disabled in both v1alpha1 and new-style configuration"),
    ("TimeSyncConfig", "machine.time.servers", Set::NonEmpty, "time servers cannot be specified in both v1alpha1 and new-style configuration"),
    ("TimeSyncConfig", "machine.time.bootTimeout", Set::Duration, "boot timeout cannot be specified in both v1alpha1 and new-style configuration"),
    ("CRIBaseRuntimeSpecConfig", "machine.baseRuntimeSpecOverrides", Set::NonEmpty, "base runtime spec overrides are already set in v1alpha1 config"),
    ("ImageCacheConfig", "machine.features.imageCache", Set::Present, "image cache config is already set in v1alpha1 config"),
];

/// Kinds Talos accepts on control planes only (`ControlplaneOnlyDocument()`).
pub const CONTROL_PLANE_ONLY: &[&str] = &[
    "KubeAPIServerConfig",
    "KubeAdmissionControlConfig",
    "KubeAggregatorCAConfig",
    "KubeAuditPolicyConfig",
    "KubeAuthenticationConfig",
    "KubeAuthorizerConfig",
    "KubeControllerManagerConfig",
    "KubeCoreDNSConfig",
    "KubeEtcdEncryptionConfig",
    "KubeFlannelCNIConfig",
    "KubeProxyConfig",
    "KubeSchedulerConfig",
    "KubeServiceAccountConfig",
    "KubeTalosAPIAccessConfig",
];

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur.get(k)?;
    }
    (!cur.is_null()).then_some(cur)
}

fn is_set(v: &Value, path: &str, test: Set) -> bool {
    let Some(x) = at(v, path) else {
        return false;
    };
    match test {
        Set::Present => true,
        Set::True => x == &Value::Bool(true),
        Set::NonEmpty => match x {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty() && s != "0s" && s != "0",
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Null => false,
        },
        Set::HasIp => x.as_array().is_some_and(|a| {
            a.iter().any(|s| {
                // netip.ParseAddr takes an IPv6 zone (fe80::1%eth0) too.
                s.as_str().is_some_and(|s| {
                    s.split('%')
                        .next()
                        .unwrap_or(s)
                        .parse::<std::net::IpAddr>()
                        .is_ok()
                })
            })
        }),
        Set::Duration => match x {
            Value::String(s) => s.chars().any(|c| ('1'..='9').contains(&c)),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => false,
        },
    }
}

fn kind(d: &Value) -> Option<&str> {
    d.get("kind").and_then(Value::as_str)
}

fn conflict(field: impl Into<String>, message: impl Into<String>) -> Conflict {
    Conflict {
        field: field.into(),
        message: message.into(),
    }
}

/// What one document's `V1Alpha1ConflictValidate` returns against `v1`.
fn document_rule(v1: &Value, d: &Value) -> Option<Conflict> {
    let k = kind(d)?;
    if k == "ResolverConfig" {
        if let Some(r) = RULES
            .iter()
            .filter(|r| r.0 == k)
            .find(|r| is_set(v1, r.1, r.2))
        {
            return Some(conflict(r.1, r.3));
        }
        // hostDNS conflicts only when the document sets it too (`!value.IsZero`).
        let doc_sets = ["enabled", "forwardKubeDNSToHost", "resolveMemberNames"]
            .iter()
            .any(|k| at(d, &format!("hostDNS.{k}")).is_some());
        return (doc_sets && is_set(v1, "machine.features.hostDNS", Set::Present)).then(|| {
            conflict(
                "machine.features.hostDNS",
                ".machine.features.hostDNS is already set in v1alpha1 config",
            )
        });
    }
    if k == "VolumeConfig" {
        let name = d.get("name").and_then(Value::as_str)?;
        let legacy = match name {
            "STATE" => "machine.systemDiskEncryption.state",
            "EPHEMERAL" => "machine.systemDiskEncryption.ephemeral",
            _ => return None,
        };
        // VolumeConfig.Encryption() is nil unless a provider is named.
        let encrypted = at(d, "encryption.provider")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty() && p != "none");
        return (encrypted && is_set(v1, legacy, Set::Present)).then(|| {
            conflict(
                legacy,
                format!("system disk encryption for {} is configured in both v1alpha1.Config and VolumeConfig", serde_json::json!(name)),
            )
        });
    }
    RULES
        .iter()
        .filter(|r| r.0 == k)
        .find(|r| is_set(v1, r.1, r.2))
        .map(|r| conflict(r.1, r.3))
}

/// Every field of a v1alpha1 document (or patch) that some document of a
/// v1.14 config would conflict with, one per field.
pub fn legacy_fields(v1: &Value) -> Vec<Conflict> {
    let mut out: Vec<Conflict> = Vec::new();
    for &(_, path, test, msg) in RULES {
        if is_set(v1, path, test) && !out.iter().any(|c| c.field == path) {
            out.push(conflict(path, msg));
        }
    }
    if is_set(v1, "machine.features.hostDNS", Set::Present) {
        out.push(conflict(
            "machine.features.hostDNS",
            ".machine.features.hostDNS is already set in v1alpha1 config",
        ));
    }
    out
}

/// The v1alpha1 document of a config: the one without `kind`.
pub fn v1alpha1(docs: &[Value]) -> Option<&Value> {
    docs.iter().find(|d| d.get("kind").is_none())
}

/// Every rule `docs` breaks, in the order a Talos v1.14 node reports them.
pub fn check(docs: &[Value]) -> Vec<Conflict> {
    check_for(docs, crate::model::contract::DEFAULT)
}

/// [`check`] as the Talos release of contract `c` does: the container rules
/// and the boot-timeout rule came with v1.14.
pub fn check_for(docs: &[Value], c: crate::model::contract::Contract) -> Vec<Conflict> {
    let v1 = v1alpha1(docs);
    let v114 = c.multidoc_kubernetes();
    let mut out: Vec<Conflict> = match v1 {
        Some(v1) => docs
            .iter()
            .filter(|d| kind(d).is_some())
            .filter_map(|d| document_rule(v1, d))
            .filter(|x| v114 || x.field != "machine.time.bootTimeout")
            .collect(),
        None => Vec::new(),
    };
    if v114 {
        out.extend(container_rules(docs, v1));
    }
    out
}

fn has_kind(docs: &[Value], k: &str) -> bool {
    docs.iter().any(|d| kind(d) == Some(k))
}

/// validate.go's `validateContainer`, the parts that apply to a metal machine.
fn container_rules(docs: &[Value], v1: Option<&Value>) -> Vec<Conflict> {
    let mut out = Vec::new();
    let null = Value::Null;
    let v1 = v1.unwrap_or(&null);
    if has_kind(docs, "DiscoveryServiceConfig") {
        let id = docs
            .iter()
            .find(|d| kind(d) == Some("DiscoveryIdentityConfig"));
        let (has_id, has_secret) = match id {
            Some(d) => (
                is_set(d, "clusterID", Set::NonEmpty),
                is_set(d, "clusterSecret", Set::NonEmpty),
            ),
            None => (
                is_set(v1, "cluster.id", Set::NonEmpty),
                is_set(v1, "cluster.secret", Set::NonEmpty),
            ),
        };
        if !has_id {
            out.push(conflict("DiscoveryIdentityConfig", "cluster ID (.cluster.id or DiscoveryIdentityConfig) should be set when cluster discovery (DiscoveryServiceConfig) is enabled"));
        }
        if !has_secret {
            out.push(conflict("DiscoveryIdentityConfig", "cluster secret (.cluster.secret or DiscoveryIdentityConfig) should be set when cluster discovery (DiscoveryServiceConfig) is enabled"));
        }
    }
    // KubeSpan needs discovery (the first KubeSpanConfig, else v1alpha1's).
    let kubespan = docs
        .iter()
        .find(|d| kind(d) == Some("KubeSpanConfig"))
        .map(|d| is_set(d, "enabled", Set::True))
        .unwrap_or_else(|| is_set(v1, "machine.network.kubespan.enabled", Set::True));
    if kubespan && !has_kind(docs, "DiscoveryServiceConfig") {
        out.push(conflict(
            "KubeSpanConfig",
            "KubeSpan requires cluster discovery to be enabled",
        ));
    }
    let machine_type = at(v1, "machine.type").and_then(Value::as_str).unwrap_or("");
    let control_plane = matches!(machine_type, "controlplane" | "init");
    if control_plane {
        let api_ca = has_kind(docs, "KubeAPIServerCAConfig")
            || at(v1, "cluster.ca").is_some()
            || at(v1, "cluster.acceptedCAs").is_some();
        let legacy = is_set(v1, "cluster.secretboxEncryptionSecret", Set::NonEmpty)
            || is_set(v1, "cluster.aescbcEncryptionSecret", Set::NonEmpty);
        if api_ca && !legacy && !has_kind(docs, "KubeEtcdEncryptionConfig") {
            out.push(conflict("KubeEtcdEncryptionConfig", "etcd encryption config is required for control plane machines running kube-apiserver"));
        }
    } else {
        let mut kinds: Vec<&str> = docs
            .iter()
            .filter_map(kind)
            .filter(|k| CONTROL_PLANE_ONLY.contains(k))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        if !kinds.is_empty() {
            out.push(conflict(
                kinds.join(", "),
                format!(
                    "the following document kinds are only allowed on control plane machines: [{}]",
                    kinds.join(" ")
                ),
            ));
        }
    }
    out
}

/// A broken rule and the patch after which it first appeared (`generated`
/// when the generated config already broke it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blamed {
    pub source: String,
    pub conflict: Conflict,
}

impl std::fmt::Display for Blamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.conflict)
    }
}

/// Apply `steps` to `docs` one by one; what the result breaks, each rule
/// named with the step that introduced it. Err: a step that does not apply.
pub fn blame(
    mut docs: Vec<Value>,
    steps: &[(&crate::talos::patch::Patch, &str)],
    c: crate::model::contract::Contract,
) -> Result<Vec<Blamed>, crate::talos::patch::PatchError> {
    let mut seen: Vec<Blamed> = Vec::new();
    // Two documents can break rules with the same text: each occurrence counts.
    let mut note = |docs: &[Value], source: &str| {
        let now = check_for(docs, c);
        for x in &now {
            let n_now = now.iter().filter(|y| *y == x).count();
            let n_seen = seen.iter().filter(|b| &b.conflict == x).count();
            for _ in n_seen..n_now {
                seen.push(Blamed {
                    source: source.to_string(),
                    conflict: x.clone(),
                });
            }
        }
    };
    note(&docs, "generated");
    for (p, name) in steps {
        crate::talos::patch::apply(&mut docs, p, name)?;
        note(&docs, name);
    }
    // Talos's order (document order), not the order the steps caused them.
    let mut out = Vec::new();
    for x in check_for(&docs, c) {
        if let Some(i) = seen.iter().position(|b| b.conflict == x) {
            out.push(seen.remove(i));
        }
    }
    Ok(out)
}

/// What an operator reads when kiln refuses: each rule, where it came from, and the way out.
pub fn report(what: &str, blamed: &[Blamed]) -> String {
    let mut s = format!(
        "{what}: a Talos node would refuse this config ({} error{}):",
        blamed.len(),
        if blamed.len() == 1 { "" } else { "s" }
    );
    for b in blamed {
        s.push_str(&format!("\n  * {b}"));
    }
    s.push_str("\n  (legacy v1alpha1 fields moved to documents of their own in Talos v1.14: `kiln patch migrate FILE --talos-version v1.14` rewrites a patch)");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(k: &str) -> Value {
        json!({ "apiVersion": "v1alpha1", "kind": k })
    }

    #[test]
    fn each_document_reports_its_first_hit_in_document_order() {
        let v1 = json!({ "machine": { "type": "worker", "kubelet": {}, "install": { "disk": "/dev/sda" }, "nodeLabels": {} },
                         "cluster": { "network": { "cni": { "name": "none" } }, "allowSchedulingOnControlPlanes": false } });
        let docs = vec![
            v1,
            doc("UnattendedInstallConfig"),
            doc("KubeNodeConfig"),
            doc("KubeletConfig"),
            doc("KubeNetworkConfig"),
        ];
        let got: Vec<String> = check(&docs).into_iter().map(|c| c.message).collect();
        assert_eq!(got, [
            "UnattendedInstallConfig config is incompatible with v1alpha1 config (.machine.install)",
            ".cluster.allowSchedulingOnControlPlanes is already set in v1alpha1 config",
            "kubelet config is already set in v1alpha1 config (.machine.kubelet)",
            "cluster network config is already set in the v1alpha1 config (.machine.cluster.network). Please remove it and use only the new KubeNetworkConfig document to avoid conflicts",
        ]);
    }

    #[test]
    fn review_cases_match_talos() {
        // Two documents with the same message are two errors, each blamed.
        let v1 = json!({ "machine": { "type": "controlplane" }, "cluster": { "apiServer": { "admissionControl": [{ "name": "PodSecurity" }] } } });
        let docs = vec![
            v1.clone(),
            doc("KubeAdmissionControlConfig"),
            doc("KubeAuthorizerConfig"),
            doc("KubeEtcdEncryptionConfig"),
        ];
        assert_eq!(check(&docs).len(), 2);
        let base = vec![
            json!({ "machine": { "type": "controlplane" } }),
            doc("KubeAdmissionControlConfig"),
            doc("KubeAuthorizerConfig"),
            doc("KubeEtcdEncryptionConfig"),
        ];
        let p = crate::talos::patch::Patch::Strategic(vec![
            json!({ "cluster": { "apiServer": { "admissionControl": [{ "name": "PodSecurity" }] } } }),
        ]);
        let b = blame(base, &[(&p, "p.yaml")], crate::model::contract::DEFAULT).unwrap();
        assert_eq!(
            b.iter().filter(|x| x.source == "p.yaml").count(),
            2,
            "{b:?}"
        );
        // Zero durations, zoned IPv6 nameservers, an unencrypted volume, a
        // hostDNS with only nulls: as Talos decides them.
        let v1 = json!({ "machine": { "type": "worker", "time": { "bootTimeout": "0m0s" }, "network": { "nameservers": ["fe80::1%eth0"] }, "systemDiskEncryption": { "state": {} }, "features": { "hostDNS": { "enabled": true } } } });
        let r = json!({ "apiVersion": "v1alpha1", "kind": "ResolverConfig", "hostDNS": { "enabled": null } });
        let vol = json!({ "apiVersion": "v1alpha1", "kind": "VolumeConfig", "name": "STATE", "encryption": {} });
        let got: Vec<String> = check(&[v1, doc("TimeSyncConfig"), r, vol])
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(got, ["machine.network.nameservers"]);
        // KubeSpan without discovery; v1.13 has no container rules.
        let ks = vec![
            json!({ "machine": { "type": "worker" } }),
            json!({ "apiVersion": "v1alpha1", "kind": "KubeSpanConfig", "enabled": true }),
        ];
        assert_eq!(
            check(&ks)[0].message,
            "KubeSpan requires cluster discovery to be enabled"
        );
        assert!(check_for(&ks, crate::model::contract::Contract { minor: 13 }).is_empty());
    }

    #[test]
    fn container_rules_follow_the_machine_type() {
        let worker = vec![
            json!({ "machine": { "type": "worker" } }),
            doc("KubeProxyConfig"),
            doc("KubeAPIServerConfig"),
            doc("KubeProxyConfig"),
        ];
        let c = check(&worker);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].message, "the following document kinds are only allowed on control plane machines: [KubeAPIServerConfig KubeProxyConfig]");
        let cp = vec![
            json!({ "machine": { "type": "controlplane" } }),
            doc("KubeAPIServerCAConfig"),
        ];
        assert_eq!(
            check(&cp)[0].message,
            "etcd encryption config is required for control plane machines running kube-apiserver"
        );
        let mut ok = cp.clone();
        ok.push(doc("KubeEtcdEncryptionConfig"));
        assert!(check(&ok).is_empty());
        // Only IPs count as nameservers; a hostDNS conflict needs the document to set it.
        let v1 = json!({ "machine": { "type": "controlplane", "network": { "nameservers": ["not-an-ip"] }, "features": { "hostDNS": { "enabled": true } } } });
        assert!(check(&[v1.clone(), doc("ResolverConfig")]).is_empty());
        let r = json!({ "apiVersion": "v1alpha1", "kind": "ResolverConfig", "hostDNS": { "enabled": true } });
        assert_eq!(check(&[v1, r])[0].field, "machine.features.hostDNS");
    }
}
