//! Zero-copy boot assets beside hyper. A connection whose requests are plain
//! `GET`/`HEAD`s of a file under `/assets/` is answered here with sendfile(2),
//! from the page cache straight to the socket: no read into user space, no
//! buffer per request, no blocking-pool hop per chunk (docs/benchmarks.md
//! has the profile that called for it). The first request of any other
//! shape (another route, a conditional or multi-range request, a body, an
//! odd path, HTTP/1.0) hands the connection, with every byte already read,
//! to hyper and axum for good, so everything beyond this narrow case keeps
//! the mature stack's behaviour.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The largest request head this path reads; a longer one goes to hyper.
const MAX_HEAD: usize = 8192;

/// Where a connection goes after this path is done with it.
pub(crate) enum Next {
    /// Closed or failed here (already logged).
    Done,
    /// To hyper, with the bytes read ahead replayed first.
    Hyper(Rewind),
}

/// What the fast path needs from the config.
pub(crate) struct Roots {
    /// Searched in order, as the router's ServeDir and its fallback are.
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) header_timeout: Duration,
    pub(crate) stall_timeout: Duration,
}

/// A plain asset request this path answers.
#[derive(Debug, PartialEq)]
struct AssetRequest {
    head: bool,
    rel: String,
    range: Option<ByteRange>,
    close: bool,
    len: usize,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum ByteRange {
    From(u64),
    FromTo(u64, u64),
    Last(u64),
}

/// Serve asset requests on `stream` until the client closes, a request needs
/// hyper, or the connection fails.
pub(crate) async fn serve(mut stream: TcpStream, roots: &Roots) -> Next {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let req = match read_head(&mut stream, &mut buf, roots.header_timeout).await {
            Ok(Some(Some(r))) => r,
            Ok(Some(None)) => return Next::Hyper(Rewind::new(buf, stream)),
            Ok(None) => return Next::Done,
            Err(e) => {
                tracing::debug!("http connection: {e}");
                return Next::Done;
            }
        };
        let Some(file) = open(&roots.dirs, &req.rel).await else {
            // Not a file here: hyper answers (404, a directory, ...).
            return Next::Hyper(Rewind::new(buf, stream));
        };
        if req
            .range
            .is_some_and(|r| resolve(r, file.1.len()).is_none())
        {
            // Unsatisfiable: ServeDir's 416.
            return Next::Hyper(Rewind::new(buf, stream));
        }
        buf.drain(..req.len);
        // Logged as tower-http logs the router's requests (same targets and
        // fields), so `KILN_LOG=tower_http=debug` still shows every request.
        let span = tracing::debug_span!(
            target: "tower_http::trace::make_span",
            "request",
            method = %if req.head { "HEAD" } else { "GET" },
            path = %format!("/assets/{}", req.rel)
        );
        let t0 = std::time::Instant::now();
        let sent = tracing::Instrument::instrument(
            respond(&mut stream, &req, file, roots.stall_timeout),
            span.clone(),
        )
        .await;
        if let Ok(status) = &sent {
            span.in_scope(|| {
                tracing::debug!(
                    target: "tower_http::trace::on_response",
                    latency = %format!("{} ms", t0.elapsed().as_millis()),
                    status,
                    sendfile = true,
                    "finished processing request"
                )
            });
        }
        match sent {
            Ok(_) if !req.close => continue,
            Ok(_) => return Next::Done,
            Err(e) => {
                tracing::debug!(path = %req.rel, "asset: {e}");
                return Next::Done;
            }
        }
    }
}

/// Read until `buf` holds a whole request head. `None`: the client closed
/// between requests; `Some(None)`: a request for hyper.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> io::Result<Option<Option<AssetRequest>>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parsed::Asset(r) => return Ok(Some(Some(r))),
                Parsed::Other => return Ok(Some(None)),
                Parsed::Partial if buf.len() >= MAX_HEAD => return Ok(Some(None)),
                Parsed::Partial => {}
            }
        }
        let mut chunk = [0u8; 2048];
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) if buf.is_empty() => return Ok(None),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request headers too slow",
                ))
            }
        };
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Parsed {
    Asset(AssetRequest),
    Other,
    Partial,
}

