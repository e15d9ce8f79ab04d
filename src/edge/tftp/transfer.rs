//! One read transfer: its own socket (TID), option negotiation, then windows
//! of blocks, each resent at most `limits.tftp_retries` times.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::packet::{self, ErrorCode, Mode, Request};
use crate::brain::assets;
use crate::model::config::{Config, Limits};

const MAX_BLKSIZE: usize = 1468;
const MAX_WINDOW: usize = 64;
const DEFAULT_BLKSIZE: usize = 512;

#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("no answer after {0} resends")]
    TimedOut(u32),
    #[error("the client sent an error")]
    ClientError,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Run one request to its end; every outcome is logged here.
pub(super) async fn run(
    cfg: &Config,
    local: IpAddr,
    peer: SocketAddr,
    req: Request,
) -> &'static str {
    let sock = match UdpSocket::bind(SocketAddr::new(local, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(client = %peer, "tftp: no socket for the transfer: {e}");
            return "failed";
        }
    };
    if let Err(e) = sock.connect(peer).await {
        tracing::warn!(client = %peer, "tftp: {e}");
        return "failed";
    }
    let refuse = |code, msg: &str| packet::error(code, msg);
    let not_found = || refuse(ErrorCode::FileNotFound, "file not found");
    let shown = req.filename.clone();
    if req.write {
        tracing::warn!(client = %peer, path = %shown, "tftp: write refused (read-only server)");
        crate::metrics::tftp_transfer("refused", 0);
        let _ = sock
            .send(&refuse(ErrorCode::AccessViolation, "read-only server"))
            .await;
        return "refused (write)";
    }
    let Some(file) = locate(cfg, &shown) else {
        let _ = sock.send(&not_found()).await;
        crate::metrics::tftp_transfer("not_found", 0);
        tracing::info!(client = %peer, path = %shown, "tftp: not found");
        return "not found";
    };
    let (mut src, len) = match super::source::Source::open(&file, req.mode).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(client = %peer, path = %shown, "tftp: cannot open: {e}");
            crate::metrics::tftp_transfer("failed", 0);
            let _ = sock.send(&not_found()).await;
            return "failed";
        }
    };
    tracing::info!(client = %peer, path = %shown, from = %file.display(), mode = ?req.mode, "tftp: sending");
    let neg = negotiate(&cfg.limits, &req, len);
    match send_file(&sock, &mut src, &neg, cfg.limits.tftp_retries).await {
        Ok(bytes) => {
            crate::metrics::tftp_transfer("ok", bytes);
            tracing::debug!(client = %peer, path = %shown, bytes, "tftp: sent");
            "sent"
        }
        Err(e) => {
            crate::metrics::tftp_transfer("failed", 0);
            tracing::info!(client = %peer, path = %shown, "tftp: transfer ended: {e}");
            "ended early"
        }
    }
}

/// The file a request names, if it may be served.
fn locate(cfg: &Config, name: &str) -> Option<PathBuf> {
    let Some(rel) = assets::clean_relative(name) else {
        tracing::warn!(path = %name, "tftp: refused, path leaves the asset directory");
        return None;
    };
    assets::resolve(cfg, &rel)
}

/// What was agreed (and what goes in the OACK).
struct Negotiated {
    blksize: usize,
    window: usize,
    timeout: Duration,
    oack: Vec<(&'static str, String)>,
}

fn negotiate(limits: &Limits, req: &Request, len: u64) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        window: 1,
        timeout: limits.tftp_timeout,
        oack: Vec::new(),
    };
    for (k, v) in &req.options {
        let Ok(x) = v.trim().parse::<u64>() else {
            continue; // a malformed option is left out (RFC 2347)
        };
        match k.as_str() {
            "blksize" if (8..=65464).contains(&x) => {
                n.blksize = (x as usize).min(MAX_BLKSIZE);
                n.oack.push(("blksize", n.blksize.to_string()));
            }
            "windowsize" if (1..=65535).contains(&x) => {
                n.window = (x as usize).min(MAX_WINDOW);
                n.oack.push(("windowsize", n.window.to_string()));
            }
            // Accepted only up to the cap: RFC 2349 lets the server decline
            // (leave it out), not change it.
            "timeout" if x >= 1 && Duration::from_secs(x) <= limits.tftp_max_client_timeout => {
                n.timeout = Duration::from_secs(x);
                n.oack.push(("timeout", x.to_string()));
            }
            // The size on the wire is known only in octet mode.
            "tsize" if req.mode == Mode::Octet => n.oack.push(("tsize", len.to_string())),
            _ => {}
        }
    }
    n
}

