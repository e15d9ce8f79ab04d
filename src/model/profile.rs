//! Role profiles (`profiles/<name>.yaml`): what a machine boots (Talos release,
//! kernel, arguments) and how its config is rendered (cluster, first-class
//! settings, extra patches). Loading checks every profile against kiln.yaml.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::config::{ClusterSpec, Config, DhcpMode};
use crate::model::contract::Contract;
use crate::model::patch::{self, Patch};
use crate::model::problems::Problems;
use crate::model::settings::{Cni, Settings};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controlplane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[default]
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

pub use crate::model::boot::{BootChoices, HttpBoot, LocalBoot, UefiBinary};

/// A role profile as written in `profiles/<name>.yaml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(skip)]
    pub name: String,
    pub role: Role,
    /// Cluster (key of `clusters:` in kiln.yaml); default: the only one.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Talos release booted, e.g. `v1.13.9`; default: the cluster's.
    #[serde(default)]
    pub talos_version: String,
    #[serde(default)]
    pub arch: Arch,
    #[serde(default)]
    pub install_disk: Option<String>,
    /// `net.ifnames=0`: eth0-style names, on the PXE kernel line and in the config.
    #[serde(default)]
    pub stable_interface_names: bool,
    #[serde(default)]
    pub dhcp_interfaces: Vec<String>,
    /// Control planes only: the shared virtual IP of the Kubernetes API.
    #[serde(default)]
    pub vip: Option<Ipv4Addr>,
    #[serde(default)]
    pub vip_interface: Option<String>,
    #[serde(default)]
    pub allow_workloads: bool,
    #[serde(default)]
    pub cni: Option<Cni>,
    #[serde(default)]
    pub kubelet_serving_certs: bool,
    /// Extra kernel arguments appended after Talos's own, on the PXE line only.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Official system extensions in the image (its Image Factory schematic).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Kernel arguments in the schematic: on the PXE line (through the
    /// factory's cmdline) and on the installed system (through its installer).
    #[serde(default)]
    pub extra_kernel_args: Vec<String>,
    /// An overlay for boards that need one.
    #[serde(default)]
    pub overlay: Option<crate::model::schematic::Overlay>,
    /// How installed machines boot their disk (default by firmware).
    #[serde(default)]
    pub local_boot: Option<LocalBoot>,
    /// The UEFI iPXE binary (default `ipxe.efi`).
    #[serde(default)]
    pub uefi_binary: Option<UefiBinary>,
    /// What UEFI HTTP Boot clients get: `ipxe` (default) or `uki`.
    #[serde(default)]
    pub http_boot: HttpBoot,
    /// With `http_boot: uki`, the UKI: a path under boot_assets. Default: the
    /// factory's `metal-<arch>-uki.efi` of the profile's UKI schematic, as
    /// `kiln assets pull` fetched it.
    #[serde(default)]
    pub uki: Option<String>,
    /// Console arguments; default Talos's (`console=tty0` on amd64).
    #[serde(default)]
    pub console: Option<Vec<String>>,
    /// Kernel: a path under boot_assets, or an http(s) URL. Default
    /// `talos/<talos_version>/vmlinuz-<arch>`.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Initramfs, as `kernel`. Default `talos/<talos_version>/initramfs-<arch>.xz`.
    #[serde(default)]
    pub initramfs: Option<String>,
    /// Config patches applied last, paths relative to the profile file.
    #[serde(default)]
    pub patches: Vec<PathBuf>,
    /// The patches, parsed, with the file each came from.
    #[serde(skip)]
    pub loaded_patches: Vec<(Patch, String)>,
}

impl Profile {
    /// A profile with everything else at its default (tests, benches).
    pub fn new(name: &str, role: Role, talos_version: &str) -> Profile {
        Profile {
            name: name.into(),
            role,
            cluster: None,
            talos_version: talos_version.into(),
            arch: Arch::Amd64,
            install_disk: None,
            stable_interface_names: false,
            dhcp_interfaces: Vec::new(),
            vip: None,
            vip_interface: None,
            allow_workloads: false,
            cni: None,
            kubelet_serving_certs: false,
            kernel_args: Vec::new(),
            extensions: Vec::new(),
            extra_kernel_args: Vec::new(),
            overlay: None,
            local_boot: None,
            uefi_binary: None,
            http_boot: HttpBoot::Ipxe,
            uki: None,
            console: None,
            kernel: None,
            initramfs: None,
            patches: Vec::new(),
            loaded_patches: Vec::new(),
        }
    }

