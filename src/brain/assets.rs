//! Boot assets: iPXE binaries (TFTP and HTTP) and Talos kernels/initramfs (HTTP).
//! Lookup is confined to `boot_assets` and, for iPXE binaries, the `ipxe_dirs`
//! fallbacks (Debian's `ipxe` package installs /usr/lib/ipxe).

use std::path::{Component, Path, PathBuf};

use crate::brain::dhcp::policy::{
    ARM64_EFI_IPXE, ARM64_EFI_SNPONLY, BIOS_IPXE, X64_EFI_IPXE, X64_EFI_SNPONLY,
};
use crate::brain::ipxe::BootFiles;
use crate::model::config::Config;
use crate::model::inventory::{is_url, Arch, Inventory, Profile, UefiBinary};
use crate::model::problems::Problems;

/// A request path made safe: relative, no `..`, no root or prefix components.
/// `None` means the path tries to leave the asset directory.
pub(crate) fn clean_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path.trim_start_matches('/'));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Find `rel` under boot_assets, then (single file names only) under ipxe_dirs.
pub(crate) fn resolve(cfg: &Config, rel: &Path) -> Option<PathBuf> {
    let p = cfg.boot_assets.join(rel);
    if p.is_file() {
        return Some(p);
    }
    if rel.components().count() == 1 {
        for d in &cfg.ipxe_dirs {
            let p = d.join(rel);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The boot files `p` uses: its own `kernel:`/`initramfs:` if it names them,
/// else what `kiln assets pull` fetched for its schematic (with the factory's
/// kernel command line), else `talos/<version>/`.
pub(crate) fn boot_files(cfg: &Config, p: &Profile) -> BootFiles {
    if p.kernel.is_none() && p.initramfs.is_none() {
        let d = p.factory_dir();
        let [kernel, initramfs, cmdline] = crate::brain::factory::files_for(p.arch);
        let dir = cfg.boot_assets.join(&d);
        // All three landed and recorded: a half-pulled image is not served.
        if crate::brain::factory::pulled(&dir, &[&kernel, &initramfs, &cmdline]) {
            let cmdline = std::fs::read_to_string(dir.join(cmdline)).ok();
            return BootFiles {
                kernel: format!("{d}/{kernel}"),
                initramfs: format!("{d}/{initramfs}"),
                cmdline,
            };
        }
    }
    BootFiles {
        kernel: p.kernel_ref(),
        initramfs: p.initramfs_ref(),
        cmdline: None,
    }
}

/// Every asset the configuration will hand out must exist.
pub(crate) fn check(cfg: &Config, inv: &Inventory) -> Problems {
    let mut problems = Problems::default();
    let mut needed: Vec<&str> = vec![BIOS_IPXE, X64_EFI_IPXE];
    if inv.profiles.values().any(|p| p.arch == Arch::Arm64) {
        needed.push(ARM64_EFI_IPXE);
    }
    let snponly = inv
        .machines()
        .iter()
        .filter_map(|m| inv.profile(&m.profile).map(|p| (m.uefi_binary(p), p.arch)))
        .filter(|(u, _)| *u == UefiBinary::Snponly);
    for (_, arch) in snponly {
        let f = if arch == Arch::Arm64 {
            ARM64_EFI_SNPONLY
        } else {
            X64_EFI_SNPONLY
        };
        if !needed.contains(&f) {
            needed.push(f);
        }
    }
    for f in needed {
        if resolve(cfg, Path::new(f)).is_none() {
            let dirs: Vec<String> = std::iter::once(&cfg.boot_assets)
                .chain(cfg.ipxe_dirs.iter())
                .map(|d| d.display().to_string())
                .collect();
            problems.push(
                &cfg.file,
                "boot_assets",
                format!(
                    "missing iPXE binary {f} (looked in {}; {})",
                    dirs.join(", "),
                    if f.contains("arm64") {
                        "Debian trixie's ipxe package ships ipxe-arm64.efi in /usr/lib/ipxe; bookworm's has none"
                    } else {
                        "Debian: apt-get install ipxe"
                    }
                ),
            );
        }
    }
    for p in inv.profiles.values() {
        let f = &cfg.profiles.join(format!("{}.yaml", p.name));
        check_uki(cfg, p, f, &mut problems);
        let files = boot_files(cfg, p);
        if files.kernel.starts_with("factory/") {
            let d = cfg.boot_assets.join(p.factory_dir());
            let names = crate::brain::factory::files_for(p.arch);
            for why in crate::brain::factory::verify(&d, &names) {
                problems.push(f, "kernel", why);
            }
            continue;
        }
        for (key, r) in [("kernel", files.kernel), ("initramfs", files.initramfs)] {
            if is_url(&r) {
                continue;
            }
            let ok = clean_relative(&r).is_some_and(|rel| cfg.boot_assets.join(rel).is_file());
            if !ok {
                problems.push(
                    f,
                    key,
                    format!(
                        "missing boot asset {} (kiln assets pull --profile {} fetches the profile's image from {}; see boot-assets/README.md)",
                        cfg.boot_assets.join(&r).display(),
                        p.name,
                        cfg.factory_url
                    ),
                );
            }
        }
    }
    problems
}

/// `http_boot: uki` needs its UKI: the `uki:` path, or the pulled one.
fn check_uki(cfg: &Config, p: &Profile, f: &Path, problems: &mut Problems) {
    use crate::model::boot::HttpBoot;
    if p.http_boot != HttpBoot::Uki {
        return;
    }
    let present = crate::brain::uki::file(cfg, p)
        .and_then(|r| clean_relative(&r))
        .is_some_and(|rel| cfg.boot_assets.join(rel).is_file());
    if present {
        return;
    }
    let why = match &p.uki {
        Some(u) => format!(
            "http_boot: uki, but the UKI {} is missing",
            cfg.boot_assets.join(u.trim_start_matches('/')).display()
        ),
        None => format!(
            "http_boot: uki, but no UKI is pulled: kiln assets pull --profile {} fetches {} of schematic {} (it carries {})",
            p.name,
            crate::brain::uki::factory_file(p),
            crate::brain::uki::schematic(cfg, p).id(),
            crate::brain::uki::kernel_args(cfg, p).join(" ")
        ),
    };
    problems.push(f, "uki", why);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        assert_eq!(
            clean_relative("/undionly.kpxe"),
            Some(PathBuf::from("undionly.kpxe"))
        );
        assert_eq!(
            clean_relative("talos/./v1/x"),
            Some(PathBuf::from("talos/v1/x"))
        );
        assert_eq!(clean_relative("../etc/passwd"), None);
        assert_eq!(clean_relative("a/../../b"), None);
        assert_eq!(clean_relative("/"), None);
    }
}
