//! The client configs kiln writes for the operator under state_dir: a
//! talosconfig with one context per cluster (talosctl switches clusters by
//! context). Existing contexts are kept, so certificates are not reissued on
//! every start.

use std::path::Path;

use crate::config::Config;
use crate::inventory::{Inventory, Role};
use crate::talos::secrets::{write_private, Bundle};
use crate::talos::talosconfig::{self, TalosConfig};

/// Control-plane addresses of `cluster` from the inventory (never the VIP: it
/// only comes up once etcd runs).
pub fn control_plane_endpoints(inv: &Inventory, cluster: &str) -> Vec<String> {
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
pub fn write_talosconfig(
    cfg: &Config,
    inv: &Inventory,
    secrets: &std::collections::BTreeMap<String, Bundle>,
) -> Result<(), String> {
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
                let ctx =
                    talosconfig::admin_context(bundle, endpoints).map_err(|e| e.to_string())?;
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
        write_private(&path, tc.to_yaml().as_bytes(), true).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn read(path: &Path) -> Option<TalosConfig> {
    TalosConfig::parse(&std::fs::read_to_string(path).ok()?).ok()
}