    pub fn kernel_ref(&self) -> String {
        self.kernel.clone().unwrap_or_else(|| {
            format!(
                "talos/{}/vmlinuz-{}",
                self.talos_version,
                self.arch.as_str()
            )
        })
    }
    pub fn initramfs_ref(&self) -> String {
        self.initramfs.clone().unwrap_or_else(|| {
            format!(
                "talos/{}/initramfs-{}.xz",
                self.talos_version,
                self.arch.as_str()
            )
        })
    }

    pub fn settings(&self) -> Settings {
        Settings {
            install_disk: self.install_disk.clone(),
            stable_interface_names: self.stable_interface_names,
            dhcp_interfaces: self.dhcp_interfaces.clone(),
            vip: self.vip,
            vip_interface: self.vip_interface.clone(),
            allow_workloads: self.allow_workloads,
            cni: self.cni.clone().unwrap_or_default(),
            kubelet_serving_certs: self.kubelet_serving_certs,
        }
    }
}

/// Whether an asset reference is a remote URL rather than a file under boot_assets.
pub fn is_url(r: &str) -> bool {
    r.starts_with("http://") || r.starts_with("https://")
}

fn valid_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let core = rest.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Load every profile and check it against kiln.yaml: cluster, versions, VIP, CNI, patches.
pub fn load_profiles(cfg: &Config, problems: &mut Problems) -> BTreeMap<String, Profile> {
    let dir = &cfg.profiles;
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(dir, "", format!("cannot read profiles directory: {e}"));
            return out;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    for f in files {
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                problems.push(&f, "", format!("cannot read: {e}"));
                continue;
            }
        };
        match crate::model::problems::parse_yaml::<Profile>(&text) {
            Ok(mut p) => {
                p.name = name.clone();
                check_profile(cfg, &f, &mut p, problems);
                if out.insert(name.clone(), p).is_some() {
                    problems.push(
                        &f,
                        "",
                        format!("profile {name:?} is defined twice (.yaml and .yml)"),
                    );
                }
            }
            Err(e) => problems.push(&f, "", e.to_string()),
        }
    }
    if out.is_empty() && problems.is_empty() {
        problems.push(dir, "", "no profiles (*.yaml) found");
    }
    out
}

fn check_profile(cfg: &Config, f: &Path, p: &mut Profile, problems: &mut Problems) {
    let cluster = check_cluster(cfg, f, p, problems);
    check_version(f, p, cluster, problems);
    check_settings(cfg, f, p, problems);
    if let Some(c) = cluster {
        // The cluster's image defaults first, then the profile's own.
        for (mine, theirs) in [
            (&mut p.extensions, &c.extensions),
            (&mut p.extra_kernel_args, &c.extra_kernel_args),
        ] {
            let own = std::mem::take(mine);
            mine.extend(theirs.iter().cloned());
            for x in own {
                if !mine.contains(&x) {
                    mine.push(x);
                }
            }
        }
    }
    check_image(f, p, problems);
    load_patches(f, p, problems);
}

/// The image keys: official extension names (`siderolabs/<name>`) and kernel
/// arguments (one word each), as the factory would take them.
fn check_image(f: &Path, p: &Profile, problems: &mut Problems) {
    for (i, e) in p.extensions.iter().enumerate() {
        let ok = e
            .split_once('/')
            .is_some_and(|(org, n)| !org.is_empty() && !n.is_empty() && !n.contains('/'))
            && !e
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ':');
        if !ok {
            problems.push(
                f,
                &format!("extensions[{i}]"),
                format!("{e:?} is not an official extension name like siderolabs/iscsi-tools (no version: the factory picks the one for the Talos release)"),
            );
        }
    }
    for (i, a) in p.extra_kernel_args.iter().enumerate() {
        if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.push(
                f,
                &format!("extra_kernel_args[{i}]"),
                format!("{a:?} is not one kernel argument (one word, e.g. net.ifnames=0)"),
            );
        }
    }
    if let Some(o) = &p.overlay {
        // Only values whose YAML kiln writes as Go does (so the ID is the factory's).
        fn plain(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::String(s) => !s.contains(['\n', ':', '#', '"', '\'']),
                serde_json::Value::Number(n) => n.is_i64() || n.is_u64(),
                serde_json::Value::Array(a) => a.iter().all(plain),
                serde_json::Value::Object(m) => m.values().all(plain),
                _ => true,
            }
        }
        if o.options.as_ref().is_some_and(|v| !plain(v)) {
            problems.push(f, "overlay.options", "multi-line strings, strings with : # or quotes, and fractional numbers are not supported (kiln could not compute the factory's schematic ID for them)");
        }
        if o.name.trim().is_empty() || o.image.trim().is_empty() {
            problems.push(f, "overlay", "needs both name and image (e.g. name: rpi_generic, image: siderolabs/sbc-raspberrypi)");
        }
    }
}

