//! A machine's config: the cluster's generated documents for its role and Talos
//! release, the profile's first-class settings, its hostname, then the profile's
//! own patches.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::config::{ClusterSpec, Config};
use crate::model::contract::Contract;
use crate::model::inventory::{Machine, Profile};
use crate::talos::conflicts;
use crate::talos::generate::{generate, Options};
use crate::talos::patch::{self, Patch};
use crate::talos::secrets::Bundle;
use crate::talos::settings::hostname_patch;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("profile {0:?} belongs to no cluster (define clusters: in kiln.yaml)")]
    NoCluster(String),
    #[error("cluster {0:?} has no secrets loaded")]
    NoSecrets(String),
    #[error("{0}")]
    Invalid(String),
}

pub use super::secrets::{load_or_create_secrets, SecretsStartError};

/// The installer image `profile`'s machines get: the cluster's
/// `install_image`, else the factory installer of the profile's schematic.
pub fn install_image(c: &ClusterSpec, profile: &Profile, factory_host: &str) -> String {
    c.install_image
        .clone()
        .unwrap_or_else(|| profile.installer(factory_host))
}

/// Generation options for `profile`'s machines. The installer is the
/// factory's for the profile's schematic (so its extensions and kernel
/// arguments reach the installed system), unless the cluster names one.
pub fn options(
    c: &ClusterSpec,
    profile: &Profile,
    factory_host: &str,
) -> Result<Options, RenderError> {
    let contract = Contract::for_release(&profile.talos_version)
        .map_err(|e| RenderError::Invalid(e.to_string()))?;
    let mut o = Options::new(contract, &c.name, &c.endpoint);
    if let Some(k) = &c.kubernetes_version {
        o.kubernetes_version = k.clone();
    }
    o.additional_sans = c.additional_sans.clone();
    o.dns_domain = c.dns_domain.clone();
    o.install_image = Some(install_image(c, profile, factory_host));
    if contract.unattended_install() {
        // The UnattendedInstallConfig (disk and installer image) is generated
        // where talosctl generates it: from the install disk.
        o.install_disk = profile.install_disk.clone();
    }
    Ok(o)
}

/// The documents `machine` gets.
pub fn render(
    cfg: &Config,
    secrets: &BTreeMap<String, Bundle>,
    machine: &Machine,
    profile: &Profile,
) -> Result<Vec<Value>, RenderError> {
    let cluster_name = profile
        .cluster
        .as_ref()
        .ok_or_else(|| RenderError::NoCluster(profile.name.clone()))?;
    let spec = cfg
        .clusters
        .get(cluster_name)
        .ok_or_else(|| RenderError::NoCluster(profile.name.clone()))?;
    let bundle = secrets
        .get(cluster_name)
        .ok_or_else(|| RenderError::NoSecrets(cluster_name.clone()))?;
    let o = options(spec, profile, cfg.factory_host())?;
    let base =
        generate(&o, bundle, profile.role).map_err(|e| RenderError::Invalid(e.to_string()))?;
    let src = format!("profile {}", profile.name);
    let mut own = profile.settings().patches(profile.role, o.contract);
    own.push(hostname_patch(&machine.hostname, o.contract));
    // The kernel command line (and with it talos.events.sink) is gone once Talos
    // boots from disk: the event sink must be in the config too.
    own.push(serde_json::json!({ "apiVersion": "v1alpha1", "kind": "EventSinkConfig", "endpoint": cfg.events_endpoint() }));
    // The kernel log too, so it reaches kiln after install as well.
    own.push(serde_json::json!({ "apiVersion": "v1alpha1", "kind": "KmsgLogConfig", "name": "kiln", "url": cfg.kmsg_url() }));
    let own = Patch::Strategic(own);
    let migrated = migrated_patches(profile, o.contract)?;
    let mut steps: Vec<(&Patch, &str)> = vec![(&own, src.as_str())];
    steps.extend(migrated.iter().map(|m| (&m.patch, m.name.as_str())));
    let mut docs = base.clone();
    for (p, name) in &steps {
        patch::apply(&mut docs, p, name).map_err(|e| RenderError::Invalid(e.to_string()))?;
    }
    // A config Talos would refuse at boot is refused here, naming the patch.
    if !conflicts::check_for(&docs, o.contract).is_empty() {
        let blamed = conflicts::blame(base, &steps, o.contract)
            .map_err(|e| RenderError::Invalid(e.to_string()))?;
        return Err(RenderError::Invalid(conflicts::report(&src, &blamed)));
    }
    Ok(docs)
}

/// The profile's own patches, as the machine's Talos reads them: from v1.14
/// a patch written for the v1alpha1 fields Talos moved is rewritten into the
/// new documents (`kiln patch migrate`; `kiln check` lists each move).
pub fn migrated_patches(profile: &Profile, c: Contract) -> Result<Vec<ProfilePatch>, RenderError> {
    let mut out = Vec::new();
    for (p, name) in &profile.loaded_patches {
        let (patch, moved) = match p {
            Patch::Strategic(docs) if c.multidoc_kubernetes() => {
                let m = crate::talos::migrate::migrate(docs).map_err(|e| {
                    RenderError::Invalid(format!(
                        "{name}: cannot migrate to Talos {} documents: {e}",
                        profile.talos_version
                    ))
                })?;
                let m = crate::talos::migrate::for_role(m, profile.role, docs);
                (Patch::Strategic(m.docs), m.notes)
            }
            _ => (p.clone(), Vec::new()),
        };
        out.push(ProfilePatch {
            patch,
            name: name.clone(),
            moved,
        });
    }
    Ok(out)
}

/// One of a profile's patches as its machines get it.
pub struct ProfilePatch {
    pub patch: Patch,
    /// The file it came from.
    pub name: String,
    /// What the v1.14 migration moved (empty when nothing did).
    pub moved: Vec<String>,
}
