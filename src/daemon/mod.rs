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

use crate::brain::assets;
use crate::brain::dhcp::policy::Port;
use crate::brain::Provisioner;
use crate::edge::dhcp::server::{self as dhcp_server, Persister};
use crate::edge::{http, tftp};
use crate::model::config::Config;
use crate::model::inventory::Inventory;
use crate::store::Store;

/// The local API's socket, in state_dir.
pub const API_SOCKET: &str = "kiln.sock";

/// Load config + inventory and check assets: what `serve` needs to start.
pub fn load(path: &Path) -> Result<(Config, Inventory), crate::model::problems::Problems> {
    let cfg = Config::load(path)?;
    let inv = Inventory::load(&cfg)?;
    let problems = assets::check(&cfg, &inv);
    problems.into_result((cfg, inv))
}

/// Render every machine's config, as `kiln check` does. Clusters whose secrets
/// do not exist yet (they are made on first start) render with throwaway ones.
pub fn check_configs(cfg: &Config, inv: &Inventory) -> crate::model::problems::Problems {
    use crate::brain::render;
    let mut problems = crate::model::problems::Problems::default();
    let mut secrets = std::collections::BTreeMap::new();
    for (name, c) in &cfg.clusters {
        let b = if c.secrets.exists() {
            crate::talos::secrets::Bundle::load(&c.secrets).map_err(|e| e.to_string())
        } else {
            crate::talos::secrets::Bundle::generate(crate::model::contract::NEWEST)
                .map_err(|e| e.to_string())
        };
        match b {
            Ok(b) => {
                secrets.insert(name.clone(), b);
            }
            Err(e) => problems.push(&c.secrets, "", e),
        }
    }
    for m in inv.machines() {
        let Some(p) = inv.profile(&m.profile) else {
            continue;
        };
        if p.cluster.is_none() {
            continue;
        }
        if let Err(e) = render::render(cfg, &secrets, m, p) {
            problems.push(
                &cfg.machines,
                &format!("{} ({})", m.hostname, m.mac),
                e.to_string(),
            );
        }
    }
    problems
}

/// Where kiln records the installer schematic a profile needs.
pub fn schematic_path(cfg: &Config, p: &crate::model::inventory::Profile) -> PathBuf {
    cfg.state_dir
        .join(p.cluster.as_deref().unwrap_or("default"))
        .join(format!("schematic-{}.yaml", p.name))
}