/// The profile's cluster: named, or the only one; fills `p.cluster` in.
fn check_cluster<'a>(
    cfg: &'a Config,
    f: &Path,
    p: &mut Profile,
    problems: &mut Problems,
) -> Option<&'a ClusterSpec> {
    let cluster = match (&p.cluster, cfg.clusters.len()) {
        (Some(c), _) => match cfg.clusters.get(c) {
            Some(spec) => Some(spec),
            None => {
                let known: Vec<&str> = cfg.clusters.keys().map(String::as_str).collect();
                problems.push(
                    f,
                    "cluster",
                    format!(
                        "unknown cluster {c:?} (kiln.yaml clusters: {})",
                        known.join(", ")
                    ),
                );
                None
            }
        },
        (None, 1) => cfg.clusters.values().next(),
        (None, 0) => None,
        (None, _) => {
            problems.push(
                f,
                "cluster",
                "several clusters are defined in kiln.yaml: name this profile's cluster",
            );
            None
        }
    };
    if let (None, Some(c)) = (&p.cluster, cluster) {
        p.cluster = Some(c.name.clone());
    }
    cluster
}

/// The Talos version: the profile's, else the cluster's, and one kiln knows.
fn check_version(
    f: &Path,
    p: &mut Profile,
    cluster: Option<&ClusterSpec>,
    problems: &mut Problems,
) {
    if p.talos_version.is_empty() {
        match cluster.and_then(|c| c.talos_version.clone()) {
            Some(v) => p.talos_version = v,
            None => problems.push(
                f,
                "talos_version",
                "missing (set it here or in the cluster)",
            ),
        }
    }
    if p.talos_version.is_empty() {
        // reported above
    } else if !valid_version(&p.talos_version) {
        problems.push(
            f,
            "talos_version",
            format!("{:?} is not a Talos version like v1.13.0", p.talos_version),
        );
    } else if cluster.is_some() {
        if let Err(e) = Contract::for_release(&p.talos_version) {
            problems.push(f, "talos_version", e.to_string());
        }
    }
}

/// First-class settings: the VIP and the CNI.
fn check_settings(cfg: &Config, f: &Path, p: &Profile, problems: &mut Problems) {
    if let Some(vip) = p.vip {
        if p.role == Role::Worker {
            problems.push(
                f,
                "vip",
                "a VIP is for control planes only; remove it from this worker profile",
            );
        }
        if let DhcpMode::Full(full) = &cfg.dhcp {
            match full.subnets.first() {
                Some(s) if !s.net.contains(&vip) => {
                    problems.push(
                        f,
                        "vip",
                        format!("{vip} is outside the interface's subnet {}", s.net),
                    );
                }
                Some(s) if s.in_range(vip) => {
                    problems.push(f, "vip", format!("{vip} is inside the DHCP range {}-{}: DHCP could lease it to a machine", s.range.0, s.range.1));
                }
                _ => {}
            }
        }
    }
    if let Some(Cni::Name(n)) = &p.cni {
        if n != "flannel" && n != "none" {
            problems.push(
                f,
                "cni",
                format!("{n:?}: want flannel, none or {{urls: [...]}}"),
            );
        }
    }
}

