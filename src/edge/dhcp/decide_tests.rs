//! The brain's DHCP decisions, fed real packets (built, decoded, encoded
//! here at the edge) without sockets: each firmware, iPXE, proxy vs full,
//! unknown MACs, relays.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{Architecture, DhcpOption, MessageType};

use crate::brain::dhcp::msg::*;
use crate::brain::dhcp::policy::*;
use crate::brain::dhcp::pool::Pool;
use crate::edge::dhcp::packet::{build_request, decode, encode, parse_reply, BROADCAST};
use crate::edge::dhcp::server::{destination, Dest};
use crate::model::config::{Config, DhcpMode, FullDhcp, Ports, Subnet, UnknownMachines};
use crate::model::inventory::Inventory;
use crate::model::inventory::{Machine, Profile, Role};
use crate::model::mac::Mac;
use crate::store::leases::LeaseChange;

const KNOWN: &str = "52:54:00:aa:00:01";
const FIXED: &str = "52:54:00:aa:00:02";
const UNKNOWN: &str = "52:54:00:ff:ff:ff";

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(super) fn cfg(full: bool) -> Config {
    Config {
        file: "kiln.yaml".into(),
        interface: "br0".into(),
        server_address: ip("10.99.0.1"),
        listen_address: Ipv4Addr::UNSPECIFIED,
        ports: Ports::default(),
        dhcp: if full {
            DhcpMode::Full(FullDhcp {
                subnets: vec![
                    Subnet {
                        net: "10.99.0.0/24".parse().unwrap(),
                        range: (ip("10.99.0.100"), ip("10.99.0.200")),
                        router: Some(ip("10.99.0.1")),
                        dns: vec![ip("10.99.0.1")],
                    },
                    Subnet {
                        net: "10.98.0.0/24".parse().unwrap(),
                        range: (ip("10.98.0.100"), ip("10.98.0.200")),
                        router: Some(ip("10.98.0.1")),
                        dns: vec![],
                    },
                ],
                domain: Some("lab".into()),
                lease_time: Duration::from_secs(3600),
                decline_probation: Duration::from_secs(86_400),
                ping_check: None,
            })
        } else {
            DhcpMode::Proxy
        },
        unknown_machines: UnknownMachines::Ignore,
        default_profile: None,
        state_dir: "state".into(),
        boot_assets: "boot-assets".into(),
        ipxe_dirs: vec![],
        factory_url: "https://factory.talos.dev".into(),
        profiles: "profiles".into(),
        machines: "machines.yaml".into(),
        boot_token_ttl: Duration::from_secs(3600),
        clusters: Default::default(),
        ipv6_router_advertisements: full,
        api_tcp: false,
        limits: Default::default(),
        store: Default::default(),
    }
}

fn inventory() -> Inventory {
    let p = Profile::new("worker", Role::Worker, "v1.13.0");
    Inventory::from_parts(
        vec![p],
        vec![
            Machine {
                mac: KNOWN.parse().unwrap(),
                hostname: "w-1".into(),
                profile: "worker".into(),
                ip: None,
                uuid: None,
                boot: Default::default(),
            },
            Machine {
                mac: FIXED.parse().unwrap(),
                hostname: "w-2".into(),
                profile: "worker".into(),
                ip: Some(ip("10.99.0.12")),
                uuid: None,
                boot: kiln_boot_snponly(),
            },
        ],
    )
}

fn kiln_boot_snponly() -> crate::model::inventory::BootChoices {
    crate::model::inventory::BootChoices {
        local_boot: None,
        uefi_binary: Some(crate::model::inventory::UefiBinary::Snponly),
    }
}

