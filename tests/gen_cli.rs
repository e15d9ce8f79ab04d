//! `kiln gen secrets` / `kiln gen config` as an operator runs them: the seed's
//! workflow (seven patches + the VIP for control planes), file modes, and the
//! output checked with openssl where a real peer exists.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{have, skip_unless};
use kiln::model::yaml::from_yaml;
use kiln::talos::secrets::{pem_of, Bundle};
use kiln::talos::talosconfig::TalosConfig;

fn kiln(dir: &Path, args: &[&str]) -> (bool, String) {
    common::run_kiln(Some(dir), args)
}

const SEED_PATCHES: &[(&str, &str)] = &[
    ("allow-controlplane-workloads.yaml", "---\ncluster:\n  allowSchedulingOnControlPlanes: true\n"),
    ("cni.yaml", "---\ncluster:\n  network:\n    cni:\n      name: custom\n      urls:\n        - https://docs.projectcalico.org/archive/v3.20/manifests/canal.yaml\n"),
    ("dhcp.yaml", "---\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        dhcp: true\n"),
    ("install-disk.yaml", "---\nmachine:\n  install:\n    disk: /dev/sda\n"),
    ("interface-names.yaml", "---\nmachine:\n  install:\n    extraKernelArgs:\n      - net.ifnames=0\n"),
    ("kubelet-certificates.yaml", "---\nmachine:\n  kubelet:\n    extraArgs:\n      rotate-server-certificates: true\ncluster:\n  extraManifests:\n    - https://raw.githubusercontent.com/alex1989hu/kubelet-serving-cert-approver/main/deploy/standalone-install.yaml\n"),
    ("vip.yaml", "---\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        vip:\n          ip: 192.168.50.200\n"),
];

