//! Shared test harness: skip rules, the kiln process, network namespaces.
#![allow(dead_code)]

pub mod browser;
pub mod curl;
pub mod etcd;
pub mod factory;
pub mod guest;
pub mod kube;
pub mod netns;
pub mod shared;
pub mod talos;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tests that need root, namespaces, QEMU or outside tools skip with a message
/// where those are missing, except in CI (`KILNTEST_REQUIRE_ALL=1`),
/// where a missing prerequisite is a failure: CI must not skip.
pub fn skip_unless(ok: bool, what: &str) -> bool {
    if ok {
        return false;
    }
    if std::env::var("KILNTEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("prerequisite missing in CI: {what}");
    }
    eprintln!("SKIPPED: {what}");
    true
}

/// Poll `f` until it holds; the test fails, naming `what`, once `within`
/// passes. Returns how long it took.
pub fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "never within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An unused TCP/UDP port for a socket this test process binds itself (the
/// stand-in Talos nodes and Kubernetes API, which all share one port on
/// their own addresses), never the same one twice in a test process (tests
/// run in parallel and bind their ports later). Never handed to another
/// process: kiln binds port 0 and reports what it got. Picked below the kernel's
/// ephemeral range (`ip_local_port_range`), so no outgoing connection or
/// port-0 bind (an etcd member's client, a TFTP transfer, curl) can take it
/// between the pick and the bind: only another test's pick could, and the
/// process-wide list rules that out.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12000 {
        (10000u16, low - 1)
    } else {
        (low, 65000)
    };
    let span = u32::from(to - from) + 1;
    // A different start per process, so successive test binaries spread out.
    let mut n = std::process::id().wrapping_mul(7919) % span;
    loop {
        let p = from + (n % span) as u16;
        n = n.wrapping_add(7);
        let mut given = GIVEN.lock().unwrap();
        if given.contains(&p) {
            continue;
        }
        let free = std::net::TcpListener::bind(("0.0.0.0", p)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", p)).is_ok();
        if free {
            given.push(p);
            return p;
        }
    }
}

pub fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

/// A running `kiln serve`, logging to a file; killed on drop.
pub struct Kiln {
    pub child: Child,
    pub log: PathBuf,
    /// The ports it bound, from `state_dir/ports.json`.
    pub ports: Ports,
}

/// The TCP ports process `pid` listens on (`ss -ltnp`), sorted.
pub fn tcp_listeners(pid: u32) -> Vec<u16> {
    let out = Command::new("ss")
        .args(["-Hltnp"])
        .output()
        .expect("ss (iproute2)");
    let me = format!("pid={pid},");
    let mut ports: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&me))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// The ports the kiln serving `config` bound, as it reports them in
