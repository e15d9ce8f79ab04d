//! Config rendering in-process (what serving one machine's config costs):
//! generate + profile settings + hostname + event sink, then YAML. It must never
//! be the bottleneck of a boot storm. `cargo bench --bench render`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::brain::render::render;
use kiln::model::config::Config;
use kiln::model::inventory::{Machine, Profile, Role};
use kiln::model::yaml::to_yaml;
use kiln::talos::secrets::Bundle;

fn setup() -> (
    tempfile::TempDir,
    Config,
    BTreeMap<String, Bundle>,
    Machine,
    Profile,
) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("kiln.yaml"),
        "interface: br0\nserver_address: 10.99.0.1\nclusters:\n  lab:\n    endpoint: https://10.99.0.5:6443\n",
    )
    .unwrap();
    let cfg = Config::load(&d.path().join("kiln.yaml")).unwrap();
    let mut secrets = BTreeMap::new();
    secrets.insert("lab".to_string(), Bundle::generate(13).unwrap());
    let m = Machine {
        mac: "52:54:00:aa:00:01".parse().unwrap(),
        hostname: "cp-1".into(),
        profile: "controlplane".into(),
        ip: None,
        uuid: None,
        boot: Default::default(),
    };
    let mut p = Profile::new("controlplane", Role::Controlplane, "v1.13.9");
    p.cluster = Some("lab".into());
    p.install_disk = Some("/dev/sda".into());
    p.dhcp_interfaces = vec!["eth0".into()];
    p.vip = Some("10.99.0.5".parse().unwrap());
    p.kubelet_serving_certs = true;
    (d, cfg, secrets, m, p)
}

fn bench(c: &mut Criterion) {
    let (_d, cfg, secrets, m, p) = setup();
    c.bench_function("render control-plane config (v1.13) to YAML", |b| {
        b.iter(|| {
            let docs = render(black_box(&cfg), &secrets, &m, &p).unwrap();
            black_box(to_yaml(&docs))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