fn seed_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("patches")).unwrap();
    for (f, body) in SEED_PATCHES {
        std::fs::write(d.path().join("patches").join(f), body).unwrap();
    }
    d
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn seed_workflow_renders_one_eth0_with_dhcp_and_vip() {
    let d = seed_dir();
    let (ok, out) = kiln(d.path(), &["gen", "secrets"]);
    assert!(ok, "{out}");
    assert_eq!(mode(&d.path().join("secrets.yaml")), 0o600);
    let (ok, out) = kiln(d.path(), &["gen", "secrets"]);
    assert!(!ok && out.contains("exists; pass --force"), "{out}");

    let args = [
        "gen",
        "config",
        "intrend-cluster",
        "https://192.168.50.200:6443",
        "--with-secrets",
        "secrets.yaml",
        "--config-patch",
        "@patches/allow-controlplane-workloads.yaml",
        "--config-patch",
        "@patches/cni.yaml",
        "--config-patch",
        "@patches/dhcp.yaml",
        "--config-patch",
        "@patches/install-disk.yaml",
        "--config-patch",
        "@patches/interface-names.yaml",
        "--config-patch",
        "@patches/kubelet-certificates.yaml",
        "--config-patch-control-plane",
        "@patches/vip.yaml",
        "--output",
        "rendered/",
        // The legacy form these patches were written for.
        "--talos-version",
        "v1.13",
    ];
    let (ok, out) = kiln(d.path(), &args);
    assert!(ok, "{out}");
    let r = d.path().join("rendered");
    for f in ["controlplane.yaml", "worker.yaml", "talosconfig"] {
        assert_eq!(mode(&r.join(f)), 0o600, "{f}");
    }
    let cp = from_yaml(&std::fs::read_to_string(r.join("controlplane.yaml")).unwrap()).unwrap();
    let w = from_yaml(&std::fs::read_to_string(r.join("worker.yaml")).unwrap()).unwrap();
    let m = &cp[0]["machine"];
    assert_eq!(
        m["network"]["interfaces"],
        serde_json::json!([{"interface": "eth0", "dhcp": true, "vip": {"ip": "192.168.50.200"}}])
    );
    assert_eq!(
        w[0]["machine"]["network"]["interfaces"],
        serde_json::json!([{"interface": "eth0", "dhcp": true}]),
        "no VIP on workers"
    );
    assert_eq!(m["install"]["disk"], "/dev/sda");
    assert_eq!(
        m["install"]["extraKernelArgs"],
        serde_json::json!(["net.ifnames=0"])
    );
    assert_eq!(
        m["kubelet"]["extraArgs"]["rotate-server-certificates"],
        true
    );
    assert_eq!(cp[0]["cluster"]["allowSchedulingOnControlPlanes"], true);
    assert_eq!(cp[0]["cluster"]["network"]["cni"]["name"], "custom");
    assert_eq!(
        cp[0]["cluster"]["extraManifests"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        cp[0]["cluster"]["controlPlane"]["endpoint"],
        "https://192.168.50.200:6443"
    );
    // The secrets came from secrets.yaml.
    let b = Bundle::load(&d.path().join("secrets.yaml")).unwrap();
    assert_eq!(
        cp[0]["machine"]["token"],
        serde_json::json!(b.trustdinfo.token)
    );
    assert_eq!(
        cp[0]["cluster"]["secretboxEncryptionSecret"],
        serde_json::json!(b.secrets.secretboxencryptionsecret.unwrap())
    );
    // Refuses to overwrite without --force.
    let (ok, out) = kiln(d.path(), &args);
    assert!(!ok && out.contains("--force"), "{out}");
}

#[test]
fn json_patches_fail_on_multidoc_contracts_like_talosctl() {
    let d = seed_dir();
    std::fs::write(
        d.path().join("json.yaml"),
        "- op: add\n  path: /machine/install/disk\n  value: /dev/nvme0n1\n",
    )
    .unwrap();
    let (ok, out) = kiln(
        d.path(),
        &[
            "gen",
            "config",
            "c",
            "https://10.0.0.1:6443",
            "--config-patch",
            "@json.yaml",
            "-o",
            "v13",
            "--talos-version",
            "v1.13",
        ],
    );
    assert!(!ok);
    assert!(out.contains("json.yaml: JSON6902 patches are not supported for multi-document machine configuration"), "{out}");
    let (ok, out) = kiln(
        d.path(),
        &[
            "gen",
            "config",
            "c",
            "https://10.0.0.1:6443",
            "--config-patch",
            "@json.yaml",
            "-o",
            "v11",
            "--talos-version",
            "v1.11.6",
        ],
    );
    assert!(ok, "{out}");
    let cp = from_yaml(&std::fs::read_to_string(d.path().join("v11/controlplane.yaml")).unwrap())
        .unwrap();
    assert_eq!(cp[0]["machine"]["install"]["disk"], "/dev/nvme0n1");
    assert_eq!(
        cp[0]["machine"]["install"]["image"],
        "ghcr.io/siderolabs/installer:v1.11.6"
    );
    // Without --with-secrets the generated secrets are kept, 0600.
    assert_eq!(mode(&d.path().join("v11/secrets.yaml")), 0o600);
    // A patch that does not apply names the file and the path.
    std::fs::write(d.path().join("bad.yaml"), "machine:\n  install: /dev/sda\n").unwrap();
    let (ok, out) = kiln(
        d.path(),
        &[
            "gen",
            "config",
            "c",
            "https://10.0.0.1:6443",
            "--config-patch",
            "@bad.yaml",
            "-o",
            "bad",
            "--talos-version",
            "v1.13",
        ],
    );
    assert!(
        !ok && out.contains("bad.yaml: machine.install: cannot replace a mapping with a string"),
        "{out}"
    );
    let (ok, out) = kiln(
        d.path(),
        &[
            "gen",
            "config",
            "c",
            "https://10.0.0.1:6443",
            "--talos-version",
            "v1.7",
            "-o",
            "old",
        ],
    );
    assert!(
        !ok && out.contains("kiln generates v1.8 through v1.15"),
        "{out}"
    );
    // v1.14 has its own contract, with talosctl's defaults: the disk in an
    // UnattendedInstallConfig and the factory's metal-installer.
    let (ok, out) = kiln(
        d.path(),
        &[
            "gen",
            "config",
            "c",
            "https://10.0.0.1:6443",
            "--talos-version",
            "v1.14.1",
            "-o",
            "new",
        ],
    );
    assert!(ok, "{out}");
    let cp = from_yaml(&std::fs::read_to_string(d.path().join("new/controlplane.yaml")).unwrap())
        .unwrap();
    assert!(cp[0]["machine"].get("install").is_none());
    let ui = cp
        .iter()
        .find(|d| d["kind"] == "UnattendedInstallConfig")
        .unwrap();
    assert_eq!(
        ui["provisioning"]["diskSelector"]["match"],
        "disk.dev_path == \"/dev/sda\""
    );
    assert_eq!(
        ui["installer"]["image"],
        "factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.14.1"
    );
}

/// The seed's command line, its seven patches untouched.
fn seed_args<'a>(patch_dir: &str, out: &'a str, files: &[&'a str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "gen",
        "config",
        "intrend-cluster",
        "https://192.168.50.200:6443",
        "--with-secrets",
        "secrets.yaml",
    ]
    .map(String::from)
    .to_vec();
    for f in files {
        let flag = if *f == "vip.yaml" {
            "--config-patch-control-plane"
        } else {
            "--config-patch"
        };
        a.push(flag.into());
        a.push(format!("@{patch_dir}/{f}"));
    }
    a.extend([
        "--output".to_string(),
        out.to_string(),
        "--talos-version".into(),
        "v1.14".into(),
    ]);
    a
}

