//! Talos's kernel log stream (`talos.logging.kernel=tcp://...`, JSON lines):
//! each connection is attributed, as events are, to the MAC DHCP proved
//! holds its source address; anything else is closed unread. Lines are
//! bounded in length; connections at once are bounded too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::brain::Provisioner;

/// Kernel log connections at once (one per machine is normal).
const CONNECTIONS: usize = 512;

static KMSG_REFUSALS: crate::brain::ratelog::RateLog = crate::brain::ratelog::RateLog::new(1);

async fn handle(stream: TcpStream, peer: SocketAddr, p: Arc<Provisioner>) {
    let ip = match peer.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let Some(mac) = ip.and_then(|ip| p.mac_at(ip)) else {
        crate::refusal!(KMSG_REFUSALS, %peer, "kernel log refused: {} is no machine's DHCP-proven address", peer.ip());
        crate::metrics::kmsg_line("refused");
        return;
    };
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // A line longer than the cap is cut there; the rest is read as the next.
        let limit = (crate::brain::kmsg::MAX_LINE * 4) as u64;
        let n = match (&mut r).take(limit).read_until(b'\n', &mut buf).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&buf);
        let Some(line) = crate::brain::kmsg::format(text.trim_end()) else {
            crate::metrics::kmsg_line("malformed");
            continue;
        };
        let p2 = p.clone();
        let stored = tokio::task::spawn_blocking(move || p2.kernel_log(mac, &line)).await;
        if !matches!(stored, Ok(Ok(()))) {
            crate::metrics::kmsg_line("not_stored");
            continue;
        }
        crate::metrics::kmsg_line("stored");
    }
}

/// Accept kernel log connections until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    p: Arc<Provisioner>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("kernel log accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let p = p.clone();
        tokio::spawn(async move {
            handle(stream, peer, p).await;
            drop(permit);
        });
    }
}
