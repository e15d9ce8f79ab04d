//! One of two kiln daemons cut off from etcd while the other keeps its
//! quorum (a real 3-member etcd; daemon b reaches it through relays the test
//! cuts, as a partition would): b is fenced and stops answering DHCP within
//! a bounded time, a takes b's clients when b's liveness key runs out, and
//! once the path is mended b serves its share again. Daemons on different
//! segments (one per rack) do not split: each answers every client it sees.

mod common;

use std::time::{Duration, Instant};

#[test]
fn a_daemon_cut_off_from_etcd_stops_and_its_peer_serves() {
    if common::etcd::skip() || common::skip_unless(common::have("curl"), "curl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let c = common::etcd::Cluster::start(d.path().join("etcd"), &["e1", "e2", "e3"]);
    let relays: Vec<common::etcd::Relay> = (0..3)
        .map(|i| {
            let to = c.client_url(i).trim_start_matches("unix://").to_string();
            common::etcd::Relay::start(d.path().join(format!("relay{i}")), to.into())
        })
        .collect();
    let direct: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    let relayed: Vec<String> = relays.iter().map(|r| format!("\"{}\"", r.url())).collect();
    use common::LoPorts;
    let lab = |name: &str, endpoints: &[String]| {
        let yaml = format!(
            "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nunknown_machines: boot\ndefault_profile: worker\nstore:\n  backend: etcd\n  endpoints: [{}]\n  daemon: {name}\n",
            common::Ports::any().lo_yaml(),
            endpoints.join(", ")
        );
        let l = common::Lab::new(&yaml, "machines: []\n");
        l.ipxe_stubs();
        l
    };
    let (la, lb) = (lab("kiln-a", &direct), lab("kiln-b", &relayed));
    let mut a = common::Kiln::start(&la.config(), None);
    let mut b = common::Kiln::start(&lb.config(), None);
    let macs: Vec<String> = (0..32).map(|i| format!("52:54:00:cc:00:{i:02x}")).collect();
    let quick = Duration::from_millis(400);
    let from = common::lo_ip(4);
    let answers =
        |k: &common::Kiln, mac: &str| common::dhcp_answered(k.ports.proxy_dhcp, mac, from, quick);
    common::until(
        "each daemon sees the other",
        Duration::from_secs(10),
        || macs.iter().any(|m| !answers(&a, m)) && macs.iter().any(|m| !answers(&b, m)),
    );
    let of_b: Vec<&String> = macs.iter().filter(|m| answers(&b, m)).collect();
    assert!(
        !of_b.is_empty() && of_b.len() < macs.len(),
        "{} of 32 to b",
        of_b.len()
    );
    let readyz = |k: &common::Kiln| {
        common::curl::curl(&[&format!("http://127.0.0.1:{}/readyz", k.ports.http)])
    };

    for r in &relays {
        r.cut();
    }
    let t0 = Instant::now();
    // a keeps its quorum: it takes b's clients once b's liveness key (3 s)
    // runs out, b being unable to keep it alive.
    let taken = common::until("a answers b's clients", Duration::from_secs(10), || {
        answers(&a, of_b[0])
    });
    // b: fenced (the 5 s fence plus a heartbeat), silent, and says so.
    common::until("b fenced", Duration::from_secs(10), || {
        readyz(&b).code == "503"
    });
    let fenced = t0.elapsed();
    eprintln!("after the cut: a answered b's clients in {taken:?}, b fenced in {fenced:?}");
    assert!(fenced < Duration::from_secs(9), "{fenced:?}");
    assert!(
        readyz(&b).text().contains("no etcd quorum"),
        "{}",
        readyz(&b).text()
    );
    assert_eq!(readyz(&a).code, "200", "a lost its quorum too");
    for m in &macs {
        assert!(!answers(&b, m), "{m}: the cut-off daemon answered");
        assert!(answers(&a, m), "{m}: unanswered while b is cut off");
    }

    // Mended: b serves again (its share comes back to it).
    for r in &relays {
        r.mend();
    }
    let back = common::until("b serves again", Duration::from_secs(20), || {
        readyz(&b).code == "200" && answers(&b, of_b[0])
    });
    eprintln!("mended: b answered its clients again in {back:?}");
    assert!(!answers(&a, of_b[0]), "both answer {}", of_b[0]);
    a.stop();
    b.stop();
    assert!(b.logs().contains("fenced: no etcd quorum"), "{}", b.logs());
}

/// One daemon per rack (`store.segment`), one shared state: no split, each
/// answers every client that reaches it.
#[test]
fn daemons_on_different_segments_each_answer_their_own() {
    if common::etcd::skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let c = common::etcd::Cluster::start(d.path().join("etcd"), &["e1", "e2", "e3"]);
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    use common::LoPorts;
    let lab = |name: &str, segment: &str| {
        let yaml = format!(
            "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nunknown_machines: boot\ndefault_profile: worker\nstore:\n  backend: etcd\n  endpoints: [{}]\n  daemon: {name}\n  segment: {segment}\n",
            common::Ports::any().lo_yaml(),
            endpoints.join(", ")
        );
        let l = common::Lab::new(&yaml, "machines: []\n");
        l.ipxe_stubs();
        l
    };
    let (la, lb) = (lab("rack-a", "rack-a"), lab("rack-b", "rack-b"));
    let mut a = common::Kiln::start(&la.config(), None);
    let mut b = common::Kiln::start(&lb.config(), None);
    // Both are live on the prefix...
    c.wait_daemons(2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    // ...and neither leaves a client to the other.
    let from = common::lo_ip(5);
    for i in 0..16 {
        let mac = format!("52:54:00:dd:00:{i:02x}");
        for k in [&a, &b] {
            assert!(
                common::dhcp_answered(k.ports.proxy_dhcp, &mac, from, Duration::from_secs(2)),
                "{mac} unanswered on its own segment"
            );
        }
    }
    a.stop();
    b.stop();
}
