//! The talosconfig and kubeconfig kiln keeps for the operator: one context per
//! cluster, certificates that chain to the right CA with the right organization
//! (checked with openssl), and `--merge` into the user's own files.

mod common;

use std::path::Path;
use std::process::Command;

use common::{have, kiln_bin, skip_unless, Kiln, Lab, LoPorts, Ports};
use kiln::talos::kubeconfig::KubeConfig;
use kiln::talos::secrets::{pem_of, Bundle};
use kiln::talos::talosconfig::TalosConfig;

fn openssl_verify(dir: &Path, ca_b64: &str, crt_b64: &str) -> String {
    std::fs::write(dir.join("ca.pem"), pem_of(ca_b64).unwrap()).unwrap();
    std::fs::write(dir.join("crt.pem"), pem_of(crt_b64).unwrap()).unwrap();
    let v = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("ca.pem"))
        .arg(dir.join("crt.pem"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let t = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
            "-in",
        ])
        .arg(dir.join("crt.pem"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&t.stdout).into_owned()
}

#[test]
fn one_context_per_cluster_chained_to_the_right_ca() {
    if skip_unless(have("openssl"), "openssl") {
        return;
    }
    let yaml = format!(
        "{}ipxe_dirs: [./ipxe]\nboot_assets: ./boot-assets\nstate_dir: ./state\nclusters:\n  lab:\n    endpoint: https://192.168.50.200:6443\n  prod:\n    endpoint: https://k8s.prod.example:6443\n",
        Ports::any().lo_yaml()
    );
    let lab = Lab::new(&yaml, "machines:\n  - {mac: 52:54:00:aa:00:01, hostname: cp-1, profile: controlplane, ip: 192.168.50.11}\n  - {mac: 52:54:00:bb:00:01, hostname: prod-cp-1, profile: prodcp, ip: 10.20.0.11}\n");
    std::fs::write(
        lab.path().join("profiles/controlplane.yaml"),
        "role: controlplane\ncluster: lab\ntalos_version: v1.13.9\n",
    )
    .unwrap();
    std::fs::write(
        lab.path().join("profiles/worker.yaml"),
        "role: worker\ncluster: lab\ntalos_version: v1.13.9\n",
    )
    .unwrap();
    std::fs::write(lab.path().join("profiles/prodcp.yaml"), "role: controlplane\ncluster: prod\ntalos_version: v1.12.11\nkernel: https://mirror.example/vmlinuz\ninitramfs: https://mirror.example/initramfs.xz\n").unwrap();
    lab.ipxe_stubs();
    let mut k = Kiln::start(&lab.config(), None);
    k.stop();
    let st = lab.path().join("state");
    let t = lab.path();
    for f in ["kubeconfig", "talosconfig"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(st.join(f)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let kc = KubeConfig::parse(&std::fs::read_to_string(st.join("kubeconfig")).unwrap()).unwrap();
    let tc = TalosConfig::parse(&std::fs::read_to_string(st.join("talosconfig")).unwrap()).unwrap();
    assert_eq!(kc.context_names(), vec!["admin@lab", "admin@prod"]);
    assert_eq!(
        tc.contexts.keys().cloned().collect::<Vec<_>>(),
        vec!["lab", "prod"]
    );
    for (name, endpoint, cp) in [
        ("lab", "https://192.168.50.200:6443", "192.168.50.11"),
        ("prod", "https://k8s.prod.example:6443", "10.20.0.11"),
    ] {
        let b = Bundle::load(&st.join(name).join("secrets.yaml")).unwrap();
        let cl = &kc
            .clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .item
            .cluster;
        assert_eq!(cl["server"], endpoint);
        assert_eq!(
            cl["certificate-authority-data"],
            serde_json::json!(b.certs.k8s.as_ref().unwrap().crt)
        );
        let user = &kc
            .users
            .iter()
            .find(|u| u.name == format!("admin@{name}"))
            .unwrap()
            .item
            .user;
        let subj = openssl_verify(
            t,
            &b.certs.k8s.as_ref().unwrap().crt,
            user["client-certificate-data"].as_str().unwrap(),
        );
        assert!(
            subj.contains("O = system:masters") && subj.contains("CN = admin"),
            "{subj}"
        );
        assert!(subj.contains("TLS Web Client Authentication"), "{subj}");
        let ctx = &tc.contexts[name];
        assert_eq!(
            ctx.endpoints,
            vec![cp.to_string()],
            "control-plane addresses, not the VIP"
        );
        let subj = openssl_verify(t, &b.os().crt, &ctx.crt);
        assert!(subj.contains("O = os:admin"), "{subj}");
    }
    // A restart keeps the certificates.
    let mut k = Kiln::start(&lab.config(), None);
    k.stop();
    assert_eq!(
        KubeConfig::parse(&std::fs::read_to_string(st.join("kubeconfig")).unwrap()).unwrap(),
        kc
    );

    // --merge into the user's own file keeps what was there.
    let mine = lab.path().join("my-kubeconfig");
    std::fs::write(&mine, "apiVersion: v1\nkind: Config\nclusters:\n- name: home\n  cluster:\n    server: https://home:6443\nusers:\n- name: me\n  user:\n    token: abc\ncontexts:\n- name: home\n  context:\n    cluster: home\n    user: me\ncurrent-context: home\npreferences: {}\n").unwrap();
    let o = Command::new(kiln_bin())
        .args(["kubeconfig", "prod", "--config"])
        .arg(lab.config())
        .arg("--merge")
        .arg(&mine)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let merged = KubeConfig::parse(&std::fs::read_to_string(&mine).unwrap()).unwrap();
    assert_eq!(merged.context_names(), vec!["home", "admin@prod"]);
    assert_eq!(merged.current_context, "admin@prod");
    assert!(merged.other.contains_key("preferences"));
    // talosconfig for one cluster, printed.
    let o = Command::new(kiln_bin())
        .args(["talosconfig", "lab", "--config"])
        .arg(lab.config())
        .output()
        .unwrap();
    let one = TalosConfig::parse(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!((one.context.as_str(), one.contexts.len()), ("lab", 1));
}
