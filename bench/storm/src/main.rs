//! Boot-storm simulator: N machines power on within a few seconds and do the
//! whole first boot that kiln sees, each from its own leased address:
//!
//! 1. DHCP as a PXE ROM (DISCOVER/OFFER/REQUEST/ACK with options 60 and 93),
//! 2. TFTP of the boot file the ACK names (blksize 1468),
//! 3. DHCP again as iPXE (user class "iPXE"),
//! 4. the boot script, then the machine's own script (`/ipxe/<mac>`),
//! 5. the config, by the `talos.config=` URL in that script,
//! 6. the lifecycle events over gRPC (booting .. ready).
//!
//! With `--churn P`, P % of the machines first take a lease and DECLINE it
//! (a squatter answers on it: the storm then treats that address as taken by
//! someone else and declines it again whenever it is handed out, as a
//! client's ARP probe would), and another P % take one and RELEASE it, before
//! their boot.
//!
//! Each machine uses the server that answered its DHCP (its server
//! identifier) for TFTP, HTTP and events, so one storm runs against several
//! daemons sharing a store; with `--reboot-after S` a machine whose server
//! stops answering mid-boot starts again from DHCP, as a PXE ROM that gives
//! up reboots.
//!
//! Clients retry as real ones do (DHCP 1-4 s backoff, TFTP retransmits, HTTP
//! and gRPC reconnects), so a storm survives a kiln restart. Per-step p50/p99,
//! errors and each machine's final address are reported (JSON with --out).
//! Run it through bench/storm.sh (namespaces, kiln, RSS/CPU sampling).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use kiln::edge::dhcp::packet::{build_request, parse_reply};
use kiln::model::mac::Mac;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

#[derive(Parser, Clone)]
struct Opts {
    /// Client-side interface (leased addresses are added to it).
    #[arg(long)]
    iface: String,
    #[arg(long, default_value_t = 1000)]
    machines: usize,
    /// Power-on spread: machine i starts at a random point in [0, ramp) s.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    #[arg(long, default_value_t = 4002)]
    events_port: u16,
    #[arg(long, default_value_t = 69)]
    tftp_port: u16,
    /// Give up on a step after this many seconds of retries.
    #[arg(long, default_value_t = 90)]
    step_timeout: u64,
    /// Percent of machines that DECLINE, and percent that RELEASE, a first lease.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// A machine whose boot stalls after DHCP (its server gone: kiln killed)
    /// starts again from DHCP after this many seconds, as a PXE ROM that
    /// gives up reboots; up to --reboots times. 0: never (a stall is an error).
    #[arg(long, default_value_t = 0)]
    reboot_after: u64,
    #[arg(long, default_value_t = 3)]
    reboots: usize,
    /// Per-machine results as JSON.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const STEPS: [&str; 6] = [
    "dhcp-pxe",
    "tftp",
    "dhcp-ipxe",
    "script",
    "config",
    "events",
];

type Waiters = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<v4::Message>>>>;

struct Dhcp {
    sock: Arc<UdpSocket>,
    waiters: Waiters,
    /// Addresses a squatter answers on (declined once): declined again if handed out.
    squatted: Mutex<std::collections::HashSet<Ipv4Addr>>,
    /// Leases declined again because kiln handed out a squatted address.
    redeclined: std::sync::atomic::AtomicUsize,
}

