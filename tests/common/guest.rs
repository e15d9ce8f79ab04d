//! The stand-in guest (Debian cloud kernel + busybox initramfs) and QEMU runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{have, skip_unless};

/// Skip (or fail in CI) unless QEMU, iPXE ROMs and the tools to build the guest exist.
pub fn skip() -> bool {
    skip_unless(have("qemu-system-x86_64"), "qemu-system-x86_64")
        || skip_unless(
            Path::new("/usr/lib/ipxe/qemu/pxe-virtio.rom").exists()
                || Path::new("/usr/lib/ipxe/qemu/efi-virtio.rom").exists(),
            "ipxe-qemu NIC ROMs",
        )
        || skip_unless(
            have("busybox") && have("cpio") && have("apt-get"),
            "busybox-static, cpio, apt-get",
        )
}

/// Build (once, cached under target/) and return (vmlinuz, initramfs.gz).
pub fn build() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/guest");
    let st = Command::new(root.join("tests/guest/build.sh"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "building the guest failed");
    (out.join("vmlinuz"), out.join("initramfs.gz"))
}

pub enum Firmware {
    /// SeaBIOS with the NIC's iPXE option ROM.
    BiosIpxeRom,
}

/// Boot a VM on `tap` inside `netns` until it powers off or `timeout`; returns the
/// serial log.
pub fn run_vm(
    netns: &str,
    tap: &str,
    mac: &str,
    fw: Firmware,
    dir: &Path,
    timeout: Duration,
) -> String {
    let serial = dir.join(format!("serial-{mac}.log").replace(':', ""));
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        netns,
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
    ]);
    match fw {
        Firmware::BiosIpxeRom => {
            cmd.args(["-machine", "pc,graphics=off", "-boot", "n"]);
        }
    }
    cmd.arg("-serial").arg(format!("file:{}", serial.display()));
    cmd.args([
        "-netdev",
        &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={mac}"),
    ]);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("vm {mac}: {:.1}s", t0.elapsed().as_secs_f64());
    std::fs::read_to_string(&serial).unwrap_or_default()
}
