//! TFTP edge (async-tftp): read-only, serving boot_assets with the iPXE fallback
//! directories. blksize, tsize, timeout and windowsize (RFC 7440) are negotiated by
//! async-tftp; writes are refused; paths cannot leave the asset directories.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use blocking::{unblock, Unblock};

use crate::assets;
use crate::config::Config;

/// Files up to this size (iPXE binaries are about 1 MB) are served from memory:
/// no thread-pool hop per block. Larger ones stream from disk.
const CACHE_MAX: u64 = 8 << 20;

/// path → (mtime, contents); a changed file is read again.
type Cache = HashMap<PathBuf, (SystemTime, Arc<[u8]>)>;

pub struct AssetHandler {
    cfg: Arc<Config>,
    cache: Cache,
}

pub type Reader = Box<dyn futures_lite::AsyncRead + Unpin + Send>;

/// The cached contents if still current, the file's mtime and length.
struct Lookup {
    hit: Option<Arc<[u8]>>,
    mtime: SystemTime,
    len: u64,
}

fn read_cached(file: &Path, cache: &Cache) -> std::io::Result<Lookup> {
    let meta = std::fs::metadata(file)?;
    let mtime = meta.modified()?;
    let hit = cache
        .get(file)
        .filter(|(t, data)| *t == mtime && data.len() as u64 == meta.len())
        .map(|(_, data)| data.clone());
    Ok(Lookup {
        hit,
        mtime,
        len: meta.len(),
    })
}

impl Handler for AssetHandler {
    type Reader = Reader;
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
        let fail = |e: std::io::Error| {
            tracing::warn!(%client, path = %shown, "tftp: cannot open: {e}");
            packet::Error::FileNotFound
        };
        let Lookup { hit, mtime, len } = read_cached(&file, &self.cache).map_err(fail)?;
        if let Some(data) = hit {
            return Ok((Box::new(futures_lite::io::Cursor::new(data)), Some(len)));
        }
        if len <= CACHE_MAX {
            let f2 = file.clone();
            let data: Arc<[u8]> = unblock(move || std::fs::read(&f2))
                .await
                .map_err(fail)?
                .into();
            let len = data.len() as u64;
            self.cache.insert(file, (mtime, data.clone()));
            return Ok((Box::new(futures_lite::io::Cursor::new(data)), Some(len)));
        }
        let f = unblock(move || File::open(&file)).await.map_err(fail)?;
        Ok((Box::new(Unblock::new(f)), Some(len)))
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

/// Build the server on an already bound socket (so readiness means bound).
pub async fn build(
    cfg: Arc<Config>,
    socket: std::net::UdpSocket,
) -> Result<async_tftp::server::TftpServer<AssetHandler>, async_tftp::Error> {
    TftpServerBuilder::with_handler(AssetHandler {
        cfg,
        cache: HashMap::new(),
    })
    .std_socket(socket)?
    .block_size_limit(1468)
    .window_size_limit(64)
    .build()
    .await
}
