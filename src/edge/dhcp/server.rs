//! The DHCP socket edge: receive, decode, ask the policy, make lease changes
//! durable, send. Lease writes from concurrent requests are committed together
//! (group commit), and no ACK leaves before its lease is on disk.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::packet;
use crate::brain::dhcp::policy::{self, Decision, Port};
use crate::brain::Provisioner;
use crate::store::leases::LeaseChange;
use crate::store::{Store, StoreError};

pub(crate) const CLIENT_PORT: u16 = 68;

/// Bind a DHCP socket on `interface` (SO_BINDTODEVICE, so broadcasts go out of and
/// come in on that link only). Binding to the device needs CAP_NET_RAW; without
/// it kiln warns and listens on all interfaces.
pub(crate) fn bind_udp(
    addr: SocketAddrV4,
    interface: Option<&str>,
    broadcast: bool,
) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if broadcast {
        s.set_broadcast(true)?;
    }
    if let Some(ifname) = interface {
        if let Err(e) = s.bind_device(Some(ifname.as_bytes())) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                tracing::warn!(
                    interface = ifname,
                    "cannot bind to the interface (needs CAP_NET_RAW): listening on all interfaces"
                );
            } else {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("interface {ifname}: {e}"),
                ));
            }
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s.into())
}

/// Group commit: callers send their changes and wait; the writer drains whatever
/// has queued up and commits it in one fsynced transaction.
type Job = (
    Vec<LeaseChange>,
    oneshot::Sender<Result<(), Arc<StoreError>>>,
);

#[derive(Clone)]
pub(crate) struct Persister {
    tx: mpsc::Sender<Job>,
}

impl Persister {
    pub(crate) fn start(store: Store) -> Persister {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                    if batch.len() >= 512 {
                        break;
                    }
                }
                let changes: Vec<LeaseChange> =
                    batch.iter().flat_map(|(c, _)| c.iter().cloned()).collect();
                let store = store.clone();
                let res: Result<(), StoreError> =
                    crate::store::blocking(move || store.leases().apply(&changes)).await;
                let res = res.map_err(Arc::new);
                for (_, done) in batch {
                    let _ = done.send(res.clone());
                }
            }
        });
        Persister { tx }
    }

    pub(crate) async fn commit(&self, changes: Vec<LeaseChange>) -> Result<(), Arc<StoreError>> {
        let (done, wait) = oneshot::channel();
        let stopped = || Arc::new(StoreError::Interrupted("store writer stopped".into()));
        self.tx.send((changes, done)).await.map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

/// Where a reply goes (RFC 2131 4.1).
pub(crate) fn destination(
    req: &crate::brain::dhcp::msg::Request,
    port: Port,
    src: SocketAddr,
    server_port: u16,
) -> SocketAddr {
    if req.relayed() {
        return SocketAddr::V4(SocketAddrV4::new(req.giaddr, server_port));
    }
    if port == Port::Proxy {
        return src;
    }
    if !req.ciaddr.is_unspecified() {
        return SocketAddr::V4(SocketAddrV4::new(req.ciaddr, CLIENT_PORT));
    }
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT))
}

/// Handle one datagram; returns the bytes and the destination to send, if any.
async fn handle(
    p: &Arc<Provisioner>,
    persister: &Persister,
    buf: &[u8],
    src: SocketAddr,
    port: Port,
) -> Option<(Vec<u8>, SocketAddr)> {
    let req = match packet::decode(buf) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%src, "dropped malformed DHCP packet: {e}");
            return None;
        }
    };
    let span = tracing::info_span!("dhcp", mac = %req.mac, xid = format_args!("{:08x}", req.xid));
    async move {
        match p.dhcp(&req, port, src) {
            Decision::Ignore(why) => {
                if why.is_trouble() {
                    tracing::warn!(msg = ?req.msg_type, "ignored: {why}");
                } else if p.inventory().machine(&req.mac).is_some() {
                    tracing::info!(msg = ?req.msg_type, "ignored: {why}");
                } else {
                    tracing::debug!(msg = ?req.msg_type, "ignored: {why}");
                }
                None
            }
            Decision::Reply { reply, change, why } => {
                if let Some(c) = change {
                    if let Err(e) = persister.commit(vec![c]).await {
                        tracing::error!("not answering: lease not stored: {e}");
                        return None;
                    }
                }
                tracing::info!(msg = ?req.msg_type, "{why}");
                if let Some(f) = p.first_sight(&req, &reply) {
                    tokio::task::block_in_place(|| p.record_first_sight(f));
                }
                if !policy::sends(&reply) {
                    return None;
                }
                let bytes = packet::encode(&req, &reply);
                (!bytes.is_empty()).then(|| (bytes, destination(&req, port, src, p.cfg.ports.dhcp)))
            }
        }
    }
    .instrument(span)
    .await
}

/// Serve one socket until shutdown. Requests are handled concurrently (bounded),
/// so one slow disk write does not hold up the others.
pub(crate) async fn serve(
    sock: UdpSocket,
    port: Port,
    p: Arc<Provisioner>,
    persister: Persister,
    mut shutdown: watch::Receiver<bool>,
) {
    let sock = Arc::new(sock);
    let limit = Arc::new(tokio::sync::Semaphore::new(1024));
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, src) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("dhcp receive: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let data = buf[..n].to_vec();
        let (p, persister, sock) = (p.clone(), persister.clone(), sock.clone());
        tokio::spawn(async move {
            if let Some((bytes, dst)) = handle(&p, &persister, &data, src, port).await {
                if let Err(e) = sock.send_to(&bytes, dst).await {
                    tracing::warn!(%dst, "dhcp send: {e}");
                }
            }
            drop(permit);
        });
    }
}
