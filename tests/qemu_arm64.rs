//! arm64 netboots in QEMU (AAVMF, TCG), as ../shared/e2e/ARM64.md proved
//! them: one machine by UEFI PXE (arch 11: TFTP ipxe-arm64.efi, then iPXE's
//! script), one by UEFI HTTP Boot (arch 19: kiln's URL to the same iPXE,
//! fetched with HEAD then GET), and one by HTTP Boot straight to a UKI (no
//! iPXE, no token: the UKI's command line is the one kiln computes, and kiln
//! releases the config to the machine's leased address only). Each boots
//! Debian's arm64 kernel with a busybox initramfs that fetches its config
//! from kiln and prints it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{self, Net};
use common::{have, skip_unless, Kiln, Lab};

const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";
const PXE: &str = "52:54:00:64:00:01";
const HTTP: &str = "52:54:00:64:00:02";
const UKI: &str = "52:54:00:64:00:03";

fn skip() -> bool {
    netns::skip(&[])
        || skip_unless(
            have("qemu-system-aarch64"),
            "qemu-system-aarch64 (Debian qemu-system-arm)",
        )
        || skip_unless(
            Path::new(AAVMF_CODE).exists(),
            "AAVMF (Debian qemu-efi-aarch64)",
        )
        || skip_unless(
            have("aarch64-linux-gnu-objcopy") && have("cpio") && have("curl") && have("xz"),
            "binutils-aarch64-linux-gnu, cpio, curl, xz-utils",
        )
        || skip_unless(
            Command::new("dpkg")
                .arg("--print-foreign-architectures")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("arm64")),
            "arm64 packages (dpkg --add-architecture arm64 && apt-get update)",
        )
}

/// Build (once, cached under target/) the arm64 guest; with `uki_cmdline`,
/// also a UKI carrying that command line. Returns the output directory.
fn build(uki_cmdline: Option<&str>) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/guest-arm64");
    let mut c = Command::new(root.join("tests/guest/build-arm64.sh"));
    c.arg(&out);
    if let Some(cmdline) = uki_cmdline {
        c.arg(cmdline);
    }
    assert!(
        c.status().unwrap().success(),
        "building the arm64 guest failed"
    );
    out
}

/// An AAVMF VM on `tap`; `http_boot` switches its PXE off so it HTTP-boots.
fn spawn(
    ns: &str,
    tap: &str,
    mac: &str,
    http_boot: bool,
    dir: &Path,
) -> (std::process::Child, PathBuf) {
    let serial = dir.join(format!("serial-{}.log", mac.replace(':', "")));
    let vars = dir.join(format!("vars-{}.fd", mac.replace(':', "")));
    std::fs::copy(AAVMF_VARS, &vars).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "qemu-system-aarch64"]);
    cmd.args([
        "-M",
        "virt",
        "-cpu",
        "cortex-a57",
        "-smp",
        "1",
        "-m",
        "1024",
    ]);
    cmd.args(["-display", "none", "-monitor", "none", "-no-reboot"]);
    cmd.args(["-boot", "menu=on,splash-time=0"]);
    cmd.arg("-serial").arg(format!("file:{}", serial.display()));
    cmd.arg("-drive").arg(format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}"
    ));
    cmd.arg("-drive").arg(format!(
        "if=pflash,format=raw,unit=1,file={}",
        vars.display()
    ));
    if http_boot {
        for v in ["IPv4PXESupport", "IPv6PXESupport"] {
            cmd.args(["-fw_cfg", &format!("name=opt/org.tianocore/{v},string=n")]);
        }
    }
    cmd.args([
        "-netdev",
        &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={mac}"),
        "-device",
        "virtio-rng-pci",
    ]);
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (child, serial)
}

/// Wait until each VM has powered off (or `timeout`); their serial logs.
fn wait_all(vms: Vec<(std::process::Child, PathBuf)>, timeout: Duration) -> Vec<String> {
    let t0 = Instant::now();
    vms.into_iter()
        .map(|(mut child, serial)| {
            while t0.elapsed() < timeout && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(250));
            }
            eprintln!("{}: {:.1}s", serial.display(), t0.elapsed().as_secs_f64());
            let _ = child.kill();
            let _ = child.wait();
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned()
        })
        .collect()
}

/// The config the guest printed between its markers.
fn printed_config(serial: &str) -> Option<&str> {
    let a = serial.find("KILN-GUEST: config-begin")?;
    let b = serial[a..].find("KILN-GUEST: config-end")?;
    Some(&serial[a..a + b])
}

