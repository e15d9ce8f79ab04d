//! Serving machine configs on first boot: the token and address rules over real
//! HTTP (curl), `kiln render`, and `kiln check` rendering every machine.

mod common;

use std::process::Command;
use std::time::Duration;

use common::curl::curl;
use common::{have, kiln_bin, skip_unless, Kiln, Lab, LoPorts, Ports};
use kiln::model::yaml::from_yaml;

const MACHINES: &str = "machines:
  - mac: 52:54:00:aa:00:01
    hostname: cp-1
    profile: controlplane
    ip: 192.168.50.11
  - mac: 52:54:00:aa:00:11
    hostname: w-1
    profile: worker
";

fn lab(extra: &str) -> Lab {
    let ports = Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nclusters:\n  lab:\n    endpoint: https://192.168.50.200:6443\n{extra}",
        ports.lo_yaml()
    );
    let lab = Lab::new(&yaml, MACHINES);
    lab.ipxe_stubs();
    std::fs::write(
        lab.path().join("profiles/controlplane.yaml"),
        "role: controlplane\ntalos_version: v1.13.9\ninstall_disk: /dev/sda\ndhcp_interfaces: [eth0]\nvip: 192.168.50.200\nallow_workloads: true\nkubelet_serving_certs: true\nstable_interface_names: true\n",
    )
    .unwrap();
    lab
}

/// The talos.config= URL from a machine script, with iPXE's variables filled.
fn config_url(script: &str, mac: &str) -> String {
    let u = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("talos.config="))
        .unwrap_or_else(|| panic!("no talos.config in {script}"));
    u.replace("${uuid}", "4c4c4544-0033-3910-8052-b4c04f4c4d31")
        .replace("${mac}", &mac.replace(':', "%3A"))
}

fn status(args: &[&str]) -> String {
    curl(args).code
}

