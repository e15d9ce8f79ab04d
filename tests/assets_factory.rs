//! `kiln assets pull | list | prune | import` against a stand-in Image Factory
//! (tests/common/factory.rs): schematic IDs as the factory computes them,
//! redirects, an interrupted download resumed with Range, the manifest
//! `kiln check` verifies, the installer image in the rendered config, and the
//! kernel line built from the factory's cmdline.

mod common;

use std::collections::BTreeMap;

use common::factory::FakeFactory;
use common::{run_kiln, Lab};

const ID_NOAPIC: &str = "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c";

fn files() -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    f.insert("kernel-amd64".to_string(), vec![0x4b; 300_000]);
    f.insert(
        "initramfs-amd64.xz".to_string(),
        (0..2_000_000u32).map(|i| (i % 253) as u8).collect(),
    );
    f
}

fn lab(factory: &FakeFactory, worker: &str) -> Lab {
    let lab = Lab::new(
        &format!(
            "interface: lo\nserver_address: 127.0.0.1\nports: {{dhcp: 0, proxy_dhcp: 0, tftp: 0, http: 0, events: 0, kmsg: 0}}\ndhcp:\n  mode: proxy\nboot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nfactory_url: {}\nclusters:\n  lab:\n    endpoint: https://10.0.0.5:6443\n    talos_version: v1.14.0-rc.1\n",
            factory.url()
        ),
        "machines:\n  - mac: 52:54:00:aa:00:02\n    hostname: w-1\n    profile: worker\n",
    );
    std::fs::write(lab.path().join("profiles/worker.yaml"), worker).unwrap();
    std::fs::write(
        lab.path().join("profiles/controlplane.yaml"),
        "role: controlplane\ntalos_version: v1.14.0-rc.1\ninstall_disk: /dev/sda\nstable_interface_names: true\nextensions: [siderolabs/iscsi-tools]\n",
    )
    .unwrap();
    std::fs::create_dir_all(lab.path().join("ipxe")).unwrap();
    for f in ["undionly.kpxe", "ipxe.efi"] {
        std::fs::write(lab.path().join("ipxe").join(f), b"ipxe").unwrap();
    }
    lab
}

fn kiln(lab: &Lab, args: &[&str]) -> (bool, String) {
    let cfg = lab.config().display().to_string();
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--config", cfg.as_str()]);
    run_kiln(None, &a)
}

const WORKER: &str = "role: worker\ntalos_version: v1.14.0-rc.1\ninstall_disk: /dev/sda\nextra_kernel_args: [noapic, nolapic]\n";

