//! Acceptance: a whole cluster netboots in QEMU, BIOS and UEFI, with no hands.
//!
//! One bridge in a namespace, kiln in full DHCP mode on it, 3 control planes
//! (VIP) and a worker, on the Talos v1.14 contract (multi-document configs
//! the stand-ins check as Talos does at boot): two boot SeaBIOS + iPXE ROM, two OVMF with the
//! firmware's own PXE client (TFTP ipxe.efi, then iPXE over HTTP). Their Talos
//! is tests/fake-talos (a static binary in a busybox initramfs on Debian's
//! cloud kernel): it fetches its config, checks it is its own, publishes the
//! lifecycle events and serves the Talos API with mTLS. VMs run two at a time
//! (2 cores, TCG). Then cp-3 dies and a box with a new MAC replaces it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::guest::{self, Firmware, Vm};
use common::netns::{self, Net};
use common::{skip_unless, Kiln, Lab};

struct M {
    host: &'static str,
    mac: &'static str,
    ip: &'static str,
    fw: Firmware,
    tap: &'static str,
}

const MS: [M; 4] = [
    M {
        host: "cp-1",
        mac: "52:54:00:e2:00:01",
        ip: "10.99.0.11",
        fw: Firmware::BiosIpxeRom,
        tap: "tap1",
    },
    M {
        host: "cp-2",
        mac: "52:54:00:e2:00:02",
        ip: "10.99.0.12",
        fw: Firmware::UefiPxe,
        tap: "tap2",
    },
    M {
        host: "cp-3",
        mac: "52:54:00:e2:00:03",
        ip: "10.99.0.13",
        fw: Firmware::BiosIpxeRom,
        tap: "tap3",
    },
    M {
        host: "w-1",
        mac: "52:54:00:e2:00:04",
        ip: "10.99.0.21",
        fw: Firmware::UefiPxe,
        tap: "tap4",
    },
];
const STRANGER: &str = "52:54:00:e2:00:99";
const NEW_CP3: &str = "52:54:00:e2:00:33";

