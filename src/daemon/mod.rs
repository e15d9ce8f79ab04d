//! Wires the servers together: load and validate, bind every socket, tell systemd
//! we are ready, then serve until SIGTERM/SIGINT. SIGHUP, or a change to the
//! profile or inventory files, reloads them; a reload that fails keeps the last
//! good inventory and logs why. May import: edge, brain, talos, store, model.

mod reload;
mod start;
pub(crate) use start::lock_state_dir;
mod tasks;
mod vip;
mod watchdog;

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use crate::brain::bootstrap::Bootstrapper;
use crate::model::config::DhcpMode;

/// Why `kiln serve` stopped before serving.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    #[error("{0}\nrefusing to start")]
    Invalid(#[from] crate::model::problems::Problems),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Api(#[from] crate::edge::api::ApiSetupError),
    #[error("{0}")]
    Setup(String),
    #[error(
        "the store failed ({0}); stopping so the service manager restarts kiln on a fresh open"
    )]
    StoreFailed(String),
    #[error("{0} stopped; stopping kiln so the service manager restarts it")]
    Died(String),
}

impl DaemonError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
        let what = what.into();
        move |source| DaemonError::Io { what, source }
    }
}

pub(crate) async fn serve(config_path: &Path) -> Result<(), DaemonError> {
    let start::Prepared {
        p,
        store,
        listeners,
        lock,
    } = start::prepare(config_path).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let boot = Bootstrapper::new(p.clone());
    let mut running = tasks::spawn(&p, &boot, listeners, &stop_rx).await?;
    boot.resume();
    boot.keep_resuming();
    let service = vip::spawn(&p, stop_rx.clone());
    crate::brain::replace::resume(p.clone());
    announce(&p.cfg, p.inventory().machines().len());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = watchdog::spawn(store.clone());

    // A dead store or a dead server stops kiln (non-zero: systemd restarts
    // it); serving on without them would look healthy and answer nothing.
    let ended = tokio::select! {
        r = reload::until_stopped(&p) => r,
        first = store.failed() => Err(DaemonError::StoreFailed(first)),
        Some(what) = running.died() => Err(DaemonError::Died(what)),
    };
    watchdog.abort();

    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    // The service address goes before the liveness key, so a peer that
    // takes it over never meets it still on this host.
    if let Some(s) = service {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    // Peers on a shared store take this daemon's DHCP clients from now on.
    crate::store::blocking(move || {
        store.leave();
        Ok::<(), crate::store::StoreError>(())
    })
    .await
    .ok();
    running.stop_ra();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while running.tasks.join_next().await.is_some() {}
    })
    .await;
    drop(lock);
    ended
}

fn announce(cfg: &crate::model::config::Config, machines: usize) {
    let mode = match &cfg.dhcp {
        DhcpMode::Proxy => "proxy",
        DhcpMode::Full(_) => "full",
    };
    let tcp = if cfg.api_tcp {
        format!(" and 127.0.0.1:{} (bearer token)", cfg.ports.api)
    } else {
        String::new()
    };
    tracing::info!(
        interface = %cfg.interface, server = %cfg.server_address, dhcp = mode, machines,
        "kiln ready: DHCP :{}, proxyDHCP :{}, TFTP :{}, HTTP :{}, events :{}, kernel logs :{}, API {}{tcp}",
        cfg.ports.dhcp, cfg.ports.proxy_dhcp, cfg.ports.tftp, cfg.ports.http, cfg.ports.events, cfg.ports.kmsg,
        cfg.api_socket().display(),
    );
}
