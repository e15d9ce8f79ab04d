//! Bad input on every port kiln listens on: arbitrary datagrams to DHCP, proxyDHCP
//! and TFTP, arbitrary bytes and arbitrary request lines to HTTP, arbitrary bytes
//! to the events sink (gRPC). kiln must answer what it can, drop the rest, never
//! panic (not even in a task: its log is checked) and keep serving real clients.
//!
//! proptest generates the inputs; a failing case is shrunk and saved under
//! proptest-regressions/ (commit it: it becomes a regression test). The case
//! count is KILNTEST_FUZZ_CASES (default 150 per surface); bench/fuzz.sh runs it
//! long.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{Kiln, Lab, LoPorts, Ports};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("KILNTEST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

fn lab() -> Lab {
    let p = Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nipxe_dirs: [./ipxe]\nclusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n",
        p.lo_yaml()
    );
    let lab = Lab::new(
        &yaml,
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n  - mac: 52:54:00:aa:00:02\n    hostname: w-1\n    profile: worker\n",
    );
    lab.ipxe_stubs();
    lab
}

/// One HTTP exchange over a raw socket: the status code, if any came back.
fn http_raw(port: u16, req: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let _ = s.write_all(req);
    // A well-formed request asks for the close itself: hyper may drop a
    // response once the client half-closes.
    if !req.windows(17).any(|w| w == b"Connection: close") {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf);
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

fn tftp_first_block(port: u16, file: &str) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.extend_from_slice(b"\0octet\0");
    s.send_to(&rrq, ("127.0.0.1", port)).ok()?;
    let mut buf = [0u8; 1024];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn alive(k: &mut Kiln, p: &Ports) {
    assert!(
        k.child.try_wait().unwrap().is_none(),
        "kiln exited:\n{}",
        k.logs()
    );
    assert_eq!(
        http_raw(
            p.http,
            b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        Some(200),
        "{}",
        k.logs()
    );
    let block = tftp_first_block(p.tftp, "undionly.kpxe").expect("TFTP still serves");
    assert_eq!(&block[..4], &[0, 3, 0, 1], "TFTP DATA block 1");
    let logs = k.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..Config::default()
    })
}

/// Request lines and headers built from pieces kiln's routes care about.
fn http_request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("HEAD".to_string()),
        Just("POST".to_string()),
        Just("PUT".to_string()),
        "[A-Z]{1,8}".prop_map(|s: String| s)
    ];
    let route = prop_oneof![
        Just("/ipxe/".to_string()),
        Just("/config/".to_string()),
        Just("/assets/".to_string()),
        Just("/assets/talos/v1.13.9/".to_string()),
        Just("/boot.ipxe".to_string()),
        Just("/".to_string()),
    ];
    let tail = prop_oneof![
        "[ -~]{0,80}",
        "(%[0-9A-Fa-f]{2}|\\.\\./|[a-zA-Z0-9:-]){0,40}",
        "52-54-00-[aA]{2}-00-0[12](\\?[ -~]{0,60})?",
    ];
    let header = prop_oneof![
        Just(String::new()),
        "Range: bytes=[0-9-,]{0,20}\r\n",
        "[A-Za-z-]{1,20}: [ -~]{0,60}\r\n",
        "Content-Length: [0-9]{1,12}\r\n",
    ];
    (method, route, tail, header)
        .prop_map(|(m, r, t, h)| format!("{m} {r}{t} HTTP/1.1\r\nHost: x\r\n{h}\r\n").into_bytes())
}

#[test]
fn arbitrary_input_on_every_port_never_panics_and_service_goes_on() {
    let lab = lab();
    let mut k = Kiln::start(&lab.config(), None);
    let p = k.ports;
    alive(&mut k, &p);

    // HTTP: structured requests (must never be a 5xx) and raw bytes.
    runner()
        .run(&http_request(), |req| {
            let code = http_raw(p.http, &req);
            prop_assert!(
                code.is_none_or(|c| c < 500),
                "{} for {:?}",
                code.unwrap_or(0),
                String::from_utf8_lossy(&req)
            );
            Ok(())
        })
        .unwrap();
    runner()
        .run(&proptest::collection::vec(any::<u8>(), 0..2048), |bytes| {
            let code = http_raw(p.http, &bytes);
            prop_assert!(code.is_none_or(|c| c < 500), "{code:?} for {bytes:?}");
            Ok(())
        })
        .unwrap();
    alive(&mut k, &p);

    // UDP: arbitrary datagrams, and datagrams that start like the real thing.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1500),
        // BOOTREQUEST header + magic cookie, then arbitrary options.
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(|opts| {
            let mut b = vec![1u8, 1, 6, 0];
            b.resize(236, 0);
            b.extend_from_slice(&[99, 130, 83, 99]);
            b.extend(opts);
            b
        }),
        // TFTP opcodes 1..6 with arbitrary payloads.
        (0u8..8, proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(op, rest)| {
            let mut b = vec![0, op];
            b.extend(rest);
            b
        }),
    ];
    runner()
        .run(&datagram, |d| {
            for port in [p.dhcp, p.proxy_dhcp, p.tftp] {
                let _ = udp.send_to(&d, ("127.0.0.1", port));
            }
            Ok(())
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    alive(&mut k, &p);

    // The events sink: arbitrary bytes where an HTTP/2 client would speak.
    runner()
        .run(&proptest::collection::vec(any::<u8>(), 0..1024), |bytes| {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", p.events)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut pre = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                if bytes.first().is_some_and(|b| b % 2 == 0) {
                    pre.extend_from_slice(&bytes);
                } else {
                    pre = bytes.clone();
                }
                let _ = s.write_all(&pre);
                let mut sink = [0u8; 256];
                let _ = s.read(&mut sink);
            }
            Ok(())
        })
        .unwrap();
    alive(&mut k, &p);
    k.stop();
}
