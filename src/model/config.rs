//! kiln.yaml: the wire format (what the operator writes, through figment with
//! `KILN_` environment overrides) and the validated model the daemon runs on.
//!
//! Environment mapping: `KILN_<KEY>` sets a top-level key, `__` descends into a
//! section: `KILN_DHCP__MODE=full`, `KILN_PORTS__HTTP=8081`,
//! `KILN_SERVER_ADDRESS=10.0.0.2`. Lists take YAML/TOML-ish values:
//! `KILN_DHCP__DNS=[10.0.0.1,10.0.0.2]`. `KILN_LOG` (log filter) and
//! `KILN_CONFIG` (the config path) are not config keys.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::wire::{ClusterWire, DhcpWire, Wire};
pub use super::wire::{DhcpModeName, Limits, Ports, UnknownMachines};
use crate::model::problems::Problems;

/// Where Debian's `ipxe` package installs its binaries; used when boot_assets lacks them.
pub const DEFAULT_IPXE_DIRS: &[&str] = &["/usr/lib/ipxe"];

/// One cluster kiln provisions: its endpoint, versions and secrets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    /// `https://host:6443`: the VIP, a DNS name or a load balancer.
    pub endpoint: String,
    pub talos_version: Option<String>,
    pub kubernetes_version: Option<String>,
    /// Generated (0600) on first start when absent.
    pub secrets: PathBuf,
    pub additional_sans: Vec<String>,
    pub dns_domain: String,
    pub install_image: Option<String>,
    /// Extensions and schematic kernel arguments every profile of the cluster
    /// gets before its own.
    pub extensions: Vec<String>,
    pub extra_kernel_args: Vec<String>,
    /// Bootstrap etcd when the first control plane runs (else `kiln bootstrap`).
    pub auto_bootstrap: bool,
}

