//! Boot assets from the Talos Image Factory, cached under
//! `boot_assets/factory/<schematic id>/<version>/`: `kernel-<arch>`,
//! `initramfs-<arch>.xz`, `cmdline-metal-<arch>` and `manifest.json` (the
//! schematic, and the sha256 and size of every file). The public factory
//! publishes no checksums (its `.sha256` routes answer 402), so the manifest
//! records what the first download got and `kiln check` refuses anything that
//! changed since. `kiln assets pull | list | prune | import` live here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::config::Config;
use crate::model::inventory::{Arch, Inventory, Profile};
use crate::talos::factory::{sha256_file, Factory, FactoryError, Progress};

pub const MANIFEST: &str = "manifest.json";

const CHECKSUM_NOTE: &str = "sha256 of the bytes downloaded: the public Image Factory publishes no checksums (its .sha256 routes answer 402), so these pin what was fetched first and kiln check refuses any later change";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schematic: String,
    pub version: String,
    pub factory: String,
    /// The schematic as registered; its sha256 is `schematic`.
    pub schematic_yaml: String,
    #[serde(default)]
    pub note: String,
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error(transparent)]
    Factory(#[from] FactoryError),
    #[error("{}: {why}", path.display())]
    Io { path: PathBuf, why: std::io::Error },
    #[error("{}: {why}", path.display())]
    Bad { path: PathBuf, why: String },
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AssetsError + '_ {
    move |why| AssetsError::Io {
        path: path.to_path_buf(),
        why,
    }
}

/// The files of one arch, in pull order.
pub fn files_for(arch: Arch) -> [String; 3] {
    let a = arch.as_str();
    [
        format!("kernel-{a}"),
        format!("initramfs-{a}.xz"),
        format!("cmdline-metal-{a}"),
    ]
}

/// The factory's name for the boot UKI of `arch`.
pub fn uki_file(arch: Arch) -> String {
    format!("metal-{}-uki.efi", arch.as_str())
}

/// Every one of `names` landed in `dir` and is recorded in its manifest: a
/// pull still under way (or one that failed half-way) does not count.
pub fn pulled(dir: &Path, names: &[&str]) -> bool {
    load_manifest(dir).ok().flatten().is_some_and(|m| {
        names
            .iter()
            .all(|f| m.files.contains_key(*f) && dir.join(f).is_file())
    })
}

pub fn dir(cfg: &Config, id: &str, version: &str) -> PathBuf {
    cfg.boot_assets.join("factory").join(id).join(version)
}

