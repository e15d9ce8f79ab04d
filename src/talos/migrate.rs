//! `kiln patch migrate`: a strategic-merge patch written for the v1alpha1
//! document of Talos v1.13 and earlier, rewritten into the documents Talos
//! v1.14 reads instead (hack/release.toml on release-1.14 lists each move).
//! Fields with no conflict rule (network interfaces, files, ...) stay in the
//! v1alpha1 part; a field that would conflict and has no faithful rewrite is
//! an error naming it, never silently dropped. Kernel arguments are the one
//! exception: v1.14 installs take them from the installer's schematic, so they
//! leave the patch with a note saying so.

use serde_json::{json, Map, Value};

use super::multidoc::doc;

/// A migrated patch and what moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Migrated {
    pub docs: Vec<Value>,
    /// One line per field moved or dropped, e.g. `machine.kubelet.extraArgs → KubeletConfig.extraArgs`.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {why}")]
pub struct MigrateError {
    pub field: String,
    pub why: String,
}

fn fail(field: &str, why: impl Into<String>) -> MigrateError {
    MigrateError {
        field: field.to_string(),
        why: why.into(),
    }
}

/// Documents under construction, by kind, in the order first used.
#[derive(Default)]
struct Out {
    docs: Vec<(String, Map<String, Value>)>,
    extra: Vec<Value>,
    notes: Vec<String>,
}

impl Out {
    fn doc(&mut self, kind: &str) -> &mut Map<String, Value> {
        let i = match self.docs.iter().position(|(k, _)| k == kind) {
            Some(i) => i,
            None => {
                self.docs.push((kind.to_string(), Map::new()));
                self.docs.len() - 1
            }
        };
        &mut self.docs[i].1
    }
    /// Move `value` (from legacy `from`) to `kind`.`key`.
    fn put(&mut self, from: &str, kind: &str, key: &str, value: Value) {
        self.notes.push(format!("{from} → {kind}.{key}"));
        self.doc(kind).insert(key.to_string(), value);
    }
    fn push(&mut self, from: &str, to: &str, d: Value) {
        self.notes.push(format!("{from} → {to}"));
        self.extra.push(d);
    }
}

fn take(m: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = m;
    for p in parents {
        cur = cur.get_mut(*p)?;
    }
    let v = cur.as_object_mut()?.remove(*last)?;
    (!v.is_null()).then_some(v)
}

/// Drop empty maps left behind once their fields moved.
fn prune(v: &mut Value) {
    if let Value::Object(m) = v {
        for x in m.values_mut() {
            prune(x);
        }
        m.retain(|_, x| !matches!(x, Value::Object(o) if o.is_empty()));
    }
}

/// Kubernetes flags are strings in v1.14's `extraArgs` (`meta.Args`).
fn args(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => Value::String(s),
                        Value::Array(a) => Value::Array(a),
                        other => Value::String(other.to_string()),
                    };
                    (k, s)
                })
                .collect(),
        ),
        other => other,
    }
}

/// A DNS-1123 name for an external manifest URL: the GitHub repository for
/// raw.githubusercontent.com URLs, else the file name without its extension.
pub fn manifest_name(url: &str) -> String {
    let path = url.split("://").nth(1).unwrap_or(url);
    let mut parts = path.split('/');
    let host = parts.next().unwrap_or("");
    let segs: Vec<&str> = parts.filter(|s| !s.is_empty()).collect();
    let raw = if host == "raw.githubusercontent.com" && segs.len() >= 2 {
        segs[1].to_string()
    } else {
        let f = segs.last().copied().unwrap_or(host);
        f.split('.').next().unwrap_or(f).to_string()
    };
    let mut n: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n = n.trim_matches('-').to_string();
    n.truncate(63);
    if n.is_empty() {
        "manifest".into()
    } else {
        n
    }
}

