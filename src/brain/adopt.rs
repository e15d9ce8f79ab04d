//! Adoption, for racks where nobody types MACs: machines are marked failed, and
//! when armed, the next unknown MAC that PXE boots takes one over through the
//! same guarded replacement as `kiln replace`.

use std::sync::Arc;

use super::error::BrainError;
use super::replace::replace;
use super::Provisioner;
use crate::model::mac::Mac;
use crate::store::adoption::AdoptState;

fn adopt_state(p: &Provisioner) -> AdoptState {
    p.store.adoption().get().unwrap_or_default()
}

fn set_adopt(p: &Provisioner, f: impl FnMut(&mut AdoptState)) -> Result<AdoptState, BrainError> {
    Ok(p.store.adoption().update(f)?)
}

/// `kiln machines mark-failed HOST`.
pub(crate) fn mark_failed(p: &Provisioner, hostname: &str) -> Result<(), BrainError> {
    let inv = p.inventory();
    let m = inv
        .machine_by_name(hostname)
        .ok_or_else(|| format!("{hostname} is not in the inventory"))?;
    let host = m.hostname.clone();
    set_adopt(p, |s| {
        if !s.failed.contains(&host) {
            s.failed.push(host.clone());
        }
    })?;
    let _ = p.note(
        m.mac,
        &host,
        super::State::Discovered,
        Some("marked failed".into()),
        None,
    );
    tracing::info!(hostname = %host, "marked failed");
    Ok(())
}

/// `kiln replace --adopt [HOST]`: arm adoption (marking HOST failed first).
pub(crate) fn arm_adoption(p: &Provisioner, hostname: Option<&str>) -> Result<String, BrainError> {
    if let Some(h) = hostname {
        mark_failed(p, h)?;
    }
    let s = set_adopt(p, |s| s.armed = !s.failed.is_empty())?;
    if !s.armed {
        return Err(
            "no machine is marked failed: `kiln machines mark-failed HOST` first, or name one"
                .into(),
        );
    }
    Ok(format!(
        "the next unknown machine that PXE boots takes over {}\n",
        s.failed[0]
    ))
}

static ADOPTING: std::sync::Mutex<Option<Mac>> = std::sync::Mutex::new(None);

/// DHCP saw an unknown PXE client: if adoption is armed, it takes over the
/// first failed machine (the whole replacement, quorum checks included).
pub(crate) fn on_unknown_pxe(p: Arc<Provisioner>, mac: Mac) {
    let s = adopt_state(&p);
    let Some(host) = s.failed.first().cloned().filter(|_| s.armed) else {
        return;
    };
    {
        let mut busy = ADOPTING.lock().unwrap_or_else(|e| e.into_inner());
        if busy.is_some() {
            return;
        }
        *busy = Some(mac);
    }
    tracing::info!(%mac, hostname = %host, "adopt: unknown PXE client takes over a failed machine");
    tokio::spawn(async move {
        match replace(p.clone(), &host, mac, false).await {
            Ok(_) => {
                let h = host.clone();
                let _ = set_adopt(&p, move |s| {
                    s.failed.retain(|x| *x != h);
                    s.armed = !s.failed.is_empty() && s.armed;
                });
                tracing::info!(%mac, hostname = %host, "adopt: done; the box boots as {host} on its next DHCP attempt");
            }
            Err(e) => tracing::error!(%mac, hostname = %host, "adopt refused: {e}"),
        }
        *ADOPTING.lock().unwrap_or_else(|e| e.into_inner()) = None;
    });
}
