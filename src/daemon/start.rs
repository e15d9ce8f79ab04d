//! Start-up: load and check everything, claim the state_dir (the API socket
//! first), open the store, load or make the secrets, bind every listener.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use super::DaemonError;
use crate::brain::check::{load, schematic_path, warnings};
use crate::brain::Provisioner;
use crate::edge::dhcp::server as dhcp_server;
use crate::edge::tftp;
use crate::model::config::Config;
use crate::store::Store;

/// Load, check and claim: the brain, ready to be served.
pub(super) fn prepare(
    config_path: &Path,
) -> Result<(Arc<Provisioner>, Store, UnixListener), DaemonError> {
    let (cfg, inv) = load(config_path)?;
    for w in warnings(&cfg, &inv) {
        tracing::warn!("{w}");
    }
    // The API socket first: a second kiln on this state_dir stops here, naming it.
    std::fs::create_dir_all(&cfg.state_dir).map_err(DaemonError::io(format!(
        "creating state_dir {}",
        cfg.state_dir.display()
    )))?;
    let api_socket = crate::edge::api::bind_socket(&cfg.api_socket())?;
    let store = Store::open(&cfg.state_dir)?;
    for p in inv.profiles.values().filter(|p| p.stable_interface_names) {
        let path = schematic_path(&cfg, p);
        let what = format!("writing {}", path.display());
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(DaemonError::io(what.clone()))?;
        }
        std::fs::write(&path, crate::talos::settings::ifnames_schematic())
            .map_err(DaemonError::io(what))?;
    }
    let secrets = crate::brain::render::load_or_create_secrets(&cfg)
        .map_err(|e| DaemonError::Setup(format!("{e}\nrefusing to start")))?;
    crate::talos::clientconfig::write_talosconfig(&cfg, &inv, &secrets)
        .map_err(|e| DaemonError::Setup(format!("writing talosconfig: {e}")))?;
    crate::talos::clientconfig::write_kubeconfig(&cfg, &secrets)
        .map_err(|e| DaemonError::Setup(format!("writing kubeconfig: {e}")))?;
    let p = Provisioner::new(cfg, inv, store.clone())?.with_secrets(secrets);
    Ok((Arc::new(p), store, api_socket))
}

/// Every socket kiln serves, bound before anything is served (a port in use
/// stops kiln, naming it).
pub(super) struct Listeners {
    pub(super) dhcp: std::net::UdpSocket,
    pub(super) proxy: std::net::UdpSocket,
    pub(super) tftp: Vec<std::net::UdpSocket>,
    pub(super) http: TcpListener,
    pub(super) events: TcpListener,
    pub(super) api_socket: UnixListener,
    /// The opt-in TCP API and its bearer token.
    pub(super) api_tcp: Option<(TcpListener, String)>,
}

impl Listeners {
    pub(super) async fn bind(cfg: &Config, api_socket: UnixListener) -> Result<Self, DaemonError> {
        let l = cfg.listen_address;
        let at = |what: &str, port: u16| format!("binding {what} on {l}:{port}");
        let iface = Some(cfg.interface.as_str());
        let ports = &cfg.ports;
        let dhcp = dhcp_server::bind_udp(SocketAddrV4::new(l, ports.dhcp), iface, true)
            .map_err(DaemonError::io(at("DHCP", ports.dhcp)))?;
        let proxy = dhcp_server::bind_udp(SocketAddrV4::new(l, ports.proxy_dhcp), iface, true)
            .map_err(DaemonError::io(at("proxyDHCP", ports.proxy_dhcp)))?;
        let tftp = tftp::bind(SocketAddrV4::new(l, ports.tftp))
            .map_err(DaemonError::io(at("TFTP", ports.tftp)))?;
        let http = TcpListener::bind(SocketAddrV4::new(l, ports.http))
            .await
            .map_err(DaemonError::io(at("HTTP", ports.http)))?;
        let events = TcpListener::bind(SocketAddrV4::new(l, ports.events))
            .await
            .map_err(DaemonError::io(at("the events sink", ports.events)))?;
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
            api_socket,
            api_tcp,
        })
    }
}