fn manifests(out: &mut Out, from: &str, urls: &[Value], headers: Option<&Value>) {
    for (i, u) in urls.iter().enumerate() {
        let Some(u) = u.as_str() else { continue };
        let mut name = manifest_name(u);
        if out.extra.iter().any(|d| d["name"] == json!(name)) {
            name = format!("{name}-{}", i + 1);
        }
        let mut body = json!({ "name": name, "url": u });
        if let Some(h) = headers {
            body["headers"] = h.clone();
        }
        out.push(
            &format!("{from}[{i}]"),
            &format!("KubeExternalManifestConfig {name}"),
            doc("KubeExternalManifestConfig", body),
        );
    }
}

fn kubelet(v1: &mut Value, out: &mut Out) -> Result<(), MigrateError> {
    let Some(Value::Object(mut k)) = take(v1, &["machine", "kubelet"]) else {
        return Ok(());
    };
    for (from, to) in [
        ("image", "image"),
        ("clusterDNS", "clusterDNS"),
        (
            "defaultRuntimeSeccompProfileEnabled",
            "defaultRuntimeSeccompProfileEnabled",
        ),
        ("extraConfig", "config"),
    ] {
        if let Some(x) = k.remove(from) {
            out.put(&format!("machine.kubelet.{from}"), "KubeletConfig", to, x);
        }
    }
    if let Some(x) = k.remove("extraArgs") {
        out.put(
            "machine.kubelet.extraArgs",
            "KubeletConfig",
            "extraArgs",
            args(x),
        );
    }
    for f in ["nodeIP", "skipNodeRegistration", "registerWithFQDN"] {
        if let Some(x) = k.remove(f) {
            out.put(&format!("machine.kubelet.{f}"), "KubeNodeConfig", f, x);
        }
    }
    if let Some((f, _)) = k.iter().next() {
        return Err(fail(&format!("machine.kubelet.{f}"), "has no automatic v1.14 rewrite (Talos moved it to a document of its own, e.g. UserVolumeConfig for extraMounts, KubeCredentialProviderConfig for credentialProviderConfig): write that document by hand and remove the field"));
    }
    Ok(())
}

fn node(v1: &mut Value, out: &mut Out) {
    for (from, to) in [("nodeLabels", "labels"), ("nodeAnnotations", "annotations")] {
        if let Some(x) = take(v1, &["machine", from]) {
            out.put(&format!("machine.{from}"), "KubeNodeConfig", to, x);
        }
    }
    let taints = take(v1, &["machine", "nodeTaints"]);
    if let Some(allow) = take(v1, &["cluster", "allowSchedulingOnControlPlanes"]) {
        if allow == json!(true) {
            // Field-level delete: always resolves, on workers too (V1_14.md §2.6).
            out.push(
                "cluster.allowSchedulingOnControlPlanes",
                "KubeNodeConfig.taints ($patch: delete: the control-plane NoSchedule taint goes)",
                doc(
                    "KubeNodeConfig",
                    json!({ "taints": { "$patch": "delete" } }),
                ),
            );
        } else {
            out.notes.push(
                "cluster.allowSchedulingOnControlPlanes: false dropped (the v1.14 default: KubeNodeConfig keeps the control-plane taint)".into(),
            );
        }
    }
    if let Some(t) = taints {
        out.push(
            "machine.nodeTaints",
            "KubeNodeConfig.taints",
            doc("KubeNodeConfig", json!({ "taints": t })),
        );
    }
}

