//! Profiles (one YAML file per role profile) and the machine inventory
//! (MAC → profile, hostname, optional fixed IP). Loading validates everything and
//! reports every problem with its file and line; lookups are pure.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::model::config::{Config, DhcpMode};
use crate::model::mac::Mac;
use crate::model::problems::Problems;

pub use crate::model::profile::{is_url, Arch, BootChoices, LocalBoot, Profile, Role, UefiBinary};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Machine {
    pub mac: Mac,
    pub hostname: String,
    pub profile: String,
    pub ip: Option<Ipv4Addr>,
    /// The SMBIOS UUID the machine's config fetch must carry (iPXE's `${uuid}`),
    /// lower case; an extra check, not a secret (docs/security.md).
    pub uuid: Option<String>,
    /// `local_boot:` / `uefi_binary:` for this machine, over its profile's.
    #[serde(skip)]
    pub boot: BootChoices,
}

impl Machine {
    /// How this machine boots its disk once installed; `uefi` is the
    /// firmware iPXE reported (`${platform}` = `efi`).
    pub fn local_boot(&self, p: &Profile, uefi: bool) -> LocalBoot {
        self.boot.local_boot.or(p.local_boot).unwrap_or(if uefi {
            LocalBoot::Exit
        } else {
            LocalBoot::Sanboot
        })
    }
    pub fn uefi_binary(&self, p: &Profile) -> UefiBinary {
        self.boot.uefi_binary.or(p.uefi_binary).unwrap_or_default()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachinesFile {
    #[serde(default)]
    machines: Vec<MachineWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineWire {
    mac: Spanned<String>,
    hostname: Spanned<String>,
    profile: Spanned<String>,
    #[serde(default)]
    ip: Option<Spanned<Ipv4Addr>>,
    #[serde(default)]
    uuid: Option<Spanned<String>>,
    #[serde(default)]
    local_boot: Option<LocalBoot>,
    #[serde(default)]
    uefi_binary: Option<UefiBinary>,
}

/// Profiles and machines, validated together; immutable once built (a reload
/// builds a new one and swaps it in).
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub profiles: BTreeMap<String, Profile>,
    machines: Vec<Machine>,
    by_mac: HashMap<Mac, usize>,
    /// MACs of replaced machines: refused from then on (MAC → hostname it had).
    retired: HashMap<Mac, String>,
    /// Identity moves in effect (from `state_dir/inventory-overrides.yaml`).
    pub replaced: Vec<Replaced>,
}

/// One identity move made by `kiln replace`: `hostname` now belongs to `new_mac`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub hostname: String,
    pub old_mac: Mac,
    pub new_mac: Mac,
    /// Unix seconds.
    pub at: u64,
}

/// kiln's own edits to the inventory, kept apart from the operator's file (so
/// its format and comments stay as written) and shown by `kiln check`/`machines`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default)]
    pub replaced: Vec<Replaced>,
}

pub fn overrides_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("inventory-overrides.yaml")
}

/// `inventory-overrides.yaml` could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: std::path::PathBuf,
        source: crate::model::yaml::YamlError,
    },
    #[error("writing the overrides: {0}")]
    Encode(String),
    #[error(transparent)]
    Write(#[from] crate::model::files::FileError),
}

