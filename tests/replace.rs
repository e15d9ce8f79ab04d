//! Replacing failed hardware: a real 3-member etcd cluster (each stand-in
//! control plane fronts one member), the Talos API stand-ins, a Kubernetes API
//! stand-in for the Node deletion, and kiln in between.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::talos::{self, ev, Shared};
use common::{
    etcd, free_port, kiln_bin, lo_ip as ip, Kiln, Lab, LoPorts, Ports, LOOPBACK_MACHINES,
};
use kiln::talos::secrets::Bundle;

const NEW_MAC: &str = "52:54:00:aa:00:22";

struct World {
    lab: Lab,
    talos_port: u16,
    /// What the running kiln bound (port 0 in its config), set at its start.
    bound: std::cell::Cell<Ports>,
    kube: SocketAddr,
}

fn world() -> World {
    let p = Ports::any();
    let kube = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nclusters:\n  lab:\n    endpoint: https://{kube}\n",
        p.lo_yaml()
    );
    let lab = Lab::new(&yaml, LOOPBACK_MACHINES);
    lab.ipxe_stubs();
    World {
        lab,
        talos_port: p.talos_api,
        bound: std::cell::Cell::new(p),
        kube,
    }
}

fn kiln(w: &World, args: &[&str]) -> (bool, String) {
    let cfg = w.lab.config();
    common::run_kiln(None, &[args, &["--config", cfg.to_str().unwrap()]].concat())
}

fn get(url: &str) -> String {
    common::curl::curl(&[url]).text()
}

