//! Start-up: load and check everything, claim the state_dir (the API socket
//! first), open the store, load or make the secrets, bind every listener,
//! then build the brain with the ports actually bound (port 0 is any port).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use super::DaemonError;
use crate::brain::check::{load, warnings};
use crate::brain::Provisioner;
use crate::edge::dhcp::server as dhcp_server;
use crate::edge::tftp;
use crate::model::config::Config;
use crate::store::Store;

/// Load, check and claim, bind: the brain, ready to be served.
pub(super) async fn prepare(config_path: &Path) -> Result<Prepared, DaemonError> {
    let (cfg, inv) = load(config_path)?;
    for w in warnings(&cfg, &inv) {
        tracing::warn!("{w}");
    }
    // The lock first: a second kiln on this state_dir stops here, naming it.
    std::fs::create_dir_all(&cfg.state_dir).map_err(DaemonError::io(format!(
        "creating state_dir {}",
        cfg.state_dir.display()
    )))?;
    let lock = lock_state_dir(&cfg.state_dir)?;
    let api_socket = crate::edge::api::bind_socket(&cfg.api_socket())?;
    let store = Store::open_for(&cfg)?;
    let secrets = crate::brain::render::load_or_create_secrets(&cfg, &store)
        .map_err(|e| DaemonError::Setup(format!("{e}\nrefusing to start")))?;
    crate::brain::check::render_all(&cfg, &inv, &secrets).into_result(())?;
    crate::talos::clientconfig::write_talosconfig(&cfg, &inv, &secrets)
        .map_err(|e| DaemonError::Setup(format!("writing talosconfig: {e}")))?;
    crate::talos::clientconfig::write_kubeconfig(&cfg, &secrets)
        .map_err(|e| DaemonError::Setup(format!("writing kubeconfig: {e}")))?;
    let listeners = Listeners::bind(&cfg, api_socket).await?;
    // Everything kiln tells machines (URLs, the events sink) and operators
    // names the ports it holds, not the zeros the config may have asked for.
    let mut cfg = cfg;
    cfg.ports = listeners.ports(&cfg.ports)?;
    write_ports(&cfg)?;
    let p = Provisioner::new(cfg, inv, store.clone())?.with_secrets(secrets);
    Ok(Prepared {
        p: Arc::new(p),
        store,
        listeners,
        lock,
    })
}

/// What `prepare` claimed; the state_dir lock is held while this lives.
pub(super) struct Prepared {
    pub(super) p: Arc<Provisioner>,
    pub(super) store: Store,
    pub(super) listeners: Listeners,
    pub(super) lock: std::fs::File,
}

/// `state_dir/ports.json`: the ports this kiln bound, for scripts and tests
/// that ran it on port 0 (replaced atomically; no secret in it).
fn write_ports(cfg: &Config) -> Result<(), DaemonError> {
    let path = cfg.state_dir.join("ports.json");
    let tmp = cfg.state_dir.join("ports.json.tmp");
    let what = format!("writing {}", path.display());
    let json = serde_json::to_vec_pretty(&cfg.ports).expect("ports serialise");
    std::fs::write(&tmp, json)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(DaemonError::io(what))
}

/// Hold an exclusive lock on `state_dir/kiln.lock` for the daemon's life (the
/// kernel drops it when the process ends, however it ends).
pub(crate) fn lock_state_dir(dir: &Path) -> Result<std::fs::File, DaemonError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("kiln.lock");
    let what = format!("locking {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(DaemonError::io(what.clone()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            return Err(DaemonError::Setup(format!(
                "{}: another kiln{who} is serving this state_dir; stop it first (two daemons on one state would hand out the same addresses)",
                dir.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(DaemonError::io(what)(e)),
    }
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| writeln!(f, "{}", std::process::id()))
        .map_err(DaemonError::io(what))?;
    Ok(f)
}

