//! Two kiln daemons on one bridge sharing one state through a real 3-member
//! etcd (Debian's etcd-server), and a boot storm against both
//! (`bench/storm-ha.sh`, debug binaries, 200 machines): one daemon killed -9
//! mid-storm and the etcd leader killed too. The storm must complete through
//! the survivor: every machine ready in kiln's shared view, 0 duplicate
//! addresses, every address as the client was ACKed. The 1,000-machine
//! figures are in docs/benchmarks.md (same script, release build).

mod common;

use std::process::Command;

#[test]
fn two_daemons_survive_a_kill_and_an_etcd_leader_loss_mid_storm() {
    if common::skip_unless(common::is_root(), "root (network namespaces)")
        || common::etcd::skip()
        || common::skip_unless(
            std::path::Path::new("/usr/lib/ipxe/undionly.kpxe").exists(),
            "Debian's ipxe package",
        )
    {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new(format!("{root}/bench/storm-ha.sh"))
        .current_dir(root)
        .env("PROFILE", "debug")
        .env("N", "200")
        .env("RAMP", "5")
        .env("KILL", "1")
        .env("LEADER", "1")
        .output()
        .expect("bench/storm-ha.sh");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("{out}\n{err}");
    assert!(o.status.success(), "the HA storm failed:\n{out}\n{err}");
    assert!(
        err.contains("killed -9 at"),
        "daemon b was not killed: {err}"
    );
    assert!(
        err.contains("etcd leader"),
        "the etcd leader was not killed: {err}"
    );
    assert!(
        out.contains("machines: 200, completed: 200, errors: 0, duplicate addresses: 0"),
        "{out}"
    );
    assert!(
        out.contains(
            "kiln: 200 machines, 200 ready, 0 duplicate addresses, 0 whose address differs"
        ),
        "{out}"
    );
}