/// Patches, relative to the profile file, read and parsed now.
fn load_patches(f: &Path, p: &mut Profile, problems: &mut Problems) {
    let base = f.parent().unwrap_or(Path::new("."));
    for (i, pf) in p.patches.iter().enumerate() {
        let path = if pf.is_absolute() {
            pf.clone()
        } else {
            base.join(pf)
        };
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => match patch::parse(&text, &shown) {
                Ok(pt) => p.loaded_patches.push((pt, shown)),
                Err(e) => problems.push(f, &format!("patches[{i}]"), e.to_string()),
            },
            Err(e) => problems.push(f, &format!("patches[{i}]"), format!("{shown}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, clusters: &str) -> Config {
        std::fs::write(
            dir.join("kiln.yaml"),
            format!("interface: br0\nserver_address: 10.99.0.1\ndhcp:\n  mode: full\n  subnet: 10.99.0.0/24\n  range: [10.99.0.100, 10.99.0.200]\n{clusters}"),
        )
        .unwrap();
        Config::load(&dir.join("kiln.yaml")).unwrap()
    }

    #[test]
    fn unknown_keys_bad_versions_vips_and_clusters_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let pd = d.path().join("profiles");
        std::fs::create_dir(&pd).unwrap();
        std::fs::write(pd.join("a.yaml"), "role: worker\ntalos_version: 1.13\n").unwrap();
        std::fs::write(
            pd.join("b.yaml"),
            "role: worker\ntalos_version: v1.13.0\ninstal_disk: /dev/sda\n",
        )
        .unwrap();
        std::fs::write(
            pd.join("c.yaml"),
            "role: worker\nvip: 10.99.0.150\ncluster: nosuch\n",
        )
        .unwrap();
        std::fs::write(
            pd.join("d.yaml"),
            "role: controlplane\nvip: 10.98.0.5\npatches: [missing.yaml]\ncni: calico\n",
        )
        .unwrap();
        std::fs::write(
            pd.join("e.yaml"),
            "role: controlplane\ntalos_version: v1.7.0\n",
        )
        .unwrap();
        let mut c = cfg(
            d.path(),
            "clusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n    talos_version: v1.13.9\n",
        );
        c.profiles = pd.clone();
        let mut p = Problems::default();
        let profiles = load_profiles(&c, &mut p);
        let e = p.to_string();
        assert!(
            e.contains("a.yaml: talos_version: \"1.13\" is not a Talos version"),
            "{e}"
        );
        assert!(e.contains("b.yaml") && e.contains("instal_disk"), "{e}");
        assert!(
            e.contains("c.yaml: cluster: unknown cluster \"nosuch\" (kiln.yaml clusters: lab)"),
            "{e}"
        );
        assert!(
            e.contains("c.yaml: vip: a VIP is for control planes only"),
            "{e}"
        );
        assert!(
            e.contains("c.yaml: vip: 10.99.0.150 is inside the DHCP range"),
            "{e}"
        );
        assert!(
            e.contains("d.yaml: vip: 10.98.0.5 is outside the interface's subnet 10.99.0.0/24"),
            "{e}"
        );
        assert!(
            e.contains("d.yaml: patches[0]: ") && e.contains("missing.yaml"),
            "{e}"
        );
        assert!(e.contains("d.yaml: cni: \"calico\""), "{e}");
        assert!(
            e.contains("e.yaml: talos_version: Talos v1.7 is not supported: kiln provisions Talos v1.8 through v1.15"),
            "{e}"
        );
        // The cluster's version and name fill in what a profile leaves out.
        assert_eq!(profiles["d"].talos_version, "v1.13.9");
        assert_eq!(profiles["d"].cluster.as_deref(), Some("lab"));
    }

    #[test]
    fn image_keys_take_the_cluster_defaults_and_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let pd = d.path().join("profiles");
        std::fs::create_dir(&pd).unwrap();
        std::fs::write(
            pd.join("w.yaml"),
            "role: worker\nextensions: [siderolabs/gvisor, siderolabs/iscsi-tools]\nstable_interface_names: true\n",
        )
        .unwrap();
        std::fs::write(
            pd.join("x.yaml"),
            "role: worker\nextensions: [iscsi-tools:v1]\nextra_kernel_args: [\"a b\"]\n",
        )
        .unwrap();
        let mut c = cfg(
            d.path(),
            "clusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n    talos_version: v1.14.0\n    extensions: [siderolabs/iscsi-tools]\n    extra_kernel_args: [mitigations=off]\n",
        );
        c.profiles = pd.clone();
        let mut p = Problems::default();
        let profiles = load_profiles(&c, &mut p);
        let w = &profiles["w"];
        assert_eq!(
            w.extensions,
            ["siderolabs/iscsi-tools", "siderolabs/gvisor"]
        );
        let s = w.schematic();
        assert_eq!(s.extra_kernel_args, ["mitigations=off", "net.ifnames=0"]);
        assert_eq!(
            s.canonical_yaml(),
            "customization:\n    extraKernelArgs:\n        - mitigations=off\n        - net.ifnames=0\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/iscsi-tools\n            - siderolabs/gvisor\n"
        );
        let e = p.to_string();
        assert!(
            e.contains(
                "x.yaml: extensions[1]: \"iscsi-tools:v1\" is not an official extension name"
            ),
            "{e}"
        );
        assert!(
            e.contains("x.yaml: extra_kernel_args[1]: \"a b\" is not one kernel argument"),
            "{e}"
        );
    }
}
