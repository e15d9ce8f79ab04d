//! `kiln assets pull | list | prune | import`, with a progress bar (bytes,
//! rate, ETA) on a terminal and plain lines otherwise.

use std::fmt::Write as _;
use std::io::IsTerminal;

use anyhow::anyhow;

use super::args::AssetsCmd;
use crate::brain::factory;
use crate::model::inventory::Arch;
use crate::talos::factory::Progress;

/// A bar per file on a terminal; otherwise one line when a file starts and
/// one when it lands.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    tty: bool,
}

impl Progress for Bar {
    fn start(&mut self, name: &str, resumed_at: u64, total: Option<u64>) {
        if !self.tty {
            let size = total.map_or("unknown size".to_string(), |t| format!("{t} bytes"));
            let from = if resumed_at > 0 {
                format!(", resuming at {resumed_at}")
            } else {
                String::new()
            };
            eprintln!("{name}: downloading ({size}{from})");
            return;
        }
        let b = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::no_length(),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        b.set_style(style);
        b.set_message(name.to_string());
        b.set_position(resumed_at);
        self.bar = Some(b);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
        }
    }
    fn finish(&mut self, name: &str, sha256: &str, size: u64) {
        match self.bar.take() {
            Some(b) => b.finish_and_clear(),
            None => eprintln!("{name}: done ({size} bytes, sha256 {sha256})"),
        }
    }
}

fn arches(list: &[String]) -> anyhow::Result<Vec<Arch>> {
    list.iter()
        .map(|a| match a.as_str() {
            "amd64" => Ok(Arch::Amd64),
            "arm64" => Ok(Arch::Arm64),
            other => Err(anyhow!("--arch {other:?}: want amd64 or arm64")),
        })
        .collect()
}

type Loaded = (
    crate::model::config::Config,
    crate::model::inventory::Inventory,
);

fn load(p: &std::path::Path) -> anyhow::Result<Loaded> {
    let cfg = crate::model::config::Config::load(p).map_err(|e| anyhow!("{e}"))?;
    let inv = crate::model::inventory::Inventory::load(&cfg).map_err(|e| anyhow!("{e}"))?;
    Ok((cfg, inv))
}

pub(super) fn run(what: AssetsCmd) -> anyhow::Result<String> {
    match what {
        AssetsCmd::Pull {
            at,
            profile,
            all: _,
            arch,
        } => pull(&at.config, profile.as_deref(), &arch),
        AssetsCmd::List { at } => list(&at.config),
        AssetsCmd::Prune { at, dry_run } => {
            let (cfg, inv) = load(&at.config)?;
            let _lock = factory::lock(&cfg)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            let mut out = String::new();
            for d in factory::prune(&cfg, &inv, dry_run)? {
                let _ = writeln!(out, "{verb} {}", d.display());
            }
            if out.is_empty() {
                out = "nothing to prune: every cached image is in use\n".into();
            }
            Ok(out)
        }
        AssetsCmd::Import { dir, at } => {
            let (cfg, _) = load(&at.config)?;
            let _lock = factory::lock(&cfg)?;
            let mut out = String::new();
            for l in factory::import(&cfg, &dir)? {
                let _ = writeln!(out, "{l}");
            }
            Ok(out)
        }
    }
}

fn pull(
    config: &std::path::Path,
    profile: Option<&str>,
    arch: &[String],
) -> anyhow::Result<String> {
    let (cfg, inv) = load(config)?;
    let wants = factory::wanted(&cfg, &inv, profile, &arches(arch)?)?;
    if wants.is_empty() {
        return Ok("no profile uses factory assets (each names its own kernel:)\n".into());
    }
    let _lock = factory::lock(&cfg)?;
    let mut bar = Bar {
        bar: None,
        tty: std::io::stderr().is_terminal(),
    };
    let mut out = String::new();
    for w in &wants {
        let _ = writeln!(
            out,
            "schematic {} Talos {} (profiles {}) from {}",
            w.id,
            w.version,
            w.profiles.join(", "),
            cfg.factory_url
        );
        for l in factory::pull(&cfg, w, &mut bar)? {
            let _ = writeln!(out, "  {l}");
        }
    }
    Ok(out)
}

fn list(config: &std::path::Path) -> anyhow::Result<String> {
    let (cfg, inv) = load(config)?;
    let mut out = String::new();
    for (d, m) in factory::cached(&cfg) {
        let users = factory::users(&cfg, &inv, &d);
        let used = if users.is_empty() {
            "unused (kiln assets prune removes it)".to_string()
        } else {
            format!("profiles {}", users.join(", "))
        };
        let _ = writeln!(out, "{}: {used}", d.display());
        match m {
            Ok(Some(m)) => {
                for (n, e) in &m.files {
                    let _ = writeln!(out, "  {n}  {} bytes  sha256 {}", e.size, e.sha256);
                }
            }
            Ok(None) => {
                let _ = writeln!(out, "  no {} (not pulled by kiln)", factory::MANIFEST);
            }
            Err(e) => {
                let _ = writeln!(out, "  {e}");
            }
        }
    }
    if out.is_empty() {
        out = format!(
            "nothing cached under {}\n",
            cfg.boot_assets.join("factory").display()
        );
    }
    Ok(out)
}
