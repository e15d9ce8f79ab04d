//! Store faults with real components: a state_dir on a tmpfs filled until
//! writes fail, a corrupted record, a provisioned cluster's secrets removed
//! or swapped, and DECLINE probation across a restart.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{self, Net};
use common::{is_root, run_kiln, skip_unless, Kiln, Lab};
use dhcproto::v4::{DhcpOption, MessageType};
use kiln::edge::dhcp::packet::build_request;
use kiln::model::mac::Mac;

const YAML: &str = "interface: br0\nserver_address: 10.97.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\nunknown_machines: boot\ndefault_profile: worker\ndhcp:\n  mode: full\n  subnet: 10.97.0.0/24\n  range: [10.97.0.100, 10.97.0.250]\n  lease_time: 1h\n";

fn mac(i: u32) -> String {
    format!("52:54:00:77:{:02x}:{:02x}", (i >> 8) as u8, i as u8)
}

/// Fill the filesystem holding `dir` until a write fails.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let f = dir.join("filler");
    for bs in ["1M", "4k", "512"] {
        let _ = Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", f.display()),
                &format!("bs={bs}"),
                "oflag=append",
                "conv=notrunc",
            ])
            .output();
    }
    f
}

#[test]
fn a_full_disk_stops_kiln_and_no_acked_lease_is_lost() {
    if netns::skip(&["busybox"]) || skip_unless(is_root(), "root, to mount a tmpfs") {
        return;
    }
    let mut net = Net::new("fs", "10.97.0.1/24");
    let client = net.add_client(&mac(0));
    let lab = Lab::new(YAML, "machines: []\n");
    let state = lab.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());

    let mut k = Kiln::start(&lab.config(), Some(&net.server));
    let set_mac = |m: &str| {
        for a in [
            &["link", "set", "eth0", "down"][..],
            &["link", "set", "eth0", "address", m],
            &["link", "set", "eth0", "up"],
        ] {
            let mut c = vec!["-n", client.as_str()];
            c.extend_from_slice(a);
            netns::sh(&[&["ip"][..], &c].concat()).unwrap();
        }
    };
    let mut acked: HashMap<Ipv4Addr, String> = HashMap::new();
    for i in 1..=3 {
        set_mac(&mac(i));
        let v = netns::udhcpc(lab.path(), &client, &[]).expect("lease before the disk fills");
        acked.insert(v["ip"].parse().unwrap(), mac(i));
    }
    let filler = fill(&state);
    // Keep asking for new leases: each is either ACKed (so it must be on
    // disk) or not answered; soon a commit fails and kiln stops.
    let mut exited = None;
    for i in 4..=60 {
        if let Ok(Some(st)) = k.child.try_wait() {
            exited = Some(st);
            break;
        }
        set_mac(&mac(i));
        if let Some(v) = netns::udhcpc(lab.path(), &client, &[]) {
            acked.insert(v["ip"].parse().unwrap(), mac(i));
        }
    }
    let t0 = Instant::now();
    while exited.is_none() && t0.elapsed() < Duration::from_secs(10) {
        exited = k.child.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = exited.expect("kiln kept running on a full disk");
    assert!(!st.success(), "kiln must exit non-zero: {st}");
    let logs = k.logs();
    assert!(logs.contains("store failed"), "{logs}");
    assert!(
        !logs.contains(" ack ") || logs.contains("not answering: lease not stored"),
        "{logs}"
    );

    // Space freed, kiln restarts on the same store: every ACKed lease is there.
    std::fs::remove_file(&filler).unwrap();
    let mut k = Kiln::start(&lab.config(), Some(&net.server));
    k.stop();
    let store = kiln::store::Store::open(&state).unwrap();
    let stored: HashMap<Ipv4Addr, String> = store
        .leases()
        .all()
        .unwrap()
        .into_iter()
        .map(|l| (l.ip, l.mac.to_string()))
        .collect();
    for (ip, m) in &acked {
        assert_eq!(
            stored.get(ip),
            Some(m),
            "ACKed lease {ip} for {m} lost: {stored:?}"
        );
    }
}

