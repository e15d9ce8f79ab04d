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
use crate::edge::dhcp::server as dhcp_server;
use crate::edge::{api, events, http, tftp};

/// The servers kiln runs: async tasks (each ends with its name), plus the RA
/// sender's stop flag (a thread).
pub(super) struct Running {
    pub(super) tasks: JoinSet<&'static str>,
    ra_stop: Arc<AtomicBool>,
}

impl Running {
    pub(super) fn stop_ra(&self) {
        self.ra_stop.store(true, Ordering::Relaxed);
    }

    /// Resolves when a server ends before the stop signal (a bug or a fault:
    /// kiln stops rather than serve without it).
    pub(super) async fn died(&mut self) -> Option<String> {
        Some(match self.tasks.join_next().await? {
            Ok(name) => name.to_string(),
            Err(e) => format!("a server task ({e})"),
        })
    }
}

pub(super) async fn spawn(
    p: &Arc<Provisioner>,
    boot: &Arc<Bootstrapper>,
    l: Listeners,
    stop: &watch::Receiver<bool>,
) -> Result<Running, DaemonError> {
    let cfg = &p.cfg;
    // Everything that can fail is set up before anything is served.
    let tftp = tokio::net::UdpSocket::from_std(l.tftp)
        .map_err(DaemonError::io("registering the TFTP socket"))?;
    let udp = |s: std::net::UdpSocket| {
        tokio::net::UdpSocket::from_std(s).map_err(DaemonError::io("registering a DHCP socket"))
    };
    let (dhcp, proxy) = (udp(l.dhcp)?, udp(l.proxy)?);
    let ra_stop = Arc::new(AtomicBool::new(false));
    if cfg.ipv6_router_advertisements {
        crate::edge::ra::spawn(&cfg.interface, ra_stop.clone());
    }
    let mut tasks = JoinSet::new();
    let (p2, s) = (p.clone(), stop.clone());
    tasks.spawn(async move {
        dhcp_server::serve(dhcp, Port::Dhcp, p2, s).await;
        "the DHCP server"
    });
    let (p2, s) = (p.clone(), stop.clone());
    tasks.spawn(async move {
        dhcp_server::serve(proxy, Port::Proxy, p2, s).await;
        "the proxyDHCP server"
    });
    // Each transfer goes on the timeline of the MAC that holds the address.
    let p2 = p.clone();
    let on_transfer: tftp::OnTransfer = Arc::new(move |ip, file, outcome| {
        let ip = match ip {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        if let Some(mac) = ip.and_then(|ip| p2.mac_at(ip)) {
            p2.timeline.note(mac, "tftp", format!("{file}: {outcome}"));
        }
    });
    let (server, s) = (
        tftp::Server::with_observer(Arc::new(cfg.clone()), Some(on_transfer)),
        stop.clone(),
    );
    tasks.spawn(async move {
        tftp::serve(tftp, server, s).await;
        "the TFTP server"
    });
    let (p2, s) = (p.clone(), stopped(stop.clone()));
    tasks.spawn(async move {
        if let Err(e) = http::serve(l.http, p2, s).await {
            tracing::error!("http: {e}");
        }
        "the HTTP server"
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
        "the events sink"
    });
    let (p2, s) = (p.clone(), stopped(stop.clone()));
    tasks.spawn(async move {
        if let Err(e) = crate::edge::kmsg::serve(l.kmsg, p2, s).await {
            tracing::error!("kernel log receiver: {e}");
        }
        "the kernel log receiver"
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

/// Serve the local API on `listener` until the stop signal.
fn spawn_api<L>(
    tasks: &mut JoinSet<&'static str>,
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
        "the local API"
    });
}