impl Dhcp {
    fn new(iface: &str) -> std::io::Result<Dhcp> {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.set_recv_buffer_size(8 << 20)?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())?;
        s.set_nonblocking(true)?;
        let sock = Arc::new(UdpSocket::from_std(s.into())?);
        let waiters: Waiters = Arc::default();
        let (rs, rw) = (sock.clone(), waiters.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while let Ok((n, _)) = rs.recv_from(&mut buf).await {
                if let Some(m) = parse_reply(&buf[..n]) {
                    if let Some(tx) = rw.lock().unwrap().get(&m.xid()) {
                        let _ = tx.send(m);
                    }
                }
            }
        });
        Ok(Dhcp {
            sock,
            waiters,
            squatted: Default::default(),
            redeclined: Default::default(),
        })
    }

    /// Broadcast with the BROADCAST flag set, as PXE ROMs do (this client
    /// has no address to receive a unicast on).
    async fn send(&self, pkt: &[u8]) {
        let mut pkt = pkt.to_vec();
        pkt[10] |= 0x80;
        let _ = self
            .sock
            .send_to(&pkt, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
            .await;
    }

    /// DECLINE (`decline`) or RELEASE an address this MAC was given.
    async fn give_back(&self, mac: Mac, xid: u32, ip: Ipv4Addr, server: Ipv4Addr, decline: bool) {
        let t = if decline {
            MessageType::Decline
        } else {
            MessageType::Release
        };
        let mut o = vec![DhcpOption::ServerIdentifier(server)];
        if decline {
            o.push(DhcpOption::RequestedIpAddress(ip));
        }
        let mut pkt = build_request(mac, t, xid, o);
        if !decline {
            pkt[12..16].copy_from_slice(&ip.octets()); // ciaddr
        }
        self.send(&pkt).await;
    }

    /// DISCOVER/OFFER/REQUEST/ACK with retries: (address, boot file, the
    /// server that answered: its TFTP, HTTP and events are the ones to use).
    async fn dora(
        &self,
        mac: Mac,
        xid: u32,
        ipxe: bool,
        give_up: Duration,
    ) -> Result<(Ipv4Addr, String, Ipv4Addr), String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.waiters.lock().unwrap().insert(xid, tx);
        let mut r = self.dora_inner(mac, xid, ipxe, give_up, &mut rx).await;
        for _ in 0..5 {
            match &r {
                Ok((ip, _, sid)) if self.squatted.lock().unwrap().contains(ip) => {
                    self.redeclined
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.give_back(mac, xid, *ip, *sid, true).await;
                    r = self.dora_inner(mac, xid, ipxe, give_up, &mut rx).await;
                }
                _ => break,
            }
        }
        self.waiters.lock().unwrap().remove(&xid);
        r
    }

    async fn dora_inner(
        &self,
        mac: Mac,
        xid: u32,
        ipxe: bool,
        give_up: Duration,
        rx: &mut mpsc::UnboundedReceiver<v4::Message>,
    ) -> Result<(Ipv4Addr, String, Ipv4Addr), String> {
        let t0 = Instant::now();
        let opts = || {
            let mut o = vec![
                DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
                DhcpOption::ClientSystemArchitecture(v4::Architecture(0)),
            ];
            if ipxe {
                o.push(DhcpOption::UserClass(b"iPXE".to_vec()));
            }
            o
        };
        let mut wait = Duration::from_secs(1);
        while t0.elapsed() < give_up {
            self.send(&build_request(mac, MessageType::Discover, xid, opts()))
                .await;
            let Some(offer) = recv(rx, &[MessageType::Offer], wait).await else {
                wait = (wait * 2).min(Duration::from_secs(4));
                continue;
            };
            let ip = offer.yiaddr();
            let sid = match offer.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => offer.siaddr(),
            };
            let mut o = opts();
            o.push(DhcpOption::RequestedIpAddress(ip));
            o.push(DhcpOption::ServerIdentifier(sid));
            for _ in 0..3 {
                self.send(&build_request(mac, MessageType::Request, xid, o.clone()))
                    .await;
                match recv(rx, &[MessageType::Ack, MessageType::Nak], wait).await {
                    Some(m) if msg_type(&m) == Some(MessageType::Ack) => {
                        let file = match m.opts().get(OptionCode::BootfileName) {
                            Some(DhcpOption::BootfileName(f)) => {
                                String::from_utf8_lossy(f).into_owned()
                            }
                            _ => m
                                .fname()
                                .map(|f| {
                                    String::from_utf8_lossy(f)
                                        .trim_end_matches('\0')
                                        .to_string()
                                })
                                .unwrap_or_default(),
                        };
                        let sid = match m.opts().get(OptionCode::ServerIdentifier) {
                            Some(DhcpOption::ServerIdentifier(s)) => *s,
                            _ => sid,
                        };
                        return Ok((m.yiaddr(), file, sid));
                    }
                    Some(m) if msg_type(&m) == Some(MessageType::Nak) => break,
                    _ => {}
                }
            }
            wait = (wait * 2).min(Duration::from_secs(4));
        }
        Err(format!("no ACK in {give_up:?}"))
    }
}

