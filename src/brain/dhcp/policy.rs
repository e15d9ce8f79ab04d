//! What to answer, decided without sockets: proxy or full mode, known or unknown
//! MAC, which boot file for which firmware, which address from which pool.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use super::msg::{Assign, Boot, ClientClass, Reply, Request};
use super::pool::Pool;
pub(crate) use super::reason::Reason;
use crate::model::config::{Config, DhcpMode, FullDhcp, Subnet, UnknownMachines};
use crate::model::inventory::{Inventory, UefiBinary};
use crate::store::leases::{Lease, LeaseChange};

/// Which of kiln's sockets the request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// Port 67: DHCP (full mode) or proxyDHCP offers (proxy mode).
    Dhcp,
    /// Port 4011: proxyDHCP requests (PXE boot server).
    Proxy,
}

impl Port {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Port::Dhcp => "dhcp",
            Port::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Say nothing; the reason is logged.
    Ignore(Reason),
    /// Answer; `changes` are made durable first, in decision order.
    Reply {
        reply: Box<Reply>,
        changes: Vec<LeaseChange>,
        why: String,
    },
}

/// Boot file names, relative to the TFTP root.
pub(crate) const BIOS_IPXE: &str = "undionly.kpxe";
pub(crate) const X64_EFI_IPXE: &str = "ipxe.efi";
pub(crate) const ARM64_EFI_IPXE: &str = "ipxe-arm64.efi";
/// iPXE on the firmware's own network driver (UEFI SNP), for NICs iPXE lacks.
pub(crate) const X64_EFI_SNPONLY: &str = "snponly.efi";
pub(crate) const ARM64_EFI_SNPONLY: &str = "snponly-arm64.efi";

/// The UEFI binary `mac` boots: its machine's or profile's `uefi_binary`.
pub(crate) fn uefi_binary(inv: &Inventory, mac: &crate::model::mac::Mac) -> UefiBinary {
    inv.machine(mac)
        .and_then(|m| inv.profile(&m.profile).map(|p| m.uefi_binary(p)))
        .unwrap_or_default()
}

/// The UKI (path under boot_assets) an HTTP Boot request is sent, when its
/// machine's profile says `http_boot: uki`. Other requests never look (the
/// lookup reads the pulled UKI's manifest).
pub(crate) fn uki(cfg: &Config, inv: &Inventory, req: &Request) -> Option<String> {
    if req.class != ClientClass::Http || req.ipxe {
        return None;
    }
    let p = inv
        .machine(&req.mac)
        .and_then(|m| inv.profile(&m.profile))?;
    (p.http_boot == crate::model::boot::HttpBoot::Uki)
        .then(|| crate::brain::uki::file(cfg, p))
        .flatten()
}

/// [`boot_for`] with the requesting machine's own choices (`uefi_binary`,
/// `http_boot`).
fn boot_for_machine(ctx: &Ctx<'_>, req: &Request) -> Result<Boot, Reason> {
    let uki = uki(ctx.cfg, ctx.inventory, req);
    boot_for(
        req,
        ctx.cfg,
        uefi_binary(ctx.inventory, &req.mac),
        uki.as_deref(),
    )
}

/// The boot file for a PXE/HTTP firmware (option 93) or for iPXE itself;
/// `uki`, for an HTTP Boot client whose profile boots one, instead of iPXE.
pub(crate) fn boot_for(
    req: &Request,
    cfg: &Config,
    uefi: UefiBinary,
    uki: Option<&str>,
) -> Result<Boot, Reason> {
    let http = cfg.http_base();
    let pxe = req.class == ClientClass::Pxe;
    let vendor_class = match req.class {
        ClientClass::Pxe => Some("PXEClient"),
        ClientClass::Http => Some("HTTPClient"),
        ClientClass::Other => None,
    };
    let mk = |file: String| Boot {
        next_server: cfg.advertised_address(),
        file,
        vendor_class,
        pxe_vendor_options: pxe,
    };
    if req.ipxe {
        // Already running iPXE: hand it the script, never the binary again (no loop).
        return Ok(mk(format!("{http}/boot.ipxe")));
    }
    let (x64, arm64) = match uefi {
        UefiBinary::Ipxe => (X64_EFI_IPXE, ARM64_EFI_IPXE),
        UefiBinary::Snponly => (X64_EFI_SNPONLY, ARM64_EFI_SNPONLY),
    };
    if let (ClientClass::Http, 16 | 19, Some(uki)) = (req.class, req.arch.unwrap_or(0), uki) {
        return Ok(mk(format!("{http}/assets/{uki}")));
    }
    match (req.class, req.arch.unwrap_or(0)) {
        (ClientClass::Pxe, 0) => Ok(mk(BIOS_IPXE.into())),
        (ClientClass::Pxe, 7 | 9) => Ok(mk(x64.into())),
        (ClientClass::Pxe, 11) => Ok(mk(arm64.into())),
        (ClientClass::Http, 16) => Ok(mk(format!("{http}/assets/{x64}"))),
        (ClientClass::Http, 19) => Ok(mk(format!("{http}/assets/{arm64}"))),
        (ClientClass::Other, _) => Err(Reason::NotBootClient),
        (_, arch) => Err(Reason::NoIpxeFor { arch }),
    }
}

