//! A transfer's bytes. Boot loaders (undionly.kpxe, ipxe.efi, snp.efi: tens
//! of KiB to about a MiB) are what a booting rack fetches over TFTP, all at
//! once: they are read once into memory and shared by every transfer while
//! the file's size and mtime stay the same. Larger files (a kernel over TFTP)
//! stream through a small buffer.
//!
//! Before, each transfer had its own 256 KiB read buffer (and tokio's file
//! its own copy of it): 256 transfers at once held ~128 MiB, most of a
//! 10,000-machine storm's peak RSS (docs/benchmarks.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::AsyncReadExt;

use super::packet::{self, Mode};

/// Files up to this size are shared from memory.
const SHARED_MAX: u64 = 4 << 20;
/// At most this much is kept shared, in all.
const CACHE_MAX: usize = 16 << 20;
/// A streamed file's read buffer.
const STREAM_BUF: usize = 64 << 10;

/// A file as read: its contents and what identifies that version.
struct Cached {
    len: u64,
    mtime: Option<SystemTime>,
    data: Arc<[u8]>,
}

static CACHE: Mutex<Option<HashMap<PathBuf, Cached>>> = Mutex::new(None);

/// The file's bytes as they go on the wire (netascii translated).
pub(super) struct Source {
    from: From,
    mode: Mode,
    pending: Vec<u8>,
    eof: bool,
}

enum From {
    Shared { data: Arc<[u8]>, at: usize },
    Stream(tokio::io::BufReader<tokio::fs::File>),
}

impl Source {
    pub(super) async fn open(path: &Path, mode: Mode) -> std::io::Result<(Source, u64)> {
        let f = tokio::fs::File::open(path).await?;
        let meta = f.metadata().await?;
        let (len, mtime) = (meta.len(), meta.modified().ok());
        let from = if len <= SHARED_MAX {
            From::Shared {
                data: shared(path, f, len, mtime).await?,
                at: 0,
            }
        } else {
            From::Stream(tokio::io::BufReader::with_capacity(STREAM_BUF, f))
        };
        let src = Source {
            from,
            mode,
            pending: Vec::new(),
            eof: false,
        };
        Ok((src, len))
    }

    /// The next block's payload; shorter than `size` only at the end.
    pub(super) async fn block(&mut self, size: usize) -> std::io::Result<Vec<u8>> {
        if let (From::Shared { data, at }, Mode::Octet) = (&mut self.from, self.mode) {
            return Ok(take(data, at, size));
        }
        while self.pending.len() < size && !self.eof {
            let chunk = match &mut self.from {
                From::Shared { data, at } => take(data, at, size),
                From::Stream(f) => {
                    let mut raw = vec![0u8; size];
                    let n = f.read(&mut raw).await?;
                    raw.truncate(n);
                    raw
                }
            };
            if chunk.is_empty() {
                self.eof = true;
            } else if self.mode == Mode::Netascii {
                packet::to_netascii(&chunk, &mut self.pending);
            } else {
                self.pending.extend_from_slice(&chunk);
            }
        }
        let take = size.min(self.pending.len());
        Ok(self.pending.drain(..take).collect())
    }
}

/// The next `size` bytes of a shared file from `at` (fewer at its end).
fn take(data: &[u8], at: &mut usize, size: usize) -> Vec<u8> {
    let end = (*at + size).min(data.len());
    let out = data[*at..end].to_vec();
    *at = end;
    out
}

/// `path`'s contents from the cache, or read now (from the open `f`) and kept.
async fn shared(
    path: &Path,
    mut f: tokio::fs::File,
    len: u64,
    mtime: Option<SystemTime>,
) -> std::io::Result<Arc<[u8]>> {
    {
        let g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.as_ref().and_then(|m| m.get(path)) {
            if c.len == len && c.mtime == mtime && mtime.is_some() {
                return Ok(c.data.clone());
            }
        }
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf).await?;
    let data: Arc<[u8]> = buf.into();
    if data.len() as u64 != len {
        // Changed while read: serve what was read, keep nothing.
        return Ok(data);
    }
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let m = g.get_or_insert_with(HashMap::new);
    m.remove(path);
    // Bounded: make room by dropping others (they are read again when asked).
    while !m.is_empty() && m.values().map(|c| c.data.len()).sum::<usize>() + data.len() > CACHE_MAX
    {
        let Some(k) = m.keys().next().cloned() else {
            break;
        };
        m.remove(&k);
    }
    m.insert(
        path.to_path_buf(),
        Cached {
            len,
            mtime,
            data: data.clone(),
        },
    );
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(src: &mut Source, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = src.block(size).await.unwrap();
            let last = b.len() < size;
            out.extend(b);
            if last {
                return out;
            }
        }
    }

    /// Shared and streamed files give the same bytes; a rewritten file is
    /// read again; netascii is translated from the shared copy too.
    #[tokio::test]
    async fn shared_files_follow_changes_and_translate() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("boot.bin");
        std::fs::write(&p, b"one\nline\r").unwrap();
        let (mut s, len) = Source::open(&p, Mode::Octet).await.unwrap();
        assert_eq!((all(&mut s, 4).await, len), (b"one\nline\r".to_vec(), 9));
        let (mut s, _) = Source::open(&p, Mode::Netascii).await.unwrap();
        assert_eq!(all(&mut s, 4).await, b"one\r\nline\r\0".to_vec());
        // A new version (another size) is seen at the next open.
        std::fs::write(&p, b"two, longer").unwrap();
        let (mut s, len) = Source::open(&p, Mode::Octet).await.unwrap();
        assert_eq!((all(&mut s, 512).await, len), (b"two, longer".to_vec(), 11));
        // Larger than SHARED_MAX: streamed, same bytes.
        let big: Vec<u8> = (0..(SHARED_MAX as usize + 3000)).map(|i| i as u8).collect();
        let q = d.path().join("big.bin");
        std::fs::write(&q, &big).unwrap();
        let (mut s, _) = Source::open(&q, Mode::Octet).await.unwrap();
        assert!(matches!(s.from, From::Stream(_)));
        assert_eq!(all(&mut s, 1468).await, big);
    }
}
