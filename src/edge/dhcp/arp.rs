//! Unicast to a client that has no address yet (RFC 2131 4.1: broadcast bit
//! clear, ciaddr and giaddr zero): the kernel cannot ARP for yiaddr, so kiln
//! adds the neighbour entry itself (SIOCSARP, as dnsmasq does). Needs
//! CAP_NET_ADMIN; without it the caller broadcasts instead.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use crate::model::mac::Mac;

/// Tell the kernel that `ip` is at `mac` on `interface`.
pub(crate) fn set(
    sock: &impl AsRawFd,
    interface: &str,
    ip: Ipv4Addr,
    mac: Mac,
) -> std::io::Result<()> {
    ioctl(sock, libc::SIOCSARP, interface, ip, Some(mac))
}

/// Drop the kernel's entry for `ip` on `interface` (the failed resolution a
/// ping check to an unused address leaves, which would hold up the first
/// packets to the client that gets it by up to a second).
pub(crate) fn forget(sock: &impl AsRawFd, interface: &str, ip: Ipv4Addr) -> std::io::Result<()> {
    ioctl(sock, libc::SIOCDARP, interface, ip, None)
}

fn ioctl(
    sock: &impl AsRawFd,
    request: libc::c_ulong,
    interface: &str,
    ip: Ipv4Addr,
    mac: Option<Mac>,
) -> std::io::Result<()> {
    let name = interface.as_bytes();
    if name.is_empty() || name.len() >= 16 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("interface name {interface:?}"),
        ));
    }
    // SAFETY: arpreq is plain old data; all-zero is a valid value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let pa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; this is
    // how the ARP ioctls take an IPv4 address.
    req.arp_pa = unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(pa) };
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    if let Some(mac) = mac {
        for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac.octets()) {
            *d = s as libc::c_char;
        }
        req.arp_flags = libc::ATF_COM;
    }
    for (d, s) in req.arp_dev.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a valid socket and a fully initialised arpreq that outlives the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), request, &req as *const libc::arpreq) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
