//! Acceptance with two daemons: kiln-a (10.99.1.1, in the bridge's
//! namespace) and kiln-b (10.99.1.2, its own namespace on the same bridge)
//! share one state through a real 3-member etcd, cluster secrets sealed with
//! one `store.secrets_key`. Two control planes netboot in QEMU (SeaBIOS +
//! iPXE ROM, OVMF's own PXE), each from the daemon the DHCP split gives it.
//! Once the first control plane has installed, the daemon that served it is
//! killed -9; the second boots through the survivor (a machine that booted
//! from the dead daemon asks DHCP again), and the cluster is bootstrapped
//! exactly once, to one node, whoever decided it. The guests' Talos is
//! tests/fake-talos (see tests/e2e_cluster.rs).

mod common;

use std::time::{Duration, Instant};

use common::guest::{self, Firmware, Vm};
use common::netns::{self, Net};
use common::{skip_unless, Kiln, Lab};

const CP1: (&str, &str, &str) = ("cp-1", "52:54:00:e3:00:01", "10.99.1.11");
const CP2: (&str, &str, &str) = ("cp-2", "52:54:00:e3:00:02", "10.99.1.12");

fn lab(
    name: &str,
    iface: &str,
    addr: &str,
    store: &str,
    assets: Option<&std::path::Path>,
    factory: &str,
) -> Lab {
    let assets = assets.map_or("./boot-assets".to_string(), |p| p.display().to_string());
    let l = Lab::new(
        &format!("interface: {iface}\nserver_address: {addr}\nboot_assets: {assets}\nstate_dir: ./state\nfactory_url: {factory}\ndhcp:\n  mode: full\n  subnet: 10.99.1.0/24\n  range: [10.99.1.100, 10.99.1.200]\n  router: 10.99.1.1\nclusters:\n  lab:\n    endpoint: https://10.99.1.5:6443\n    talos_version: v1.14.0-rc.1\n{store}  daemon: {name}\n"),
        &format!(
            "machines:\n  - {{mac: {}, hostname: {}, profile: controlplane, ip: {}}}\n  - {{mac: {}, hostname: {}, profile: controlplane, ip: {}}}\n",
            CP1.1, CP1.0, CP1.2, CP2.1, CP2.0, CP2.2
        ),
    );
    let boot = "console: [console=ttyS0]\nkernel_args: [panic=-1]\ninstall_disk: /dev/vda\ndhcp_interfaces: [eth0]\n";
    std::fs::write(
        l.path().join("profiles/controlplane.yaml"),
        format!("role: controlplane\nvip: 10.99.1.5\n{boot}"),
    )
    .unwrap();
    l
}

