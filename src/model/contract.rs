//! Talos config version contracts: what `talosctl gen config --talos-version vX.Y`
//! writes, feature by feature (pkg/machinery/config/contract.go). kiln generates
//! every contract from v1.8 through v1.15, and a machine booting Talos vX.Y gets
//! the vX.Y contract. From v1.14 the config is multi-document: the Kubernetes,
//! install, resolver, sysctl and discovery settings leave the v1alpha1 document
//! for documents of their own (../shared/talos/V1_14.md has the gates). v1.15
//! adds no gate over v1.14.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Contract {
    pub minor: u32,
}

pub const OLDEST: u32 = 8;
pub const NEWEST: u32 = 15;
/// The contract new clusters get when none is named: the current release line.
pub const DEFAULT: Contract = Contract { minor: 14 };

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error("{0:?} is not a Talos version (want v1.MINOR or v1.MINOR.PATCH)")]
    Parse(String),
    #[error("Talos {0} config contract is not supported: kiln generates v1.{OLDEST} through v1.{NEWEST}")]
    Unsupported(String),
    #[error("Talos {0} is not supported: kiln provisions Talos v1.{OLDEST} through v1.{NEWEST}")]
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
    /// the release's own.
    pub fn for_release(v: &str) -> Result<Contract, ContractError> {
        let (major, minor) = major_minor(v)?;
        if major != 1 || !(OLDEST..=NEWEST).contains(&minor) {
            return Err(ContractError::UnsupportedRelease(format!(
                "v{major}.{minor}"
            )));
        }
        Ok(Contract { minor })
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
    /// HostnameConfig/registry documents (v1.12+).
    pub fn multidoc_network_config(&self) -> bool {
        self.gt(11)
    }
    /// KubeSpanConfig document, and no `machine.network: {}` (v1.13+).
    pub fn kubespan_multidoc(&self) -> bool {
        self.gt(12)
    }
    /// The Kubernetes documents (KubeletConfig, KubeNodeConfig, ... ); one gate
    /// for all of them in Talos (v1.14+).
    pub fn multidoc_kubernetes(&self) -> bool {
        self.gt(13)
    }
    /// UnattendedInstallConfig instead of `machine.install` (v1.14+).
    pub fn unattended_install(&self) -> bool {
        self.gt(13)
    }
    /// ResolverConfig instead of `machine.features.hostDNS` (v1.14+).
    pub fn host_dns_multidoc(&self) -> bool {
        self.gt(13)
    }
    /// DiscoveryServiceConfig and DiscoveryIdentityConfig (v1.14+).
    pub fn discovery_multidoc(&self) -> bool {
        self.gt(13)
    }
    /// SysctlConfig instead of `machine.sysctls` (v1.14+).
    pub fn multidoc_sysctl(&self) -> bool {
        self.gt(13)
    }
    /// EPHEMERAL VolumeConfig with a secure mount, FilesystemTrimConfig (v1.14+).
    pub fn filesystem_trim(&self) -> bool {
        self.gt(13)
    }
    /// SecurityProfileConfig with workloadIsolation (v1.14+).
    pub fn workload_isolation(&self) -> bool {
        self.gt(13)
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
            13 => "1.36.3",
            // constants.DefaultKubernetesVersion on release-1.14 (v1.14.0-rc.1)
            // and on main (the v1.15 line).
            14 => "1.37.0-rc.0",
            _ => "1.37.0-rc.1",
        }
    }

    /// Newest release of this minor kiln knows (installer image tag).
    pub fn default_release(&self) -> &'static str {
        match self.minor {
            8 => "v1.8.4",
            9 => "v1.9.6",
            10 => "v1.10.9",
            11 => "v1.11.6",
            12 => "v1.12.11",
            13 => "v1.13.9",
            // No v1.15 release exists yet: its installer tag is the newest release.
            _ => "v1.14.0-rc.1",
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
        assert_eq!(Contract::parse("v1.15.0").unwrap().minor, 15);
        assert!(matches!(
            Contract::parse("v1.16.0"),
            Err(ContractError::Unsupported(_))
        ));
        assert!(matches!(
            Contract::parse("latest"),
            Err(ContractError::Parse(_))
        ));
    }

    #[test]
    fn every_release_gets_its_own_contract() {
        assert_eq!(Contract::for_release("v1.12.3").unwrap().minor, 12);
        assert_eq!(Contract::for_release("v1.14.2").unwrap().minor, 14);
        assert_eq!(Contract::for_release("v1.15.0-alpha.1").unwrap().minor, 15);
        assert!(matches!(
            Contract::for_release("v1.16.0"),
            Err(ContractError::UnsupportedRelease(_))
        ));
        assert!(matches!(
            Contract::for_release("v1.7.9"),
            Err(ContractError::UnsupportedRelease(_))
        ));
        let c14 = Contract::parse("v1.14").unwrap();
        assert!(c14.multidoc_kubernetes() && c14.kubespan_multidoc());
        let c13 = Contract::parse("v1.13").unwrap();
        assert!(!c13.multidoc_kubernetes() && c13.kubespan_multidoc());
        assert!(!Contract::parse("v1.12").unwrap().kubespan_multidoc());
    }
}
