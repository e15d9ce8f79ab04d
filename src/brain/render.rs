//! A machine's config: the cluster's generated documents for its role and Talos
//! release, the profile's first-class settings, its hostname, then the profile's
//! own patches.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::config::{ClusterSpec, Config};
use crate::model::contract::Contract;
use crate::model::inventory::{Machine, Profile};
use crate::store::{Store, StoreError};
use crate::talos::conflicts;
use crate::talos::generate::{generate, Options};
use crate::talos::patch::{self, Patch};
use crate::talos::secrets::{Bundle, SecretsError};
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

/// Why the clusters' secrets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsStartError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cluster {cluster}: its secrets file {} is missing, but kiln already provisioned this cluster ({evidence}); restore that file from your backup. A new PKI would lock kiln and every client out of the running nodes", path.display())]
    Missing {
        cluster: String,
        path: std::path::PathBuf,
        /// What the store knows: the pinned OS CA, or the bootstrap record
        /// of a kiln from before the pins.
        evidence: String,
    },
    #[error("cluster {cluster}: {} holds another {which} CA than the cluster kiln provisioned (sha256 {want} pinned, {found} in the file); restore the cluster's own secrets file", path.display())]
    OtherCa {
        cluster: String,
        path: std::path::PathBuf,
        which: String,
        want: String,
        found: String,
    },
}

/// Load each cluster's secrets, generating (0600) those of a cluster the
/// store has never seen, and check them against the CA fingerprints the store
/// pinned (pinning them the first time).
pub fn load_or_create_secrets(
    cfg: &Config,
    store: &Store,
) -> Result<BTreeMap<String, Bundle>, SecretsStartError> {
    let mut out = BTreeMap::new();
    for (name, c) in &cfg.clusters {
        let known = store.clusters().find(name)?;
        let evidence = known.as_ref().and_then(provisioned);
        let pinned = known.map(|r| r.ca_fingerprints).unwrap_or_default();
        let b = if c.secrets.exists() {
            let b = Bundle::load(&c.secrets)?;
            let have = b.ca_fingerprints();
            for (which, want) in &pinned {
                let found = have.get(which).cloned().unwrap_or_else(|| "none".into());
                if &found != want {
                    return Err(SecretsStartError::OtherCa {
                        cluster: name.clone(),
                        path: c.secrets.clone(),
                        which: which.clone(),
                        want: want.clone(),
                        found,
                    });
                }
            }
            b
        } else if let Some(evidence) = evidence {
            return Err(SecretsStartError::Missing {
                cluster: name.clone(),
                path: c.secrets.clone(),
                evidence,
            });
        } else {
            let minor = c
                .talos_version
                .as_deref()
                .and_then(|v| Contract::for_release(v).ok())
                .map(|c| c.minor)
                .unwrap_or(crate::model::contract::DEFAULT.minor);
            let b = Bundle::generate(minor)?;
            b.save(&c.secrets, false)?;
            tracing::info!(cluster = %name, path = %c.secrets.display(), "generated cluster secrets (0600)");
            b
        };
        if pinned.is_empty() {
            let fp = b.ca_fingerprints();
            store
                .clusters()
                .update(name, |r| r.ca_fingerprints = fp.clone())?;
        }
        out.insert(name.clone(), b);
    }
    Ok(out)
}

/// Why the store says this cluster was provisioned (so its PKI exists
/// somewhere), if it does: CA pins, or a bootstrap decided by an older kiln.
fn provisioned(r: &crate::store::clusters::ClusterRecord) -> Option<String> {
    if let Some(os) = r.ca_fingerprints.get("os") {
        return Some(format!("OS CA sha256 {os}"));
    }
    if let Some(t) = r.bootstrapped_at {
        return Some(format!("bootstrapped at {t}"));
    }
    r.bootstrap_node
        .as_ref()
        .map(|n| format!("bootstrap decided for {}", n.hostname))
}

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
