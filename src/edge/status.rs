//! The read-only status page, on the HTTP port: `/status` (clusters,
//! machines, MACs seen but not in the inventory) and `/status/machine/<mac>`
//! (the machine's explanation, timeline and kernel log), each a static page
//! (no CDN, no framework) that polls its JSON every two seconds. Any action
//! goes through the authenticated local API, never through here.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::brain::Provisioner;
use crate::model::inventory::Role;

const PAGE: &str = include_str!("status.html");

/// Lines of kernel log the machine page shows (the newest).
const KERNEL_TAIL: usize = 300;

pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

fn overview(p: &Provisioner) -> Value {
    let machines = crate::edge::api::machines(p);
    let inv = p.inventory();
    let clusters: Vec<Value> = crate::brain::bootstrap::cluster_views(p)
        .into_iter()
        .map(|c| {
            let spec = p.cfg.clusters.get(&c.name);
            let cps: Vec<_> = machines
                .iter()
                .filter(|m| {
                    m.cluster.as_deref() == Some(c.name.as_str())
                        && m.role == Role::Controlplane.as_str()
                })
                .collect();
            let ready = cps.iter().filter(|m| m.state == "ready").count();
            let bootstrap = match (&c.bootstrap_node, c.bootstrapped_at) {
                (_, Some(_)) => "done",
                (Some(_), None) => "decided",
                (None, None) => "pending",
            };
            json!({
                "name": c.name,
                "endpoint": spec.map(|s| s.endpoint.clone()).unwrap_or_default(),
                "talos_version": spec
                    .and_then(|s| s.talos_version.clone())
                    .unwrap_or_else(|| talos_versions(&inv, &c.name)),
                "bootstrap": bootstrap,
                "bootstrap_node": c.bootstrap_node.as_ref().map(|n| n.hostname.clone()),
                "control_planes": cps.len(),
                "control_planes_ready": ready,
            })
        })
        .collect();
    let pending: Vec<_> = p
        .timeline
        .seen()
        .into_iter()
        .rev()
        .filter(|s| {
            s.mac
                .parse::<crate::model::mac::Mac>()
                .is_ok_and(|m| inv.machine(&m).is_none() && inv.retired(&m).is_none())
        })
        .collect();
    json!({ "clusters": clusters, "machines": machines, "pending": pending })
}

pub(crate) async fn overview_json(State(p): State<Arc<Provisioner>>) -> Response {
    match tokio::task::spawn_blocking(move || overview(&p)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn machine(p: &Provisioner, id: &str) -> Option<Value> {
    let mac: crate::model::mac::Mac = id.parse().ok()?;
    let explain = p.explain(id)?;
    let title = p
        .inventory()
        .machine(&mac)
        .map(|m| format!("{} ({mac})", m.hostname))
        .unwrap_or_else(|| mac.to_string());
    let (lines, n) = p.kernel_log_lines(id, 0).unwrap_or_default();
    let tail: Vec<String> = lines
        .into_iter()
        .skip(n.saturating_sub(KERNEL_TAIL))
        .collect();
    Some(json!({
        "title": title,
        "explain": explain,
        "timeline": p.timeline.of(&mac),
        "kernel_log": tail,
    }))
}

/// `/status/machine/<mac>` (the page) and `/status/machine/<mac>.json`.
pub(crate) async fn machine_route(
    State(p): State<Arc<Provisioner>>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = id.strip_suffix(".json").map(String::from) else {
        return page().await;
    };
    match tokio::task::spawn_blocking(move || machine(&p, &id)).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such machine\n").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The Talos releases a cluster's machines boot (their profiles'), when the
/// cluster pins none: "v1.13.9", or "v1.13.9, v1.14.0" mid-upgrade.
fn talos_versions(inv: &crate::model::inventory::Inventory, cluster: &str) -> String {
    let versions: std::collections::BTreeSet<&str> = inv
        .machines()
        .iter()
        .filter_map(|m| inv.profile(&m.profile))
        .filter(|p| p.cluster.as_deref() == Some(cluster))
        .map(|p| p.talos_version.as_str())
        .collect();
    versions.into_iter().collect::<Vec<_>>().join(", ")
}
