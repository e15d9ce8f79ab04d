//! Config generation against Talos's own golden outputs
//! (../shared/talos/stability), secrets compatibility with talosctl's format.

mod common;

use std::path::Path;

use kiln::model::contract::Contract;
use kiln::model::inventory::Role;
use kiln::model::yaml::from_yaml;
use kiln::talos::generate::{generate, Options};
use kiln::talos::patch;
use kiln::talos::secrets::Bundle;

fn golden(dir: &Path, contract: &str, name: &str) -> Vec<serde_json::Value> {
    from_yaml(&std::fs::read_to_string(dir.join("stability").join(contract).join(name)).unwrap())
        .unwrap()
}

fn base_options(c: &str) -> Options {
    let mut o = Options::new(Contract::parse(c).unwrap(), "base", "https://base:6443");
    o.kubernetes_version = "1.28.0".into();
    o
}

#[test]
fn base_configs_equal_talos_golden_outputs() {
    let Some(dir) = common::shared::talos_dir() else {
        return;
    };
    let bundle = Bundle::load(&dir.join("stability/secrets.yaml")).unwrap();
    for c in ["v1.10", "v1.12", "v1.13", "v1.14"] {
        for (role, file) in [
            (Role::Controlplane, "base-controlplane.yaml"),
            (Role::Worker, "base-worker.yaml"),
        ] {
            let got = generate(&base_options(c), &bundle, role).unwrap();
            assert_eq!(got, golden(&dir, c, file), "{c} {file}");
            // What kiln writes reads back as the same documents.
            assert_eq!(from_yaml(&kiln::model::yaml::to_yaml(&got)).unwrap(), got);
        }
    }
    // Contracts v1.8, v1.9 and v1.11 write what v1.10 writes (Talos's test data says so).
    // v1.15 adds no gate over v1.14 in the Talos snapshot read.
    for (c, same) in [
        ("v1.8", "v1.10"),
        ("v1.9", "v1.10"),
        ("v1.11", "v1.10"),
        ("v1.15", "v1.14"),
    ] {
        for (role, file) in [
            (Role::Controlplane, "base-controlplane.yaml"),
            (Role::Worker, "base-worker.yaml"),
        ] {
            let got = generate(&base_options(c), &bundle, role).unwrap();
            assert_eq!(got, golden(&dir, same, file), "{c} {file}");
        }
    }
}

#[test]
fn override_configs_equal_talos_golden_outputs() {
    let Some(dir) = common::shared::talos_dir() else {
        return;
    };
    let bundle = Bundle::load(&dir.join("stability/secrets.yaml")).unwrap();
    for (c, same) in [
        ("v1.8", "v1.10"),
        ("v1.10", "v1.10"),
        ("v1.11", "v1.10"),
        ("v1.12", "v1.12"),
        ("v1.13", "v1.13"),
        ("v1.14", "v1.14"),
        ("v1.15", "v1.14"),
    ] {
        // Talos's test uses patch.yaml from v1.14 and patch-pre14.yaml before.
        let name = if Contract::parse(c).unwrap().minor >= 14 {
            "patch.yaml"
        } else {
            "patch-pre14.yaml"
        };
        let patch_text = std::fs::read_to_string(dir.join("stability").join(name)).unwrap();
        let p = kiln::model::patch::parse(&patch_text, name).unwrap();
        let mut o = base_options(c);
        o.additional_sans = vec!["foo".into(), "bar".into()];
        o.allow_scheduling_on_control_planes = true;
        o.dns_domain = "example.com".into();
        o.install_disk = Some("/dev/vda".into());
        o.install_extra_kernel_args = vec!["foo=bar".into(), "bar=baz".into()];
        o.local_api_server_port = Some(5443);
        o.sysctls = vec![("foo".into(), "bar".into())];
        o.cni_custom_url = Some("https://example.com/cni.yaml".into());
        o.registry_mirrors = vec![(
            "ghcr.io".into(),
            vec!["https://ghcr.io.my-mirror.com".into()],
        )];
        for (role, file) in [
            (Role::Controlplane, "overrides-controlplane.yaml"),
            (Role::Worker, "overrides-worker.yaml"),
        ] {
            let mut got = generate(&o, &bundle, role).unwrap();
            patch::apply(&mut got, &p, name).unwrap();
            assert_eq!(got, golden(&dir, same, file), "{c} {file}");
        }
    }
}

