//! Wires the servers together: load and validate, bind every socket, tell systemd
//! we are ready, then serve until SIGTERM/SIGINT. SIGHUP, or a change to the
//! profile or inventory files, reloads them; a reload that fails keeps the last
//! good inventory and logs why.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::dhcp::policy::Port;
use crate::dhcp::server::{self as dhcp_server, Persister};
use crate::inventory::Inventory;
use crate::provision::Provisioner;
use crate::store::Store;
use crate::{assets, http, tftp};

/// Load config + inventory and check assets: the whole of `kiln check`.
pub fn load(path: &Path) -> Result<(Config, Inventory), crate::problems::Problems> {
    let cfg = Config::load(path)?;
    let inv = Inventory::load(&cfg)?;
    let problems = assets::check(&cfg, &inv);
    problems.into_result((cfg, inv))
}

fn reload(p: &Provisioner) {
    match Inventory::load(&p.cfg).and_then(|inv| assets::check(&p.cfg, &inv).into_result(inv)) {
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

pub async fn serve(config_path: &Path) -> Result<()> {
    let (cfg, inv) = load(config_path).map_err(|p| anyhow!("{p}\nrefusing to start"))?;
    let store = Store::open(&cfg.state_dir)?;
    let p = Arc::new(Provisioner::new(cfg, inv, store.clone())?);
    let cfg = &p.cfg;
    let (stop_tx, stop_rx) = watch::channel(false);

    let l = cfg.listen_address;
    let iface = Some(cfg.interface.as_str());
    let dhcp_sock = dhcp_server::bind_udp(SocketAddrV4::new(l, cfg.ports.dhcp), iface, true)
        .with_context(|| format!("binding DHCP on {}:{}", l, cfg.ports.dhcp))?;
    let proxy_sock = dhcp_server::bind_udp(SocketAddrV4::new(l, cfg.ports.proxy_dhcp), iface, true)
        .with_context(|| format!("binding proxyDHCP on {}:{}", l, cfg.ports.proxy_dhcp))?;
    let tftp_sock = std::net::UdpSocket::bind(SocketAddrV4::new(l, cfg.ports.tftp))
        .with_context(|| format!("binding TFTP on {}:{}", l, cfg.ports.tftp))?;
    let http_listener = tokio::net::TcpListener::bind(SocketAddrV4::new(l, cfg.ports.http))
        .await
        .with_context(|| format!("binding HTTP on {}:{}", l, cfg.ports.http))?;
    let tftp_server = tftp::build(Arc::new(cfg.clone()), tftp_sock)
        .await
        .context("starting TFTP")?;

    let persister = Persister::start(store);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(dhcp_server::serve(
        tokio::net::UdpSocket::from_std(dhcp_sock)?,
        Port::Dhcp,
        p.clone(),
        persister.clone(),
        stop_rx.clone(),
    ));
    tasks.spawn(dhcp_server::serve(
        tokio::net::UdpSocket::from_std(proxy_sock)?,
        Port::Proxy,
        p.clone(),
        persister,
        stop_rx.clone(),
    ));
    {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::select! {
                r = tftp_server.serve() => if let Err(e) = r { tracing::error!("tftp: {e}") },
                _ = stop.changed() => {}
            }
        });
    }
    {
        let mut stop = stop_rx.clone();
        let p = p.clone();
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = http::serve(http_listener, p, shutdown).await {
                tracing::error!("http: {e}");
            }
        });
    }

    let mode = match &cfg.dhcp {
        crate::config::DhcpMode::Proxy => "proxy",
        crate::config::DhcpMode::Full(_) => "full",
    };
    tracing::info!(
        interface = %cfg.interface, server = %cfg.server_address, dhcp = mode,
        machines = p.inventory().machines().len(),
        "kiln ready: DHCP :{}, proxyDHCP :{}, TFTP :{}, HTTP :{}",
        cfg.ports.dhcp, cfg.ports.proxy_dhcp, cfg.ports.tftp, cfg.ports.http
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut seen = fingerprint(cfg);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading profiles and inventory");
                reload(&p);
                seen = fingerprint(cfg);
            }
            _ = tick.tick() => {
                let now = fingerprint(cfg);
                if now != seen {
                    tracing::info!("inventory files changed: reloading");
                    reload(&p);
                    seen = now;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
