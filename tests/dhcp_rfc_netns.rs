//! DHCP corners with real clients in namespaces (busybox `udhcpc -s <our
//! hook>`, raw sockets): the ping check before an OFFER of an address a
//! squatter holds, the unicast to a client without an address (RFC 2131 4.1,
//! broadcast bit clear), INFORM, NAK and option 82.

mod common;

use std::time::Duration;

use common::netns::{self, Net};
use common::{Kiln, Lab};

fn yaml(extra: &str) -> String {
    format!("interface: br0\nserver_address: 10.94.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\nunknown_machines: boot\ndefault_profile: worker\ndhcp:\n  mode: full\n  subnet: 10.94.0.0/24\n  range: [10.94.0.100, 10.94.0.110]\n  lease_time: 1h\n{extra}")
}

#[test]
fn a_squatted_address_is_found_by_ping_and_never_offered() {
    if netns::skip(&["busybox"]) {
        return;
    }
    let mut net = Net::new("pc", "10.94.0.1/24");
    let squatter = net.add_client("52:54:00:66:00:01");
    let client = net.add_client("52:54:00:66:00:02");
    let late = net.add_client("52:54:00:66:00:03");
    // A device kiln does not know sits on the first address of the range.
    netns::sh(&[
        "ip",
        "-n",
        &squatter,
        "addr",
        "add",
        "10.94.0.100/24",
        "dev",
        "eth0",
    ])
    .unwrap();
    let lab = Lab::new(&yaml("  ping_check: 300ms\n"), "machines: []\n");
    let mut k = Kiln::start(&lab.config(), Some(&net.server));
    let v = dhcp_client(&lab, &client, &[]).expect("lease");
    assert_eq!(v["ip"], "10.94.0.101", "the squatted address was offered");
    k.wait_for("answers on 10.94.0.100", Duration::from_secs(2));
    // Durable: after a restart the address is still held out, even when asked for.
    k.stop();
    let _k = Kiln::start(&lab.config(), Some(&net.server));
    let v = dhcp_client(&lab, &late, &["-r", "10.94.0.100"]).expect("lease after restart");
    assert_ne!(v["ip"], "10.94.0.100");
}

#[test]
fn a_client_without_the_broadcast_bit_gets_a_unicast_to_its_new_address() {
    if netns::skip(&["busybox"]) {
        return;
    }
    let mut net = Net::new("uc", "10.94.0.1/24");
    let client = net.add_client("52:54:00:66:00:09");
    let lab = Lab::new(&yaml(""), "machines: []\n");
    let _k = Kiln::start(&lab.config(), Some(&net.server));
    // busybox's client (`udhcpc -s <our hook>`, without -B) leaves the broadcast bit clear.
    let v = dhcp_client(&lab, &client, &[]).expect("lease");
    let ip = v["ip"].clone();
    // kiln taught its kernel the client's MAC for the unicast.
    let neigh = netns::sh(&["ip", "-n", &net.server, "neigh", "show", &ip]).unwrap();
    assert!(
        neigh.contains("52:54:00:66:00:09"),
        "no neighbour entry for {ip}: {neigh:?}"
    );
    // With -B the reply is broadcast, and the lease is the same.
    let v = dhcp_client(&lab, &client, &["-B"]).expect("lease with -B");
    assert_eq!(v["ip"], ip);
}

/// One exchange by busybox `udhcpc -s <our hook>` in `ns` (never its default
/// hook, which would rewrite resolv.conf): what the server bound.
fn dhcp_client(
    lab: &Lab,
    ns: &str,
    args: &[&str],
) -> Option<std::collections::HashMap<String, String>> {
    netns::udhcpc(lab.path(), ns, args)
}

