//! The DHCP server against real clients inside network namespaces: busybox
//! `udhcpc -s <our script>` (PXE, UEFI, iPXE and plain variants), perfdhcp (1,000 clients), and
//! PXE packets for proxy mode.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::netns::{self, Net};
use common::{Kiln, Lab};
use dhcproto::v4::{Architecture, DhcpOption, MessageType, OptionCode};
use kiln::edge::dhcp::packet::{build_request, parse_reply};
use kiln::model::mac::Mac;

const MACHINES: &str = "machines:
  - mac: 52:54:00:aa:00:01
    hostname: cp-1
    profile: controlplane
  - mac: 52:54:00:aa:00:02
    hostname: w-fixed
    profile: worker
    ip: 10.99.0.12
  - mac: 52:54:00:aa:00:03
    hostname: w-3
    profile: worker
";

fn full_yaml(extra: &str) -> String {
    format!(
        "interface: br0\nserver_address: 10.99.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\ndhcp:\n  mode: full\n  subnet: 10.99.0.0/21\n  range: [10.99.0.100, 10.99.7.250]\n  router: 10.99.0.1\n  dns: [10.99.0.1]\n  lease_time: 1h\n{extra}"
    )
}

/// Run busybox's DHCP client once in `ns` with our script (`-s `, never its
/// default hook); returns the variables the script saw on `bound`.
fn dhcp_client(lab: &Lab, ns: &str, args: &[&str]) -> Option<HashMap<String, String>> {
    netns::udhcpc(lab.path(), ns, args)
}

const BIOS: &[&str] = &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"];
const UEFI: &[&str] = &["-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"];
const IPXE: &[&str] = &[
    "-V",
    "PXEClient:Arch:00000:UNDI:002001",
    "-x",
    "0x5d:0000",
    "-x",
    "0x4d:69505845",
];

#[test]
fn full_mode_with_busybox_dhcp_clients() {
    if netns::skip(&["busybox"]) {
        return;
    }
    let mut net = Net::new("fd", "10.99.0.1/21");
    let known = net.add_client("52:54:00:aa:00:01");
    let fixed = net.add_client("52:54:00:aa:00:02");
    let unknown = net.add_client("52:54:00:aa:00:99");
    let third = net.add_client("52:54:00:aa:00:03");
    let lab = Lab::new(&full_yaml(""), MACHINES);
    let mut k = Kiln::start(&lab.config(), Some(&net.server));

    // BIOS PXE firmware: address, next-server, undionly.kpxe, hostname.
    let v = dhcp_client(&lab, &known, BIOS).expect("BIOS PXE lease");
    assert_eq!(v["ip"], "10.99.0.100");
    assert_eq!(v["siaddr"], "10.99.0.1");
    assert_eq!(v["boot_file"], "undionly.kpxe");
    assert_eq!(v["hostname"], "cp-1");
    assert_eq!(v["subnet"], "255.255.248.0");
    assert_eq!(v["router"], "10.99.0.1");
    assert_eq!(v["serverid"], "10.99.0.1");
    // UEFI firmware, same machine: same address, the EFI binary.
    let v = dhcp_client(&lab, &known, UEFI).expect("UEFI lease");
    assert_eq!(
        (v["ip"].as_str(), v["boot_file"].as_str()),
        ("10.99.0.100", "ipxe.efi")
    );
    // iPXE (user class): the HTTP script, not the binary again.
    let v = dhcp_client(&lab, &known, IPXE).expect("iPXE lease");
    assert_eq!(v["boot_file"], "http://10.99.0.1:8080/boot.ipxe");
    // The installed OS's plain DHCP client: the address, no boot file.
    let v = dhcp_client(&lab, &known, &[]).expect("plain lease");
    assert_eq!(v["ip"], "10.99.0.100");
    assert!(!v.contains_key("boot_file"), "{v:?}");
    // A fixed address from the inventory.
    let v = dhcp_client(&lab, &fixed, BIOS).expect("fixed lease");
    assert_eq!(v["ip"], "10.99.0.12");
    // An unknown MAC gets no answer at all.
    assert!(
        dhcp_client(&lab, &unknown, BIOS).is_none(),
        "unknown MAC was answered"
    );
    assert!(
        k.logs().contains("ignored: unknown MAC")
            || !k.logs().contains("52:54:00:aa:00:99}: offer")
    );

    // Machines DHCP saw entered the lifecycle.
    let rec = |host: &str| {
        let o = common::api_get(&lab, "/api/v1/machines");
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|m| m["hostname"] == host)
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(rec("cp-1"), "discovered");
    assert_eq!(rec("w-3"), "unseen");
    // Restart: leases survive; a new machine does not get a taken address.
    k.stop();
    let k = Kiln::start(&lab.config(), Some(&net.server));
    let v = dhcp_client(&lab, &third, BIOS).expect("third lease");
    assert_eq!(
        v["ip"], "10.99.0.101",
        "address of a lease from before the restart was reused"
    );
    let v = dhcp_client(&lab, &known, BIOS).expect("known again");
    assert_eq!(v["ip"], "10.99.0.100");
    drop(k);
    let store = kiln::store::Store::open(&lab.path().join("state")).unwrap();
    let leases: HashMap<Ipv4Addr, Mac> = store
        .leases()
        .all()
        .unwrap()
        .into_iter()
        .map(|l| (l.ip, l.mac))
        .collect();
    assert_eq!(leases.len(), 3, "{leases:?}");
    assert_eq!(
        leases[&"10.99.0.12".parse().unwrap()],
        "52:54:00:aa:00:02".parse().unwrap()
    );
}