#[test]
fn each_machine_gets_its_own_config_and_nobody_else_does() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = lab("");
    // Debug level everywhere: even there no token may reach the log.
    let mut k = Kiln::start_logging(&lab.config(), None, "debug");
    let ports = k.ports;
    let base = format!("http://127.0.0.1:{}", ports.http);
    // Secrets were generated on first start, private.
    let secrets = lab.path().join("state/lab/secrets.yaml");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&secrets).unwrap().permissions()
        ) & 0o777,
        0o600
    );

    // Before any DHCP: nobody gets a token, whatever address asks.
    let script = curl(&[&format!("{base}/ipxe/52-54-00-aa-00-01")]).text();
    assert!(
        !script.contains("talos.config") && script.contains("holds no DHCP-proven address"),
        "{script}"
    );
    // cp-1 does proxyDHCP from 127.0.1.1: that address is now cp-1's.
    let (cp1, w1) = (common::lo_ip(1).to_string(), common::lo_ip(11).to_string());
    common::dhcp_claim(ports.proxy_dhcp, "52:54:00:aa:00:01", common::lo_ip(1));
    // Another address asking for cp-1's script gets none; a second claim on
    // cp-1's MAC from another address is refused, and cp-1 keeps its own.
    let script = curl(&[
        "--interface",
        "127.0.0.2",
        &format!("{base}/ipxe/52-54-00-aa-00-01"),
    ])
    .text();
    assert!(
        !script.contains("talos.config")
            && script.contains("but DHCP proved 52:54:00:aa:00:01 is 127.0.1.1"),
        "{script}"
    );
    common::dhcp_claim(ports.proxy_dhcp, "52:54:00:aa:00:01", common::lo_ip(9));
    let old_script = curl(&[
        "--interface",
        &cp1,
        &format!("{base}/ipxe/52-54-00-aa-00-01"),
    ])
    .text();
    let old_url = config_url(&old_script, "52:54:00:aa:00:01");
    let script = curl(&[
        "--interface",
        &cp1,
        &format!("{base}/ipxe/52-54-00-aa-00-01"),
    ])
    .text();
    let url = config_url(&script, "52:54:00:aa:00:01");
    assert!(
        url.contains("token=") && url.contains("uuid=4c4c4544"),
        "{url}"
    );
    assert_eq!(
        status(&["--interface", &cp1, &old_url]),
        "403",
        "a new boot voids the token of the one before"
    );
    let body = curl(&["-f", "--interface", &cp1, &url]).text();
    let docs = from_yaml(&body).unwrap();
    // Talos retries: the same URL from the same address works again.
    assert_eq!(status(&["--interface", &cp1, &url]), "200");
    assert_eq!(docs[0]["machine"]["type"], "controlplane");
    assert_eq!(
        docs[0]["cluster"]["controlPlane"]["endpoint"],
        "https://192.168.50.200:6443"
    );
    assert_eq!(docs[0]["cluster"]["allowSchedulingOnControlPlanes"], true);
    assert_eq!(docs[0]["machine"]["install"]["disk"], "/dev/sda");
    assert_eq!(
        docs[0]["machine"]["install"]["extraKernelArgs"],
        serde_json::json!(["net.ifnames=0"])
    );
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"Layer2VIPConfig") && kinds.contains(&"DHCPv4Config"),
        "{kinds:?}"
    );
    let host = docs.iter().find(|d| d["kind"] == "HostnameConfig").unwrap();
    assert_eq!(host["hostname"], "cp-1");
    assert!(host.get("auto").is_none());

    // The same URL from another address: refused.
    assert_eq!(status(&["--interface", "127.0.0.2", &url]), "403");
    // A made-up token, no token, or cp-1's token on w-1's path: refused.
    let forged =
        url.split("token=").next().unwrap().to_string() + "token=00000000000000000000000000000000";
    assert_eq!(status(&["--interface", &cp1, &forged]), "403");
    assert_eq!(
        status(&[
            "--interface",
            &cp1,
            &format!("{base}/config/52-54-00-aa-00-01")
        ]),
        "403"
    );
    common::dhcp_claim(ports.proxy_dhcp, "52:54:00:aa:00:11", common::lo_ip(11));
    let wscript = curl(&[
        "--interface",
        &w1,
        &format!("{base}/ipxe/52-54-00-aa-00-11"),
    ])
    .text();
    let wurl = config_url(&wscript, "52:54:00:aa:00:11");
    let stolen = wurl.replace("52-54-00-aa-00-11", "52-54-00-aa-00-01");
    for from in [&w1, &cp1] {
        assert_eq!(
            status(&["--interface", from, &stolen]),
            "403",
            "a worker's token must not open a control-plane config"
        );
    }
    let wbody = curl(&["-f", "--interface", &w1, &wurl]).text();
    let wdocs = from_yaml(&wbody).unwrap();
    assert_eq!(wdocs[0]["machine"]["type"], "worker");
    assert_eq!(
        wdocs[0]["machine"]["ca"]["key"], "",
        "workers never get the OS CA key"
    );
    assert!(
        !wdocs.iter().any(|d| d["kind"] == "Layer2VIPConfig"),
        "no VIP on workers"
    );

    // Every refusal is logged with its reason; no secret reaches the log.
    let logs = k.logs();
    assert!(
        logs.contains("config refused: unknown boot token"),
        "{logs}"
    );
    assert!(
        logs.contains("config refused: request from 127.0.0.2"),
        "{logs}"
    );
    assert!(
        logs.contains("machine script refused: config withheld (cp-1): request from 127.0.0.2"),
        "{logs}"
    );
    assert!(
        logs.contains("address claim refused: 52:54:00:aa:00:01 already used 127.0.1.1"),
        "{logs}"
    );
    for u in [&url, &old_url, &wurl] {
        let token = u.split("token=").nth(1).unwrap().split('&').next().unwrap();
        assert!(!logs.contains(token), "a boot token reached the debug log");
    }
    assert!(
        logs.contains("config refused: token belongs to 52:54:00:aa:00:11"),
        "{logs}"
    );
    assert!(
        logs.contains("config served") && logs.contains("hostname=cp-1"),
        "{logs}"
    );
    let b = kiln::talos::secrets::Bundle::load(&secrets).unwrap();
    for secret in [
        &b.os().key,
        &b.cluster.secret,
        &b.secrets.bootstraptoken,
        &b.trustdinfo.token,
    ] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the log");
    }

    // What happened, as Prometheus scrapes it: valid for promtool, and the counts.
    let m = curl(&["-f", &format!("{base}/metrics")]).text();
    common::promtool_check(&m);
    let v = |series: &str| common::metric(&m, series);
    assert!(
        v("kiln_configs_total{reason=\"ok\",result=\"served\"}") >= 2.0,
        "{m}"
    );
    assert!(
        v("kiln_configs_total{reason=\"unknown_token\",result=\"refused\"}") >= 2.0,
        "{m}"
    );
    assert!(
        v("kiln_configs_total{reason=\"address_not_proven\",result=\"refused\"}") >= 1.0,
        "{m}"
    );
    assert!(
        v("kiln_configs_total{reason=\"token_of_another_mac\",result=\"refused\"}") >= 1.0,
        "{m}"
    );
    assert!(
        v("kiln_dhcp_packets_received_total{message_type=\"request\",mode=\"proxy\"}") >= 2.0,
        "{m}"
    );
    assert!(
        v("kiln_http_requests_total{route=\"/config/{mac}\",status=\"403\"}") >= 4.0,
        "{m}"
    );
    assert_eq!(
        v("kiln_machine_state{cluster=\"lab\",machine=\"cp-1\",state=\"config_served\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        v("kiln_machine_state{cluster=\"lab\",machine=\"cp-1\",state=\"ready\"}"),
        0.0,
        "{m}"
    );
    assert_eq!(
        v("kiln_cluster_bootstrap_state{cluster=\"lab\",state=\"pending\"}"),
        1.0,
        "{m}"
    );
    assert!(v("kiln_store_commit_seconds_count") >= 1.0, "{m}");
    assert!(!m.contains("token="), "no token in the metrics");
    assert_eq!(curl(&[&format!("{base}/healthz")]).text(), "ok\n");
    assert_eq!(curl(&[&format!("{base}/readyz")]).text(), "ready\n");

    // The status page, open in a real browser before the stranger shows up.
    let browser = common::browser::Browser::start(None);
    if let Some(b) = &browser {
        b.goto(&format!("{base}/status"));
        let t = b.wait_for("cp-1", Duration::from_secs(10));
        assert!(!t.contains("52:54:00:aa:00:99"), "{t}");
    }

    // `kiln explain`: a booted machine, a refused fetch, a stranger.
    let stranger = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
    let opts = vec![
        dhcproto::v4::DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
        dhcproto::v4::DhcpOption::ClientSystemArchitecture(dhcproto::v4::Architecture(7)),
    ];
    let req = kiln::edge::dhcp::packet::build_request(
        "52:54:00:aa:00:99".parse().unwrap(),
        dhcproto::v4::MessageType::Request,
        7,
        opts,
    );
    stranger
        .send_to(&req, ("127.0.0.1", ports.proxy_dhcp))
        .unwrap();
    let explain = |id: &str| {
        let o = Command::new(kiln_bin())
            .args(["explain", id, "--config"])
            .arg(lab.config())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let cp = explain("cp-1");
    for want in [
        "cp-1 (52:54:00:aa:00:01): in the inventory, profile controlplane (role controlplane, cluster lab, Talos v1.13.9, amd64)",
        "fixed address 192.168.50.11",
        "state config_served since",
        "dhcp: Request on proxy from x86-64 UEFI (arch 7)",
        "config: served to 127.0.1.1 as cp-1",
        "config: refused to 127.0.0.2: request from 127.0.0.2",
        "config: refused to 127.0.1.1: unknown boot token",
        "next boot: the Talos installer",
    ] {
        assert!(cp.contains(want), "missing {want:?} in:\n{cp}");
    }
    assert!(!cp.contains("token="), "no token in explain");
    // The stranger's packet may still be in flight: ask until it shows.
    let mut st = String::new();
    for _ in 0..50 {
        st = explain("52:54:00:aa:00:99");
        if st.contains("ignored") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(st.contains("52:54:00:aa:00:99: not in the inventory: kiln does not answer it (unknown_machines: ignore)"), "{st}");
    assert!(
        st.contains("dhcp: Request on proxy from x86-64 UEFI (arch 7): ignored: "),
        "{st}"
    );
    assert!(st.contains("next boot: no network boot"), "{st}");
    assert!(explain("nosuch").contains("no machine \"nosuch\""));

    // The status page, as a person sees it in a real browser: the stranger
    // appears without a reload, and a click leads to cp-1's refusals.
    if let Some(b) = &browser {
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status.png");
        let t = b.wait_for("52:54:00:aa:00:99", Duration::from_secs(10));
        for want in [
            "cp-1",
            "w-1",
            "config_served",
            "192.168.50.200:6443",
            "v1.13.9",
            "x86-64 UEFI (arch 7)",
            "PXEClient:Arch:00007",
        ] {
            assert!(t.contains(want), "status page lacks {want:?}:\n{t}");
        }
        assert!(!t.contains("token="), "no token on the page");
        b.screenshot(&shot);
        eprintln!("status page screenshot: {}", shot.display());
        b.click_link("cp-1");
        let t = b.wait_for("cp-1 (52:54:00:aa:00:01)", Duration::from_secs(10));
        assert!(
            b.url()
                .ends_with("/status/machine/52%3A54%3A00%3Aaa%3A00%3A01"),
            "{}",
            b.url()
        );
        for want in [
            "refused to 127.0.0.2: request from 127.0.0.2",
            "served to 127.0.1.1 as cp-1",
            "Kernel log",
        ] {
            assert!(t.contains(want), "machine page lacks {want:?}:\n{t}");
        }
        assert!(!t.contains("token="), "no token on the machine page");
    }
    // On a phone the page fits the screen: nothing to scroll sideways.
    if let Some(phone) = common::browser::Browser::phone(None) {
        phone.goto(&format!("{base}/status"));
        let t = phone.wait_for("cp-1", Duration::from_secs(10));
        assert!(t.contains("config_served"), "{t}");
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-phone.png");
        phone.screenshot(&shot);
        let w = phone.eval("[document.documentElement.scrollWidth, window.innerWidth]");
        assert!(
            w[0].as_u64() <= w[1].as_u64(),
            "the page scrolls sideways on a phone: {w} (page, window); {}",
            shot.display()
        );
    }
    drop(browser);
    k.stop();

    // The operator's talosconfig: one context per cluster, control-plane
    // addresses as endpoints, 0600, kept across restarts.
    let tc_path = lab.path().join("state/talosconfig");
    let tc =
        kiln::talos::talosconfig::TalosConfig::parse(&std::fs::read_to_string(&tc_path).unwrap())
            .unwrap();
    assert_eq!(tc.context, "lab");
    assert_eq!(
        tc.contexts["lab"].endpoints,
        vec!["192.168.50.11".to_string()]
    );
    assert_eq!(tc.contexts["lab"].ca, b.os().crt);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&tc_path).unwrap().permissions()
        ) & 0o777,
        0o600
    );
    let mut k = Kiln::start(&lab.config(), None);
    k.stop();
    let again =
        kiln::talos::talosconfig::TalosConfig::parse(&std::fs::read_to_string(&tc_path).unwrap())
            .unwrap();
    assert_eq!(again, tc, "restart reissued the client certificate");

    // `kiln render` prints what was served (same documents).
    let o = Command::new(kiln_bin())
        .args(["render", "--config"])
        .arg(lab.config())
        .args(["--mac", "52-54-00-AA-00-01"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        from_yaml(&String::from_utf8_lossy(&o.stdout)).unwrap(),
        docs
    );
    // And `kiln check` renders every machine.
    let o = Command::new(kiln_bin())
        .args(["check", "--config"])
        .arg(lab.config())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn unknown_machines_never_get_control_plane_configs() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = lab("unknown_machines: boot\ndefault_profile: controlplane\n");
    let _k = Kiln::start(&lab.config(), None);
    let ports = _k.ports;
    let base = format!("http://127.0.0.1:{}", ports.http);
    let me = common::lo_ip(21);
    common::dhcp_claim(ports.proxy_dhcp, "52:54:00:bb:00:01", me);
    let from = me.to_string();
    let script = curl(&[
        "--interface",
        &from,
        &format!("{base}/ipxe/52-54-00-bb-00-01"),
    ])
    .text();
    let url = config_url(&script, "52:54:00:bb:00:01");
    assert_eq!(status(&["--interface", &from, &url]), "403");
    drop(_k);
    let lab = lab_worker_default();
    let _k = Kiln::start(&lab.config(), None);
    let ports = _k.ports;
    common::dhcp_claim(ports.proxy_dhcp, "52:54:00:bb:00:01", me);
    let script = curl(&[
        "--interface",
        &from,
        &format!("http://127.0.0.1:{}/ipxe/52-54-00-bb-00-01", ports.http),
    ])
    .text();
    let body = curl(&[
        "-f",
        "--interface",
        &from,
        &config_url(&script, "52:54:00:bb:00:01"),
    ])
    .text();
    let docs = from_yaml(&body).unwrap();
    assert_eq!(docs[0]["machine"]["type"], "worker");
}