#[test]
fn arm64_machines_boot_by_pxe_and_by_http_boot_and_fetch_their_own_configs() {
    if skip() {
        return;
    }
    let t0 = Instant::now();
    let guest = build(None);
    let built = t0.elapsed();
    let net = Net::new("qa", "10.98.0.1/24");
    net.add_tap("tap0");
    net.add_tap("tap1");
    net.add_tap("tap2");
    let lab = Lab::new(
        "interface: br0\nserver_address: 10.98.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\ndhcp:\n  mode: full\n  subnet: 10.98.0.0/24\n  range: [10.98.0.100, 10.98.0.200]\n  router: 10.98.0.1\nclusters:\n  lab:\n    endpoint: https://10.98.0.5:6443\n",
        &format!("machines:\n  - mac: {PXE}\n    hostname: a64-pxe\n    profile: arm\n    ip: 10.98.0.11\n  - mac: {HTTP}\n    hostname: a64-http\n    profile: arm\n    ip: 10.98.0.12\n  - mac: {UKI}\n    hostname: a64-uki\n    profile: arm-uki\n    ip: 10.98.0.13\n"),
    );
    lab.ipxe_stubs();
    std::fs::copy(
        guest.join("ipxe-arm64.efi"),
        lab.path().join("ipxe/ipxe-arm64.efi"),
    )
    .unwrap();
    std::fs::write(
        lab.path().join("profiles/arm.yaml"),
        "role: worker\narch: arm64\ntalos_version: v1.13.9\nconsole: [console=ttyAMA0]\nkernel_args: [panic=-1]\nkernel: guest/vmlinuz-arm64\ninitramfs: guest/initramfs-arm64.gz\ninstall_disk: /dev/vda\n",
    )
    .unwrap();
    std::fs::write(
        lab.path().join("profiles/arm-uki.yaml"),
        "role: worker\narch: arm64\ntalos_version: v1.13.9\nhttp_boot: uki\nuki: guest/uki.efi\nkernel: guest/vmlinuz-arm64\ninitramfs: guest/initramfs-arm64.gz\ninstall_disk: /dev/vda\n",
    )
    .unwrap();
    let g = lab.path().join("boot-assets/guest");
    std::fs::create_dir_all(&g).unwrap();
    for f in ["vmlinuz-arm64", "initramfs-arm64.gz"] {
        std::fs::copy(guest.join(f), g.join(f)).unwrap();
    }
    // kiln checks the UKI is there; the real one is built once kiln says
    // what its command line must carry.
    std::fs::write(g.join("uki.efi"), b"placeholder").unwrap();
    let mut k = Kiln::start(&lab.config(), Some(&net.server));
    let (ok, explained) = common::run_kiln(
        None,
        &[
            "explain",
            "a64-uki",
            "--config",
            lab.config().to_str().unwrap(),
        ],
    );
    assert!(ok, "{explained}");
    let args = explained
        .split("whose command line carries: ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap_or_else(|| panic!("explain names no UKI command line:\n{explained}"))
        .to_string();
    assert!(
        args.contains("talos.config=http://10.98.0.1:8080/config?mac=${mac}&uuid=${uuid}"),
        "{args}"
    );
    let uki = build(Some(&format!("console=ttyAMA0 panic=-1 {args}")));
    std::fs::copy(uki.join("uki.efi"), g.join("uki.efi")).unwrap();
    let booted = Instant::now();
    let vms = vec![
        spawn(&net.server, "tap0", PXE, false, lab.path()),
        spawn(&net.server, "tap1", HTTP, true, lab.path()),
        spawn(&net.server, "tap2", UKI, true, lab.path()),
    ];
    let serials = wait_all(vms, Duration::from_secs(300));
    let boots = booted.elapsed();
    // The token-less URL answers nobody else: not another address.
    let stranger = common::curl::curl_in(
        &net.server,
        &["http://10.98.0.1:8080/config?mac=52%3A54%3A00%3A64%3A00%3A03&uuid="],
    );
    assert_eq!(stranger.code, "403", "{}", stranger.text());
    k.stop();
    let logs = k.logs();
    for ((mac, host, ip, other), serial) in [
        (PXE, "a64-pxe", "10.98.0.11", "a64-http"),
        (HTTP, "a64-http", "10.98.0.12", "a64-pxe"),
        (UKI, "a64-uki", "10.98.0.13", "a64-pxe"),
    ]
    .iter()
    .zip(&serials)
    {
        assert!(
            serial.contains("KILN-GUEST: booted aarch64"),
            "{mac} never booted Linux:\n{serial}\n--- kiln ---\n{logs}"
        );
        assert!(
            serial.contains(&format!("KILN-GUEST: dhcp {ip}")),
            "{serial}"
        );
        let config = printed_config(serial)
            .unwrap_or_else(|| panic!("{mac} fetched no config:\n{serial}\n--- kiln ---\n{logs}"));
        assert!(config.contains(&format!("hostname: {host}")), "{config}");
        assert!(!config.contains(other), "{mac} got {other}'s config");
        let script = logs.contains(&format!("machine script: boot v1.13.9 as {host}"));
        assert_eq!(script, *mac != UKI, "an iPXE script for {host}:\n{logs}");
    }
    // The UKI booted without iPXE, on the UKI's own command line, and kiln
    // served its config to its leased address.
    let uki_serial = &serials[2];
    assert!(
        uki_serial.contains("KILN-GUEST: cmdline console=ttyAMA0 panic=-1 talos.config="),
        "{uki_serial}"
    );
    assert!(
        logs.contains("method=HEAD path=/assets/guest/uki.efi"),
        "{logs}"
    );
    // iPXE's script ended its connection, so its kernel fetch went out by
    // sendfile (kiln's fast path), not through hyper.
    assert!(
        logs.lines()
            .any(|l| l.contains("path=/assets/guest/vmlinuz-arm64")
                && l.contains("finished processing request")
                && l.contains("sendfile=true")),
        "{logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("config served")
            && l.contains("a64-uki")
            && l.contains("peer=10.98.0.13")),
        "{logs}"
    );
    // The PXE machine took iPXE over TFTP; the HTTP Boot one from kiln's URL,
    // HEAD first (the firmware wants the length), as application/efi.
    assert!(logs.contains("ipxe-arm64.efi"), "{logs}");
    assert!(
        logs.contains("method=HEAD path=/assets/ipxe-arm64.efi"),
        "the HTTP Boot firmware's HEAD:\n{logs}"
    );
    assert!(
        logs.contains("method=GET path=/assets/ipxe-arm64.efi"),
        "{logs}"
    );
    eprintln!(
        "arm64 guest build {:.1}s; three VMs from power-on to config and power-off {:.1}s",
        built.as_secs_f64(),
        boots.as_secs_f64()
    );
}
