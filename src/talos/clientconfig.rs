//! The client configs kiln writes for the operator under state_dir: a
//! talosconfig with one context per cluster (talosctl switches clusters by
//! context). Existing contexts are kept, so certificates are not reissued on
//! every start.

use std::path::Path;

use crate::model::config::Config;
use crate::model::files::write_private;
use crate::model::inventory::{Inventory, Role};
use crate::talos::secrets::Bundle;
use crate::talos::talosconfig::{self, TalosConfig};

/// A client config could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientConfigError {
    #[error(transparent)]
    Secrets(#[from] crate::talos::secrets::SecretsError),
    #[error(transparent)]
    File(#[from] crate::model::files::FileError),
    #[error("{}: {source} (kiln writes it when `kiln serve` starts)", path.display())]
    Missing {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: std::path::PathBuf,
        source: crate::model::yaml::YamlError,
    },
    #[error("no cluster {cluster:?} in {}", path.display())]
    NoCluster {
        cluster: String,
        path: std::path::PathBuf,
    },
}

/// Control-plane addresses of `cluster` from the inventory (never the VIP: it
/// only comes up once etcd runs).
pub(crate) fn control_plane_endpoints(inv: &Inventory, cluster: &str) -> Vec<String> {
    inv.machines()
        .iter()
        .filter(|m| {
            inv.profile(&m.profile).is_some_and(|p| {
                p.role == Role::Controlplane && p.cluster.as_deref() == Some(cluster)
            })
        })
        .filter_map(|m| m.ip.map(|ip| ip.to_string()))
        .collect()
}

/// Write (or complete) `state_dir/talosconfig`, 0600.
pub(crate) fn write_talosconfig(
    cfg: &Config,
    inv: &Inventory,
    secrets: &std::collections::BTreeMap<String, Bundle>,
) -> Result<(), ClientConfigError> {
    let path = cfg.state_dir.join("talosconfig");
    let mut tc = read(&path).unwrap_or_default();
    let mut changed = false;
    for (name, bundle) in secrets {
        let endpoints = control_plane_endpoints(inv, name);
        match tc.contexts.get_mut(name) {
            Some(ctx) if ctx.ca == bundle.os().crt => {
                if ctx.endpoints != endpoints && !endpoints.is_empty() {
                    ctx.endpoints = endpoints;
                    changed = true;
                }
            }
            _ => {
                let ctx = talosconfig::admin_context(bundle, endpoints)?;
                tc.contexts.insert(name.clone(), ctx);
                changed = true;
            }
        }
    }
    if tc.context.is_empty() || !tc.contexts.contains_key(&tc.context) {
        if let Some(first) = secrets.keys().next() {
            tc.context = first.clone();
            changed = true;
        }
    }
    if changed {
        write_private(&path, tc.to_yaml().as_bytes(), true)?;
    }
    Ok(())
}

fn read(path: &Path) -> Option<TalosConfig> {
    TalosConfig::parse(&std::fs::read_to_string(path).ok()?).ok()
}

/// Write (or complete) `state_dir/kubeconfig`, 0600: an `admin@<cluster>`
/// context per cluster; existing entries are kept so certificates are not
/// reissued on every start.
pub(crate) fn write_kubeconfig(
    cfg: &Config,
    secrets: &std::collections::BTreeMap<String, Bundle>,
) -> Result<(), ClientConfigError> {
    use crate::talos::kubeconfig::{self, KubeConfig};
    let path = cfg.state_dir.join("kubeconfig");
    let mut kc = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| KubeConfig::parse(&t).ok())
        .unwrap_or_default();
    let mut changed = false;
    for (name, bundle) in secrets {
        let Some(spec) = cfg.clusters.get(name) else {
            continue;
        };
        let ca = bundle
            .certs
            .k8s
            .as_ref()
            .map(|c| c.crt.clone())
            .unwrap_or_default();
        let current = kc
            .clusters
            .iter()
            .find(|c| &c.name == name)
            .map(|c| c.item.cluster.clone());
        let up_to_date = current.is_some_and(|c| {
            c["server"] == serde_json::json!(spec.endpoint)
                && c["certificate-authority-data"] == serde_json::json!(ca)
        }) && kc.users.iter().any(|u| u.name == format!("admin@{name}"));
        if !up_to_date {
            let new = kubeconfig::admin(name, &spec.endpoint, bundle)?;
            let keep = kc.current_context.clone();
            kc.merge(new);
            if !keep.is_empty() {
                kc.current_context = keep;
            }
            changed = true;
        }
    }
    if changed {
        if kc.current_context.is_empty() {
            kc.current_context = kc
                .contexts
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default();
        }
        write_private(&path, kc.to_yaml().as_bytes(), true)?;
    }
    Ok(())
}

/// `kiln kubeconfig` / `kiln talosconfig`: the file kiln keeps, cut down to one
/// cluster if asked, printed, written, or merged into the user's own file.
pub(crate) fn export(
    cfg: &Config,
    kind: &str,
    cluster: Option<&str>,
    output: Option<&Path>,
    merge: Option<&Path>,
) -> Result<String, ClientConfigError> {
    use crate::talos::kubeconfig::KubeConfig;
    let src = cfg.state_dir.join(kind);
    let text = std::fs::read_to_string(&src).map_err(|source| ClientConfigError::Missing {
        path: src.clone(),
        source,
    })?;
    let (yaml, merged) = if kind == "kubeconfig" {
        let mut kc = KubeConfig::parse(&text).map_err(|source| ClientConfigError::Parse {
            path: src.clone(),
            source,
        })?;
        if let Some(c) = cluster {
            let user = format!("admin@{c}");
            if !kc.clusters.iter().any(|x| x.name == c) {
                return Err(ClientConfigError::NoCluster {
                    cluster: c.to_string(),
                    path: src,
                });
            }
            kc.clusters.retain(|x| x.name == c);
            kc.users.retain(|x| x.name == user);
            kc.contexts.retain(|x| x.name == user);
            kc.current_context = user;
        }
        match merge {
            Some(m) => {
                let mut base = std::fs::read_to_string(m)
                    .ok()
                    .and_then(|t| KubeConfig::parse(&t).ok())
                    .unwrap_or_default();
                base.merge(kc);
                (base.to_yaml(), Some(m))
            }
            None => (kc.to_yaml(), None),
        }
    } else {
        let mut tc = TalosConfig::parse(&text).map_err(|source| ClientConfigError::Parse {
            path: src.clone(),
            source,
        })?;
        if let Some(c) = cluster {
            if !tc.contexts.contains_key(c) {
                return Err(ClientConfigError::NoCluster {
                    cluster: c.to_string(),
                    path: src,
                });
            }
            tc.contexts.retain(|k, _| k == c);
            tc.context = c.to_string();
        }
        match merge {
            Some(m) => {
                let mut base = read(m).unwrap_or_default();
                base.merge(tc);
                (base.to_yaml(), Some(m))
            }
            None => (tc.to_yaml(), None),
        }
    };
    match (merged, output) {
        (Some(m), _) | (None, Some(m)) => {
            write_private(m, yaml.as_bytes(), true)?;
            Ok(format!("wrote {}\n", m.display()))
        }
        (None, None) => Ok(yaml),
    }
}
