//! IPv6 router advertisements that configure nothing, so iPXE stops waiting.
//!
//! iPXE configures every NIC with all its configurators at once (DHCPv4 and
//! IPv6) and waits for all of them: with no IPv6 router on the segment it
//! sends router solicitations until its retry timer gives up, about 13
//! seconds per iPXE stage (measured in the acceptance test). It takes the
//! first router advertisement it gets; one with the M and O flags clear ends
//! its IPv6 configuration at once (ndp.c, `ipv6conf_rx_router_advertisement`).
//!
//! kiln answers each solicitation on its interface with exactly that: router
//! lifetime 0 (not a default router), no prefix, no M/O flags, only the
//! source link-layer address. Hosts that process it configure nothing from
//! it. On by default in full DHCP mode (kiln owns the segment), off in proxy
//! mode (another DHCP server, maybe a real IPv6 router); see
//! `ipv6_router_advertisements`.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The advertisement: ICMPv6 type 134, everything zero (the kernel fills the
/// checksum of raw ICMPv6 sockets), then a source link-layer address option.
pub(crate) fn advertisement(mac: [u8; 6]) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0] = ROUTER_ADVERTISEMENT;
    // code, checksum, cur hop limit, flags (M=O=0), router lifetime 0,
    // reachable time 0, retrans timer 0: all zero.
    p[16] = 1; // source link-layer address
    p[17] = 1; // length in 8-octet units
    p[18..24].copy_from_slice(&mac);
    p
}

/// Whether `icmp` (an ICMPv6 message, header first) is a router solicitation.
pub(crate) fn is_solicitation(icmp: &[u8]) -> bool {
    icmp.len() >= 8 && icmp[0] == ROUTER_SOLICITATION && icmp[1] == 0
}

fn sysfs(iface: &str, what: &str) -> io::Result<String> {
    Ok(
        std::fs::read_to_string(format!("/sys/class/net/{iface}/{what}"))?
            .trim()
            .to_string(),
    )
}

/// Open the socket: raw ICMPv6 on `iface`, in the all-routers group, hop
/// limit 255 (RFC 4861 receivers drop anything else).
fn open(iface: &str) -> io::Result<(Socket, u32, [u8; 6])> {
    let index: u32 = sysfs(iface, "ifindex")?
        .parse()
        .map_err(|_| io::Error::other("bad ifindex"))?;
    let mac = sysfs(iface, "address")?
        .parse::<crate::model::mac::Mac>()
        .map_err(|_| io::Error::other("no Ethernet address"))?
        .octets();
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    s.join_multicast_v6(&ALL_ROUTERS, index)?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok((s, index, mac))
}

/// Answer solicitations on `iface` until `stop` is set. Returns at once (with
/// a warning) where it cannot run: no IPv6, no CAP_NET_RAW, loopback.
pub(crate) fn spawn(iface: &str, stop: Arc<AtomicBool>) {
    if iface == "lo" {
        tracing::debug!("ipv6: no router advertisements on loopback");
        return;
    }
    let (sock, index, mac) = match open(iface) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(interface = iface, "ipv6: cannot answer router solicitations ({e}); iPXE will wait for IPv6 on every boot");
            return;
        }
    };
    tracing::info!(
        interface = iface,
        "ipv6: answering router solicitations with an empty advertisement (iPXE stops waiting for IPv6)"
    );
    let ra = advertisement(mac);
    let to = SocketAddrV6::new(ALL_NODES, 0, 0, index);
    let iface = iface.to_string();
    let run = move || {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        while !stop.load(Ordering::Relaxed) {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    tracing::warn!(interface = %iface, "ipv6: router advertisements stopped: {e}");
                    return;
                }
            };
            // SAFETY: recv_from initialised the first n bytes.
            let msg: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            if !is_solicitation(&msg) {
                continue;
            }
            let from = from
                .as_socket_ipv6()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            match sock.send_to(&ra, &to.into()) {
                Ok(_) => {
                    tracing::info!(interface = %iface, %from, "ipv6: answered router solicitation")
                }
                Err(e) => {
                    tracing::warn!(interface = %iface, %from, "ipv6: router advertisement not sent: {e}")
                }
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("ipv6-ra".into())
        .spawn(run)
    {
        tracing::warn!("ipv6: no router advertisement thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_configures_nothing() {
        let ra = advertisement([0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(ra[0], 134);
        assert_eq!(ra[5], 0, "M and O flags clear");
        assert_eq!(
            &ra[6..8],
            &[0, 0],
            "router lifetime 0: not a default router"
        );
        assert_eq!(&ra[16..24], &[1, 1, 0x52, 0x54, 0, 1, 2, 3]);
        assert!(is_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[133, 0, 0]));
    }
}
