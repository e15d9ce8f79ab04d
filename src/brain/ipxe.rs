//! iPXE scripts and the Talos kernel command line, rendered as plain text (pure).

use crate::model::inventory::{is_url, Arch, LocalBoot, Machine, Profile};

/// The script every iPXE client gets first: chain to its own script by MAC.
/// `${mac:hexhyp}` is the MAC of the interface iPXE booted from.
pub(crate) fn boot_script(http_base: &str) -> String {
    format!(
        "#!ipxe\n\
         # kiln: fetch this machine's own script\n\
         chain --autofree {http_base}/ipxe/${{mac:hexhyp}}?uuid=${{uuid}}&serial=${{serial}}&arch=${{buildarch}}&platform=${{platform}} || goto failed\n\
         exit\n\
         :failed\n\
         echo kiln: could not fetch the machine script, booting next device\n\
         exit\n"
    )
}

/// Talos's own default arguments for a release (pkg/imager buildCmdline +
/// kernel.DefaultArgs), which change between minor versions.
pub(crate) fn talos_default_args(version: &str, arch: Arch) -> Vec<String> {
    let minor = parse_minor(version).unwrap_or(u32::MAX);
    let mut a: Vec<&str> = vec!["talos.platform=metal"];
    match arch {
        Arch::Amd64 if minor >= 8 => a.push("console=tty0"),
        Arch::Amd64 => a.extend(["console=ttyS0", "console=tty0"]),
        Arch::Arm64 => a.extend(["console=ttyAMA0", "console=tty0"]),
    }
    if minor < 14 {
        a.push("init_on_alloc=1");
    }
    a.extend(["slab_nomerge", "pti=on", "consoleblank=0"]);
    if minor < 14 {
        a.push("nvme_core.io_timeout=4294967295");
    }
    a.push("printk.devkmsg=on");
    if minor < 11 {
        a.extend(["ima_template=ima-ng", "ima_appraise=fix", "ima_hash=sha512"]);
    }
    if minor >= 10 {
        a.push("selinux=1");
    }
    if minor >= 12 {
        a.push("module.sig_enforce=1");
    }
    if minor >= 13 {
        a.push("proc_mem.force_override=never");
    }
    a.into_iter().map(String::from).collect()
}

/// `v1.13.2` → 13 (Talos 1.x minor version).
pub(crate) fn parse_minor(version: &str) -> Option<u32> {
    let mut it = version.trim_start_matches('v').split(['.', '-']);
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it.next()?.parse().ok()?;
    (major == 1).then_some(minor)
}

fn asset_url(http_base: &str, r: &str) -> String {
    if is_url(r) {
        r.to_string()
    } else {
        format!("{http_base}/assets/{}", r.trim_start_matches('/'))
    }
}

fn basename(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// The boot files a profile uses, resolved under boot_assets
/// (`brain::assets::boot_files`), with the factory's kernel command line for
/// the schematic when the files came from `kiln assets pull`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootFiles {
    pub kernel: String,
    pub initramfs: String,
    pub cmdline: Option<String>,
}

/// Everything needed to render one machine's boot script.
pub(crate) struct BootParams<'a> {
    pub http_base: &'a str,
    pub machine: &'a Machine,
    pub profile: &'a Profile,
    pub files: BootFiles,
    /// `talos.config=` value; `None` leaves Talos in maintenance mode.
    pub config_url: Option<String>,
    /// Further arguments kiln adds (event sink, ...).
    pub extra_args: Vec<String>,
}

