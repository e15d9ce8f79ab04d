//! Config patches with Talos's semantics (pkg/machinery/config/configpatcher):
//! strategic merge (documents matched by apiVersion/kind/name, maps merged per
//! key, lists appended except where Talos merges by key or replaces, `$patch:
//! delete`) and RFC 6902 JSON patches (single-document configs only).

use serde_json::{Map, Value};

use crate::model::patch::err;
pub use crate::model::patch::{Patch, PatchError};

/// Identity of a document: None for the v1alpha1 document, else (kind, name).
fn identity(d: &Value) -> Option<(String, String)> {
    let kind = d.get("kind")?.as_str()?.to_string();
    let name = d
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some((kind, name))
}

fn is_delete(v: &Value) -> bool {
    v.get("$patch").and_then(Value::as_str) == Some("delete")
}

/// Apply `patch` to `docs` in place.
pub fn apply(docs: &mut Vec<Value>, patch: &Patch, source: &str) -> Result<(), PatchError> {
    match patch {
        Patch::Json6902(ops) => {
            if docs.len() != 1 {
                return Err(err(
                    source,
                    "",
                    "JSON6902 patches are not supported for multi-document machine configuration",
                ));
            }
            let p: json_patch::Patch = serde_json::from_value(ops.clone())
                .map_err(|e| err(source, "", format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut docs[0], &p).map_err(|e| err(source, "", e.to_string()))
        }
        Patch::Strategic(pdocs) => {
            for pd in pdocs {
                let id = identity(pd);
                let pos = docs.iter().position(|d| identity(d) == id);
                if is_delete(pd) {
                    match (&id, pos) {
                        (None, _) => {
                            return Err(err(source, "", "the v1alpha1 document cannot be deleted"))
                        }
                        (Some(_), Some(i)) => {
                            docs.remove(i);
                        }
                        (Some(_), None) => {}
                    }
                    continue;
                }
                match pos {
                    Some(i) => merge(&mut docs[i], pd, "", source)?,
                    None => docs.push(strip_directives(pd)),
                }
            }
            Ok(())
        }
    }
}

/// Lists Talos replaces instead of appending to (`merge:"replace"`).
const REPLACE: &[&str] = &[
    "cluster.network.podSubnets",
    "cluster.network.serviceSubnets",
    "cluster.apiServer.auditPolicy",
];

/// Lists Talos merges item by item, with the key that identifies an item.
fn list_key(path: &str) -> Option<&'static [&'static str]> {
    match path {
        "machine.network.interfaces" => Some(&["interface", "deviceSelector"]),
        "machine.network.interfaces[].vlans" => Some(&["vlanId"]),
        "cluster.apiServer.admissionControl" => Some(&["name"]),
        _ => None,
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| k.as_str() != "$patch" && !is_delete(v))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|v| !is_delete(v))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn is_zero(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.is_empty()) || v.as_f64() == Some(0.0)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn merge(target: &mut Value, patch: &Value, path: &str, source: &str) -> Result<(), PatchError> {
    let Value::Object(pm) = patch else {
        return Err(err(source, path, "expected a mapping"));
    };
    let Value::Object(tm) = target else {
        return Err(err(
            source,
            path,
            format!("cannot merge a mapping into {}", kind_of(target)),
        ));
    };
    merge_maps(tm, pm, path, source)
}

fn merge_maps(
    tm: &mut Map<String, Value>,
    pm: &Map<String, Value>,
    path: &str,
    source: &str,
) -> Result<(), PatchError> {
    for (k, pv) in pm {
        if k == "$patch" {
            continue;
        }
        let here = join(path, k);
        if is_delete(pv) {
            tm.remove(k);
            continue;
        }
        match tm.get_mut(k) {
            Some(tv) => merge_value(tv, pv, &here, source)?,
            None => {
                if !pv.is_null() {
                    tm.insert(k.clone(), strip_directives(pv));
                }
            }
        }
    }
    Ok(())
}

/// Does `item` match `probe` on `key` (the first of `keys` the probe carries)?
fn same_item(item: &Value, probe: &Value, keys: &[&str]) -> bool {
    keys.iter()
        .any(|k| probe.get(*k).is_some() && probe.get(*k) == item.get(*k))
}

