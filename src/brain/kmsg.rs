//! Each machine's kernel log, as Talos streams it (`talos.logging.kernel=` on
//! the PXE line, `KmsgLogConfig` in the config): kept per machine under
//! `state_dir/kmsg/<mac>.log` (0600), bounded on disk (one rotation at
//! [`MAX_FILE`], so at most twice that per machine) and per line.

use std::io::Write;
use std::path::PathBuf;

use crate::model::mac::Mac;

/// Bytes per log file before it rotates to `.1`.
pub(crate) const MAX_FILE: u64 = 1 << 20;
/// Bytes kept of one line.
pub(crate) const MAX_LINE: usize = 4096;

pub(crate) struct KernelLogs {
    dir: PathBuf,
    lock: std::sync::Mutex<()>,
}

impl KernelLogs {
    pub(crate) fn new(state_dir: &std::path::Path) -> KernelLogs {
        KernelLogs {
            dir: state_dir.join("kmsg"),
            lock: std::sync::Mutex::new(()),
        }
    }

    fn path(&self, mac: &Mac) -> PathBuf {
        self.dir.join(format!("{}.log", mac.hyphenated()))
    }

    /// One line of `mac`'s kernel log.
    pub(crate) fn append(&self, mac: &Mac, line: &str) -> std::io::Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(mac);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_FILE) {
            std::fs::rename(&path, path.with_extension("log.1"))?;
        }
        let mut line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let mut f = crate::model::files::open_private_append(&path)?;
        f.write_all(format!("{line}\n").as_bytes())
    }

    /// `mac`'s lines from the `since`-th on (older file first), and the count.
    pub(crate) fn read(&self, mac: &Mac, since: usize) -> (Vec<String>, usize) {
        let path = self.path(mac);
        let mut all: Vec<String> = Vec::new();
        for p in [path.with_extension("log.1"), path] {
            if let Ok(t) = std::fs::read_to_string(&p) {
                all.extend(t.lines().map(String::from));
            }
        }
        let n = all.len();
        (all.into_iter().skip(since).collect(), n)
    }
}

/// One JSON line as Talos's jsonLinesSender writes it (`msg`, `talos-time`,
/// `talos-level`, kmsg's `facility`, `priority`, `seq`, `clock`) in one
/// human line: `TIME LEVEL FACILITY: MSG`. None: not such a line.
pub(crate) fn format(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let msg = v.get("msg")?.as_str()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-");
    Some(format!(
        "{} {} {}: {}",
        s("talos-time"),
        s("talos-level"),
        s("facility"),
        redact(msg.trim_end())
    ))
}

/// The kernel prints its command line, and kiln's boot token is on it
/// (`talos.config=...?token=...`): the value never reaches the log.
pub(crate) fn redact(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("token=") {
        out.push_str(&rest[..i + 6]);
        out.push_str("<redacted>");
        rest = &rest[i + 6..];
        let end = rest
            .find(|c: char| c == '&' || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talos_json_lines_become_one_line_each_and_files_stay_bounded() {
        let l = r#"{"clock":1234,"facility":"kern","msg":"Linux version 6.12\n","priority":"info","seq":1,"talos-level":"info","talos-time":"2026-12-02T10:00:00.1Z"}"#;
        assert_eq!(
            format(l).unwrap(),
            "2026-12-02T10:00:00.1Z info kern: Linux version 6.12"
        );
        assert_eq!(format("not json"), None);
        let cmd = r#"{"msg":"Kernel command line: talos.config=http://k/config/m?token=abcdef0123&uuid=x other=token=zz","talos-time":"t","talos-level":"info","facility":"kern"}"#;
        assert_eq!(format(cmd).unwrap(), "t info kern: Kernel command line: talos.config=http://k/config/m?token=<redacted>&uuid=x other=token=<redacted>");
        let d = tempfile::tempdir().unwrap();
        let k = KernelLogs::new(d.path());
        let m: Mac = "52:54:00:00:00:01".parse().unwrap();
        let big = "x".repeat(MAX_LINE * 2);
        for _ in 0..600 {
            k.append(&m, &big).unwrap();
        }
        let (lines, n) = k.read(&m, 0);
        assert_eq!(lines.len(), n);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
        let on_disk: u64 = std::fs::read_dir(d.path().join("kmsg"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 2 * MAX_FILE + MAX_LINE as u64 + 1, "{on_disk}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.path().join("kmsg/52-54-00-00-00-01.log"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