/// Wait for an ACK from the client until `deadline`: Some(ack block),
/// None at the deadline; a client ERROR ends the transfer. The deadline is
/// the caller's, fixed when it sent: a client repeating an old ACK does not
/// extend it.
async fn recv_ack(sock: &UdpSocket, deadline: tokio::time::Instant) -> Result<Option<u16>, Ended> {
    let mut buf = [0u8; 1024];
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Ok(None),
            // ICMP unreachable from a client that went away: keep waiting
            // until the deadline, it may be transient.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Ok(r) => r?,
        };
        if packet::is_error(&buf[..n]) {
            return Err(Ended::ClientError);
        }
        if let Some(b) = packet::parse_ack(&buf[..n]) {
            return Ok(Some(b));
        }
    }
}

fn data_packet(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + payload.len());
    p.extend_from_slice(&packet::DATA.to_be_bytes());
    p.extend_from_slice(&block.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Send the OACK (if any option was agreed), then the file in windows.
async fn send_file(
    sock: &UdpSocket,
    src: &mut super::source::Source,
    n: &Negotiated,
    retries: u32,
) -> Result<u64, Ended> {
    if !n.oack.is_empty() {
        let oack = packet::oack(&n.oack);
        let mut tries = 0;
        'oack: loop {
            sock.send(&oack).await?;
            let deadline = tokio::time::Instant::now() + n.timeout;
            loop {
                match recv_ack(sock, deadline).await? {
                    Some(0) => break 'oack,
                    Some(_) => {} // not ours to act on; the deadline stands
                    None if tries >= retries => return Err(Ended::TimedOut(retries)),
                    None => {
                        tries += 1;
                        continue 'oack;
                    }
                }
            }
        }
    }
    // Unacknowledged blocks, the first being block `base`.
    let mut window: std::collections::VecDeque<Vec<u8>> = Default::default();
    let (mut base, mut last_read, mut sent) = (1u16, false, 0u64);
    let mut tries = 0;
    loop {
        while window.len() < n.window && !last_read {
            let payload = src.block(n.blksize).await?;
            last_read = payload.len() < n.blksize;
            sent += payload.len() as u64;
            let block = base.wrapping_add(window.len() as u16);
            window.push_back(data_packet(block, &payload));
        }
        if window.is_empty() {
            return Ok(sent);
        }
        for p in &window {
            sock.send(p).await?;
        }
        // Wait for an ACK that moves the window; old duplicates are ignored
        // (no resend on them: the sorcerer's apprentice bug) and do not move
        // the deadline, so a client repeating one cannot hold the transfer.
        let deadline = tokio::time::Instant::now() + n.timeout;
        loop {
            match recv_ack(sock, deadline).await? {
                Some(b) => {
                    let acked = b.wrapping_sub(base.wrapping_sub(1)) as usize;
                    if (1..=window.len()).contains(&acked) {
                        window.drain(..acked);
                        base = base.wrapping_add(acked as u16);
                        tries = 0;
                        break;
                    }
                }
                None if tries >= retries => {
                    let _ = sock
                        .send(&packet::error(ErrorCode::NotDefined, "timed out"))
                        .await;
                    return Err(Ended::TimedOut(retries));
                }
                None => {
                    tries += 1;
                    break;
                }
            }
        }
    }
}
