//! The pool, pure: offers, binds, moves, reservations, DECLINE and ping
//! conflicts, and what a restart rebuilds from the store.

use super::*;

fn subnet() -> Subnet {
    Subnet {
        net: "10.0.0.0/24".parse().unwrap(),
        range: ("10.0.0.10".parse().unwrap(), "10.0.0.12".parse().unwrap()),
        router: None,
        dns: vec![],
    }
}
fn m(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}
fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn a_replaced_machine_takes_over_its_fixed_address_from_the_retired_mac() {
    let s = subnet();
    let fixed = ip("10.0.0.50");
    let mut p = Pool::default();
    p.set_reservations([(fixed, m(1))]);
    p.offer(m(1), &s, None, 100).unwrap();
    p.bind(m(1), &s, fixed, 3600, 100).unwrap();
    // The identity moves to m(2): the old box's lease still holds the address...
    p.set_reservations([(fixed, m(2))]);
    assert_eq!(
        p.offer(m(2), &s, None, 200),
        Err(PoolError::Taken {
            ip: fixed,
            holder: m(1)
        })
    );
    // ...until m(1) is known to be retired: then the new box gets it, and
    // the old MAC's lease is gone.
    p.set_retired([m(1)]);
    assert_eq!(p.offer(m(2), &s, None, 200).unwrap(), fixed);
    p.bind(m(2), &s, fixed, 3600, 200).unwrap();
    assert_eq!(p.mac_of(fixed, 200), Some(m(2)));
    assert_eq!(p.lease_of(&m(1), 200), None);
}

#[test]
fn offers_are_stable_and_distinct() {
    let mut p = Pool::default();
    let s = subnet();
    let a = p.offer(m(1), &s, None, 100).unwrap();
    assert_eq!(p.offer(m(1), &s, None, 101).unwrap(), a);
    let b = p.offer(m(2), &s, Some(a), 101).unwrap();
    assert_ne!(
        a, b,
        "an address offered to one MAC is not offered to another"
    );
    p.bind(m(1), &s, a, 3600, 102).unwrap();
    assert_eq!(
        p.bind(m(2), &s, a, 3600, 103),
        Err(PoolError::Taken {
            ip: a,
            holder: m(1)
        })
    );
}

#[test]
fn exhaustion_then_reuse_after_expiry() {
    let mut p = Pool::default();
    let s = subnet();
    for i in 1..=3 {
        let a = p.offer(m(i), &s, None, 0).unwrap();
        p.bind(m(i), &s, a, 100, 0).unwrap();
    }
    assert!(matches!(
        p.offer(m(4), &s, None, 50),
        Err(PoolError::Exhausted(_))
    ));
    let a = p.offer(m(4), &s, None, 200).unwrap();
    p.bind(m(4), &s, a, 100, 200).unwrap();
    assert_eq!(p.lease_of(&m(4), 200), Some(a));
}

#[test]
fn only_a_bound_unexpired_lease_proves_an_address() {
    let mut p = Pool::default();
    let s = subnet();
    let a = p.offer(m(1), &s, None, 0).unwrap();
    assert_eq!(p.lease_of(&m(1), 0), None, "an offer proves nothing");
    assert_eq!(p.mac_of(a, 0), None);
    p.bind(m(1), &s, a, 100, 0).unwrap();
    assert_eq!(p.lease_of(&m(1), 99), Some(a));
    assert_eq!(p.mac_of(a, 99), Some(m(1)));
    assert_eq!(p.lease_of(&m(1), 100), None, "expired");
    assert_eq!(p.mac_of(a, 100), None);
}

#[test]
fn reservations_are_kept_for_their_owner() {
    let mut p = Pool::default();
    let s = subnet();
    p.set_reservations([(ip("10.0.0.10"), m(9)), (ip("10.0.0.50"), m(8))]);
    assert_eq!(
        p.offer(m(1), &s, Some(ip("10.0.0.10")), 0).unwrap(),
        ip("10.0.0.11")
    );
    assert_eq!(
        p.offer(m(8), &s, None, 0).unwrap(),
        ip("10.0.0.50"),
        "fixed address outside the range"
    );
    assert!(matches!(
        p.bind(m(8), &s, ip("10.0.0.12"), 60, 0),
        Err(PoolError::WrongAddress { .. })
    ));
    assert!(matches!(
        p.bind(m(1), &s, ip("10.0.0.10"), 60, 0),
        Err(PoolError::Taken { .. })
    ));
}