/// Pick the subnet a request belongs to: the relay's (giaddr) or the local one.
fn subnet_for<'a>(full: &'a FullDhcp, req: &Request) -> Option<&'a Subnet> {
    if req.relayed() {
        full.subnets.iter().find(|s| s.net.contains(&req.giaddr))
    } else {
        full.subnets.first()
    }
}

pub(crate) struct Ctx<'a> {
    pub cfg: &'a Config,
    pub inventory: &'a Inventory,
    pub now: u64,
}

/// Decide the answer to one request. `pool` is only touched in full mode.
pub(crate) fn decide(ctx: &Ctx<'_>, req: &Request, port: Port, pool: &mut Pool) -> Decision {
    if let Some(host) = ctx.inventory.retired(&req.mac) {
        return Decision::Ignore(Reason::Retired {
            host: host.to_string(),
        });
    }
    let machine = ctx.inventory.machine(&req.mac);
    if machine.is_none() && ctx.cfg.unknown_machines == UnknownMachines::Ignore {
        return Decision::Ignore(Reason::UnknownMac);
    }
    match &ctx.cfg.dhcp {
        DhcpMode::Proxy => proxy(ctx, req, port),
        DhcpMode::Full(full) => {
            if port == Port::Proxy {
                // A PXE client may still ask the boot server on 4011.
                return proxy(ctx, req, port);
            }
            let hostname = machine.map(|m| m.hostname.clone());
            self::full(ctx, full, req, pool, hostname)
        }
    }
}

fn proxy(ctx: &Ctx<'_>, req: &Request, port: Port) -> Decision {
    if !req.is_pxe() {
        return Decision::Ignore(Reason::NotPxe);
    }
    let msg_type = match (port, req.msg_type) {
        (Port::Dhcp, MessageType::Discover) => MessageType::Offer,
        (Port::Proxy, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        (port, msg) => return Decision::Ignore(Reason::NotAnswered { msg, port }),
    };
    match boot_for_machine(ctx, req) {
        Ok(boot) => Decision::Reply {
            why: format!("proxy {msg_type:?}: boot {}", boot.file),
            reply: Box::new(Reply {
                msg_type,
                server_id: ctx.cfg.server_address,
                assign: None,
                boot: Some(boot),
                message: None,
            }),
            changes: Vec::new(),
        },
        Err(e) => Decision::Ignore(e),
    }
}

fn assign(full: &FullDhcp, subnet: &Subnet, ip: Ipv4Addr, hostname: Option<String>) -> Assign {
    Assign {
        yiaddr: ip,
        lease_secs: full.lease_time.as_secs().min(u32::MAX as u64) as u32,
        netmask: subnet.net.netmask(),
        router: subnet.router,
        dns: subnet.dns.clone(),
        domain: full.domain.clone(),
        hostname,
    }
}

/// What full mode's handlers share: the subnet, the server, the boot file.
struct Full<'a> {
    full: &'a FullDhcp,
    subnet: &'a Subnet,
    server_id: Ipv4Addr,
    boot: Option<Boot>,
    hostname: Option<String>,
    now: u64,
}

impl Full<'_> {
    fn reply(
        &self,
        msg_type: MessageType,
        assign: Option<Assign>,
        boot: Option<Boot>,
    ) -> Box<Reply> {
        Box::new(Reply {
            msg_type,
            server_id: self.server_id,
            assign,
            boot,
            message: None,
        })
    }
}

fn full(
    ctx: &Ctx<'_>,
    full: &FullDhcp,
    req: &Request,
    pool: &mut Pool,
    hostname: Option<String>,
) -> Decision {
    let Some(subnet) = subnet_for(full, req) else {
        return Decision::Ignore(Reason::NoSubnet { giaddr: req.giaddr });
    };
    // Boot information only for firmware that asks for it; an OS's DHCP client
    // (Talos after boot) gets an address and nothing else.
    let boot = if req.is_pxe() || req.ipxe {
        boot_for_machine(ctx, req).ok()
    } else {
        None
    };
    let f = Full {
        full,
        subnet,
        server_id: ctx.cfg.server_address,
        boot,
        hostname,
        now: ctx.now,
    };
    match req.msg_type {
        MessageType::Discover => discover(&f, req, pool),
        MessageType::Request => request(&f, req, pool),
        MessageType::Release => release(&f, req, pool),
        MessageType::Decline => decline(&f, req, pool),
        MessageType::Inform => inform(&f, req),
        t => Decision::Ignore(Reason::Unhandled(t)),
    }
}

