//! The DHCP socket edge: receive, decode, ask the brain, wait until the lease
//! changes it decided are durable, send. No ACK leaves before its lease is on
//! disk (the brain's lease writer commits concurrent requests together).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::Instrument;

use super::packet;
use crate::brain::dhcp::policy::{self, Decision, Port};
use crate::brain::Provisioner;

pub(crate) const CLIENT_PORT: u16 = 68;

/// Bind a DHCP socket on `interface` (SO_BINDTODEVICE, so broadcasts go out of and
/// come in on that link only). Binding to the device needs CAP_NET_RAW; without
/// it kiln warns and listens on all interfaces.
pub(crate) fn bind_udp(
    addr: SocketAddrV4,
    interface: Option<&str>,
    broadcast: bool,
    shared: bool,
) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Exclusive unless asked: without SO_REUSEADDR a second DHCP server
    // already bound to this port on this interface (or on all of them) makes
    // the bind fail, and one started after kiln fails instead of sharing
    // the broadcasts silently.
    s.set_reuse_address(shared)?;
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

/// Where a reply goes (RFC 2131 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    To(SocketAddr),
    /// Unicast to an address the client does not answer ARP for yet: the
    /// neighbour entry is added first (falls back to broadcast).
    Unicast(Ipv4Addr),
}

pub(crate) fn destination(
    req: &crate::brain::dhcp::msg::Request,
    reply: &crate::brain::dhcp::msg::Reply,
    port: Port,
    src: SocketAddr,
    server_port: u16,
) -> Dest {
    let broadcast = Dest::To(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::BROADCAST,
        CLIENT_PORT,
    )));
    if req.relayed() {
        return Dest::To(SocketAddr::V4(SocketAddrV4::new(req.giaddr, server_port)));
    }
    if port == Port::Proxy {
        return Dest::To(src);
    }
    // "In all cases, when giaddr is zero, the server broadcasts any DHCPNAK."
    if reply.msg_type == dhcproto::v4::MessageType::Nak {
        return broadcast;
    }
    if !req.ciaddr.is_unspecified() {
        return Dest::To(SocketAddr::V4(SocketAddrV4::new(req.ciaddr, CLIENT_PORT)));
    }
    let yiaddr = reply.assign.as_ref().map(|a| a.yiaddr);
    match yiaddr {
        Some(ip) if req.flags & packet::BROADCAST == 0 && !ip.is_unspecified() => Dest::Unicast(ip),
        _ => broadcast,
    }
}

/// What a DHCP decision adds to the MAC's timeline and sightings.
fn note_dhcp(p: &Provisioner, req: &crate::brain::dhcp::msg::Request, port: Port, what: String) {
    let http = req.class == crate::brain::dhcp::msg::ClientClass::Http;
    let fw = crate::brain::timeline::firmware(req.arch, http);
    p.timeline.note(
        req.mac,
        "dhcp",
        format!("{:?} on {} from {fw}: {what}", req.msg_type, port.as_str()),
    );
    p.timeline
        .saw(req.mac, fw, req.vendor_class.as_deref().unwrap_or_default());
}

/// Handle one datagram; returns the bytes and the destination to send, if any.
async fn handle(
    p: &Arc<Provisioner>,
    sock: &UdpSocket,
    buf: &[u8],
    src: SocketAddr,
    port: Port,
) -> Option<(Vec<u8>, Dest)> {
    let req = match packet::decode(buf) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%src, "dropped malformed DHCP packet: {e}");
            return None;
        }
    };
    let span = tracing::info_span!("dhcp", mac = %req.mac, xid = format_args!("{:08x}", req.xid));
    crate::metrics::dhcp_received(&format!("{:?}", req.msg_type), port.as_str());
    async move {
        let (decision, pending) = checked(p, sock, &req, port, src).await?;
        match decision {
            Decision::Ignore(why) => {
                crate::metrics::dhcp_decision("ignored", why.key());
                note_dhcp(p, &req, port, format!("ignored: {why}"));
                if why.is_trouble() {
                    tracing::warn!(msg = ?req.msg_type, "ignored: {why}");
                } else if p.inventory().machine(&req.mac).is_some() {
                    tracing::info!(msg = ?req.msg_type, "ignored: {why}");
                } else {
                    tracing::debug!(msg = ?req.msg_type, "ignored: {why}");
                }
                None
            }
            Decision::Reply { reply, why, .. } => {
                if let Some(pending) = pending {
                    if let Err(e) = pending.wait().await {
                        if let crate::store::StoreError::Conflict(_) = *e {
                            // Another daemon bound it first: the watch brings
                            // its lease to the pool, and the client's retry
                            // gets another address.
                            crate::metrics::dhcp_decision("ignored", "peer_bound_first");
                            crate::refusal!(PEER_FIRST, msg = ?req.msg_type, "not answering: {e}");
                        } else {
                            tracing::error!("not answering: lease not stored: {e}");
                        }
                        return None;
                    }
                }
                tracing::info!(msg = ?req.msg_type, "{why}");
                note_dhcp(p, &req, port, why.to_string());
                crate::metrics::dhcp_decision(
                    "answered",
                    &format!("{:?}", reply.msg_type).to_ascii_lowercase(),
                );
                // Recorded beside the reply, not before it: the lease is what
                // must be durable first, and the script's note records the
                // machine too if this one is lost to a crash.
                if let Some(f) = p.first_sight(&req, &reply) {
                    let p = p.clone();
                    tokio::task::spawn_blocking(move || p.record_first_sight(f));
                }
                if !policy::sends(&reply) {
                    return None;
                }
                let bytes = packet::encode(&req, &reply);
                if !bytes.is_empty() {
                    crate::metrics::dhcp_sent(&format!("{:?}", reply.msg_type), port.as_str());
                }
                let dest = destination(&req, &reply, port, src, p.cfg.ports.dhcp);
                (!bytes.is_empty()).then_some((bytes, dest))
            }
        }
    }
    .instrument(span)
    .await
}