#[test]
fn perfdhcp_burst_of_1000_clients_gets_no_duplicate_address() {
    if netns::skip(&["perfdhcp"]) {
        return;
    }
    let mut net = Net::new("pd", "10.99.0.1/21");
    // perfdhcp sends from an address of its own (outside the pool).
    let client = net.add_host("02:00:00:00:00:01", "10.99.7.254/21");
    let lab = Lab::new(
        &full_yaml("unknown_machines: boot\ndefault_profile: worker\n"),
        MACHINES,
    );
    let mut k = Kiln::start(&lab.config(), Some(&net.server));
    let out = Command::new("ip")
        .args([
            "netns", "exec", &client, "perfdhcp", "-4", "-B", "-l", "eth0", "-R", "1000", "-n",
            "1000", "-r", "250", "-p", "30",
        ])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    k.stop();
    // Every ACK kiln sent, from its log: no address to two MACs.
    let logs = k.logs();
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut acks = 0;
    for line in logs.lines().filter(|l| l.contains(": ack ")) {
        let mac = line
            .split("mac=")
            .nth(1)
            .map(|s| s[..17].to_string())
            .unwrap();
        let ip = line
            .split(": ack ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap()
            .to_string();
        acks += 1;
        if let Some(prev) = owner.insert(ip.clone(), mac.clone()) {
            assert_eq!(prev, mac, "{ip} acknowledged to two MACs");
        }
    }
    assert!(
        acks >= 990,
        "only {acks} ACKs for 1000 exchanges:\n{report}"
    );
    // perfdhcp's own count of completed exchanges.
    let received: Vec<u64> = report
        .lines()
        .filter(|l| l.trim_start().starts_with("received packets:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(received.len(), 2, "{report}");
    assert!(received.iter().all(|&r| r >= 990), "drops: {report}");
    // And the store agrees with what was acknowledged.
    let store = kiln::store::Store::open(&lab.path().join("state")).unwrap();
    let leases = store.leases().all().unwrap();
    assert_eq!(leases.len(), owner.len(), "store and ACKs differ");
    for l in leases {
        assert_eq!(owner.get(&l.ip.to_string()), Some(&l.mac.to_string()));
    }
}

fn pxe_opts(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(format!("PXEClient:Arch:{arch:05}:UNDI:003016").into_bytes()),
        DhcpOption::ClientSystemArchitecture(Architecture(arch)),
        DhcpOption::ClientMachineIdentifier(vec![0; 17]),
    ]
}

fn recv(sock: &std::net::UdpSocket) -> Option<dhcproto::v4::Message> {
    let mut buf = [0u8; 1500];
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    parse_reply(&buf[..n])
}

#[test]
fn proxy_mode_answers_pxe_only_and_hands_out_no_address() {
    if netns::skip(&[]) {
        return;
    }
    let mut net = Net::new("px", "10.99.0.1/24");
    let client = net.add_client("52:54:00:aa:00:01");
    // The LAN's own DHCP server gave the client its address.
    netns::sh(&[
        "ip",
        "-n",
        &client,
        "addr",
        "add",
        "10.99.0.50/24",
        "dev",
        "eth0",
    ])
    .unwrap();
    let lab = Lab::new("interface: br0\nserver_address: 10.99.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\n", MACHINES);
    let _k = Kiln::start(&lab.config(), Some(&net.server));
    let sock = netns::udp_socket_in(&client, "0.0.0.0:68".parse().unwrap());
    let bcast: SocketAddr = "255.255.255.255:67".parse().unwrap();
    let mac: Mac = "52:54:00:aa:00:01".parse().unwrap();

    // PXE DISCOVER (UEFI) → proxy OFFER: boot file, PXEClient, no address.
    sock.send_to(
        &build_request(mac, MessageType::Discover, 0xabc, pxe_opts(7)),
        bcast,
    )
    .unwrap();
    let offer = recv(&sock).expect("proxy offer");
    assert_eq!(offer.xid(), 0xabc);
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(offer.siaddr(), "10.99.0.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        offer.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "ipxe.efi"
    );
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert!(offer.opts().get(OptionCode::AddressLeaseTime).is_none());

    // PXE REQUEST to the boot server on 4011 → ACK, unicast back.
    let mut opts = pxe_opts(7);
    opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let mut req = build_request(mac, MessageType::Request, 0xabd, opts);
    req[12..16].copy_from_slice(&[10, 99, 0, 50]); // ciaddr
    sock.send_to(&req, "10.99.0.1:4011".parse::<SocketAddr>().unwrap())
        .unwrap();
    let ack = recv(&sock).expect("proxy ack on 4011");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(
        ack.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "http://10.99.0.1:8080/boot.ipxe"
    );
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);

    // Not a PXE client, or not in the inventory: silence.
    sock.send_to(
        &build_request(mac, MessageType::Discover, 0xabe, vec![]),
        bcast,
    )
    .unwrap();
    assert!(
        recv(&sock).is_none(),
        "answered a non-PXE client in proxy mode"
    );
    let stranger: Mac = "52:54:00:aa:00:99".parse().unwrap();
    sock.send_to(
        &build_request(stranger, MessageType::Discover, 0xabf, pxe_opts(0)),
        bcast,
    )
    .unwrap();
    assert!(recv(&sock).is_none(), "answered an unknown MAC");
    // Garbage does not stop the server.
    sock.send_to(&[1, 1, 6, 0, 0, 0], bcast).unwrap();
    let mut bad = build_request(mac, MessageType::Discover, 0xac0, vec![])[..240].to_vec();
    bad.extend([53, 1, 1, 94, 1, 0, 255]);
    sock.send_to(&bad, bcast).unwrap();
    sock.send_to(
        &build_request(mac, MessageType::Discover, 0xac1, pxe_opts(0)),
        bcast,
    )
    .unwrap();
    let again = recv(&sock).expect("still answering after garbage");
    assert_eq!(again.xid(), 0xac1);
    assert_eq!(
        again.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "undionly.kpxe"
    );
}
