//! Only the machine gets its config, with real DHCP clients in namespaces: in
//! full mode (kiln's leases) and in proxy mode (a LAN DHCP server, dnsmasq,
//! hands out the addresses; kiln only sees the traffic). A second host on
//! the boot network, which holds no lease, asks for scripts and configs.

mod common;

use std::process::Command;

use common::netns::{self, Net};
use common::{Kiln, Lab};

const MACHINES: &str = "machines:
  - {mac: 52:54:00:aa:00:02, hostname: cp-2, profile: controlplane, ip: 10.97.0.12}
  - {mac: 52:54:00:aa:00:05, hostname: cp-5, profile: controlplane}
";
const PXE: &[&str] = &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"];

/// curl in namespace `ns`: (HTTP status, body).
fn curl_in(ns: &str, url: &str) -> (String, String) {
    let c = common::curl::curl_in(ns, &[url]);
    (c.code.clone(), c.text())
}

fn config_url(script: &str) -> Option<String> {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("talos.config="))
        .map(|u| u.replace("${uuid}", "u").replace("${mac}", "m"))
}

fn addr(ns: &str, cidr: &str) {
    netns::sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"]).unwrap();
}

fn lab(dhcp: &str) -> Lab {
    let lab = Lab::new(
        &format!("interface: br0\nserver_address: 10.97.0.1\nboot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\n{dhcp}clusters:\n  lab:\n    endpoint: https://10.97.0.5:6443\n"),
        MACHINES,
    );
    lab.ipxe_stubs();
    lab
}

/// What a stranger at 10.97.0.77 gets, and that the log says why.
fn stranger_gets_nothing(k: &Kiln, stranger: &str, machine_url: &str) {
    for mac in ["52-54-00-aa-00-02", "52-54-00-aa-00-05"] {
        let (code, script) = curl_in(stranger, &format!("http://10.97.0.1:8080/ipxe/{mac}"));
        assert_eq!(code, "200");
        assert!(
            config_url(&script).is_none() && script.contains("config withheld"),
            "{mac}: {script}"
        );
    }
    // The machine's own URL, and a made-up token, from the stranger: 403.
    let (code, _) = curl_in(stranger, machine_url);
    assert_eq!(
        code, "403",
        "the machine's config URL worked from another host"
    );
    let forged = format!(
        "{}token=0123456789abcdef0123456789abcdef",
        machine_url.split("token=").next().unwrap()
    );
    assert_eq!(curl_in(stranger, &forged).0, "403");
    let logs = k.logs();
    assert!(
        logs.contains("config refused: request from 10.97.0.77"),
        "{logs}"
    );
    assert!(
        logs.contains("machine script refused: config withheld (cp-5): request from 10.97.0.77"),
        "{logs}"
    );
}

#[test]
fn full_mode_only_the_leased_machine_gets_its_config() {
    if netns::skip(&["busybox", "curl"]) {
        return;
    }
    let mut net = Net::new("tf", "10.97.0.1/24");
    let machine = net.add_client("52:54:00:aa:00:02");
    let stranger = net.add_client("52:54:00:bb:00:77");
    addr(&stranger, "10.97.0.77/24");
    let lab = lab("dhcp:\n  mode: full\n  subnet: 10.97.0.0/24\n  range: [10.97.0.100, 10.97.0.200]\n  router: 10.97.0.1\n");
    let k = Kiln::start(&lab.config(), Some(&net.server));
    // Before its lease, not even the machine gets a token.
    let v = netns::udhcpc(lab.path(), &machine, PXE).expect("a lease");
    assert_eq!(v["ip"], "10.97.0.12");
    addr(&machine, "10.97.0.12/24");
    let (code, script) = curl_in(&machine, "http://10.97.0.1:8080/ipxe/52-54-00-aa-00-02");
    assert_eq!(code, "200");
    let url = config_url(&script).unwrap_or_else(|| panic!("{script}"));
    let (code, body) = curl_in(&machine, &url);
    assert_eq!(code, "200", "{body}");
    let docs = kiln::model::yaml::from_yaml(&body).unwrap();
    assert_eq!(docs[0]["machine"]["type"], "controlplane");
    stranger_gets_nothing(&k, &stranger, &url);
    // The machine can fetch again (Talos retries), the stranger still not.
    assert_eq!(curl_in(&machine, &url).0, "200");
}

#[test]
fn proxy_mode_only_the_machine_that_did_dhcp_gets_its_config() {
    if netns::skip(&["busybox", "curl", "dnsmasq"]) {
        return;
    }
    let mut net = Net::new("tp", "10.97.0.1/24");
    let router = net.add_client("52:54:00:cc:00:01");
    let machine = net.add_client("52:54:00:aa:00:02");
    let stranger = net.add_client("52:54:00:bb:00:77");
    addr(&router, "10.97.0.254/24");
    addr(&stranger, "10.97.0.77/24");
    // The LAN's own DHCP server, in the router's namespace.
    let leases = lab_tmp("dnsmasq.leases");
    let mut dnsmasq = Command::new("ip")
        .args([
            "netns",
            "exec",
            &router,
            "dnsmasq",
            "--no-daemon",
            "--port=0",
            "--no-resolv",
            "--no-hosts",
        ])
        .arg("--interface=eth0")
        .arg("--bind-interfaces")
        .arg("--dhcp-range=10.97.0.150,10.97.0.160,255.255.255.0,5m")
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg("--dhcp-authoritative")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lab = lab("");
    let k = Kiln::start(&lab.config(), Some(&net.server));
    // A plain DHCP client (udhcpc cannot merge a proxy OFFER as PXE ROMs do):
    // kiln sees its broadcast REQUEST for the address dnsmasq offered.
    let got = (0..10).find_map(|_| netns::udhcpc(lab.path(), &machine, &[]));
    let v = got.expect("a lease from the LAN's DHCP server");
    let ip = v["ip"].clone();
    assert!(ip.starts_with("10.97.0.15") || ip == "10.97.0.160", "{ip}");
    addr(&machine, &format!("{ip}/24"));
    let (_, script) = curl_in(&machine, "http://10.97.0.1:8080/ipxe/52-54-00-aa-00-02");
    let url = config_url(&script).unwrap_or_else(|| panic!("{script}"));
    let (code, body) = curl_in(&machine, &url);
    assert_eq!(code, "200", "{body}");
    stranger_gets_nothing(&k, &stranger, &url);
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    let _ = std::fs::remove_file(leases);
}

fn lab_tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("kiln-{}-{name}", std::process::id()))
}
