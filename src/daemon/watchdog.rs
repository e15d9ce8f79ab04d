//! systemd's watchdog (`WatchdogSec=` in the unit): kiln pings it only while a
//! store health check (a durable write and a read) succeeds, so a store that
//! hangs (a stuck fsync, a dead disk) gets kiln restarted even when nothing
//! returns an error.

use std::time::Duration;

use crate::store::Store;

/// Start the pings if systemd asked for them; the task ends with the daemon.
pub(super) fn spawn(store: Store) -> tokio::task::AbortHandle {
    let period = sd_notify::watchdog_enabled();
    tokio::spawn(async move {
        let Some(period) = period else {
            return;
        };
        let every = (period / 2).max(Duration::from_millis(100));
        tracing::info!(every = ?every, "systemd watchdog: pinging after each store check");
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let s = store.clone();
            match crate::store::blocking(move || s.health_check()).await {
                Ok(()) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                // The failure latches the store; serve() stops on it.
                Err(e) => tracing::error!("store health check failed: {e}"),
            }
        }
    })
    .abort_handle()
}
