//! The etcd store backend against a real 3-member etcd (Debian's
//! etcd-server), two kiln stores on one prefix standing for two daemons:
//! no lost update, one MAC per address and one address per MAC, one
//! Bootstrap node, tokens valid on either, a leader killed mid-writes, and
//! `kiln store migrate` there and back with nothing lost.

mod common;

use std::time::{Duration, Instant};

use kiln::model::mac::Mac;
use kiln::model::store::EtcdSettings;
use kiln::store::leases::{Lease, LeaseChange};
use kiln::store::{Store, StoreError};

fn cluster() -> (tempfile::TempDir, common::etcd::Cluster) {
    let d = tempfile::tempdir().unwrap();
    let c = common::etcd::Cluster::start(d.path().join("etcd"), &["e1", "e2", "e3"]);
    (d, c)
}

fn settings(c: &common::etcd::Cluster, prefix: &str) -> EtcdSettings {
    EtcdSettings {
        endpoints: (0..c.members.len()).map(|i| c.client_url(i)).collect(),
        prefix: prefix.into(),
        tls: None,
        daemon: "test".into(),
        secrets_key: None,
        segment: "test".into(),
        service_address: None,
    }
}

fn lease(ip: &str, mac: &str) -> Lease {
    Lease {
        ip: ip.parse().unwrap(),
        mac: mac.parse().unwrap(),
        expires: kiln::brain::now() + 3600,
        hostname: None,
        declined: false,
    }
}