fn msg_type(m: &v4::Message) -> Option<MessageType> {
    match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => Some(*t),
        _ => None,
    }
}

/// The next reply of one of the `want` types within `wait`.
async fn recv(
    rx: &mut mpsc::UnboundedReceiver<v4::Message>,
    want: &[MessageType],
    wait: Duration,
) -> Option<v4::Message> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let m = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
        if msg_type(&m).is_some_and(|t| want.contains(&t)) {
            return Some(m);
        }
    }
}

/// An RRQ with blksize 1468, then ACK every block; retransmit on silence.
async fn tftp(
    local: Ipv4Addr,
    server: SocketAddr,
    file: &str,
    give_up: Duration,
) -> Result<usize, String> {
    let t0 = Instant::now();
    'attempt: while t0.elapsed() < give_up {
        let s = UdpSocket::bind((local, 0))
            .await
            .map_err(|e| e.to_string())?;
        let mut rrq = vec![0, 1];
        rrq.extend_from_slice(file.as_bytes());
        rrq.extend_from_slice(b"\0octet\0blksize\0");
        rrq.extend_from_slice(b"1468\0");
        let mut last = rrq.clone();
        let mut dest = server;
        let mut got = 0usize;
        let mut expect: u16 = 1;
        let mut blksize = 512;
        let mut buf = vec![0u8; 2048];
        s.send_to(&last, dest).await.map_err(|e| e.to_string())?;
        let mut silent = 0;
        loop {
            let r = tokio::time::timeout(Duration::from_secs(1), s.recv_from(&mut buf)).await;
            let (n, from) = match r {
                Ok(Ok(x)) => x,
                _ => {
                    silent += 1;
                    if silent > 5 {
                        continue 'attempt;
                    }
                    let _ = s.send_to(&last, dest).await;
                    continue;
                }
            };
            silent = 0;
            if n < 4 {
                continue;
            }
            dest = from;
            match u16::from_be_bytes([buf[0], buf[1]]) {
                6 => {
                    // OACK: blksize accepted.
                    let text = String::from_utf8_lossy(&buf[2..n]).to_string();
                    let parts: Vec<&str> = text.split('\0').collect();
                    if let Some(i) = parts.iter().position(|p| p.eq_ignore_ascii_case("blksize")) {
                        blksize = parts.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(512);
                    }
                    last = vec![0, 4, 0, 0];
                    let _ = s.send_to(&last, dest).await;
                }
                3 => {
                    let block = u16::from_be_bytes([buf[2], buf[3]]);
                    if block == expect {
                        got += n - 4;
                        expect = expect.wrapping_add(1);
                    }
                    last = vec![0, 4, buf[2], buf[3]];
                    let _ = s.send_to(&last, dest).await;
                    if block == expect.wrapping_sub(1) && n - 4 < blksize {
                        return Ok(got);
                    }
                }
                5 => {
                    return Err(format!(
                        "TFTP error: {}",
                        String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0')
                    ))
                }
                _ => {}
            }
        }
    }
    Err(format!("TFTP: nothing in {give_up:?}"))
}