#[test]
fn seed_patches_on_v1_14_are_refused_with_talos_messages_until_migrated() {
    let d = seed_dir();
    assert!(kiln(d.path(), &["gen", "secrets"]).0);
    let files: Vec<&str> = SEED_PATCHES.iter().map(|(f, _)| *f).collect();
    let args = seed_args("patches", "rendered", &files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = kiln(d.path(), &args);
    assert!(!ok, "{out}");
    assert!(!d.path().join("rendered").exists(), "nothing written");
    // Talos's messages in its order (document order), each naming its patch.
    let cp = out.split("worker.yaml:").next().unwrap();
    let worker = out.split("worker.yaml:").nth(1).unwrap();
    let want = [
        "@patches/install-disk.yaml: machine.install: UnattendedInstallConfig config is incompatible with v1alpha1 config (.machine.install)",
        "@patches/allow-controlplane-workloads.yaml: cluster.allowSchedulingOnControlPlanes: .cluster.allowSchedulingOnControlPlanes is already set in v1alpha1 config",
        "@patches/kubelet-certificates.yaml: machine.kubelet: kubelet config is already set in v1alpha1 config (.machine.kubelet)",
        "@patches/cni.yaml: cluster.network: cluster network config is already set in the v1alpha1 config (.machine.cluster.network). Please remove it and use only the new KubeNetworkConfig document to avoid conflicts",
        "@patches/cni.yaml: cluster.network: cluster network config in v1alpha1 config (.machine.cluster.network) can't be used with KubeFlannelCNIConfig document, please remove it to avoid conflicts",
    ];
    let lines = |s: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("* ")
                    .map(|l| l.replace("patches/", "@patches/").replace("@@", "@"))
            })
            .collect()
    };
    assert!(
        cp.contains("controlplane.yaml: a Talos node would refuse this config (5 errors)"),
        "{out}"
    );
    assert_eq!(lines(cp), want.map(String::from), "{out}");
    assert_eq!(
        lines(worker),
        want[..4].iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "{out}"
    );
    assert!(out.contains("kiln patch migrate"), "{out}");

    // Migrated, the same command line renders; interface-names has nothing left.
    std::fs::create_dir(d.path().join("v14")).unwrap();
    for f in &files {
        let (ok, text) = kiln(
            d.path(),
            &[
                "patch",
                "migrate",
                &format!("patches/{f}"),
                "--talos-version",
                "v1.14",
            ],
        );
        assert!(ok, "{text}");
        std::fs::write(d.path().join("v14").join(f), text).unwrap();
    }
    let kept: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| *f != "interface-names.yaml")
        .collect();
    let migrated = std::fs::read_to_string(d.path().join("v14/interface-names.yaml")).unwrap();
    assert!(
        migrated.contains("extraKernelArgs") && migrated.contains("nothing is left"),
        "{migrated}"
    );
    let args = seed_args("v14", "rendered", &kept);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = kiln(d.path(), &args);
    assert!(ok, "{out}");
    let r = d.path().join("rendered");
    let cp = from_yaml(&std::fs::read_to_string(r.join("controlplane.yaml")).unwrap()).unwrap();
    let w = from_yaml(&std::fs::read_to_string(r.join("worker.yaml")).unwrap()).unwrap();
    for docs in [&cp, &w] {
        assert!(kiln::talos::conflicts::check(docs).is_empty());
    }
    // What each seed patch meant, in the v1.14 documents.
    let kind = |docs: &[serde_json::Value], k: &str| {
        docs.iter()
            .filter(|d| d["kind"] == k)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        kind(&cp, "KubeNodeConfig")[0].get("taints").is_none(),
        "control planes schedule workloads"
    );
    assert!(
        kind(&cp, "KubeFlannelCNIConfig").is_empty(),
        "custom CNI: no flannel"
    );
    let urls: Vec<String> = kind(&cp, "KubeExternalManifestConfig")
        .iter()
        .map(|d| d["url"].as_str().unwrap().to_string())
        .collect();
    assert!(
        urls.iter()
            .any(|u| u == "https://docs.projectcalico.org/archive/v3.20/manifests/canal.yaml"),
        "{urls:?}"
    );
    assert!(
        urls.iter()
            .any(|u| u.contains("kubelet-serving-cert-approver")),
        "{urls:?}"
    );
    for docs in [&cp, &w] {
        assert_eq!(
            kind(docs, "KubeletConfig")[0]["extraArgs"]["rotate-server-certificates"],
            "true"
        );
        assert_eq!(
            kind(docs, "UnattendedInstallConfig")[0]["provisioning"]["diskSelector"]["match"],
            "disk.dev_path == \"/dev/sda\""
        );
    }
    assert_eq!(
        cp[0]["machine"]["network"]["interfaces"],
        serde_json::json!([{"interface": "eth0", "dhcp": true, "vip": {"ip": "192.168.50.200"}}])
    );
    assert_eq!(
        w[0]["machine"]["network"]["interfaces"],
        serde_json::json!([{"interface": "eth0", "dhcp": true}])
    );
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p.display().to_string()
}