/// Seconds since midnight of a kiln log line's timestamp.
fn ts(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let time = t.split('T').nth(1)?.trim_end_matches('Z');
    let mut it = time.split(':');
    let (h, m, s): (f64, f64, f64) = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

fn first(logs: &str, pred: impl Fn(&str) -> bool) -> Option<f64> {
    logs.lines().find(|l| pred(l)).and_then(ts)
}

#[test]
fn a_whole_cluster_netboots_bios_and_uefi_with_no_hands() {
    if netns::skip(&[])
        || guest::skip()
        || skip_unless(guest::ovmf_present(), "OVMF (Debian package ovmf)")
        || skip_unless(
            common::have("etcd") && common::have("etcdctl"),
            "etcd and etcdctl (Debian packages etcd-server, etcd-client)",
        )
    {
        return;
    }
    let t0 = Instant::now();
    let (vmlinuz, initrd) = guest::build_talos();
    let build = t0.elapsed();
    let net = Net::new("e2", "10.99.0.1/24");
    for m in &MS {
        net.add_tap(m.tap);
    }
    net.add_tap("tap9");
    let machines: String = MS
        .iter()
        .map(|m| {
            format!(
                "  - {{mac: {}, hostname: {}, profile: {}, ip: {}}}\n",
                m.mac,
                m.host,
                if m.host.starts_with("cp") {
                    "controlplane"
                } else {
                    "worker"
                },
                m.ip
            )
        })
        .collect();
    // The boot files come the way a new user's do: `kiln assets pull` from an
    // Image Factory (the stand-in serves the test's guest kernel and initramfs).
    let mut files = std::collections::BTreeMap::new();
    files.insert("kernel-amd64".to_string(), std::fs::read(&vmlinuz).unwrap());
    files.insert(
        "initramfs-amd64.xz".to_string(),
        std::fs::read(&initrd).unwrap(),
    );
    let factory = common::factory::FakeFactory::start(files);
    let lab = Lab::new(
        &format!("interface: br0\nserver_address: 10.99.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\nfactory_url: {}\ndhcp:\n  mode: full\n  subnet: 10.99.0.0/24\n  range: [10.99.0.100, 10.99.0.200]\n  router: 10.99.0.1\nclusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n    talos_version: v1.14.0-rc.1\n", factory.url()),
        &format!("machines:\n{machines}"),
    );
    let boot = "console: [console=ttyS0]\nkernel_args: [panic=-1]\ninstall_disk: /dev/vda\ndhcp_interfaces: [eth0]\n";
    std::fs::write(
        lab.path().join("profiles/controlplane.yaml"),
        format!("role: controlplane\nvip: 10.99.0.5\n{boot}"),
    )
    .unwrap();
    std::fs::write(
        lab.path().join("profiles/worker.yaml"),
        format!("role: worker\n{boot}"),
    )
    .unwrap();
    let (ok, out) = common::run_kiln(
        None,
        &[
            "assets",
            "pull",
            "--config",
            &lab.config().display().to_string(),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        factory.log().iter().any(|l| l == "POST /schematics"),
        "{:?}",
        factory.log()
    );
    let mut k = Kiln::start(&lab.config(), Some(&net.server));
    let boot_start = Instant::now();

    // Two at a time: cp-1 (BIOS) and cp-2 (UEFI), then cp-3 (BIOS) and w-1 (UEFI)
    // with the stranger alongside.
    let mut vms: BTreeMap<&str, Vm> = BTreeMap::new();
    let mut stranger = None;
    for pair in [[0usize, 1], [2, 3]] {
        for &i in &pair {
            let m = &MS[i];
            vms.insert(
                m.host,
                Vm::spawn(&net.server, m.tap, m.mac, m.fw, lab.path()),
            );
        }
        if pair[0] == 2 {
            stranger = Some(Vm::spawn(
                &net.server,
                "tap9",
                STRANGER,
                Firmware::BiosIpxeRom,
                lab.path(),
            ));
        }
        for &i in &pair {
            let m = &MS[i];
            let vm = vms.get_mut(m.host).unwrap();
            let ok = vm.wait_for("FAKE-TALOS: ready", Duration::from_secs(420));
            assert!(
                ok,
                "{} never got ready:\n{}\n--- kiln ---\n{}",
                m.host,
                vm.log(),
                k.logs()
            );
            eprintln!(
                "{} ready after {:.1}s",
                m.host,
                vm.started.elapsed().as_secs_f64()
            );
        }
    }
    let all_ready = boot_start.elapsed();

    // Each guest got its own config, from its reservation.
    for m in &MS {
        let log = vms[m.host].log();
        let (role, vip) = if m.host.starts_with("cp") {
            ("controlplane", "10.99.0.5")
        } else {
            ("worker", "none")
        };
        let want = format!("FAKE-TALOS: config role={role} hostname={} vip={vip} disk=/dev/vda sink=10.99.0.1:4002", m.host);
        assert!(log.contains(&want), "{}: want {want:?} in\n{log}", m.host);
        assert!(
            log.contains(&format!("FAKE-TALOS: address {}", m.ip)),
            "{}: not its reserved address\n{log}",
            m.host
        );
    }
    // Exactly one Bootstrap, to one control plane.
    let bootstrapped: Vec<&str> = MS
        .iter()
        .filter(|m| vms[m.host].log().contains("FAKE-TALOS: bootstrap calls"))
        .map(|m| m.host)
        .collect();
    assert_eq!(bootstrapped.len(), 1, "bootstrap went to {bootstrapped:?}");
    let blog = vms[bootstrapped[0]].log();
    assert!(
        blog.contains("FAKE-TALOS: bootstrap calls [\"ok\"]") && !blog.contains("\"ok\", "),
        "{blog}"
    );

    // kiln's side: the right boot file per firmware, the lifecycle, the files.
    let logs = k.logs();
    for m in &MS {
        assert!(
            logs.contains(&format!("mac={} xid", m.mac))
                || logs.contains(&format!("dhcp{{mac={}", m.mac)),
            "{}",
            m.host
        );
        match m.fw {
            Firmware::BiosIpxeRom => assert!(
                logs.lines().any(
                    |l| l.contains(m.mac) && l.contains("boot http://10.99.0.1:8080/boot.ipxe")
                ),
                "{}: no iPXE script offer",
                m.host
            ),
            Firmware::UefiPxe => assert!(
                logs.lines()
                    .any(|l| l.contains(m.mac) && l.contains("boot ipxe.efi")),
                "{}: no ipxe.efi offer",
                m.host
            ),
        }
        assert!(
            logs.lines()
                .any(|l| l.contains(m.mac) && l.contains(&format!("ack {}", m.ip))),
            "{}: no ack of its reservation",
            m.host
        );
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("tftp: sending") && l.contains("ipxe.efi")),
        "no TFTP of ipxe.efi"
    );
    // kiln's CLI inside the namespace, against its local API: (success, output).
    let kiln_cli = |args: &[&str]| common::run_kiln_in(&net.server, &lab, args);
    let (ok, out) = kiln_cli(&["machines", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{ok}: {out}"));
    for m in &MS {
        let st = v
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["hostname"] == m.host)
            .unwrap()["state"]
            .clone();
        assert_eq!(st, "ready", "{}", m.host);
    }
    for f in ["talosconfig", "kubeconfig"] {
        assert!(lab.path().join("state").join(f).is_file(), "{f}");
    }

    // The stranger never got an answer or a config.
    let stranger = stranger.unwrap();
    assert!(
        !logs.lines().any(|l| l.contains(STRANGER)
            && (l.contains(": offer ") || l.contains(": ack ") || l.contains("config served"))),
        "the unknown MAC was answered"
    );
    assert!(
        !stranger.log().contains("FAKE-TALOS"),
        "the unknown MAC booted"
    );
    drop(stranger);

    // Hardware swap: cp-3 (never the bootstrapped one: it boots after the
    // Bootstrap) dies, a box with a new MAC takes its place, and kiln alone
    // gets the cluster back to three control planes: remove the dead etcd
    // member through a healthy node, move the identity, serve the new box
    // cp-3's config; the box joins etcd (learner, then promoted) by itself.
    let replaced = Instant::now();
    let members = |via: &str| -> serde_json::Value {
        let out = netns::sh(&[
            "ip",
            "netns",
            "exec",
            &net.server,
            "etcdctl",
            &format!("--endpoints=http://{via}:2379"),
            "--command-timeout=10s",
            "member",
            "list",
            "-w",
            "json",
        ])
        .expect("etcdctl member list");
        serde_json::from_str(&out).unwrap()
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        let mut n: Vec<String> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap_or("").to_string())
            .collect();
        n.sort();
        n
    };
    let id_of = |v: &serde_json::Value, host: &str| {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == host)
            .map(|m| m["ID"].clone())
    };
    let before = members(MS[0].ip);
    assert_eq!(names(&before), ["cp-1", "cp-2", "cp-3"], "{before}");
    let old_id = id_of(&before, "cp-3").unwrap();
    assert!(
        !vms["cp-3"].log().contains("bootstrap calls"),
        "cp-3 was bootstrapped"
    );
    drop(vms.remove("cp-3"));
    let (ok, out) = kiln_cli(&["replace", "cp-3", "--mac", NEW_CP3, "--yes"]);
    assert!(ok, "replace failed:\n{out}\n--- kiln ---\n{}", k.logs());
    assert!(out.contains("removed etcd member cp-3"), "{out}");
    let after_removal = members(MS[0].ip);
    assert_eq!(names(&after_removal), ["cp-1", "cp-2"], "{after_removal}");
    let mut newbox = Vm::spawn(
        &net.server,
        "tap3",
        NEW_CP3,
        Firmware::BiosIpxeRom,
        lab.path(),
    );
    assert!(
        newbox.wait_for("FAKE-TALOS: ready", Duration::from_secs(420)),
        "the replacement never got ready:\n{}\n--- kiln ---\n{}",
        newbox.log(),
        k.logs()
    );
    let nlog = newbox.log();
    assert!(
        nlog.contains("FAKE-TALOS: config role=controlplane hostname=cp-3 vip=10.99.0.5")
            && nlog.contains(&format!("FAKE-TALOS: address {}", MS[2].ip))
            && nlog.contains("FAKE-TALOS: etcd: joined"),
        "{nlog}"
    );
    assert!(
        !nlog.contains("bootstrap calls"),
        "Bootstrap reached the replacement: {nlog}"
    );
    let after = members(MS[0].ip);
    assert_eq!(names(&after), ["cp-1", "cp-2", "cp-3"], "{after}");
    assert_ne!(id_of(&after, "cp-3").unwrap(), old_id);
    assert!(
        after["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["isLearner"].as_bool() != Some(true)),
        "{after}"
    );
    let (ok, out) = kiln_cli(&["machines", "--output", "json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cps: Vec<(String, String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "controlplane")
        .map(|m| {
            (
                m["hostname"].as_str().unwrap().to_string(),
                m["mac"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(cps.len(), 3, "{out}");
    assert!(cps.iter().all(|(_, _, st)| st == "ready"), "{out}");
    assert!(
        cps.iter().any(|(h, mac, _)| h == "cp-3" && mac == NEW_CP3),
        "{out}"
    );
    let old = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mac"] == MS[2].mac)
        .expect("the old MAC is listed");
    assert_eq!(old["state"], "retired", "{out}");
    assert_eq!(
        old["last_event"],
        format!("replaced by {NEW_CP3}").as_str(),
        "{out}"
    );
    eprintln!(
        "replace: three control planes again {:.1}s after cp-3 died",
        replaced.elapsed().as_secs_f64()
    );
    vms.insert("cp-3", newbox);

    // A second PXE boot of an installed machine gets the local-boot script.
    drop(vms.remove("cp-1"));
    let mut again = Vm::spawn(
        &net.server,
        "tap1",
        MS[0].mac,
        Firmware::BiosIpxeRom,
        lab.path(),
    );
    assert!(
        again.wait_for("booting from local disk", Duration::from_secs(120)),
        "{}",
        again.log()
    );
    assert!(k
        .logs()
        .lines()
        .any(|l| l.contains(MS[0].mac) && l.contains("local boot: installed")));
    drop(again);
    drop(vms);
    // What the netboot looked like to Prometheus: valid text, real counts.
    let m = common::curl::curl_in(&net.server, &["-f", "http://10.99.0.1:8080/metrics"]).text();
    common::promtool_check(&m);
    let v = |series: &str| common::metric(&m, series);
    assert!(
        v("kiln_dhcp_packets_received_total{message_type=\"discover\",mode=\"dhcp\"}") >= 5.0,
        "{m}"
    );
    assert!(
        v("kiln_dhcp_packets_sent_total{message_type=\"ack\",mode=\"dhcp\"}") >= 5.0,
        "{m}"
    );
    assert!(
        v("kiln_dhcp_decisions_total{decision=\"ignored\",reason=\"unknown_mac\"}") >= 1.0,
        "the stranger: {m}"
    );
    assert!(
        v("kiln_tftp_transfers_total{result=\"ok\"}") >= 2.0,
        "UEFI firmware fetched ipxe.efi: {m}"
    );
    assert!(v("kiln_tftp_sent_bytes_total") > 100_000.0, "{m}");
    assert!(
        v("kiln_configs_total{reason=\"ok\",result=\"served\"}") >= 5.0,
        "{m}"
    );
    assert!(
        v("kiln_http_asset_sent_bytes_total") > 1_000_000.0,
        "kernels and initramfs: {m}"
    );
    assert!(
        v("kiln_events_total{type=\"MachineStatusEvent\"}") >= 5.0,
        "{m}"
    );
    assert_eq!(
        v("kiln_cluster_bootstrap_state{cluster=\"lab\",state=\"done\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        v("kiln_machine_state{cluster=\"lab\",machine=\"w-1\",state=\"running\"}")
            + v("kiln_machine_state{cluster=\"lab\",machine=\"w-1\",state=\"ready\"}"),
        1.0,
        "{m}"
    );
    // One machine's story, and its page: TFTP, the script, its config, its
    // events, the kernel log it streamed; the bootstrap node's and the
    // replacement's steps.
    let explain = |id: &str| {
        common::run_kiln(
            None,
            &[
                "explain",
                id,
                "--config",
                &lab.config().display().to_string(),
            ],
        )
        .1
    };
    let cp2 = explain("cp-2");
    for want in [
        "tftp: ipxe.efi: sent",
        "script: boot v1.14.0-rc.1 as cp-2",
        "config: served to 10.99.0.12 as cp-2",
        "event: ",
        "state ready",
    ] {
        assert!(cp2.contains(want), "explain cp-2 lacks {want:?}:\n{cp2}");
    }
    let cp1 = explain("cp-1");
    assert!(
        cp1.contains("bootstrap: etcd bootstrapped")
            || explain("cp-2").contains("bootstrap: etcd bootstrapped")
            || explain("cp-3").contains("bootstrap: etcd bootstrapped"),
        "{cp1}"
    );
    assert!(
        explain(NEW_CP3).contains("replace: cp-3"),
        "{}",
        explain(NEW_CP3)
    );
    // The status page after a real netboot, in a real browser inside the
    // boot network's server namespace.
    if let Some(b) = common::browser::Browser::start(Some(&net.server)) {
        b.goto(&format!(
            "http://10.99.0.1:8080/status/machine/{}",
            MS[1].mac
        ));
        let t = b.wait_for("fake-talos: kernel log from cp-2", Duration::from_secs(10));
        for want in ["tftp", "ipxe.efi: sent", "served to 10.99.0.12 as cp-2"] {
            assert!(t.contains(want), "cp-2's page lacks {want:?}:\n{t}");
        }
        b.click_link("← all machines");
        let t = b.wait_for("3/3", Duration::from_secs(10));
        for want in ["cp-1", "cp-2", "cp-3", "w-1", "done"] {
            assert!(t.contains(want), "status page lacks {want:?}:\n{t}");
        }
        assert!(
            t.contains(STRANGER),
            "the stranger is on the pending list:\n{t}"
        );
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-e2e.png");
        b.screenshot(&shot);
        eprintln!("status page screenshot: {}", shot.display());
    }
    k.stop();
    let logs = k.logs();

    // Timings per phase, from kiln's log (median over the machines).
    eprintln!(
        "\nphase timings (s, from kiln's log):\n{:<6} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "host", "dhcp", "fw→script", "kernel+cfg", "events", "total"
    );
    let mut bootstrap_at = None;
    for m in &MS {
        let has = |l: &str, s: &str| l.contains(m.mac) && l.contains(s);
        let dhcp0 = first(&logs, |l| {
            l.contains(&format!("mac={}", m.mac)) && l.contains("DHCP") || has(l, ": offer ")
        });
        let ack = first(&logs, |l| has(l, &format!("ack {}", m.ip)));
        let script = first(&logs, |l| has(l, "machine script: boot"));
        let cfg = first(&logs, |l| has(l, "config served"));
        let running = first(&logs, |l| has(l, "state=\"running\""));
        let f = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.1}", b - a),
            _ => "-".into(),
        };
        eprintln!(
            "{:<6} {:>8} {:>10} {:>10} {:>10} {:>10}",
            m.host,
            f(dhcp0, ack),
            f(ack, script),
            f(script, cfg),
            f(cfg, running),
            f(dhcp0, running)
        );
        if let Some(b) = first(&logs, |l| l.contains("bootstrap: etcd bootstrapped")) {
            bootstrap_at = Some(b);
        }
    }
    let first_running = first(&logs, |l| l.contains("state=\"running\""));
    if let (Some(r), Some(b)) = (first_running, bootstrap_at) {
        eprintln!("bootstrap: {:.1}s after the first control plane ran", b - r);
    }
    eprintln!(
        "guest build {:.1}s, all four ready {:.1}s after kiln started, whole test {:.1}s",
        build.as_secs_f64(),
        all_ready.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
