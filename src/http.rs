//! HTTP edge: iPXE scripts and boot assets. Assets stream from disk with Range and
//! HEAD support (tower-http's ServeDir), never loaded whole into memory.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::services::ServeDir;

use crate::ipxe;
use crate::mac::Mac;
use crate::provision::Provisioner;

fn ipxe_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn boot_ipxe(
    State(p): State<Arc<Provisioner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    tracing::debug!(%peer, "boot.ipxe");
    ipxe_text(ipxe::boot_script(&p.cfg.http_base()))
}

async fn machine_ipxe(
    State(p): State<Arc<Provisioner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
) -> Response {
    let mac: Mac = match mac.parse() {
        Ok(m) => m,
        Err(e) => {
            tracing::info!(%peer, "machine script: {e}");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let s = p.script(mac);
    tracing::info!(%mac, %peer, "machine script: {}", s.why);
    ipxe_text(s.body)
}

pub fn router(p: Arc<Provisioner>) -> Router {
    let assets = ServeDir::new(&p.cfg.boot_assets).append_index_html_on_directories(false);
    // iPXE binaries fall back to the system's (Debian: /usr/lib/ipxe) for UEFI HTTP boot.
    let assets_service = match p.cfg.ipxe_dirs.first() {
        Some(dir) => Router::new().fallback_service(assets.fallback(ServeDir::new(dir))),
        None => Router::new().fallback_service(assets),
    };
    Router::new()
        .route("/boot.ipxe", get(boot_ipxe))
        .route("/ipxe/{mac}", get(machine_ipxe))
        .nest("/assets", assets_service)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(p)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    p: Arc<Provisioner>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(p).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
