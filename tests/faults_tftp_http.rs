//! Protocol corners and resource bounds of the TFTP and HTTP edges, with real
//! clients (tftp-hpa) and raw sockets playing broken or hostile ones, on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{have, skip_unless, Kiln, Lab, LoPorts, Ports};

/// A lab with tight limits; returns it and its ports.
fn lab() -> Lab {
    let ports = Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nlimits:\n  tftp_transfers: 2\n  tftp_retries: 2\n  tftp_timeout: 1s\n  tftp_max_client_timeout: 3s\n  http_connections: 2\n  http_header_timeout: 2s\n  http_stall_timeout: 2s\n",
        ports.lo_yaml()
    );
    let lab = Lab::new(&yaml, "machines: []\n");
    // Text with every line ending netascii has to translate, and binary.
    let mut text = b"line one\nline two\r\nbare CR\rend".repeat(300);
    text.extend((0..=255u8).cycle().take(5000));
    std::fs::write(lab.path().join("boot-assets/notes.txt"), &text).unwrap();
    lab
}

fn rrq(file: &str, mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0, 1];
    for s in [file, mode]
        .iter()
        .chain(opts.iter().flat_map(|(k, v)| [k, v]))
    {
        b.extend_from_slice(s.as_bytes());
        b.push(0);
    }
    b
}

/// Every packet a silent client receives until `quiet` passes without one.
fn collect(sock: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

#[test]
fn tftp_netascii_is_translated_for_tftp_hpa() {
    if skip_unless(have("tftp"), "tftp-hpa's tftp client") {
        return;
    }
    let lab = lab();
    let _k = Kiln::start(&lab.config(), None);
    let ports = _k.ports;
    let mut files = vec![lab.path().join("boot-assets/notes.txt")];
    let system = std::path::Path::new("/usr/lib/ipxe/undionly.kpxe");
    if system.exists() {
        files.push(system.to_path_buf());
    }
    for src in files {
        let name = src.file_name().unwrap().to_str().unwrap();
        let out = lab.path().join(format!("got-{name}"));
        let st = Command::new("tftp")
            .args([
                "127.0.0.1",
                &ports.tftp.to_string(),
                "-m",
                "netascii",
                "-c",
                "get",
                name,
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "tftp -m netascii get {name}");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&src).unwrap(),
            "{name}: netascii round trip changed the file"
        );
    }
}