fn install(v1: &mut Value, out: &mut Out) -> Result<(), MigrateError> {
    let Some(Value::Object(mut i)) = take(v1, &["machine", "install"]) else {
        return Ok(());
    };
    if let Some(args) = i.remove("extraKernelArgs") {
        out.notes.push(format!("machine.install.extraKernelArgs {args} dropped: v1.14 installs take kernel arguments from the installer image's schematic (Image Factory customization.extraKernelArgs); kiln's stable_interface_names and the boot schematic carry them"));
    }
    if let Some(d) = i.remove("disk") {
        let Some(d) = d.as_str().map(String::from) else {
            return Err(fail(
                "machine.install.disk",
                "is not a string (a device path like /dev/sda)",
            ));
        };
        out.put(
            "machine.install.disk",
            "UnattendedInstallConfig",
            "provisioning",
            json!({ "diskSelector": { "match": super::multidoc::install_disk_match(&d) } }),
        );
    }
    if let Some(w) = i.remove("wipe") {
        out.notes
            .push("machine.install.wipe → UnattendedInstallConfig.provisioning.wipe".into());
        let p = out
            .doc("UnattendedInstallConfig")
            .entry("provisioning")
            .or_insert(json!({}));
        p["wipe"] = w;
    }
    if let Some(img) = i.remove("image") {
        out.put(
            "machine.install.image",
            "UnattendedInstallConfig",
            "installer",
            json!({ "image": img }),
        );
    }
    if let Some((f, _)) = i.iter().next() {
        return Err(fail(&format!("machine.install.{f}"), "has no UnattendedInstallConfig equivalent kiln can write (its provisioning.diskSelector.match takes a CEL expression): write the UnattendedInstallConfig document by hand"));
    }
    Ok(())
}

fn network(v1: &mut Value, out: &mut Out) -> Result<(), MigrateError> {
    let Some(Value::Object(mut n)) = take(v1, &["cluster", "network"]) else {
        return Ok(());
    };
    for f in ["dnsDomain", "podSubnets", "serviceSubnets"] {
        if let Some(x) = n.remove(f) {
            out.put(&format!("cluster.network.{f}"), "KubeNetworkConfig", f, x);
        }
    }
    if let Some(cni) = n.remove("cni") {
        match cni.get("name").and_then(Value::as_str) {
            Some("none") | Some("custom") => {
                out.push(
                    "cluster.network.cni.name",
                    "KubeFlannelCNIConfig ($patch: delete)",
                    doc("KubeFlannelCNIConfig", json!({ "$patch": "delete" })),
                );
                let urls = cni
                    .get("urls")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                manifests(out, "cluster.network.cni.urls", &urls, None);
            }
            Some("flannel") if cni.get("flannel").is_none() => {
                out.notes.push("cluster.network.cni.name: flannel dropped (the v1.14 default: KubeFlannelCNIConfig)".into());
            }
            _ => return Err(fail(
                "cluster.network.cni",
                "has no automatic v1.14 rewrite: write the KubeFlannelCNIConfig document by hand",
            )),
        }
    }
    if let Some((f, _)) = n.iter().next() {
        return Err(fail(
            &format!("cluster.network.{f}"),
            "has no automatic v1.14 rewrite: write the KubeNetworkConfig document by hand",
        ));
    }
    Ok(())
}

