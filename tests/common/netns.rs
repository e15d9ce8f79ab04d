//! Network namespaces built by a test and torn down on drop: a "server" namespace
//! holding a bridge with kiln's address, and client namespaces each wired to the
//! bridge by a veth pair. Traffic never leaves these namespaces.

use std::process::{Command, Stdio};

use super::{have, is_root, skip_unless};

pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) {
    if let Err(e) = sh(args) {
        panic!("{e}");
    }
}

/// Whether namespaces can be made here (root, iproute2, kernel support).
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        if !is_root() || !have("ip") {
            return false;
        }
        let probe = format!("kiln-probe-{}", std::process::id());
        let ok = sh(&["ip", "netns", "add", &probe]).is_ok();
        let _ = sh(&["ip", "netns", "del", &probe]);
        ok
    })
}

/// Skip (or fail in CI) unless namespaces and `tools` are available.
pub fn skip(tools: &[&str]) -> bool {
    if skip_unless(available(), "root and network namespaces (ip netns)") {
        return true;
    }
    for t in tools {
        if skip_unless(have(t), &format!("tool {t}")) {
            return true;
        }
    }
    false
}

pub struct Net {
    pub server: String,
    pub clients: Vec<String>,
    tag: String,
}

impl Net {
    /// `tag` must be short (it names interfaces, 15 characters at most).
    pub fn new(tag: &str, server_cidr: &str) -> Net {
        let tag = format!("{tag}{}", std::process::id() % 10000);
        let server = format!("ks-{tag}");
        // The namespace gets its own resolv.conf before any `ip netns exec`, so
        // nothing run inside can touch the host's.
        make_resolv(&server);
        let _ = sh(&["ip", "netns", "del", &server]);
        must(&["ip", "netns", "add", &server]);
        must(&["ip", "-n", &server, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &server, "link", "add", "br0", "type", "bridge"]);
        must(&[
            "ip",
            "-n",
            &server,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ]);
        must(&[
            "ip",
            "-n",
            &server,
            "addr",
            "add",
            server_cidr,
            "dev",
            "br0",
        ]);
        must(&["ip", "-n", &server, "link", "set", "br0", "up"]);
        Net {
            server,
            clients: Vec::new(),
            tag,
        }
    }

    /// A client namespace whose `eth0` (with `mac`) is on the bridge.
    pub fn add_client(&mut self, mac: &str) -> String {
        let i = self.clients.len();
        let ns = format!("kc{i}-{}", self.tag);
        make_resolv(&ns);
        let _ = sh(&["ip", "netns", "del", &ns]);
        must(&["ip", "netns", "add", &ns]);
        let host_end = format!("v{i}{}", self.tag);
        must(&[
            "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must(&["ip", "link", "set", &host_end, "netns", &self.server]);
        must(&[
            "ip",
            "-n",
            &self.server,
            "link",
            "set",
            &host_end,
            "master",
            "br0",
        ]);
        must(&["ip", "-n", &self.server, "link", "set", &host_end, "up"]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "address", mac]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.clients.push(ns.clone());
        ns
    }

    /// [`add_client`](Self::add_client) with `cidr` on its `eth0`: a host
    /// with a fixed address on the bridge (another kiln, a relay, a tool).
    pub fn add_host(&mut self, mac: &str, cidr: &str) -> String {
        let ns = self.add_client(mac);
        must(&["ip", "-n", &ns, "addr", "add", cidr, "dev", "eth0"]);
        ns
    }

    /// A tap device on the bridge for a QEMU guest.
    pub fn add_tap(&self, name: &str) {
        must(&[
            "ip",
            "-n",
            &self.server,
            "tuntap",
            "add",
            "dev",
            name,
            "mode",
            "tap",
        ]);
        must(&[
            "ip",
            "-n",
            &self.server,
            "link",
            "set",
            name,
            "master",
            "br0",
        ]);
        must(&["ip", "-n", &self.server, "link", "set", name, "up"]);
    }
}

fn make_resolv(ns: &str) {
    let d = format!("/etc/netns/{ns}");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(format!("{d}/resolv.conf"), "# kiln test namespace\n").unwrap();
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.clients.iter().chain(std::iter::once(&self.server)) {
            // Kill anything still running inside, then remove the namespace.
            if let Ok(pids) = sh(&["ip", "netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    let _ = sh(&["kill", "-9", pid]);
                }
            }
            let _ = sh(&["ip", "netns", "del", ns]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
    }
}

/// Move the calling thread (only) into network namespace `ns`: sockets it
/// opens from now on live there.
pub fn enter(ns: &str) {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    let f = std::fs::File::open(&path).unwrap();
    // SAFETY: setns on this thread only, with a namespace fd we opened.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}");
}

/// Create a UDP socket inside namespace `ns` (on a helper thread that enters it);
/// the socket stays in that namespace wherever it is used from.
pub fn udp_socket_in(ns: &str, bind: std::net::SocketAddr) -> std::net::UdpSocket {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        // Limited broadcast (255.255.255.255) needs an interface, as DHCP clients do.
        s.bind_device(Some(b"eth0")).unwrap();
        s.bind(&bind.into()).unwrap();
        std::net::UdpSocket::from(s)
    })
    .join()
    .unwrap()
}

/// One DHCP exchange by busybox udhcpc in `ns` (extra `args`: vendor class,
/// options): what the server bound, as udhcpc's environment. Our hook script
/// (in `dir`) only records it: it configures nothing and never touches
/// resolv.conf (the host's, through a namespace).
pub fn udhcpc(
    dir: &std::path::Path,
    ns: &str,
    args: &[&str],
) -> Option<std::collections::HashMap<String, String>> {
    let script = dir.join("dhcp-hook.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && env > \"$OUT\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Never the default hook (it would rewrite the host's resolv.conf through
    // the namespace): a caller cannot name another script, and ours comes last.
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("-s") || a.starts_with("--script")),
        "udhcpc runs only with kiln's recording hook: {args:?}"
    );
    assert!(
        std::path::Path::new(&format!("/etc/netns/{ns}/resolv.conf")).exists(),
        "{ns} has no resolv.conf of its own"
    );
    let out = dir.join(format!("bound-{ns}"));
    let _ = std::fs::remove_file(&out);
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "env"])
        .arg(format!("OUT={}", out.display()))
        .args(["busybox", "udhcpc"])
        .args([
            "-f", "-q", "-n", "-i", "eth0", "-t", "3", "-T", "1", "-A", "1",
        ])
        .args(args)
        .arg("-s")
        .arg(&script)
        .output()
        .unwrap();
    if !st.status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Every DHCP reply `sock` receives until `wait` passes without one: the
/// raw bytes (option order matters) and the parsed message.
pub fn dhcp_replies(
    sock: &std::net::UdpSocket,
    wait: std::time::Duration,
) -> Vec<(Vec<u8>, dhcproto::v4::Message)> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if let Some(m) = kiln::edge::dhcp::packet::parse_reply(&buf[..n]) {
            out.push((buf[..n].to_vec(), m));
        }
    }
    out
}