/// INFORM, NAK and relay agent information on the wire, from real sockets
/// in a client namespace: INFORM's ACK comes to ciaddr with no lease; a NAK
/// is broadcast; a relayed request's reply goes to the relay with option 82
/// unchanged and last.
#[test]
fn inform_nak_and_option_82_on_the_wire() {
    use dhcproto::v4::{MessageType, OptionCode};
    use kiln::edge::dhcp::packet::build_request;
    use kiln::model::mac::Mac;
    if netns::skip(&[]) {
        return;
    }
    let mut net = Net::new("rf", "10.94.0.1/24");
    let client = net.add_host("52:54:00:66:00:21", "10.94.0.50/24");
    // The client namespace also plays a relay for 10.93.0.0/24.
    netns::sh(&[
        "ip",
        "-n",
        &client,
        "addr",
        "add",
        "10.93.0.1/24",
        "dev",
        "eth0",
    ])
    .unwrap();
    netns::sh(&[
        "ip",
        "-n",
        &net.server,
        "route",
        "add",
        "10.93.0.0/24",
        "via",
        "10.94.0.50",
    ])
    .unwrap();
    let lab = Lab::new(
        &yaml(
            "  relay_subnets:\n    - {subnet: 10.93.0.0/24, range: [10.93.0.100, 10.93.0.110]}\n",
        ),
        "machines: []\n",
    );
    let _k = Kiln::start(&lab.config(), Some(&net.server));
    let mac: Mac = "52:54:00:66:00:21".parse().unwrap();
    let bcast: std::net::SocketAddr = "255.255.255.255:67".parse().unwrap();

    // INFORM from a configured client: an ACK to ciaddr, parameters, no lease.
    let sock = netns::udp_socket_in(&client, "0.0.0.0:68".parse().unwrap());
    let mut inform = build_request(mac, MessageType::Inform, 0x11, vec![]);
    inform[12..16].copy_from_slice(&[10, 94, 0, 50]);
    sock.send_to(&inform, bcast).unwrap();
    let got = netns::dhcp_replies(&sock, Duration::from_millis(800));
    let (_, ack) = got
        .iter()
        .find(|(_, m)| m.xid() == 0x11)
        .expect("INFORM answered");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), std::net::Ipv4Addr::UNSPECIFIED);
    assert!(ack.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(ack.opts().get(OptionCode::SubnetMask).is_some());

    // A REQUEST for an address outside the range, with ciaddr set (a renewal
    // of a wrong address): the NAK is broadcast, not unicast to ciaddr. The
    // client drops the address first, so only a broadcast can reach it.
    netns::sh(&[
        "ip",
        "-n",
        &client,
        "addr",
        "del",
        "10.94.0.50/24",
        "dev",
        "eth0",
    ])
    .unwrap();
    let mut renew = build_request(mac, MessageType::Request, 0x12, vec![]);
    renew[12..16].copy_from_slice(&[10, 94, 0, 50]);
    sock.send_to(&renew, bcast).unwrap();
    let got = netns::dhcp_replies(&sock, Duration::from_millis(800));
    let (_, nak) = got.iter().find(|(_, m)| m.xid() == 0x12).expect("NAK");
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    drop(sock);
    netns::sh(&[
        "ip",
        "-n",
        &client,
        "addr",
        "add",
        "10.94.0.50/24",
        "dev",
        "eth0",
    ])
    .unwrap();

    // Relayed through 10.94.0.50 acting as relay for 10.93.0.0/24 (giaddr
    // there): the reply goes to the relay's port 67, option 82 echoed last.
    let relay = netns::udp_socket_in(&client, "0.0.0.0:67".parse().unwrap());
    let rai = [1u8, 4, b'p', b'o', b'r', b't', 2, 3, 0xaa, 0xbb, 0xcc];
    let mut d = build_request(mac, MessageType::Discover, 0x13, vec![]);
    d[24..28].copy_from_slice(&[10, 93, 0, 1]); // giaddr
    let end = d.iter().rposition(|b| *b == 255).unwrap();
    let mut opt = vec![82, rai.len() as u8];
    opt.extend_from_slice(&rai);
    d.splice(end..end, opt);
    relay
        .send_to(&d, "10.94.0.1:67".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    let got = netns::dhcp_replies(&relay, Duration::from_millis(800));
    let (raw, offer) = got
        .iter()
        .find(|(_, m)| m.xid() == 0x13)
        .expect("relayed OFFER at the relay");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert!(
        (0x0a5d0064..=0x0a5d006e).contains(&u32::from(offer.yiaddr())),
        "an address of the relay's subnet: {}",
        offer.yiaddr()
    );
    // Byte for byte, and the last option before END.
    let last = kiln::edge::dhcp::packet::options(raw).pop();
    assert_eq!(last, Some((82, rai.to_vec())));
}