/// `cluster.<from>` pods → their v1.14 document, field by field.
fn pods(v1: &mut Value, out: &mut Out) -> Result<(), MigrateError> {
    for (from, kind, fields) in [
        (
            "apiServer",
            "KubeAPIServerConfig",
            &["image", "extraArgs", "env", "resources", "certSANs"][..],
        ),
        (
            "controllerManager",
            "KubeControllerManagerConfig",
            &["image", "extraArgs", "env", "resources"][..],
        ),
        (
            "scheduler",
            "KubeSchedulerConfig",
            &["image", "extraArgs", "env", "resources", "config"][..],
        ),
        (
            "proxy",
            "KubeProxyConfig",
            &["image", "extraArgs", "mode", "disabled"][..],
        ),
        ("coreDNS", "KubeCoreDNSConfig", &["image", "disabled"][..]),
    ] {
        let Some(Value::Object(mut p)) = take(v1, &["cluster", from]) else {
            continue;
        };
        for f in fields {
            let Some(x) = p.remove(*f) else { continue };
            let at = format!("cluster.{from}.{f}");
            match *f {
                "extraArgs" => out.put(&at, kind, f, args(x)),
                "certSANs" => out.put(&at, kind, "certExtraSANs", x),
                "disabled" => out.put(&at, kind, "enabled", json!(x != json!(true))),
                _ => out.put(&at, kind, f, x),
            }
        }
        if let Some((f, _)) = p.iter().next() {
            return Err(fail(&format!("cluster.{from}.{f}"), format!("has no automatic v1.14 rewrite: write the {kind} document (or the KubeAdmissionControl/AuditPolicy/Authentication/Authorizer documents for the API server's policies) by hand")));
        }
    }
    if let Some(port) = take(v1, &["cluster", "controlPlane", "localAPIServerPort"]) {
        out.put(
            "cluster.controlPlane.localAPIServerPort",
            "KubeAPIServerConfig",
            "apiPort",
            port,
        );
    }
    let headers = take(v1, &["cluster", "extraManifestHeaders"]);
    if let Some(Value::Array(urls)) = take(v1, &["cluster", "extraManifests"]) {
        manifests(out, "cluster.extraManifests", &urls, headers.as_ref());
    }
    Ok(())
}

fn machine_misc(v1: &mut Value, out: &mut Out) -> Result<(), MigrateError> {
    if let Some(s) = take(v1, &["machine", "sysctls"]) {
        out.put("machine.sysctls", "SysctlConfig", "params", s);
    }
    if let Some(Value::Object(mirrors)) = take(v1, &["machine", "registries", "mirrors"]) {
        for (host, m) in mirrors {
            let eps: Vec<Value> = m
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|u| json!({ "url": u }))
                .collect();
            let mut body = json!({ "name": host, "endpoints": eps });
            if let Some(o) = m.get("overridePath") {
                body["endpoints"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                    .for_each(|e| e["overridePath"] = o.clone());
            }
            if let Some(s) = m.get("skipFallback") {
                body["skipFallback"] = s.clone();
            }
            out.push(
                &format!("machine.registries.mirrors.{host}"),
                &format!("RegistryMirrorConfig {host}"),
                doc("RegistryMirrorConfig", body),
            );
        }
    }
    if let Some(kp) = take(v1, &["machine", "features", "kubePrism"]) {
        if kp.get("enabled") == Some(&json!(false)) {
            out.push(
                "machine.features.kubePrism",
                "KubePrismConfig ($patch: delete)",
                doc("KubePrismConfig", json!({ "$patch": "delete" })),
            );
        } else if let Some(port) = kp.get("port") {
            out.put(
                "machine.features.kubePrism.port",
                "KubePrismConfig",
                "port",
                port.clone(),
            );
        }
    }
    resolver_and_hostname(v1, out);
    Ok(())
}

/// `machine.features.hostDNS`, nameservers, search domains, hostname and
/// stable hostname: ResolverConfig and HostnameConfig.
fn resolver_and_hostname(v1: &mut Value, out: &mut Out) {
    if let Some(h) = take(v1, &["machine", "features", "hostDNS"]) {
        out.put("machine.features.hostDNS", "ResolverConfig", "hostDNS", h);
    }
    if let Some(Value::Array(ns)) = take(v1, &["machine", "network", "nameservers"]) {
        let ns: Vec<Value> = ns.into_iter().map(|a| json!({ "address": a })).collect();
        out.put(
            "machine.network.nameservers",
            "ResolverConfig",
            "nameservers",
            json!(ns),
        );
    }
    let domains = take(v1, &["machine", "network", "searchDomains"]);
    let disable = take(v1, &["machine", "network", "disableSearchDomain"]);
    if domains.is_some() || disable.is_some() {
        let mut s = json!({});
        if let Some(d) = domains {
            s["domains"] = d;
        }
        if let Some(d) = disable {
            s["disableDefault"] = d;
        }
        out.put(
            "machine.network.searchDomains/disableSearchDomain",
            "ResolverConfig",
            "searchDomains",
            s,
        );
    }
    if let Some(h) = take(v1, &["machine", "network", "hostname"]) {
        out.push(
            "machine.network.hostname",
            "HostnameConfig.hostname",
            doc(
                "HostnameConfig",
                json!({ "auto": { "$patch": "delete" }, "hostname": h }),
            ),
        );
    }
    if let Some(s) = take(v1, &["machine", "features", "stableHostname"]) {
        if s != json!(true) {
            // false = a hostname from the address (talos-addr), which
            // HostnameConfig cannot say: without it Talos falls back to that.
            out.push(
                "machine.features.stableHostname: false",
                "HostnameConfig ($patch: delete: the address-derived hostname)",
                doc("HostnameConfig", json!({ "$patch": "delete" })),
            );
            return;
        }
        let auto = "stable";
        out.put(
            "machine.features.stableHostname",
            "HostnameConfig",
            "auto",
            json!(auto),
        );
    }
}