/// One address pool: a subnet with its dynamic range and the options handed out in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub net: Ipv4Net,
    pub range: (Ipv4Addr, Ipv4Addr),
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl Subnet {
    pub fn in_range(&self, ip: Ipv4Addr) -> bool {
        ip >= self.range.0 && ip <= self.range.1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullDhcp {
    /// The first subnet is the one on `interface`; the rest are reached through relays.
    pub subnets: Vec<Subnet>,
    pub domain: Option<String>,
    pub lease_time: Duration,
    /// How long an address a client DECLINEd (someone else answers on it)
    /// stays out of the pool.
    pub decline_probation: Duration,
    /// Ping an address not known to be the client's before offering it, and
    /// wait this long for an answer (None: no check).
    pub ping_check: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpMode {
    Proxy,
    Full(FullDhcp),
}

/// The validated configuration; every path is absolute or relative to the working
/// directory (resolved against the config file's folder).
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub interface: String,
    pub server_address: Ipv4Addr,
    pub listen_address: Ipv4Addr,
    pub ports: Ports,
    pub dhcp: DhcpMode,
    pub unknown_machines: UnknownMachines,
    pub default_profile: Option<String>,
    pub state_dir: PathBuf,
    pub boot_assets: PathBuf,
    pub ipxe_dirs: Vec<PathBuf>,
    /// Image Factory base URL, e.g. `https://factory.talos.dev` (no trailing `/`).
    pub factory_url: String,
    pub profiles: PathBuf,
    pub machines: PathBuf,
    pub boot_token_ttl: Duration,
    pub clusters: std::collections::BTreeMap<String, ClusterSpec>,
    /// Answer IPv6 router solicitations on `interface` with an advertisement
    /// that configures nothing (`ra.rs`): iPXE then stops waiting for IPv6.
    /// Default: on in full DHCP mode, off in proxy mode.
    pub ipv6_router_advertisements: bool,
    /// Also serve the local API on 127.0.0.1:`ports.api`, behind the bearer
    /// token in `state_dir/api-token` (off: the Unix socket only).
    pub api_tcp: bool,
    pub limits: Limits,
    /// Where the state lives (`store:`): redb under state_dir, or etcd.
    pub store: super::store::StoreSettings,
}

impl Config {
    /// The factory's host (and port), as installer image references name it.
    pub fn factory_host(&self) -> &str {
        self.factory_url
            .split_once("://")
            .map_or(self.factory_url.as_str(), |(_, h)| h)
    }

    /// The local API's Unix socket, in state_dir.
    pub fn api_socket(&self) -> PathBuf {
        self.state_dir.join("kiln.sock")
    }

    /// The shared service address (`store.service_address`), if any.
    pub fn service_address(&self) -> Option<Ipv4Addr> {
        match &self.store {
            super::store::StoreSettings::Etcd(e) => e.service_address,
            super::store::StoreSettings::Redb => None,
        }
    }

    /// The address machines are told for TFTP, HTTP, configs, events and
    /// kernel logs: the shared service address, else server_address.
    pub fn advertised_address(&self) -> Ipv4Addr {
        self.service_address().unwrap_or(self.server_address)
    }

    pub fn http_base(&self) -> String {
        format!("http://{}:{}", self.advertised_address(), self.ports.http)
    }

    /// `tcp://host:port` of kiln's kernel log receiver, as Talos dials it.
    pub fn kmsg_url(&self) -> String {
        format!("tcp://{}:{}", self.advertised_address(), self.ports.kmsg)
    }

    /// `host:port` of kiln's events sink, as Talos dials it.
    pub fn events_endpoint(&self) -> String {
        format!("{}:{}", self.advertised_address(), self.ports.events)
    }

    /// Load `path` with `KILN_*` overrides and validate it. All problems found are
    /// reported together, each naming the file and the key.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let mut problems = Problems::default();
        if !path.is_file() {
            problems.push(path, "", "config file not found");
            return Err(problems);
        }
        let Some(wire) = super::wire::read(path, &mut problems) else {
            return Err(problems);
        };
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let rel = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        check_basics(path, &wire, &mut problems);
        let dhcp = dhcp_mode(path, &wire, &mut problems);
        let boot_token_ttl =
            parse_duration(path, "boot_token_ttl", &wire.boot_token_ttl, &mut problems)
                .unwrap_or(Duration::from_secs(900));
        let state_dir = rel(&wire.state_dir);
        let mut clusters = std::collections::BTreeMap::new();
        for (name, c) in &wire.clusters {
            let secrets = c
                .secrets
                .as_ref()
                .map(|p| rel(p))
                .unwrap_or_else(|| state_dir.join(name).join("secrets.yaml"));
            let spec = cluster_spec(path, name, c, secrets, &mut problems);
            clusters.insert(name.clone(), spec);
        }
        let mut store = wire.store.settings(rel).unwrap_or_else(|(key, why)| {
            problems.push(path, key, why);
            Default::default()
        });
        if let super::store::StoreSettings::Etcd(e) = &mut store {
            if let (Some(vip), DhcpMode::Full(f)) = (e.service_address, &dhcp) {
                if let Some(sn) = f.subnets.iter().find(|sn| sn.in_range(vip)) {
                    problems.push(
                        path,
                        "store.service_address",
                        format!(
                            "{vip} is inside the DHCP range {}-{}: the pool would hand it out",
                            sn.range.0, sn.range.1
                        ),
                    );
                }
            }
            if e.service_address == Some(wire.server_address) {
                problems.push(
                    path,
                    "store.service_address",
                    format!("{} is server_address: the service address is another one, that moves between daemons", wire.server_address),
                );
            }
            if e.segment.is_empty() {
                e.segment = match &dhcp {
                    DhcpMode::Full(f) => {
                        let nets: Vec<String> =
                            f.subnets.iter().map(|s| s.net.to_string()).collect();
                        nets.join(",")
                    }
                    DhcpMode::Proxy => "proxy".into(),
                };
            }
        }
        problems.into_result(Config {
            file: path.to_path_buf(),
            interface: wire.interface,
            server_address: wire.server_address,
            listen_address: wire.listen_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
            ports: wire.ports,
            unknown_machines: wire.unknown_machines,
            default_profile: wire.default_profile,
            state_dir,
            boot_assets: rel(&wire.boot_assets),
            factory_url: wire.factory_url.trim_end_matches('/').to_string(),
            ipxe_dirs: wire
                .ipxe_dirs
                .unwrap_or_else(|| DEFAULT_IPXE_DIRS.iter().map(PathBuf::from).collect())
                .iter()
                .map(|p| rel(p))
                .collect(),
            profiles: rel(&wire.profiles),
            machines: rel(&wire.machines),
            boot_token_ttl,
            clusters,
            api_tcp: wire.api_tcp,
            limits: wire.limits,
            store,
            ipv6_router_advertisements: wire
                .ipv6_router_advertisements
                .unwrap_or(matches!(dhcp, DhcpMode::Full(_))),
            dhcp,
        })
    }
}

/// Top-level keys that need no context: interface, server address, ports.
fn check_basics(path: &Path, wire: &Wire, problems: &mut Problems) {
    let f = &wire.factory_url;
    let host = f
        .strip_prefix("https://")
        .or_else(|| f.strip_prefix("http://"))
        .map(|h| h.trim_end_matches('/'));
    if host.is_none_or(|h| h.is_empty() || h.contains(['/', '?', '#', ' '])) {
        problems.push(
            path,
            "factory_url",
            format!("{f:?} is not an Image Factory URL like https://factory.talos.dev"),
        );
    }
    if wire.interface.trim().is_empty() {
        problems.push(path, "interface", "must name the interface DHCP listens on");
    }
    if wire.server_address.is_unspecified() || wire.server_address.is_broadcast() {
        problems.push(
            path,
            "server_address",
            format!(
                "{} cannot be reached by clients; give this host's address on the boot network",
                wire.server_address
            ),
        );
    }
    let p = wire.ports;
    // Port 0 is any port: kiln binds what the kernel gives and reports it
    // (its ready line, state_dir/ports.json). Two zeros never clash.
    if p.dhcp == p.proxy_dhcp && p.dhcp != 0 && matches!(wire.dhcp.mode, DhcpModeName::Proxy) {
        problems.push(path, "ports.proxy_dhcp", "must differ from ports.dhcp");
    }
}

fn dhcp_mode(path: &Path, wire: &Wire, problems: &mut Problems) -> DhcpMode {
    match wire.dhcp.mode {
        DhcpModeName::Proxy => {
            for (set, key) in [
                (wire.dhcp.subnet.is_some(), "dhcp.subnet"),
                (wire.dhcp.range.is_some(), "dhcp.range"),
                (!wire.dhcp.relay_subnets.is_empty(), "dhcp.relay_subnets"),
            ] {
                if set {
                    problems.push(
                        path,
                        key,
                        "only used in full mode; proxy mode never hands out addresses",
                    );
                }
            }
            DhcpMode::Proxy
        }
        DhcpModeName::Full => full_dhcp(path, &wire.dhcp, wire.server_address, problems),
    }
}

/// One cluster's entry, checked: name, endpoint, versions.
fn cluster_spec(
    path: &Path,
    name: &str,
    c: &ClusterWire,
    secrets: PathBuf,
    problems: &mut Problems,
) -> ClusterSpec {
    let key = format!("clusters.{name}");
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
    {
        problems.push(
            path,
            &key,
            "cluster name: letters, digits, '-', '.', at most 63",
        );
    }
    if endpoint_host(&c.endpoint).is_none() || !c.endpoint.starts_with("https://") {
        problems.push(
            path,
            &format!("{key}.endpoint"),
            format!("{:?} is not a URL like https://10.0.0.10:6443", c.endpoint),
        );
    }
    if let Some(v) = &c.talos_version {
        if let Err(e) = crate::model::contract::Contract::for_release(v) {
            problems.push(path, &format!("{key}.talos_version"), e.to_string());
        }
    }
    if let Some(k) = &c.kubernetes_version {
        let k = k.trim_start_matches('v');
        // 1.37.0, or a pre-release Talos defaults to (1.37.0-rc.0).
        let (core, pre) = k.split_once('-').unwrap_or((k, ""));
        let digits = |p: &str| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_digit());
        let pre_ok = pre.is_empty()
            || pre
                .split_once('.')
                .is_some_and(|(t, n)| matches!(t, "alpha" | "beta" | "rc") && digits(n));
        if core.split('.').count() != 3 || !core.split('.').all(digits) || !pre_ok {
            problems.push(
                path,
                &format!("{key}.kubernetes_version"),
                format!("{k:?} is not a version like 1.37.0 (or 1.37.0-rc.0)"),
            );
        }
    }
    ClusterSpec {
        name: name.to_string(),
        endpoint: c.endpoint.clone(),
        talos_version: c.talos_version.clone(),
        kubernetes_version: c
            .kubernetes_version
            .as_ref()
            .map(|k| k.trim_start_matches('v').to_string()),
        secrets,
        additional_sans: c.additional_sans.clone(),
        dns_domain: c
            .dns_domain
            .clone()
            .unwrap_or_else(|| "cluster.local".into()),
        install_image: c.install_image.clone(),
        extensions: c.extensions.clone(),
        extra_kernel_args: c.extra_kernel_args.clone(),
        auto_bootstrap: c.auto_bootstrap,
    }
}

