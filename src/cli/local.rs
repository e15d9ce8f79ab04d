//! Subcommands that run here: `serve`, `check`, `render`, `gen`, and the
//! client-config exports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;

use super::args::{ClientArgs, GenCmd};
use crate::brain::check;

/// Most threads in the runtime's blocking pool.
const BLOCKING_THREADS: usize = 64;

pub(super) fn serve(config: &Path) -> ExitCode {
    init_logging();
    // The blocking pool runs store writes (each waits for its group commit)
    // and file reads: 64 threads keep a 10,000-machine storm's queue short,
    // where tokio's default (512) let it grow one thread, stack and malloc
    // cache per waiting write (docs/benchmarks.md).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::daemon::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// `kiln check`: every problem on stderr (and their count), warnings too.
pub(super) fn check(config: &Path) -> ExitCode {
    let checked = check::load(config)
        .and_then(|(cfg, inv)| check::check_configs(&cfg, &inv).into_result((cfg, inv)));
    let (cfg, inv) = match checked {
        Ok(x) => x,
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s) found", problems.0.len());
            return ExitCode::FAILURE;
        }
    };
    for w in check::warnings(&cfg, &inv) {
        eprintln!("warning: {w}");
    }
    for r in &inv.replaced {
        println!(
            "{}: replaced {} by {} (kiln replace; {})",
            r.hostname,
            r.old_mac,
            r.new_mac,
            crate::model::inventory::overrides_path(&cfg).display()
        );
    }
    println!(
        "{}: ok ({} profiles, {} machines)",
        cfg.file.display(),
        inv.profiles.len(),
        inv.machines().len()
    );
    ExitCode::SUCCESS
}

pub(super) fn render(config: &Path, mac: &str) -> anyhow::Result<String> {
    Ok(check::render_for(config, mac)?)
}

pub(super) fn gen(what: GenCmd) -> anyhow::Result<String> {
    let files = match what {
        GenCmd::Secrets {
            output_file,
            talos_version,
            force,
        } => crate::talos::gen::gen_secrets(&output_file, talos_version.as_deref(), force)
            .map(|()| vec![output_file])?,
        GenCmd::Config(c) => {
            let c = *c;
            crate::talos::gen::gen_config(&crate::talos::gen::GenConfig {
                cluster_name: c.cluster_name,
                endpoint: c.cluster_endpoint,
                with_secrets: c.with_secrets,
                config_patch: c.config_patch,
                config_patch_control_plane: c.config_patch_control_plane,
                config_patch_worker: c.config_patch_worker,
                kubernetes_version: c.kubernetes_version,
                talos_version: c.talos_version,
                install_disk: c.install_disk,
                install_image: c.install_image,
                additional_sans: c.additional_sans,
                dns_domain: c.dns_domain,
                output: c.output,
                force: c.force,
            })?
        }
    };
    let mut out = String::new();
    for f in files {
        let _ = writeln!(out, "created {}", f.display());
    }
    Ok(out)
}

/// `kiln patch migrate`.
pub(super) fn patch_migrate(
    file: &Path,
    talos_version: &str,
    role: Option<crate::model::inventory::Role>,
    output: Option<&Path>,
) -> anyhow::Result<String> {
    let text = crate::talos::migrate_file::migrate_file(file, talos_version, role)?;
    match output {
        Some(o) => {
            std::fs::write(o, &text).map_err(|e| anyhow!("{}: {e}", o.display()))?;
            Ok(format!("wrote {}\n", o.display()))
        }
        None => Ok(text),
    }
}

/// `kiln kubeconfig` / `kiln talosconfig`.
pub(super) fn client_export(kind: &str, a: ClientArgs) -> anyhow::Result<String> {
    let cfg = crate::model::config::Config::load(&a.at.config).map_err(|p| anyhow!("{p}"))?;
    let merge = a.merge.map(|m| {
        if m.as_os_str().is_empty() {
            let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
            PathBuf::from(home).join(if kind == "kubeconfig" {
                ".kube/config"
            } else {
                ".talos/config"
            })
        } else {
            m
        }
    });
    crate::talos::clientconfig::export(
        &cfg,
        kind,
        a.cluster.as_deref(),
        a.output.as_deref(),
        merge.as_deref(),
    )
    .map_err(anyhow::Error::from)
}

/// `kiln store keygen PATH`: a new `store.secrets_key` (0600).
pub(super) fn store_keygen(path: &Path) -> anyhow::Result<String> {
    crate::store::sealed::SecretsKey::generate(path)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    let k = crate::store::sealed::SecretsKey::load(path)?;
    Ok(format!(
        "wrote {} (0600, key id {}): copy it to every daemon and name it in store.secrets_key\n",
        path.display(),
        k.id
    ))
}

/// `kiln store migrate --to etcd|redb`: offline, between state_dir's redb
/// file and the etcd cluster the config names.
pub(super) fn store_migrate(config: &Path, to: &str) -> anyhow::Result<String> {
    use crate::model::store::StoreSettings;
    use crate::store::Store;
    let cfg = crate::model::config::Config::load(config).map_err(|p| anyhow!("{p}"))?;
    let StoreSettings::Etcd(etcd) = &cfg.store else {
        anyhow::bail!(
            "{}: store: name the etcd cluster first (backend: etcd, endpoints: [...]); migrate copies between it and {}",
            config.display(),
            cfg.state_dir.join("kiln.redb").display()
        );
    };
    // The daemon's own lock: a running kiln on this state_dir stops us here.
    crate::store::ensure_private_dir(&cfg.state_dir)?;
    let _lock = crate::daemon::lock_state_dir(&cfg.state_dir)?;
    let redb = Store::open(&cfg.state_dir)?;
    let etcd = Store::open_etcd(etcd)?;
    let (from, into) = if to == "etcd" {
        (&redb, &etcd)
    } else {
        (&etcd, &redb)
    };
    let n = crate::store::migrate::copy(from, into)?;
    Ok(format!(
        "{n} records copied from {} to {}, read back and compared",
        from.describe(),
        into.describe()
    ))
}