/// A migrated patch for one role: workers drop the control-plane-only
/// documents the migration wrote (the v1alpha1 fields they came from were
/// ignored on workers), each noted; documents the patch itself held stay, so
/// Talos's rule still catches a mistake there.
pub fn for_role(m: Migrated, role: crate::model::inventory::Role, input: &[Value]) -> Migrated {
    if role == crate::model::inventory::Role::Controlplane {
        return m;
    }
    let mut notes = m.notes;
    let docs = m
        .docs
        .into_iter()
        .filter(|d| {
            let k = d.get("kind").and_then(Value::as_str).unwrap_or("");
            let cp_only = super::conflicts::CONTROL_PLANE_ONLY.contains(&k) && !input.contains(d);
            if cp_only {
                notes.push(format!("{k} left out on workers (control planes only)"));
            }
            !cp_only
        })
        .collect();
    Migrated { docs, notes }
}

/// Rewrite the v1alpha1 parts of `docs` (a strategic-merge patch) for Talos v1.14.
pub fn migrate(docs: &[Value]) -> Result<Migrated, MigrateError> {
    let mut result = Vec::new();
    let mut notes = Vec::new();
    for d in docs {
        if d.get("kind").is_some() {
            result.push(d.clone());
            continue;
        }
        let mut v1 = d.clone();
        let mut out = Out::default();
        install(&mut v1, &mut out)?;
        node(&mut v1, &mut out);
        kubelet(&mut v1, &mut out)?;
        network(&mut v1, &mut out)?;
        pods(&mut v1, &mut out)?;
        machine_misc(&mut v1, &mut out)?;
        prune(&mut v1);
        // Whatever still conflicts has no rewrite here.
        if let Some(c) = leftover(&v1) {
            return Err(c);
        }
        if v1.as_object().is_some_and(|m| !m.is_empty()) {
            result.push(v1);
        }
        for (kind, body) in out.docs {
            result.push(doc(&kind, Value::Object(body)));
        }
        result.extend(out.extra);
        notes.extend(out.notes);
    }
    Ok(Migrated {
        docs: result,
        notes,
    })
}

/// A field left in the v1alpha1 part that a v1.14 config's documents conflict with.
fn leftover(v1: &Value) -> Option<MigrateError> {
    super::conflicts::legacy_fields(v1)
        .into_iter()
        .next()
        .map(|c| {
            fail(
                &c.field,
                format!("has no automatic v1.14 rewrite ({})", c.message),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_are_dns_1123() {
        assert_eq!(
            manifest_name(crate::model::settings::CERT_APPROVER),
            "kubelet-serving-cert-approver"
        );
        assert_eq!(
            manifest_name("https://docs.projectcalico.org/archive/v3.20/manifests/canal.yaml"),
            "canal"
        );
        assert_eq!(
            manifest_name("https://example.com/My_CNI.v2.yaml"),
            "my-cni"
        );
    }
}
