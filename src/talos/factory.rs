//! The Talos Image Factory's HTTP API, as `kiln assets pull` uses it
//! (image-factory internal/frontend/http): `POST /schematics` registers a
//! schematic and answers its ID; `GET /image/<id>/<version>/<file>` serves a
//! boot asset, maybe through a redirect to a CDN, with HTTP Range.
//! Downloads resume from a `.part` file and land by rename, whole or not at all.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("{url}: {why}")]
    Http { url: String, why: String },
    #[error("{url}: the factory answered schematic ID {got}, kiln computed {want} (is {url} an Image Factory?)")]
    OtherId {
        url: String,
        got: String,
        want: String,
    },
    #[error("{}: {why}", path.display())]
    Io { path: PathBuf, why: std::io::Error },
}

fn http(url: &str, why: impl std::fmt::Display) -> FactoryError {
    FactoryError::Http {
        url: url.to_string(),
        why: why.to_string(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FactoryError + '_ {
    move |why| FactoryError::Io {
        path: path.to_path_buf(),
        why,
    }
}

/// A client for one factory (`base`, e.g. `https://factory.talos.dev`).
pub struct Factory {
    base: String,
    agent: ureq::Agent,
}

/// What a download reports as it goes: (bytes so far, total if known).
pub trait Progress {
    fn start(&mut self, name: &str, resumed_at: u64, total: Option<u64>);
    fn advance(&mut self, bytes: u64);
    fn finish(&mut self, name: &str, sha256: &str, size: u64);
}

/// How a download ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub sha256: String,
    pub size: u64,
    /// Bytes that were already on disk from an interrupted download.
    pub resumed_from: u64,
}

impl Factory {
    pub fn new(base: &str) -> Factory {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            // A stalled transfer fails instead of hanging; a slow one goes on.
            .timeout_recv_body(None)
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .max_redirects(10)
            .build()
            .into();
        Factory {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// `POST /schematics`: register `yaml`; the factory's ID must be `want`.
    pub fn register(&self, yaml: &str, want: &str) -> Result<(), FactoryError> {
        let url = format!("{}/schematics", self.base);
        let mut r = self
            .agent
            .post(&url)
            .header("Content-Type", "application/yaml")
            .send(yaml)
            .map_err(|e| http(&url, e))?;
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| http(&url, e))?;
        if !(200..300).contains(&status) {
            return Err(http(&url, format!("HTTP {status}: {}", body.trim())));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| http(&url, format!("not the factory's JSON answer ({e})")))?;
        let got = v["id"].as_str().unwrap_or_default();
        if got != want {
            return Err(FactoryError::OtherId {
                url,
                got: got.to_string(),
                want: want.to_string(),
            });
        }
        Ok(())
    }

    /// The URL of a boot asset.
    pub fn asset_url(&self, id: &str, version: &str, file: &str) -> String {
        format!("{}/image/{id}/{version}/{file}", self.base)
    }

    /// Download `url` to `dest`: resume `dest.part` where an interrupted
    /// download left it (Range; a 206 must start exactly there, else the
    /// part is dropped and the file fetched whole), then fsync and rename
    /// into place.
    pub fn download(
        &self,
        url: &str,
        dest: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Fetched, FactoryError> {
        let part = dest.with_extension(match dest.extension() {
            Some(e) => format!("{}.part", e.to_string_lossy()),
            None => "part".into(),
        });
        let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        // At most one retry from zero: a stale part, or a range not honoured.
        for _ in 0..2 {
            let mut req = self.agent.get(url);
            if have > 0 {
                req = req.header("Range", &format!("bytes={have}-"));
            }
            let mut r = req.call().map_err(|e| http(url, e))?;
            let status = r.status().as_u16();
            let range = r
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let from = match (status, range.as_deref().and_then(content_range)) {
                (200, _) => 0,
                (206, Some((start, _))) if start == have => have,
                // The part already holds the whole file.
                (416, Some((_, Some(total)))) if have > 0 && total == have => {
                    return self.finish(&part, dest, have, have, progress);
                }
                (206 | 416, _) if have > 0 => {
                    std::fs::remove_file(&part).map_err(io(&part))?;
                    have = 0;
                    continue;
                }
                (s, _) => return Err(http(url, format!("HTTP {s}"))),
            };
            let total = r
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|n| n + from);
            let name = file_name(dest);
            progress.start(&name, from, total);
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(from > 0)
                .truncate(from == 0)
                .open(&part)
                .map_err(io(&part))?;
            let mut body = r.body_mut().with_config().limit(u64::MAX).reader();
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = from;
            loop {
                let n = body.read(&mut buf).map_err(|e| http(url, e))?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n]).map_err(io(&part))?;
                got += n as u64;
                progress.advance(got);
            }
            if let Some(t) = total {
                if got != t {
                    return Err(http(url, format!("transfer ended at {got} of {t} bytes (run kiln assets pull again to resume)")));
                }
            }
            f.sync_all().map_err(io(&part))?;
            drop(f);
            return self.finish(&part, dest, got, from, progress);
        }
        Err(http(
            url,
            "the server does not honour ranges; giving up after a fresh start",
        ))
    }

    fn finish(
        &self,
        part: &Path,
        dest: &Path,
        size: u64,
        from: u64,
        progress: &mut dyn Progress,
    ) -> Result<Fetched, FactoryError> {
        let sha256 = sha256_file(part)?;
        std::fs::rename(part, dest).map_err(io(dest))?;
        progress.finish(&file_name(dest), &sha256, size);
        Ok(Fetched {
            sha256,
            size,
            resumed_from: from,
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `bytes START-END/TOTAL` or `bytes */TOTAL` → (START, TOTAL); START is 0
/// for the `*` form.
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let total = total.trim().parse::<u64>().ok();
    if span.trim() == "*" {
        return Some((0, total));
    }
    let start = span.split_once('-')?.0.trim().parse::<u64>().ok()?;
    Some((start, total))
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, FactoryError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::model::hex::encode(&h.finalize()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_ranges() {
        assert_eq!(
            super::content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(super::content_range("bytes */200"), Some((0, Some(200))));
        assert_eq!(super::content_range("items 1-2/3"), None);
    }
}