/// GET `path` from `server` over a connection from `local`; (status, body).
async fn http_get(
    local: Ipv4Addr,
    server: SocketAddr,
    path: &str,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(local.into(), 0))
        .map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(Duration::from_secs(5), sock.connect(server))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", server.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
        .await
        .map_err(|_| "response timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Retry `f` on transport errors (a restarting kiln) until `give_up`.
async fn retry<T, F, Fut>(give_up: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let t0 = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if t0.elapsed() > give_up => return Err(e),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[path = "../../../tests/common/sink.rs"]
mod sink;

/// Talos's first boot as its events sink reports it, up to ready.
fn first_boot_to_ready() -> Vec<prost_types::Any> {
    let mut evs = sink::ev::first_boot();
    evs.push(sink::ev::stage(
        kiln::talos::proto::machine::machine_status_event::MachineStage::Running,
        true,
    ));
    evs
}

async fn publish(sink_addr: SocketAddr, from: Ipv4Addr) -> Result<(), String> {
    sink::publish(sink_addr, from, first_boot_to_ready())
        .await
        .map_err(|e| e.to_string())
}

#[derive(Default, Clone)]
struct Outcome {
    mac: String,
    ip: Option<Ipv4Addr>,
    steps: Vec<Duration>,
    error: Option<String>,
    /// Boots told to go to the local disk (installed before a reboot).
    local_boots: usize,
    /// The server that answered the last DHCP.
    server: Option<Ipv4Addr>,
    /// Boots started again from DHCP (`--reboot-after`), each with why.
    reboots: Vec<String>,
}

async fn machine(
    i: usize,
    o: Arc<Opts>,
    dhcp: Arc<Dhcp>,
    added: Arc<Mutex<std::collections::HashSet<Ipv4Addr>>>,
) -> Outcome {
    let mac = Mac([0x02, 0x53, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    let mut out = Outcome {
        mac: mac.to_string(),
        ..Default::default()
    };
    let give_up = Duration::from_secs(o.step_timeout);
    let fail = |mut out: Outcome, step: &str, e: String| {
        out.error = Some(format!("{step}: {e}"));
        out
    };
    // 0. Churn: a first lease declined (a squatter holds it) or released.
    let pct = (i * 37) % 100;
    let decline = pct < o.churn;
    if decline || pct >= 100 - o.churn {
        let xid = 0x4000_0000 | i as u32;
        match dhcp.dora(mac, xid, false, give_up).await {
            Ok((ip, _, sid)) => {
                if decline {
                    dhcp.squatted.lock().unwrap().insert(ip);
                }
                dhcp.give_back(mac, xid, ip, sid, decline).await;
                // kiln handles datagrams concurrently: a RELEASE sent in the
                // same instant as the next DISCOVER may be handled after it
                // (a real client takes far longer between the two).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return fail(out, "churn", e),
        }
    }
    // Boot, and boot again from DHCP when the server stops answering.
    let stall = if o.reboot_after > 0 {
        Duration::from_secs(o.reboot_after)
    } else {
        give_up
    };
    for attempt in 0..=o.reboots {
        out.steps.clear();
        match boot(i, &o, &dhcp, &added, mac, &mut out, give_up, stall).await {
            Ok(()) => return out,
            Err((k, e)) if k > 0 && o.reboot_after > 0 && attempt < o.reboots => {
                out.reboots.push(format!("{}: {e}", STEPS[k]));
            }
            Err((k, e)) => return fail(out, STEPS[k], e),
        }
    }
    out
}

/// One boot from DHCP on; Err: the step (index in STEPS) that failed, and why.
/// Steps after DHCP give up after `stall`.
#[allow(clippy::too_many_arguments)]
async fn boot(
    i: usize,
    o: &Opts,
    dhcp: &Dhcp,
    added: &Mutex<std::collections::HashSet<Ipv4Addr>>,
    mac: Mac,
    out: &mut Outcome,
    give_up: Duration,
    stall: Duration,
) -> Result<(), (usize, String)> {
    // 1. DHCP as the PXE ROM.
    let t = Instant::now();
    let (ip, file, server) = match dhcp.dora(mac, 0x5000_0000 | i as u32, false, give_up).await {
        Ok(x) => x,
        Err(e) => return Err((0, e)),
    };
    out.steps.push(t.elapsed());
    out.ip = Some(ip);
    out.server = Some(server);
    let fresh = added.lock().unwrap().insert(ip);
    if fresh {
        let st = tokio::process::Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", &o.iface])
            .status()
            .await;
        if !st.as_ref().is_ok_and(|s| s.success()) {
            return Err((0, format!("setup: ip addr add {ip}: {st:?}")));
        }
    }
    // 2. TFTP the boot file.
    let t = Instant::now();
    let server_tftp = SocketAddr::new(server.into(), o.tftp_port);
    match tftp(ip, server_tftp, &file, stall).await {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err((1, format!("{file}: empty"))),
        Err(e) => return Err((1, format!("{file}: {e}"))),
    }
    out.steps.push(t.elapsed());
    // 3. DHCP again, as iPXE.
    let t = Instant::now();
    let (ip2, script_url, server) =
        match dhcp.dora(mac, 0x6000_0000 | i as u32, true, give_up).await {
            Ok(x) => x,
            Err(e) => return Err((2, e)),
        };
    out.steps.push(t.elapsed());
    if ip2 != ip {
        return Err((2, format!("address changed {ip} -> {ip2}")));
    }
    // 4. The boot script, then this machine's.
    let t = Instant::now();
    let http = SocketAddr::new(server.into(), o.http_port);
    let path_of = |url: &str| -> String {
        url.split_once("://")
            .and_then(|(_, r)| r.find('/').map(|p| r[p..].to_string()))
            .unwrap_or_else(|| url.to_string())
    };
    let get_ok = |path: String| async move {
        retry(stall, || {
            let path = path.clone();
            async move {
                match http_get(ip, http, &path).await? {
                    (200, b) => Ok(b),
                    (s, b) => Err(format!("{path}: {s} {}", b.trim())),
                }
            }
        })
        .await
    };
    if let Err(e) = get_ok(path_of(&script_url)).await {
        return Err((3, e));
    }
    let hyph = mac.to_string().replace(':', "-");
    let uuid = format!("00000000-0000-4000-8000-{i:012x}");
    let script = match get_ok(format!("/ipxe/{hyph}?uuid={uuid}&serial=&arch=i386")).await {
        Ok(s) => s,
        Err(e) => return Err((3, e)),
    };
    out.steps.push(t.elapsed());
    // 5. The config, by the talos.config= URL. A machine kiln already saw
    // install (its events reached a daemon that died before the rest did)
    // is told to boot from its disk: it does, and goes on to its events.
    let t = Instant::now();
    let cfg_url = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("talos.config="));
    match cfg_url {
        None if script.contains("sanboot") => out.local_boots += 1,
        None => return Err((4, format!("no talos.config= in {script:?}"))),
        Some(cfg_url) => {
            let cfg_path = path_of(cfg_url)
                .replace("${uuid}", &uuid)
                .replace("${mac}", &mac.to_string());
            match get_ok(cfg_path).await {
                Ok(body) if body.contains("machine:") => {}
                Ok(body) => return Err((4, format!("not a config: {:.80}", body))),
                Err(e) => return Err((4, e)),
            }
        }
    }
    out.steps.push(t.elapsed());
    // 6. Events, booting .. ready.
    let t = Instant::now();
    let sink = SocketAddr::new(server.into(), o.events_port);
    if let Err(e) = retry(stall, || publish(sink, ip)).await {
        return Err((5, e));
    }
    out.steps.push(t.elapsed());
    Ok(())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let k = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[k.min(v.len() - 1)]
}

#[tokio::main]
async fn main() {
    let o = Arc::new(Opts::parse());
    let dhcp = Arc::new(
        Dhcp::new(&o.iface).expect("DHCP client socket on :68 (root, in the client namespace)"),
    );
    let added = Arc::default();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..o.machines {
        let (o, dhcp, added) = (o.clone(), dhcp.clone(), Arc::clone(&added));
        // Deterministic spread of power-on times over the ramp.
        let at = Duration::from_secs_f64(
            o.ramp * ((i * 7919) % o.machines.max(1)) as f64 / o.machines.max(1) as f64,
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(at).await;
            machine(i, o, dhcp, added).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap_or_default());
    }
    let total = t0.elapsed();
    let errors: Vec<&Outcome> = outcomes.iter().filter(|m| m.error.is_some()).collect();
    let mut ips: Vec<Ipv4Addr> = outcomes.iter().filter_map(|m| m.ip).collect();
    let n_ips = ips.len();
    ips.sort();
    ips.dedup();
    let dups = n_ips - ips.len();
    println!("| step | p50 ms | p99 ms | max ms | done |");
    println!("|---|---|---|---|---|");
    for (k, step) in STEPS.iter().enumerate() {
        let mut v: Vec<f64> = outcomes
            .iter()
            .filter_map(|m| m.steps.get(k))
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let n = v.len();
        let (p50, p99, max) = (pct(&mut v, 50.0), pct(&mut v, 99.0), pct(&mut v, 100.0));
        println!(
            "| {step} | {p50:.1} | {p99:.1} | {max:.1} | {n}/{} |",
            o.machines
        );
    }
    println!();
    println!(
        "machines: {}, completed: {}, errors: {}, duplicate addresses: {dups}, total time: {:.1} s",
        o.machines,
        outcomes.len() - errors.len(),
        errors.len(),
        total.as_secs_f64()
    );
    let rebooted = outcomes.iter().filter(|m| !m.reboots.is_empty()).count();
    if o.reboot_after > 0 {
        println!(
            "machines that booted again from DHCP after a stall: {rebooted} ({} reboots; {} of them then booted from disk, installed)",
            outcomes.iter().map(|m| m.reboots.len()).sum::<usize>(),
            outcomes.iter().filter(|m| m.local_boots > 0).count()
        );
    }
    let mut by_server: std::collections::BTreeMap<Ipv4Addr, usize> = Default::default();
    for m in outcomes.iter().filter(|m| m.error.is_none()) {
        *by_server
            .entry(m.server.unwrap_or(Ipv4Addr::UNSPECIFIED))
            .or_default() += 1;
    }
    if by_server.len() > 1 {
        let v: Vec<String> = by_server.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!("completed by server: {}", v.join(", "));
    }
    let squatted = dhcp.squatted.lock().unwrap().clone();
    let on_squatted = outcomes
        .iter()
        .filter(|m| m.ip.is_some_and(|ip| squatted.contains(&ip)))
        .count();
    println!(
        "churn {}%: {} addresses declined, {} handed out again and re-declined, {on_squatted} machines ended on a declined address",
        o.churn,
        squatted.len(),
        dhcp.redeclined.load(std::sync::atomic::Ordering::Relaxed)
    );
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    for e in &errors {
        let k = e
            .error
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect::<String>();
        *by_kind.entry(k).or_default() += 1;
    }
    for (k, n) in by_kind {
        println!("  {n} x {k}");
    }
    if let Some(p) = &o.out {
        let v: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|m| {
                serde_json::json!({
                    "mac": m.mac,
                    "ip": m.ip.map(|i| i.to_string()),
                    "error": m.error,
                    "steps_ms": m.steps.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
                    "reboots": m.reboots,
                    "server": m.server.map(|i| i.to_string()),
                })
            })
            .collect();
        std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).expect("write --out");
    }
    if !errors.is_empty() || dups > 0 || on_squatted > 0 {
        std::process::exit(1);
    }
}
