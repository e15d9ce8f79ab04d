//! DHCP corners with real clients in namespaces: the ping check before an
//! OFFER (a squatter on an address busybox udhcpc would get), and the unicast
//! to a client without an address (RFC 2131 4.1, broadcast bit clear).

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
    let v = netns::udhcpc(lab.path(), &client, &[]).expect("lease");
    assert_eq!(v["ip"], "10.94.0.101", "the squatted address was offered");
    k.wait_for("answers on 10.94.0.100", Duration::from_secs(2));
    // Durable: after a restart the address is still held out, even when asked for.
    k.stop();
    let _k = Kiln::start(&lab.config(), Some(&net.server));
    let v = netns::udhcpc(lab.path(), &late, &["-r", "10.94.0.100"]).expect("lease after restart");
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
    // busybox udhcpc leaves the broadcast bit clear (without -B).
    let v = netns::udhcpc(lab.path(), &client, &[]).expect("lease");
    let ip = v["ip"].clone();
    // kiln taught its kernel the client's MAC for the unicast.
    let neigh = netns::sh(&["ip", "-n", &net.server, "neigh", "show", &ip]).unwrap();
    assert!(
        neigh.contains("52:54:00:66:00:09"),
        "no neighbour entry for {ip}: {neigh:?}"
    );
    // With -B the reply is broadcast, and the lease is the same.
    let v = netns::udhcpc(lab.path(), &client, &["-B"]).expect("lease with -B");
    assert_eq!(v["ip"], ip);
}
