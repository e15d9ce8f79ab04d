//! One kiln per network and per state: a DHCP server already on the
//! interface (real dnsmasq) is refused at start with the reason; systemd's
//! watchdog is pinged only while the store answers.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{self, Net};
use common::{have, skip_unless, Kiln, Lab, LoPorts, Ports};

const FULL: &str = "interface: br0\nserver_address: 10.96.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\ndhcp:\n  mode: full\n  subnet: 10.96.0.0/24\n  range: [10.96.0.100, 10.96.0.200]\n";

/// dnsmasq as another DHCP server on br0 in namespace `ns` (no DNS: port 0),
/// its lease and pid files in `dir`.
fn dnsmasq(ns: &str, dir: &std::path::Path, pid: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "dnsmasq", "--no-daemon", "--port=0"])
        .args([
            "--conf-file=/dev/null",
            "--interface=br0",
            "--bind-interfaces",
        ])
        .arg("--dhcp-range=10.96.0.50,10.96.0.60,1h")
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join("dnsmasq.leases").display()
        ))
        .arg(format!("--pid-file={}", dir.join(pid).display()));
    c
}

#[test]
fn a_dhcp_server_already_on_the_interface_is_refused() {
    if netns::skip(&[]) || skip_unless(have("dnsmasq"), "dnsmasq (dnsmasq-base)") {
        return;
    }
    let net = Net::new("dg", "10.96.0.1/24");
    let lab = Lab::new(FULL, "machines: []\n");
    let mut other = dnsmasq(&net.server, lab.path(), "dnsmasq.pid")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let ss =
            netns::sh(&["ip", "netns", "exec", &net.server, "ss", "-lunp"]).unwrap_or_default();
        if ss.contains(":67 ") && ss.contains("dnsmasq") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = lab.config();
    let out = Command::new("ip")
        .args(["netns", "exec", &net.server])
        .arg(common::kiln_bin())
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let _ = other.kill();
    let _ = other.wait();
    assert!(
        !out.status.success(),
        "kiln shared port 67 with dnsmasq: {text}"
    );
    assert!(
        text.contains("another DHCP server already listens there"),
        "{text}"
    );
    // With dnsmasq gone, kiln owns the port; a DHCP server started after it
    // cannot bind beside it.
    let mut k = Kiln::start(&lab.config(), Some(&net.server));
    let late = dnsmasq(&net.server, lab.path(), "dnsmasq2.pid")
        .output()
        .unwrap();
    assert!(!late.status.success(), "dnsmasq bound port 67 beside kiln");
    k.stop();
}

#[test]
fn the_watchdog_is_pinged_after_store_checks() {
    let ports = Ports::any();
    let lab = Lab::new(
        &format!("{}state_dir: ./state\n", ports.lo_yaml()),
        "machines: []\n",
    );
    let sock_path = lab.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut k = Kiln::start_env(
        &lab.config(),
        None,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut got = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    while t0.elapsed() < Duration::from_secs(5)
        && got
            .iter()
            .filter(|m: &&String| m.contains("WATCHDOG=1"))
            .count()
            < 3
    {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{got:?}"
    );
    k.stop();
    // The unit asks for it.
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/kiln.service"))
            .unwrap();
    assert!(unit.contains("WatchdogSec="), "{unit}");
}

#[test]
fn a_patch_that_parses_but_cannot_apply_is_found_at_start_and_on_reload() {
    let ports = Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nclusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n",
        ports.lo_yaml()
    );
    let lab = Lab::new(
        &yaml,
        "machines:\n  - {mac: 52:54:00:aa:00:01, hostname: cp-1, profile: controlplane}\n",
    );
    // JSON6902 cannot apply to a multi-document (v1.13) config.
    std::fs::write(
        lab.path().join("json-patch.yaml"),
        "- op: add\n  path: /machine/install/disk\n  value: /dev/nvme0n1\n",
    )
    .unwrap();
    let profile = lab.path().join("profiles/controlplane.yaml");
    let good = std::fs::read_to_string(&profile).unwrap();
    let bad = format!("{good}patches: [../json-patch.yaml]\n");
    std::fs::write(&profile, &bad).unwrap();
    let cfg = lab.config();
    let (ok, out) = common::run_kiln(None, &["serve", "--config", cfg.to_str().unwrap()]);
    assert!(!ok, "served a config that cannot render: {out}");
    assert!(out.contains("cp-1") && out.contains("JSON6902"), "{out}");
    // Good at start; the same mistake on reload keeps the last good inventory.
    std::fs::write(&profile, &good).unwrap();
    let mut k = Kiln::start(&cfg, None);
    std::fs::write(&profile, &bad).unwrap();
    k.signal(libc::SIGHUP);
    k.wait_for(
        "reload refused, keeping the last good inventory",
        Duration::from_secs(10),
    );
    assert!(k.logs().contains("cp-1"), "{}", k.logs());
    k.stop();
}
