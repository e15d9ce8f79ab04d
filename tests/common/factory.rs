//! A stand-in Talos Image Factory on loopback, written from the factory's
//! routes (image-factory internal/frontend/http): `POST /schematics` parses
//! the schematic (unknown fields rejected), computes its ID itself (sha256 of
//! the re-marshalled schematic: struct order, empty fields dropped,
//! `customization` always present) and answers `201 {"id": ...}`;
//! `GET|HEAD /image/<id>/<version>/<file>` answers 404 `schematic not found`
//! for an unregistered ID and otherwise redirects (302) to a CDN path, which
//! serves the bytes with HTTP Range. `cmdline-metal-<arch>` is Talos's
//! default line plus the schematic's `extraKernelArgs`. A file can be set to
//! drop the connection part-way once (an interrupted download) or to trickle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};

#[derive(Default)]
pub struct Inner {
    /// Registered schematics: id → the YAML the factory stored.
    pub schematics: BTreeMap<String, String>,
    /// Asset bytes by file name (`kernel-amd64`, `initramfs-amd64.xz`).
    pub files: BTreeMap<String, Vec<u8>>,
    /// Every request: "METHOD path [Range]".
    pub log: Vec<String>,
    /// File name → bytes after which the next GET drops the connection (once).
    pub interrupt: BTreeMap<String, usize>,
    /// File name → bytes sent per 50 ms (a slow link).
    pub slow: BTreeMap<String, usize>,
}

pub struct FakeFactory {
    pub addr: SocketAddr,
    pub inner: Arc<Mutex<Inner>>,
    _rt: tokio::runtime::Runtime,
}

fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

fn empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.values().all(empty),
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Bool(b) => !b,
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// schematic.Customization's fields, in struct order.
const CUSTOMIZATION: [&str; 7] = [
    "embeddedMachineConfiguration",
    "extraKernelArgs",
    "meta",
    "systemExtensions",
    "bootloader",
    "secureboot",
    "diskImage",
];