/// Classify the head at the start of `buf` (httparse does the parsing).
fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Request::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let head = match r.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Other,
    };
    let (Some(1), Some(path)) = (r.version, r.path) else {
        return Parsed::Other;
    };
    let Some(rel) = path.strip_prefix("/assets/").filter(|p| plain_path(p)) else {
        return Parsed::Other;
    };
    let mut range = None;
    let mut close = false;
    for h in r.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = std::str::from_utf8(h.value).unwrap_or("\u{0}");
        match name.as_str() {
            "range" => match parse_range(value) {
                Some(r) => range = Some(r),
                None => return Parsed::Other,
            },
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("upgrade") {
                    return Parsed::Other;
                }
                close = v.split(',').any(|t| t.trim() == "close");
            }
            "content-length" if value.trim() != "0" => return Parsed::Other,
            "transfer-encoding" | "expect" | "upgrade" => return Parsed::Other,
            n if n.starts_with("if-") => return Parsed::Other,
            _ => {}
        }
    }
    Parsed::Asset(AssetRequest {
        head,
        rel: rel.to_string(),
        range,
        close,
        len,
    })
}

/// Segments of plain file-name characters only: no `..`, no escapes, no
/// query; anything else is for hyper (and ServeDir's own path rules).
fn plain_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        })
}

/// One range of the forms `bytes=A-B`, `bytes=A-`, `bytes=-N`.
fn parse_range(v: &str) -> Option<ByteRange> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => Some(ByteRange::Last(num(b)?)),
        (false, true) => Some(ByteRange::From(num(a)?)),
        (false, false) => {
            let (a, b) = (num(a)?, num(b)?);
            (a <= b).then_some(ByteRange::FromTo(a, b))
        }
        (true, true) => None,
    }
}

/// The first root holding `rel` as a regular file, opened.
async fn open(dirs: &[PathBuf], rel: &str) -> Option<(std::fs::File, std::fs::Metadata)> {
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.join(rel)).collect();
    tokio::task::spawn_blocking(move || {
        paths.iter().find_map(|p| {
            let f = std::fs::File::open(p).ok()?;
            let m = f.metadata().ok()?;
            m.is_file().then_some((f, m))
        })
    })
    .await
    .ok()
    .flatten()
}

/// The content type ServeDir would send; `.efi` as UEFI HTTP Boot wants it.
pub(crate) fn content_type(rel: &str) -> String {
    if Path::new(rel).extension().is_some_and(|e| e == "efi") {
        return "application/efi".into();
    }
    mime_guess::from_path(rel)
        .first_or_octet_stream()
        .to_string()
}

async fn respond(
    stream: &mut TcpStream,
    req: &AssetRequest,
    (file, meta): (std::fs::File, std::fs::Metadata),
    stall: Duration,
) -> io::Result<u16> {
    let size = meta.len();
    // `serve` checked that a range is satisfiable.
    let span = req.range.and_then(|r| resolve(r, size));
    let (start, len, status) = match span {
        Some((a, b)) => (a, b - a + 1, 206),
        None => (0, size, 200),
    };
    let mut head = format!(
        "HTTP/1.1 {}\r\ncontent-type: {}\r\naccept-ranges: bytes\r\ncontent-length: {len}\r\n",
        if status == 206 {
            "206 Partial Content"
        } else {
            "200 OK"
        },
        content_type(&req.rel),
    );
    if let Some((a, b)) = span {
        head.push_str(&format!("content-range: bytes {a}-{b}/{size}\r\n"));
    }
    if let Ok(m) = meta.modified() {
        head.push_str(&format!(
            "last-modified: {}\r\n",
            httpdate::fmt_http_date(m)
        ));
    }
    head.push_str(&format!(
        "date: {}\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    ));
    if req.close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    crate::metrics::http_request("/assets", status);
    // Corked, as nginx's `tcp_nopush`: the head and the file leave in full
    // segments, not a short one after each sendfile call (the listener sets
    // TCP_NODELAY for everything else).
    let _ = socket2::SockRef::from(&*stream).set_tcp_cork(true);
    let sent = async {
        write_all(stream, head.as_bytes(), stall).await?;
        if !req.head && len > 0 {
            send_file(stream, &file, start, len, stall).await?;
            crate::metrics::asset_bytes(len);
        }
        Ok(())
    }
    .await;
    let _ = socket2::SockRef::from(&*stream).set_tcp_cork(false);
    sent.map(|()| status)
}

/// The inclusive byte span of `r` in a file of `size` bytes, if satisfiable.
fn resolve(r: ByteRange, size: u64) -> Option<(u64, u64)> {
    let last = size.checked_sub(1)?;
    match r {
        ByteRange::From(a) => (a <= last).then_some((a, last)),
        ByteRange::FromTo(a, b) => (a <= last).then_some((a, b.min(last))),
        ByteRange::Last(0) => None,
        ByteRange::Last(n) => Some((size.saturating_sub(n), last)),
    }
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8], stall: Duration) -> io::Result<()> {
    tokio::time::timeout(stall, stream.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))?
}

