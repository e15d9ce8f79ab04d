//! Holding the shared service address (`store.service_address`): one live
//! daemon at a time holds `<prefix>/service/<addr>` under its liveness lease
//! (3 s), puts the address on its interface and announces it. It lets go as
//! soon as the quorum has not answered for HOLD_WITHOUT_QUORUM, before its
//! lease can run out and a peer take the address: never two holders that
//! both think they are. A kill -9 leaves the address on the interface until
//! kiln starts again, which takes it off first.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::brain::Provisioner;
use crate::edge::vip;

/// Under the liveness lease's 3 s: the address is off before a peer can
/// claim it.
const HOLD_WITHOUT_QUORUM: Duration = Duration::from_secs(2);
const EVERY: Duration = Duration::from_millis(500);

/// Start holding when elected; None without a service address.
pub(super) fn spawn(
    p: &Arc<Provisioner>,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let addr = p.cfg.service_address()?;
    let (_, me) = p.store.peers()?;
    let p = p.clone();
    Some(tokio::spawn(async move {
        let iface = p.cfg.interface.clone();
        if vip::present(&iface, addr) {
            // Left by an earlier run that did not stop cleanly.
            match vip::remove(&iface, addr) {
                Ok(()) => {
                    tracing::info!(%addr, "service address: took off the one a previous run left")
                }
                Err(e) => tracing::error!(%addr, "service address: {e}"),
            }
        }
        let mut holding = false;
        let mut announces = 0;
        loop {
            let holder = elected(&p, addr).await;
            let mine = holder.as_deref() == Some(me.as_str());
            if mine && !holding {
                match vip::add(&iface, addr) {
                    Ok(()) => {
                        tracing::info!(%addr, interface = %iface, "service address: this daemon holds it now");
                        holding = true;
                        announces = 2;
                    }
                    Err(e) => crate::refusal!(ADD_FAILED, %addr, "service address: {e}"),
                }
            } else if mine && announces > 0 {
                // Twice more, for neighbours that missed the first.
                announces -= 1;
                let _ = vip::announce(&iface, addr);
            } else if !mine && holding {
                let why = holder.map_or("no quorum".to_string(), |h| format!("{h} holds it"));
                match vip::remove(&iface, addr) {
                    Ok(()) => tracing::warn!(%addr, "service address: let go ({why})"),
                    Err(e) => tracing::error!(%addr, "service address: letting go ({why}): {e}"),
                }
                holding = false;
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.changed() => break,
            }
        }
        if holding {
            let _ = vip::remove(&iface, addr);
            tracing::info!(%addr, "service address: let go (stopping)");
        }
    }))
}

/// Who holds `addr` now, claiming it if nobody does; None without a recent
/// quorum answer (this daemon must not hold it then) or on a store error.
async fn elected(p: &Arc<Provisioner>, addr: Ipv4Addr) -> Option<String> {
    if p.store.quorum_age()? > HOLD_WITHOUT_QUORUM {
        return None;
    }
    let store = p.store.clone();
    tokio::task::spawn_blocking(move || store.claim_service(addr))
        .await
        .ok()?
        .ok()
        .flatten()
}

static ADD_FAILED: crate::brain::ratelog::RateLog = crate::brain::ratelog::RateLog::new(1);
