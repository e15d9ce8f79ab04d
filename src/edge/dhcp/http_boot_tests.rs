//! UEFI HTTP Boot answers: the vendor class echoed (firmware ignores an
//! offer without `HTTPClient`), a URL to an `.efi`, and for an
//! `http_boot: uki` profile the UKI itself, in full, relayed and proxy mode;
//! the UKI's schematic carries kiln's token-less config URL.

use dhcproto::v4::{Architecture, DhcpOption, MessageType};

use super::decide_tests::{cfg, ip, pxe, reply, req};
use crate::brain::dhcp::policy::{decide, Ctx, Port};
use crate::brain::dhcp::pool::Pool;
use crate::model::boot::HttpBoot;
use crate::model::config::Config;
use crate::model::inventory::{Arch, Inventory, Machine, Profile, Role};

const UKI: &str = "52:54:00:64:00:03";

fn uki_profile() -> Profile {
    let mut p = Profile::new("arm-uki", Role::Worker, "v1.14.0");
    p.arch = Arch::Arm64;
    p.cluster = Some("lab".into());
    p.http_boot = HttpBoot::Uki;
    p
}

fn inventory(uki_path: Option<&str>) -> Inventory {
    let mut p = uki_profile();
    p.uki = uki_path.map(str::to_string);
    Inventory::from_parts(
        vec![p],
        vec![Machine {
            mac: UKI.parse().unwrap(),
            hostname: "a64-uki".into(),
            profile: "arm-uki".into(),
            ip: None,
            uuid: None,
            boot: Default::default(),
        }],
    )
}

fn http_boot(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(format!("HTTPClient:Arch:{arch:05}:UNDI:003000").into_bytes()),
        DhcpOption::ClientSystemArchitecture(Architecture(arch)),
    ]
}

fn answer(
    c: &Config,
    inv: &Inventory,
    opts: Vec<DhcpOption>,
    giaddr: Option<&str>,
) -> crate::brain::dhcp::msg::Boot {
    let mut r = req(UKI, MessageType::Discover, opts);
    if let Some(g) = giaddr {
        r.giaddr = ip(g);
    }
    let mut pool = Pool::default();
    let d = decide(
        &Ctx {
            cfg: c,
            inventory: inv,
            now: 1000,
        },
        &r,
        Port::Dhcp,
        &mut pool,
    );
    reply(d).0.boot.expect("boot information")
}

#[test]
fn an_http_boot_offer_echoes_httpclient_and_names_an_efi_url() {
    for (full, relay) in [(true, None), (true, Some("10.98.0.1")), (false, None)] {
        let c = cfg(full);
        let inv = inventory(None);
        // No UKI yet (none pulled, no uki: path): iPXE over HTTP.
        let b = answer(&c, &inv, http_boot(19), relay);
        assert_eq!(
            b.vendor_class,
            Some("HTTPClient"),
            "full {full} relay {relay:?}"
        );
        assert_eq!(b.file, "http://10.99.0.1:8080/assets/ipxe-arm64.efi");
        // The profile's UKI.
        let inv = inventory(Some("guest/uki.efi"));
        let b = answer(&c, &inv, http_boot(19), relay);
        assert_eq!(b.vendor_class, Some("HTTPClient"));
        assert_eq!(b.file, "http://10.99.0.1:8080/assets/guest/uki.efi");
        assert!(b.file.ends_with(".efi"), "firmware wants an .efi URL");
        // The same machine by PXE still gets iPXE over TFTP.
        let b = answer(&c, &inv, pxe(11), relay);
        assert_eq!(
            (b.file.as_str(), b.vendor_class),
            ("ipxe-arm64.efi", Some("PXEClient"))
        );
    }
}

#[test]
fn the_uki_schematic_carries_the_token_less_config_url() {
    let c = cfg(true);
    let p = uki_profile();
    let args = crate::brain::uki::kernel_args(&c, &p);
    assert_eq!(
        args[0],
        "talos.config=http://10.99.0.1:8080/config?mac=${mac}&uuid=${uuid}"
    );
    assert!(
        args.contains(&"talos.events.sink=10.99.0.1:4002".to_string()),
        "{args:?}"
    );
    let s = crate::brain::uki::schematic(&c, &p);
    assert!(s.extra_kernel_args.contains(&args[0]));
    assert_ne!(s.id(), p.schematic().id(), "a schematic of its own");
    // `kiln assets pull` fetches that schematic's UKI besides the iPXE files.
    let inv = inventory(None);
    let wants = crate::brain::factory::wanted(&c, &inv, None, &[]).unwrap();
    let uki: Vec<_> = wants.iter().filter(|w| w.uki).collect();
    assert_eq!(uki.len(), 1, "{wants:?}");
    assert_eq!(uki[0].id, s.id());
    assert_eq!(uki[0].files(), vec!["metal-arm64-uki.efi".to_string()]);
    assert!(
        uki[0]
            .schematic_yaml
            .contains("talos.config=http://10.99.0.1:8080/config?mac=${mac}"),
        "{}",
        uki[0].schematic_yaml
    );
}