#[test]
fn tftp_silent_clients_cost_capped_resends_and_slots() {
    let lab = lab();
    let mut k = Kiln::start(&lab.config(), None);
    let ports = k.ports;
    let server = ("127.0.0.1", ports.tftp);

    // A client that never ACKs: block 1 is sent 1 + tftp_retries times, then
    // the transfer ends with an error, within seconds.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    silent
        .send_to(&rrq("notes.txt", "octet", &[]), server)
        .unwrap();
    let got = collect(&silent, Duration::from_secs(3));
    let data: Vec<_> = got.iter().filter(|p| p[..4] == [0, 3, 0, 1]).collect();
    assert_eq!(data.len(), 3, "block 1 sent once plus 2 resends: {got:?}");
    assert!(
        got.last().is_some_and(|p| p[..2] == [0, 5]),
        "ends with an ERROR"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // A client that repeats an old ACK (0) instead of acknowledging block 1
    // does not keep the transfer alive: the resend deadline stands.
    let stuck = UdpSocket::bind("127.0.0.1:0").unwrap();
    stuck
        .send_to(&rrq("notes.txt", "octet", &[]), server)
        .unwrap();
    stuck
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (mut copies, mut ended, mut tid) = (0, false, None);
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    while t0.elapsed() < Duration::from_secs(8) && !ended {
        if let Ok((n, from)) = stuck.recv_from(&mut buf) {
            tid = Some(from);
            copies += usize::from(buf[..4] == [0, 3, 0, 1]);
            ended = buf[..2] == [0, 5] && n >= 4;
        }
        if let Some(t) = tid {
            stuck.send_to(&[0, 4, 0, 0], t).unwrap();
        }
    }
    assert!(
        ended && copies <= 3,
        "old ACKs held the transfer: {copies} copies, ended {ended}"
    );
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());

    // A client timeout over the cap is left out of the OACK; one under it is kept.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.send_to(
        &rrq("notes.txt", "octet", &[("timeout", "255"), ("tsize", "0")]),
        server,
    )
    .unwrap();
    let oack = &collect(&c, Duration::from_millis(500))[0];
    let text = String::from_utf8_lossy(oack);
    assert!(
        oack[..2] == [0, 6] && text.contains("tsize") && !text.contains("timeout"),
        "{text:?}"
    );
    let c2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    c2.send_to(&rrq("notes.txt", "octet", &[("timeout", "2")]), server)
        .unwrap();
    let oack = &collect(&c2, Duration::from_millis(500))[0];
    assert!(
        String::from_utf8_lossy(oack).contains("timeout\u{0}2"),
        "{oack:?}"
    );

    // Two transfers hang (the cap is 2): a third request is not refused (a
    // TFTP error ends a PXE ROM's boot). It waits for a slot: it is served
    // when one frees in time, else left unanswered (logged) for its resend.
    let third = UdpSocket::bind("127.0.0.1:0").unwrap();
    third
        .send_to(&rrq("notes.txt", "octet", &[]), server)
        .unwrap();
    let got = collect(&third, Duration::from_millis(500));
    assert!(got.is_empty(), "answered at once while full: {got:?}");
    let later = collect(&third, Duration::from_secs(3));
    assert!(
        later.first().is_none_or(|p| p[..2] != [0, 5]),
        "a TFTP error at the cap: {later:?}"
    );
    if later.is_empty() {
        k.wait_for("request left unanswered", Duration::from_secs(5));
    } else {
        assert!(
            later[0][..2] == [0, 3] || later[0][..2] == [0, 6],
            "{later:?}"
        );
    }

    // Modes other than octet/netascii are refused by name.
    let m = UdpSocket::bind("127.0.0.1:0").unwrap();
    m.send_to(&rrq("notes.txt", "mail", &[]), server).unwrap();
    let got = collect(&m, Duration::from_millis(500));
    assert!(
        got.first()
            .is_some_and(|p| String::from_utf8_lossy(p).contains("\"mail\"")),
        "{got:?}"
    );
}

/// Connect, send `bytes`, read until kiln closes (10 s at most): what came
/// back and how long the connection stayed open.
fn send_and_read(addr: (&str, u16), bytes: &[u8]) -> (Vec<u8>, Duration) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(bytes).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    (got, t0.elapsed())
}

#[test]
fn http_slow_headers_are_dropped_and_connections_capped() {
    let lab = lab();
    let _k = Kiln::start(&lab.config(), None);
    let ports = _k.ports;
    let addr = ("127.0.0.1", ports.http);

    // Headers trickled and never finished: dropped after the 2 s timeout.
    let (_, took) = send_and_read(addr, b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n");
    assert!(took < Duration::from_secs(9), "still open after {took:?}");

    // A body announced and never sent: the (GET) response comes at once and
    // the connection ends, so a slow body cannot hold a slot either.
    let (resp, took) = send_and_read(
        addr,
        b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
    );
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert!(took < Duration::from_secs(9), "held open {took:?}");
    std::thread::sleep(Duration::from_millis(200));

    // Two idle connections hold both slots: a third is not served until one goes.
    let hold1 = TcpStream::connect(addr).unwrap();
    let hold2 = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let mut b = [0u8; 64];
    assert!(
        third.read(&mut b).is_err(),
        "served past the connection cap"
    );
    drop(hold1);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut resp = Vec::new();
    let _ = third.read_to_end(&mut resp);
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    drop(hold2);

    // A client that requests a large asset and stops reading is cut off
    // after the stall timeout, freeing its slot.
    let big = lab.path().join("boot-assets/big.img");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let mut reader = TcpStream::connect(addr).unwrap();
    reader
        .write_all(b"GET /assets/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 256 << 20, "the stalled response was not cut off");
}