#[test]
fn pull_registers_downloads_resumes_and_check_verifies() {
    let f = FakeFactory::start(files());
    let lab = lab(&f, WORKER);
    // Before a pull the worker's boot files are missing, and check says how to get them.
    let (ok, out) = kiln(&lab, &["check"]);
    assert!(
        !ok && out.contains("kiln assets pull --profile worker"),
        "{out}"
    );

    // The first pull is cut off half-way through the worker's initramfs.
    f.inner
        .lock()
        .unwrap()
        .interrupt
        .insert("initramfs-amd64.xz".into(), 700_000);
    let (ok, out) = kiln(&lab, &["assets", "pull", "--profile", "worker"]);
    assert!(!ok, "{out}");
    assert!(out.contains("initramfs-amd64.xz"), "{out}");
    let d = lab
        .path()
        .join("boot-assets/factory")
        .join(ID_NOAPIC)
        .join("v1.14.0-rc.1");
    assert!(
        d.join("kernel-amd64").is_file(),
        "the kernel landed before the cut"
    );
    assert!(
        !d.join("initramfs-amd64.xz").exists(),
        "no half file in place"
    );
    let part = std::fs::metadata(d.join("initramfs-amd64.xz.part"))
        .unwrap()
        .len();
    assert!(part > 0 && part <= 700_000, "{part}");

    // Again: the kernel is cached, the initramfs resumes where it stopped.
    let (ok, out) = kiln(&lab, &["assets", "pull", "--profile", "worker"]);
    assert!(ok, "{out}");
    assert!(out.contains("kernel-amd64: cached"), "{out}");
    assert!(out.contains(&format!("resumed at {part}")), "{out}");
    let log = f.log();
    assert!(
        log.iter()
            .any(|l| l == &format!("GET /cdn/initramfs-amd64.xz bytes={part}-")),
        "{log:?}"
    );
    // The factory computed the same ID (its test vector) from what kiln posted.
    assert!(f.inner.lock().unwrap().schematics.contains_key(ID_NOAPIC));
    assert_eq!(
        std::fs::read(d.join("initramfs-amd64.xz")).unwrap(),
        files()["initramfs-amd64.xz"]
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["schematic"], ID_NOAPIC);
    let sha = |b: &[u8]| kiln::model::schematic::sha256_hex(b);
    assert_eq!(
        m["files"]["initramfs-amd64.xz"]["sha256"],
        sha(&files()["initramfs-amd64.xz"])
    );
    assert!(m["note"]
        .as_str()
        .unwrap()
        .contains("publishes no checksums"));

    // The control plane's schematic (extension + net.ifnames=0) too; then check is clean.
    let (ok, out) = kiln(&lab, &["assets", "pull", "--all"]);
    assert!(ok, "{out}");
    let (ok, out) = kiln(&lab, &["check"]);
    assert!(ok, "{out}");
    assert!(
        !out.contains("stable_interface_names"),
        "the installer carries it now: {out}"
    );

    // The installer is the factory's for the machine's schematic.
    std::fs::create_dir_all(lab.path().join("state/lab")).unwrap();
    let secrets = lab
        .path()
        .join("state/lab/secrets.yaml")
        .display()
        .to_string();
    assert!(run_kiln(None, &["gen", "secrets", "-o", &secrets]).0);
    let (ok, out) = kiln(&lab, &["render", "--mac", "52:54:00:aa:00:02"]);
    assert!(ok, "{out}");
    let docs = kiln::model::yaml::from_yaml(&out).unwrap();
    let ui = docs
        .iter()
        .find(|d| d["kind"] == "UnattendedInstallConfig")
        .unwrap();
    assert_eq!(
        ui["installer"]["image"],
        format!("{}/metal-installer/{ID_NOAPIC}:v1.14.0-rc.1", f.addr)
    );

    // A changed file fails check, naming it.
    std::fs::write(d.join("kernel-amd64"), b"tampered").unwrap();
    let (ok, out) = kiln(&lab, &["check"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("kernel-amd64: sha256") && out.contains("the file changed"),
        "{out}"
    );
}

#[test]
fn list_prune_and_import_keep_to_the_manifest() {
    let f = FakeFactory::start(files());
    let lab = lab(&f, WORKER);
    let (ok, out) = kiln(&lab, &["assets", "pull"]);
    assert!(ok, "{out}");
    let (ok, out) = kiln(&lab, &["assets", "list"]);
    assert!(
        ok && out.contains(&format!("{ID_NOAPIC}/v1.14.0-rc.1: profiles worker")),
        "{out}"
    );
    assert!(out.contains("cmdline-metal-amd64"), "{out}");

    // An air-gapped site imports what was pulled here.
    let other = self::lab(&f, WORKER);
    let src = lab.path().join("boot-assets/factory");
    let (ok, out) = kiln(&other, &["assets", "import", &src.display().to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = kiln(&other, &["check"]);
    assert!(ok, "{out}");
    // A tampered copy is refused before a byte is copied.
    let third = self::lab(&f, WORKER);
    std::fs::write(src.join(ID_NOAPIC).join("v1.14.0-rc.1/kernel-amd64"), b"x").unwrap();
    let (ok, out) = kiln(&third, &["assets", "import", &src.display().to_string()]);
    assert!(!ok && out.contains("refusing to import"), "{out}");
    assert!(!third
        .path()
        .join("boot-assets/factory")
        .join(ID_NOAPIC)
        .join("v1.14.0-rc.1/kernel-amd64")
        .exists());

    // The worker moves to another schematic: the old image is unused, prune removes it.
    std::fs::write(
        lab.path().join("profiles/worker.yaml"),
        "role: worker\ntalos_version: v1.14.0-rc.1\n",
    )
    .unwrap();
    let (ok, out) = kiln(&lab, &["assets", "prune", "--dry-run"]);
    assert!(
        ok && out.contains("would remove") && out.contains(ID_NOAPIC),
        "{out}"
    );
    let (ok, out) = kiln(&lab, &["assets", "prune"]);
    assert!(ok && out.contains("removed"), "{out}");
    assert!(!lab
        .path()
        .join("boot-assets/factory")
        .join(ID_NOAPIC)
        .exists());
}

/// The script's kernel line is the factory's cmdline for the schematic plus
/// kiln's own arguments, each once.
#[test]
fn the_kernel_line_is_the_factorys_cmdline_once() {
    let f = FakeFactory::start(files());
    let lab = lab(&f, "role: worker\ntalos_version: v1.14.0-rc.1\nstable_interface_names: true\nextra_kernel_args: [noapic]\n");
    // A profile without a cluster is served to anyone (maintenance mode).
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let i = text.find("clusters:").unwrap();
    std::fs::write(lab.config(), &text[..i]).unwrap();
    std::fs::write(
        lab.path().join("profiles/controlplane.yaml"),
        "role: controlplane\ntalos_version: v1.14.0-rc.1\n",
    )
    .unwrap();
    let (ok, out) = kiln(&lab, &["assets", "pull"]);
    assert!(ok, "{out}");
    let mut k = common::Kiln::start(&lab.config(), None);
    let http = k.ports.http;
    let body = ureq::get(&format!("http://127.0.0.1:{http}/ipxe/52-54-00-aa-00-02"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    k.stop();
    let line = body
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(line.contains("/assets/factory/"), "{line}");
    assert_eq!(line.matches("net.ifnames=0").count(), 1, "{line}");
    assert_eq!(line.matches("noapic").count(), 1, "{line}");
    assert!(
        line.contains("talos.platform=metal console=tty0 slab_nomerge"),
        "{line}"
    );
}

/// A slow link: the pull waits it out, and off a terminal it says what it is
/// doing in plain lines (size when it starts, sha256 when it lands).
#[test]
fn a_slow_download_completes_with_plain_progress_lines() {
    let f = FakeFactory::start(files());
    f.inner
        .lock()
        .unwrap()
        .slow
        .insert("kernel-amd64".into(), 30_000);
    let lab = lab(&f, WORKER);
    let (ok, out) = kiln(&lab, &["assets", "pull", "--profile", "worker"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("kernel-amd64: downloading (300000 bytes)"),
        "{out}"
    );
    let sha = kiln::model::schematic::sha256_hex(&files()["kernel-amd64"]);
    assert!(
        out.contains(&format!("kernel-amd64: done (300000 bytes, sha256 {sha})")),
        "{out}"
    );
}
