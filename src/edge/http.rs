//! HTTP edge: iPXE scripts and boot assets. Plain asset GETs and HEADs go out
//! by sendfile(2) (`zerocopy`); everything else, including assets asked for
//! with conditions or several ranges, through axum and tower-http's ServeDir,
//! never loaded whole into memory.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::services::ServeDir;

use crate::brain::ipxe;
use crate::brain::Provisioner;
use crate::model::mac::Mac;

/// A script. To iPXE (`User-Agent: iPXE/...`) it also ends the connection:
/// iPXE then fetches the kernel and initramfs on a fresh one, whose first
/// request takes the sendfile path. Other clients keep theirs (closing them
/// too cost the 1,000-machine storm 3x at p50 and 10x at p99: its client
/// reconnects for the config).
fn ipxe_text(body: String, headers: &axum::http::HeaderMap) -> Response {
    let ipxe = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("iPXE/"));
    let mut r = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    if ipxe {
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    r
}

async fn boot_ipxe(
    State(p): State<Arc<Provisioner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    tracing::debug!(%peer, "boot.ipxe");
    ipxe_text(ipxe::boot_script(&p.cfg.http_base()), &headers)
}

#[derive(serde::Deserialize)]
struct ScriptQuery {
    /// iPXE's `${platform}`: `efi` or `pcbios`.
    #[serde(default)]
    platform: String,
}

async fn machine_ipxe(
    State(p): State<Arc<Provisioner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
    Query(q): Query<ScriptQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let mac: Mac = match mac.parse() {
        Ok(m) => m,
        Err(e) => {
            tracing::info!(%peer, "machine script: {e}");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let ip = match peer.ip() {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let p2 = p.clone();
    // Minting the boot token is a durable write: keep it off the async workers.
    let uefi = q.platform == "efi";
    let s = match tokio::task::spawn_blocking(move || p2.script(mac, ip, uefi)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%mac, "machine script: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    p.timeline.note(
        mac,
        "script",
        if s.refused {
            format!("refused: {}", s.why)
        } else {
            s.why.clone()
        },
    );
    if s.refused {
        crate::refusal!(
            crate::brain::owner::SCRIPT_REFUSALS,
            %mac,
            %peer,
            "machine script refused: {}",
            s.why
        );
    } else {
        tracing::info!(%mac, %peer, "machine script: {}", s.why);
    }
    if s.not_found {
        return (StatusCode::NOT_FOUND, "installed: boot from disk\n").into_response();
    }
    ipxe_text(s.body, &headers)
}

#[derive(serde::Deserialize)]
struct ConfigQuery {
    #[serde(default)]
    token: String,
    #[serde(default)]
    uuid: String,
    /// `/config?mac=`: the MAC, as a UKI's `talos.config=` names it.
    #[serde(default)]
    mac: String,
}

/// `/config/<mac>?token=`: the iPXE line's URL.
async fn machine_config(
    State(p): State<Arc<Provisioner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
    Query(q): Query<ConfigQuery>,
) -> Response {
    config_answer(p, peer, &mac, q, false).await
}

/// `/config?mac=${mac}&uuid=${uuid}`: a UKI's (no token; see `brain::uki`).
async fn lease_config(
    State(p): State<Arc<Provisioner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<ConfigQuery>,
) -> Response {
    let mac = q.mac.clone();
    config_answer(p, peer, &mac, q, true).await
}

async fn config_answer(
    p: Arc<Provisioner>,
    peer: SocketAddr,
    mac: &str,
    q: ConfigQuery,
    by_lease: bool,
) -> Response {
    use crate::brain::owner::CONFIG_REFUSALS;
    use crate::brain::ConfigDecision;
    let Ok(mac) = mac.parse::<Mac>() else {
        crate::refusal!(CONFIG_REFUSALS, %peer, "config refused: malformed MAC");
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let ip = match peer.ip() {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return (StatusCode::FORBIDDEN, "forbidden\n").into_response(),
        },
    };
    let p2 = p.clone();
    let (token, uuid) = (q.token.clone(), q.uuid.clone());
    let decide = move || {
        if by_lease {
            p2.config_by_lease(mac, ip, &uuid)
        } else {
            p2.config(mac, &token, ip, &uuid)
        }
    };
    let d = match tokio::task::spawn_blocking(decide).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(%mac, "config: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    p.timeline.note(
        mac,
        "config",
        match &d {
            ConfigDecision::Serve { hostname, .. } => format!("served to {ip} as {hostname}"),
            ConfigDecision::Forbidden(w) | ConfigDecision::NotFound(w) => {
                format!("refused to {ip}: {w}")
            }
        },
    );
    crate::metrics::config(
        if matches!(d, ConfigDecision::Serve { .. }) {
            "served"
        } else {
            "refused"
        },
        d.reason(),
    );
    // The SMBIOS UUID is logged so a machine can be told apart on multi-NIC servers.
    match d {
        ConfigDecision::Serve { body, hostname } => {
            tracing::info!(%mac, %peer, uuid = %q.uuid, %hostname, "config served");
            ([(header::CONTENT_TYPE, "application/yaml")], body).into_response()
        }
        ConfigDecision::Forbidden(why) => {
            crate::refusal!(CONFIG_REFUSALS, %mac, %peer, uuid = %q.uuid, "config refused: {why}");
            (StatusCode::FORBIDDEN, "forbidden\n").into_response()
        }
        ConfigDecision::NotFound(why) => {
            crate::refusal!(CONFIG_REFUSALS, %mac, %peer, uuid = %q.uuid, "config refused: {why}");
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        }
    }
}

const ASSET_CHUNK: usize = 256 << 10;

/// `/metrics`: the state gauges refreshed from the brain, then everything.
async fn metrics(State(p): State<Arc<Provisioner>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        p.observe();
        crate::metrics::encode()
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// `/readyz`: the sockets are bound (this server answers only once the
/// daemon has bound them all) and the store still takes writes.
async fn readyz(State(p): State<Arc<Provisioner>>) -> Response {
    match p.store.failure() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: store failed: {why}\n"),
        )
            .into_response(),
    }
}

/// The route a path counts under (never the MAC, token or file name).
fn route_of(path: &str) -> &'static str {
    match path {
        "/boot.ipxe" => "/boot.ipxe",
        "/metrics" => "/metrics",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/status" | "/status.json" => "/status",
        p if p.starts_with("/status/") => "/status/machine/{mac}",
        p if p.starts_with("/ipxe/") => "/ipxe/{mac}",
        p if p.starts_with("/config/") => "/config/{mac}",
        "/config" => "/config",
        p if p.starts_with("/assets/") => "/assets",
        _ => "other",
    }
}

/// Count every request by route and status, and the asset bytes sent (a
/// HEAD sends none).
async fn count(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = route_of(req.uri().path());
    // `.efi` as application/efi, as the sendfile path sends it (UEFI HTTP
    // Boot firmware checks it): one rule for both paths.
    let efi = (route == "/assets" && req.uri().path().ends_with(".efi"))
        .then(|| super::zerocopy::content_type(req.uri().path()));
    let head = req.method() == axum::http::Method::HEAD;
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    crate::metrics::http_request(route, status);
    if let Some(t) = efi.and_then(|t| header::HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, t);
    }
    if route == "/assets" && matches!(status, 200 | 206) && !head {
        let len = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        crate::metrics::asset_bytes(len.unwrap_or(0));
    }
    resp
}

