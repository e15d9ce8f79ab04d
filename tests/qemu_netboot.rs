//! A real netboot: SeaBIOS + the NIC's iPXE ROM in QEMU gets DHCP from kiln,
//! chains boot.ipxe to its per-machine script, and boots the kernel and
//! initramfs kiln serves (Debian's cloud kernel and a busybox stand-in).

mod common;

use std::time::Duration;

use common::guest::{self, Firmware};
use common::netns::{self, Net};
use common::{Kiln, Lab};

#[test]
fn bios_ipxe_rom_boots_the_per_machine_script() {
    if netns::skip(&[]) || guest::skip() {
        return;
    }
    let (vmlinuz, initrd) = guest::build();
    let net = Net::new("qb", "10.99.0.1/24");
    net.add_tap("tap0");
    let lab = Lab::new(
        "interface: br0\nserver_address: 10.99.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\ndhcp:\n  mode: full\n  subnet: 10.99.0.0/24\n  range: [10.99.0.100, 10.99.0.200]\n  router: 10.99.0.1\nclusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n",
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: guest\n    ip: 10.99.0.11\n",
    );
    std::fs::write(
        lab.path().join("profiles/guest.yaml"),
        "role: controlplane\ntalos_version: v1.13.9\nconsole: [console=ttyS0]\nkernel_args: [panic=-1]\nkernel: guest/vmlinuz\ninitramfs: guest/initramfs.gz\ninstall_disk: /dev/vda\nvip: 10.99.0.5\n",
    )
    .unwrap();
    let g = lab.path().join("boot-assets/guest");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::copy(&vmlinuz, g.join("vmlinuz")).unwrap();
    std::fs::copy(&initrd, g.join("initramfs.gz")).unwrap();
    let mut k = Kiln::start(&lab.config(), Some(&net.server));

    let serial = guest::run_vm(
        &net.server,
        "tap0",
        "52:54:00:aa:00:01",
        Firmware::BiosIpxeRom,
        lab.path(),
        Duration::from_secs(240),
    );
    k.stop();
    let logs = k.logs();
    assert!(
        serial.contains("KILN-GUEST: booted"),
        "guest never booted:\n{serial}\n--- kiln ---\n{logs}"
    );
    // iPXE's IPv6 autoconfiguration got kiln's empty router advertisement
    // (instead of soliciting until its timer gives up), from the guest's own
    // link-local address.
    assert!(
        logs.lines()
            .any(|l| l.contains("ipv6: answered router solicitation")
                && l.contains("from=fe80::5054:ff:feaa:1")),
        "no router solicitation answered:\n{logs}"
    );
    // Its address came from its reservation, in Linux as in iPXE.
    assert!(serial.contains("KILN-GUEST: dhcp 10.99.0.11"), "{serial}");
    // The kernel line is the one kiln rendered for this machine, variables expanded by iPXE.
    let cmdline = serial
        .lines()
        .find(|l| l.contains("KILN-GUEST: cmdline"))
        .unwrap();
    for a in [
        "initrd=initramfs.gz",
        "talos.platform=metal",
        "slab_nomerge",
        "pti=on",
        "console=ttyS0",
        "talos.config=http://10.99.0.1:8080/config/52-54-00-aa-00-01?token=",
    ] {
        assert!(cmdline.contains(a), "{a} not in {cmdline}");
    }
    assert!(
        !cmdline.contains("${uuid}"),
        "iPXE did not expand ${{uuid}}: {cmdline}"
    );
    // kiln's side: iPXE asked as iPXE, got the script, then the kernel and initramfs.
    assert!(logs.contains("ack 10.99.0.11"), "{logs}");
    assert!(
        logs.contains("boot http://10.99.0.1:8080/boot.ipxe"),
        "{logs}"
    );
    assert!(
        logs.contains("machine script: boot v1.13.9 as cp-1"),
        "{logs}"
    );
    assert!(
        logs.contains("/assets/guest/vmlinuz") && logs.contains("/assets/guest/initramfs.gz"),
        "{logs}"
    );
}