#[test]
fn a_corrupted_record_stops_startup_naming_it() {
    let lab = Lab::new(
        "interface: lo\nserver_address: 127.0.0.1\nstate_dir: ./state\n",
        "machines: []\n",
    );
    let state = lab.path().join("state");
    drop(kiln::store::Store::open(&state).unwrap());
    {
        let db = redb::Database::create(state.join("kiln.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let t: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("machines");
            let mut t = tx.open_table(t).unwrap();
            t.insert("52:54:00:aa:00:01", b"{\"mac\": 7".as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let cfg = lab.config();
    let (ok, out) = run_kiln(None, &["serve", "--config", cfg.to_str().unwrap()]);
    assert!(!ok, "started on a corrupted store: {out}");
    assert!(
        out.contains("machines record \"52:54:00:aa:00:01\" is unreadable"),
        "{out}"
    );
    assert!(out.contains("restore"), "{out}");
}

#[test]
fn a_provisioned_clusters_secrets_must_be_its_own() {
    let ports = <common::Ports as common::LoPorts>::any();
    let yaml = format!(
        "{}state_dir: ./state\nclusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n",
        common::LoPorts::lo_yaml(&ports)
    );
    let lab = Lab::new(&yaml, "machines: []\n");
    let mut k = Kiln::start(&lab.config(), None);
    k.stop();
    let secrets = lab.path().join("state/lab/secrets.yaml");
    let original = std::fs::read(&secrets).unwrap();
    let cfg = lab.config();
    // Gone: refused, never a new PKI.
    std::fs::remove_file(&secrets).unwrap();
    let (ok, out) = run_kiln(None, &["serve", "--config", cfg.to_str().unwrap()]);
    assert!(
        !ok && out.contains("is missing, but kiln already provisioned this cluster"),
        "{out}"
    );
    assert!(!secrets.exists(), "a new PKI was written");
    // Another cluster's secrets in its place: refused, naming the CA.
    let other = Lab::new(&yaml.replace("./state", "./state2"), "machines: []\n");
    let mut k2 = Kiln::start(&other.config(), None);
    k2.stop();
    std::fs::copy(other.path().join("state2/lab/secrets.yaml"), &secrets).unwrap();
    let (ok, out) = run_kiln(None, &["serve", "--config", cfg.to_str().unwrap()]);
    assert!(!ok && out.contains("holds another"), "{out}");
    // Its own again: it starts.
    std::fs::write(&secrets, &original).unwrap();
    let mut k = Kiln::start(&lab.config(), None);
    k.stop();
    // A cluster an older kiln bootstrapped has no pins yet: its record still
    // says it was provisioned, so a missing file is refused all the same.
    {
        let store = kiln::store::Store::open(&lab.path().join("state")).unwrap();
        store
            .clusters()
            .update("lab", |r| {
                r.ca_fingerprints.clear();
                r.bootstrapped_at = Some(1_700_000_000);
            })
            .unwrap();
    }
    std::fs::remove_file(&secrets).unwrap();
    let (ok, out) = run_kiln(None, &["serve", "--config", cfg.to_str().unwrap()]);
    assert!(!ok && out.contains("bootstrapped at 1700000000"), "{out}");
    assert!(!secrets.exists(), "a new PKI was written");
}

fn exchange(
    sock: &std::net::UdpSocket,
    pkt: Vec<u8>,
    want: MessageType,
) -> Option<dhcproto::v4::Message> {
    let mut pkt = pkt;
    pkt[10] |= 0x80; // BROADCAST: this socket cannot receive a unicast yet
    let bcast: SocketAddr = "255.255.255.255:67".parse().unwrap();
    for _ in 0..4 {
        sock.send_to(&pkt, bcast).unwrap();
        let got = netns::dhcp_replies(sock, Duration::from_millis(700));
        if let Some((_, m)) = got
            .into_iter()
            .find(|(_, m)| m.opts().msg_type() == Some(want))
        {
            return Some(m);
        }
    }
    None
}

#[test]
fn a_declined_address_stays_on_probation_across_a_restart() {
    if netns::skip(&[]) {
        return;
    }
    let mut net = Net::new("dc", "10.97.0.1/24");
    let client = net.add_client(&mac(1));
    let lab = Lab::new(YAML, "machines: []\n");
    let mut k = Kiln::start(&lab.config(), Some(&net.server));
    let sock = netns::udp_socket_in(&client, "0.0.0.0:68".parse().unwrap());
    let m1: Mac = mac(1).parse().unwrap();
    let sid = DhcpOption::ServerIdentifier("10.97.0.1".parse().unwrap());
    let offer = exchange(
        &sock,
        build_request(m1, MessageType::Discover, 1, vec![]),
        MessageType::Offer,
    )
    .expect("offer");
    let ip = offer.yiaddr();
    let req = vec![DhcpOption::RequestedIpAddress(ip), sid.clone()];
    exchange(
        &sock,
        build_request(m1, MessageType::Request, 2, req),
        MessageType::Ack,
    )
    .expect("ack");
    // The client's ARP probe found someone on it: DECLINE (no reply).
    let mut d = build_request(
        m1,
        MessageType::Decline,
        3,
        vec![DhcpOption::RequestedIpAddress(ip), sid],
    );
    d[10] |= 0x80;
    sock.send_to(&d, "255.255.255.255:67".parse::<SocketAddr>().unwrap())
        .unwrap();
    k.wait_for("declined", Duration::from_secs(5));
    k.stop();
    // After a restart nobody is offered it, not even when asking for it.
    let _k = Kiln::start(&lab.config(), Some(&net.server));
    for i in 2..=4 {
        let m: Mac = mac(i).parse().unwrap();
        let o = exchange(
            &sock,
            build_request(
                m,
                MessageType::Discover,
                10 + i,
                vec![DhcpOption::RequestedIpAddress(ip)],
            ),
            MessageType::Offer,
        )
        .expect("offer after restart");
        assert_ne!(
            o.yiaddr(),
            ip,
            "a declined address was offered again after a restart"
        );
    }
    let o = exchange(
        &sock,
        build_request(m1, MessageType::Discover, 20, vec![]),
        MessageType::Offer,
    )
    .unwrap();
    assert_ne!(o.yiaddr(), ip);
}