/// `uefi_binary: snponly.efi` (machines.yaml) picks the SNP build for UEFI
/// PXE and HTTP boot; BIOS keeps undionly.
#[test]
fn uefi_binary_per_machine() {
    let c = cfg(false);
    for (arch, file) in [
        (0u16, "undionly.kpxe"),
        (7, "snponly.efi"),
        (11, "snponly-arm64.efi"),
    ] {
        let (r, _) = reply(run(
            &c,
            &req(FIXED, MessageType::Discover, pxe(arch)),
            Port::Dhcp,
            &mut Pool::default(),
        ));
        assert_eq!(r.boot.unwrap().file, file, "arch {arch}");
    }
    let opts = vec![
        DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture(16)),
    ];
    let (r, _) = reply(run(
        &c,
        &req(FIXED, MessageType::Discover, opts),
        Port::Dhcp,
        &mut Pool::default(),
    ));
    assert_eq!(
        r.boot.unwrap().file,
        "http://10.99.0.1:8080/assets/snponly.efi"
    );
}

pub(super) fn pxe(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes()),
        DhcpOption::ClientSystemArchitecture(Architecture(arch)),
        DhcpOption::ClientMachineIdentifier(vec![
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ]),
    ]
}

pub(super) fn req(mac: &str, t: MessageType, opts: Vec<DhcpOption>) -> Request {
    let m: Mac = mac.parse().unwrap();
    decode(&build_request(m, t, 0x1234, opts)).unwrap()
}

fn run(c: &Config, r: &Request, port: Port, pool: &mut Pool) -> Decision {
    let inv = inventory();
    pool.set_reservations(inv.reserved_ips());
    decide(
        &Ctx {
            cfg: c,
            inventory: &inv,
            now: 1000,
        },
        r,
        port,
        pool,
    )
}

pub(super) fn reply(d: Decision) -> (Reply, Option<LeaseChange>) {
    match d {
        Decision::Reply { reply, changes, .. } => (*reply, changes.last().cloned()),
        Decision::Ignore(why) => panic!("ignored: {why}"),
    }
}

#[test]
fn boot_file_per_architecture() {
    let c = cfg(false);
    for (arch, file) in [
        (0u16, "undionly.kpxe"),
        (7, "ipxe.efi"),
        (9, "ipxe.efi"),
        (11, "ipxe-arm64.efi"),
    ] {
        let (r, _) = reply(run(
            &c,
            &req(KNOWN, MessageType::Discover, pxe(arch)),
            Port::Dhcp,
            &mut Pool::default(),
        ));
        let boot = r.boot.unwrap();
        assert_eq!(boot.file, file, "arch {arch}");
        assert_eq!(boot.next_server, ip("10.99.0.1"));
        assert_eq!(boot.vendor_class, Some("PXEClient"));
        assert!(boot.pxe_vendor_options);
    }
    // UEFI HTTP boot: a URL, vendor class echoed.
    for (arch, file) in [
        (16u16, "http://10.99.0.1:8080/assets/ipxe.efi"),
        (19, "http://10.99.0.1:8080/assets/ipxe-arm64.efi"),
    ] {
        let opts = vec![
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture(arch)),
        ];
        let (r, _) = reply(run(
            &c,
            &req(KNOWN, MessageType::Discover, opts),
            Port::Dhcp,
            &mut Pool::default(),
        ));
        let boot = r.boot.unwrap();
        assert_eq!(boot.file, file);
        assert_eq!(boot.vendor_class, Some("HTTPClient"));
    }
    // An architecture with no iPXE build is refused, not guessed.
    let d = run(
        &c,
        &req(KNOWN, MessageType::Discover, pxe(6)),
        Port::Dhcp,
        &mut Pool::default(),
    );
    assert!(
        matches!(d, Decision::Ignore(ref w) if w.to_string().contains("architecture 6")),
        "{d:?}"
    );
}

#[test]
fn ipxe_gets_the_script_not_the_binary() {
    let c = cfg(false);
    let mut opts = pxe(0);
    opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let (r, _) = reply(run(
        &c,
        &req(KNOWN, MessageType::Discover, opts),
        Port::Dhcp,
        &mut Pool::default(),
    ));
    assert_eq!(r.boot.unwrap().file, "http://10.99.0.1:8080/boot.ipxe");
}