#[test]
fn two_daemons_netboot_a_cluster_and_one_dies_after_the_first_install() {
    if netns::skip(&[])
        || guest::skip()
        || skip_unless(guest::ovmf_present(), "OVMF (Debian package ovmf)")
        || common::etcd::skip()
    {
        return;
    }
    let (vmlinuz, initrd) = guest::build_talos();
    let d = tempfile::tempdir().unwrap();
    let etcd = common::etcd::Cluster::start(d.path().join("etcd"), &["e1", "e2", "e3"]);
    let key = d.path().join("secrets.key");
    assert!(common::run_kiln(None, &["store", "keygen", key.to_str().unwrap()]).0);
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("\"{}\"", etcd.client_url(i)))
        .collect();
    let store = format!(
        "store:\n  backend: etcd\n  endpoints: [{}]\n  secrets_key: {}\n",
        endpoints.join(", "),
        key.display()
    );
    let mut net = Net::new("e3", "10.99.1.1/24");
    net.add_tap("tap1");
    net.add_tap("tap2");
    let ns_b = net.add_host("52:54:00:e3:00:fe", "10.99.1.2/24");

    let mut files = std::collections::BTreeMap::new();
    files.insert("kernel-amd64".to_string(), std::fs::read(&vmlinuz).unwrap());
    files.insert(
        "initramfs-amd64.xz".to_string(),
        std::fs::read(&initrd).unwrap(),
    );
    let factory = common::factory::FakeFactory::start(files);
    let la = lab("kiln-a", "br0", "10.99.1.1", &store, None, &factory.url());
    let (ok, out) = common::run_kiln(
        None,
        &[
            "assets",
            "pull",
            "--config",
            &la.config().display().to_string(),
        ],
    );
    assert!(ok, "{out}");
    // b serves the same pulled assets.
    let lb = lab(
        "kiln-b",
        "eth0",
        "10.99.1.2",
        &store,
        Some(&la.path().join("boot-assets")),
        &factory.url(),
    );
    let mut ka = Kiln::start(&la.config(), Some(&net.server));
    let mut kb = Kiln::start(&lb.config(), Some(&ns_b));
    // Both liveness keys are up before the first machine powers on.
    etcd.wait_daemons(2, Duration::from_secs(20));

    // cp-1 boots (BIOS, iPXE ROM) and installs, from whichever daemon answers it.
    let mut cp1 = Vm::spawn(&net.server, "tap1", CP1.1, Firmware::BiosIpxeRom, la.path());
    assert!(
        cp1.wait_for("FAKE-TALOS: ready", Duration::from_secs(420)),
        "cp-1 never got ready:\n{}\n--- a ---\n{}\n--- b ---\n{}",
        cp1.log(),
        ka.logs(),
        kb.logs()
    );
    let served_by_a = ka
        .logs()
        .lines()
        .any(|l| l.contains(CP1.1) && l.contains(&format!("ack {}", CP1.2)));
    let served_by_b = kb
        .logs()
        .lines()
        .any(|l| l.contains(CP1.1) && l.contains(&format!("ack {}", CP1.2)));
    assert!(
        served_by_a != served_by_b,
        "cp-1 acked by a: {served_by_a}, by b: {served_by_b}"
    );
    // The daemon that served it dies outright.
    let (dead, survivor, sl, sns) = if served_by_a {
        (&mut ka, &mut kb, &lb, ns_b.clone())
    } else {
        (&mut kb, &mut ka, &la, net.server.clone())
    };
    dead.signal(9);
    eprintln!(
        "cp-1 ready, served by {}; that daemon killed -9",
        if served_by_a { "a" } else { "b" }
    );

    // cp-2 boots (OVMF's PXE) now: only the survivor answers.
    let mut cp2 = Vm::spawn(&net.server, "tap2", CP2.1, Firmware::UefiPxe, la.path());
    assert!(
        cp2.wait_for("FAKE-TALOS: ready", Duration::from_secs(420)),
        "cp-2 never got ready:\n{}\n--- survivor ---\n{}",
        cp2.log(),
        survivor.logs()
    );
    let slogs = survivor.logs();
    assert!(
        slogs
            .lines()
            .any(|l| l.contains(CP2.1) && l.contains(&format!("ack {}", CP2.2))),
        "the survivor never acked cp-2:\n{slogs}"
    );
    // Exactly one Bootstrap, to one control plane, ["ok"] and nothing more.
    let t0 = Instant::now();
    let bootstrapped = || -> Vec<String> {
        [(&cp1, CP1.0), (&cp2, CP2.0)]
            .iter()
            .filter(|(vm, _)| vm.log().contains("FAKE-TALOS: bootstrap calls"))
            .map(|(_, h)| h.to_string())
            .collect()
    };
    while bootstrapped().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "never bootstrapped:\n{slogs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5));
    let b = bootstrapped();
    assert_eq!(b.len(), 1, "bootstrap went to {b:?}");
    let blog = if b[0] == CP1.0 { cp1.log() } else { cp2.log() };
    assert!(
        blog.contains("FAKE-TALOS: bootstrap calls [\"ok\"]") && !blog.contains("\"ok\", "),
        "{blog}"
    );
    // The survivor's view of the shared state: both ready, one bootstrap.
    let (ok, out) = common::run_kiln_in(&sns, sl, &["machines", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{ok}: {out}"));
    let state = |h: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|m| m["hostname"] == h)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state(CP2.0), "ready", "{out}");
    let cluster = common::api_get(sl, "/api/v1/cluster");
    assert!(
        cluster.contains(&format!("\"hostname\":\"{}\"", b[0])),
        "{cluster}"
    );
    survivor.stop();
}
