//! The CLI's side of kiln's local API: HTTP/1 over the Unix socket in
//! `state_dir` (owner only), or, where the operator opted in, over TCP on
//! 127.0.0.1 with the bearer token from `state_dir/api-token`.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Where the daemon's API is.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Socket(PathBuf),
    Tcp { port: u16, token: String },
}

impl Endpoint {
    fn describe(&self) -> String {
        match self {
            Endpoint::Socket(p) => p.display().to_string(),
            Endpoint::Tcp { port, .. } => format!("127.0.0.1:{port}"),
        }
    }
}

/// GET `path`: the body, or the daemon's own error text.
pub(crate) fn fetch(ep: &Endpoint, path: &str) -> Result<String, String> {
    request(ep, "GET", path, None)
}

/// POST `path` with no payload (an empty JSON object).
pub(crate) fn post_to(ep: &Endpoint, path: &str) -> Result<String, String> {
    request(ep, "POST", path, Some("{}".into()))
}

pub(crate) fn post_json(
    ep: &Endpoint,
    path: &str,
    body: &impl serde::Serialize,
) -> Result<String, String> {
    let b = serde_json::to_string(body).map_err(|e| e.to_string())?;
    request(ep, "POST", path, Some(b))
}

fn request(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (status, text) = rt.block_on(exchange(ep, method, path, body))?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {}", text.trim_end()))
    }
}

async fn exchange(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(hyper::StatusCode, String), String> {
    let unreachable = |e: std::io::Error| {
        format!(
            "{}: {e} (is `kiln serve` running, and may this user use its state_dir?)",
            ep.describe()
        )
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "kiln");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    if let Endpoint::Tcp { token, .. } = ep {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = match ep {
        Endpoint::Socket(p) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .map_err(unreachable)?;
            send(TokioIo::new(s), req).await?
        }
        Endpoint::Tcp { port, .. } => {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .map_err(unreachable)?;
            send(TokioIo::new(s), req).await?
        }
    };
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

async fn send<T>(
    io: T,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx.send_request(req).await.map_err(|e| e.to_string())
}
