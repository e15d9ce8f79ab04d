//! `kiln check`, refusal to start, environment overrides, live reload.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{have, kiln_bin, skip_unless, Kiln, Lab, LoPorts, Ports};

fn yaml(http: u16) -> String {
    let ports = Ports {
        http,
        ..Ports::any()
    };
    format!("{}ipxe_dirs: [./ipxe]\n", ports.lo_yaml())
}

/// The README's quick start on the shipped example: `kiln assets pull` into
/// an empty boot-assets (from a stand-in Image Factory, as KILN_FACTORY_URL
/// points it), then `kiln check` is clean and the served files are the pulled ones.
#[test]
fn shipped_example_pulls_and_checks_clean() {
    if skip_unless(
        std::path::Path::new("/usr/lib/ipxe/undionly.kpxe").exists(),
        "Debian's ipxe package (/usr/lib/ipxe)",
    ) {
        return;
    }
    let mut files = std::collections::BTreeMap::new();
    files.insert("kernel-amd64".to_string(), vec![7u8; 50_000]);
    files.insert("initramfs-amd64.xz".to_string(), vec![9u8; 90_000]);
    let f = common::factory::FakeFactory::start(files);
    let assets = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(kiln_bin())
            .args(args)
            .args(["--config", "examples/lab/kiln.yaml"])
            .env("KILN_FACTORY_URL", f.url())
            .env("KILN_BOOT_ASSETS", assets.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = run(&["check"]);
    assert!(
        !ok && out.contains("kiln assets pull --profile"),
        "empty boot-assets: {out}"
    );
    let (ok, out) = run(&["assets", "pull"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["check"]);
    assert!(ok, "{out}");
    assert!(out.contains("ok (2 profiles, 4 machines)"), "{out}");
    // One schematic for both profiles (net.ifnames=0), pulled once.
    let posts = f.log().iter().filter(|l| *l == "POST /schematics").count();
    assert_eq!(posts, 1, "{:?}", f.log());
}

#[test]
fn check_names_file_line_and_problem_and_serve_refuses() {
    let lab = Lab::new(
        &format!("{}dhcp:\n  mode: full\n  subnet: 10.99.0.0/24\n  range: [10.99.0.100, 10.99.0.200]\n", yaml(0)).replace("server_address: 127.0.0.1", "server_address: 10.99.0.1"),
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n  - mac: 52-54-00-AA-00-01\n    hostname: cp-1\n    profile: gpu\n    ip: 10.1.0.5\n  - mac: 52:54:00:aa:00\n    hostname: w-1\n    profile: worker\n",
    );
    // No iPXE binaries anywhere, no kernel for the worker profile.
    std::fs::remove_file(lab.path().join("boot-assets/talos/v1.13.9/vmlinuz-amd64")).unwrap();
    let out = Command::new(kiln_bin())
        .arg("check")
        .arg("--config")
        .arg(lab.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "machines.yaml: line 5: machines[1].mac: duplicate MAC 52:54:00:aa:00:01 (first at line 2)",
        "machines.yaml: line 6: machines[1].hostname: duplicate hostname \"cp-1\"",
        "machines.yaml: line 7: machines[1].profile: unknown profile \"gpu\"",
        "machines.yaml: line 8: machines[1].ip: 10.1.0.5 is outside the DHCP subnet (10.99.0.0/24)",
        "machines.yaml: line 9: machines[2].mac: malformed MAC address \"52:54:00:aa:00\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Fix the inventory; what is left is assets.
    std::fs::write(
        lab.path().join("machines.yaml"),
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n",
    )
    .unwrap();
    let out = Command::new(kiln_bin())
        .arg("check")
        .arg("--config")
        .arg(lab.config())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("kiln.yaml: boot_assets: missing iPXE binary undionly.kpxe"),
        "{err}"
    );
    assert!(
        err.contains("controlplane.yaml: kernel: missing boot asset"),
        "{err}"
    );
    // serve refuses on the same problems, before binding anything.
    let out = Command::new(kiln_bin())
        .arg("serve")
        .arg("--config")
        .arg(lab.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing iPXE binary") && err.contains("refusing to start"),
        "{err}"
    );
    // A config error names the key.
    let out = Command::new(kiln_bin())
        .arg("check")
        .arg("--config")
        .arg(lab.path().join("nope.yaml"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.yaml: config file not found"));
}

#[test]
fn environment_overrides_and_live_reload() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = Lab::new(
        &yaml(1),
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n",
    );
    lab.ipxe_stubs();
    // KILN_PORTS__HTTP overrides ports.http (1 in the file): 0, any port.
    // In the child's environment only: a process-wide set_var would reach the
    // kilns other tests in this binary start meanwhile.
    let mut k = Kiln::start_env(&lab.config(), None, &[("KILN_PORTS__HTTP", "0")]);
    let http = k.ports.http;
    assert_ne!(http, 1, "the environment overrides the file");
    let get =
        |mac: &str| common::curl::curl(&[&format!("http://127.0.0.1:{http}/ipxe/{mac}")]).text();
    assert!(get("52-54-00-aa-00-02").contains("not in the inventory"));

    // Add a machine and send SIGHUP: it boots at once.
    std::fs::write(
        lab.path().join("machines.yaml"),
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n  - mac: 52:54:00:aa:00:02\n    hostname: w-1\n    profile: worker\n",
    )
    .unwrap();
    k.signal(libc::SIGHUP);
    k.wait_for("reloaded inventory", Duration::from_secs(10));
    assert!(get("52-54-00-aa-00-02").contains("profile worker"));

    // A broken edit (picked up by the file watcher) is refused; the last good
    // inventory stays in service.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        lab.path().join("machines.yaml"),
        "machines:\n  - mac: 52:54:00:aa:00:02\n    hostname: w-1\n    profile: nosuch\n",
    )
    .unwrap();
    k.wait_for(
        "reload refused, keeping the last good inventory",
        Duration::from_secs(10),
    );
    assert!(
        k.logs().contains("unknown profile \\\"nosuch\\\"")
            || k.logs().contains("unknown profile \"nosuch\""),
        "{}",
        k.logs()
    );
    assert!(get("52-54-00-aa-00-02").contains("profile worker"));
    assert!(get("52-54-00-aa-00-01").contains("profile controlplane"));
    k.stop();
    assert!(k.logs().contains("shutting down"));
}

/// A lab whose cluster runs Talos v1.14, with that release's boot files and
/// iPXE stubs in place.
fn v14_lab(machines: &str) -> Lab {
    let lab = Lab::new(
        &format!(
            "{}clusters:\n  lab:\n    endpoint: https://10.0.0.5:6443\n    talos_version: v1.14.0-rc.1\n",
            yaml(0)
        ),
        machines,
    );
    let assets = lab.path().join("boot-assets/talos/v1.14.0-rc.1");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("vmlinuz-amd64"), vec![0x4b; 4096]).unwrap();
    std::fs::write(assets.join("initramfs-amd64.xz"), vec![0x1f; 4096]).unwrap();
    lab.ipxe_stubs();
    lab
}

/// `kiln check` on `lab`: (success, stdout + stderr).
fn check(lab: &Lab) -> (bool, String) {
    common::run_kiln(None, &["check", "--config", lab.config().to_str().unwrap()])
}

/// A v1.14 profile keeps its v1.13-style patch (migrated, each move listed by
/// `kiln check`); what a Talos node would refuse, or what has no faithful
/// rewrite, fails `kiln check` naming the profile, the patch and the field.
#[test]
fn v1_14_profiles_migrate_legacy_patches_and_refuse_conflicts() {
    let lab =
        v14_lab("machines:\n  - mac: 52:54:00:aa:00:02\n    hostname: w-1\n    profile: worker\n");
    let p = lab.path();
    let worker = |patch: &str| {
        std::fs::write(p.join("legacy.yaml"), patch).unwrap();
        std::fs::write(
            p.join("profiles/worker.yaml"),
            "role: worker\ntalos_version: v1.14.0-rc.1\ninstall_disk: /dev/sda\npatches: [../legacy.yaml]\n",
        )
        .unwrap();
        check(&lab)
    };
    let (ok, out) = worker(
        "machine:\n  kubelet:\n    extraArgs:\n      max-pods: 250\n  nodeLabels:\n    rack: r1\n",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("profile worker: ")
            && out.contains("legacy.yaml sets v1alpha1 fields Talos v1.14.0-rc.1 moved")
            && out.contains("machine.kubelet.extraArgs → KubeletConfig.extraArgs")
            && out.contains("machine.nodeLabels → KubeNodeConfig.labels"),
        "{out}"
    );
    // A control-plane-only document on a worker: Talos's container rule.
    let (ok, out) = worker("apiVersion: v1alpha1\nkind: KubeProxyConfig\nmode: ipvs\n");
    assert!(!ok, "{out}");
    assert!(
        out.contains("profile worker: a Talos node would refuse this config (1 error)")
            && out.contains("legacy.yaml: KubeProxyConfig: the following document kinds are only allowed on control plane machines: [KubeProxyConfig]"),
        "{out}"
    );
    // A legacy field with no faithful rewrite.
    let (ok, out) = worker("machine:\n  kubelet:\n    extraMounts:\n      - destination: /var/lib/x\n        type: bind\n        source: /var/lib/x\n");
    assert!(!ok, "{out}");
    assert!(
        out.contains("legacy.yaml: cannot migrate to Talos v1.14.0-rc.1 documents: machine.kubelet.extraMounts: has no automatic v1.14 rewrite"),
        "{out}"
    );
}

/// `unknown_machines: hold`: a machine not in the inventory gets a script that
/// waits and asks again; once it is added, the same request boots it.
#[test]
fn held_unknown_machines_boot_once_added() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = Lab::new(
        &format!("{}unknown_machines: hold\n", yaml(0)),
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n",
    );
    lab.ipxe_stubs();
    let mut k = Kiln::start(&lab.config(), None);
    let http = k.ports.http;
    let get = |mac: &str| {
        common::curl::curl(&[&format!("http://127.0.0.1:{http}/ipxe/{mac}?platform=efi")]).text()
    };
    let held = get("52-54-00-aa-00-07");
    assert!(
        held.contains("holding") && held.contains(":retry\nsleep 30\nchain --replace --autofree"),
        "{held}"
    );
    assert!(!held.contains("kernel "), "{held}");
    std::fs::write(
        lab.path().join("machines.yaml"),
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n  - mac: 52:54:00:aa:00:07\n    hostname: w-7\n    profile: worker\n",
    )
    .unwrap();
    k.wait_for("reloaded inventory", Duration::from_secs(15));
    let script = get("52-54-00-aa-00-07");
    assert!(
        script.contains("kernel ") && script.contains("w-7"),
        "{script}"
    );
}

/// A shared v1.13-style patch that moves into control-plane-only documents
/// (kube-proxy off, as for Cilium) still renders for workers on v1.14: the
/// migration leaves those documents out there.
#[test]
fn migrated_control_plane_documents_stay_off_workers() {
    let lab = v14_lab("machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n  - mac: 52:54:00:aa:00:02\n    hostname: w-1\n    profile: worker\n");
    let p = lab.path();
    std::fs::write(
        p.join("cilium.yaml"),
        "cluster:\n  proxy:\n    disabled: true\n  network:\n    cni:\n      name: none\n",
    )
    .unwrap();
    for role in ["controlplane", "worker"] {
        std::fs::write(
            p.join(format!("profiles/{role}.yaml")),
            format!("role: {role}\ntalos_version: v1.14.0-rc.1\ninstall_disk: /dev/sda\npatches: [../cilium.yaml]\n"),
        )
        .unwrap();
    }
    let (ok, text) = check(&lab);
    assert!(ok, "{text}");
    assert!(
        text.contains("cluster.proxy.disabled → KubeProxyConfig.enabled"),
        "{text}"
    );
}
