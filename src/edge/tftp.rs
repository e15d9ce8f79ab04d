//! TFTP edge (async-tftp): read-only, serving boot_assets with the iPXE fallback
//! directories. blksize, tsize, timeout and windowsize (RFC 7440) are negotiated by
//! async-tftp; writes are refused; paths cannot leave the asset directories.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use blocking::{unblock, Unblock};

use crate::brain::assets;
use crate::model::config::Config;

pub(crate) struct AssetHandler {
    cfg: Arc<Config>,
}

impl Handler for AssetHandler {
    type Reader = Unblock<File>;
    type Writer = Unblock<File>;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let shown = path.display().to_string();
        let Some(rel) = assets::clean_relative(&shown) else {
            tracing::warn!(%client, path = %shown, "tftp: refused, path leaves the asset directory");
            return Err(packet::Error::PermissionDenied);
        };
        let Some(file) = assets::resolve(&self.cfg, &rel) else {
            tracing::info!(%client, path = %shown, "tftp: not found");
            return Err(packet::Error::FileNotFound);
        };
        tracing::info!(%client, path = %shown, from = %file.display(), "tftp: sending");
        let opened = unblock(move || {
            let f = File::open(&file)?;
            let len = f.metadata()?.len();
            Ok::<_, std::io::Error>((f, len))
        })
        .await;
        match opened {
            Ok((f, len)) => Ok((Unblock::new(f), Some(len))),
            Err(e) => {
                tracing::warn!(%client, path = %shown, "tftp: cannot open: {e}");
                Err(packet::Error::FileNotFound)
            }
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::warn!(%client, path = %path.display(), "tftp: write refused (read-only server)");
        Err(packet::Error::IllegalOperation)
    }
}

/// One socket per core on `addr`, all SO_REUSEPORT: the kernel spreads
/// requests over them by client address and port.
pub(crate) fn bind(addr: std::net::SocketAddrV4) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    // SO_REUSEPORT would let a second kiln share the port silently: probe
    // with a plain bind first, so a port in use is still an error (and port
    // 0 resolves to one port for all the sockets).
    let probe = std::net::UdpSocket::bind(addr)?;
    let addr = match probe.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(_) => addr,
    };
    drop(probe);
    (0..n)
        .map(|_| {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            s.set_reuse_port(true)?;
            s.bind(&std::net::SocketAddr::V4(addr).into())?;
            Ok(s.into())
        })
        .collect()
}

/// Build the server on an already bound socket (so readiness means bound).
pub(crate) async fn build(
    cfg: Arc<Config>,
    socket: std::net::UdpSocket,
) -> Result<async_tftp::server::TftpServer<AssetHandler>, async_tftp::Error> {
    TftpServerBuilder::with_handler(AssetHandler { cfg })
        .std_socket(socket)?
        .block_size_limit(1468)
        .window_size_limit(64)
        .build()
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_port_for_every_core_and_a_port_in_use_is_an_error() {
        let socks = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socks[0].local_addr().unwrap().port();
        assert!(socks.iter().all(|s| s.local_addr().unwrap().port() == port));
        // Another process (or a second kiln) holding the port: refused.
        drop(socks);
        let other = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        let taken = match other.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        assert!(super::bind(taken).is_err());
    }
}
