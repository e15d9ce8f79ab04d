//! `kiln check` and `kiln render`, and the start-up checks of `kiln serve`:
//! what is wrong with the config, profiles, inventory and assets, what an
//! operator should be warned of, and the config a MAC would get.

use std::path::Path;

use crate::brain::assets;
use crate::model::config::Config;
use crate::model::inventory::Inventory;
use crate::model::problems::Problems;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("{0}")]
    Invalid(#[from] Problems),
    #[error("{0}")]
    Refused(String),
}

/// Load config + inventory and check assets: what `serve` needs to start.
pub(crate) fn load(path: &Path) -> Result<(Config, Inventory), Problems> {
    let cfg = Config::load(path)?;
    let inv = Inventory::load(&cfg)?;
    let problems = assets::check(&cfg, &inv);
    problems.into_result((cfg, inv))
}

/// Render every machine's config, as `kiln check` does. Clusters whose secrets
/// do not exist yet (they are made on first start) render with throwaway ones.
pub(crate) fn check_configs(cfg: &Config, inv: &Inventory) -> crate::model::problems::Problems {
    let mut problems = crate::model::problems::Problems::default();
    let mut secrets = std::collections::BTreeMap::new();
    for (name, c) in &cfg.clusters {
        let b = if c.secrets.exists() {
            crate::talos::secrets::Bundle::load(&c.secrets).map_err(|e| e.to_string())
        } else {
            crate::talos::secrets::Bundle::generate(crate::model::contract::DEFAULT.minor)
                .map_err(|e| e.to_string())
        };
        match b {
            Ok(b) => {
                secrets.insert(name.clone(), b);
            }
            Err(e) => problems.push(&c.secrets, "", e),
        }
    }
    problems.0.extend(render_all(cfg, inv, &secrets).0);
    problems
}

/// Render every inventory machine's config with `secrets`: a patch that
/// parses but cannot apply is found now, not when the machine boots (serve
/// refuses to start, a reload keeps the last good inventory).
pub(crate) fn render_all(
    cfg: &Config,
    inv: &Inventory,
    secrets: &std::collections::BTreeMap<String, crate::talos::secrets::Bundle>,
) -> Problems {
    let mut problems = Problems::default();
    for m in inv.machines() {
        let Some(p) = inv.profile(&m.profile) else {
            continue;
        };
        if p.cluster.is_none() {
            continue;
        }
        if let Err(e) = crate::brain::render::render(cfg, secrets, m, p) {
            problems.push(
                &cfg.machines,
                &format!("{} ({})", m.hostname, m.mac),
                e.to_string(),
            );
        }
    }
    problems
}

/// Warnings that do not stop kiln but an operator should read.
pub(crate) fn warnings(cfg: &Config, inv: &Inventory) -> Vec<String> {
    let mut w = Vec::new();
    let ports = &cfg.ports;
    for (key, port, fixed) in [
        ("dhcp", ports.dhcp, 67),
        ("proxy_dhcp", ports.proxy_dhcp, 4011),
        ("tftp", ports.tftp, 69),
    ] {
        if port == 0 {
            w.push(format!("ports.{key}: 0 binds any port, but firmware sends to {fixed}: only a test rig wants this"));
        }
    }
    if let crate::model::store::StoreSettings::Etcd(e) = &cfg.store {
        if e.secrets_key.is_none() && !cfg.clusters.is_empty() {
            w.push("store: etcd without secrets_key: each daemon needs its own copy of every cluster's secrets file (scp -p); with store.secrets_key (`kiln store keygen`) they are sealed in etcd and shared".into());
        }
    }
    for p in inv.profiles.values() {
        w.extend(migration_notes(p));
        let explicit = p
            .cluster
            .as_ref()
            .and_then(|c| cfg.clusters.get(c))
            .and_then(|c| c.install_image.clone());
        let schematic = p.schematic();
        if let Some(image) = explicit.filter(|i| !i.contains(&schematic.id())) {
            if schematic != crate::model::schematic::Schematic::default() {
                w.push(format!(
                    "profile {}: clusters.{}.install_image {image} wins over the installer of the profile's schematic {} ({}): the installed system gets what that image carries, not necessarily {}",
                    p.name,
                    p.cluster.as_deref().unwrap_or_default(),
                    schematic.id(),
                    p.installer(cfg.factory_host()),
                    describe(&schematic)
                ));
            }
        }
        if p.role == crate::model::inventory::Role::Controlplane
            && cfg.default_profile.as_deref() == Some(p.name.as_str())
        {
            w.push(format!("default_profile {} is a control-plane profile: unknown machines get no config from it (control-plane configs carry CA keys)", p.name));
        }
    }
    w
}