fn parse_duration(file: &Path, key: &str, s: &str, problems: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if d.as_secs() >= 60 => Some(d),
        Ok(_) => {
            problems.push(file, key, format!("{s:?} is too short; use at least 1m"));
            None
        }
        Err(e) => {
            problems.push(
                file,
                key,
                format!("{s:?} is not a duration like 1h or 30m: {e}"),
            );
            None
        }
    }
}

fn subnet(
    file: &Path,
    key: &str,
    net: Ipv4Net,
    range: &[Ipv4Addr],
    router: Option<Ipv4Addr>,
    dns: &[Ipv4Addr],
    problems: &mut Problems,
) -> Option<Subnet> {
    let net = net.trunc();
    let [start, end] = range else {
        problems.push(
            file,
            &format!("{key}range"),
            "must be [first, last], two addresses",
        );
        return None;
    };
    let mut ok = true;
    for (ip, what) in [(start, "first"), (end, "last")] {
        if !net.contains(ip) || *ip == net.network() || *ip == net.broadcast() {
            problems.push(
                file,
                &format!("{key}range"),
                format!("{what} address {ip} is not a host address of subnet {net}"),
            );
            ok = false;
        }
    }
    if start > end {
        problems.push(
            file,
            &format!("{key}range"),
            format!("{start} comes after {end}"),
        );
        ok = false;
    }
    if let Some(r) = router {
        if !net.contains(&r) {
            problems.push(
                file,
                &format!("{key}router"),
                format!("{r} is outside subnet {net}"),
            );
            ok = false;
        }
    }
    ok.then(|| Subnet {
        net,
        range: (*start, *end),
        router,
        dns: dns.to_vec(),
    })
}

