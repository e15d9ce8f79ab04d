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

/// Every document kiln writes for a v1.14 machine (generated, settings, the
/// hostname, the event sink) is valid for Talos's schema. The schema's one
/// known bug (UnattendedInstallConfig's kind enum says `UnattendedInstall`,
/// ../shared/talos/README.md) is corrected in memory.
#[test]
fn v1_14_documents_validate_against_the_talos_schema() {
    let Some(dir) = common::shared::talos_dir() else {
        return;
    };
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.schema.json")).unwrap())
            .unwrap();
    let defs = schema["$defs"].as_object_mut().unwrap();
    let ui = defs
        .iter_mut()
        .find(|(k, _)| k.contains("UnattendedInstallConfig"))
        .map(|(_, v)| v)
        .unwrap();
    ui["properties"]["kind"]["enum"] = serde_json::json!(["UnattendedInstallConfig"]);
    let validator = jsonschema::validator_for(&schema).unwrap();
    let bundle = Bundle::load(&dir.join("stability/secrets.yaml")).unwrap();
    let c = Contract::parse("v1.14").unwrap();
    for role in [Role::Controlplane, Role::Worker] {
        let mut o = base_options("v1.14");
        o.install_disk = Some("/dev/sda".into());
        o.install_image = Some(kiln::talos::generate::default_install_image(
            c,
            "v1.14.0-rc.1",
        ));
        o.registry_mirrors = vec![("docker.io".into(), vec!["https://mirror.lab".into()])];
        o.sysctls = vec![("net.core.somaxconn".into(), "65535".into())];
        let mut docs = generate(&o, &bundle, role).unwrap();
        let mut own = seed_settings().patches(role, c);
        own.push(kiln::talos::settings::hostname_patch("node-1", c));
        own.push(serde_json::json!({"apiVersion": "v1alpha1", "kind": "EventSinkConfig", "endpoint": "10.0.0.1:4002"}));
        own.push(serde_json::json!({"apiVersion": "v1alpha1", "kind": "KmsgLogConfig", "name": "kiln", "url": "tcp://10.0.0.1:4003"}));
        patch::apply(&mut docs, &patch::Patch::Strategic(own), "settings").unwrap();
        let extra: Vec<&serde_json::Value> =
            docs.iter().filter(|d| d.get("kind").is_some()).collect();
        assert!(extra.len() >= 15, "{role:?}: {}", extra.len());
        for d in extra {
            let errors: Vec<String> = validator.iter_errors(d).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{role:?} {}: {errors:?}", d["kind"]);
        }
    }
}

#[test]
fn generated_and_golden_configs_pass_talos_conflict_rules() {
    let Some(dir) = common::shared::talos_dir() else {
        return;
    };
    let bundle = Bundle::load(&dir.join("stability/secrets.yaml")).unwrap();
    for c in ["v1.10", "v1.12", "v1.13", "v1.14"] {
        for file in [
            "base-controlplane.yaml",
            "base-worker.yaml",
            "overrides-controlplane.yaml",
            "overrides-worker.yaml",
        ] {
            let g = golden(&dir, c, file);
            assert_eq!(kiln::talos::conflicts::check(&g), vec![], "{c} {file}");
        }
    }
    for c in ["v1.8", "v1.12", "v1.14", "v1.15"] {
        for role in [Role::Controlplane, Role::Worker] {
            let docs = settings_docs(c, role, &seed_settings(), &bundle);
            assert_eq!(kiln::talos::conflicts::check(&docs), vec![], "{c} {role:?}");
        }
    }
}

/// The seed's profile settings on v1.14 mean what the seed's patches meant:
/// compared key by key against the seed patches as `kiln patch migrate` writes them.
#[test]
fn seed_settings_on_v1_14_mean_what_the_seed_patches_mean() {
    let Some(dir) = common::shared::talos_dir() else {
        return;
    };
    let bundle = Bundle::load(&dir.join("stability/secrets.yaml")).unwrap();
    let kinds = |docs: &[serde_json::Value], k: &str| -> Vec<serde_json::Value> {
        docs.iter().filter(|d| d["kind"] == k).cloned().collect()
    };
    for role in [Role::Controlplane, Role::Worker] {
        let cp = role == Role::Controlplane;
        let got = settings_docs("v1.14", role, &seed_settings(), &bundle);
        let mut want = generate(&base_options("v1.14"), &bundle, role).unwrap();
        let mut patches = vec![
            seed::ALLOW,
            seed::CNI,
            seed::DISK,
            seed::IFNAMES,
            seed::KUBELET,
            seed::DHCP,
        ];
        if cp {
            patches.push(seed::VIP);
        }
        for (i, text) in patches.iter().enumerate() {
            let kiln::model::patch::Patch::Strategic(p) =
                kiln::model::patch::parse(text, &format!("seed-{i}")).unwrap()
            else {
                unreachable!()
            };
            let m = kiln::talos::migrate::migrate(&p).unwrap();
            patch::apply(&mut want, &patch::Patch::Strategic(m.docs), "seed").unwrap();
        }
        for docs in [&got, &want] {
            assert_eq!(kiln::talos::conflicts::check(docs), vec![], "{role:?}");
            // allow_workloads: no control-plane taint; the label stays.
            let node = &kinds(docs, "KubeNodeConfig")[0];
            assert!(node.get("taints").is_none(), "{node}");
            // cni: custom: no flannel, the CNI manifest and the approver applied.
            assert!(kinds(docs, "KubeFlannelCNIConfig").is_empty());
            let mut urls: Vec<String> = kinds(docs, "KubeExternalManifestConfig")
                .iter()
                .map(|d| d["url"].as_str().unwrap().to_string())
                .collect();
            urls.sort();
            let mut expect = vec![
                "https://docs.projectcalico.org/archive/v3.20/manifests/canal.yaml".to_string(),
                kiln::model::settings::CERT_APPROVER.to_string(),
            ];
            expect.sort();
            if cp {
                assert_eq!(urls, expect);
            }
            // kubelet_serving_certs, install_disk.
            assert_eq!(
                kinds(docs, "KubeletConfig")[0]["extraArgs"]["rotate-server-certificates"],
                "true"
            );
            assert_eq!(
                kinds(docs, "UnattendedInstallConfig")[0]["provisioning"]["diskSelector"]["match"],
                "disk.dev_path == \"/dev/sda\""
            );
            assert!(docs[0]["machine"].get("install").is_none());
            assert!(docs[0]["machine"].get("kubelet").is_none());
            assert!(docs[0]["cluster"].get("network").is_none());
        }
        // dhcp_interfaces and vip: documents for kiln, machine.network in the
        // seed's patches: both read by Talos v1.14 without conflict.
        assert_eq!(kinds(&got, "DHCPv4Config")[0]["name"], "eth0");
        assert_eq!(want[0]["machine"]["network"]["interfaces"][0]["dhcp"], true);
        assert_eq!(kinds(&got, "Layer2VIPConfig").len(), usize::from(cp));
        if cp {
            assert_eq!(kinds(&got, "Layer2VIPConfig")[0]["name"], "10.0.10.10");
            assert_eq!(
                want[0]["machine"]["network"]["interfaces"][0]["vip"]["ip"],
                "10.0.10.10"
            );
        }
    }
}