pub(crate) fn router(p: Arc<Provisioner>) -> Router {
    // Large chunks: a 100 MiB initramfs to 50 clients at once is read and
    // written in 1 MiB pieces (bench/http.sh: the 64 KiB default reached about
    // half of nginx's throughput). Memory stays bounded: one chunk in flight
    // per connection.
    let assets = ServeDir::new(&p.cfg.boot_assets)
        .append_index_html_on_directories(false)
        .with_buf_chunk_size(ASSET_CHUNK);
    // iPXE binaries fall back to the system's (Debian: /usr/lib/ipxe) for UEFI HTTP boot.
    let assets_service = match p.cfg.ipxe_dirs.first() {
        Some(dir) => Router::new()
            .fallback_service(assets.fallback(ServeDir::new(dir).with_buf_chunk_size(ASSET_CHUNK))),
        None => Router::new().fallback_service(assets),
    };
    Router::new()
        .route("/boot.ipxe", get(boot_ipxe))
        .route("/ipxe/{mac}", get(machine_ipxe))
        .route("/config/{mac}", get(machine_config))
        .route("/config", get(lease_config))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(crate::edge::status::page))
        .route("/status.json", get(crate::edge::status::overview_json))
        .route(
            "/status/machine/{id}",
            get(crate::edge::status::machine_route),
        )
        .nest("/assets", assets_service)
        .layer(axum::middleware::from_fn(count))
        // Request spans name the path only: query strings carry boot tokens.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    // tower-http's own target, so `tower_http=debug` still shows it.
                    tracing::debug_span!(
                        target: "tower_http::trace::make_span",
                        "request",
                        method = %req.method(),
                        path = %req.uri().path()
                    )
                },
            ),
        )
        .with_state(p)
}

/// Serve until `shutdown` resolves. Bounded (config `limits`): at most
/// `http_connections` open at once (the accept loop waits for one to close),
/// a request's headers must arrive within `http_header_timeout` (a client
/// that trickles them, or idles on keep-alive, is dropped), and a response
/// that makes no progress for `http_stall_timeout` (a client that stops
/// reading) ends the connection.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    p: Arc<Provisioner>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let limits = p.cfg.limits;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.http_connections.max(1)));
    let roots = Arc::new(super::zerocopy::Roots {
        dirs: std::iter::once(p.cfg.boot_assets.clone())
            .chain(p.cfg.ipxe_dirs.first().cloned())
            .collect(),
        header_timeout: limits.http_header_timeout,
        stall_timeout: limits.http_stall_timeout,
    });
    let app = router(p);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            _ = &mut shutdown => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let roots = roots.clone();
        tokio::spawn(async move {
            let stream = match super::zerocopy::serve(stream, &roots).await {
                super::zerocopy::Next::Hyper(s) => s,
                super::zerocopy::Next::Done => return drop(permit),
            };
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(limits.http_stall_timeout));
            let stream = Box::pin(stream);
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let mut app = app.clone();
                    async move {
                        use tower::Service;
                        app.call(req.map(axum::body::Body::new)).await
                    }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.http_header_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "http connection: {e}");
            }
            drop(permit);
        });
    }
}
