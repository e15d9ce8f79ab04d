//! The address pool of full mode: which address a MAC gets, pure and in memory.
//! Every change that must survive a restart comes back as a [`LeaseChange`] that
//! the server writes to the store *before* it answers.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::model::config::Subnet;
use crate::model::mac::Mac;
use crate::store::leases::{Lease, LeaseChange};

/// How long an offered address stays set aside for the client that was offered it.
pub(crate) const OFFER_HOLD_SECS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Offered,
    Bound,
    Declined,
}

#[derive(Debug, Clone)]
struct Entry {
    mac: Mac,
    expires: u64,
    state: State,
}

impl Entry {
    /// On probation after a DECLINE: held for nobody.
    fn declined(until: u64) -> Entry {
        Entry {
            mac: Mac([0; 6]),
            expires: until,
            state: State::Declined,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PoolError {
    #[error("no free address in {0}")]
    Exhausted(String),
    #[error("{ip} belongs to {holder}")]
    Taken { ip: Ipv4Addr, holder: Mac },
    #[error("{ip} is not an address this MAC may have in {net}")]
    WrongAddress { ip: Ipv4Addr, net: String },
}

#[derive(Debug, Default)]
pub(crate) struct Pool {
    entries: HashMap<Ipv4Addr, Entry>,
    /// Each MAC's latest entry (an offer or its lease).
    by_mac: HashMap<Mac, Ipv4Addr>,
    /// Each MAC's row in the store (its bound lease): kept in memory, and
    /// held against others, while the MAC is offered another address, and
    /// freed when it binds one.
    durable: HashMap<Mac, Ipv4Addr>,
    /// Fixed addresses from the inventory: address → owner.
    reserved: HashMap<Ipv4Addr, Mac>,
    reserved_by_mac: HashMap<Mac, Ipv4Addr>,
    /// MACs whose machine was replaced (`kiln replace`): their leases no longer
    /// hold an address against the machine that took over the identity.
    retired: std::collections::HashSet<Mac>,
    /// Per range (keyed by its first address): where the next search for a
    /// never-used address starts.
    cursor: HashMap<u32, u32>,
}

impl Pool {
    /// Start from the durable leases in the store. A MAC with rows for two
    /// addresses keeps its newest lease; the older rows come back as changes
    /// to free them (they were left by a crash between two writes of an
    /// older kiln).
    pub(crate) fn new(leases: impl IntoIterator<Item = Lease>) -> (Pool, Vec<LeaseChange>) {
        let mut p = Pool::default();
        let mut leases: Vec<Lease> = leases.into_iter().collect();
        // Oldest first, so the newest lease of a MAC is the one that stays.
        leases.sort_by_key(|l| (l.expires, u32::from(l.ip)));
        let mut stale = Vec::new();
        for l in leases {
            if l.declined {
                p.entries.insert(l.ip, Entry::declined(l.expires));
                continue;
            }
            if let Some(old) = p.durable.insert(l.mac, l.ip) {
                stale.push(LeaseChange::Free(old));
                p.entries.remove(&old);
            }
            p.insert(l.ip, l.mac, l.expires, State::Bound);
        }
        (p, stale)
    }

    /// Replace the set of inventory reservations (on start and on reload).
    pub(crate) fn set_reservations(&mut self, r: impl IntoIterator<Item = (Ipv4Addr, Mac)>) {
        self.reserved = r.into_iter().collect();
        self.reserved_by_mac = self.reserved.iter().map(|(ip, m)| (*m, *ip)).collect();
    }

    /// Replace the set of retired MACs (on start and on reload).
    pub(crate) fn set_retired(&mut self, r: impl IntoIterator<Item = Mac>) {
        self.retired = r.into_iter().collect();
    }

    fn insert(&mut self, ip: Ipv4Addr, mac: Mac, expires: u64, state: State) {
        if let Some(old) = self.by_mac.insert(mac, ip) {
            // A superseded offer goes; the MAC's lease stays until it binds.
            if old != ip && self.durable.get(&mac) != Some(&old) {
                self.entries.remove(&old);
            }
        }
        if let Some(prev) = self.entries.insert(
            ip,
            Entry {
                mac,
                expires,
                state,
            },
        ) {
            if prev.mac != mac && self.by_mac.get(&prev.mac) == Some(&ip) {
                self.by_mac.remove(&prev.mac);
            }
            // A bind overwrites the other MAC's (lapsed or retired) row.
            if prev.mac != mac && state == State::Bound && self.durable.get(&prev.mac) == Some(&ip)
            {
                self.durable.remove(&prev.mac);
            }
        }
    }

    /// Who holds a bound, unexpired lease on `ip` (what DHCP proved).
    pub(crate) fn mac_of(&self, ip: Ipv4Addr, now: u64) -> Option<Mac> {
        self.entries
            .get(&ip)
            .filter(|e| e.state == State::Bound && e.expires > now)
            .filter(|e| !self.retired.contains(&e.mac))
            .map(|e| e.mac)
    }

    /// The address of `mac`'s bound, unexpired lease (what DHCP proved).
    pub(crate) fn lease_of(&self, mac: &Mac, now: u64) -> Option<Ipv4Addr> {
        let ip = *self.durable.get(mac)?;
        (self.mac_of(ip, now) == Some(*mac)).then_some(ip)
    }

    /// Who holds `ip` right now (an unexpired offer, lease or decline), if anyone else.
    fn holder(&self, ip: Ipv4Addr, mac: &Mac, now: u64) -> Option<Mac> {
        if let Some(owner) = self.reserved.get(&ip) {
            if owner != mac {
                return Some(*owner);
            }
        }
        match self.entries.get(&ip) {
            Some(e) if e.mac != *mac && e.expires > now && !self.retired.contains(&e.mac) => {
                Some(e.mac)
            }
            _ => None,
        }
    }

    /// Whether `mac` may hold `ip` in `subnet`.
    fn allowed(&self, ip: Ipv4Addr, mac: &Mac, subnet: &Subnet) -> bool {
        match self.reserved_by_mac.get(mac) {
            Some(r) if subnet.net.contains(r) => *r == ip,
            _ => subnet.in_range(ip),
        }
    }

    /// Choose an address for `mac` and set it aside for a short while (DISCOVER).
    pub(crate) fn offer(
        &mut self,
        mac: Mac,
        subnet: &Subnet,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Ipv4Addr, PoolError> {
        let ip = self.choose(&mac, subnet, requested, now)?;
        let current = self
            .entries
            .get(&ip)
            .filter(|e| e.mac == mac && e.state == State::Bound && e.expires > now);
        if current.is_none() {
            self.insert(ip, mac, now + OFFER_HOLD_SECS, State::Offered);
        }
        Ok(ip)
    }

    fn choose(
        &mut self,
        mac: &Mac,
        subnet: &Subnet,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Ipv4Addr, PoolError> {
        // 1. A fixed address from the inventory.
        if let Some(r) = self
            .reserved_by_mac
            .get(mac)
            .filter(|r| subnet.net.contains(*r))
        {
            return match self.holder(*r, mac, now) {
                None => Ok(*r),
                Some(holder) => Err(PoolError::Taken { ip: *r, holder }),
            };
        }
        // 2. What it had before (even expired, as long as nobody took it since).
        if let Some(ip) = self.by_mac.get(mac) {
            if self.allowed(*ip, mac, subnet) && self.holder(*ip, mac, now).is_none() {
                return Ok(*ip);
            }
        }
        // 3. What it asks for.
        if let Some(ip) = requested {
            if self.allowed(ip, mac, subnet) && self.holder(ip, mac, now).is_none() {
                return Ok(ip);
            }
        }
        // 4. A never-used address, scanning on from where the last search
        //    stopped (so allocation stays O(1) amortised, not O(leases)), else
        //    the one that expired longest ago.
        let (lo, hi) = (u32::from(subnet.range.0), u32::from(subnet.range.1));
        let size = hi - lo + 1;
        let start = self
            .cursor
            .get(&lo)
            .copied()
            .filter(|c| (lo..=hi).contains(c))
            .unwrap_or(lo);
        let mut oldest: Option<(u64, Ipv4Addr)> = None;
        for k in 0..size {
            let n = lo + (start - lo + k) % size;
            let ip = Ipv4Addr::from(n);
            if self.reserved.contains_key(&ip) {
                continue;
            }
            match self.entries.get(&ip) {
                None => {
                    self.cursor.insert(lo, if n == hi { lo } else { n + 1 });
                    return Ok(ip);
                }
                Some(e) if e.expires <= now && oldest.is_none_or(|(t, _)| e.expires < t) => {
                    oldest = Some((e.expires, ip))
                }
                _ => {}
            }
        }
        oldest
            .map(|(_, ip)| ip)
            .ok_or_else(|| PoolError::Exhausted(subnet.net.to_string()))
    }

    /// Bind `ip` to `mac` (REQUEST). The returned changes (the bind, and the
    /// freeing of the MAC's previous address if it moved) must be made
    /// durable before the ACK goes out.
    pub(crate) fn bind(
        &mut self,
        mac: Mac,
        subnet: &Subnet,
        ip: Ipv4Addr,
        lease_secs: u64,
        now: u64,
    ) -> Result<(Lease, Option<Ipv4Addr>), PoolError> {
        if !self.allowed(ip, &mac, subnet) {
            return Err(PoolError::WrongAddress {
                ip,
                net: subnet.net.to_string(),
            });
        }
        if let Some(holder) = self.holder(ip, &mac, now) {
            return Err(PoolError::Taken { ip, holder });
        }
        let lease = Lease {
            ip,
            mac,
            expires: now + lease_secs,
            hostname: None,
            declined: false,
        };
        // The MAC moves: its old row is freed with the bind.
        let moved_from = self.durable.insert(mac, ip).filter(|old| *old != ip);
        if let Some(old) = moved_from {
            if self.entries.get(&old).is_some_and(|e| e.mac == mac) {
                self.entries.remove(&old);
            }
        }
        self.insert(ip, mac, lease.expires, State::Bound);
        Ok((lease, moved_from))
    }

    /// RELEASE: the client gives the address back.
    pub(crate) fn release(&mut self, mac: &Mac, ip: Ipv4Addr) -> Option<LeaseChange> {
        match self.entries.get(&ip) {
            Some(e) if e.mac == *mac => {
                self.entries.remove(&ip);
                self.forget(mac, ip);
                Some(LeaseChange::Free(ip))
            }
            _ => None,
        }
    }

    /// `mac` no longer has `ip` (released, declined, found in use).
    fn forget(&mut self, mac: &Mac, ip: Ipv4Addr) {
        if self.by_mac.get(mac) == Some(&ip) {
            self.by_mac.remove(mac);
        }
        if self.durable.get(mac) == Some(&ip) {
            self.durable.remove(mac);
        }
    }

    /// Put `ip` on probation (held for nobody) until `until`; the row to store.
    fn probation(&mut self, mac: Mac, ip: Ipv4Addr, until: u64) -> LeaseChange {
        self.forget(&mac, ip);
        self.entries.insert(ip, Entry::declined(until));
        LeaseChange::Bind(Lease {
            ip,
            mac,
            expires: until,
            hostname: None,
            declined: true,
        })
    }

    /// Whether `ip` is known to be `mac`'s: its lease (even lapsed, as long
    /// as nobody took it since) or its fixed address. Anything else may be
    /// in use by a device kiln does not know (the ping check's question).
    pub(crate) fn known_for(&self, mac: &Mac, ip: Ipv4Addr) -> bool {
        self.reserved_by_mac.get(mac) == Some(&ip)
            || self
                .entries
                .get(&ip)
                .is_some_and(|e| e.mac == *mac && e.state == State::Bound)
    }

    /// Something answered a ping on `ip`, just offered to `mac`: hold it out
    /// of the pool for `hold_secs`, like a DECLINE. None when the entry is no
    /// longer that offer (the client bound it meanwhile): nothing changes.
    /// The change must be made durable.
    pub(crate) fn conflict(
        &mut self,
        mac: &Mac,
        ip: Ipv4Addr,
        hold_secs: u64,
        now: u64,
    ) -> Option<LeaseChange> {
        let offered = self
            .entries
            .get(&ip)
            .is_some_and(|e| e.mac == *mac && e.state == State::Offered);
        offered.then(|| self.probation(*mac, ip, now + hold_secs))
    }

    /// DECLINE: the address is in use by someone we do not know; keep it out of
    /// the pool for `hold_secs`. Only an address the MAC was given (bound) can
    /// be declined, so a client cannot drain the pool with offers alone. The
    /// returned change (the probation) must be made durable, so a restart
    /// keeps it.
    pub(crate) fn decline(
        &mut self,
        mac: &Mac,
        ip: Ipv4Addr,
        hold_secs: u64,
        now: u64,
    ) -> Option<LeaseChange> {
        match self.entries.get(&ip) {
            Some(e) if e.mac == *mac && e.state == State::Bound => {
                Some(self.probation(*mac, ip, now + hold_secs))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
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
}