/// `state_dir/ports.json`.
pub fn bound_ports(config: &Path) -> Ports {
    let cfg = kiln::model::config::Config::load(config).expect("the config kiln runs");
    let path = cfg.state_dir.join("ports.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// After the first start on port 0, write the ports kiln bound into the
/// config, so a restart keeps them (the URLs in configs already served, the
/// stand-in nodes' events sink).
fn pin_ports(config: &Path, p: &Ports) {
    let text = std::fs::read_to_string(config).unwrap();
    let Some(line) = text
        .lines()
        .find(|l| l.starts_with("ports: {") && l.contains("dhcp: 0"))
    else {
        return;
    };
    let pinned = p.lo_yaml();
    let pinned = pinned.lines().find(|l| l.starts_with("ports: {")).unwrap();
    std::fs::write(config, text.replace(line, pinned)).unwrap();
}

impl Kiln {
    /// Start kiln (inside `netns` if given) and wait until it says it is ready.
    pub fn start(config: &Path, netns: Option<&str>) -> Kiln {
        let filter =
            std::env::var("KILNTEST_LOG").unwrap_or_else(|_| "info,tower_http=debug".into());
        Kiln::start_logging(config, netns, &filter)
    }

    /// [`Kiln::start`] with `KILN_LOG` set to `filter`.
    pub fn start_logging(config: &Path, netns: Option<&str>, filter: &str) -> Kiln {
        Kiln::start_env(config, netns, &[("KILN_LOG", filter)])
    }

    /// [`Kiln::start`] with extra environment (e.g. systemd's NOTIFY_SOCKET).
    pub fn start_env(config: &Path, netns: Option<&str>, env: &[(&str, &str)]) -> Kiln {
        let filter =
            std::env::var("KILNTEST_LOG").unwrap_or_else(|_| "info,tower_http=debug".into());
        let log = config.with_extension(format!("log.{}", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(kiln_bin());
                c
            }
            None => Command::new(kiln_bin()),
        };
        cmd.arg("serve").arg("--config").arg(config);
        cmd.env("KILN_LOG", filter)
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("spawn kiln");
        let mut k = Kiln {
            child,
            log,
            ports: Ports::default(),
        };
        k.wait_for("kiln ready", Duration::from_secs(20));
        k.ports = bound_ports(config);
        pin_ports(config, &k.ports);
        k
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            if self.logs().contains(needle) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("kiln exited ({st}) before {needle:?}:\n{}", self.logs());
            }
            if t0.elapsed() > timeout {
                panic!("timed out waiting for {needle:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `needle` has appeared in the log `n` times.
    pub fn wait_for_count(&mut self, needle: &str, n: usize, timeout: Duration) {
        let t0 = Instant::now();
        while self.logs().matches(needle).count() < n {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "kiln exited ({st}) before {needle:?} x{n}:\n{}",
                    self.logs()
                );
            }
            if t0.elapsed() > timeout {
                panic!("timed out waiting for {needle:?} x{n}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Kiln {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- kiln log ---\n{}", self.logs());
        }
    }
}

/// kiln's own port set (`kiln::model::config::Ports`), picked free on loopback.
pub use kiln::model::config::Ports;

/// Loopback ports for a kiln on `lo` (and the Talos API port it dials).
pub trait LoPorts {
    /// Port 0 for every listener kiln opens: kiln binds what the kernel
    /// gives and reports it ([`Kiln::ports`]). Only `talos_api`, where the
    /// stand-in nodes of this process listen and kiln dials, is picked here.
    fn any() -> Self;
    /// The head of a kiln.yaml on loopback: interface, address and ports.
    fn lo_yaml(&self) -> String;
}

impl LoPorts for Ports {
    fn any() -> Ports {
        Ports {
            dhcp: 0,
            proxy_dhcp: 0,
            tftp: 0,
            http: 0,
            events: 0,
            kmsg: 0,
            api: 0,
            talos_api: free_port(),
        }
    }

    fn lo_yaml(&self) -> String {
        format!(
            "interface: lo\nserver_address: 127.0.0.1\nports: {{dhcp: {}, proxy_dhcp: {}, tftp: {}, http: {}, events: {}, kmsg: {}, api: {}, talos_api: {}}}\n",
            self.dhcp, self.proxy_dhcp, self.tftp, self.http, self.events, self.kmsg, self.api, self.talos_api
        )
    }
}

/// Three control planes and a worker with fixed loopback addresses
/// ([`lo_ip`] 1-3 and 11), for the tests whose stand-in nodes bind them.
pub const LOOPBACK_MACHINES: &str = "machines:\n  - {mac: 52:54:00:aa:00:01, hostname: cp-1, profile: controlplane, ip: 127.0.1.1}\n  - {mac: 52:54:00:aa:00:02, hostname: cp-2, profile: controlplane, ip: 127.0.1.2}\n  - {mac: 52:54:00:aa:00:03, hostname: cp-3, profile: controlplane, ip: 127.0.1.3}\n  - {mac: 52:54:00:aa:00:11, hostname: w-1, profile: worker, ip: 127.0.1.11}\n";

/// Machine `n`'s address in [`LOOPBACK_MACHINES`].
pub fn lo_ip(n: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 1, n)
}

/// A scratch lab: profiles, machines and a kiln.yaml in a temp dir.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

pub const WORKER_PROFILE: &str = "role: worker\ntalos_version: v1.13.9\nconsole: [console=ttyS0]\n";
pub const CP_PROFILE: &str =
    "role: controlplane\ntalos_version: v1.13.9\nconsole: [console=ttyS0]\n";

impl Lab {
    pub fn new(kiln_yaml: &str, machines: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("profiles")).unwrap();
        std::fs::write(p.join("profiles/worker.yaml"), WORKER_PROFILE).unwrap();
        std::fs::write(p.join("profiles/controlplane.yaml"), CP_PROFILE).unwrap();
        std::fs::create_dir_all(p.join("boot-assets/talos/v1.13.9")).unwrap();
        std::fs::write(
            p.join("boot-assets/talos/v1.13.9/vmlinuz-amd64"),
            vec![0x4b; 4096],
        )
        .unwrap();
        std::fs::write(
            p.join("boot-assets/talos/v1.13.9/initramfs-amd64.xz"),
            (0..100_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        std::fs::write(p.join("machines.yaml"), machines).unwrap();
        std::fs::write(p.join("kiln.yaml"), kiln_yaml).unwrap();
        Lab { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("kiln.yaml")
    }
}

/// Run `kiln ARGS` (in `dir` if given): (success, stdout + stderr).
pub fn run_kiln(dir: Option<&Path>, args: &[&str]) -> (bool, String) {
    let mut c = Command::new(kiln_bin());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    outcome(c.args(args))
}

/// `kiln ARGS --config <lab's>` inside network namespace `ns` (its local
/// API, a daemon in that namespace): (success, stdout + stderr).
pub fn run_kiln_in(ns: &str, lab: &Lab, args: &[&str]) -> (bool, String) {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(kiln_bin()).args(args);
    outcome(c.arg("--config").arg(lab.config()))
}

fn outcome(c: &mut Command) -> (bool, String) {
    let o = c.output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

impl Lab {
    /// Stand-in iPXE binaries under `./ipxe` (the config's `ipxe_dirs`), for labs
    /// that never boot real firmware.
    pub fn ipxe_stubs(&self) {
        std::fs::create_dir_all(self.path().join("ipxe")).unwrap();
        for f in ["undionly.kpxe", "ipxe.efi"] {
            std::fs::write(self.path().join("ipxe").join(f), b"ipxe").unwrap();
        }
    }
}

/// Play a PXE client's proxyDHCP request (port 4011 style, to kiln's
/// `proxy_dhcp` port on loopback) from `ip`, as the machine `mac` does in
/// proxy mode: kiln then knows `ip` is `mac`'s. Waits for kiln's ACK.
pub fn dhcp_claim(proxy_port: u16, mac: &str, ip: std::net::Ipv4Addr) {
    assert!(
        dhcp_answered(proxy_port, mac, ip, Duration::from_secs(20)),
        "kiln never answered {mac}'s proxyDHCP request from {ip}"
    );
}

/// [`dhcp_claim`]'s request, resent until kiln answers or `within` passes:
/// whether it answered.
pub fn dhcp_answered(proxy_port: u16, mac: &str, ip: std::net::Ipv4Addr, within: Duration) -> bool {
    use dhcproto::v4::{Architecture, DhcpOption, MessageType};
    let mac: kiln::model::mac::Mac = mac.parse().unwrap();
    let sock = std::net::UdpSocket::bind((ip, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let opts = vec![
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture(7)),
        DhcpOption::ClientMachineIdentifier(vec![0; 17]),
    ];
    let req = kiln::edge::dhcp::packet::build_request(mac, MessageType::Request, 0x4b11, opts);
    let t0 = Instant::now();
    while t0.elapsed() < within {
        sock.send_to(&req, ("127.0.0.1", proxy_port)).unwrap();
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if kiln::edge::dhcp::packet::parse_reply(&buf[..n]).is_some() {
                return true;
            }
        }
    }
    false
}

/// Every machine of [`LOOPBACK_MACHINES`] does proxyDHCP from its address.
pub fn claim_loopback_machines(proxy_port: u16) {
    for (mac, n) in [
        ("52:54:00:aa:00:01", 1),
        ("52:54:00:aa:00:02", 2),
        ("52:54:00:aa:00:03", 3),
        ("52:54:00:aa:00:11", 11),
    ] {
        dhcp_claim(proxy_port, mac, lo_ip(n));
    }
}

/// `/ipxe/<mac>` fetched with curl from `from`, as the machine's iPXE does.
pub fn script_from(http: u16, mac: &str, from: std::net::Ipv4Addr) -> String {
    let url = format!("http://127.0.0.1:{http}/ipxe/{}", mac.replace(':', "-"));
    curl::curl(&["--interface", &from.to_string(), &url]).text()
}

/// `promtool check metrics` (Debian's prometheus package) accepts `text`.
pub fn promtool_check(text: &str) {
    if skip_unless(have("promtool"), "promtool (Debian package prometheus)") {
        return;
    }
    use std::io::Write;
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The value of one series (`name{labels}` exactly as exposed; labels sorted
/// as the encoder writes them), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// GET `path` from the lab's kiln over its API socket (curl --unix-socket).
pub fn api_get(lab: &Lab, path: &str) -> String {
    let sock = lab.path().join("state/kiln.sock");
    curl::curl(&[
        "--unix-socket",
        &sock.to_string_lossy(),
        &format!("http://kiln{path}"),
    ])
    .text()
}
