//! TFTP edge: read-only, serving boot_assets with the iPXE fallback
//! directories. blksize, tsize, timeout (RFC 2347-2349) and windowsize (RFC
//! 7440) are negotiated; netascii is translated; writes are refused; paths
//! cannot leave the asset directories. Bounded: at most `limits.tftp_transfers`
//! at once (more wait a moment for a slot, then go unanswered so the client
//! resends: a TFTP error would end a PXE ROM's boot), a few resends per block, a client's
//! timeout accepted only up to a cap, so a spoofed request costs seconds, not
//! minutes. Each transfer is a tokio task on its own socket (its TID).
//!
//! Our own server rather than async-tftp's: that crate hides the transfer
//! mode from its handler (so netascii clients got raw octets), has no cap on
//! transfers, accepts any client timeout, and its `serve` ends at the first
//! socket error.

pub(crate) mod packet;
mod source;
mod transfer;

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};

use crate::model::config::Config;
use packet::BadRequest;

/// Bind the TFTP port: a plain bind, so a port in use is an error.
pub(crate) fn bind(addr: SocketAddrV4) -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// What every transfer shares.
/// Told of each finished transfer: (client address, file, outcome).
pub(crate) type OnTransfer = Arc<dyn Fn(std::net::IpAddr, &str, &str) + Send + Sync>;

pub(crate) struct Server {
    cfg: Arc<Config>,
    on_transfer: Option<OnTransfer>,
    slots: Arc<Semaphore>,
    /// Peers with a transfer under way or waiting for a slot: a resent
    /// request is not a second one.
    active: Mutex<HashSet<SocketAddr>>,
    /// Requests waiting for a slot (at most `WAITING_PER_SLOT` per slot).
    waiting: std::sync::atomic::AtomicUsize,
}

/// Requests that may wait for a slot, per slot: past that they are dropped at once.
const WAITING_PER_SLOT: usize = 4;

impl Server {
    /// A server that reports each transfer's end to `on_transfer`.
    pub(crate) fn with_observer(cfg: Arc<Config>, on_transfer: Option<OnTransfer>) -> Arc<Server> {
        Arc::new(Server {
            slots: Arc::new(Semaphore::new(cfg.limits.tftp_transfers.max(1))),
            on_transfer,
            cfg,
            active: Mutex::new(HashSet::new()),
            waiting: Default::default(),
        })
    }

    /// A transfer slot for `peer`: at once, or within the client's resend
    /// interval (`limits.tftp_timeout`, doubled) once one frees; None (logged,
    /// rate limited) when the server stays full.
    async fn slot(&self, peer: SocketAddr) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        let limit = self.cfg.limits.tftp_transfers.max(1);
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel) < limit * WAITING_PER_SLOT;
        let got = if queued {
            let wait = self.cfg.limits.tftp_timeout * 2;
            tokio::time::timeout(wait, self.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        if got.is_none() {
            crate::metrics::tftp_transfer("busy", 0);
            crate::refusal!(
                TFTP_REFUSALS,
                client = %peer,
                limit,
                "tftp: request left unanswered: {limit} transfers under way and none ended in time (limits.tftp_transfers); the client's resend tries again"
            );
        }
        got
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static TFTP_REFUSALS: crate::brain::ratelog::RateLog = crate::brain::ratelog::RateLog::new(10);

/// A transfer's slot: the permit and the peer's `active` entry, both given
/// back when the transfer ends, however it ends (a panic included).
struct Slot {
    server: Arc<Server>,
    peer: SocketAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.active().remove(&self.peer);
    }
}

/// The address transfers answer from: the listening one, or with a wildcard
/// listener the server_address clients were told (a PXE ROM may refuse DATA
/// from another of the host's addresses); the kernel's choice if that one
/// is not local.
fn reply_address(sock: &UdpSocket, cfg: &Config) -> std::net::IpAddr {
    let bound = sock
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if !bound.is_unspecified() {
        return bound;
    }
    // The address the client was told (the shared service address, when
    // this daemon holds it), else this daemon's own.
    for a in [cfg.advertised_address(), cfg.server_address] {
        let server = std::net::IpAddr::V4(a);
        if std::net::UdpSocket::bind((server, 0)).is_ok() {
            return server;
        }
    }
    bound
}

/// Serve requests on `sock` until `stop` flips. A receive error is logged
/// and the loop goes on; it never ends by itself.
pub(crate) async fn serve(sock: UdpSocket, server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    let local = reply_address(&sock, &server.cfg);
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("tftp receive: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let req = match packet::parse_request(&buf[..n]) {
            Ok(r) => r,
            Err(BadRequest::NotRequest) => continue,
            Err(BadRequest::Refused(code, why)) => {
                crate::refusal!(TFTP_REFUSALS, client = %peer, "tftp: refused: {why}");
                let _ = sock.send_to(&packet::error(code, &why), peer).await;
                continue;
            }
        };
        if !server.active().insert(peer) {
            continue; // a resent request for a transfer under way
        }
        let server = server.clone();
        tokio::spawn(async move {
            // At the cap a request waits for a slot; if none frees in time it
            // is dropped unanswered, and the client's resend tries again
            // (a TFTP error would end a PXE ROM's boot at once).
            let Some(permit) = server.slot(peer).await else {
                server.active().remove(&peer);
                return;
            };
            let slot = Slot {
                server,
                peer,
                _permit: permit,
            };
            let file = req.filename.clone();
            let outcome = transfer::run(&slot.server.cfg, local, peer, req).await;
            if let Some(f) = &slot.server.on_transfer {
                f(peer.ip(), &file, outcome);
            }
            drop(slot);
        });
    }
}