/// Every socket kiln serves, bound before anything is served (a port in use
/// stops kiln, naming it).
pub(super) struct Listeners {
    pub(super) dhcp: std::net::UdpSocket,
    pub(super) proxy: std::net::UdpSocket,
    pub(super) tftp: std::net::UdpSocket,
    pub(super) http: TcpListener,
    pub(super) events: TcpListener,
    pub(super) kmsg: TcpListener,
    pub(super) api_socket: UnixListener,
    /// The opt-in TCP API and its bearer token.
    pub(super) api_tcp: Option<(TcpListener, String)>,
}

impl Listeners {
    /// `asked` with every port as bound (a 0 becomes the kernel's pick).
    fn ports(
        &self,
        asked: &crate::model::config::Ports,
    ) -> Result<crate::model::config::Ports, DaemonError> {
        let io = |what: &str| DaemonError::io(format!("reading the {what} socket's address"));
        let udp = |s: &std::net::UdpSocket, what: &str| {
            s.local_addr().map(|a| a.port()).map_err(io(what))
        };
        let tcp = |s: &TcpListener, what: &str| s.local_addr().map(|a| a.port()).map_err(io(what));
        Ok(crate::model::config::Ports {
            dhcp: udp(&self.dhcp, "DHCP")?,
            proxy_dhcp: udp(&self.proxy, "proxyDHCP")?,
            tftp: udp(&self.tftp, "TFTP")?,
            http: tcp(&self.http, "HTTP")?,
            events: tcp(&self.events, "events")?,
            kmsg: tcp(&self.kmsg, "kernel log")?,
            api: match &self.api_tcp {
                Some((l, _)) => tcp(l, "API")?,
                None => asked.api,
            },
            talos_api: asked.talos_api,
        })
    }

    pub(super) async fn bind(cfg: &Config, api_socket: UnixListener) -> Result<Self, DaemonError> {
        let l = cfg.listen_address;
        let at = |what: &str, port: u16| format!("binding {what} on {l}:{port}");
        let iface = Some(cfg.interface.as_str());
        let ports = &cfg.ports;
        // Full mode owns port 67 on the interface: another DHCP server there
        // is refused. Proxy mode shares it with the LAN's DHCP server, which
        // may run on this host.
        let shared = matches!(cfg.dhcp, crate::model::config::DhcpMode::Proxy);
        let in_use = |what: &str, port: u16| {
            let at = at(what, port);
            move |e: std::io::Error| {
                let what = if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!("{at} (another DHCP server already listens there; stop it, or run kiln in proxy mode beside it)")
                } else {
                    at
                };
                DaemonError::Io { what, source: e }
            }
        };
        let dhcp = dhcp_server::bind_udp(SocketAddrV4::new(l, ports.dhcp), iface, true, shared)
            .map_err(in_use("DHCP", ports.dhcp))?;
        let proxy =
            dhcp_server::bind_udp(SocketAddrV4::new(l, ports.proxy_dhcp), iface, true, false)
                .map_err(in_use("proxyDHCP", ports.proxy_dhcp))?;
        let tftp = tftp::bind(SocketAddrV4::new(l, ports.tftp))
            .map_err(DaemonError::io(at("TFTP", ports.tftp)))?;
        let http = TcpListener::bind(SocketAddrV4::new(l, ports.http))
            .await
            .map_err(DaemonError::io(at("HTTP", ports.http)))?;
        let events = TcpListener::bind(SocketAddrV4::new(l, ports.events))
            .await
            .map_err(DaemonError::io(at("the events sink", ports.events)))?;
        let kmsg = TcpListener::bind(SocketAddrV4::new(l, ports.kmsg))
            .await
            .map_err(DaemonError::io(at("the kernel log receiver", ports.kmsg)))?;
        let api_tcp = if cfg.api_tcp {
            let token = crate::edge::api::api_token(&cfg.state_dir)?;
            let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ports.api))
                .await
                .map_err(DaemonError::io(format!(
                    "binding the local API on 127.0.0.1:{}",
                    ports.api
                )))?;
            Some((l, token))
        } else {
            None
        };
        Ok(Listeners {
            dhcp,
            proxy,
            tftp,
            http,
            events,
            kmsg,
            api_socket,
            api_tcp,
        })
    }
}