/// Warnings that do not stop kiln but an operator should read.
pub fn warnings(cfg: &Config, inv: &Inventory) -> Vec<String> {
    let mut w = Vec::new();
    for p in inv.profiles.values() {
        if let Some(note) = crate::model::contract::Contract::release_note(&p.talos_version) {
            w.push(format!("profile {}: {note}", p.name));
        }
        if p.stable_interface_names
            && crate::brain::ipxe::parse_minor(&p.talos_version).is_some_and(|m| m >= 10)
        {
            let image = p
                .cluster
                .as_ref()
                .and_then(|c| cfg.clusters.get(c))
                .and_then(|c| c.install_image.clone());
            if image.is_none() {
                w.push(format!(
                    "profile {}: stable_interface_names puts net.ifnames=0 on the PXE kernel line, but Talos {} installs take their kernel command line from the installer image: build one from the Image Factory schematic {} (customization.extraKernelArgs [net.ifnames=0]) and set clusters.<name>.install_image to factory.talos.dev/metal-installer/<schematic id>:{}",
                    p.name,
                    p.talos_version,
                    schematic_path(cfg, p).display(),
                    p.talos_version
                ));
            }
        }
        if p.role == crate::model::inventory::Role::Controlplane
            && cfg.default_profile.as_deref() == Some(p.name.as_str())
        {
            w.push(format!("default_profile {} is a control-plane profile: unknown machines get no config from it (control-plane configs carry CA keys)", p.name));
        }
    }
    w
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
    for w in warnings(&cfg, &inv) {
        tracing::warn!("{w}");
    }
    // The API socket first: a second kiln on this state_dir stops here, naming it.
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating state_dir {}", cfg.state_dir.display()))?;
    let api_socket = crate::edge::api::bind_socket(&cfg.state_dir.join(API_SOCKET))?;
    let store = Store::open(&cfg.state_dir)?;
    for p in inv.profiles.values().filter(|p| p.stable_interface_names) {
        let path = schematic_path(&cfg, p);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&path, crate::talos::settings::ifnames_schematic())?;
    }
    let secrets = crate::brain::render::load_or_create_secrets(&cfg)
        .map_err(|e| anyhow!("{e}\nrefusing to start"))?;
    crate::talos::clientconfig::write_talosconfig(&cfg, &inv, &secrets)
        .map_err(|e| anyhow!("writing talosconfig: {e}"))?;
    crate::talos::clientconfig::write_kubeconfig(&cfg, &secrets)
        .map_err(|e| anyhow!("writing kubeconfig: {e}"))?;
    let p = Arc::new(Provisioner::new(cfg, inv, store.clone())?.with_secrets(secrets));
    let cfg = &p.cfg;
    let (stop_tx, stop_rx) = watch::channel(false);

    let l = cfg.listen_address;
    let iface = Some(cfg.interface.as_str());
    let dhcp_sock = dhcp_server::bind_udp(SocketAddrV4::new(l, cfg.ports.dhcp), iface, true)
        .with_context(|| format!("binding DHCP on {}:{}", l, cfg.ports.dhcp))?;
    let proxy_sock = dhcp_server::bind_udp(SocketAddrV4::new(l, cfg.ports.proxy_dhcp), iface, true)
        .with_context(|| format!("binding proxyDHCP on {}:{}", l, cfg.ports.proxy_dhcp))?;
    let tftp_socks = tftp::bind(SocketAddrV4::new(l, cfg.ports.tftp))
        .with_context(|| format!("binding TFTP on {}:{}", l, cfg.ports.tftp))?;
    let http_listener = tokio::net::TcpListener::bind(SocketAddrV4::new(l, cfg.ports.http))
        .await
        .with_context(|| format!("binding HTTP on {}:{}", l, cfg.ports.http))?;
    let events_listener = tokio::net::TcpListener::bind(SocketAddrV4::new(l, cfg.ports.events))
        .await
        .with_context(|| format!("binding the events sink on {}:{}", l, cfg.ports.events))?;
    let api_tcp = if cfg.api_tcp {
        let token = crate::edge::api::api_token(&cfg.state_dir)?;
        let l = tokio::net::TcpListener::bind(SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            cfg.ports.api,
        ))
        .await
        .with_context(|| format!("binding the local API on 127.0.0.1:{}", cfg.ports.api))?;
        Some((l, token))
    } else {
        None
    };
    let mut tftp_servers = Vec::new();
    for sock in tftp_socks {
        tftp_servers.push(
            tftp::build(Arc::new(cfg.clone()), sock)
                .await
                .context("starting TFTP")?,
        );
    }

    let ra_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if cfg.ipv6_router_advertisements {
        crate::edge::ra::spawn(&cfg.interface, ra_stop.clone());
    }

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
    for (i, tftp_server) in tftp_servers.into_iter().enumerate() {
        // async-tftp runs every transfer of a server on one executor, polled by
        // whoever polls `serve`: one server per core, each on its own thread
        // (async-io's block_on drives the reactor there), the kernel spreading
        // requests over their SO_REUSEPORT sockets (bench/tftp.sh: one server
        // on a tokio task was 0.85x tftpd-hpa on 2 cores).
        let mut stop = stop_rx.clone();
        std::thread::Builder::new()
            .name(format!("tftp-{i}"))
            .spawn(move || {
                async_io::block_on(futures_lite::future::or(
                    async {
                        if let Err(e) = tftp_server.serve().await {
                            tracing::error!("tftp: {e}")
                        }
                    },
                    async {
                        let _ = stop.changed().await;
                    },
                ))
            })
            .context("starting the TFTP thread")?;
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

    let boot = crate::brain::bootstrap::Bootstrapper::new(p.clone());
    {
        let mut stop = stop_rx.clone();
        let b = boot.clone();
        let sink = crate::edge::events::Sink {
            p: p.clone(),
            on_change: Some(Arc::new(move |r| b.on_change(r))),
        };
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = crate::edge::events::serve(events_listener, sink, shutdown).await {
                tracing::error!("events sink: {e}");
            }
        });
    }
    {
        let router = crate::edge::api::router(crate::edge::api::ApiState {
            p: p.clone(),
            b: boot.clone(),
        });
        spawn_api(
            &mut tasks,
            api_socket,
            router.clone(),
            stop_rx.clone(),
            "socket",
        );
        if let Some((listener, token)) = api_tcp {
            let r = crate::edge::api::with_bearer(router, token);
            spawn_api(&mut tasks, listener, r, stop_rx.clone(), "TCP");
        }
    }
    boot.resume();
    crate::brain::replace::resume(p.clone());

    let mode = match &cfg.dhcp {
        crate::model::config::DhcpMode::Proxy => "proxy",
        crate::model::config::DhcpMode::Full(_) => "full",
    };
    tracing::info!(
        interface = %cfg.interface, server = %cfg.server_address, dhcp = mode,
        machines = p.inventory().machines().len(),
        "kiln ready: DHCP :{}, proxyDHCP :{}, TFTP :{}, HTTP :{}, events :{}, API {}{}",
        cfg.ports.dhcp, cfg.ports.proxy_dhcp, cfg.ports.tftp, cfg.ports.http, cfg.ports.events,
        cfg.state_dir.join(API_SOCKET).display(),
        if cfg.api_tcp { format!(" and 127.0.0.1:{} (bearer token)", cfg.ports.api) } else { String::new() }
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
    ra_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// `kiln render`: the config a MAC would be served, with the real secrets.
pub fn render_for(path: &Path, mac: &str) -> Result<String> {
    let (cfg, inv) = load(path).map_err(|p| anyhow!("{p}"))?;
    let mac: crate::model::mac::Mac = mac.parse()?;
    let m = inv
        .machine(&mac)
        .ok_or_else(|| anyhow!("{mac} is not in {}", cfg.machines.display()))?;
    let p = inv
        .profile(&m.profile)
        .ok_or_else(|| anyhow!("profile {:?} not found", m.profile))?;
    let cluster = p.cluster.clone().ok_or_else(|| {
        anyhow!(
            "profile {} belongs to no cluster: define clusters: in {}",
            p.name,
            cfg.file.display()
        )
    })?;
    let spec = &cfg.clusters[&cluster];
    if !spec.secrets.exists() {
        return Err(anyhow!(
            "secrets for cluster {cluster} do not exist yet ({}): `kiln serve` makes them on first start, or run `kiln gen secrets -o {}`",
            spec.secrets.display(),
            spec.secrets.display()
        ));
    }
    let mut secrets = std::collections::BTreeMap::new();
    secrets.insert(
        cluster.clone(),
        crate::talos::secrets::Bundle::load(&spec.secrets)?,
    );
    let docs = crate::brain::render::render(&cfg, &secrets, m, p)?;
    Ok(crate::model::yaml::to_yaml(&docs))
}

/// Serve the local API on `listener` until the stop signal.
fn spawn_api<L>(
    tasks: &mut tokio::task::JoinSet<()>,
    listener: L,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tasks.spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("local API ({what}): {e}");
        }
    });
}