/// The factory's `Unmarshal` + `Marshal`: known fields only, struct order.
fn canonical(body: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_saphyr::from_str(body).map_err(|e| e.to_string())?;
    let v = if v.is_null() {
        serde_json::json!({})
    } else {
        v
    };
    let top = v.as_object().ok_or("not a mapping")?;
    for k in top.keys() {
        if !["owner", "overlay", "customization"].contains(&k.as_str()) {
            return Err(format!("field {k} not found in type schematic.Schematic"));
        }
    }
    let mut out = serde_json::Map::new();
    if let Some(o) = top.get("overlay").filter(|o| !empty(o)) {
        let mut m = serde_json::Map::new();
        m.insert("image".into(), o["image"].clone());
        m.insert("name".into(), o["name"].clone());
        if let Some(opts) = o.get("options").filter(|x| !empty(x)) {
            m.insert("options".into(), sorted(opts));
        }
        out.insert("overlay".into(), m.into());
    }
    let c = top
        .get("customization")
        .cloned()
        .unwrap_or(serde_json::json!({}));
    let mut cm = serde_json::Map::new();
    for k in CUSTOMIZATION {
        if let Some(x) = c.get(k).filter(|x| !empty(x)) {
            cm.insert(k.into(), x.clone());
        }
    }
    if let Some(obj) = c.as_object() {
        if let Some(k) = obj
            .keys()
            .find(|k| !CUSTOMIZATION.contains(&k.as_str()) && !c[*k].is_null())
        {
            return Err(format!(
                "field {k} not found in type schematic.Customization"
            ));
        }
    }
    out.insert("customization".into(), cm.into());
    let opts = serde_saphyr::ser_options! { indent_step: 4, compact_list_indent: false };
    serde_saphyr::to_string_with_options(&serde_json::Value::Object(out), opts)
        .map_err(|e| e.to_string())
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

type S = Arc<Mutex<Inner>>;

async fn create(State(s): State<S>, body: String) -> Response {
    s.lock().unwrap().log.push("POST /schematics".into());
    match canonical(&body) {
        Ok(text) => {
            let id = hex(text.as_bytes());
            s.lock().unwrap().schematics.insert(id.clone(), text);
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                format!("{{\"id\":\"{id}\"}}"),
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn image(
    State(s): State<S>,
    Path((id, version, file)): Path<(String, String, String)>,
) -> Response {
    let mut g = s.lock().unwrap();
    g.log.push(format!("GET /image/{id}/{version}/{file}"));
    if !g.schematics.contains_key(&id) {
        return (StatusCode::NOT_FOUND, "schematic not found").into_response();
    }
    // As the public factory does for its CDN.
    (
        StatusCode::FOUND,
        [("location", format!("/cdn/{id}/{version}/{file}"))],
    )
        .into_response()
}

fn default_cmdline(arch: &str) -> &'static str {
    if arch == "arm64" {
        "talos.platform=metal console=ttyAMA0 console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
    } else {
        "talos.platform=metal console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
    }
}

async fn cdn(
    State(s): State<S>,
    Path((id, _version, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut g = s.lock().unwrap();
    g.log.push(format!(
        "GET /cdn/{file} {}",
        range.clone().unwrap_or_default()
    ));
    let bytes = if let Some(arch) = file.strip_prefix("cmdline-metal-") {
        let schematic: serde_json::Value =
            serde_saphyr::from_str(&g.schematics[&id]).unwrap_or_default();
        let mut line = default_cmdline(arch).to_string();
        for a in schematic["customization"]["extraKernelArgs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            line.push(' ');
            line.push_str(a.as_str().unwrap_or_default());
        }
        line.into_bytes()
    } else {
        match g.files.get(&file) {
            Some(b) => b.clone(),
            None => return (StatusCode::NOT_FOUND, "asset not found").into_response(),
        }
    };
    let total = bytes.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (status, from) = match start {
        Some(n) if n >= total => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [("content-range", format!("bytes */{total}"))],
            )
                .into_response()
        }
        Some(n) => (StatusCode::PARTIAL_CONTENT, n),
        None => (StatusCode::OK, 0),
    };
    let body = bytes[from..].to_vec();
    let cut = g.interrupt.remove(&file);
    let slow = g.slow.get(&file).copied();
    drop(g);
    let mut resp_headers = vec![
        ("content-length", (total - from).to_string()),
        ("accept-ranges", "bytes".into()),
    ];
    if status == StatusCode::PARTIAL_CONTENT {
        resp_headers.push((
            "content-range",
            format!("bytes {from}-{}/{total}", total - 1),
        ));
    }
    let stream_body = match cut {
        // Promise the whole length, send part of it, then fail the stream:
        // the connection drops mid-transfer.
        Some(n) => {
            let first = body[..n.min(body.len())].to_vec();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                vec![Ok(first), Err(std::io::Error::other("interrupted"))];
            Body::from_stream(futures_util::stream::iter(chunks))
        }
        None => match slow {
            Some(rate) => {
                let chunks: Vec<Vec<u8>> = body.chunks(rate.max(1)).map(<[u8]>::to_vec).collect();
                let s = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
                    let c = it.next()?;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Some((Ok::<_, std::io::Error>(c), it))
                });
                Body::from_stream(s)
            }
            None => Body::from(body),
        },
    };
    let mut r = Response::builder().status(status);
    for (k, v) in resp_headers {
        r = r.header(k, v);
    }
    r.body(stream_body).unwrap()
}

impl FakeFactory {
    pub fn start(files: BTreeMap<String, Vec<u8>>) -> FakeFactory {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let inner: S = Arc::new(Mutex::new(Inner {
            files,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/schematics", post(create))
            .route("/image/{id}/{version}/{file}", get(image))
            .route("/cdn/{id}/{version}/{file}", get(cdn))
            .with_state(inner.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeFactory {
            addr,
            inner,
            _rt: rt,
        }
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn log(&self) -> Vec<String> {
        self.inner.lock().unwrap().log.clone()
    }
}