pub fn load_overrides(cfg: &Config) -> Result<Overrides, OverridesError> {
    let path = overrides_path(cfg);
    match std::fs::read_to_string(&path) {
        Ok(t) => crate::model::problems::parse_yaml(&t)
            .map_err(|source| OverridesError::Parse { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overrides::default()),
        Err(source) => Err(OverridesError::Read { path, source }),
    }
}

pub fn save_overrides(cfg: &Config, o: &Overrides) -> Result<(), OverridesError> {
    let text = serde_saphyr::to_string_with_options(o, crate::model::yaml::yaml_options())
        .map_err(|e| OverridesError::Encode(e.to_string()))?;
    let text = format!("# Written by `kiln replace`: these machines took over another's identity.\n# Remove an entry to undo it.\n{text}");
    crate::model::files::write_private(&overrides_path(cfg), text.as_bytes(), true)?;
    Ok(())
}

impl Inventory {
    pub fn machine(&self, mac: &Mac) -> Option<&Machine> {
        self.by_mac.get(mac).map(|&i| &self.machines[i])
    }

    /// The hostname a replaced MAC used to have; such MACs are refused.
    pub fn retired(&self, mac: &Mac) -> Option<&str> {
        self.retired.get(mac).map(String::as_str)
    }

    /// The MAC `id` names: a MAC itself (any machine, known or not), or an
    /// inventory hostname.
    pub fn mac_of(&self, id: &str) -> Option<Mac> {
        id.parse::<Mac>()
            .ok()
            .or_else(|| self.machine_by_name(id).map(|m| m.mac))
    }

    pub fn machine_by_name(&self, hostname: &str) -> Option<&Machine> {
        let h = hostname.to_ascii_lowercase();
        self.machines.iter().find(|m| m.hostname == h)
    }

    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Addresses reserved for inventory machines (never handed to anyone else).
    pub fn retired_macs(&self) -> impl Iterator<Item = Mac> + '_ {
        self.retired.keys().copied()
    }

    pub fn reserved_ips(&self) -> impl Iterator<Item = (Ipv4Addr, Mac)> + '_ {
        self.machines
            .iter()
            .filter_map(|m| m.ip.map(|ip| (ip, m.mac)))
    }

    /// Load and cross-check profiles and machines against `cfg`.
    pub fn load(cfg: &Config) -> Result<Inventory, Problems> {
        let mut problems = Problems::default();
        let profiles = crate::model::profile::load_profiles(cfg, &mut problems);
        let machines = load_machines(cfg, &profiles, &mut problems);
        if let Some(dp) = &cfg.default_profile {
            if !profiles.contains_key(dp) {
                problems.push(
                    &cfg.file,
                    "default_profile",
                    format!("unknown profile {dp:?}"),
                );
            }
        } else if cfg.unknown_machines == crate::model::config::UnknownMachines::Boot {
            problems.push(
                &cfg.file,
                "default_profile",
                "unknown_machines: boot needs a default_profile to boot them with",
            );
        }
        let mut machines = machines;
        let mut retired = HashMap::new();
        let mut replaced = Vec::new();
        match load_overrides(cfg) {
            Ok(o) => {
                for r in o.replaced {
                    let taken = machines
                        .iter()
                        .any(|m| m.mac == r.new_mac && m.hostname != r.hostname);
                    if taken {
                        problems.push(
                            &overrides_path(cfg),
                            &r.hostname,
                            format!(
                                "new MAC {} is also in {}",
                                r.new_mac,
                                cfg.machines.display()
                            ),
                        );
                        continue;
                    }
                    if let Some(m) = machines.iter_mut().find(|m| m.hostname == r.hostname) {
                        m.mac = r.new_mac;
                    }
                    retired.insert(r.old_mac, r.hostname.clone());
                    replaced.push(r);
                }
            }
            Err(e) => problems.push(&overrides_path(cfg), "", e.to_string()),
        }
        let by_mac = machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.mac, i))
            .collect();
        problems.into_result(Inventory {
            profiles,
            machines,
            by_mac,
            retired,
            replaced,
        })
    }

    /// Build directly (tests).
    #[cfg(test)]
    pub fn from_parts(profiles: Vec<Profile>, machines: Vec<Machine>) -> Inventory {
        let by_mac = machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.mac, i))
            .collect();
        Inventory {
            profiles: profiles.into_iter().map(|p| (p.name.clone(), p)).collect(),
            machines,
            by_mac,
            retired: HashMap::new(),
            replaced: Vec::new(),
        }
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

