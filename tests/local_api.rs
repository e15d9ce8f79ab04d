//! kiln's local API: a Unix socket only its owner may use, no TCP listener
//! unless opted in (and then only with the bearer token), and nothing a web
//! page can send changes anything.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{have, is_root, run_kiln, skip_unless, Kiln, Lab, LoPorts, Ports};

const MACHINES: &str =
    "machines:\n  - {mac: 52:54:00:aa:00:01, hostname: cp-1, profile: controlplane}\n";

fn lab(extra: &str) -> Lab {
    let ports = Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nclusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n{extra}",
        ports.lo_yaml()
    );
    let lab = Lab::new(&yaml, MACHINES);
    lab.ipxe_stubs();
    lab
}

/// curl ARGS against the socket: (HTTP status, body).
fn curl(lab: &Lab, args: &[&str], path: &str) -> (String, String) {
    let sock = lab.path().join("state/kiln.sock");
    let url = format!("http://kiln{path}");
    let mut all = vec!["--unix-socket", sock.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push(&url);
    let c = common::curl::curl(&all);
    (c.code.clone(), c.text())
}

fn last_event(lab: &Lab) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&common::api_get(lab, "/api/v1/machines")).unwrap();
    v[0]["last_event"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_socket_is_the_owners_and_no_web_page_can_drive_it() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = lab("");
    let mut k = Kiln::start(&lab.config(), None);
    let ports = k.ports;
    let sock = lab.path().join("state/kiln.sock");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sock), 0o600, "the API socket is owner-only");
    assert_eq!(
        mode(&lab.path().join("state")),
        0o700,
        "state_dir is owner-only"
    );
    // No TCP API listener unless opted in: HTTP, events and kernel logs only.
    let mut want = vec![ports.http, ports.events, ports.kmsg];
    want.sort();
    assert_eq!(common::tcp_listeners(k.child.id()), want);
    // Port 0 everywhere: the ready line names what was bound.
    assert!(
        k.logs()
            .contains(&format!("HTTP :{}, events :{}", ports.http, ports.events)),
        "{}",
        k.logs()
    );

    common::dhcp_claim(ports.proxy_dhcp, "52:54:00:aa:00:01", common::lo_ip(1));
    let before = last_event(&lab);
    assert!(before.starts_with("DHCP"), "{before}");
    let reinstall = "/api/v1/machines/cp-1/reinstall";
    // A cross-origin page: a "simple" form POST, and one with an Origin.
    let (code, body) = curl(
        &lab,
        &["-X", "POST", "-H", "content-type: text/plain", "-d", "x"],
        reinstall,
    );
    assert_eq!(code, "415", "{body}");
    let (code, body) = curl(
        &lab,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            "origin: http://evil.example",
            "-d",
            "{}",
        ],
        reinstall,
    );
    assert_eq!(code, "403", "{body}");
    let (code, _) = curl(
        &lab,
        &["-H", "origin: http://evil.example"],
        "/api/v1/machines",
    );
    assert_eq!(code, "403");
    assert_eq!(
        last_event(&lab),
        before,
        "a refused request changed something"
    );

    // Another local user cannot use the socket at all.
    if is_root() && have("setpriv") {
        let o = common::curl::curl_via(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                "{}",
                "--unix-socket",
                sock.to_str().unwrap(),
                &format!("http://kiln{reinstall}"),
            ],
        );
        assert!(!o.ok, "nobody reached the API socket");
        assert_eq!(last_event(&lab), before);
    } else {
        skip_unless(false, "root and setpriv, to try the socket as another user");
    }

    // The CLI (the socket's owner) does it.
    let cfg = lab.config();
    let (ok, out) = run_kiln(
        None,
        &[
            "machines",
            "reinstall",
            "cp-1",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(last_event(&lab), "reinstall requested");

    // A second kiln on the same state_dir stops at the lock, naming the holder.
    let (ok, out) = run_kiln(None, &["serve", "--config", cfg.to_str().unwrap()]);
    assert!(
        !ok && out.contains(&format!(
            "another kiln (pid {}) is serving this state_dir",
            k.child.id()
        )),
        "{out}"
    );
    k.stop();
    assert!(k.logs().contains("refused a request with an Origin header"));
}

#[test]
fn the_opt_in_tcp_api_needs_the_bearer_token() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = lab("api_tcp: true\n");
    let k = Kiln::start(&lab.config(), None);
    let ports = k.ports;
    let token_file = lab.path().join("state/api-token");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let url = format!("http://127.0.0.1:{}/api/v1/machines", ports.api);
    let code = |args: &[&str]| common::curl::curl(&[args, &[url.as_str()]].concat()).code;
    assert_eq!(code(&[]), "401");
    assert_eq!(code(&["-H", "authorization: Bearer wrong"]), "401");
    assert_eq!(
        code(&["-H", &format!("authorization: Bearer {}", token.trim())]),
        "200"
    );
    // The CLI over TCP reads the token from state_dir.
    let cfg = lab.config();
    let port = ports.api.to_string();
    let (ok, out) = run_kiln(
        None,
        &[
            "machines",
            "--api-port",
            &port,
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains("cp-1"), "{out}");
}
