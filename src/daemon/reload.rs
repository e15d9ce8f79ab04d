//! Reload on SIGHUP or when a profile or inventory file changes; a reload that
//! fails keeps the last good inventory. Runs until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use super::DaemonError;
use crate::brain::assets;
use crate::brain::Provisioner;
use crate::model::config::Config;
use crate::model::inventory::Inventory;

/// Serve reloads until a stop signal arrives.
pub(super) async fn until_stopped(p: &Provisioner) -> Result<(), DaemonError> {
    let sig = |k: SignalKind| signal(k).map_err(DaemonError::io("installing a signal handler"));
    let (mut hup, mut term, mut int) = (
        sig(SignalKind::hangup())?,
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
    );
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut seen = fingerprint(&p.cfg);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading profiles and inventory");
                reload(p);
                seen = fingerprint(&p.cfg);
            }
            _ = tick.tick() => {
                let now = fingerprint(&p.cfg);
                if now != seen {
                    tracing::info!("inventory files changed: reloading");
                    reload(p);
                    seen = now;
                }
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

fn reload(p: &Provisioner) {
    use crate::brain::check::render_all;
    let checked = Inventory::load(&p.cfg)
        .and_then(|inv| assets::check(&p.cfg, &inv).into_result(inv))
        .and_then(|inv| render_all(&p.cfg, &inv, &p.secrets).into_result(inv));
    match checked {
        Ok(inv) => {
            tracing::info!(
                profiles = inv.profiles.len(),
                machines = inv.machines().len(),
                "reloaded inventory"
            );
            p.replace_inventory(inv);
        }
        Err(problems) => {
            for pr in &problems.0 {
                tracing::error!("reload refused, keeping the last good inventory: {pr}");
            }
        }
    }
}

/// Modification times of everything a reload reads.
fn fingerprint(cfg: &Config) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut files = vec![cfg.machines.clone()];
    if let Ok(rd) = std::fs::read_dir(&cfg.profiles) {
        files.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let t = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
            (f, t)
        })
        .collect()
}
