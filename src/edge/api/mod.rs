//! kiln's own JSON API: what `kiln machines` shows and the few operations it
//! performs. Served on a Unix socket in `state_dir` (0600: the daemon's user
//! only), and on 127.0.0.1 with a bearer token only where the operator opted
//! in (`api_tcp: true`). No web page can drive it: any request with an Origin
//! header is refused, and every POST must be `application/json`, which no
//! simple cross-origin form or fetch can send (docs/security.md).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::brain::bootstrap::Bootstrapper;
use crate::brain::Provisioner;

#[derive(Clone)]
pub(crate) struct ApiState {
    pub p: Arc<Provisioner>,
    pub b: Arc<Bootstrapper>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MachineView {
    pub hostname: String,
    pub mac: String,
    pub role: String,
    pub profile: String,
    pub cluster: Option<String>,
    pub ip: Option<String>,
    pub state: String,
    /// Unix seconds.
    pub since: Option<u64>,
    pub last_event: Option<String>,
}

pub(crate) fn machines(p: &Provisioner) -> Vec<MachineView> {
    let inv = p.inventory();
    let records = p.records();
    let mut out: Vec<MachineView> = inv
        .machines()
        .iter()
        .map(|m| {
            let prof = inv.profile(&m.profile);
            let rec = records.iter().find(|r| r.mac == m.mac);
            MachineView {
                hostname: m.hostname.clone(),
                mac: m.mac.to_string(),
                role: prof
                    .map(|p| format!("{:?}", p.role).to_ascii_lowercase())
                    .unwrap_or_default(),
                profile: m.profile.clone(),
                cluster: prof.and_then(|p| p.cluster.clone()),
                ip: rec.and_then(|r| r.ip).or(m.ip).map(|i| i.to_string()),
                state: rec
                    .map(|r| r.state.as_str().to_string())
                    .unwrap_or_else(|| "unseen".into()),
                since: rec.map(|r| r.since),
                last_event: rec.and_then(|r| r.last_event.clone()),
            }
        })
        .collect();
    // Machines booted through `unknown_machines: boot` have records but no
    // entry; so do MACs retired by `kiln replace`, shown as such.
    for r in records.iter().filter(|r| inv.machine(&r.mac).is_none()) {
        if let Some(host) = inv.retired(&r.mac) {
            out.push(MachineView {
                hostname: host.to_string(),
                mac: r.mac.to_string(),
                role: String::new(),
                profile: String::new(),
                cluster: None,
                ip: None,
                state: "retired".into(),
                since: Some(r.since),
                last_event: inv
                    .machine_by_name(host)
                    .map(|m| format!("replaced by {}", m.mac)),
            });
            continue;
        }
        out.push(MachineView {
            hostname: r.hostname.clone(),
            mac: r.mac.to_string(),
            role: String::new(),
            profile: p.cfg.default_profile.clone().unwrap_or_default(),
            cluster: None,
            ip: r.ip.map(|i| i.to_string()),
            state: r.state.as_str().into(),
            since: Some(r.since),
            last_event: r.last_event.clone(),
        });
    }
    out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    out
}

async fn list(State(ApiState { p, .. }): State<ApiState>) -> Json<Vec<MachineView>> {
    let p2 = p.clone();
    Json(
        tokio::task::spawn_blocking(move || machines(&p2))
            .await
            .unwrap_or_default(),
    )
}

async fn explain(State(ApiState { p, .. }): State<ApiState>, Path(id): Path<String>) -> Response {
    let p2 = p.clone();
    let id2 = id.clone();
    match tokio::task::spawn_blocking(move || p2.explain(&id2)).await {
        Ok(Some(text)) => (StatusCode::OK, text).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no machine {id:?} in the inventory (give its MAC to hear about a machine kiln has only seen)\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    since: usize,
}

/// A machine's kernel log from line `since`: `{"next": N, "lines": [...]}`.
async fn logs(
    State(ApiState { p, .. }): State<ApiState>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Response {
    let p2 = p.clone();
    let id2 = id.clone();
    match tokio::task::spawn_blocking(move || p2.kernel_log_lines(&id2, q.since)).await {
        Ok(Some((lines, n))) => {
            Json(serde_json::json!({ "next": n, "lines": lines })).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, format!("no machine {id:?}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn clusters(State(ApiState { p, .. }): State<ApiState>) -> Json<serde_json::Value> {
    let p2 = p.clone();
    let v = tokio::task::spawn_blocking(move || crate::brain::bootstrap::cluster_views(&p2))
        .await
        .unwrap_or_default();
    Json(serde_json::json!(v))
}

async fn reinstall(State(ApiState { p, .. }): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(mac) = p.inventory().mac_of(&id) else {
        return (StatusCode::NOT_FOUND, format!("no machine {id:?}\n")).into_response();
    };
    let p2 = p.clone();
    match crate::store::blocking(move || p2.reinstall(mac)).await {
        Ok(true) => {
            tracing::info!(%mac, "reinstall requested: next PXE boot installs Talos again");
            (
                StatusCode::OK,
                format!("{mac}: next PXE boot installs again\n"),
            )
                .into_response()
        }
        Ok(false) => (
            StatusCode::OK,
            format!("{mac}: never booted; it installs on its first boot\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[derive(Deserialize)]
struct BootstrapQuery {
    node: Option<String>,
}

/// `kiln bootstrap` (the brain decides: `brain::manual`).
async fn bootstrap(
    State(ApiState { p, b }): State<ApiState>,
    Path(cluster): Path<String>,
    axum::extract::Query(q): axum::extract::Query<BootstrapQuery>,
) -> Response {
    use crate::brain::manual::{request, Requested};
    let r = request(&p, &b, &cluster, q.node.as_deref());
    let status = match r {
        Requested::NoCluster(_) => StatusCode::NOT_FOUND,
        Requested::Unreadable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Requested::AlreadyDone(_) => StatusCode::OK,
        Requested::Started { .. } => StatusCode::ACCEPTED,
        Requested::OtherNode { .. } | Requested::NoCandidate(_) => StatusCode::CONFLICT,
    };
    (status, format!("{r}\n")).into_response()
}

#[derive(Deserialize, Serialize)]
pub(crate) struct ReplaceRequest {
    pub machine: String,
    pub new_mac: String,
    #[serde(default)]
    pub dry_run: bool,
}

async fn replace(
    State(ApiState { p, .. }): State<ApiState>,
    Json(req): Json<ReplaceRequest>,
) -> Response {
    let mac: crate::model::mac::Mac = match req.new_mac.parse() {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match crate::brain::replace::replace(p, &req.machine, mac, req.dry_run).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(StatusCode::CONFLICT, e),
    }
}

async fn mark_failed(
    State(ApiState { p, .. }): State<ApiState>,
    Path(id): Path<String>,
) -> Response {
    let p2 = p.clone();
    match crate::store::blocking(move || crate::brain::adopt::mark_failed(&p2, &id)).await {
        Ok(()) => (StatusCode::OK, "marked failed\n").into_response(),
        Err(e) => failed(StatusCode::NOT_FOUND, e),
    }
}

#[derive(Deserialize)]
struct AdoptQuery {
    machine: Option<String>,
}

async fn adopt(
    State(ApiState { p, .. }): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<AdoptQuery>,
) -> Response {
    let p2 = p.clone();
    match crate::store::blocking(move || {
        crate::brain::adopt::arm_adoption(&p2, q.machine.as_deref())
    })
    .await
    {
        Ok(msg) => (StatusCode::OK, msg).into_response(),
        Err(e) => failed(StatusCode::CONFLICT, e),
    }
}

/// A brain error as a response: a refusal gets `refused` (409 or 404), a
/// store failure 500, a node that did not answer as it must 502.
fn failed(refused: StatusCode, e: crate::brain::error::BrainError) -> Response {
    use crate::brain::error::BrainError;
    let status = match &e {
        BrainError::Refused(_) => refused,
        BrainError::Store(_) | BrainError::Overrides(_) | BrainError::Credentials(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        BrainError::Remote(_) => StatusCode::BAD_GATEWAY,
    };
    (status, format!("{e}\n")).into_response()
}

/// Refuse what a browser page could send: anything with an Origin header, and
/// POSTs that are not JSON (a cross-origin form can only send simple types).
async fn guard(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.headers().contains_key(axum::http::header::ORIGIN) {
        tracing::warn!("local API: refused a request with an Origin header (a web page)");
        return (StatusCode::FORBIDDEN, "cross-origin requests are refused\n").into_response();
    }
    let json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if req.method() == axum::http::Method::POST && !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST needs content-type: application/json\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// The TCP listener's extra lock: `Authorization: Bearer <state_dir/api-token>`.
pub(crate) fn with_bearer(router: Router, token: String) -> Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let given = req
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default();
                if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    tracing::warn!("local API (TCP): refused a request without the bearer token");
                    return (StatusCode::UNAUTHORIZED, "bearer token required\n").into_response();
                }
                next.run(req).await
            }
        },
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn bootstrap_reset(
    State(ApiState { p, .. }): State<ApiState>,
    Path(cluster): Path<String>,
) -> Response {
    if !p.cfg.clusters.contains_key(&cluster) {
        return (StatusCode::NOT_FOUND, format!("no cluster {cluster:?}\n")).into_response();
    }
    match crate::brain::bootstrap::reset(&p, &cluster).await {
        Ok(msg) => (StatusCode::OK, msg).into_response(),
        Err(e) => failed(StatusCode::CONFLICT, e),
    }
}

/// What kiln refused since it started (each also logged, rate limited).
async fn refusals() -> Json<serde_json::Value> {
    use crate::brain::owner::{CLAIM_REFUSALS, CONFIG_REFUSALS, EVENT_REFUSALS, SCRIPT_REFUSALS};
    Json(serde_json::json!({
        "events_dropped": EVENT_REFUSALS.total(),
        "scripts_withheld": SCRIPT_REFUSALS.total(),
        "configs_refused": CONFIG_REFUSALS.total(),
        "address_claims_refused": CLAIM_REFUSALS.total(),
    }))
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/refusals", get(refusals))
        .route(
            "/api/v1/cluster/{name}/bootstrap/reset",
            post(bootstrap_reset),
        )
        .route("/api/v1/machines/{id}/mark-failed", post(mark_failed))
        .route("/api/v1/adopt", post(adopt))
        .route("/api/v1/replace", post(replace))
        .route("/api/v1/machines", get(list))
        .route("/api/v1/machines/{id}/explain", get(explain))
        .route("/api/v1/machines/{id}/logs", get(logs))
        .route("/api/v1/cluster", get(clusters))
        .route("/api/v1/machines/{id}/reinstall", post(reinstall))
        .route("/api/v1/cluster/{name}/bootstrap", post(bootstrap))
        .layer(axum::middleware::from_fn(guard))
        .with_state(state)
}

/// `kiln machines` as a table.
pub(crate) fn table(v: &[MachineView]) -> String {
    let now = crate::brain::now();
    let ago = |t: Option<u64>| match t {
        Some(t) if now >= t => {
            let d = now - t;
            if d < 120 {
                format!("{d}s ago")
            } else if d < 7200 {
                format!("{}m ago", d / 60)
            } else {
                format!("{}h ago", d / 3600)
            }
        }
        _ => "-".into(),
    };
    let mut rows = vec![[
        "HOSTNAME".to_string(),
        "MAC".into(),
        "ROLE".into(),
        "IP".into(),
        "STATE".into(),
        "SINCE".into(),
        "LAST EVENT".into(),
    ]];
    for m in v {
        rows.push([
            m.hostname.clone(),
            m.mac.clone(),
            m.role.clone(),
            m.ip.clone().unwrap_or_else(|| "-".into()),
            m.state.clone(),
            ago(m.since),
            m.last_event.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 6 {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiSetupError {
    #[error("{path}: another kiln serves this state_dir (its API socket answers); stop it first")]
    InUse { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Bind the API's Unix socket at `path`, owner-only (0600). A socket left by
/// a crash is replaced; one that still answers means a second kiln.
pub(crate) fn bind_socket(
    path: &std::path::Path,
) -> Result<tokio::net::UnixListener, ApiSetupError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ApiSetupError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ApiSetupError::InUse {
                path: path.display().to_string(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // state_dir holds the cluster's secrets: owner only, which also closes the
    // moment between bind and chmod below.
    if let Some(dir) = path.parent() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(l)
}

/// The TCP API's bearer token: `state_dir/api-token` (0600), made on first use.
pub(crate) fn api_token(state_dir: &std::path::Path) -> Result<String, ApiSetupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("api-token");
    let io = |source| ApiSetupError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    use rand_core::RngCore;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    let token = crate::model::hex::encode(&b);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    f.write_all(token.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io)?;
    Ok(token)
}
