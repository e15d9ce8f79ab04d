//! Start every server on its listener; each stops when the stop signal flips.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::start::Listeners;
use super::DaemonError;
use crate::brain::bootstrap::Bootstrapper;
use crate::brain::dhcp::policy::Port;
use crate::brain::Provisioner;
use crate::edge::dhcp::server::{self as dhcp_server, Persister};
use crate::edge::{api, events, http, tftp};
use crate::store::Store;

/// The servers kiln runs: async tasks, plus the RA sender's stop flag (a thread).
pub(super) struct Running {
    pub(super) tasks: JoinSet<()>,
    ra_stop: Arc<AtomicBool>,
}

impl Running {
    pub(super) fn stop_ra(&self) {
        self.ra_stop.store(true, Ordering::Relaxed);
    }
}

pub(super) async fn spawn(
    p: &Arc<Provisioner>,
    boot: &Arc<Bootstrapper>,
    store: Store,
    l: Listeners,
    stop: &watch::Receiver<bool>,
) -> Result<Running, DaemonError> {
    let cfg = &p.cfg;
    // Everything that can fail is set up before anything is served.
    let tftp = build_tftp(cfg, l.tftp).await?;
    let udp = |s: std::net::UdpSocket| {
        tokio::net::UdpSocket::from_std(s).map_err(DaemonError::io("registering a DHCP socket"))
    };
    let (dhcp, proxy) = (udp(l.dhcp)?, udp(l.proxy)?);
    let ra_stop = Arc::new(AtomicBool::new(false));
    if cfg.ipv6_router_advertisements {
        crate::edge::ra::spawn(&cfg.interface, ra_stop.clone());
    }
    let mut tasks = JoinSet::new();
    let persister = Persister::start(store);
    tasks.spawn(dhcp_server::serve(
        dhcp,
        Port::Dhcp,
        p.clone(),
        persister.clone(),
        stop.clone(),
    ));
    tasks.spawn(dhcp_server::serve(
        proxy,
        Port::Proxy,
        p.clone(),
        persister,
        stop.clone(),
    ));
    start_tftp(tftp, stop)?;
    let (p2, s) = (p.clone(), stopped(stop.clone()));
    tasks.spawn(async move {
        if let Err(e) = http::serve(l.http, p2, s).await {
            tracing::error!("http: {e}");
        }
    });
    let b = boot.clone();
    let sink = events::Sink {
        p: p.clone(),
        on_change: Some(Arc::new(move |r| b.on_change(r))),
    };
    let s = stopped(stop.clone());
    tasks.spawn(async move {
        if let Err(e) = events::serve(l.events, sink, s).await {
            tracing::error!("events sink: {e}");
        }
    });
    let router = api::router(api::ApiState {
        p: p.clone(),
        b: boot.clone(),
    });
    spawn_api(&mut tasks, l.api_socket, router.clone(), stop, "socket");
    if let Some((listener, token)) = l.api_tcp {
        let r = api::with_bearer(router, token);
        spawn_api(&mut tasks, listener, r, stop, "TCP");
    }
    Ok(Running { tasks, ra_stop })
}

/// Resolves when the stop signal flips.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.changed().await;
}

/// async-tftp runs every transfer of a server on one executor, polled by
/// whoever polls `serve`: one server per core, each on its own thread
/// (async-io's block_on drives the reactor there), the kernel spreading
/// requests over their SO_REUSEPORT sockets (bench/tftp.sh: one server on a
/// tokio task was 0.85x tftpd-hpa on 2 cores).
async fn build_tftp(
    cfg: &crate::model::config::Config,
    socks: Vec<std::net::UdpSocket>,
) -> Result<Vec<async_tftp::server::TftpServer<tftp::AssetHandler>>, DaemonError> {
    let mut servers = Vec::new();
    for sock in socks {
        let server = tftp::build(Arc::new(cfg.clone()), sock)
            .await
            .map_err(|e| DaemonError::Setup(format!("starting TFTP: {e}")))?;
        servers.push(server);
    }
    Ok(servers)
}

fn start_tftp(
    servers: Vec<async_tftp::server::TftpServer<tftp::AssetHandler>>,
    stop: &watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    for (i, server) in servers.into_iter().enumerate() {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("tftp-{i}"))
            .spawn(move || {
                async_io::block_on(futures_lite::future::or(
                    async {
                        if let Err(e) = server.serve().await {
                            tracing::error!("tftp: {e}")
                        }
                    },
                    stopped(stop),
                ))
            })
            .map_err(DaemonError::io("starting the TFTP thread"))?;
    }
    Ok(())
}

/// Serve the local API on `listener` until the stop signal.
fn spawn_api<L>(
    tasks: &mut JoinSet<()>,
    listener: L,
    router: axum::Router,
    stop: &watch::Receiver<bool>,
    what: &'static str,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let s = stopped(stop.clone());
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(s)
            .await
        {
            tracing::error!("local API ({what}): {e}");
        }
    });
}