#[test]
fn restart_keeps_leases() {
    let s = subnet();
    let (mut p, stale) = Pool::new([Lease {
        ip: ip("10.0.0.10"),
        mac: m(1),
        expires: 1000,
        hostname: None,
        declined: false,
    }]);
    assert!(stale.is_empty());
    assert_eq!(
        p.offer(m(2), &s, Some(ip("10.0.0.10")), 10).unwrap(),
        ip("10.0.0.11")
    );
    assert_eq!(p.offer(m(1), &s, None, 10).unwrap(), ip("10.0.0.10"));
}

#[test]
fn allocation_moves_on_instead_of_reusing_a_just_freed_address() {
    let mut p = Pool::default();
    let s = subnet();
    let a = p.offer(m(1), &s, None, 0).unwrap();
    p.bind(m(1), &s, a, 100, 0).unwrap();
    let b = p.offer(m(2), &s, None, 0).unwrap();
    assert_eq!((a, b), (ip("10.0.0.10"), ip("10.0.0.11")));
    p.release(&m(1), a);
    assert_eq!(p.offer(m(3), &s, None, 0).unwrap(), ip("10.0.0.12"));
    // Wrapped around: the freed one is next.
    assert_eq!(p.offer(m(4), &s, None, 0).unwrap(), ip("10.0.0.10"));
}

#[test]
fn release_and_decline() {
    let mut p = Pool::default();
    let s = subnet();
    let a = p.offer(m(1), &s, None, 0).unwrap();
    p.bind(m(1), &s, a, 100, 0).unwrap();
    assert_eq!(p.release(&m(2), a), None, "only the holder releases");
    assert_eq!(p.release(&m(1), a), Some(LeaseChange::Free(a)));
    let a = p.offer(m(1), &s, None, 0).unwrap();
    assert_eq!(
        p.decline(&m(1), a, 600, 0),
        None,
        "an offer alone cannot be declined"
    );
    p.bind(m(1), &s, a, 100, 0).unwrap();
    let Some(LeaseChange::Bind(probation)) = p.decline(&m(1), a, 600, 0) else {
        panic!("a decline is made durable");
    };
    assert!(probation.declined && probation.expires == 600);
    assert_ne!(p.offer(m(1), &s, None, 1).unwrap(), a);
    // After a restart the address is still on probation, for everyone...
    let (mut p, _) = Pool::new([probation]);
    for i in 1..=2 {
        assert_ne!(p.offer(m(i), &s, Some(a), 599).unwrap(), a);
    }
    assert!(matches!(
        p.bind(m(7), &s, a, 60, 599),
        Err(PoolError::Taken { .. })
    ));
    // ...until it ends.
    assert_eq!(p.offer(m(8), &s, Some(a), 600).unwrap(), a);
}

#[test]
fn an_offer_elsewhere_keeps_the_lease_until_the_bind_frees_it() {
    let s = subnet();
    let mut p = Pool::default();
    let old = ip("10.0.0.10");
    p.bind(m(1), &s, old, 100, 0).unwrap();
    // A reload gives m(1) a fixed address: the offer goes there...
    p.set_reservations([(ip("10.0.0.50"), m(1))]);
    assert_eq!(p.offer(m(1), &s, None, 10).unwrap(), ip("10.0.0.50"));
    // ...but until it binds, its lease still holds the old address.
    assert_eq!(p.mac_of(old, 10), Some(m(1)));
    assert_ne!(p.offer(m(2), &s, Some(old), 10).unwrap(), old);
    let (_, moved) = p.bind(m(1), &s, ip("10.0.0.50"), 100, 20).unwrap();
    assert_eq!(moved, Some(old), "the old row is freed with the bind");
    assert_eq!(p.mac_of(old, 20), None);
}

#[test]
fn a_ping_conflict_only_takes_the_offer_it_was_for() {
    let s = subnet();
    let mut p = Pool::default();
    let a = p.offer(m(1), &s, None, 0).unwrap();
    assert!(p.conflict(&m(1), a, 600, 0).is_some());
    assert_ne!(p.offer(m(2), &s, Some(a), 1).unwrap(), a);
    // Bound meanwhile: the lease is not replaced by a probation.
    let b = p.offer(m(3), &s, None, 2).unwrap();
    p.bind(m(3), &s, b, 100, 2).unwrap();
    assert_eq!(p.conflict(&m(3), b, 600, 2), None);
    assert_eq!(p.mac_of(b, 3), Some(m(3)));
}