#[test]
fn proxy_mode_never_assigns_addresses() {
    let c = cfg(false);
    let mut pool = Pool::default();
    let (r, change) = reply(run(
        &c,
        &req(KNOWN, MessageType::Discover, pxe(7)),
        Port::Dhcp,
        &mut pool,
    ));
    assert_eq!(r.msg_type, MessageType::Offer);
    assert!(r.assign.is_none() && change.is_none());
    // The PXE client's follow-up REQUEST on 4011 is acknowledged with the boot file.
    let (r, _) = reply(run(
        &c,
        &req(KNOWN, MessageType::Request, pxe(7)),
        Port::Proxy,
        &mut pool,
    ));
    assert_eq!(r.msg_type, MessageType::Ack);
    assert!(r.assign.is_none());
    assert_eq!(r.boot.unwrap().file, "ipxe.efi");
    // A REQUEST to the LAN's DHCP server on 67 is not ours to answer.
    assert!(matches!(
        run(
            &c,
            &req(KNOWN, MessageType::Request, pxe(7)),
            Port::Dhcp,
            &mut pool
        ),
        Decision::Ignore(_)
    ));
    // Nor is an ordinary (non-PXE) client.
    assert!(matches!(
        run(
            &c,
            &req(KNOWN, MessageType::Discover, vec![]),
            Port::Dhcp,
            &mut pool
        ),
        Decision::Ignore(_)
    ));
}

#[test]
fn unknown_macs_get_nothing_unless_configured() {
    let mut c = cfg(true);
    let d = run(
        &c,
        &req(UNKNOWN, MessageType::Discover, pxe(0)),
        Port::Dhcp,
        &mut Pool::default(),
    );
    assert!(
        matches!(d, Decision::Ignore(ref w) if w.to_string().contains("unknown MAC")),
        "{d:?}"
    );
    c.unknown_machines = UnknownMachines::Boot;
    let (r, _) = reply(run(
        &c,
        &req(UNKNOWN, MessageType::Discover, pxe(0)),
        Port::Dhcp,
        &mut Pool::default(),
    ));
    assert_eq!(r.boot.unwrap().file, "undionly.kpxe");
}

#[test]
fn full_mode_dora_with_durable_change() {
    let c = cfg(true);
    let mut pool = Pool::default();
    let (offer, change) = reply(run(
        &c,
        &req(KNOWN, MessageType::Discover, pxe(0)),
        Port::Dhcp,
        &mut pool,
    ));
    assert!(change.is_none(), "an offer is not persisted");
    let a = offer.assign.unwrap();
    assert_eq!(a.yiaddr, ip("10.99.0.100"));
    assert_eq!(a.netmask, ip("255.255.255.0"));
    assert_eq!(a.router, Some(ip("10.99.0.1")));
    assert_eq!(a.hostname.as_deref(), Some("w-1"));
    let mut opts = pxe(0);
    opts.push(DhcpOption::RequestedIpAddress(a.yiaddr));
    opts.push(DhcpOption::ServerIdentifier(ip("10.99.0.1")));
    let (ack, change) = reply(run(
        &c,
        &req(KNOWN, MessageType::Request, opts),
        Port::Dhcp,
        &mut pool,
    ));
    assert_eq!(ack.msg_type, MessageType::Ack);
    match change {
        Some(LeaseChange::Bind(l)) => {
            assert_eq!(l.ip, a.yiaddr);
            assert_eq!(l.expires, 1000 + 3600);
        }
        other => panic!("{other:?}"),
    }
    // An OS DHCP client (no PXE) on the same machine gets the address, no boot file.
    let (r, _) = reply(run(
        &c,
        &req(KNOWN, MessageType::Discover, vec![]),
        Port::Dhcp,
        &mut pool,
    ));
    assert_eq!(r.assign.unwrap().yiaddr, a.yiaddr);
    assert!(r.boot.is_none());
}