fn load_machines(
    cfg: &Config,
    profiles: &BTreeMap<String, Profile>,
    problems: &mut Problems,
) -> Vec<Machine> {
    let path = &cfg.machines;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(path, "", format!("cannot read inventory: {e}"));
            return Vec::new();
        }
    };
    let file: MachinesFile = match crate::model::problems::parse_yaml(&text) {
        Ok(f) => f,
        Err(e) => {
            problems.push(path, "", e.to_string());
            return Vec::new();
        }
    };
    let subnets = match &cfg.dhcp {
        DhcpMode::Full(f) => f.subnets.clone(),
        DhcpMode::Proxy => Vec::new(),
    };
    let mut out = Vec::new();
    let mut macs: HashMap<Mac, u64> = HashMap::new();
    let mut hosts: HashMap<String, u64> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, u64> = HashMap::new();
    for (i, w) in file.machines.into_iter().enumerate() {
        let line = w.mac.referenced.line();
        let at = |l: u64| format!("line {l}: machines[{i}]");
        let mut ok = true;
        let mac = match w.mac.value.parse::<Mac>() {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(path, &format!("{}.mac", at(line)), e.to_string());
                ok = false;
                None
            }
        };
        if let Some(m) = mac {
            if let Some(first) = macs.insert(m, line) {
                problems.push(
                    path,
                    &format!("{}.mac", at(line)),
                    format!("duplicate MAC {m} (first at line {first})"),
                );
                ok = false;
            }
        }
        let host = w.hostname.value.trim().to_ascii_lowercase();
        let hl = w.hostname.referenced.line();
        if !valid_hostname(&host) {
            problems.push(
                path,
                &format!("{}.hostname", at(hl)),
                format!(
                    "{:?} is not a valid hostname (letters, digits, '-', at most 63)",
                    w.hostname.value
                ),
            );
            ok = false;
        } else if let Some(first) = hosts.insert(host.clone(), hl) {
            problems.push(
                path,
                &format!("{}.hostname", at(hl)),
                format!("duplicate hostname {host:?} (first at line {first})"),
            );
            ok = false;
        }
        let pl = w.profile.referenced.line();
        if !profiles.contains_key(&w.profile.value) {
            let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
            problems.push(
                path,
                &format!("{}.profile", at(pl)),
                format!(
                    "unknown profile {:?} (known: {})",
                    w.profile.value,
                    known.join(", ")
                ),
            );
            ok = false;
        }
        let ip = w.ip.map(|s| {
            let il = s.referenced.line();
            let ip = s.value;
            if let Some(first) = ips.insert(ip, il) {
                problems.push(path, &format!("{}.ip", at(il)), format!("duplicate address {ip} (first at line {first})"));
                ok = false;
            }
            if !subnets.is_empty() {
                match subnets.iter().find(|s| s.net.contains(&ip)) {
                    None => {
                        let nets: Vec<String> = subnets.iter().map(|s| s.net.to_string()).collect();
                        problems.push(path, &format!("{}.ip", at(il)), format!("{ip} is outside the DHCP subnet ({})", nets.join(", ")));
                        ok = false;
                    }
                    Some(s) if ip == s.net.network() || ip == s.net.broadcast() || Some(ip) == s.router || ip == cfg.server_address => {
                        problems.push(path, &format!("{}.ip", at(il)), format!("{ip} is not assignable in {} (network, broadcast, router or kiln's own address)", s.net));
                        ok = false;
                    }
                    _ => {}
                }
            }
            ip
        });
        let uuid = w.uuid.and_then(|u| {
            if let Ok(v) = uuid::Uuid::parse_str(u.value.trim()) {
                return Some(v.hyphenated().to_string());
            }
            let ul = u.referenced.line();
            problems.push(
                path,
                &format!("{}.uuid", at(ul)),
                format!(
                    "{:?} is not a UUID (8-4-4-4-12 hex digits, as iPXE's ${{uuid}})",
                    u.value
                ),
            );
            ok = false;
            None
        });
        if let (true, Some(mac)) = (ok, mac) {
            out.push(Machine {
                mac,
                hostname: host,
                profile: w.profile.value,
                ip,
                uuid,
                boot: BootChoices {
                    local_boot: w.local_boot,
                    uefi_binary: w.uefi_binary,
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Config;

    fn setup(machines: &str) -> (tempfile::TempDir, Result<Inventory, Problems>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("profiles")).unwrap();
        std::fs::write(
            d.path().join("profiles/controlplane.yaml"),
            "role: controlplane\ntalos_version: v1.13.0\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("profiles/worker.yaml"),
            "role: worker\ntalos_version: v1.13.0\ninstall_disk: /dev/sda\n",
        )
        .unwrap();
        std::fs::write(d.path().join("machines.yaml"), machines).unwrap();
        std::fs::write(
            d.path().join("kiln.yaml"),
            "interface: br0\nserver_address: 10.99.0.1\ndhcp:\n  mode: full\n  subnet: 10.99.0.0/24\n  range: [10.99.0.100, 10.99.0.200]\n  router: 10.99.0.1\n",
        )
        .unwrap();
        let cfg = Config::load(&d.path().join("kiln.yaml")).unwrap();
        let inv = Inventory::load(&cfg);
        (d, inv)
    }

    #[test]
    fn loads_and_matches_mac_variants() {
        let (_d, inv) = setup(
            "machines:\n  - mac: 52:54:00:AA:bb:01\n    hostname: cp-1\n    profile: controlplane\n    ip: 10.99.0.11\n  - mac: 52-54-00-aa-bb-02\n    hostname: w-1\n    profile: worker\n",
        );
        let inv = inv.unwrap();
        let m = inv.machine(&"52:54:00:aa:bb:01".parse().unwrap()).unwrap();
        assert_eq!(m.hostname, "cp-1");
        assert_eq!(m.ip, Some("10.99.0.11".parse().unwrap()));
        assert!(inv.machine(&"52:54:00:AA:BB:02".parse().unwrap()).is_some());
        assert!(inv.machine(&"52:54:00:aa:bb:03".parse().unwrap()).is_none());
        assert_eq!(
            inv.profile("worker").unwrap().install_disk.as_deref(),
            Some("/dev/sda")
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let (_d, inv) = setup(
            "machines:\n  - mac: 52:54:00:aa:bb:01\n    hostname: cp-1\n    profile: controlplane\n  - mac: 52-54-00-AA-BB-01\n    hostname: cp-1\n    profile: nosuch\n  - mac: 52:54:00:zz:bb:03\n    hostname: w-3\n    profile: worker\n    ip: 10.98.0.5\n",
        );
        let e = inv.unwrap_err().to_string();
        assert!(
            e.contains(
                "line 5: machines[1].mac: duplicate MAC 52:54:00:aa:bb:01 (first at line 2)"
            ),
            "{e}"
        );
        assert!(
            e.contains("line 6: machines[1].hostname: duplicate hostname \"cp-1\""),
            "{e}"
        );
        assert!(
            e.contains(
                "machines[1].profile: unknown profile \"nosuch\" (known: controlplane, worker)"
            ),
            "{e}"
        );
        assert!(e.contains("line 8: machines[2].mac: malformed MAC"), "{e}");
        assert!(
            e.contains("machines[2].ip: 10.98.0.5 is outside the DHCP subnet (10.99.0.0/24)"),
            "{e}"
        );
        assert!(e.contains("machines.yaml"), "{e}");
    }
}