fn merge_value(t: &mut Value, p: &Value, path: &str, source: &str) -> Result<(), PatchError> {
    if p.is_null() {
        return Ok(());
    }
    if REPLACE.contains(&path) {
        *t = strip_directives(p);
        return Ok(());
    }
    match (t, p) {
        (Value::Object(tm), Value::Object(pm)) => merge_maps(tm, pm, path, source),
        (Value::Array(ta), Value::Array(pa)) => {
            let item_path = format!("{path}[]");
            if let Some(keys) = list_key(path) {
                for pi in pa {
                    if is_delete(pi) {
                        ta.retain(|ti| !same_item(ti, pi, keys));
                    } else if let Some(ti) = ta.iter_mut().find(|ti| same_item(ti, pi, keys)) {
                        merge_value(ti, pi, &item_path, source)?;
                    } else {
                        ta.push(strip_directives(pi));
                    }
                }
            } else {
                for pi in pa {
                    if is_delete(pi) {
                        // Items matching the first other key of the delete marker go.
                        if let Some((k, v)) = pi
                            .as_object()
                            .and_then(|m| m.iter().find(|(k, _)| k.as_str() != "$patch"))
                        {
                            ta.retain(|ti| ti.get(k) != Some(v));
                        }
                    } else {
                        ta.push(strip_directives(pi));
                    }
                }
            }
            Ok(())
        }
        (t @ (Value::Object(_) | Value::Array(_)), p) => Err(err(
            source,
            path,
            format!("cannot replace {} with {}", kind_of(t), kind_of(p)),
        )),
        (t, p @ (Value::Object(_) | Value::Array(_))) if !t.is_null() => Err(err(
            source,
            path,
            format!("cannot replace {} with {}", kind_of(t), kind_of(p)),
        )),
        (t, p) => {
            // Go zero values ("" and 0) in a patch leave the field alone.
            if !is_zero(p) || t.is_null() {
                *t = p.clone();
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Vec<Value> {
        vec![
            json!({"version": "v1alpha1", "machine": {"install": {"wipe": false}, "network": {}, "kubelet": {"extraArgs": {"a": "1"}}}, "cluster": {"network": {"podSubnets": ["10.244.0.0/16"]}}}),
            json!({"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "stable"}),
        ]
    }

    fn run(docs: &mut Vec<Value>, text: &str) -> Result<(), PatchError> {
        let p = crate::model::patch::parse(text, "p.yaml")?;
        apply(docs, &p, "p.yaml")
    }

    #[test]
    fn interfaces_merge_by_name_and_lists_append() {
        let mut d = base();
        run(
            &mut d,
            "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        dhcp: true\n",
        )
        .unwrap();
        run(&mut d, "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        vip:\n          ip: 10.0.10.10\n").unwrap();
        assert_eq!(
            d[0]["machine"]["network"]["interfaces"],
            json!([{"interface": "eth0", "dhcp": true, "vip": {"ip": "10.0.10.10"}}])
        );
        run(&mut d, "cluster:\n  extraManifests: [a]\n").unwrap();
        run(&mut d, "cluster:\n  extraManifests: [b]\n").unwrap();
        assert_eq!(d[0]["cluster"]["extraManifests"], json!(["a", "b"]));
        run(
            &mut d,
            "cluster:\n  network:\n    podSubnets: [10.0.0.0/8]\n",
        )
        .unwrap();
        assert_eq!(
            d[0]["cluster"]["network"]["podSubnets"],
            json!(["10.0.0.0/8"]),
            "replace-merged list"
        );
        run(
            &mut d,
            "machine:\n  kubelet:\n    extraArgs:\n      b: '2'\n",
        )
        .unwrap();
        assert_eq!(
            d[0]["machine"]["kubelet"]["extraArgs"],
            json!({"a": "1", "b": "2"})
        );
    }

    #[test]
    fn deletes_keys_items_and_documents() {
        let mut d = base();
        run(&mut d, "machine:\n  network:\n    interfaces:\n      - interface: eth0\n      - interface: eth1\n").unwrap();
        run(&mut d, "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        $patch: delete\n").unwrap();
        assert_eq!(
            d[0]["machine"]["network"]["interfaces"],
            json!([{"interface": "eth1"}])
        );
        run(&mut d, "machine:\n  install:\n    $patch: delete\n").unwrap();
        assert!(d[0]["machine"].get("install").is_none());
        run(
            &mut d,
            "apiVersion: v1alpha1\nkind: HostnameConfig\n$patch: delete\n",
        )
        .unwrap();
        assert_eq!(d.len(), 1);
        // Multi-document patch: new documents are appended, booleans replace.
        run(&mut d, "machine:\n  install:\n    wipe: true\n---\napiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: 10.0.0.5\nlink: eth0\n").unwrap();
        assert_eq!(d[0]["machine"]["install"]["wipe"], json!(true));
        assert_eq!(d[1]["kind"], json!("Layer2VIPConfig"));
    }

    #[test]
    fn json6902_works_on_single_documents_only() {
        let mut one = vec![base().remove(0)];
        run(
            &mut one,
            "- op: add\n  path: /machine/install/disk\n  value: /dev/sda\n",
        )
        .unwrap();
        assert_eq!(one[0]["machine"]["install"]["disk"], json!("/dev/sda"));
        let e = run(
            &mut base(),
            "- op: add\n  path: /machine/install/disk\n  value: /dev/sda\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.yaml: JSON6902 patches are not supported for multi-document machine configuration"
        );
        let e = run(&mut one, "- op: remove\n  path: /machine/nosuch\n").unwrap_err();
        assert!(
            e.to_string().starts_with("p.yaml: ") && e.to_string().contains("/machine/nosuch"),
            "{e}"
        );
    }

    #[test]
    fn type_mismatch_names_file_and_path() {
        let e = run(&mut base(), "machine:\n  install: /dev/sda\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.yaml: machine.install: cannot replace a mapping with a string"
        );
    }
}
