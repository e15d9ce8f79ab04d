//! Events drive the lifecycle; bootstrap happens exactly once per cluster, to one
//! recorded control plane, across concurrent check-ins and kill -9. The Talos
//! nodes are stand-ins (tests/common/talos.rs) on loopback addresses.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::talos::{self, ev, Shared};
use common::{free_port, kiln_bin, lo_ip as ip, Kiln, Lab, LoPorts, Ports, LOOPBACK_MACHINES};
use kiln::talos::proto::machine::machine_status_event::MachineStage;
use kiln::talos::secrets::Bundle;

struct Setup {
    lab: Lab,
    talos_port: u16,
    /// What the running kiln bound (port 0 in its config), set by [`start`].
    bound: std::cell::Cell<Ports>,
}

fn setup(auto: bool) -> Setup {
    let p = Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nclusters:\n  lab:\n    endpoint: https://lab.example:6443\n    auto_bootstrap: {auto}\n",
        p.lo_yaml()
    );
    let lab = Lab::new(&yaml, LOOPBACK_MACHINES);
    lab.ipxe_stubs();
    Setup {
        lab,
        talos_port: p.talos_api,
        bound: std::cell::Cell::new(p),
    }
}

/// kiln on the lab, with every machine's address proven by its proxyDHCP request.
fn start(s: &Setup) -> Kiln {
    let k = Kiln::start(&s.lab.config(), None);
    s.bound.set(k.ports);
    common::claim_loopback_machines(k.ports.proxy_dhcp);
    k
}

fn bundle(s: &Setup) -> Bundle {
    Bundle::load(&s.lab.path().join("state/lab/secrets.yaml")).unwrap()
}