/// For a v1.14+ profile, each of its patches that sets v1alpha1 fields Talos
/// moved: kiln serves it migrated (`render::migrated_patches`), and says what
/// moved where. A patch that cannot migrate is `render_all`'s to report.
fn migration_notes(p: &crate::model::inventory::Profile) -> Vec<String> {
    let Ok(c) = crate::model::contract::Contract::for_release(&p.talos_version) else {
        return Vec::new();
    };
    let Ok(patches) = crate::brain::render::migrated_patches(p, c) else {
        return Vec::new();
    };
    patches
        .into_iter()
        .filter(|m| !m.moved.is_empty())
        .map(|m| {
            format!(
                "profile {}: {} sets v1alpha1 fields Talos {} moved to documents of their own; kiln applies it migrated ({}); `kiln patch migrate {} --talos-version v1.14` writes the new form",
                p.name,
                m.name,
                p.talos_version,
                m.moved.join("; "),
                m.name
            )
        })
        .collect()
}

fn describe(s: &crate::model::schematic::Schematic) -> String {
    let mut parts = Vec::new();
    if !s.extra_kernel_args.is_empty() {
        parts.push(format!(
            "kernel arguments {}",
            s.extra_kernel_args.join(" ")
        ));
    }
    if !s.extensions.is_empty() {
        parts.push(format!("extensions {}", s.extensions.join(", ")));
    }
    if let Some(o) = &s.overlay {
        parts.push(format!("overlay {}", o.name));
    }
    parts.join(", ")
}

/// `kiln render`: the config a MAC would be served, with the real secrets.
pub(crate) fn render_for(path: &Path, mac: &str) -> Result<String, CheckError> {
    let (cfg, inv) = load(path)?;
    let mac: crate::model::mac::Mac = mac
        .parse()
        .map_err(|e| CheckError::Refused(format!("{e}")))?;
    let m = inv.machine(&mac).ok_or_else(|| {
        CheckError::Refused(format!("{mac} is not in {}", cfg.machines.display()))
    })?;
    let p = inv
        .profile(&m.profile)
        .ok_or_else(|| CheckError::Refused(format!("profile {:?} not found", m.profile)))?;
    let cluster = p.cluster.clone().ok_or_else(|| {
        CheckError::Refused(format!(
            "profile {} belongs to no cluster: define clusters: in {}",
            p.name,
            cfg.file.display()
        ))
    })?;
    let spec = &cfg.clusters[&cluster];
    if !spec.secrets.exists() {
        return Err(CheckError::Refused(format!(
            "secrets for cluster {cluster} do not exist yet ({}): `kiln serve` makes them on first start, or run `kiln gen secrets -o {}`",
            spec.secrets.display(),
            spec.secrets.display()
        )));
    }
    let mut secrets = std::collections::BTreeMap::new();
    secrets.insert(
        cluster.clone(),
        crate::talos::secrets::Bundle::load(&spec.secrets)
            .map_err(|e| CheckError::Refused(e.to_string()))?,
    );
    let docs = crate::brain::render::render(&cfg, &secrets, m, p)
        .map_err(|e| CheckError::Refused(e.to_string()))?;
    Ok(crate::model::yaml::to_yaml(&docs))
}
