//! HTTP and TFTP edges against real clients (curl, atftp, tftp-hpa), on loopback.

mod common;

use std::process::Command;

use common::curl::curl;
use common::{have, skip_unless, Kiln, Lab, LoPorts, Ports};

fn lab() -> Lab {
    let ports = Ports::any();
    let yaml = format!(
        "{}boot_assets: ./boot-assets\nstate_dir: ./state\nclusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n",
        ports.lo_yaml()
    );
    Lab::new(
        &yaml,
        "machines:\n  - mac: 52:54:00:aa:00:01\n    hostname: cp-1\n    profile: controlplane\n",
    )
}

#[test]
fn http_scripts_and_assets_with_range_and_head() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = lab();
    let k = Kiln::start(&lab.config(), None);
    let (http, proxy) = (k.ports.http, k.ports.proxy_dhcp);
    // The machine did proxyDHCP from 127.0.0.1: its script carries its config.
    common::dhcp_claim(proxy, "52:54:00:aa:00:01", std::net::Ipv4Addr::LOCALHOST);
    let base = format!("http://127.0.0.1:{http}");

    let body = curl(&[&format!("{base}/boot.ipxe")]).text();
    assert!(
        body.starts_with("#!ipxe\n")
            && body.contains(&format!("chain --autofree {base}/ipxe/${{mac:hexhyp}}")),
        "{body}"
    );

    // The known machine's script: kernel, initrd and the Talos arguments.
    let body = curl(&[&format!("{base}/ipxe/52-54-00-AA-00-01?uuid=1234")]).text();
    assert!(body.contains(&format!("kernel {base}/assets/talos/v1.13.9/vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal")), "{body}");
    assert!(
        body.contains(&format!(
            "initrd {base}/assets/talos/v1.13.9/initramfs-amd64.xz"
        )),
        "{body}"
    );
    for a in [
        "init_on_alloc=1",
        "slab_nomerge",
        "pti=on",
        "console=ttyS0",
        "talos.config=",
    ] {
        assert!(body.contains(a), "{a}: {body}");
    }
    // An unknown machine is told why and sent to its next boot device.
    let body = curl(&[&format!("{base}/ipxe/52-54-00-aa-00-99")]).text();
    assert!(
        body.contains("not in the inventory") && body.trim_end().ends_with("exit"),
        "{body}"
    );
    let code = curl(&[&format!("{base}/ipxe/not-a-mac")]).code;
    assert_eq!(code, "400");

    // Range: exactly the bytes asked for, 206.
    let asset = lab
        .path()
        .join("boot-assets/talos/v1.13.9/initramfs-amd64.xz");
    let full = std::fs::read(&asset).unwrap();
    let out = curl(&[
        "-r",
        "1000-1999",
        &format!("{base}/assets/talos/v1.13.9/initramfs-amd64.xz"),
    ]);
    assert_eq!(out.code, "206");
    assert_eq!(out.body, &full[1000..2000]);
    // Whole file.
    let out = curl(&[&format!("{base}/assets/talos/v1.13.9/initramfs-amd64.xz")]);
    assert_eq!(out.body, full);
    // HEAD: length, no body.
    let head = curl(&[
        "-I",
        &format!("{base}/assets/talos/v1.13.9/initramfs-amd64.xz"),
    ])
    .text();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", full.len())),
        "{head}"
    );
    // No escaping the asset directory.
    let code = curl(&["--path-as-is", &format!("{base}/assets/../kiln.yaml")]).code;
    assert_ne!(code, "200");
    let code = curl(&[&format!("{base}/assets/%2e%2e/kiln.yaml")]).code;
    assert_ne!(code, "200");
}

