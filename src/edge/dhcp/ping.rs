//! The optional conflict check before an OFFER (`dhcp.ping_check`, as
//! dnsmasq and Kea's ping-check do): one ICMP echo to the address, and
//! whether anything answers within the wait. An ICMP datagram socket where
//! the kernel allows it, else a raw one (CAP_NET_RAW).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Echo request: type 8, code 0, checksum, identifier, sequence, payload.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"kiln ping check");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn socket() -> std::io::Result<(Socket, bool)> {
    match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(s) => Ok((s, false)),
        Err(_) => Ok((
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?,
            true,
        )),
    }
}

/// Whether something answers a ping on `ip` within `wait`. An error (no
/// socket allowed) is returned so the caller can say so; it then offers.
pub(crate) async fn answers(ip: Ipv4Addr, wait: Duration) -> std::io::Result<bool> {
    let (s, raw) = socket()?;
    s.set_nonblocking(true)?;
    s.connect(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))?;
    let id = (std::process::id() as u16) ^ (u32::from(ip) as u16);
    sock.send(&echo_request(id, 1)).await?;
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Ok(false),
            Ok(r) => r?,
        };
        // A raw socket sees the IP header first; a datagram one does not.
        let icmp = if raw {
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            buf.get(ihl..n).unwrap_or(&[])
        } else {
            &buf[..n]
        };
        if icmp.first() == Some(&0) {
            return Ok(true); // echo reply from the connected address
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksum_of_an_echo_request_verifies() {
        let p = super::echo_request(0x1234, 1);
        assert_eq!(super::checksum(&p), 0);
    }

    #[tokio::test]
    async fn loopback_answers() {
        use std::time::Duration;
        match super::answers("127.0.0.1".parse().unwrap(), Duration::from_secs(2)).await {
            Ok(up) => assert!(up, "127.0.0.1 did not answer"),
            Err(e) => eprintln!("SKIPPED: no ICMP socket here ({e})"),
        }
    }
}
