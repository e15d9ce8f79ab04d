//! The brain's DHCP entry point: what the request proves (the address a
//! machine used), the decision, and what follows from it (adoption of an
//! unknown PXE client, first sight of an inventory machine).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::msg::{Reply, Request};
use super::policy::{self, Ctx, Decision, Port, Reason};
use crate::brain::{adopt, now, Provisioner, State};
use crate::store::leases::Pending;

impl Provisioner {
    /// Decide the answer to one request that came from `src` on `port`. A
    /// reply's lease changes are submitted to the store before the pool's
    /// lock is released (so the store sees them in decision order); the
    /// reply may go out only once the returned [`Pending`] is durable.
    pub(crate) fn dhcp(
        self: &Arc<Self>,
        req: &Request,
        port: Port,
        src: SocketAddr,
    ) -> (Decision, Option<Pending>) {
        // Fenced (etcd out of reach): silent, so a daemon that still has a
        // quorum answers instead (the heartbeat logs the change once).
        if self.store.fenced().is_some() {
            return (Decision::Ignore(Reason::Fenced), None);
        }
        // What the request proves is noted even when a peer answers it: with
        // a shared service address this daemon may serve the machine's
        // script and config, and it saw the address used first-hand.
        if let Some(ip) = used_address(req, port, src) {
            self.saw(req.mac, ip);
        }
        let mut share = (0, 1);
        if let Some((live, me)) = self.store.peers() {
            match super::share::answerer(&req.mac, &live) {
                Some(a) if a != me => {
                    return (Decision::Ignore(Reason::PeerAnswers(a.to_string())), None)
                }
                _ => {}
            }
            share = super::share::place(&live, &me);
        }
        let inv = self.inventory();
        let decision = {
            let ctx = Ctx {
                cfg: &self.cfg,
                inventory: &inv,
                now: now(),
            };
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.set_share(share.0, share.1);
            let d = policy::decide(&ctx, req, port, &mut pool);
            let pending = match &d {
                Decision::Reply { changes, .. } if !changes.is_empty() => {
                    Some(self.leases.submit(changes.clone()))
                }
                _ => None,
            };
            (d, pending)
        };
        if decision.0 == Decision::Ignore(Reason::UnknownMac) && req.is_pxe() && port == Port::Dhcp
        {
            adopt::on_unknown_pxe(self.clone(), req.mac);
        }
        decision
    }

    /// Full mode with `dhcp.ping_check`: the address an OFFER would hand out,
    /// when it is not known to be this MAC's, so the edge pings it first.
    pub(crate) fn ping_before_offer(
        &self,
        req: &Request,
        d: &Decision,
    ) -> Option<(Ipv4Addr, std::time::Duration)> {
        let crate::model::config::DhcpMode::Full(full) = &self.cfg.dhcp else {
            return None;
        };
        let wait = full.ping_check?;
        let Decision::Reply { reply, .. } = d else {
            return None;
        };
        let ip = reply.assign.as_ref()?.yiaddr;
        if reply.msg_type != dhcproto::v4::MessageType::Offer {
            return None;
        }
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        (!pool.known_for(&req.mac, ip)).then_some((ip, wait))
    }

    /// A ping before an offer to `mac` was answered: `ip` is in use by a
    /// device kiln does not know. It goes on probation (durably, like a
    /// DECLINE); None when the offer is gone meanwhile (nothing to do).
    pub(crate) fn address_in_use(
        &self,
        mac: &crate::model::mac::Mac,
        ip: Ipv4Addr,
    ) -> Option<Pending> {
        let hold = match &self.cfg.dhcp {
            crate::model::config::DhcpMode::Full(f) => f.decline_probation.as_secs(),
            crate::model::config::DhcpMode::Proxy => 0,
        };
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let change = pool.conflict(mac, ip, hold, now())?;
        Some(self.leases.submit(vec![change]))
    }

    /// After the reply's lease change is durable: an inventory machine seen
    /// for the first time enters the lifecycle. Returns the durable write to
    /// make (None for all but a machine's first sight, so the caller blocks
    /// only then).
    pub(crate) fn first_sight(&self, req: &Request, reply: &Reply) -> Option<FirstSight> {
        let inv = self.inventory();
        let m = inv.machine(&req.mac)?;
        // Seen before (or unreadable: nothing is recorded over it).
        if !matches!(self.record(&req.mac), Ok(None)) {
            return None;
        }
        Some(FirstSight {
            mac: req.mac,
            hostname: m.hostname.clone(),
            ip: reply.assign.as_ref().map(|a| a.yiaddr),
            event: format!("DHCP {:?}", req.msg_type),
        })
    }

    /// Record a first sight (a durable write).
    pub(crate) fn record_first_sight(&self, f: FirstSight) {
        if let Err(e) = self.note(f.mac, &f.hostname, State::Discovered, Some(f.event), f.ip) {
            tracing::warn!(mac = %f.mac, "first sight not recorded: {e}");
        }
    }
}

/// An inventory machine DHCP saw for the first time.
#[derive(Debug)]
pub(crate) struct FirstSight {
    mac: crate::model::mac::Mac,
    hostname: String,
    ip: Option<Ipv4Addr>,
    event: String,
}

/// Proxy mode has no lease: the address the machine itself used (ciaddr, its
/// requested address, or the source of a 4011 request) is what its script,
/// config and events must then come from.
fn used_address(req: &Request, port: Port, src: SocketAddr) -> Option<Ipv4Addr> {
    let src_ip = match src.ip() {
        IpAddr::V4(ip) if port == Port::Proxy && !req.relayed() => Some(ip),
        _ => None,
    };
    [Some(req.ciaddr), req.requested_ip, src_ip]
        .into_iter()
        .flatten()
        .find(|ip| !ip.is_unspecified() && !ip.is_broadcast())
}