fn nodes(rt: &tokio::runtime::Runtime, s: &Setup, shared: &Arc<Shared>) -> Vec<talos::Running> {
    let b = bundle(s);
    (1..=3)
        .map(|i| {
            talos::start(
                rt,
                &format!("cp-{i}"),
                SocketAddr::new(ip(i).into(), s.talos_port),
                &b,
                shared.clone(),
            )
        })
        .collect()
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn machines_json(s: &Setup) -> serde_json::Value {
    let o = std::process::Command::new(kiln_bin())
        .args([
            "machines",
            "--output",
            "json",
            "--config",
            s.lab.config().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn state_of(s: &Setup, host: &str) -> String {
    machines_json(s)
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["hostname"] == host)
        .map(|m| m["state"].as_str().unwrap().to_string())
        .unwrap()
}

/// `kiln ARGS --config <the lab's>`: (success, output).
fn cli(s: &Setup, args: &[&str]) -> (bool, String) {
    let cfg = s.lab.config();
    common::run_kiln(None, &[args, &["--config", cfg.to_str().unwrap()]].concat())
}

/// Every node answers its next `calls` Bootstraps with "not available yet".
fn not_ready(ns: &[talos::Running], calls: u32) {
    for n in ns {
        n.node
            .not_ready
            .store(calls, std::sync::atomic::Ordering::SeqCst);
    }
}

fn check_in_all(rt: &tokio::runtime::Runtime, s: &Setup, which: &[u8]) {
    let sink = SocketAddr::from(([127, 0, 0, 1], s.bound.get().events));
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for &i in which {
            set.spawn(talos::publish(sink, ip(i), ev::first_boot()));
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    });
}

#[test]
fn events_drive_the_lifecycle_and_three_control_planes_bootstrap_once() {
    if common::skip_unless(common::have("curl"), "curl") {
        return;
    }
    let s = setup(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut k = start(&s);
    // `kiln machines --watch` into a pipe: each change printed once.
    let watch_out = s.lab.path().join("watch.txt");
    let mut watcher = std::process::Command::new(kiln_bin())
        .args([
            "machines",
            "--watch",
            "--config",
            s.lab.config().to_str().unwrap(),
        ])
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .spawn()
        .unwrap();
    let shared = Arc::new(Shared::default());
    let ns = nodes(&rt, &s, &shared);
    // Each node is "not ready" twice, as a real first control plane is until its CRI runs.
    not_ready(&ns, 2);
    assert_eq!(state_of(&s, "cp-1"), "discovered", "DHCP saw it");
    // The worker installs first: the lifecycle moves, no bootstrap for workers.
    rt.block_on(talos::publish(
        SocketAddr::from(([127, 0, 0, 1], s.bound.get().events)),
        ip(11),
        vec![ev::stage(MachineStage::Booting, false), ev::install_start()],
    ))
    .unwrap();
    wait("worker installing", Duration::from_secs(10), || {
        state_of(&s, "w-1") == "installing"
    });
    wait("the watch saw it", Duration::from_secs(10), || {
        std::fs::read_to_string(&watch_out)
            .unwrap_or_default()
            .contains("installing")
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    let seen = std::fs::read_to_string(&watch_out).unwrap();
    let tables: Vec<&str> = seen.split("# 20").skip(1).collect();
    assert!(tables.len() >= 2, "a table per change: {seen}");
    assert!(
        tables[0].contains("HOSTNAME") && tables.last().unwrap().contains("installing"),
        "{seen}"
    );

    // Three control planes check in at the same time.
    check_in_all(&rt, &s, &[1, 2, 3]);
    wait("an etcd cluster", Duration::from_secs(30), || {
        !shared.clusters.lock().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    let clusters = shared.clusters.lock().unwrap().clone();
    assert_eq!(clusters.len(), 1, "split brain: {clusters:?}");
    let chosen = &clusters[0];
    for n in &ns {
        let calls = n.node.bootstrap_calls();
        if &n.node.name == chosen {
            assert_eq!(
                calls,
                vec![
                    "FailedPrecondition: bootstrap is not available yet",
                    "FailedPrecondition: bootstrap is not available yet",
                    "ok"
                ],
                "{}",
                n.node.name
            );
        } else {
            assert!(
                calls.is_empty(),
                "Bootstrap sent to {} too: {calls:?}",
                n.node.name
            );
        }
    }
    for h in ["cp-1", "cp-2", "cp-3"] {
        assert_eq!(state_of(&s, h), "running");
    }
    // Ready, then the next PXE boot of an installed machine goes to its disk.
    rt.block_on(talos::publish(
        SocketAddr::from(([127, 0, 0, 1], s.bound.get().events)),
        ip(1),
        vec![ev::stage(MachineStage::Running, true)],
    ))
    .unwrap();
    wait("cp-1 ready", Duration::from_secs(10), || {
        state_of(&s, "cp-1") == "ready"
    });
    let script = common::script_from(s.bound.get().http, "52:54:00:aa:00:01", ip(1));
    assert!(
        script.contains("sanboot") && script.contains("installed"),
        "{script}"
    );
    // UEFI firmware (iPXE's ${platform} is efi) leaves with `exit` by default.
    let efi = |q: &str| {
        let url = format!(
            "http://127.0.0.1:{}/ipxe/52-54-00-aa-00-01?{q}",
            s.bound.get().http
        );
        let c = common::curl::curl(&["--interface", &ip(1).to_string(), &url]);
        format!("{}\n{}", c.text(), c.code)
    };
    let script = efi("platform=efi");
    assert!(
        script.contains("booting from local disk\nexit\n") && !script.contains("sanboot"),
        "{script}"
    );
    // Per machine: `local_boot: http-404` answers 404 (the chain fails, so does
    // the network boot), `local_boot: sanboot` wins over the UEFI default.
    for (method, want) in [("http-404", "404"), ("sanboot", "sanboot --no-describe")] {
        let machines = common::LOOPBACK_MACHINES.replace(
            "hostname: cp-1, profile: controlplane,",
            &format!("hostname: cp-1, profile: controlplane, local_boot: {method},"),
        );
        std::fs::write(s.lab.path().join("machines.yaml"), machines).unwrap();
        k.wait_for_count(
            "reloaded inventory",
            if method == "http-404" { 1 } else { 2 },
            Duration::from_secs(15),
        );
        let got = efi("platform=efi");
        assert!(got.contains(want), "{method}: {got}");
    }
    std::fs::write(
        s.lab.path().join("machines.yaml"),
        common::LOOPBACK_MACHINES,
    )
    .unwrap();
    k.wait_for_count("reloaded inventory", 3, Duration::from_secs(15));
    // `kiln machines reinstall` sends it back to the installer.
    let o = std::process::Command::new(kiln_bin())
        .args([
            "machines",
            "reinstall",
            "cp-1",
            "--config",
            s.lab.config().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = common::script_from(s.bound.get().http, "52:54:00:aa:00:01", ip(1));
    assert!(
        script.contains("kernel ") && !script.contains("sanboot"),
        "{script}"
    );
    // The table view works too.
    let o = std::process::Command::new(kiln_bin())
        .args(["machines", "--config", s.lab.config().to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("HOSTNAME") && table.contains("cp-2") && table.contains("running"),
        "{table}"
    );
    k.stop();
    assert!(
        k.logs().contains("bootstrap: etcd bootstrapped"),
        "{}",
        k.logs()
    );
}

#[test]
fn kill_9_between_decision_and_call_never_bootstraps_another_node() {
    if common::skip_unless(common::have("curl"), "curl") {
        return;
    }
    let s = setup(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut k = start(&s);
    // The nodes prove themselves but are not ready: kiln decides, records,
    // and keeps retrying.
    let shared = Arc::new(Shared::default());
    let ns = nodes(&rt, &s, &shared);
    not_ready(&ns, 1000);
    check_in_all(&rt, &s, &[2]);
    let decided = || {
        let o = common::api_get(&s.lab, "/api/v1/cluster");
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        v[0]["bootstrap_node"]["hostname"]
            .as_str()
            .map(String::from)
    };
    wait("a decision", Duration::from_secs(10), || {
        decided().is_some()
    });
    assert_eq!(decided().as_deref(), Some("cp-2"));
    k.child.kill().unwrap(); // SIGKILL
    let _ = k.child.wait();
    // All nodes ready now; the others check in first after the restart.
    not_ready(&ns, 0);
    let mut k = start(&s);
    check_in_all(&rt, &s, &[1, 3]);
    wait("bootstrap", Duration::from_secs(30), || {
        !shared.clusters.lock().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        shared.clusters.lock().unwrap().clone(),
        vec!["cp-2".to_string()]
    );
    assert!(ns[0].node.bootstrap_calls().is_empty() && ns[2].node.bootstrap_calls().is_empty());
    k.stop();
}

#[test]
fn kill_9_after_the_call_resolves_as_already_exists() {
    let s = setup(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let k = start(&s);
    let shared = Arc::new(Shared::default());
    let ns = nodes(&rt, &s, &shared);
    // The node bootstraps, but holds its reply: kiln dies before it hears back.
    ns[0]
        .node
        .reply_delay_ms
        .store(5000, std::sync::atomic::Ordering::SeqCst);
    check_in_all(&rt, &s, &[1]);
    wait("the call", Duration::from_secs(20), || {
        !ns[0].node.bootstrap_calls().is_empty()
    });
    let mut k = k;
    k.child.kill().unwrap();
    let _ = k.child.wait();
    ns[0]
        .node
        .reply_delay_ms
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let mut k = start(&s);
    check_in_all(&rt, &s, &[2, 3]);
    wait("confirmation", Duration::from_secs(30), || {
        ns[0].node.bootstrap_calls().len() >= 2
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ns[0].node.bootstrap_calls(),
        vec!["ok", "AlreadyExists: etcd data directory is not empty"]
    );
    assert_eq!(
        shared.clusters.lock().unwrap().clone(),
        vec!["cp-1".to_string()]
    );
    assert!(ns[1].node.bootstrap_calls().is_empty() && ns[2].node.bootstrap_calls().is_empty());
    k.stop();
    assert!(k.logs().contains("bootstrap: already done"), "{}", k.logs());
}

#[test]
fn manual_bootstrap_uses_the_same_guard() {
    let s = setup(false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut k = start(&s);
    let shared = Arc::new(Shared::default());
    let ns = nodes(&rt, &s, &shared);
    check_in_all(&rt, &s, &[1, 2, 3]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        shared.clusters.lock().unwrap().is_empty(),
        "auto_bootstrap: false must wait for the operator"
    );
    let (ok, out) = cli(&s, &["bootstrap", "lab", "--node", "cp-3"]);
    assert!(ok, "{out}");
    wait("bootstrap", Duration::from_secs(20), || {
        !shared.clusters.lock().unwrap().is_empty()
    });
    // Asking again, even for another node, never bootstraps a second one.
    let (_, out) = cli(&s, &["bootstrap", "lab", "--node", "cp-1"]);
    assert!(
        out.contains("already bootstrapped") || out.contains("never sends it to another node"),
        "{out}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        shared.clusters.lock().unwrap().clone(),
        vec!["cp-3".to_string()]
    );
    assert!(ns[0].node.bootstrap_calls().is_empty());
    k.stop();
}

/// The cluster's bootstrap record, over the API socket.
fn cluster_json(s: &Setup) -> serde_json::Value {
    serde_json::from_str(&common::api_get(&s.lab, "/api/v1/cluster")).unwrap()
}

#[test]
fn forged_events_and_impostor_nodes_never_get_bootstrap() {
    let s = setup(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut k = start(&s);
    let sink = SocketAddr::from(([127, 0, 0, 1], s.bound.get().events));
    // Events from an address DHCP gave no machine: counted, dropped.
    rt.block_on(talos::publish(sink, ip(40), ev::first_boot()))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    for h in ["cp-1", "cp-2", "cp-3", "w-1"] {
        assert_eq!(state_of(&s, h), "discovered", "{h} moved on a forged event");
    }
    assert!(cluster_json(&s)[0]["bootstrap_node"].is_null());
    assert!(k
        .logs()
        .contains("event dropped: 127.0.1.40 is no machine's DHCP-proven address"));
    let r: serde_json::Value =
        serde_json::from_str(&common::api_get(&s.lab, "/api/v1/refusals")).unwrap();
    assert!(r["events_dropped"].as_u64() >= Some(1), "{r}");

    // At cp-1's address, a node whose certificate is another cluster's (it
    // accepts kiln's client certificate and would take Bootstrap); at cp-2's,
    // a node of this cluster that is another machine (cp-9).
    let b = bundle(&s);
    let other = Bundle::generate(13).unwrap();
    let shared = Arc::new(Shared::default());
    let at = |n: u8| SocketAddr::new(ip(n).into(), s.talos_port);
    let stranger = talos::start_with(&rt, "cp-1", at(1), &other, &b, shared.clone());
    let wrong = talos::start_with(&rt, "cp-9", at(2), &b, &b, shared.clone());
    check_in_all(&rt, &s, &[1]);
    k.wait_for(
        "cp-1 was not recorded as the bootstrap node",
        Duration::from_secs(40),
    );
    check_in_all(&rt, &s, &[2]);
    k.wait_for(
        "cp-2 was not recorded as the bootstrap node",
        Duration::from_secs(40),
    );
    assert!(stranger.node.bootstrap_calls().is_empty() && wrong.node.bootstrap_calls().is_empty());
    assert!(cluster_json(&s)[0]["bootstrap_node"].is_null());
    let logs = k.logs();
    assert!(
        logs.contains("no certificate from the cluster's OS CA"),
        "{logs}"
    );
    assert!(
        logs.contains("its certificate names [\"cp-9\", \"cp-9.lab.local\"], not cp-2"),
        "{logs}"
    );
    k.stop();

    // A target recorded before kiln proved targets (an older kiln's store)
    // never gets Bootstrap either; `kiln bootstrap --reset` clears it.
    let store = kiln::store::Store::open(&s.lab.path().join("state")).unwrap();
    store
        .clusters()
        .update("lab", |r| {
            // Exactly what an older kiln wrote: a decision, never a proof.
            *r = kiln::store::clusters::ClusterRecord {
                name: "lab".into(),
                bootstrap_node: Some(kiln::store::clusters::Node {
                    mac: "52:54:00:aa:00:01".parse().unwrap(),
                    hostname: "cp-1".into(),
                    ip: ip(1),
                }),
                decided_at: Some(1),
                ..Default::default()
            };
        })
        .unwrap();
    drop(store);
    let mut k = start(&s);
    k.wait_for(
        "not calling cp-1: it has not proved itself",
        Duration::from_secs(20),
    );
    let (ok, out) = cli(&s, &["bootstrap", "lab", "--reset"]);
    assert!(ok && out.contains("cleared cp-1"), "{out}");
    assert!(cluster_json(&s)[0]["bootstrap_node"].is_null());
    // The real cp-3 proves itself and is bootstrapped; the impostors never were.
    let real = talos::start(&rt, "cp-3", at(3), &b, shared.clone());
    wait("cp-3's driver is free", Duration::from_secs(20), || {
        k.logs().contains("no longer the recorded node")
    });
    check_in_all(&rt, &s, &[3]);
    wait("bootstrap", Duration::from_secs(30), || {
        !shared.clusters.lock().unwrap().is_empty()
    });
    assert_eq!(
        shared.clusters.lock().unwrap().clone(),
        vec!["cp-3".to_string()]
    );
    assert_eq!(real.node.bootstrap_calls(), vec!["ok"]);
    assert!(stranger.node.bootstrap_calls().is_empty() && wrong.node.bootstrap_calls().is_empty());
    // Reset is refused once the cluster is bootstrapped.
    wait("bootstrap recorded", Duration::from_secs(10), || {
        cluster_json(&s)[0]["bootstrapped_at"].is_u64()
    });
    let (ok, out) = cli(&s, &["bootstrap", "lab", "--reset"]);
    assert!(!ok && out.contains("was bootstrapped"), "{out}");
    k.stop();
}

#[test]
fn the_stand_in_enforces_mtls_and_roles_like_apid() {
    use kiln::talos::client::{connect, Credentials};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = Bundle::generate(13).unwrap();
    let other = Bundle::generate(13).unwrap();
    let port = free_port();
    let shared = Arc::new(Shared::default());
    let n = talos::start(
        &rt,
        "cp-1",
        SocketAddr::new(ip(21).into(), port),
        &b,
        shared.clone(),
    );
    rt.block_on(async {
        // A reader may ask the version, not bootstrap.
        let mut c = connect(
            ip(21),
            port,
            &Credentials::with_roles(&b, &["os:reader"]).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            c.version(()).await.unwrap().into_inner().messages[0]
                .version
                .as_ref()
                .unwrap()
                .tag,
            "v1.13.9"
        );
        let e = c
            .bootstrap(kiln::talos::proto::machine::BootstrapRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // A certificate from another cluster's CA does not even get through TLS.
        let stranger = Credentials::admin(&other).unwrap();
        match connect(ip(21), port, &stranger).await {
            Err(_) => {}
            Ok(mut c) => assert!(c.version(()).await.is_err(), "a foreign CA was accepted"),
        }
        // The admin gets through; the second call finds etcd not empty.
        let mut c = connect(ip(21), port, &Credentials::admin(&b).unwrap())
            .await
            .unwrap();
        c.bootstrap(kiln::talos::proto::machine::BootstrapRequest::default())
            .await
            .unwrap();
        let e = c
            .bootstrap(kiln::talos::proto::machine::BootstrapRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                tonic::Code::AlreadyExists,
                "etcd data directory is not empty"
            )
        );
    });
    assert_eq!(
        n.node.bootstrap_calls().len(),
        2,
        "the reader's call never reached Bootstrap"
    );
}

/// Talos's kernel log stream (JSON lines over TCP, as its jsonLinesSender
/// writes them): kept per machine when it comes from the machine's proven
/// address, shown by `kiln logs` and `kiln logs -f`; from any other address
/// the connection is closed unread.
#[test]
fn kernel_logs_are_kept_per_machine_from_its_own_address_only() {
    use std::io::Write;
    let s = setup(true);
    let mut k = start(&s);
    let line = |seq: u32, msg: &str| {
        format!("{{\"clock\":{seq},\"facility\":\"kern\",\"msg\":\"{msg}\",\"priority\":\"info\",\"seq\":{seq},\"talos-level\":\"info\",\"talos-time\":\"2026-12-02T10:00:0{seq}Z\"}}\n")
    };
    let send = |from: std::net::Ipv4Addr, text: &str| {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
        sock.connect(&SocketAddr::from(([127, 0, 0, 1], s.bound.get().kmsg)).into())
            .unwrap();
        let mut t: std::net::TcpStream = sock.into();
        t.write_all(text.as_bytes()).unwrap();
    };
    let logs = |args: &[&str]| cli(&s, args);
    // cp-1 from its own address; an impostor claims to be cp-1 from another.
    send(
        ip(1),
        &(line(1, "Linux version 6.12.0-talos") + &line(2, "virtio_net virtio0 eth0: renamed")),
    );
    send(
        std::net::Ipv4Addr::new(127, 0, 0, 9),
        &line(3, "forged: I am cp-1"),
    );
    wait("cp-1's log", Duration::from_secs(10), || {
        logs(&["logs", "cp-1"]).1.contains("renamed")
    });
    let (ok, out) = logs(&["logs", "cp-1"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("2026-12-02T10:00:01Z info kern: Linux version 6.12.0-talos"),
        "{out}"
    );
    assert!(!out.contains("forged"), "{out}");
    assert!(logs(&["logs", "cp-2"]).1.trim().is_empty());
    // -f follows new lines.
    let mut f = std::process::Command::new(kiln_bin())
        .args([
            "logs",
            "-f",
            "cp-1",
            "--config",
            s.lab.config().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    send(ip(1), &line(4, "talos: booted"));
    let mut seen = String::new();
    let mut out = f.stdout.take().unwrap();
    let t0 = Instant::now();
    while !seen.contains("talos: booted") && t0.elapsed() < Duration::from_secs(15) {
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut out, &mut buf).unwrap_or(0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = f.kill();
    let _ = f.wait();
    assert!(
        seen.contains("talos: booted") && seen.contains("Linux version"),
        "{seen}"
    );
    let m =
        common::curl::curl(&[&format!("http://127.0.0.1:{}/metrics", s.bound.get().http)]).text();
    assert!(
        common::metric(&m, "kiln_kmsg_lines_total{result=\"stored\"}") >= 3.0,
        "{m}"
    );
    assert!(
        common::metric(&m, "kiln_kmsg_lines_total{result=\"refused\"}") >= 1.0,
        "{m}"
    );
    k.stop();
    assert!(
        k.logs()
            .contains("kernel log refused: 127.0.0.9 is no machine's DHCP-proven address"),
        "{}",
        k.logs()
    );
}