/// sendfile(2) `len` bytes of `file` from `start`, waiting for the socket to
/// drain between calls; a client that reads nothing for `stall` is dropped.
async fn send_file(
    stream: &mut TcpStream,
    file: &std::fs::File,
    start: u64,
    len: u64,
    stall: Duration,
) -> io::Result<()> {
    let (sock, fd) = (stream.as_raw_fd(), file.as_raw_fd());
    let end = start + len;
    let mut off = libc::off_t::try_from(start).map_err(io::Error::other)?;
    loop {
        let left = end.saturating_sub(off as u64);
        if left == 0 {
            return Ok(());
        }
        let want = left.min(1 << 30) as usize;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the call (the stream and
            // the file are borrowed), and `off` is a valid off_t we own.
            let n = unsafe { libc::sendfile(sock, fd, &mut off, want) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else if n > 0 && (n as usize) < want {
                // A short send means the socket buffer is full (the bytes
                // sent are counted in `off`): wait for room now, as nginx
                // does, rather than spend a call to hear EAGAIN.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(stall, stream.writable())
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")
                    })??;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A stream that first yields bytes already read from it.
pub(crate) struct Rewind {
    pre: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl Rewind {
    fn new(pre: Vec<u8>, inner: TcpStream) -> Rewind {
        Rewind { pre, at: 0, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.pre.len() {
            let n = (self.pre.len() - self.at).min(out.remaining());
            let at = self.at;
            out.put_slice(&self.pre[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(s: &str) -> Option<AssetRequest> {
        match parse(s.as_bytes()) {
            Parsed::Asset(r) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn only_plain_asset_requests_take_the_fast_path() {
        let r = classify("GET /assets/talos/v1.14.0/vmlinuz-amd64 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(
            (r.head, r.rel.as_str(), r.range, r.close),
            (false, "talos/v1.14.0/vmlinuz-amd64", None, false)
        );
        let r = classify(
            "HEAD /assets/ipxe.efi HTTP/1.1\r\nRange: bytes=10-\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (r.head, r.range, r.close),
            (true, Some(ByteRange::From(10)), true)
        );
        for other in [
            "GET /ipxe/52-54-00-aa-00-01 HTTP/1.1\r\n\r\n",
            "GET /assets/../secrets.yaml HTTP/1.1\r\n\r\n",
            "GET /assets/a%2e%2e/b HTTP/1.1\r\n\r\n",
            "GET /assets/a?x=1 HTTP/1.1\r\n\r\n",
            "GET /assets/ HTTP/1.1\r\n\r\n",
            "GET /assets//x HTTP/1.1\r\n\r\n",
            "GET /assets/x HTTP/1.0\r\n\r\n",
            "POST /assets/x HTTP/1.1\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nIf-None-Match: \"a\"\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nRange: bytes=0-1,5-6\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nRange: items=0-1\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /assets/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(classify(other).is_none(), "{other:?} must go to hyper");
        }
        assert!(matches!(
            parse(b"GET /assets/x HTTP/1.1\r\nHo"),
            Parsed::Partial
        ));
    }

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        assert_eq!(resolve(ByteRange::FromTo(0, 9), 100), Some((0, 9)));
        assert_eq!(resolve(ByteRange::FromTo(90, 200), 100), Some((90, 99)));
        assert_eq!(resolve(ByteRange::From(100), 100), None);
        assert_eq!(resolve(ByteRange::Last(10), 100), Some((90, 99)));
        assert_eq!(resolve(ByteRange::Last(500), 100), Some((0, 99)));
        assert_eq!(resolve(ByteRange::Last(0), 100), None);
        assert_eq!(resolve(ByteRange::From(0), 0), None);
        assert_eq!(parse_range("bytes=5-1"), None);
        assert_eq!(parse_range("bytes=-"), None);
    }

    #[test]
    fn efi_binaries_are_application_efi() {
        assert_eq!(content_type("ipxe.efi"), "application/efi");
        assert_eq!(
            content_type("talos/x/metal-arm64-uki.efi"),
            "application/efi"
        );
        assert_eq!(content_type("x/initramfs-amd64.xz"), "application/x-xz");
    }
}
