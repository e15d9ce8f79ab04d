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
    /// (this daemon's place, live daemons) on a shared store: new addresses
    /// come first from this daemon's share of each range (every n-th), so
    /// daemons allocating at once rarely pick the same one. (0, 1): alone.
    share: (u32, u32),
}

impl Pool {
    /// (bound, free) addresses of `subnet`'s dynamic range at `now`: bound =
    /// leased and unexpired; free = neither leased, offered, declined nor reserved.
    pub(crate) fn counts(&self, subnet: &Subnet, now: u64) -> (u64, u64) {
        let (first, last) = (u32::from(subnet.range.0), u32::from(subnet.range.1));
        let size = u64::from(last.saturating_sub(first)) + 1;
        let mut bound = 0u64;
        let mut busy = 0u64;
        for (ip, e) in &self.entries {
            let n = u32::from(*ip);
            if n < first || n > last || e.expires <= now {
                continue;
            }
            busy += 1;
            if e.state == State::Bound {
                bound += 1;
            }
        }
        let reserved = self
            .reserved
            .keys()
            .filter(|ip| {
                (first..=last).contains(&u32::from(**ip)) && !self.entries.contains_key(ip)
            })
            .count() as u64;
        (bound, size.saturating_sub(busy + reserved))
    }

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

    /// This daemon's place among `of` live daemons sharing the store (see
    /// `share`); (0, 1) alone.
    pub(crate) fn set_share(&mut self, place: u32, of: u32) {
        self.share = if of > 1 && place < of {
            (place, of)
        } else {
            (0, 1)
        };
    }

    /// A lease from the shared store (another daemon's bind, or this one's
    /// coming back): it stands over what this pool holds for the address,
    /// an offer or another MAC's lease included. A lapsed one teaches
    /// nothing. The MAC's other address here goes, as the store moved it.
    pub(crate) fn learn(&mut self, l: &Lease, now: u64) {
        if l.expires <= now {
            return;
        }
        if l.declined {
            self.forget(&l.mac, l.ip);
            self.entries.insert(l.ip, Entry::declined(l.expires));
            return;
        }
        if let Some(e) = self.entries.get_mut(&l.ip) {
            if e.mac == l.mac && e.state == State::Bound {
                e.expires = e.expires.max(l.expires);
                return;
            }
        }
        if let Some(old) = self.durable.insert(l.mac, l.ip).filter(|o| *o != l.ip) {
            if self.entries.get(&old).is_some_and(|e| e.mac == l.mac) {
                self.entries.remove(&old);
            }
        }
        self.insert(l.ip, l.mac, l.expires, State::Bound);
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
        // With peers, this daemon's share first, then the whole range.
        let (place, of) = self.share;
        let passes: &[Option<(u32, u32)>] = if of > 1 {
            &[Some((place, of)), None]
        } else {
            &[None]
        };
        for stride in passes {
            let mut oldest: Option<(u64, Ipv4Addr)> = None;
            for k in 0..size {
                let n = lo + (start - lo + k) % size;
                if stride.is_some_and(|(i, of)| (n - lo) % of != i) {
                    continue;
                }
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
            if let Some((_, ip)) = oldest {
                return Ok(ip);
            }
        }
        Err(PoolError::Exhausted(subnet.net.to_string()))
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
        self.reserved_by_mac.get(mac) == Some(&ip) || self.is(ip, mac, State::Bound)
    }

    /// Whether `ip`'s entry is `mac`'s, in `state`.
    fn is(&self, ip: Ipv4Addr, mac: &Mac, state: State) -> bool {
        self.entries
            .get(&ip)
            .is_some_and(|e| e.mac == *mac && e.state == state)
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
        self.is(ip, mac, State::Offered)
            .then(|| self.probation(*mac, ip, now + hold_secs))
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
        self.is(ip, mac, State::Bound)
            .then(|| self.probation(*mac, ip, now + hold_secs))
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
