//! kiln.yaml parsing and validation.
use super::*;

fn write(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("kiln.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn full_mode_parses_and_resolves_paths_against_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "interface: br0\nserver_address: 10.99.0.1\ndhcp:\n  mode: full\n  subnet: 10.99.0.0/24\n  range: [10.99.0.100, 10.99.0.200]\n  router: 10.99.0.1\n  dns: [10.99.0.1]\n  lease_time: 2h\nstate_dir: st\n",
    );
    let c = Config::load(&p).unwrap();
    assert_eq!(c.state_dir, d.path().join("st"));
    assert_eq!(c.ports, Ports::default());
    let DhcpMode::Full(f) = c.dhcp else {
        panic!("not full")
    };
    assert_eq!(f.lease_time, Duration::from_secs(7200));
    assert_eq!(
        f.subnets[0].range.1,
        "10.99.0.200".parse::<Ipv4Addr>().unwrap()
    );
}

#[test]
fn errors_name_file_and_key() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "interface: br0\nserver_address: 10.99.0.1\ndhcp:\n  mode: full\n  subnet: 10.99.0.0/24\n  range: [10.99.1.100, 10.99.0.200]\n  lease_time: soon\n",
    );
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("kiln.yaml: dhcp.range: first address 10.99.1.100"),
        "{e}"
    );
    assert!(e.contains("dhcp.lease_time"), "{e}");
    let p = write(
        d.path(),
        "interface: br0\nserver_address: 10.99.0.1\nmode: full\n",
    );
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.contains("unknown field") && e.contains("mode"), "{e}");
    let p = write(d.path(), "interface: br0\nserver_address: 10.99.0.300\n");
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.contains("server_address"), "{e}");
}

#[test]
fn proxy_mode_rejects_pool_keys() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "interface: br0\nserver_address: 10.99.0.1\ndhcp:\n  subnet: 10.99.0.0/24\n",
    );
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.contains("dhcp.subnet: only used in full mode"), "{e}");
}

#[test]
fn the_etcd_store_keys_default_and_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let head = "interface: br0\nserver_address: 10.99.0.1\ndhcp:\n  mode: full\n  subnet: 10.99.0.0/24\n  range: [10.99.0.100, 10.99.0.200]\n";
    let p = write(
        d.path(),
        &format!("{head}store: {{backend: etcd, endpoints: [\"http://10.0.0.9:2379\"], daemon: a, service_address: 10.99.0.5}}\n"),
    );
    let c = Config::load(&p).unwrap();
    let crate::model::store::StoreSettings::Etcd(e) = &c.store else {
        panic!("not etcd")
    };
    assert_eq!(e.segment, "10.99.0.0/24", "full mode's default segment");
    assert_eq!(
        c.advertised_address(),
        "10.99.0.5".parse::<Ipv4Addr>().unwrap()
    );
    assert_eq!(c.http_base(), "http://10.99.0.5:8080");
    for (vip, want) in [
        (
            "10.99.0.150",
            "store.service_address: 10.99.0.150 is inside the DHCP range",
        ),
        (
            "10.99.0.1",
            "store.service_address: 10.99.0.1 is server_address",
        ),
    ] {
        let p = write(
            d.path(),
            &format!("{head}store: {{backend: etcd, endpoints: [\"http://10.0.0.9:2379\"], service_address: {vip}}}\n"),
        );
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    let p = write(
        d.path(),
        &format!("{head}store: {{service_address: 10.99.0.5}}\n"),
    );
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.contains("are for `backend: etcd`"), "{e}");
}