#[test]
fn fixed_addresses_and_naks() {
    let c = cfg(true);
    let mut pool = Pool::default();
    let (offer, _) = reply(run(
        &c,
        &req(FIXED, MessageType::Discover, vec![]),
        Port::Dhcp,
        &mut pool,
    ));
    assert_eq!(offer.assign.unwrap().yiaddr, ip("10.99.0.12"));
    // Asking for another address is refused with a NAK (authoritative).
    let (nak, change) = reply(run(
        &c,
        &req(
            FIXED,
            MessageType::Request,
            vec![DhcpOption::RequestedIpAddress(ip("10.99.0.150"))],
        ),
        Port::Dhcp,
        &mut pool,
    ));
    assert_eq!(nak.msg_type, MessageType::Nak);
    assert!(change.is_none());
    // Another server was chosen: silence.
    let d = run(
        &c,
        &req(
            KNOWN,
            MessageType::Request,
            vec![
                DhcpOption::RequestedIpAddress(ip("10.99.0.100")),
                DhcpOption::ServerIdentifier(ip("10.99.0.254")),
            ],
        ),
        Port::Dhcp,
        &mut pool,
    );
    assert!(matches!(d, Decision::Ignore(_)));
}

#[test]
fn relayed_requests_use_the_relay_subnet() {
    let c = cfg(true);
    let mut pool = Pool::default();
    let mut r = req(KNOWN, MessageType::Discover, pxe(7));
    r.giaddr = ip("10.98.0.1");
    let (offer, _) = reply(run(&c, &r, Port::Dhcp, &mut pool));
    let a = offer.assign.clone().unwrap();
    assert_eq!(a.yiaddr, ip("10.98.0.100"));
    assert_eq!(a.router, Some(ip("10.98.0.1")));
    assert_eq!(
        destination(&r, &offer, Port::Dhcp, "10.98.0.1:67".parse().unwrap(), 67),
        Dest::To("10.98.0.1:67".parse().unwrap())
    );
    r.giaddr = ip("10.97.0.1");
    assert!(
        matches!(run(&c, &r, Port::Dhcp, &mut pool), Decision::Ignore(ref w) if w.to_string().contains("no subnet"))
    );
}