#[test]
fn talosctl_secrets_round_trip() {
    let Some(dir) = common::shared::talos_dir() else {
        return;
    };
    let path = dir.join("stability/secrets.yaml");
    let b = Bundle::load(&path).unwrap();
    // What kiln writes parses to the same YAML tree as what talosctl wrote.
    let ours: serde_json::Value = serde_saphyr::from_str(&b.to_yaml()).unwrap();
    let theirs: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(Bundle::parse(&b.to_yaml(), &path).unwrap(), b);
}

mod seed {
    //! The seed's seven patch files (../shared/seed, FACTS.md section 3), verbatim in content.
    pub const ALLOW: &str = "cluster:\n  allowSchedulingOnControlPlanes: true\n";
    pub const KUBELET: &str = "machine:\n  kubelet:\n    extraArgs:\n      rotate-server-certificates: true\ncluster:\n  extraManifests:\n    - https://raw.githubusercontent.com/alex1989hu/kubelet-serving-cert-approver/main/deploy/standalone-install.yaml\n";
    pub const IFNAMES: &str = "machine:\n  install:\n    extraKernelArgs:\n      - net.ifnames=0\n";
    pub const DHCP: &str =
        "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        dhcp: true\n";
    pub const VIP: &str = "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        vip:\n          ip: 10.0.10.10\n";
    pub const CNI: &str = "cluster:\n  network:\n    cni:\n      name: custom\n      urls:\n        - https://docs.projectcalico.org/archive/v3.20/manifests/canal.yaml\n";
    pub const DISK: &str = "machine:\n  install:\n    disk: /dev/sda\n";
}

fn apply_all(docs: &mut Vec<serde_json::Value>, patches: &[&str]) {
    for (i, p) in patches.iter().enumerate() {
        let p = kiln::model::patch::parse(p, &format!("seed-{i}")).unwrap();
        patch::apply(docs, &p, "seed").unwrap();
    }
}

fn settings_docs(
    c: &str,
    role: Role,
    s: &kiln::model::settings::Settings,
    bundle: &Bundle,
) -> Vec<serde_json::Value> {
    let o = base_options(c);
    let mut docs = generate(&o, bundle, role).unwrap();
    let p = patch::Patch::Strategic(s.patches(role, o.contract));
    patch::apply(&mut docs, &p, "settings").unwrap();
    docs
}

fn seed_settings() -> kiln::model::settings::Settings {
    use kiln::model::settings::{Cni, Settings};
    Settings {
        install_disk: Some("/dev/sda".into()),
        stable_interface_names: true,
        dhcp_interfaces: vec!["eth0".into()],
        vip: Some("10.0.10.10".parse().unwrap()),
        vip_interface: None,
        allow_workloads: true,
        cni: Cni::Custom {
            urls: vec!["https://docs.projectcalico.org/archive/v3.20/manifests/canal.yaml".into()],
        },
        kubelet_serving_certs: true,
    }
}