#[test]
fn a_mac_that_moves_frees_its_old_row_and_restart_keeps_the_newest_lease() {
    let s = subnet();
    let mut p = Pool::default();
    let (first, _) = p.bind(m(1), &s, ip("10.0.0.12"), 100, 0).unwrap();
    let (second, moved) = p.bind(m(1), &s, ip("10.0.0.10"), 100, 50).unwrap();
    assert_eq!(
        moved,
        Some(ip("10.0.0.12")),
        "the old row is freed with the bind"
    );
    assert_eq!(p.lease_of(&m(1), 60), Some(ip("10.0.0.10")));
    // A store that still holds both rows (left by an older kiln): the
    // newest lease wins, whatever the address order, and the other is freed.
    let (p, stale) = Pool::new([second.clone(), first.clone()]);
    assert_eq!(p.lease_of(&m(1), 60), Some(ip("10.0.0.10")));
    assert_eq!(stale, vec![LeaseChange::Free(ip("10.0.0.12"))]);
    let (p, _) = Pool::new([first, second]);
    assert_eq!(p.lease_of(&m(1), 60), Some(ip("10.0.0.10")));
}

fn wide() -> Subnet {
    Subnet {
        range: ("10.0.0.10".parse().unwrap(), "10.0.0.19".parse().unwrap()),
        ..subnet()
    }
}

/// Two daemons on one store, each with its own pool: each hands out its
/// share of the range first (every other address), so allocating at once
/// they pick different addresses; once its share is gone a daemon takes
/// the rest, and never an address its peer's lease holds.
#[test]
fn daemons_allocate_from_their_own_share_first() {
    let s = wide();
    let (mut a, mut b) = (Pool::default(), Pool::default());
    a.set_share(0, 2);
    b.set_share(1, 2);
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..5u8 {
        let x = a.offer(m(n), &s, None, 100).unwrap();
        let y = b.offer(m(100 + n), &s, None, 100).unwrap();
        assert_eq!((u32::from(x) - 10) % 2, 0, "{x}");
        assert_eq!((u32::from(y) - 10) % 2, 1, "{y}");
        assert!(seen.insert(x) && seen.insert(y), "{x} or {y} twice");
        let (lx, _) = a.bind(m(n), &s, x, 3600, 100).unwrap();
        let (ly, _) = b.bind(m(100 + n), &s, y, 3600, 100).unwrap();
        // What each bound comes to the other through the store's watch.
        b.learn(&lx, 100);
        a.learn(&ly, 100);
    }
    // Both shares are used up: the whole range is held, by one MAC each.
    assert!(matches!(
        a.offer(m(50), &s, None, 100),
        Err(PoolError::Exhausted(_))
    ));
    for ip in seen {
        assert_eq!(a.mac_of(ip, 100), b.mac_of(ip, 100), "{ip}");
    }
}

/// A peer's lease stands over what the pool held for that address (an
/// offer, or another MAC's lease the store no longer has); it moves the
/// MAC off its old address here; a lapsed one teaches nothing; a peer's
/// probation holds the address for nobody.
#[test]
fn a_peers_lease_stands_over_the_pool() {
    let s = wide();
    let mut p = Pool::default();
    let x = p.offer(m(1), &s, None, 100).unwrap();
    let peer = Lease {
        ip: x,
        mac: m(2),
        expires: 4000,
        hostname: None,
        declined: false,
    };
    p.learn(&peer, 100);
    assert_eq!(p.mac_of(x, 100), Some(m(2)));
    let y = p.offer(m(1), &s, None, 100).unwrap();
    assert_ne!(x, y, "m(1) is offered another address");
    assert!(matches!(
        p.bind(m(1), &s, x, 3600, 100),
        Err(PoolError::Taken { .. })
    ));
    // m(2) moves (the peer bound it elsewhere): its old address here is free.
    let z = ip("10.0.0.18");
    p.learn(
        &Lease {
            ip: z,
            ..peer.clone()
        },
        101,
    );
    assert_eq!(p.mac_of(z, 101), Some(m(2)));
    assert_eq!(p.mac_of(x, 101), None);
    assert_eq!(p.lease_of(&m(2), 101), Some(z));
    // A lapsed lease changes nothing.
    p.learn(
        &Lease {
            ip: y,
            expires: 50,
            ..peer.clone()
        },
        101,
    );
    assert_eq!(p.offer(m(1), &s, None, 101).unwrap(), y);
    // A peer's probation: held for nobody.
    let w = ip("10.0.0.17");
    p.learn(
        &Lease {
            ip: w,
            declined: true,
            ..peer
        },
        101,
    );
    assert!(matches!(
        p.bind(m(3), &s, w, 3600, 101),
        Err(PoolError::Taken { .. })
    ));
}