fn wait(what: &str, t: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < t, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kiln running, the cluster bootstrapped, three control planes each fronting
/// one etcd member.
struct Running {
    rt: tokio::runtime::Runtime,
    kiln: Kiln,
    etcd: etcd::Cluster,
    nodes: Vec<Option<talos::Running>>,
    shared: Arc<Shared>,
    kube: common::kube::Kube,
    bundle: Bundle,
}

fn bring_up(w: &World) -> Running {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kiln = Kiln::start(&w.lab.config(), None);
    w.bound.set(kiln.ports);
    common::claim_loopback_machines(w.bound.get().proxy_dhcp);
    let etcd = etcd::Cluster::start(w.lab.path().join("etcd"), &["cp-1", "cp-2", "cp-3"]);
    let bundle = Bundle::load(&w.lab.path().join("state/lab/secrets.yaml")).unwrap();
    let shared = Arc::new(Shared::default());
    let nodes: Vec<Option<talos::Running>> = (0..3)
        .map(|i| {
            let n = talos::start(
                &rt,
                &format!("cp-{}", i + 1),
                SocketAddr::new(ip(i as u8 + 1).into(), w.talos_port),
                &bundle,
                shared.clone(),
            );
            *n.node.etcd.lock().unwrap() = Some(etcd.client_url(i));
            Some(n)
        })
        .collect();
    let kube = common::kube::start(&rt, &bundle, w.kube, &["cp-1", "cp-2", "cp-3", "w-1"]);
    let sink = SocketAddr::from(([127, 0, 0, 1], w.bound.get().events));
    rt.block_on(async {
        for i in 1..=3 {
            talos::publish(sink, ip(i), ev::first_boot()).await.unwrap();
        }
    });
    wait("bootstrap", Duration::from_secs(20), || {
        !shared.clusters.lock().unwrap().is_empty()
    });
    wait("bootstrap recorded", Duration::from_secs(10), || {
        common::api_get(&w.lab, "/api/v1/cluster").contains("bootstrapped_at\":1")
    });
    Running {
        rt,
        kiln,
        etcd,
        nodes,
        shared,
        kube,
        bundle,
    }
}

/// Control plane `i` (0-based) dies: its etcd member and its Talos API go.
fn dies(r: &mut Running, i: usize) {
    r.etcd.kill(i);
    r.nodes[i] = None;
}

fn removals(r: &Running) -> usize {
    r.nodes
        .iter()
        .flatten()
        .map(|n| n.node.removals.lock().unwrap().len())
        .sum()
}

#[test]
fn replacing_a_control_plane_keeps_quorum_and_ends_with_three_members() {
    if common::netns::skip(&[]) || etcd::skip() {
        return;
    }
    let w = world();
    let mut r = bring_up(&w);
    dies(&mut r, 1);
    // Once the survivors have settled (a new leader if cp-2 led), a writer runs
    // against cp-1 through the whole replacement: etcd must accept every write.
    r.etcd.wait_healthy(0);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU32::new(0));
    let writes = Arc::new(AtomicU32::new(0));
    let url = r.etcd.client_url(0);
    let (s2, f2, w2) = (stop.clone(), failures.clone(), writes.clone());
    let writer = std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            let ok = matches!(
                common::talos::etcdctl_with(&url, "3s", &["put", "canary", "x"]),
                Ok(Ok(_))
            );
            w2.fetch_add(1, Ordering::SeqCst);
            if !ok {
                f2.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    });

    // The dry run shows the arithmetic and changes nothing.
    let (ok, out) = kiln(&w, &["replace", "cp-2", "--mac", NEW_MAC, "--dry-run"]);
    assert!(ok, "{out}");
    assert!(out.contains("etcd has 3 members; 2 healthy besides cp-2. Quorum now: 2 of 3. After removing cp-2: 2 members, quorum 2"), "{out}");
    assert!(
        out.contains("1. remove etcd member cp-2 through cp-1"),
        "{out}"
    );
    assert_eq!(r.etcd.member_names(0), vec!["cp-1", "cp-2", "cp-3"]);
    // Without --yes and no terminal: refused.
    let (ok, out) = kiln(&w, &["replace", "cp-2", "--mac", NEW_MAC]);
    assert!(!ok && out.contains("--yes"), "{out}");
    // The real thing.
    let (ok, out) = kiln(&w, &["replace", "cp-2", "--mac", NEW_MAC, "--yes"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("removed etcd member cp-2") && out.contains("deleted Kubernetes Node cp-2"),
        "{out}"
    );
    assert_eq!(r.etcd.member_names(0), vec!["cp-1", "cp-3"]);
    assert_eq!(removals(&r), 1);
    assert_eq!(
        r.kube.calls.lock().unwrap().clone(),
        vec![("/api/v1/nodes/cp-2".to_string(), 200)]
    );
    // The identity moved: the new MAC boots as cp-2; the old one gets nothing.
    let overrides =
        std::fs::read_to_string(w.lab.path().join("state/inventory-overrides.yaml")).unwrap();
    assert!(
        overrides.contains("cp-2") && overrides.contains(NEW_MAC),
        "{overrides}"
    );
    let old = get(&format!(
        "http://127.0.0.1:{}/ipxe/52-54-00-aa-00-02",
        w.bound.get().http
    ));
    assert!(
        old.contains("not in the inventory") && !old.contains("kernel "),
        "{old}"
    );
    // The new box does DHCP from cp-2's address, as it would get it.
    common::dhcp_claim(w.bound.get().proxy_dhcp, NEW_MAC, ip(2));
    let new = common::script_from(w.bound.get().http, NEW_MAC, ip(2));
    assert!(
        new.contains("talos.config=") && new.contains("cp-2"),
        "{new}"
    );
    let o = Command::new(kiln_bin())
        .args(["check", "--config"])
        .arg(w.lab.config())
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("cp-2: replaced 52:54:00:aa:00:02 by 52:54:00:aa:00:22"),
        "check must show the override: {out}"
    );
    // The new box joins etcd by itself (as Talos does) and checks in: no Bootstrap.
    let j = r.etcd.join("cp-2", 0);
    let n = talos::start(
        &r.rt,
        "cp-2",
        SocketAddr::new(ip(2).into(), w.talos_port),
        &r.bundle,
        r.shared.clone(),
    );
    *n.node.etcd.lock().unwrap() = Some(r.etcd.client_url(j));
    r.rt.block_on(talos::publish(
        SocketAddr::from(([127, 0, 0, 1], w.bound.get().events)),
        ip(2),
        ev::first_boot(),
    ))
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        n.node.bootstrap_calls().is_empty(),
        "Bootstrap sent to the replacement"
    );
    assert_eq!(r.shared.clusters.lock().unwrap().len(), 1);
    assert_eq!(r.etcd.member_names(0), vec!["cp-1", "cp-2", "cp-3"]);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(writes.load(Ordering::SeqCst) > 5);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "etcd lost quorum during the replacement"
    );
    let o = Command::new(kiln_bin())
        .args([
            "machines",
            "--output",
            "json",
            "--config",
            w.lab.config().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cp2 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["hostname"] == "cp-2")
        .unwrap();
    assert_eq!(cp2["mac"], NEW_MAC);
    r.kiln.stop();
}

#[test]
fn a_replace_that_would_break_quorum_is_refused_and_changes_nothing() {
    if common::netns::skip(&[]) || etcd::skip() {
        return;
    }
    let w = world();
    let mut r = bring_up(&w);
    dies(&mut r, 1);
    dies(&mut r, 2);
    let (ok, out) = kiln(&w, &["replace", "cp-2", "--mac", NEW_MAC, "--yes"]);
    assert!(!ok);
    assert!(
        out.contains("already lost quorum") && out.contains("3 members"),
        "{out}"
    );
    assert_eq!(removals(&r), 0);
    assert!(r.kube.calls.lock().unwrap().is_empty());
    assert!(!w.lab.path().join("state/inventory-overrides.yaml").exists());
    let old = get(&format!(
        "http://127.0.0.1:{}/ipxe/52-54-00-aa-00-02",
        w.bound.get().http
    ));
    assert!(
        old.contains("cp-2") && !old.contains("not in the inventory"),
        "cp-2 must keep its identity: {old}"
    );
    r.kiln.stop();
}