#[test]
fn first_class_settings_render_what_the_seed_patches_do() {
    use kiln::model::settings::{Cni, Settings};
    let Some(dir) = common::shared::talos_dir() else {
        return;
    };
    let bundle = Bundle::load(&dir.join("stability/secrets.yaml")).unwrap();
    let d = Settings::default();
    // Each setting alone against its patch file, on a single-document contract.
    let single: Vec<(Settings, &[&str])> = vec![
        (
            Settings {
                allow_workloads: true,
                ..d.clone()
            },
            &[seed::ALLOW],
        ),
        (
            Settings {
                kubelet_serving_certs: true,
                ..d.clone()
            },
            &[seed::KUBELET],
        ),
        (
            Settings {
                stable_interface_names: true,
                ..d.clone()
            },
            &[seed::IFNAMES],
        ),
        (
            Settings {
                dhcp_interfaces: vec!["eth0".into()],
                ..d.clone()
            },
            &[seed::DHCP],
        ),
        (
            Settings {
                vip: Some("10.0.10.10".parse().unwrap()),
                ..d.clone()
            },
            &[seed::VIP],
        ),
        (
            Settings {
                cni: Cni::Custom {
                    urls: vec![
                        "https://docs.projectcalico.org/archive/v3.20/manifests/canal.yaml".into(),
                    ],
                },
                ..d.clone()
            },
            &[seed::CNI],
        ),
        (
            Settings {
                install_disk: Some("/dev/sda".into()),
                ..d.clone()
            },
            &[seed::DISK],
        ),
    ];
    for (s, patches) in &single {
        let mut want = generate(&base_options("v1.11"), &bundle, Role::Controlplane).unwrap();
        apply_all(&mut want, patches);
        assert_eq!(
            settings_docs("v1.11", Role::Controlplane, s, &bundle),
            want,
            "{s:?}"
        );
    }
    // All of them together = the seed's gen config line (vip for control planes only).
    for role in [Role::Controlplane, Role::Worker] {
        let mut want = generate(&base_options("v1.11"), &bundle, role).unwrap();
        let mut all = vec![
            seed::ALLOW,
            seed::CNI,
            seed::DHCP,
            seed::DISK,
            seed::IFNAMES,
            seed::KUBELET,
        ];
        if role == Role::Controlplane {
            all.push(seed::VIP);
        }
        apply_all(&mut want, &all);
        assert_eq!(
            settings_docs("v1.11", role, &seed_settings(), &bundle),
            want,
            "{role:?}"
        );
    }
    // cni: none.
    let s = Settings {
        cni: Cni::Name("none".into()),
        ..d.clone()
    };
    let docs = settings_docs("v1.13", Role::Worker, &s, &bundle);
    assert_eq!(
        docs[0]["cluster"]["network"]["cni"],
        serde_json::json!({"name": "none"})
    );
    // v1.12+: the network settings become documents; the rest is the same.
    let got = settings_docs("v1.13", Role::Controlplane, &seed_settings(), &bundle);
    assert!(
        got[0]["machine"].get("network").is_none(),
        "{}",
        got[0]["machine"]
    );
    assert!(got.contains(
        &serde_json::json!({"apiVersion": "v1alpha1", "kind": "DHCPv4Config", "name": "eth0"})
    ));
    assert!(got.contains(&serde_json::json!({"apiVersion": "v1alpha1", "kind": "Layer2VIPConfig", "name": "10.0.10.10", "link": "eth0"})));
    let mut want = generate(&base_options("v1.13"), &bundle, Role::Controlplane).unwrap();
    apply_all(
        &mut want,
        &[
            seed::ALLOW,
            seed::CNI,
            seed::DISK,
            seed::IFNAMES,
            seed::KUBELET,
        ],
    );
    assert_eq!(got[0], want[0]);
    let w = settings_docs("v1.13", Role::Worker, &seed_settings(), &bundle);
    assert!(
        !w.iter().any(|d| d["kind"] == "Layer2VIPConfig"),
        "no VIP document for workers"
    );
}

#[test]
fn extra_documents_validate_against_the_talos_schema() {
    let Some(dir) = common::shared::talos_dir() else {
        return;
    };
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let bundle = Bundle::load(&dir.join("stability/secrets.yaml")).unwrap();
    let mut docs = settings_docs("v1.13", Role::Controlplane, &seed_settings(), &bundle);
    let host = patch::Patch::Strategic(vec![kiln::talos::settings::hostname_patch(
        "cp-1",
        Contract::parse("v1.13").unwrap(),
    )]);
    patch::apply(&mut docs, &host, "hostname").unwrap();
    let mut o = base_options("v1.13");
    o.registry_mirrors = vec![("docker.io".into(), vec!["https://mirror.lab".into()])];
    docs.extend(
        generate(&o, &bundle, Role::Worker)
            .unwrap()
            .into_iter()
            .skip(1),
    );
    let extra: Vec<&serde_json::Value> = docs.iter().filter(|d| d.get("kind").is_some()).collect();
    let kinds: Vec<&str> = extra.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in [
        "DHCPv4Config",
        "Layer2VIPConfig",
        "HostnameConfig",
        "RegistryMirrorConfig",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    for d in extra {
        let errors: Vec<String> = validator.iter_errors(d).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{d}: {errors:?}");
    }
    // The oracle does bite: an unknown key fails.
    assert!(!validator.is_valid(
        &serde_json::json!({"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostnme": "x"})
    ));
    // The per-machine hostname replaced `auto: stable`.
    let h = docs.iter().find(|d| d["kind"] == "HostnameConfig").unwrap();
    assert_eq!(
        h,
        &serde_json::json!({"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": "cp-1"})
    );
}
