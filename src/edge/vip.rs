//! The shared service address on this host's interface (`store.service_address`):
//! added and removed with iproute2's `ip` (as a Debian host has it), and
//! announced with gratuitous ARP so the segment's neighbour caches move to
//! this host at once.

use std::net::Ipv4Addr;
use std::process::Command;

/// Run `ip` with `args`; an error names the command and what it said.
fn ip(args: &[&str]) -> std::io::Result<()> {
    let o = Command::new("ip").args(args).output()?;
    if o.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr).trim()
    )))
}

/// Whether `addr` is on `interface` now.
pub(crate) fn present(interface: &str, addr: Ipv4Addr) -> bool {
    Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", interface])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .any(|w| w.split('/').next() == Some(&addr.to_string()))
        })
        .unwrap_or(false)
}

/// Put `addr/32` on `interface` (nothing if it is there) and announce it.
pub(crate) fn add(interface: &str, addr: Ipv4Addr) -> std::io::Result<()> {
    if !present(interface, addr) {
        ip(&["addr", "add", &format!("{addr}/32"), "dev", interface])?;
    }
    announce(interface, addr)
}

/// Take `addr` off `interface` (nothing if it is not there).
pub(crate) fn remove(interface: &str, addr: Ipv4Addr) -> std::io::Result<()> {
    if present(interface, addr) {
        ip(&["addr", "del", &format!("{addr}/32"), "dev", interface])?;
    }
    Ok(())
}

/// Broadcast a gratuitous ARP request for `addr` from `interface`'s MAC
/// (RFC 5227's announcement: sender and target address both `addr`).
pub(crate) fn announce(interface: &str, addr: Ipv4Addr) -> std::io::Result<()> {
    let mac = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))?;
    let mac: crate::model::mac::Mac = mac
        .trim()
        .parse()
        .map_err(|e| std::io::Error::other(format!("{interface}'s MAC: {e}")))?;
    let name = std::ffi::CString::new(interface)
        .map_err(|_| std::io::Error::other("interface name with a NUL"))?;
    // SAFETY: a C string that lives across the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac.0);
    frame.extend_from_slice(&[0x08, 0x06]); // ARP
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    frame.extend_from_slice(&mac.0);
    frame.extend_from_slice(&addr.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&addr.octets());
    // SAFETY: a raw packet socket, closed below; sockaddr_ll is plain data.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ARP as u16).to_be() as i32,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        sll.sll_ifindex = index as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let r = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return Err(err);
        }
    }
    Ok(())
}