fn discover(f: &Full<'_>, req: &Request, pool: &mut Pool) -> Decision {
    match pool.offer(req.mac, f.subnet, req.requested_ip, f.now) {
        Ok(ip) => Decision::Reply {
            why: format!(
                "offer {ip}{}",
                f.boot
                    .as_ref()
                    .map(|b| format!(", boot {}", b.file))
                    .unwrap_or_default()
            ),
            reply: f.reply(
                MessageType::Offer,
                Some(assign(f.full, f.subnet, ip, f.hostname.clone())),
                f.boot.clone(),
            ),
            changes: Vec::new(),
        },
        Err(e) => Decision::Ignore(Reason::NoOffer(e)),
    }
}

fn request(f: &Full<'_>, req: &Request, pool: &mut Pool) -> Decision {
    if let Some(sid) = req.server_id {
        if sid != f.server_id {
            return Decision::Ignore(Reason::OtherServer(sid));
        }
    }
    let ip = match (req.requested_ip, req.ciaddr) {
        (Some(ip), _) => ip,
        (None, c) if !c.is_unspecified() => c,
        _ => return Decision::Ignore(Reason::RequestWithoutAddress),
    };
    match pool.bind(req.mac, f.subnet, ip, f.full.lease_time.as_secs(), f.now) {
        Ok((lease, moved_from)) => Decision::Reply {
            why: format!("ack {ip} until {}", lease.expires),
            reply: f.reply(
                MessageType::Ack,
                Some(assign(f.full, f.subnet, ip, f.hostname.clone())),
                f.boot.clone(),
            ),
            changes: moved_from
                .map(LeaseChange::Free)
                .into_iter()
                .chain([LeaseChange::Bind(Lease {
                    hostname: f.hostname.clone(),
                    ..lease
                })])
                .collect(),
        },
        Err(e) => {
            // Authoritative for this subnet: a wrong address is refused so
            // the client starts over.
            let msg = e.to_string();
            let mut reply = f.reply(MessageType::Nak, None, None);
            reply.message = Some(msg.clone());
            Decision::Reply {
                why: format!("nak {ip}: {msg}"),
                reply,
                changes: Vec::new(),
            }
        }
    }
}

fn release(f: &Full<'_>, req: &Request, pool: &mut Pool) -> Decision {
    match pool.release(&req.mac, req.ciaddr) {
        Some(change) => Decision::Reply {
            why: format!("released {}", req.ciaddr),
            reply: f.reply(MessageType::Release, None, None),
            changes: vec![change],
        },
        None => Decision::Ignore(Reason::ReleaseNotHeld(req.ciaddr)),
    }
}

fn decline(f: &Full<'_>, req: &Request, pool: &mut Pool) -> Decision {
    let ip = req.requested_ip.unwrap_or(req.ciaddr);
    let hold = f.full.decline_probation.as_secs();
    match pool.decline(&req.mac, ip, hold, f.now) {
        Some(change) => Decision::Reply {
            why: format!(
                "declined {ip}: someone else answers on it; out of the pool for {}",
                humantime::format_duration(f.full.decline_probation)
            ),
            reply: f.reply(MessageType::Decline, None, None),
            changes: vec![change],
        },
        None => Decision::Ignore(Reason::DeclineNotGiven(ip)),
    }
}

/// INFORM (RFC 2131 3.4, 4.3.5): a client with an address configured some
/// other way asks for the subnet's parameters. ACK with no address and no
/// lease time; it goes to ciaddr.
fn inform(f: &Full<'_>, req: &Request) -> Decision {
    if req.ciaddr.is_unspecified() || !f.subnet.net.contains(&req.ciaddr) {
        return Decision::Ignore(Reason::InformOutside(req.ciaddr));
    }
    let mut a = assign(f.full, f.subnet, Ipv4Addr::UNSPECIFIED, f.hostname.clone());
    a.lease_secs = 0;
    Decision::Reply {
        why: format!("inform {}: parameters only", req.ciaddr),
        reply: f.reply(MessageType::Ack, Some(a), f.boot.clone()),
        changes: Vec::new(),
    }
}

/// Whether a decision is a message to send (RELEASE/DECLINE only change state).
pub(crate) fn sends(reply: &Reply) -> bool {
    matches!(
        reply.msg_type,
        MessageType::Offer | MessageType::Ack | MessageType::Nak
    )
}
