//! UEFI HTTP Boot straight to a Talos UKI (`http_boot: uki`): no iPXE, so
//! no kernel line to carry a per-boot token. The UKI's embedded command line
//! (baked in by the Image Factory from the schematic's extraKernelArgs) names
//! kiln's token-less config URL, with `${mac}` and `${uuid}` that Talos fills
//! in query values; kiln releases the config only to the address DHCP proved
//! is that MAC's (`Provisioner::config_by_lease`).

use crate::model::config::Config;
use crate::model::inventory::Profile;
use crate::model::schematic::Schematic;

/// The arguments a UKI of `p` must carry for kiln: where its config, events
/// and kernel log go (the same three the iPXE line carries, minus the token).
pub(crate) fn kernel_args(cfg: &Config, p: &Profile) -> Vec<String> {
    let mut a = vec![format!(
        "talos.config={}/config?mac=${{mac}}&uuid=${{uuid}}",
        cfg.http_base()
    )];
    if p.cluster.is_some() {
        a.push(format!("talos.events.sink={}", cfg.events_endpoint()));
        a.push(format!("talos.logging.kernel={}", cfg.kmsg_url()));
    }
    a
}

/// The schematic of `p`'s boot UKI: the profile's, plus [`kernel_args`]. The
/// installer keeps the profile's own schematic: an installed system reads its
/// config from disk.
pub(crate) fn schematic(cfg: &Config, p: &Profile) -> Schematic {
    let mut s = p.schematic();
    for a in kernel_args(cfg, p) {
        if !s.extra_kernel_args.contains(&a) {
            s.extra_kernel_args.push(a);
        }
    }
    s
}

/// The factory's name for the UKI of `p`'s architecture.
pub(crate) fn factory_file(p: &Profile) -> String {
    crate::brain::factory::uki_file(p.arch)
}

/// The UKI of `p` under boot_assets: its `uki:` path, or the pulled one
/// (recorded in its directory's manifest); `None` when there is none yet.
pub(crate) fn file(cfg: &Config, p: &Profile) -> Option<String> {
    if let Some(u) = &p.uki {
        return Some(u.trim_start_matches('/').to_string());
    }
    let s = schematic(cfg, p);
    let rel = format!("factory/{}/{}", s.id(), p.talos_version);
    let dir = cfg.boot_assets.join(&rel);
    let name = factory_file(p);
    crate::brain::factory::pulled(&dir, &[&name]).then(|| format!("{rel}/{name}"))
}