fn lab_worker_default() -> Lab {
    lab("unknown_machines: boot\ndefault_profile: worker\n")
}

/// A profile booting Talos v1.14 gets the v1.13 contract's config (which Talos
/// v1.14 accepts) with the v1.14 installer, and `kiln check` says so.
#[test]
fn a_v1_14_release_gets_its_own_multi_document_contract() {
    let lab = lab("");
    std::fs::write(
        lab.path().join("profiles/worker.yaml"),
        "role: worker\ntalos_version: v1.14.2\ninstall_disk: /dev/sda\n",
    )
    .unwrap();
    std::fs::create_dir_all(lab.path().join("boot-assets/talos/v1.14.2")).unwrap();
    for f in ["vmlinuz-amd64", "initramfs-amd64.xz"] {
        std::fs::write(
            lab.path().join("boot-assets/talos/v1.14.2").join(f),
            [1u8; 64],
        )
        .unwrap();
    }
    let o = Command::new(kiln_bin())
        .args(["check", "--config"])
        .arg(lab.config())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("contract"), "no substitute contract: {err}");
    std::fs::create_dir_all(lab.path().join("state/lab")).unwrap();
    let o = Command::new(kiln_bin())
        .args(["gen", "secrets", "-o"])
        .arg(lab.path().join("state/lab/secrets.yaml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(kiln_bin())
        .args(["render", "--config"])
        .arg(lab.config())
        .args(["--mac", "52:54:00:aa:00:11"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let docs = from_yaml(&String::from_utf8_lossy(&o.stdout)).unwrap();
    let v1 = &docs[0];
    assert_eq!(v1["machine"]["type"], "worker");
    // The v1.14 contract: the install disk and the factory installer in an
    // UnattendedInstallConfig, kubelet in KubeletConfig with v1.14's default
    // Kubernetes, nothing Talos would refuse.
    assert!(v1["machine"].get("install").is_none() && v1["machine"].get("kubelet").is_none());
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let ui = kind("UnattendedInstallConfig");
    assert_eq!(
        ui["provisioning"]["diskSelector"]["match"],
        "disk.dev_path == \"/dev/sda\""
    );
    assert_eq!(
        ui["installer"]["image"],
        "factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.14.2"
    );
    assert_eq!(
        kind("KubeletConfig")["image"],
        "ghcr.io/siderolabs/kubelet:v1.37.0-rc.0"
    );
    kind("KubeNodeConfig");
    kind("KubeClusterConfig");
    assert!(kiln::talos::conflicts::check(&docs).is_empty());

    // A release kiln does not know is refused, naming the file and key.
    std::fs::write(
        lab.path().join("profiles/worker.yaml"),
        "role: worker\ntalos_version: v1.16.0\n",
    )
    .unwrap();
    let o = Command::new(kiln_bin())
        .args(["check", "--config"])
        .arg(lab.config())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("worker.yaml: talos_version: Talos v1.16 is not supported: kiln provisions Talos v1.8 through v1.15"),
        "{err}"
    );
}

/// Tokens expire (`boot_token_ttl`), and a pinned SMBIOS UUID (`uuid:`) must
/// come with the fetch.
#[test]
fn tokens_expire_and_a_pinned_uuid_must_match() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = lab("boot_token_ttl: 1m\n");
    std::fs::write(
        lab.path().join("machines.yaml"),
        format!("{MACHINES}  - mac: 52:54:00:aa:00:12\n    hostname: w-2\n    profile: worker\n    uuid: 4C4C4544-0033-3910-8052-B4C04F4C4D31\n"),
    )
    .unwrap();
    // A token that expired a second ago (as a machine that took longer than
    // boot_token_ttl would hold), written while kiln is down.
    let store = kiln::store::Store::open(&lab.path().join("state")).unwrap();
    let t = kiln::store::tokens::BootToken {
        mac: "52:54:00:aa:00:12".parse().unwrap(),
        ip: Some(common::lo_ip(12)),
        expires: kiln::brain::now() - 1,
    };
    store
        .tokens()
        .put("0123456789abcdef0123456789abcdef", &t, 0)
        .unwrap();
    drop(store);
    let mut k = Kiln::start(&lab.config(), None);
    let ports = k.ports;
    let from = common::lo_ip(12);
    let f = from.to_string();
    common::dhcp_claim(ports.proxy_dhcp, "52:54:00:aa:00:12", from);
    let expired = format!(
        "http://127.0.0.1:{}/config/52-54-00-aa-00-12?token=0123456789abcdef0123456789abcdef&uuid=4c4c4544-0033-3910-8052-b4c04f4c4d31",
        ports.http
    );
    assert_eq!(
        status(&["--interface", &f, &expired]),
        "403",
        "an expired token worked"
    );
    let script = common::script_from(ports.http, "52:54:00:aa:00:12", from);
    // config_url fills ${uuid} with the pinned UUID.
    let url = config_url(&script, "52:54:00:aa:00:12");
    let wrong = url.replace("uuid=4c4c4544-0033", "uuid=00000000-0033");
    assert_eq!(status(&["--interface", &f, &wrong]), "403");
    assert_eq!(status(&["--interface", &f, &url]), "200");
    k.stop();
    let logs = k.logs();
    assert!(
        logs.contains("is not the pinned 4c4c4544-0033-3910-8052-b4c04f4c4d31"),
        "{logs}"
    );
    assert!(logs.contains("config refused: token expired"), "{logs}");
    // A malformed pin is an error naming the file and line.
    std::fs::write(
        lab.path().join("machines.yaml"),
        "machines:\n  - {mac: 52:54:00:aa:00:12, hostname: w-2, profile: worker, uuid: not-a-uuid}\n",
    )
    .unwrap();
    let (ok, out) = common::run_kiln(None, &["check", "--config", lab.config().to_str().unwrap()]);
    assert!(
        !ok && out.contains("uuid") && out.contains("is not a UUID"),
        "{out}"
    );
}

/// `/config?mac=` (a UKI's `talos.config=`, no token) answers only a
/// machine whose profile boots a UKI, and only from the address DHCP proved
/// is that MAC's.
#[test]
fn a_token_less_config_needs_a_uki_profile_and_the_proven_address() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = lab("");
    let worker = lab.path().join("profiles/worker.yaml");
    let w = std::fs::read_to_string(&worker).unwrap();
    std::fs::write(&worker, format!("{w}http_boot: uki\nuki: guest/uki.efi\n")).unwrap();
    std::fs::create_dir_all(lab.path().join("boot-assets/guest")).unwrap();
    std::fs::write(lab.path().join("boot-assets/guest/uki.efi"), b"uki").unwrap();
    let k = Kiln::start(&lab.config(), None);
    let url = |mac: &str| {
        format!(
            "http://127.0.0.1:{}/config?mac={}&uuid=",
            k.ports.http,
            mac.replace(':', "%3A")
        )
    };
    let from =
        |ip: std::net::Ipv4Addr, mac: &str| curl(&["--interface", &ip.to_string(), &url(mac)]);
    // Before any DHCP: nobody has proved to be w-1.
    assert_eq!(from(common::lo_ip(11), "52:54:00:aa:00:11").code, "403");
    common::dhcp_claim(k.ports.proxy_dhcp, "52:54:00:aa:00:11", common::lo_ip(11));
    common::dhcp_claim(k.ports.proxy_dhcp, "52:54:00:aa:00:01", common::lo_ip(1));
    // w-1 from its address: its config.
    let got = from(common::lo_ip(11), "52:54:00:aa:00:11");
    assert_eq!(got.code, "200", "{}", got.text());
    assert!(got.text().contains("hostname: w-1"), "{}", got.text());
    // Anyone else asking for w-1's: refused.
    assert_eq!(from(common::lo_ip(12), "52:54:00:aa:00:11").code, "403");
    // cp-1 boots iPXE: its config needs its token, even from its own address.
    assert_eq!(from(common::lo_ip(1), "52:54:00:aa:00:01").code, "403");
    assert!(
        k.logs().contains("does not boot a UKI (http_boot: uki)"),
        "{}",
        k.logs()
    );
}
