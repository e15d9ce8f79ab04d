//! The guest's etcd member, run the way Talos runs it: a control plane that
//! gets Bootstrap starts a new one-member cluster; any other control plane
//! joins the existing cluster as a learner (through the VIP, which the
//! bootstrapped node holds, as Talos's VIP follows the etcd leader election)
//! and is promoted once it has caught up. Debian's etcd and etcdctl are in
//! the initramfs (tests/guest/build.sh).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// etcdctl with a timeout a TCG guest can meet.
fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    crate::talos::etcdctl_with(endpoint, "10s", args).map_err(|e| format!("etcdctl: {e}"))?
}

fn start(name: &str, ip: Ipv4Addr, initial_cluster: &str, state: &str) -> std::io::Result<Child> {
    Command::new("etcd")
        .args([
            &format!("--name={name}"),
            "--data-dir=/var/lib/etcd",
            &format!("--listen-peer-urls=http://{ip}:2380"),
            // Clients also come in through the VIP when this node holds it.
            "--listen-client-urls=http://0.0.0.0:2379",
            &format!("--advertise-client-urls=http://{ip}:2379"),
            &format!("--initial-advertise-peer-urls=http://{ip}:2380"),
            &format!("--initial-cluster={initial_cluster}"),
            &format!("--initial-cluster-state={state}"),
            // TCG guests are slow; keep elections calm.
            "--heartbeat-interval=300",
            "--election-timeout=3000",
            "--log-level=warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// A new one-member cluster (what Bootstrap does).
pub fn bootstrap(name: &str, ip: Ipv4Addr) -> std::io::Result<Child> {
    start(name, ip, &format!("{name}=http://{ip}:2380"), "new")
}

/// Join through `via` (a client URL of a running member): add this node as a
/// learner, start etcd with the cluster list etcd returned. The learner's id.
pub fn join(name: &str, ip: Ipv4Addr, via: &str) -> Result<(Child, String), String> {
    let out = etcdctl(
        via,
        &[
            "member",
            "add",
            name,
            &format!("--peer-urls=http://{ip}:2380"),
            "--learner",
        ],
    )?;
    let id = out
        .split_whitespace()
        .skip_while(|w| *w != "Member")
        .nth(1)
        .ok_or_else(|| format!("no member id in {out:?}"))?
        .to_string();
    let cluster = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .map(|v| v.trim_matches('"').to_string())
        .ok_or_else(|| format!("no ETCD_INITIAL_CLUSTER in {out:?}"))?;
    let child = start(name, ip, &cluster, "existing").map_err(|e| e.to_string())?;
    Ok((child, id))
}

/// Promote learner `id` once it has caught up (etcd refuses until then).
pub fn promote(via: &str, id: &str, within: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        match etcdctl(via, &["member", "promote", id]) {
            Ok(_) => return Ok(()),
            Err(e) if t0.elapsed() > within => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

pub fn healthy(endpoint: &str, within: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if etcdctl(endpoint, &["endpoint", "health"]).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

pub fn listening(ip: Ipv4Addr, port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(ip.into(), port), Duration::from_secs(1)).is_ok()
}
