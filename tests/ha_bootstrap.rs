//! Two kiln daemons on one etcd state (a real 3-member etcd, secrets sealed
//! with one `store.secrets_key`) see three control planes check in at once:
//! the machines' DHCP is split between them, each control plane's events go
//! to both daemons (only the one that proved its address takes them), one
//! node is chosen and one daemon calls it; that daemon is killed -9 before
//! the node is ready, and the other takes the call over: exactly one
//! Bootstrap succeeds, on the node chosen first, and no other node is called. The Talos nodes are the
//! stand-ins of tests/common/talos.rs (mTLS with the cluster's CA, as apid).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::talos::{self, ev, Shared};
use common::{lo_ip as ip, Kiln, Lab, LoPorts, Ports, LOOPBACK_MACHINES};

#[test]
fn two_daemons_bootstrap_one_cluster_once() {
    if common::etcd::skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let c = common::etcd::Cluster::start(d.path().join("etcd"), &["e1", "e2", "e3"]);
    let key = d.path().join("secrets.key");
    let (ok, out) = common::run_kiln(None, &["store", "keygen", key.to_str().unwrap()]);
    assert!(ok, "{out}");
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    let talos_port = Ports::any().talos_api;
    let lab = |name: &str| {
        let mut p = Ports::any();
        p.talos_api = talos_port;
        let yaml = format!(
            "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nclusters:\n  lab:\n    endpoint: https://lab.example:6443\n    auto_bootstrap: true\nstore:\n  backend: etcd\n  endpoints: [{}]\n  daemon: {name}\n  secrets_key: {}\n",
            p.lo_yaml(),
            endpoints.join(", "),
            key.display()
        );
        let l = Lab::new(&yaml, LOOPBACK_MACHINES);
        l.ipxe_stubs();
        l
    };
    let (la, lb) = (lab("kiln-a"), lab("kiln-b"));
    let mut a = Kiln::start(&la.config(), None);
    let mut b = Kiln::start(&lb.config(), None);
    // Each machine's proxyDHCP is answered by one daemon (once each sees the other).
    let quick = Duration::from_millis(400);
    let mut owner = std::collections::BTreeMap::new();
    for (mac, n) in [
        ("52:54:00:aa:00:01", 1),
        ("52:54:00:aa:00:02", 2),
        ("52:54:00:aa:00:03", 3),
    ] {
        common::until(
            &format!("one answer for {mac}"),
            Duration::from_secs(15),
            || {
                let x = common::dhcp_answered(a.ports.proxy_dhcp, mac, ip(n), quick);
                let y = common::dhcp_answered(b.ports.proxy_dhcp, mac, ip(n), quick);
                if x != y {
                    owner.insert(n, if x { "a" } else { "b" });
                }
                x != y
            },
        );
    }
    eprintln!("DHCP split: {owner:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bundle =
        kiln::talos::secrets::Bundle::load(&la.path().join("state/lab/secrets.yaml")).unwrap();
    let shared = Arc::new(Shared::default());
    let ns: Vec<talos::Running> = (1..=3)
        .map(|i| {
            talos::start(
                &rt,
                &format!("cp-{i}"),
                SocketAddr::new(ip(i).into(), talos_port),
                &bundle,
                shared.clone(),
            )
        })
        .collect();
    for n in &ns {
        // Not ready for now, as a first control plane is until its CRI runs.
        n.node
            .not_ready
            .store(1000, std::sync::atomic::Ordering::SeqCst);
    }
    // All three check in at once, each to both daemons.
    let sinks = [a.ports.events, b.ports.events].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 1..=3u8 {
            for s in sinks {
                set.spawn(talos::publish(s, ip(i), ev::first_boot()));
            }
        }
        while set.join_next().await.is_some() {}
    });
    // One node is chosen and called (and is not ready yet).
    let calls = || {
        ns.iter()
            .map(|n| n.node.bootstrap_calls())
            .collect::<Vec<_>>()
    };
    common::until("a Bootstrap call", Duration::from_secs(30), || {
        calls().iter().any(|c| c.len() >= 2)
    });
    let record: serde_json::Value =
        serde_json::from_str(&common::api_get(&la, "/api/v1/cluster")).unwrap();
    let chosen = record[0]["bootstrap_node"]["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let driver = record[0]["bootstrap_by"].as_str().unwrap().to_string();
    eprintln!("bootstrap node {chosen}, called by {driver}");
    // The daemon calling it dies; the node becomes ready: the survivor takes
    // the call over once the dead one's liveness key lapses, to the same node.
    let (dead, survivor, survivor_lab) = if driver == "kiln-a" {
        (&mut a, &mut b, &lb)
    } else {
        (&mut b, &mut a, &la)
    };
    dead.signal(9);
    for n in &ns {
        n.node
            .not_ready
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }
    common::until("an etcd cluster", Duration::from_secs(30), || {
        !shared.clusters.lock().unwrap().is_empty()
    });
    // Room for a second, wrong Bootstrap to show.
    std::thread::sleep(Duration::from_secs(4));
    let clusters = shared.clusters.lock().unwrap().clone();
    assert_eq!(
        clusters,
        vec![chosen.clone()],
        "split brain, or another node"
    );
    let mut oks = 0;
    for n in &ns {
        let c = n.node.bootstrap_calls();
        oks += c.iter().filter(|x| x.as_str() == "ok").count();
        if n.node.name != chosen {
            assert!(c.is_empty(), "Bootstrap sent to {} too: {c:?}", n.node.name);
        }
    }
    assert_eq!(oks, 1, "Bootstraps that went through: {:?}", calls());
    let out = common::api_get(survivor_lab, "/api/v1/cluster");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v[0]["bootstrapped_at"].is_u64(), "{out}");
    assert_ne!(
        v[0]["bootstrap_by"].as_str(),
        Some(driver.as_str()),
        "{out}"
    );
    survivor.stop();
    assert!(
        survivor.logs().contains("taking the call over from"),
        "{}",
        survivor.logs()
    );
}