/// Ask the brain; with `dhcp.ping_check`, an OFFER of an address not known
/// to be the client's waits for a ping first, and an address that answers
/// goes on probation and the brain is asked again (a few times at most).
/// None: the probation could not be stored.
async fn checked(
    p: &Arc<Provisioner>,
    sock: &UdpSocket,
    req: &crate::brain::dhcp::msg::Request,
    port: Port,
    src: SocketAddr,
) -> Option<(Decision, Option<crate::store::leases::Pending>)> {
    let mut answer = p.dhcp(req, port, src);
    for _ in 0..PING_TRIES {
        let Some((ip, wait)) = p.ping_before_offer(req, &answer.0) else {
            return Some(answer);
        };
        match super::ping::answers(ip, wait).await {
            Ok(false) => {
                // Nothing there: the failed resolution would delay the
                // client's first packets once it has the address.
                let _ = super::arp::forget(sock, &p.cfg.interface, ip);
                return Some(answer);
            }
            Ok(true) => {
                tracing::warn!(%ip, "ping check: a device kiln does not know answers on {ip}; held out of the pool, offering another");
                if let Some(stored) = p.address_in_use(&req.mac, ip) {
                    if let Err(e) = stored.wait().await {
                        tracing::error!("not answering: probation of {ip} not stored: {e}");
                        return None;
                    }
                }
                answer = p.dhcp(req, port, src);
            }
            Err(e) => {
                crate::refusal!(PING_UNAVAILABLE, %ip, "ping check unavailable ({e}): offering without it");
                return Some(answer);
            }
        }
    }
    // Every address tried answered: say nothing rather than offer one unchecked.
    tracing::warn!("ping check: {PING_TRIES} addresses in a row answer; not offering this time");
    None
}

/// Addresses pinged for one DISCOVER before kiln stays silent.
const PING_TRIES: usize = 4;

static PEER_FIRST: crate::brain::ratelog::RateLog = crate::brain::ratelog::RateLog::new(5);

static PING_UNAVAILABLE: crate::brain::ratelog::RateLog = crate::brain::ratelog::RateLog::new(1);

/// Serve one socket until shutdown. Requests are handled concurrently (bounded),
/// so one slow disk write does not hold up the others.
pub(crate) async fn serve(
    sock: UdpSocket,
    port: Port,
    p: Arc<Provisioner>,
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
        let (p, sock) = (p.clone(), sock.clone());
        tokio::spawn(async move {
            if let Some((bytes, dest)) = handle(&p, &sock, &data, src, port).await {
                send(&sock, &p.cfg.interface, &bytes, dest).await;
            }
            drop(permit);
        });
    }
}

/// Send a reply; a unicast to a client without an address first teaches the
/// kernel its MAC (broadcast when that is not allowed: no CAP_NET_ADMIN).
async fn send(sock: &UdpSocket, interface: &str, bytes: &[u8], dest: Dest) {
    let broadcast = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT));
    let dst = match dest {
        Dest::To(a) => a,
        Dest::Unicast(ip) => {
            let mac = packet::chaddr(bytes);
            match mac.map(|m| super::arp::set(sock, interface, ip, m)) {
                Some(Ok(())) => SocketAddr::V4(SocketAddrV4::new(ip, CLIENT_PORT)),
                Some(Err(e)) => {
                    tracing::debug!(%ip, "unicast needs a neighbour entry ({e}): broadcasting");
                    broadcast
                }
                None => broadcast,
            }
        }
    };
    if let Err(e) = sock.send_to(bytes, dst).await {
        tracing::warn!(%dst, "dhcp send: {e}");
    }
}
