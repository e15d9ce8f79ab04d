//! Cluster secrets shared through etcd, sealed with `store.secrets_key`
//! (a real 3-member etcd, real `kiln serve` daemons): two daemons started
//! at once end with one PKI, written 0600 to each one's secrets file; etcd
//! holds no key in clear; a daemon with another key, or a key file others
//! can read, refuses to start and says why.

mod common;

use std::path::Path;
use std::process::Command;

const MACHINES: &str = "machines:
  - mac: 52:54:00:aa:00:01
    hostname: cp-1
    profile: worker
";

fn lab(store: &str) -> common::Lab {
    use common::LoPorts;
    let ports = common::Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nclusters:\n  lab:\n    endpoint: https://192.168.50.200:6443\n{store}",
        ports.lo_yaml()
    );
    let l = common::Lab::new(&yaml, MACHINES);
    l.ipxe_stubs();
    l
}

fn kiln(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn two_daemons_share_one_sealed_pki_through_etcd() {
    if common::etcd::skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let c = common::etcd::Cluster::start(d.path().join("etcd"), &["e1", "e2", "e3"]);
    let key = d.path().join("secrets.key");
    let (ok, out) = kiln(&["store", "keygen", key.to_str().unwrap()]);
    assert!(ok && out.contains("key id"), "{out}");
    assert_eq!(mode(&key), 0o600);
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"{}\"", c.client_url(i))).collect();
    let store = |key: &Path, daemon: &str| {
        format!(
            "store:\n  backend: etcd\n  endpoints: [{}]\n  prefix: /sealed\n  daemon: {daemon}\n  secrets_key: {}\n",
            endpoints.join(", "),
            key.display()
        )
    };
    let (la, lb) = (lab(&store(&key, "a")), lab(&store(&key, "b")));
    // Both at once: each finds no secrets and makes some; one set stands.
    let (mut a, mut b) = std::thread::scope(|s| {
        let ta = s.spawn(|| common::Kiln::start(&la.config(), None));
        let tb = s.spawn(|| common::Kiln::start(&lb.config(), None));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let fa = la.path().join("state/lab/secrets.yaml");
    let fb = lb.path().join("state/lab/secrets.yaml");
    let (ya, yb) = (std::fs::read(&fa).unwrap(), std::fs::read(&fb).unwrap());
    assert_eq!(ya, yb, "the two daemons hold different cluster secrets");
    let text = String::from_utf8_lossy(&ya).to_string();
    // talosctl's layout: PEM, base64-encoded ("-----BEGIN" is LS0tLS1CRUdJTi).
    assert!(
        text.contains("certs:") && text.contains("LS0tLS1CRUdJTi"),
        "not a secrets file: {text}"
    );
    assert_eq!((mode(&fa), mode(&fb)), (0o600, 0o600));
    // etcd holds the secrets sealed, nothing of them in clear.
    let dump = c.ctl(0, &["get", "--prefix", "/sealed/"]).unwrap();
    assert!(dump.contains("/sealed/cluster_secrets/lab"), "{dump}");
    assert!(dump.contains("AES-256-GCM"), "{dump}");
    for clear in [
        "LS0tLS1CRUdJTi",
        "BEGIN",
        "certs:",
        "secrets:",
        "bootstraptoken",
    ] {
        assert!(!dump.contains(clear), "{clear:?} in clear in etcd");
    }
    a.stop();
    b.stop();

    // A daemon whose secrets file is gone gets the cluster's back from etcd.
    std::fs::remove_file(&fb).unwrap();
    let mut b = common::Kiln::start(&lb.config(), None);
    assert_eq!(std::fs::read(&fb).unwrap(), ya);
    b.stop();

    // Another key: the sealed record does not open; the daemon says so.
    let other = d.path().join("other.key");
    assert!(kiln(&["store", "keygen", other.to_str().unwrap()]).0);
    let lc = lab(&store(&other, "c"));
    let (ok, out) = kiln(&["serve", "--config", lc.config().to_str().unwrap()]);
    assert!(!ok, "a daemon with another key started");
    assert!(
        out.contains("sealed with key") && out.contains("same store.secrets_key"),
        "{out}"
    );
    assert!(
        !lc.path().join("state/lab/secrets.yaml").exists(),
        "it wrote secrets"
    );
    // A key others can read: refused before anything is read or written.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, out) = kiln(&["serve", "--config", lc.config().to_str().unwrap()]);
    assert!(
        !ok && out.contains("mode 0640") && out.contains("chmod 600"),
        "{out}"
    );
}