fn openssl(args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl").args(args).output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn secrets_and_talosconfig_pass_openssl() {
    if skip_unless(have("openssl"), "openssl") {
        return;
    }
    let d = seed_dir();
    assert!(
        kiln(
            d.path(),
            &[
                "gen",
                "config",
                "lab",
                "https://10.0.0.10:6443",
                "-o",
                "out"
            ]
        )
        .0
    );
    let b = Bundle::load(&d.path().join("out/secrets.yaml")).unwrap();
    let t = d.path();
    for (name, org) in [
        ("etcd", Some("etcd")),
        ("k8s", Some("kubernetes")),
        ("k8saggregator", None),
        ("os", Some("talos")),
    ] {
        let ck = match name {
            "etcd" => b.certs.etcd.clone(),
            "k8s" => b.certs.k8s.clone(),
            "k8saggregator" => b.certs.k8saggregator.clone(),
            _ => b.certs.os.clone(),
        }
        .unwrap();
        let crt = write_pem(t, &format!("{name}.crt"), &pem_of(&ck.crt).unwrap());
        let (ok, text) = openssl(&["x509", "-in", &crt, "-noout", "-text"]);
        assert!(ok, "{text}");
        assert!(text.contains("CA:TRUE"), "{name}: {text}");
        assert!(text.contains("Certificate Sign"), "{name}");
        assert!(
            text.contains("TLS Web Server Authentication")
                && text.contains("TLS Web Client Authentication"),
            "{name}"
        );
        if let Some(o) = org {
            assert!(
                text.contains(&format!("Subject: O = {o}"))
                    || text.contains(&format!("Subject: O={o}")),
                "{name}: {text}"
            );
        }
        // Keys: Talos's labels; the body is what OpenSSL reads (PKCS#8 for Ed25519).
        let key_pem = pem_of(&ck.key).unwrap();
        let key_pem = key_pem.replace("ED25519 PRIVATE KEY", "PRIVATE KEY");
        let key = write_pem(t, &format!("{name}.key"), &key_pem);
        let (ok, text) = openssl(&["pkey", "-in", &key, "-noout", "-text"]);
        assert!(ok, "{name} key: {text}");
    }
    let sa = write_pem(
        t,
        "sa.key",
        &pem_of(&b.certs.k8sserviceaccount.clone().unwrap().key).unwrap(),
    );
    let (ok, text) = openssl(&["rsa", "-in", &sa, "-check", "-noout", "-text"]);
    assert!(ok && text.contains("4096 bit"), "{text}");

    // talosconfig: client cert chains to the OS CA, O=os:admin, clientAuth only.
    let tc =
        TalosConfig::parse(&std::fs::read_to_string(d.path().join("out/talosconfig")).unwrap())
            .unwrap();
    assert_eq!(tc.context, "lab");
    let ctx = &tc.contexts["lab"];
    assert_eq!(ctx.ca, b.os().crt);
    let ca = write_pem(t, "ca.pem", &pem_of(&ctx.ca).unwrap());
    let crt = write_pem(t, "admin.crt", &pem_of(&ctx.crt).unwrap());
    let (ok, text) = openssl(&["verify", "-CAfile", &ca, &crt]);
    assert!(ok, "{text}");
    let (_, text) = openssl(&["x509", "-in", &crt, "-noout", "-text"]);
    assert!(
        text.contains("O = os:admin") || text.contains("O=os:admin"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Client Authentication")
            && !text.contains("TLS Web Server Authentication"),
        "{text}"
    );
    assert!(pem_of(&ctx.key)
        .unwrap()
        .starts_with("-----BEGIN ED25519 PRIVATE KEY-----"));
}