#[test]
fn two_daemons_share_one_state_and_keep_its_invariants() {
    if common::etcd::skip() {
        return;
    }
    let (_d, c) = cluster();
    let a = Store::open_etcd(&settings(&c, "/kiln")).unwrap();
    let b = Store::open_etcd(&settings(&c, "/kiln")).unwrap();

    // Read-modify-write from both at once: no update is lost.
    std::thread::scope(|s| {
        for st in [&a, &b] {
            s.spawn(move || {
                for _ in 0..40 {
                    st.clusters().update("prod", |r| r.attempts += 1).unwrap();
                }
            });
        }
    });
    common::until(
        &format!(
            "both see 80 attempts (now {} and {})",
            a.clusters().get("prod").unwrap().attempts,
            b.clusters().get("prod").unwrap().attempts
        ),
        Duration::from_secs(10),
        || {
            a.clusters().get("prod").unwrap().attempts == 80
                && b.clusters().get("prod").unwrap().attempts == 80
        },
    );

    // Bootstrap's decision, raced from both: one node, the same on both.
    let decided: Vec<String> = std::thread::scope(|s| {
        let h: Vec<_> = [("a", &a), ("b", &b)]
            .into_iter()
            .map(|(who, st)| {
                s.spawn(move || {
                    st.clusters()
                        .update("prod", |r| {
                            if r.bootstrap_node.is_none() {
                                r.bootstrap_node = Some(kiln::store::clusters::Node {
                                    mac: format!(
                                        "52:54:00:00:00:0{}",
                                        if who == "a" { 1 } else { 2 }
                                    )
                                    .parse()
                                    .unwrap(),
                                    hostname: format!("cp-{who}"),
                                    ip: "10.0.0.1".parse().unwrap(),
                                });
                            }
                        })
                        .unwrap()
                        .bootstrap_node
                        .unwrap()
                        .hostname
                })
            })
            .collect();
        h.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(decided[0], decided[1], "two Bootstrap nodes: {decided:?}");

    // One MAC per address: b cannot take what a bound, even before b saw it.
    a.leases()
        .apply(&[LeaseChange::Bind(lease("10.0.0.5", "52:54:00:00:00:01"))])
        .unwrap();
    let e = b
        .leases()
        .apply(&[LeaseChange::Bind(lease("10.0.0.5", "52:54:00:00:00:02"))])
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    assert!(
        e.to_string()
            .contains("10.0.0.5 is bound to 52:54:00:00:00:01"),
        "{e}"
    );
    // One address per MAC: b cannot give that MAC a second one.
    let e = b
        .leases()
        .apply(&[LeaseChange::Bind(lease("10.0.0.6", "52:54:00:00:00:01"))])
        .unwrap_err();
    assert!(e.to_string().contains("already holds 10.0.0.5"), "{e}");
    // Freed by a, the address is b's to give.
    a.leases()
        .apply(&[LeaseChange::Free("10.0.0.5".parse().unwrap())])
        .unwrap();
    b.leases()
        .apply(&[LeaseChange::Bind(lease("10.0.0.5", "52:54:00:00:00:02"))])
        .unwrap();
    common::until("a sees b's lease", Duration::from_secs(10), || {
        a.leases().all().unwrap() == vec![lease_at(&b, "10.0.0.5")]
    });

    // A token made on a is valid on b; a new boot on b voids it on a.
    let mac: Mac = "52:54:00:00:00:03".parse().unwrap();
    let t = kiln::store::tokens::BootToken {
        mac,
        ip: Some("10.0.0.7".parse().unwrap()),
        expires: kiln::brain::now() + 600,
    };
    a.tokens().put("tok-one", &t, kiln::brain::now()).unwrap();
    common::until("b knows a's token", Duration::from_secs(10), || {
        b.tokens().get("tok-one").unwrap().is_some()
    });
    b.tokens().put("tok-two", &t, kiln::brain::now()).unwrap();
    common::until(
        "a's token is void everywhere",
        Duration::from_secs(10),
        || {
            a.tokens().get("tok-one").unwrap().is_none()
                && a.tokens().get("tok-two").unwrap().is_some()
        },
    );
    a.tokens().void(&mac).unwrap();
    common::until("voided on b", Duration::from_secs(10), || {
        b.tokens().get("tok-two").unwrap().is_none()
    });
}

fn lease_at(s: &Store, ip: &str) -> Lease {
    s.leases()
        .all()
        .unwrap()
        .into_iter()
        .find(|l| l.ip.to_string() == ip)
        .unwrap()
}

/// The etcd leader dies while a daemon writes: every write that returned
/// Ok is there afterwards, and writes go on through the other members.
#[test]
fn writes_go_on_when_the_etcd_leader_dies() {
    if common::etcd::skip() {
        return;
    }
    let (_d, mut c) = cluster();
    let a = Store::open_etcd(&settings(&c, "/kiln")).unwrap();
    let leader = leader(&c);
    let mut ok = Vec::new();
    let mut failed = 0;
    for i in 0..120u32 {
        if i == 40 {
            c.kill(leader);
        }
        let mac = Mac([2, 0, 0, 0, 0, i as u8]);
        match a.machines().modify(&mac, |r| {
            *r = Some(kiln::store::machines::Record::new(mac, &format!("m{i}"), 1))
        }) {
            Ok(()) => ok.push(mac),
            Err(_) => failed += 1,
        }
    }
    // An election takes a moment; the writes in it may fail (the caller
    // retries, as a booting machine's client does), the rest go through.
    assert!(failed <= 10, "{failed} writes failed");
    assert!(ok.len() >= 110);
    let b = Store::open_etcd(&settings(&c, "/kiln")).unwrap();
    for mac in &ok {
        assert!(b.machines().get(mac).unwrap().is_some(), "{mac} lost");
    }
}

/// The member etcd calls leader (asked through member 0).
fn leader(c: &common::etcd::Cluster) -> usize {
    let out = c
        .ctl(
            0,
            &[
                "endpoint",
                "status",
                "-w",
                "json",
                "--endpoints",
                &(0..3)
                    .map(|i| c.client_url(i))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    let leader = rows[0]["Status"]["leader"].as_u64().unwrap();
    // etcd names members by ID; the member list maps IDs to names.
    let list: serde_json::Value =
        serde_json::from_str(&c.ctl(0, &["member", "list", "-w", "json"]).unwrap()).unwrap();
    let name = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["ID"].as_u64() == Some(leader))
        .and_then(|m| m["name"].as_str())
        .unwrap()
        .to_string();
    c.members.iter().position(|m| m.name == name).unwrap()
}

/// `kiln store migrate` from redb to etcd and back: the same records, and
/// a store that works afterwards; the command refuses a non-empty target.
#[test]
fn migrate_round_trip_loses_nothing() {
    if common::etcd::skip() {
        return;
    }
    let (d, c) = cluster();
    let state = d.path().join("state");
    {
        let s = Store::open(&state).unwrap();
        for i in 0..20u8 {
            let mac = Mac([2, 0, 0, 0, 1, i]);
            s.machines()
                .modify(&mac, |r| {
                    *r = Some(kiln::store::machines::Record::new(mac, &format!("m{i}"), 1))
                })
                .unwrap();
            s.leases()
                .apply(&[LeaseChange::Bind(lease(
                    &format!("10.0.1.{i}"),
                    &mac.to_string(),
                ))])
                .unwrap();
        }
        s.clusters().update("prod", |r| r.attempts = 3).unwrap();
        let t = kiln::store::tokens::BootToken {
            mac: Mac([2, 0, 0, 0, 1, 0]),
            ip: None,
            expires: u64::MAX,
        };
        s.tokens().put("tok", &t, 1).unwrap();
    }
    let before = Store::open(&state).unwrap().dump().unwrap();
    assert_eq!(before.len(), 20 + 20 + 1 + 1);
    let cfg = d.path().join("kiln.yaml");
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    std::fs::write(
        &cfg,
        format!(
            "interface: lo\nserver_address: 127.0.0.1\nstate_dir: state\nstore:\n  backend: etcd\n  endpoints: [{}]\n  prefix: /mig\n",
            endpoints.join(", ")
        ),
    )
    .unwrap();
    std::fs::write(d.path().join("machines.yaml"), "machines: []\n").unwrap();
    std::fs::create_dir_all(d.path().join("profiles")).unwrap();
    let kiln = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let cfgs = cfg.to_str().unwrap();
    let (ok, out) = kiln(&["store", "migrate", "--to", "etcd", "--config", cfgs]);
    assert!(ok, "{out}");
    assert!(out.contains("42 records copied"), "{out}");
    let (ok, out) = kiln(&["store", "migrate", "--to", "etcd", "--config", cfgs]);
    assert!(
        !ok && out.contains("migrate only into an empty store"),
        "{out}"
    );
    let etcd = Store::open_etcd(&settings(&c, "/mig")).unwrap();
    assert_eq!(etcd.dump().unwrap(), before);
    drop(etcd);
    // Back into a fresh redb file.
    std::fs::remove_dir_all(&state).unwrap();
    let (ok, out) = kiln(&["store", "migrate", "--to", "redb", "--config", cfgs]);
    assert!(ok, "{out}");
    let back = Store::open(&state).unwrap();
    assert_eq!(back.dump().unwrap(), before);
    // The moved tokens keep their per-MAC index: a new boot voids the old one.
    let t = kiln::store::tokens::BootToken {
        mac: Mac([2, 0, 0, 0, 1, 0]),
        ip: None,
        expires: u64::MAX,
    };
    back.tokens().put("tok2", &t, 2).unwrap();
    assert!(back.tokens().get("tok").unwrap().is_none());
}

const MACHINES: &str = "machines:
  - mac: 52:54:00:aa:00:01
    hostname: cp-1
    profile: worker
";

/// Two `kiln serve` daemons on one etcd prefix (one per host, each its own
/// state_dir, the cluster's secrets file copied to both): a machine that
/// fetched its script from one gets its config from the other with that
/// script's token, the other sees its lifecycle, and a daemon without the
/// cluster's secrets refuses to start (it would make a second PKI).
#[test]
fn two_daemons_serve_one_fleet_from_etcd() {
    if common::etcd::skip() || common::skip_unless(common::have("curl"), "curl") {
        return;
    }
    let (d, c) = cluster();
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    let store = format!(
        "store:\n  backend: etcd\n  endpoints: [{}]\n  prefix: /fleet\n",
        endpoints.join(", ")
    );
    let lab = |secrets: &str| {
        use common::LoPorts;
        let ports = common::Ports::any();
        let yaml = format!(
            "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nclusters:\n  lab:\n    endpoint: https://192.168.50.200:6443\n    secrets: {secrets}\n{store}",
            ports.lo_yaml()
        );
        let l = common::Lab::new(&yaml, MACHINES);
        l.ipxe_stubs();
        l
    };
    let shared = d.path().join("lab-secrets.yaml");
    let (la, lb) = (lab(shared.to_str().unwrap()), lab(shared.to_str().unwrap()));
    let mut a = common::Kiln::start(&la.config(), None);
    let mut b = common::Kiln::start(&lb.config(), None);
    // Both daemons see the machine's DHCP (one segment); the script comes from a.
    let from = common::lo_ip(1);
    common::dhcp_claim(a.ports.proxy_dhcp, "52:54:00:aa:00:01", from);
    common::dhcp_claim(b.ports.proxy_dhcp, "52:54:00:aa:00:01", from);
    let script = common::script_from(a.ports.http, "52:54:00:aa:00:01", from);
    let url = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("talos.config="))
        .unwrap_or_else(|| panic!("no talos.config in {script}"))
        .replace("${uuid}", "4c4c4544-0033-3910-8052-b4c04f4c4d31")
        .replace("${mac}", "52%3A54%3A00%3Aaa%3A00%3A01")
        .replace(
            &format!(":{}/", a.ports.http),
            &format!(":{}/", b.ports.http),
        );
    let f = from.to_string();
    let mut got = common::curl::curl(&["--interface", &f, &url]);
    let t0 = Instant::now();
    while got.code != "200" && t0.elapsed() < Duration::from_secs(10) {
        // b learns a's token through its watch, a moment after a wrote it.
        std::thread::sleep(Duration::from_millis(100));
        got = common::curl::curl(&["--interface", &f, &url]);
    }
    assert_eq!(got.code, "200", "b refused a's token: {}", got.text());
    assert!(
        got.text().contains("hostname: cp-1") || got.text().contains("cp-1"),
        "{}",
        got.text()
    );
    // a sees what b recorded: the config was served.
    let api = |lab: &common::Lab| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "machines",
                "--output",
                "json",
                "--config",
                lab.config().to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let t0 = Instant::now();
    loop {
        let out = String::from_utf8_lossy(&api(&la).stdout).to_string();
        if out.contains("config_served") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "a never saw b's record: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    a.stop();
    b.stop();
    // A third daemon with its own (new) secrets for the same cluster: the
    // CA pinned in the shared store is not its own, so it refuses.
    let lc = lab("./state/other-secrets.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--config", lc.config().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a daemon with other secrets started");
    // Its secrets file is missing, and the shared store knows the cluster was
    // provisioned: kiln never makes a second PKI for it.
    assert!(text.contains("already provisioned this cluster"), "{text}");
}

/// A daemon cut off from the etcd quorum (two of three members killed)
/// is fenced within a bounded time: /readyz says so, the metric drops to 0,
/// DHCP goes unanswered and the config URL is refused.
#[test]
fn a_daemon_without_an_etcd_quorum_stops_answering() {
    if common::etcd::skip() || common::skip_unless(common::have("curl"), "curl") {
        return;
    }
    let (_d, mut c) = cluster();
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    use common::LoPorts;
    let ports = common::Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nunknown_machines: boot\ndefault_profile: worker\nstore:\n  backend: etcd\n  endpoints: [{}]\n",
        ports.lo_yaml(),
        endpoints.join(", ")
    );
    let lab = common::Lab::new(&yaml, MACHINES);
    lab.ipxe_stubs();
    let mut k = common::Kiln::start(&lab.config(), None);
    let (from, mac) = (common::lo_ip(1), "52:54:00:aa:00:01");
    assert!(common::dhcp_answered(
        k.ports.proxy_dhcp,
        mac,
        from,
        Duration::from_secs(5)
    ));
    let readyz = format!("http://127.0.0.1:{}/readyz", k.ports.http);
    assert_eq!(common::curl::curl(&[&readyz]).code, "200");
    c.kill(1);
    c.kill(2);
    let t0 = Instant::now();
    let mut r = common::curl::curl(&[&readyz]);
    while r.code != "503" {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "never fenced: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
        r = common::curl::curl(&[&readyz]);
    }
    let fenced_after = t0.elapsed();
    eprintln!("fenced {fenced_after:?} after the quorum went");
    assert!(r.text().contains("no etcd quorum"), "{}", r.text());
    // etcd's fence (5 s) plus a heartbeat and its timeout, at most.
    assert!(fenced_after < Duration::from_secs(9), "{fenced_after:?}");
    // The heartbeat (which sets the metric and logs) sees it within its round.
    let metrics = format!("http://127.0.0.1:{}/metrics", k.ports.http);
    common::until("kiln_store_available 0", Duration::from_secs(10), || {
        common::curl::curl(&[&metrics])
            .text()
            .contains("kiln_store_available{backend=\"etcd\"} 0")
    });
    assert!(
        !common::dhcp_answered(k.ports.proxy_dhcp, mac, from, Duration::from_secs(2)),
        "a fenced daemon answered DHCP"
    );
    let script = common::script_from(k.ports.http, mac, from);
    assert!(!script.contains("talos.config"), "{script}");
    k.stop();
    assert!(k.logs().contains("fenced: no etcd quorum"), "{}", k.logs());
}

/// Two daemons on one segment split the DHCP clients (RFC 3074 hash of the
/// MAC, as Kea's load balancing): each client gets one answer. When one
/// daemon is killed (-9), the other answers its clients once the dead one's
/// liveness key runs out (3 s), and a clean stop hands them over at once.
#[test]
fn two_daemons_split_the_clients_and_one_takes_over() {
    if common::etcd::skip() {
        return;
    }
    let (_d, c) = cluster();
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    use common::LoPorts;
    let lab = |name: &str| {
        let yaml = format!(
            "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nunknown_machines: boot\ndefault_profile: worker\nstore:\n  backend: etcd\n  endpoints: [{}]\n  daemon: {name}\n",
            common::Ports::any().lo_yaml(),
            endpoints.join(", ")
        );
        let l = common::Lab::new(&yaml, "machines: []\n");
        l.ipxe_stubs();
        l
    };
    let (la, lb) = (lab("kiln-a"), lab("kiln-b"));
    let a = common::Kiln::start(&la.config(), None);
    let mut b = common::Kiln::start(&lb.config(), None);
    let macs: Vec<String> = (0..32).map(|i| format!("52:54:00:bb:00:{i:02x}")).collect();
    let quick = Duration::from_millis(400);
    let from = common::lo_ip(3);
    let answers =
        |k: &common::Kiln, mac: &str| common::dhcp_answered(k.ports.proxy_dhcp, mac, from, quick);
    // Until each daemon sees the other's liveness key, both answer everyone.
    common::until(
        "each daemon sees the other",
        Duration::from_secs(10),
        || macs.iter().any(|m| !answers(&a, m)) && macs.iter().any(|m| !answers(&b, m)),
    );
    let mut of_a = Vec::new();
    for m in &macs {
        let (x, y) = (answers(&a, m), answers(&b, m));
        assert!(x != y, "{m}: answered by a: {x}, by b: {y}");
        if x {
            of_a.push(m.clone());
        }
    }
    assert!(
        !of_a.is_empty() && of_a.len() < macs.len(),
        "{} of {} to a",
        of_a.len(),
        macs.len()
    );
    // a dies outright: b takes a's clients when a's liveness key expires.
    a.signal(9);
    let t0 = Instant::now();
    while !answers(&b, &of_a[0]) {
        assert!(t0.elapsed() < Duration::from_secs(10), "b never took over");
    }
    let takeover = t0.elapsed();
    eprintln!("takeover after kill -9: {takeover:?}");
    for m in &of_a {
        assert!(answers(&b, m), "{m} unanswered after the takeover");
    }
    // a comes back: the split returns; b stopping cleanly hands over at once.
    let mut a = common::Kiln::start(&la.config(), None);
    common::until("a takes its share back", Duration::from_secs(10), || {
        !answers(&b, &of_a[0])
    });
    let of_b: Vec<&String> = macs.iter().filter(|m| !of_a.contains(m)).collect();
    b.stop();
    let t0 = Instant::now();
    while !answers(&a, of_b[0]) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "a never took over from a clean stop"
        );
    }
    eprintln!("takeover after a clean stop: {:?}", t0.elapsed());
    a.stop();
}
