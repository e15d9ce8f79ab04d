//! Talos config version contracts: what `talosctl gen config --talos-version vX.Y`
//! writes, feature by feature (pkg/machinery/config/contract.go). kiln generates
//! for contracts v1.8 through v1.13.
//!
//! Talos releases newer than the newest contract kiln generates (v1.14, v1.15)
//! boot with a v1.13-contract config: a Talos release accepts the configs of
//! every older contract (that is what a cluster upgraded from v1.13 runs), and
//! kiln does not guess at the multi-document format of v1.14+ without Talos's
//! golden outputs to check it against. [`Contract::for_release`] does that
//! mapping; `kiln check` and the daemon say so in a warning.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Contract {
    pub minor: u32,
}

pub const OLDEST: u32 = 8;
pub const NEWEST: u32 = 13;
/// Newest Talos release minor kiln provisions (with the [`NEWEST`] contract).
pub const NEWEST_RELEASE: u32 = 15;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error("{0:?} is not a Talos version (want v1.MINOR or v1.MINOR.PATCH)")]
    Parse(String),
    #[error("Talos {0} config contract is not supported: kiln generates v1.{OLDEST} through v1.{NEWEST}")]
    Unsupported(String),
    #[error(
        "Talos {0} is not supported: kiln provisions Talos v1.{OLDEST} through v1.{NEWEST_RELEASE}"
    )]
    UnsupportedRelease(String),
}

impl Contract {
    /// `v1.13`, `v1.13.9`, `1.13.0-beta.1` → contract 1.13.
    pub fn parse(v: &str) -> Result<Contract, ContractError> {
        let (major, minor) = major_minor(v)?;
        if major != 1 || !(OLDEST..=NEWEST).contains(&minor) {
            return Err(ContractError::Unsupported(format!("v{major}.{minor}")));
        }
        Ok(Contract { minor })
    }

    /// The contract kiln generates for machines booting Talos release `v`:
    /// the release's own contract up to v1.13, v1.13 for v1.14 and v1.15.
    pub fn for_release(v: &str) -> Result<Contract, ContractError> {
        let (major, minor) = major_minor(v)?;
        if major != 1 || !(OLDEST..=NEWEST_RELEASE).contains(&minor) {
            return Err(ContractError::UnsupportedRelease(format!(
                "v{major}.{minor}"
            )));
        }
        Ok(Contract {
            minor: minor.min(NEWEST),
        })
    }

    /// A warning when release `v` boots with an older contract than its own.
    pub fn release_note(v: &str) -> Option<String> {
        let (_, minor) = major_minor(v).ok()?;
        (minor > NEWEST && minor <= NEWEST_RELEASE).then(|| {
            format!(
                "Talos {v} gets a v1.{NEWEST}-contract config (the single v1alpha1 document Talos v1.{minor} still accepts), not the v1.{minor} multi-document format talosctl gen config --talos-version v1.{minor} writes; the Kubernetes version defaults to {} unless kubernetes_version is set",
                Contract { minor: NEWEST }.default_kubernetes()
            )
        })
    }

    fn gt(&self, minor: u32) -> bool {
        self.minor > minor
    }

    // Features, named as in Talos; each true from the version after the one given.
    pub fn kubernetes_discovery_backend_disabled(&self) -> bool {
        self.gt(1)
    }
    pub fn add_exclude_from_external_lb(&self) -> bool {
        self.gt(7)
    }
    pub fn host_dns_forward_kube_dns(&self) -> bool {
        self.gt(7)
    }
    pub fn cluster_name_for_workers(&self) -> bool {
        self.gt(7)
    }
    /// HostnameConfig/registry documents, no `machine.network: {}`.
    pub fn multidoc_network_config(&self) -> bool {
        self.gt(11)
    }
    /// rbac, stableHostname and apidCheckExtKeyUsage no longer written.
    pub fn hide_deprecated_machine_features(&self) -> bool {
        self.gt(11)
    }
    /// The endpoint's host in apiServer.certSANs (and disablePodSecurityPolicy).
    pub fn populate_endpoint_sans(&self) -> bool {
        !self.gt(11)
    }
    pub fn grub_use_uki_cmdline(&self) -> bool {
        self.gt(11)
    }

    /// Kubernetes version `talosctl gen config` of this release defaults to.
    pub fn default_kubernetes(&self) -> &'static str {
        match self.minor {
            8 => "1.31.4",
            9 => "1.32.4",
            10 => "1.33.6",
            11 => "1.34.1",
            12 => "1.35.4",
            _ => "1.36.3",
        }
    }

    /// Newest patch release of this minor kiln knows (installer image tag).
    pub fn default_release(&self) -> &'static str {
        match self.minor {
            8 => "v1.8.4",
            9 => "v1.9.6",
            10 => "v1.10.9",
            11 => "v1.11.6",
            12 => "v1.12.11",
            _ => "v1.13.9",
        }
    }
}

fn major_minor(v: &str) -> Result<(u32, u32), ContractError> {
    let t = v.trim().trim_start_matches('v');
    let mut it = t.split(['.', '-', '+']);
    let mut num = || -> Result<u32, ContractError> {
        it.next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ContractError::Parse(v.into()))
    };
    Ok((num()?, num()?))
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v1.{}", self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_bounds() {
        assert_eq!(Contract::parse("v1.13.9").unwrap().minor, 13);
        assert_eq!(Contract::parse("1.10").unwrap().minor, 10);
        assert_eq!(Contract::parse("v1.12.0-beta.1").unwrap().minor, 12);
        assert!(matches!(
            Contract::parse("v1.7"),
            Err(ContractError::Unsupported(_))
        ));
        assert!(matches!(
            Contract::parse("v1.14.0"),
            Err(ContractError::Unsupported(_))
        ));
        assert!(matches!(
            Contract::parse("latest"),
            Err(ContractError::Parse(_))
        ));
    }

    #[test]
    fn newer_releases_boot_with_the_newest_contract() {
        assert_eq!(Contract::for_release("v1.12.3").unwrap().minor, 12);
        assert_eq!(Contract::for_release("v1.14.2").unwrap().minor, NEWEST);
        assert_eq!(
            Contract::for_release("v1.15.0-alpha.1").unwrap().minor,
            NEWEST
        );
        assert!(matches!(
            Contract::for_release("v1.16.0"),
            Err(ContractError::UnsupportedRelease(_))
        ));
        assert!(matches!(
            Contract::for_release("v1.7.9"),
            Err(ContractError::UnsupportedRelease(_))
        ));
        assert!(Contract::release_note("v1.13.9").is_none());
        let note = Contract::release_note("v1.14.2").unwrap();
        assert!(note.contains("v1.13-contract"), "{note}");
    }
}
