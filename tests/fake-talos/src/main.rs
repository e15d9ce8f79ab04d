//! What Talos does on first boot that kiln sees, inside the acceptance test's
//! guests: read `talos.config=` and `talos.events.sink=` from the kernel
//! command line, fetch the config, check it is this machine's, publish the
//! lifecycle events, and (control planes) serve the Talos API on :50000 with a
//! server certificate from the OS CA in the config, accepting Bootstrap only
//! from `os:admin`. Control planes run a real etcd member (see etcd.rs), which
//! the Talos API's etcd calls act on. Every step is printed to the console
//! for the test to read.

mod etcd;

#[path = "../../common/talos.rs"]
#[allow(dead_code)]
mod talos;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use kiln::talos::proto::machine::machine_status_event::MachineStage;
use kiln::talos::secrets::{Bundle, CertAndKey, Certs};
use talos::ev;

fn say(s: &str) {
    println!("FAKE-TALOS: {s}");
}

fn arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Our address on the boot network: the one that routes to the events sink.
fn own_ip(sink: &str) -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect(sink).ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(v4) => Some(v4),
        _ => None,
    }
}

fn fetch(url: &str) -> Option<String> {
    for attempt in 1..=30 {
        match ureq::get(url).call() {
            Ok(mut r) => return r.body_mut().read_to_string().ok(),
            Err(e) => {
                say(&format!("config fetch attempt {attempt}: {e}"));
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    None
}

fn main() {
    let cmdline = std::env::var("FAKE_TALOS_CMDLINE")
        .unwrap_or_else(|_| std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let (Some(url), Some(sink)) = (
        arg(&cmdline, "talos.config"),
        arg(&cmdline, "talos.events.sink"),
    ) else {
        say("no talos.config= or talos.events.sink= on the kernel line");
        return;
    };
    let Some(ip) = own_ip(sink) else {
        say("no route to the events sink");
        return;
    };
    say(&format!("address {ip}"));
    let Some(body) = fetch(url) else {
        say("config-failed");
        return;
    };
    let docs = match kiln::model::yaml::from_yaml(&body) {
        Ok(d) => d,
        Err(e) => {
            say(&format!("config-unparsable {e}"));
            return;
        }
    };
    let v1 = &docs[0];
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k);
    let role = v1["machine"]["type"].as_str().unwrap_or("?").to_string();
    let hostname = kind("HostnameConfig")
        .and_then(|d| d["hostname"].as_str())
        .or(v1["machine"]["network"]["hostname"].as_str())
        .unwrap_or("?");
    let vip = kind("Layer2VIPConfig")
        .and_then(|d| d["name"].as_str())
        .unwrap_or("none");
    // As Talos at boot (config acquisition validates): a config whose legacy
    // fields conflict with its documents is refused.
    let conflicts = kiln::talos::conflicts::check(&docs);
    if !conflicts.is_empty() {
        let all: Vec<String> = conflicts.iter().map(|c| c.to_string()).collect();
        say(&format!("config-refused {}", all.join("; ")));
        return;
    }
    // The install disk: v1.14's UnattendedInstallConfig, else machine.install.
    let selector = kind("UnattendedInstallConfig")
        .and_then(|d| d["provisioning"]["diskSelector"]["match"].as_str())
        .and_then(|m| m.strip_prefix("disk.dev_path == "))
        .map(|q| q.trim_matches('"'));
    let disk = selector
        .or(v1["machine"]["install"]["disk"].as_str())
        .unwrap_or("none");
    if selector.is_some() && kind("KubeletConfig").is_none() {
        say("config-refused: a v1.14 config without its KubeletConfig");
        return;
    }
    let esink = kind("EventSinkConfig")
        .and_then(|d| d["endpoint"].as_str())
        .unwrap_or("none");
    say(&format!(
        "config role={role} hostname={hostname} vip={vip} disk={disk} sink={esink}"
    ));
    // As Talos's kmsg delivery: JSON lines to talos.logging.kernel (the
    // kernel line's, which KmsgLogConfig in the config must name too).
    let kmsg = kind("KmsgLogConfig").and_then(|d| d["url"].as_str());
    if let (Some(url), Some(want)) = (arg(&cmdline, "talos.logging.kernel"), kmsg) {
        if url != want {
            say(&format!(
                "kmsg: the config names {want}, the kernel line {url}"
            ));
        }
        let line = serde_json::json!({
            "clock": 1, "facility": "kern", "priority": "info", "seq": 1,
            "msg": format!("fake-talos: kernel log from {hostname}"),
            "talos-level": "info", "talos-time": "2026-12-02T00:00:00Z",
        });
        match std::net::TcpStream::connect(url.trim_start_matches("tcp://")) {
            Ok(mut s) => {
                let _ = std::io::Write::write_all(&mut s, format!("{line}\n").as_bytes());
                say("kmsg sent");
            }
            Err(e) => say(&format!("kmsg: {e}")),
        }
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sink_addr: SocketAddr = match sink.parse() {
        Ok(a) => a,
        Err(e) => {
            say(&format!("bad sink {sink}: {e}"));
            return;
        }
    };
    let publish = |events: Vec<prost_types::Any>, what: &str| match rt
        .block_on(talos::publish(sink_addr, ip, events))
    {
        Ok(()) => say(&format!("events {what}")),
        Err(e) => say(&format!("events {what} failed: {e}")),
    };
    publish(vec![ev::stage(MachineStage::Booting, false)], "booting");
    publish(
        vec![
            ev::install_start(),
            ev::stage(MachineStage::Installing, false),
        ],
        "installing",
    );
    publish(vec![ev::install_done()], "installed");

    let mut api = None;
    if role == "controlplane" {
        let ca = CertAndKey {
            crt: v1["machine"]["ca"]["crt"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            key: v1["machine"]["ca"]["key"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        let os = Bundle {
            certs: Certs {
                os: Some(ca),
                ..Default::default()
            },
            ..Default::default()
        };
        let shared = Arc::new(talos::Shared::default());
        let node = talos::start(
            &rt,
            hostname,
            SocketAddr::new(ip.into(), 50000),
            &os,
            shared,
        );
        say("talos api listening on :50000 (mTLS, OS CA from the config)");
        api = Some(node);
    }
    publish(vec![ev::stage(MachineStage::Running, false)], "running");
    let mut _etcd = None;
    if let Some(n) = &api {
        // As Talos's etcd service: wait for Bootstrap (new cluster) or for a
        // running cluster to join (here reached through the VIP).
        let vip_ip: Option<Ipv4Addr> = vip.parse().ok();
        let me = format!("http://{ip}:2379");
        let t0 = std::time::Instant::now();
        let mut last_err = String::new();
        while _etcd.is_none() && t0.elapsed() < Duration::from_secs(600) {
            let calls = n.node.bootstrap_calls();
            if calls.iter().any(|c| c == "ok") {
                say(&format!("bootstrap calls {calls:?}"));
                match etcd::bootstrap(hostname, ip) {
                    Ok(c) => _etcd = Some(c),
                    Err(e) => say(&format!("etcd start failed: {e}")),
                }
                if etcd::healthy(&me, Duration::from_secs(60)) {
                    say("etcd: new cluster");
                    if let Some(v) = vip_ip {
                        let st = std::process::Command::new("ip")
                            .args(["addr", "add", &format!("{v}/32"), "dev", "eth0"])
                            .status();
                        say(&format!("vip {v} on eth0: {st:?}"));
                    }
                }
                break;
            }
            if let Some(v) = vip_ip.filter(|v| etcd::listening(*v, 2379)) {
                let via = format!("http://{v}:2379");
                match etcd::join(hostname, ip, &via) {
                    Ok((c, id)) => {
                        _etcd = Some(c);
                        n.node
                            .etcd_has_data
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        say(&format!("etcd: learner {id} added through {via}"));
                        match etcd::promote(&via, &id, Duration::from_secs(180)) {
                            Ok(()) => say("etcd: joined"),
                            Err(e) => say(&format!("etcd: promote failed: {e}")),
                        }
                    }
                    Err(e) if e != last_err => {
                        say(&format!("etcd join: {e}"));
                        last_err = e;
                    }
                    Err(_) => {}
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if _etcd.is_some() && etcd::healthy(&me, Duration::from_secs(60)) {
            *n.node.etcd.lock().unwrap() = Some(me);
        } else {
            say("etcd never came up");
        }
    }
    publish(vec![ev::stage(MachineStage::Running, true)], "ready");
    say("ready");
    loop {
        std::thread::sleep(Duration::from_secs(5));
        if let Some(n) = &api {
            let calls = n.node.bootstrap_calls();
            if calls.len() > 1 {
                say(&format!("bootstrap calls {calls:?}"));
            }
        }
    }
}