#[test]
fn a_crash_between_removal_and_identity_move_resumes_without_a_second_removal() {
    if common::netns::skip(&[]) || etcd::skip() {
        return;
    }
    let w = world();
    let mut r = bring_up(&w);
    dies(&mut r, 1);
    // The Node deletion hangs; kiln dies while waiting for it (step 2 recorded).
    r.kube.delay_ms.store(8000, Ordering::SeqCst);
    let cfg = w.lab.config();
    let cli = std::thread::spawn(move || {
        let _ = Command::new(kiln_bin())
            .args([
                "replace",
                "cp-2",
                "--mac",
                NEW_MAC,
                "--yes",
                "--config",
                cfg.to_str().unwrap(),
            ])
            .output();
    });
    wait("the removal", Duration::from_secs(30), || removals(&r) == 1);
    wait("the node deletion call", Duration::from_secs(30), || {
        !r.kube.calls.lock().unwrap().is_empty()
    });
    r.kiln.child.kill().unwrap();
    let _ = r.kiln.child.wait();
    let _ = cli.join();
    r.kube.delay_ms.store(0, Ordering::SeqCst);
    let mut k = Kiln::start(&w.lab.config(), None);
    w.bound.set(k.ports);
    // (cp-2's old MAC is retired once the identity moves: it gets no answer.)
    for (mac, n) in [("52:54:00:aa:00:01", 1), ("52:54:00:aa:00:03", 3)] {
        common::dhcp_claim(w.bound.get().proxy_dhcp, mac, ip(n));
    }
    let ov = w.lab.path().join("state/inventory-overrides.yaml");
    wait("the identity move", Duration::from_secs(30), || ov.exists());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(removals(&r), 1, "a second removal");
    assert_eq!(r.etcd.member_names(0), vec!["cp-1", "cp-3"]);
    assert!(k.logs().contains("replace: resuming"), "{}", k.logs());
    // The identity moved after the restart.
    common::dhcp_claim(w.bound.get().proxy_dhcp, NEW_MAC, ip(2));
    let new = common::script_from(w.bound.get().http, NEW_MAC, ip(2));
    assert!(new.contains("kernel ") && new.contains("cp-2"), "{new}");
    k.stop();
}

#[test]
fn an_adopted_box_gets_the_failed_machines_config_and_the_old_mac_nothing() {
    use dhcproto::v4::{Architecture, DhcpOption, MessageType};
    if common::netns::skip(&[]) || etcd::skip() {
        return;
    }
    let w = world();
    let mut r = bring_up(&w);
    dies(&mut r, 2);
    r.etcd.wait_healthy(0);
    let (ok, out) = kiln(&w, &["machines", "mark-failed", "cp-3"]);
    assert!(ok, "{out}");
    let (ok, out) = kiln(&w, &["replace", "--adopt"]);
    assert!(ok && out.contains("takes over cp-3"), "{out}");
    // A new box nobody typed in PXE boots.
    let adopted: kiln::model::mac::Mac = "52:54:00:aa:00:33".parse().unwrap();
    let discover = kiln::edge::dhcp::packet::build_request(
        adopted,
        MessageType::Discover,
        0x33,
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture(0)),
        ],
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&discover, ("127.0.0.1", w.bound.get().dhcp))
        .unwrap();
    let ov = w.lab.path().join("state/inventory-overrides.yaml");
    wait("the adoption", Duration::from_secs(40), || {
        std::fs::read_to_string(&ov).is_ok_and(|t| t.contains("52:54:00:aa:00:33"))
    });
    assert_eq!(r.etcd.member_names(0), vec!["cp-1", "cp-2"]);
    // The adopted MAC boots as cp-3 and gets cp-3's config.
    common::dhcp_claim(w.bound.get().proxy_dhcp, "52:54:00:aa:00:33", ip(3));
    let script = common::script_from(w.bound.get().http, "52:54:00:aa:00:33", ip(3));
    let url = script
        .split_whitespace()
        .find_map(|x| x.strip_prefix("talos.config="))
        .unwrap_or_else(|| panic!("{script}"));
    let url = url
        .replace("${uuid}", "u")
        .replace("${mac}", "52%3A54%3A00%3Aaa%3A00%3A33");
    let from = ip(3).to_string();
    let got = common::curl::curl(&["-f", "--interface", &from, &url]);
    assert!(got.ok, "{}", got.stderr);
    let body = got.text();
    let docs = kiln::model::yaml::from_yaml(&body).unwrap();
    assert_eq!(
        docs.iter().find(|d| d["kind"] == "HostnameConfig").unwrap()["hostname"],
        "cp-3"
    );
    assert_eq!(docs[0]["machine"]["type"], "controlplane");
    // The old MAC gets nothing, not even with a script.
    let old = get(&format!(
        "http://127.0.0.1:{}/ipxe/52-54-00-aa-00-03",
        w.bound.get().http
    ));
    assert!(
        old.contains("not in the inventory") && !old.contains("talos.config"),
        "{old}"
    );
    r.kiln.stop();
    assert!(
        r.kiln
            .logs()
            .contains("adopt: unknown PXE client takes over a failed machine"),
        "{}",
        r.kiln.logs()
    );
}
