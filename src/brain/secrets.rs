//! Each cluster's secrets at start: loaded (and checked against the CA
//! fingerprints the store pinned), or generated for a cluster the store has
//! never seen. With a shared store that seals secrets (`store.secrets_key`)
//! the store's sealed copy is the cluster's: the first daemon's stands, and
//! every daemon keeps it in its own secrets file (0600) too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::config::{ClusterSpec, Config};
use crate::model::contract::Contract;
use crate::store::{Store, StoreError};
use crate::talos::secrets::{Bundle, SecretsError};

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
        path: PathBuf,
        /// What the store knows: the pinned OS CA, or the bootstrap record
        /// of a kiln from before the pins.
        evidence: String,
    },
    #[error("cluster {cluster}: {} holds another {which} CA than the cluster kiln provisioned (sha256 {want} pinned, {found} in the file); restore the cluster's own secrets file", path.display())]
    OtherCa {
        cluster: String,
        path: PathBuf,
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
        let b = if store.cluster_secrets().shared() {
            shared(store, name, c, &pinned, evidence)?
        } else {
            local(name, c, &pinned, evidence, true)?
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

/// This daemon's secrets file, checked against the pins; generated (and,
/// with `save`, written 0600) when neither it nor the cluster exists yet.
fn local(
    name: &str,
    c: &ClusterSpec,
    pinned: &BTreeMap<String, String>,
    evidence: Option<String>,
    save: bool,
) -> Result<Bundle, SecretsStartError> {
    if c.secrets.exists() {
        let b = Bundle::load(&c.secrets)?;
        check_pins(name, &c.secrets, &b, pinned)?;
        return Ok(b);
    }
    if let Some(evidence) = evidence {
        return Err(SecretsStartError::Missing {
            cluster: name.to_string(),
            path: c.secrets.clone(),
            evidence,
        });
    }
    let minor = c
        .talos_version
        .as_deref()
        .and_then(|v| Contract::for_release(v).ok())
        .map(|c| c.minor)
        .unwrap_or(crate::model::contract::DEFAULT.minor);
    let b = Bundle::generate(minor)?;
    if save {
        b.save(&c.secrets, false)?;
        tracing::info!(cluster = %name, path = %c.secrets.display(), "generated cluster secrets (0600)");
    }
    Ok(b)
}

/// The store's sealed secrets for `name`; stored first (from this daemon's
/// file, or new) when there are none, the first daemon's standing. This
/// daemon's file must agree with them, and is written when it is missing.
fn shared(
    store: &Store,
    name: &str,
    c: &ClusterSpec,
    pinned: &BTreeMap<String, String>,
    evidence: Option<String>,
) -> Result<Bundle, SecretsStartError> {
    let cs = store.cluster_secrets();
    let sealed = PathBuf::from(format!(
        "{} (sealed record of cluster {name})",
        store.describe()
    ));
    let parse = |y: &[u8]| Bundle::parse(&String::from_utf8_lossy(y), &sealed);
    let b = match cs.get(name)? {
        Some(y) => parse(&y)?,
        None => {
            // A cluster with secrets in the pins but none sealed (it moved to
            // shared secrets) seals this daemon's file, which must match.
            let mine = local(name, c, pinned, evidence, false)?;
            let stood = parse(&cs.put_first(name, mine.to_yaml().as_bytes())?)?;
            if stood.ca_fingerprints() == mine.ca_fingerprints() {
                tracing::info!(cluster = %name, store = %store.describe(), "cluster secrets sealed into the shared store");
            }
            stood
        }
    };
    check_pins(name, &sealed, &b, pinned)?;
    if c.secrets.exists() {
        // Two sources that disagree: neither is guessed right.
        check_pins(
            name,
            &c.secrets,
            &Bundle::load(&c.secrets)?,
            &b.ca_fingerprints(),
        )?;
    } else {
        b.save(&c.secrets, false)?;
        tracing::info!(cluster = %name, path = %c.secrets.display(), "wrote the shared cluster secrets to this daemon's secrets file (0600)");
    }
    Ok(b)
}

/// Every pinned CA is the one `b` (read from `path`) holds.
fn check_pins(
    name: &str,
    path: &Path,
    b: &Bundle,
    pinned: &BTreeMap<String, String>,
) -> Result<(), SecretsStartError> {
    let have = b.ca_fingerprints();
    for (which, want) in pinned {
        let found = have.get(which).cloned().unwrap_or_else(|| "none".into());
        if &found != want {
            return Err(SecretsStartError::OtherCa {
                cluster: name.to_string(),
                path: path.to_path_buf(),
                which: which.clone(),
                want: want.clone(),
                found,
            });
        }
    }
    Ok(())
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