fn full_dhcp(file: &Path, w: &DhcpWire, server: Ipv4Addr, problems: &mut Problems) -> DhcpMode {
    let lease_time = parse_duration(
        file,
        "dhcp.lease_time",
        w.lease_time.as_deref().unwrap_or("1h"),
        problems,
    )
    .unwrap_or(Duration::from_secs(900));
    // Kea's default: a declined address is held by a device kiln does not
    // know, which rarely goes away within minutes; holding it costs one address.
    let decline_probation = parse_duration(
        file,
        "dhcp.decline_probation",
        w.decline_probation.as_deref().unwrap_or("24h"),
        problems,
    )
    .unwrap_or(Duration::from_secs(86_400));
    let ping_check =
        w.ping_check
            .as_deref()
            .and_then(|s| match humantime::parse_duration(s.trim()) {
                Ok(d) if d <= Duration::from_secs(5) => Some(d).filter(|d| !d.is_zero()),
                Ok(_) => {
                    problems.push(
                        file,
                        "dhcp.ping_check",
                        format!("{s:?}: at most 5s (a fresh OFFER waits this long)"),
                    );
                    None
                }
                Err(e) => {
                    problems.push(
                        file,
                        "dhcp.ping_check",
                        format!("{s:?} is not a duration like 300ms: {e}"),
                    );
                    None
                }
            });
    let mut subnets = Vec::new();
    match (&w.subnet, &w.range) {
        (Some(net), Some(range)) => {
            if !net.contains(&server) {
                problems.push(
                    file,
                    "dhcp.subnet",
                    format!("server_address {server} is not inside {net}; full mode serves the subnet kiln sits on"),
                );
            }
            if let Some(s) = subnet(file, "dhcp.", *net, range, w.router, &w.dns, problems) {
                if s.in_range(server) {
                    problems.push(
                        file,
                        "dhcp.range",
                        format!("includes server_address {server}"),
                    );
                }
                subnets.push(s);
            }
        }
        _ => problems.push(file, "dhcp", "full mode needs subnet and range"),
    }
    for (i, r) in w.relay_subnets.iter().enumerate() {
        let key = format!("dhcp.relay_subnets[{i}].");
        if let Some(s) = subnet(file, &key, r.subnet, &r.range, r.router, &r.dns, problems) {
            if subnets.iter().any(|o: &Subnet| {
                o.net.contains(&s.net.network()) || s.net.contains(&o.net.network())
            }) {
                problems.push(
                    file,
                    &format!("{key}subnet"),
                    format!("{} overlaps another subnet", s.net),
                );
            }
            subnets.push(s);
        }
    }
    DhcpMode::Full(FullDhcp {
        subnets,
        domain: w.domain.clone(),
        lease_time,
        decline_probation,
        ping_check,
    })
}

/// The host part of `https://host:port/...` (brackets removed from IPv6).
pub fn endpoint_host(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    let port_ok = match authority.rsplit_once("]:").map(|x| x.1).or_else(|| {
        (!authority.starts_with('['))
            .then(|| authority.split_once(':').map(|x| x.1))
            .flatten()
    }) {
        Some(p) => p.parse::<u16>().is_ok(),
        None => true,
    };
    (!host.is_empty() && port_ok).then(|| host.to_string())
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn endpoint_hosts() {
        assert_eq!(endpoint_host("https://base:6443").as_deref(), Some("base"));
        assert_eq!(
            endpoint_host("https://10.0.0.1:6443/").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            endpoint_host("https://[fd00::1]:6443").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(endpoint_host("https://k8s.lab").as_deref(), Some("k8s.lab"));
        assert_eq!(endpoint_host("base:6443"), None);
        assert_eq!(endpoint_host("https://base:port"), None);
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
