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
        !ok && out.contains("kiln generates v1.8 through v1.13"),
        "{out}"
    );
    // v1.14's own contract is refused with the way out: Talos v1.14 accepts v1.13's.
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
    assert!(
        !ok && out.contains(
            "Talos v1.14.1 accepts the v1.13 contract's config: use --talos-version v1.13"
        ),
        "{out}"
    );
    assert!(!d.path().join("new").exists());
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
