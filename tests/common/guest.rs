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

/// Build the fake-talos stand-in statically (cached under target/) and the
/// guest initramfs that runs it; returns (vmlinuz, initramfs-talos.gz).
pub fn build_talos() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tdir = root.join("target/guest-build");
    let st = Command::new("cargo")
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "fake-talos",
            "--target-dir",
        ])
        .arg(&tdir)
        .status()
        .unwrap();
    assert!(st.success(), "building fake-talos failed");
    let bin = tdir.join("x86_64-unknown-linux-gnu/guest/fake-talos");
    let out = root.join("target/guest");
    let st = Command::new(root.join("tests/guest/build.sh"))
        .arg(&out)
        .arg(&bin)
        .status()
        .unwrap();
    assert!(st.success(), "building the talos guest failed");
    (out.join("vmlinuz"), out.join("initramfs-talos.gz"))
}

pub fn ovmf_present() -> bool {
    Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists()
        && Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd").exists()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with the NIC's iPXE option ROM.
    BiosIpxeRom,
    /// OVMF with its own PXE client (no NIC ROM): TFTP ipxe.efi, then iPXE.
    UefiPxe,
}

/// A running VM; killed on drop.
pub struct Vm {
    pub child: std::process::Child,
    pub serial: PathBuf,
    pub mac: String,
    pub started: Instant,
}

impl Vm {
    pub fn spawn(netns: &str, tap: &str, mac: &str, fw: Firmware, dir: &Path) -> Vm {
        let tag = format!("{}-{}", mac.replace(':', ""), std::process::id());
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let serial = dir.join(format!(
            "serial-{tag}-{}.log",
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            netns,
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "768",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-machine",
            "pc,graphics=off",
        ]);
        let nic = match fw {
            Firmware::BiosIpxeRom => {
                cmd.args(["-boot", "n"]);
                format!("virtio-net-pci,netdev=n0,mac={mac}")
            }
            Firmware::UefiPxe => {
                let vars = dir.join(format!("vars-{tag}.fd"));
                std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
                cmd.args([
                    "-drive",
                    "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                ]);
                cmd.arg("-drive")
                    .arg(format!("if=pflash,format=raw,file={}", vars.display()));
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile=")
            }
        };
        cmd.arg("-serial").arg(format!("file:{}", serial.display()));
        cmd.args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device",
            &nic,
        ]);
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Vm {
            child,
            serial,
            mac: mac.into(),
            started: Instant::now(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Wait until the serial console shows `needle`; false on timeout or exit.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.log().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut vm = Vm::spawn(netns, tap, mac, fw, dir);
    while vm.started.elapsed() < timeout {
        if let Ok(Some(_)) = vm.child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("vm {mac}: {:.1}s", vm.started.elapsed().as_secs_f64());
    vm.log()
}