#[test]
fn encoded_replies_carry_pxe_options() {
    let c = cfg(false);
    let r = req(KNOWN, MessageType::Discover, pxe(0));
    let (rep, _) = reply(run(&c, &r, Port::Dhcp, &mut Pool::default()));
    let bytes = crate::edge::dhcp::packet::encode(&r, &rep);
    assert!(bytes.len() >= 300);
    let m = crate::edge::dhcp::packet::parse_reply(&bytes).unwrap();
    assert_eq!(m.xid(), 0x1234);
    assert_eq!(m.siaddr(), ip("10.99.0.1"));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        m.fname_str()
            .unwrap()
            .unwrap()
            .trim_end_matches(char::from(0)),
        "undionly.kpxe"
    );
    assert_eq!(
        m.opts().get(dhcproto::v4::OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert!(
        m.opts()
            .get(dhcproto::v4::OptionCode::ClientMachineIdentifier)
            .is_some(),
        "option 97 echoed"
    );
    assert_eq!(
        m.opts().get(dhcproto::v4::OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
}

const SRC: &str = "0.0.0.0:68";
const BCAST: &str = "255.255.255.255:68";

/// RFC 2131 4.1: who gets an OFFER/ACK/NAK, by broadcast bit, ciaddr, giaddr.
#[test]
fn replies_go_where_rfc_2131_says() {
    let c = cfg(true);
    let mut pool = Pool::default();
    // Broadcast bit clear, no ciaddr: unicast to yiaddr (after teaching the
    // kernel the client's MAC).
    let r = req(KNOWN, MessageType::Discover, pxe(0));
    let (offer, _) = reply(run(&c, &r, Port::Dhcp, &mut pool));
    let yiaddr = offer.assign.as_ref().unwrap().yiaddr;
    assert_eq!(
        destination(&r, &offer, Port::Dhcp, SRC.parse().unwrap(), 67),
        Dest::Unicast(yiaddr)
    );
    // Broadcast bit set: broadcast, and the flags are copied into the reply.
    let mut rb = r.clone();
    rb.flags = BROADCAST;
    assert_eq!(
        destination(&rb, &offer, Port::Dhcp, SRC.parse().unwrap(), 67),
        Dest::To(BCAST.parse().unwrap())
    );
    let m = parse_reply(&encode(&rb, &offer)).unwrap();
    assert!(m.flags().broadcast());
    // A NAK with giaddr zero is broadcast, even to a client with a ciaddr.
    let mut renew = req(
        FIXED,
        MessageType::Request,
        vec![DhcpOption::RequestedIpAddress(ip("10.99.0.150"))],
    );
    renew.ciaddr = ip("10.99.0.150");
    let (nak, _) = reply(run(&c, &renew, Port::Dhcp, &mut pool));
    assert_eq!(nak.msg_type, MessageType::Nak);
    assert_eq!(
        destination(
            &renew,
            &nak,
            Port::Dhcp,
            "10.99.0.150:68".parse().unwrap(),
            67
        ),
        Dest::To(BCAST.parse().unwrap())
    );
    let m = parse_reply(&encode(&renew, &nak)).unwrap();
    assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED, "a NAK carries no ciaddr");
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    // A relayed NAK goes to the relay with the broadcast bit set (4.3.2).
    let mut relayed = renew.clone();
    relayed.ciaddr = Ipv4Addr::UNSPECIFIED;
    relayed.giaddr = ip("10.98.0.1");
    relayed.requested_ip = Some(ip("10.99.0.150"));
    let (nak, _) = reply(run(&c, &relayed, Port::Dhcp, &mut pool));
    assert_eq!(nak.msg_type, MessageType::Nak);
    let m = parse_reply(&encode(&relayed, &nak)).unwrap();
    assert!(m.flags().broadcast(), "relayed NAK has the broadcast bit");
    assert_eq!(
        destination(
            &relayed,
            &nak,
            Port::Dhcp,
            "10.98.0.1:67".parse().unwrap(),
            67
        ),
        Dest::To("10.98.0.1:67".parse().unwrap())
    );
}

#[test]
fn inform_is_answered_with_parameters_and_no_lease() {
    let c = cfg(true);
    let mut r = req(KNOWN, MessageType::Inform, vec![]);
    r.ciaddr = ip("10.99.0.42");
    let (ack, changes) = reply(run(&c, &r, Port::Dhcp, &mut Pool::default()));
    assert_eq!(ack.msg_type, MessageType::Ack);
    assert!(changes.is_none(), "INFORM changes no lease");
    let m = parse_reply(&encode(&r, &ack)).unwrap();
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.ciaddr(), ip("10.99.0.42"));
    let o = m.opts();
    assert!(
        o.get(dhcproto::v4::OptionCode::AddressLeaseTime).is_none(),
        "no lease time (4.3.5)"
    );
    assert_eq!(
        o.get(dhcproto::v4::OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(ip("255.255.255.0")))
    );
    assert_eq!(
        destination(&r, &ack, Port::Dhcp, "10.99.0.42:68".parse().unwrap(), 67),
        Dest::To("10.99.0.42:68".parse().unwrap())
    );
    // From outside the subnet: not ours to answer.
    r.ciaddr = ip("192.168.7.7");
    assert!(matches!(
        run(&c, &r, Port::Dhcp, &mut Pool::default()),
        Decision::Ignore(_)
    ));
}

#[test]
fn relay_agent_information_is_echoed_unchanged_and_last() {
    let c = cfg(true);
    // Circuit id "eth0/1" and remote id 00:11:22:33:44:55, in that order.
    let rai = [
        1u8, 6, b'e', b't', b'h', b'0', b'/', b'1', 2, 6, 0, 0x11, 0x22, 0x33, 0x44, 0x55,
    ];
    let m: Mac = KNOWN.parse().unwrap();
    let mut bytes = build_request(m, MessageType::Discover, 7, pxe(0));
    // Relayed: giaddr set, option 82 appended before END as a relay does.
    bytes[24..28].copy_from_slice(&[10, 98, 0, 1]);
    let end = bytes.iter().rposition(|b| *b == 255).unwrap();
    let mut opt = vec![82, rai.len() as u8];
    opt.extend_from_slice(&rai);
    bytes.splice(end..end, opt);
    let r = decode(&bytes).unwrap();
    let (offer, _) = reply(run(&c, &r, Port::Dhcp, &mut Pool::default()));
    let out = encode(&r, &offer);
    // 82 is the last option before END, byte for byte.
    let last = crate::edge::dhcp::packet::options(&out).pop();
    assert_eq!(last, Some((82, rai.to_vec())));
}