/// The kernel line: the factory's cmdline for the schematic (or Talos's
/// defaults for the release), the profile's console and arguments, then
/// kiln's own; each argument once.
pub(crate) fn kernel_args(p: &BootParams<'_>) -> Vec<String> {
    let prof = p.profile;
    let initrd = asset_url(p.http_base, &p.files.initramfs);
    let mut args = match &p.files.cmdline {
        Some(c) => c.split_whitespace().map(String::from).collect(),
        None => talos_default_args(&prof.talos_version, prof.arch),
    };
    if let Some(console) = &prof.console {
        args.retain(|a| !a.starts_with("console="));
        args.extend(console.iter().cloned());
    }
    // UEFI iPXE hands the initrd to the kernel only when it is named on the line.
    args.insert(0, format!("initrd={}", basename(&initrd)));
    args.extend(prof.kernel_args.iter().cloned());
    args.extend(p.extra_args.iter().cloned());
    if let Some(u) = &p.config_url {
        args.push(format!("talos.config={u}"));
    }
    let mut seen = std::collections::HashSet::new();
    args.retain(|a| seen.insert(a.clone()));
    args
}

/// The per-machine script: kernel + initrd + boot, failing over to the next boot
/// device if a download fails.
pub(crate) fn machine_script(p: &BootParams<'_>) -> String {
    let kernel = asset_url(p.http_base, &p.files.kernel);
    let initrd = asset_url(p.http_base, &p.files.initramfs);
    format!(
        "#!ipxe\n\
         echo kiln: {host} ({mac}) profile {profile}, Talos {ver}\n\
         kernel {kernel} {args} || goto failed\n\
         initrd {initrd} || goto failed\n\
         boot || goto failed\n\
         :failed\n\
         echo kiln: boot failed, trying the next boot device\n\
         exit 1\n",
        host = p.machine.hostname,
        mac = p.machine.mac,
        profile = p.profile.name,
        ver = p.profile.talos_version,
        args = kernel_args(p).join(" "),
    )
}

/// For machines kiln will not boot: say why, then let firmware try the next device.
pub(crate) fn refuse_script(mac: &str, why: &str) -> String {
    let why: String = why
        .chars()
        .filter(|c| !c.is_control() && *c != '$')
        .collect();
    format!("#!ipxe\necho kiln: {mac}: {why}\necho kiln: not booting this machine from the network\nexit\n")
}

/// Installed machines boot their disk, the way `method` says (`Http404`
/// is an HTTP status, not a script: see `edge::http`).
pub(crate) fn local_boot_script(hostname: &str, method: LocalBoot) -> String {
    let how = match method {
        LocalBoot::Sanboot => "sanboot --no-describe --drive 0x80 || exit\n",
        LocalBoot::Exit | LocalBoot::Http404 => "exit\n",
    };
    format!("#!ipxe\necho kiln: {hostname} is installed, booting from local disk\n{how}")
}

