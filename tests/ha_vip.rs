//! The shared service address (`store.service_address`) between two kiln
//! daemons in their own namespaces on one bridge, over a real 3-member
//! etcd: one holds it (on its interface, announced by gratuitous ARP) and
//! machines are told it for HTTP; kill -9 that daemon and the other holds
//! it within its liveness lease, and a client on the bridge reaches kiln at
//! the same address again; the killed daemon, restarted, takes off the
//! address it left behind; a clean stop hands it over at once.

mod common;

use std::time::{Duration, Instant};

use common::netns::{self, Net};
use common::{Kiln, Lab};

const VIP: &str = "10.99.3.5";

fn holder(c: &common::etcd::Cluster) -> Option<String> {
    let out = c
        .ctl(
            0,
            &["get", &format!("/kiln/service/{VIP}"), "--print-value-only"],
        )
        .ok()?;
    let h = out.trim().to_string();
    (!h.is_empty()).then_some(h)
}

fn has_vip(ns: &str) -> bool {
    netns::sh(&["ip", "-n", ns, "-4", "-o", "addr", "show"])
        .unwrap_or_default()
        .contains(&format!("{VIP}/32"))
}

#[test]
fn the_service_address_moves_to_a_live_daemon() {
    if netns::skip(&[]) || common::etcd::skip() || common::skip_unless(common::have("curl"), "curl")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let c = common::etcd::Cluster::start(d.path().join("etcd"), &["e1", "e2", "e3"]);
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    let mut net = Net::new("vp", "10.99.3.1/24");
    let ns_b = net.add_host("52:54:00:e4:00:fe", "10.99.3.2/24");
    let client = net.add_host("52:54:00:e4:00:50", "10.99.3.50/24");
    let lab = |name: &str, iface: &str, addr: &str| {
        let l = Lab::new(
            &format!("interface: {iface}\nserver_address: {addr}\nboot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\ndhcp:\n  mode: full\n  subnet: 10.99.3.0/24\n  range: [10.99.3.100, 10.99.3.200]\nstore:\n  backend: etcd\n  endpoints: [{}]\n  daemon: {name}\n  service_address: {VIP}\n", endpoints.join(", ")),
            "machines: []\n",
        );
        l.ipxe_stubs();
        l
    };
    let (la, lb) = (
        lab("kiln-a", "br0", "10.99.3.1"),
        lab("kiln-b", "eth0", "10.99.3.2"),
    );
    let mut ka = Kiln::start(&la.config(), Some(&net.server));
    let mut kb = Kiln::start(&lb.config(), Some(&ns_b));
    let ns_of = |h: &str| {
        if h == "kiln-a" {
            net.server.clone()
        } else {
            ns_b.clone()
        }
    };
    let reach = || {
        common::curl::curl_in(
            &client,
            &["--max-time", "1", &format!("http://{VIP}:8080/boot.ipxe")],
        )
    };
    common::until("a holder", Duration::from_secs(10), || holder(&c).is_some());
    let first = holder(&c).unwrap();
    common::until("the address on the holder", Duration::from_secs(5), || {
        has_vip(&ns_of(&first))
    });
    let other = if first == "kiln-a" {
        "kiln-b"
    } else {
        "kiln-a"
    };
    assert!(!has_vip(&ns_of(other)), "both hold {VIP}");
    let r = reach();
    assert_eq!(r.code, "200", "{}", r.text());
    // Machines are told the service address.
    assert!(
        r.text().contains(&format!("http://{VIP}:8080/ipxe/")),
        "{}",
        r.text()
    );

    // The holder dies outright: the other holds the address once the dead
    // one's liveness lease lapses, and the client reaches kiln there again.
    let (dead, live) = if first == "kiln-a" {
        (&mut ka, &mut kb)
    } else {
        (&mut kb, &mut ka)
    };
    dead.signal(9);
    let t0 = Instant::now();
    common::until("the survivor holds it", Duration::from_secs(10), || {
        holder(&c).as_deref() == Some(other)
    });
    common::until("reachable again", Duration::from_secs(15), || {
        reach().code == "200"
    });
    let takeover = t0.elapsed();
    eprintln!("service address back after kill -9: {takeover:?}");
    assert!(has_vip(&ns_of(other)));
    // systemd restarts the killed daemon: it takes off what it left, and
    // holds nothing while its peer does.
    let dead_lab = if first == "kiln-a" { &la } else { &lb };
    let mut again = Kiln::start(&dead_lab.config(), Some(&ns_of(&first)));
    common::until("the leftover address gone", Duration::from_secs(10), || {
        !has_vip(&ns_of(&first))
    });
    assert_eq!(holder(&c).as_deref(), Some(other));
    // A clean stop hands it over at once (its lease is revoked).
    live.stop();
    let t0 = Instant::now();
    common::until("handed over", Duration::from_secs(10), || {
        holder(&c).as_deref() == Some(first.as_str())
    });
    common::until(
        "reachable after the hand-over",
        Duration::from_secs(10),
        || reach().code == "200",
    );
    eprintln!(
        "service address back after a clean stop: {:?}",
        t0.elapsed()
    );
    assert!(!has_vip(&ns_of(other)), "the stopped daemon kept {VIP}");
    again.stop();
    assert!(
        again
            .logs()
            .contains("took off the one a previous run left"),
        "{}",
        again.logs()
    );
}
