//! The one way tests run curl: `-sS --max-time 10`, on the host or inside a
//! test's network namespace, the HTTP status taken from `-w` and split off
//! the end of stdout.

use std::process::Command;

/// What curl got.
#[derive(Debug)]
pub struct Curl {
    /// The HTTP status (`000` when there was no HTTP answer, e.g. TFTP).
    pub code: String,
    pub body: Vec<u8>,
    pub stderr: String,
    /// curl's own exit status was 0.
    pub ok: bool,
}

impl Curl {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// curl ARGS on the host.
pub fn curl(args: &[&str]) -> Curl {
    curl_via(&[], args)
}

/// curl ARGS inside network namespace `ns`.
pub fn curl_in(ns: &str, args: &[&str]) -> Curl {
    curl_via(&["ip", "netns", "exec", ns], args)
}

/// curl ARGS run through `prefix` (e.g. `setpriv` as another user).
pub fn curl_via(prefix: &[&str], args: &[&str]) -> Curl {
    let mut c = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("curl");
            c
        }
        None => Command::new("curl"),
    };
    let o = c
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let mut out = o.stdout;
    let split = out.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&out[split..]).trim().to_string();
    out.truncate(split);
    Curl {
        code,
        body: out,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        ok: o.status.success(),
    }
}