/// For a machine not (yet) in the inventory with `unknown_machines: hold`:
/// wait and ask again, so adding it to machines.yaml boots it with no power cycle.
pub(crate) fn hold_script(http_base: &str, mac: &str, seconds: u32) -> String {
    format!(
        "#!ipxe\n\
         echo kiln: {mac} is not in the inventory; holding, asking again every {seconds}s\n\
         :retry\n\
         sleep {seconds}\n\
         chain --replace --autofree {http_base}/ipxe/${{mac:hexhyp}}?uuid=${{uuid}}&serial=${{serial}}&arch=${{buildarch}}&platform=${{platform}} || goto retry\n\
         goto retry\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inventory::Role;

    fn cp1() -> Machine {
        Machine {
            mac: "52:54:00:aa:00:01".parse().unwrap(),
            hostname: "cp-1".into(),
            profile: "controlplane".into(),
            ip: None,
            uuid: None,
            boot: Default::default(),
        }
    }

    fn profile() -> Profile {
        Profile {
            kernel_args: vec!["net.ifnames=0".into()],
            console: Some(vec!["console=ttyS0".into()]),
            ..Profile::new("controlplane", Role::Controlplane, "v1.13.0")
        }
    }

    #[test]
    fn script_has_kernel_initrd_and_talos_args() {
        let m = cp1();
        let p = profile();
        let s = machine_script(&BootParams {
            http_base: "http://10.0.0.1:8080",
            machine: &m,
            profile: &p,
            files: legacy(&p),
            config_url: Some("http://10.0.0.1:8080/config/x?mac=${mac}".into()),
            extra_args: vec![],
        });
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("kernel http://10.0.0.1:8080/assets/talos/v1.13.0/vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal "), "{s}");
        assert!(s.contains("initrd http://10.0.0.1:8080/assets/talos/v1.13.0/initramfs-amd64.xz"));
        for a in [
            "init_on_alloc=1",
            "slab_nomerge",
            "pti=on",
            "console=ttyS0",
            "net.ifnames=0",
            "talos.config=http://10.0.0.1:8080/config/x?mac=${mac}",
            "proc_mem.force_override=never",
        ] {
            assert!(s.contains(a), "{a} missing in {s}");
        }
        assert!(
            !s.contains("console=tty0"),
            "profile console replaces the default"
        );
    }

    fn legacy(p: &Profile) -> BootFiles {
        BootFiles {
            kernel: p.kernel_ref(),
            initramfs: p.initramfs_ref(),
            cmdline: None,
        }
    }

    /// The factory's cmdline replaces Talos's defaults; an argument the
    /// schematic and kiln both add appears once.
    #[test]
    fn factory_cmdline_leads_and_nothing_repeats() {
        let m = cp1();
        let p = profile();
        let files = BootFiles {
            kernel: "factory/abc/v1.14.0/kernel-amd64".into(),
            initramfs: "factory/abc/v1.14.0/initramfs-amd64.xz".into(),
            cmdline: Some(
                "talos.platform=metal console=tty0 slab_nomerge net.ifnames=0 foo=1\n".into(),
            ),
        };
        let b = BootParams {
            http_base: "http://k",
            machine: &m,
            profile: &p,
            files,
            config_url: None,
            extra_args: vec!["net.ifnames=0".into(), "talos.events.sink=1:2".into()],
        };
        let a = kernel_args(&b);
        assert_eq!(
            a,
            [
                "initrd=initramfs-amd64.xz",
                "talos.platform=metal",
                "slab_nomerge",
                "net.ifnames=0",
                "foo=1",
                "console=ttyS0",
                "talos.events.sink=1:2"
            ]
        );
        assert!(
            machine_script(&b).contains("kernel http://k/assets/factory/abc/v1.14.0/kernel-amd64 ")
        );
    }

    #[test]
    fn default_args_follow_the_talos_release() {
        let v18 = talos_default_args("v1.8.4", Arch::Amd64).join(" ");
        assert!(v18.contains("ima_hash=sha512") && !v18.contains("selinux"));
        let v114 = talos_default_args("v1.14.0", Arch::Amd64).join(" ");
        assert!(
            !v114.contains("init_on_alloc")
                && !v114.contains("nvme_core")
                && v114.contains("module.sig_enforce=1")
        );
        let arm = talos_default_args("v1.13.0", Arch::Arm64).join(" ");
        assert!(arm.contains("console=ttyAMA0"));
    }

    #[test]
    fn local_boot_methods_and_the_hold_loop() {
        assert!(local_boot_script("w-1", LocalBoot::Sanboot)
            .contains("sanboot --no-describe --drive 0x80"));
        let e = local_boot_script("w-1", LocalBoot::Exit);
        assert!(e.ends_with("\nexit\n") && !e.contains("sanboot"), "{e}");
        let h = hold_script("http://k:8080", "52:54:00:aa:00:09", 30);
        assert!(
            h.contains(
                ":retry\nsleep 30\nchain --replace --autofree http://k:8080/ipxe/${mac:hexhyp}?"
            ),
            "{h}"
        );
    }

    #[test]
    fn boot_script_chains_by_mac_without_loops() {
        let s = boot_script("http://k:8080");
        assert!(s.contains("chain --autofree http://k:8080/ipxe/${mac:hexhyp}?uuid=${uuid}"));
        assert!(refuse_script("aa", "unknown $x\nexit").lines().count() == 4);
    }
}