/// Plain asset GETs and HEADs go out by sendfile (kiln's zero-copy path);
/// the same request with a condition goes through axum's ServeDir. A client
/// sees the same answer from both: status, bytes, headers, ranges, 416.
#[test]
fn the_sendfile_path_and_servedir_answer_alike() {
    if skip_unless(have("curl"), "curl") {
        return;
    }
    let lab = lab();
    let data: Vec<u8> = (0..3_000_001u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let asset = lab
        .path()
        .join("boot-assets/talos/v1.13.9/initramfs-amd64.xz");
    std::fs::write(&asset, &data).unwrap();
    std::fs::write(lab.path().join("boot-assets/snp.efi"), &data[..5000]).unwrap();
    let k = Kiln::start(&lab.config(), None);
    let url = format!(
        "http://127.0.0.1:{}/assets/talos/v1.13.9/initramfs-amd64.xz",
        k.ports.http
    );
    // ServeDir ignores If-None-Match (it sends no ETag); kiln's fast path
    // leaves every conditional request to it.
    let slow = ["-H", "If-None-Match: \"x\""];
    let get = |extra: &[&str]| {
        let headers = lab.path().join("headers");
        let out = curl(&[extra, &["-D", headers.to_str().unwrap(), url.as_str()]].concat());
        let h = std::fs::read_to_string(&headers)
            .unwrap()
            .to_ascii_lowercase();
        let mut keep: Vec<String> = h
            .lines()
            .filter(|l| {
                [
                    "content-type:",
                    "content-length:",
                    "content-range:",
                    "accept-ranges:",
                    "last-modified:",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .map(|l| l.trim().to_string())
            .collect();
        keep.sort();
        let status = h.lines().next().unwrap_or_default().trim().to_string();
        (status, keep, out.body)
    };
    for range in [
        None,
        Some("0-0"),
        Some("5-"),
        Some("-7"),
        Some("2999990-99999999"),
        Some("3000001-"),
    ] {
        let r: Vec<&str> = range.map(|r| vec!["-r", r]).unwrap_or_default();
        let fast = get(&r);
        let servedir = get(&[r.as_slice(), &slow].concat());
        assert_eq!(
            (&fast.0, &fast.1),
            (&servedir.0, &servedir.1),
            "range {range:?}"
        );
        assert!(fast.2 == servedir.2, "range {range:?}: the bodies differ");
        if range.is_none() {
            assert!(fast.2 == data, "the whole file");
            assert!(fast.0.contains("200"), "{fast:?}");
        }
    }
    let fast = get(&["-r", "10-19"]);
    assert_eq!(
        (fast.0.as_str(), &fast.2[..]),
        ("http/1.1 206 partial content", &data[10..20])
    );
    assert!(get(&["-r", "3000001-"]).0.contains("416"));
    // HEAD: the length, no body, from both.
    let (fast, servedir) = (get(&["-I"]), get(&[&["-I"][..], &slow].concat()));
    assert_eq!((&fast.0, &fast.1), (&servedir.0, &servedir.1));
    // (curl -I prints the headers as its output: no file bytes follow them.)
    assert!(fast.2.len() < 1000 && servedir.2.len() < 1000);
    assert!(get(&["-I"])
        .1
        .contains(&format!("content-length: {}", data.len())));
    // One connection, two assets (keep-alive), then a script: the script
    // closes the connection, so iPXE's next asset fetch starts a fresh one.
    let o = std::process::Command::new("curl")
        .args([
            "-sS",
            "-v",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &url,
            &url,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("Re-using existing connection"),
        "{err}"
    );
    // To iPXE only (other clients keep their connection).
    let boot = format!("http://127.0.0.1:{}/boot.ipxe", k.ports.http);
    let as_ipxe = curl(&["-D", "-", "-A", "iPXE/1.21.1+ (g0123)", &boot]).text();
    assert!(
        as_ipxe.to_ascii_lowercase().contains("connection: close"),
        "{as_ipxe}"
    );
    let as_curl = curl(&["-D", "-", &boot]).text();
    assert!(
        !as_curl.to_ascii_lowercase().contains("connection: close"),
        "{as_curl}"
    );
    // UEFI HTTP Boot firmware wants application/efi, from either path.
    let efi = format!("http://127.0.0.1:{}/assets/snp.efi", k.ports.http);
    for extra in [&[][..], &slow[..]] {
        let h = curl(&[extra, &["-I", efi.as_str()]].concat())
            .text()
            .to_ascii_lowercase();
        assert!(
            h.contains("content-type: application/efi") && h.contains("content-length: 5000"),
            "{h}"
        );
    }
}

#[test]
fn tftp_serves_ipxe_with_options_and_refuses_traversal() {
    if skip_unless(
        have("atftp") && have("tftp") && have("curl"),
        "tftp clients atftp, tftp-hpa and curl",
    ) {
        return;
    }
    let lab = lab();
    // A file of our own in boot_assets, larger than one window of blocks.
    let data: Vec<u8> = (0..850_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(lab.path().join("boot-assets/ipxe.efi"), &data).unwrap();
    let k = Kiln::start(&lab.config(), None);
    let out = lab.path().join("got");
    let port = k.ports.tftp.to_string();

    // atftp negotiates blksize and windowsize (RFC 7440).
    let st = Command::new("atftp")
        .args([
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 8",
            "--option",
            "tsize 0",
            "-g",
            "-r",
            "ipxe.efi",
            "-l",
        ])
        .arg(&out)
        .args(["127.0.0.1", &port])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        data,
        "atftp with blksize+windowsize"
    );

    // curl with blksize.
    let _ = std::fs::remove_file(&out);
    let got = curl(&[
        "--tftp-blksize",
        "1024",
        "-o",
        &out.to_string_lossy(),
        &format!("tftp://127.0.0.1:{port}/ipxe.efi"),
    ]);
    assert!(got.ok, "{}", got.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), data, "curl tftp");

    // tftp-hpa, no options (512-byte blocks); the iPXE binary comes from the system
    // directory when boot_assets lacks it.
    if std::path::Path::new("/usr/lib/ipxe/undionly.kpxe").exists() {
        let _ = std::fs::remove_file(&out);
        let st = Command::new("tftp")
            .args([
                "127.0.0.1",
                &port,
                "-m",
                "binary",
                "-c",
                "get",
                "undionly.kpxe",
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap()
        );
    }

    // Traversal and missing files are errors, and nothing is written.
    for bad in ["../kiln.yaml", "/../../etc/passwd", "nosuch.efi"] {
        let _ = std::fs::remove_file(&out);
        let o = curl(&[
            "-o",
            &out.to_string_lossy(),
            &format!("tftp://127.0.0.1:{port}/{bad}"),
        ]);
        assert!(!o.ok, "{bad} was served");
        assert!(std::fs::read(&out).map(|d| d.is_empty()).unwrap_or(true));
    }
}