pub fn load_manifest(dir: &Path) -> Result<Option<Manifest>, AssetsError> {
    let path = dir.join(MANIFEST);
    match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| AssetsError::Bad {
                path,
                why: format!("unreadable manifest ({e}); pull or import again"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

fn save_manifest(dir: &Path, m: &Manifest) -> Result<(), AssetsError> {
    let path = dir.join(MANIFEST);
    let tmp = dir.join(".manifest.json.tmp");
    let text = serde_json::to_string_pretty(m).unwrap_or_default();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all((text + "\n").as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    crate::model::files::sync_dir(dir).map_err(io(dir))
}

/// An exclusive lock on the cache (`boot_assets/factory/.lock`) for a pull,
/// import or prune: two at once would write one `.part` twice, or prune a
/// directory a pull is filling. Held until dropped.
pub(crate) struct CacheLock {
    _file: std::fs::File,
}

pub(crate) fn lock(cfg: &Config) -> Result<CacheLock, AssetsError> {
    use std::os::fd::AsRawFd;
    let root = cfg.boot_assets.join("factory");
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let path = root.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: flock(2) on a descriptor we own, for as long as `f` lives.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(AssetsError::Refused(format!(
            "{}: another kiln assets pull, import or prune is running on this cache; wait for it",
            path.display()
        )));
    }
    Ok(CacheLock { _file: f })
}

/// Every problem with `names` in `dir` against its manifest: missing,
/// unrecorded, or changed since it was pulled.
pub fn verify(dir: &Path, names: &[String]) -> Vec<String> {
    let m = match load_manifest(dir) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return vec![format!(
            "{}: no {MANIFEST}: these files were not pulled or imported by kiln (kiln assets pull)",
            dir.display()
        )]
        }
        Err(e) => return vec![e.to_string()],
    };
    let mut out = Vec::new();
    for n in names {
        let path = dir.join(n);
        let Some(want) = m.files.get(n) else {
            out.push(format!(
                "{}: not in {MANIFEST} (kiln assets pull)",
                path.display()
            ));
            continue;
        };
        match sha256_file(&path) {
            Ok(got) if got == want.sha256 => {}
            Ok(got) => out.push(format!(
                "{}: sha256 {got}, but {MANIFEST} recorded {} when it was pulled: the file changed; pull it again (kiln assets pull) or restore it",
                path.display(),
                want.sha256
            )),
            Err(e) => out.push(e.to_string()),
        }
    }
    out
}

/// One (schematic, version) a pull fetches, the arches, and who needs it.
#[derive(Debug, Clone)]
pub struct Want {
    pub id: String,
    pub version: String,
    pub schematic_yaml: String,
    pub arches: Vec<Arch>,
    pub profiles: Vec<String>,
    /// The boot UKI (`metal-<arch>-uki.efi`) of an `http_boot: uki`
    /// profile's UKI schematic, instead of kernel, initramfs and cmdline.
    pub uki: bool,
}

impl Want {
    /// The factory file names this pull fetches.
    pub fn files(&self) -> Vec<String> {
        self.arches
            .iter()
            .flat_map(|a| {
                if self.uki {
                    vec![uki_file(*a)]
                } else {
                    files_for(*a).to_vec()
                }
            })
            .collect()
    }
}

/// What `kiln assets pull` fetches: the named profile, or every profile that
/// names no kernel of its own; `arches` replaces the profiles' own.
pub fn wanted(
    cfg: &Config,
    inv: &Inventory,
    profile: Option<&str>,
    arches: &[Arch],
) -> Result<Vec<Want>, AssetsError> {
    let chosen: Vec<&Profile> = match profile {
        Some(name) => vec![inv.profiles.get(name).ok_or_else(|| {
            AssetsError::Refused(format!(
                "no profile {name:?} (have: {})",
                inv.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?],
        None => inv
            .profiles
            .values()
            .filter(|p| p.kernel.is_none() && p.initramfs.is_none())
            .collect(),
    };
    let mut out: Vec<Want> = Vec::new();
    let boots: Vec<(&Profile, crate::model::schematic::Schematic, bool)> = chosen
        .into_iter()
        .flat_map(|p| {
            let mut v = vec![(p, p.schematic(), false)];
            if p.http_boot == crate::model::boot::HttpBoot::Uki && p.uki.is_none() {
                v.push((p, crate::brain::uki::schematic(cfg, p), true));
            }
            v
        })
        .collect();
    for (p, s, uki) in boots {
        let id = s.id();
        let arch_list = if arches.is_empty() {
            vec![p.arch]
        } else {
            arches.to_vec()
        };
        match out
            .iter_mut()
            .find(|w| w.id == id && w.version == p.talos_version && w.uki == uki)
        {
            Some(w) => {
                for a in arch_list {
                    if !w.arches.contains(&a) {
                        w.arches.push(a);
                    }
                }
                w.profiles.push(p.name.clone());
            }
            None => out.push(Want {
                id,
                version: p.talos_version.clone(),
                schematic_yaml: s.canonical_yaml(),
                arches: arch_list,
                profiles: vec![p.name.clone()],
                uki,
            }),
        }
    }
    Ok(out)
}

fn new_manifest(cfg: &Config, w: &Want) -> Manifest {
    Manifest {
        schematic: w.id.clone(),
        version: w.version.clone(),
        factory: cfg.factory_url.clone(),
        schematic_yaml: w.schematic_yaml.clone(),
        note: CHECKSUM_NOTE.into(),
        files: BTreeMap::new(),
    }
}

/// Fetch what `w` needs into its directory; a file already recorded and
/// unchanged is kept. Returns one line per file.
pub fn pull(
    cfg: &Config,
    w: &Want,
    progress: &mut dyn Progress,
) -> Result<Vec<String>, AssetsError> {
    let f = Factory::new(&cfg.factory_url);
    let d = dir(cfg, &w.id, &w.version);
    std::fs::create_dir_all(&d).map_err(io(&d))?;
    f.register(&w.schematic_yaml, &w.id)?;
    // An unreadable manifest is started afresh: every file is checked again.
    let mut m = match load_manifest(&d) {
        Ok(Some(m)) if m.schematic == w.id => m,
        Err(e) => {
            tracing::warn!("{e}: starting the manifest afresh");
            new_manifest(cfg, w)
        }
        _ => new_manifest(cfg, w),
    };
    let mut lines = Vec::new();
    for name in w.files() {
        let path = d.join(&name);
        if let Some(e) = m.files.get(&name) {
            if path.is_file() && sha256_file(&path)? == e.sha256 {
                lines.push(format!("{}: cached ({} bytes)", path.display(), e.size));
                continue;
            }
        }
        let url = f.asset_url(&w.id, &w.version, &name);
        let got = f.download(&url, &path, progress)?;
        let resumed = if got.resumed_from > 0 {
            format!(", resumed at {}", got.resumed_from)
        } else {
            String::new()
        };
        lines.push(format!(
            "{}: {} bytes{resumed}, sha256 {}",
            path.display(),
            got.size,
            got.sha256
        ));
        m.files.insert(
            name,
            crate::brain::factory::FileEntry {
                sha256: got.sha256,
                size: got.size,
            },
        );
        save_manifest(&d, &m)?;
    }
    save_manifest(&d, &m)?;
    Ok(lines)
}

/// Every cached (schematic, version): its directory and manifest, if readable.
pub fn cached(cfg: &Config) -> Vec<(PathBuf, Result<Option<Manifest>, AssetsError>)> {
    let mut out = Vec::new();
    let root = cfg.boot_assets.join("factory");
    let Ok(ids) = std::fs::read_dir(&root) else {
        return out;
    };
    let mut ids: Vec<PathBuf> = ids
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    ids.sort();
    for id in ids {
        let Ok(vs) = std::fs::read_dir(&id) else {
            continue;
        };
        let mut vs: Vec<PathBuf> = vs
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        vs.sort();
        for v in vs {
            let m = load_manifest(&v);
            out.push((v, m));
        }
    }
    out
}

/// Profiles whose boot files live in `d`.
pub fn users(cfg: &Config, inv: &Inventory, d: &Path) -> Vec<String> {
    inv.profiles
        .values()
        .filter(|p| cfg.boot_assets.join(p.factory_dir()) == d)
        .map(|p| p.name.clone())
        .collect()
}

/// `kiln assets prune`: remove each cached directory no profile uses.
pub fn prune(cfg: &Config, inv: &Inventory, dry_run: bool) -> Result<Vec<PathBuf>, AssetsError> {
    let mut removed = Vec::new();
    for (d, _) in cached(cfg) {
        if users(cfg, inv, &d).is_empty() {
            if !dry_run {
                std::fs::remove_dir_all(&d).map_err(io(&d))?;
                if let Some(parent) = d.parent() {
                    // The schematic's directory goes when its last version does.
                    let _ = std::fs::remove_dir(parent);
                }
            }
            removed.push(d);
        }
    }
    Ok(removed)
}

/// `kiln assets import DIR`: directories laid out as `boot_assets/factory`
/// (`<id>/<version>/manifest.json` + files, or one such version directory),
/// checked against their manifests and the schematic's ID before a byte is copied.
pub fn import(cfg: &Config, src: &Path) -> Result<Vec<String>, AssetsError> {
    let mut dirs = Vec::new();
    if src.join(MANIFEST).is_file() {
        dirs.push(src.to_path_buf());
    } else {
        for e in std::fs::read_dir(src).map_err(io(src))?.flatten() {
            let id = e.path();
            if let Ok(vs) = std::fs::read_dir(&id) {
                dirs.extend(
                    vs.flatten()
                        .map(|v| v.path())
                        .filter(|v| v.join(MANIFEST).is_file()),
                );
            }
        }
    }
    if dirs.is_empty() {
        return Err(AssetsError::Refused(format!("{}: no {MANIFEST} under it (expected <schematic id>/<version>/{MANIFEST}, as kiln assets pull writes)", src.display())));
    }
    dirs.sort();
    let mut lines = Vec::new();
    for d in dirs {
        lines.extend(import_one(cfg, &d)?);
    }
    Ok(lines)
}

fn import_one(cfg: &Config, d: &Path) -> Result<Vec<String>, AssetsError> {
    let bad = |why: String| AssetsError::Bad {
        path: d.to_path_buf(),
        why,
    };
    let m = load_manifest(d)?.ok_or_else(|| bad(format!("no {MANIFEST}")))?;
    let id = crate::model::schematic::sha256_hex(m.schematic_yaml.as_bytes());
    if id != m.schematic {
        return Err(bad(format!(
            "{MANIFEST} names schematic {} but its schematic_yaml hashes to {id}",
            m.schematic
        )));
    }
    if m.schematic.len() != 64
        || !m.schematic.chars().all(|c| c.is_ascii_hexdigit())
        || m.version.contains(['/', '\\'])
        || m.version.starts_with('.')
    {
        return Err(bad(
            "manifest schematic or version is not a plain name".into()
        ));
    }
    let names: Vec<String> = m.files.keys().cloned().collect();
    if names
        .iter()
        .any(|n| n.contains(['/', '\\']) || n.starts_with('.'))
    {
        return Err(bad("manifest names a file outside its directory".into()));
    }
    let problems = verify(d, &names);
    if !problems.is_empty() {
        return Err(bad(format!("refusing to import: {}", problems.join("; "))));
    }
    let to = dir(cfg, &m.schematic, &m.version);
    std::fs::create_dir_all(&to).map_err(io(&to))?;
    let mut lines = Vec::new();
    for n in &names {
        let tmp = to.join(format!(".{n}.import"));
        std::fs::copy(d.join(n), &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, to.join(n)).map_err(io(&to.join(n)))?;
        lines.push(format!(
            "{}: imported ({} bytes)",
            to.join(n).display(),
            m.files[n].size
        ));
    }
    save_manifest(&to, &m)?;
    Ok(lines)
}
