//! The repositories' etcd paths that are more than one record: lease binds
//! (compare-and-swap per address and per MAC) and boot tokens (one live
//! token per MAC). The single-record ones go through `Store::modify`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::etcd::{Etcd, Lookup, Put};
use super::leases::LeaseChange;
use super::tokens::BootToken;
use super::{Store, StoreError};
use crate::model::mac::Mac;

/// Lease changes per transaction (etcd allows 128 operations in one).
const CHANGES_PER_TXN: usize = 32;
/// Expired tokens are swept at most this often (seconds), this many at a time.
const SWEEP_EVERY: u64 = 30;
const SWEEP: usize = 64;

impl Store {
    /// Bind and free addresses. Each bind compares the address's record and
    /// the MAC's binding with what this daemon last saw: if another daemon
    /// changed either first, nothing of that transaction is written and the
    /// caller gets [`StoreError::Conflict`] (DHCP then does not answer).
    pub(super) fn etcd_leases(&self, e: &Etcd, changes: &[LeaseChange]) -> Result<(), StoreError> {
        for chunk in changes.chunks(CHANGES_PER_TXN) {
            self.etcd_lease_chunk(e, chunk)?;
        }
        Ok(())
    }

    fn etcd_lease_chunk(&self, e: &Etcd, chunk: &[LeaseChange]) -> Result<(), StoreError> {
        // One transaction may touch a key once: the last change wins, as it
        // would applied in order.
        let mut puts: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for c in chunk {
            match c {
                LeaseChange::Bind(l) => {
                    let key = format!("leases/{}", l.ip);
                    puts.insert(key.clone(), Some(self.encode("leases", &key, l)?));
                    puts.insert(
                        format!("lease_macs/{}", l.mac),
                        Some(l.ip.to_string().into_bytes()),
                    );
                }
                LeaseChange::Free(ip) => {
                    puts.insert(format!("leases/{ip}"), None);
                }
            }
        }
        let written: Vec<String> = puts.keys().cloned().collect();
        let puts: Vec<Put> = puts.into_iter().collect();
        for attempt in 0..4 {
            // Decide on one view of the replica and write only if none of what
            // was looked at changed since (another daemon's bind included).
            let (mut expect, mut verdict) =
                e.view(|get| self.etcd_leases_allowed(get, chunk, &written));
            // Refused on this daemon's view: read the keys it looked at from
            // etcd itself (the replica may not have seen another daemon's
            // release yet), then decide again.
            if attempt == 0 && matches!(verdict, Err(StoreError::Conflict(_))) {
                let keys: Vec<String> = expect.into_iter().map(|(k, _)| k).collect();
                e.fresh(&keys)?;
                (expect, verdict) = e.view(|get| self.etcd_leases_allowed(get, chunk, &written));
            }
            verdict?;
            if e.swap(&expect, &puts)? {
                return Ok(());
            }
            super::etcd::backoff(attempt);
        }
        Err(StoreError::Conflict(format!(
            "{} kept changing under other daemons",
            written.join(", ")
        )))
    }

    /// A bind may not take an address another MAC holds (unexpired), nor give
    /// a MAC a second address while it holds one this batch does not free.
    /// Returns every key looked at, with the revision seen (also when it
    /// refuses: those are the keys to read afresh), and the verdict.
    fn etcd_leases_allowed(
        &self,
        get: Lookup<'_>,
        chunk: &[LeaseChange],
        written: &[String],
    ) -> (Vec<(String, i64)>, Result<(), StoreError>) {
        let now = super::unix_now();
        let mut seen: BTreeMap<String, i64> = BTreeMap::new();
        let mut look = |k: String| {
            let (v, rev) = get(&k);
            seen.insert(k, rev);
            v
        };
        for k in written {
            look(k.clone());
        }
        let freed = |ip: std::net::Ipv4Addr| {
            chunk
                .iter()
                .any(|c| matches!(c, LeaseChange::Free(f) if *f == ip))
        };
        let unexpired = |v: Option<Vec<u8>>| -> Option<super::leases::Lease> {
            serde_json::from_slice::<super::leases::Lease>(&v?)
                .ok()
                .filter(|l| l.expires > now)
        };
        let verdict = (|| {
            for c in chunk {
                let LeaseChange::Bind(l) = c else { continue };
                if let Some(cur) = unexpired(look(format!("leases/{}", l.ip))) {
                    if cur.mac != l.mac && !freed(l.ip) {
                        return Err(StoreError::Conflict(format!(
                            "{} is bound to {} (by another daemon) until {}",
                            l.ip, cur.mac, cur.expires
                        )));
                    }
                }
                let Some(ip) = look(format!("lease_macs/{}", l.mac)) else {
                    continue;
                };
                let ip = String::from_utf8_lossy(&ip).into_owned();
                if ip == l.ip.to_string() {
                    continue;
                }
                if let Some(cur) =
                    unexpired(look(format!("leases/{ip}"))).filter(|c| c.mac == l.mac)
                {
                    if !freed(cur.ip) {
                        return Err(StoreError::Conflict(format!(
                            "{} already holds {} (bound by another daemon)",
                            l.mac, cur.ip
                        )));
                    }
                }
            }
            Ok(())
        })();
        (seen.into_iter().collect(), verdict)
    }

    /// Record `token` as `t.mac`'s one live boot token (voiding its last).
    pub(super) fn etcd_token_put(
        &self,
        e: &Etcd,
        token: &str,
        t: &BootToken,
        now: u64,
    ) -> Result<(), StoreError> {
        let v = self.encode("boot_tokens", "(token)", t)?;
        let by_mac = format!("boot_tokens_by_mac/{}", t.mac);
        for attempt in 0..8 {
            let mut puts: Vec<Put> = self.expired_tokens(e, now);
            let (old, rev) = e.held(&by_mac);
            if let Some(old) = old {
                let old = String::from_utf8_lossy(&old).into_owned();
                if old != token {
                    puts.push((format!("boot_tokens/{old}"), None));
                }
            }
            puts.push((format!("boot_tokens/{token}"), Some(v.clone())));
            puts.push((by_mac.clone(), Some(token.as_bytes().to_vec())));
            puts.sort_by(|a, b| a.0.cmp(&b.0));
            puts.dedup_by(|a, b| a.0 == b.0);
            if e.swap(&[(by_mac.clone(), rev)], &puts)? {
                return Ok(());
            }
            super::etcd::backoff(attempt);
        }
        Err(StoreError::Conflict(format!(
            "{}'s boot token kept changing under other daemons",
            t.mac
        )))
    }

    /// Void `mac`'s boot token.
    pub(super) fn etcd_token_void(&self, e: &Etcd, mac: &Mac) -> Result<(), StoreError> {
        let by_mac = format!("boot_tokens_by_mac/{mac}");
        for attempt in 0..8 {
            let (Some(old), rev) = e.held(&by_mac) else {
                return Ok(());
            };
            let old = String::from_utf8_lossy(&old).into_owned();
            let puts = vec![(format!("boot_tokens/{old}"), None), (by_mac.clone(), None)];
            if e.swap(&[(by_mac.clone(), rev)], &puts)? {
                return Ok(());
            }
            super::etcd::backoff(attempt);
        }
        Err(StoreError::Conflict(format!(
            "{mac}'s boot token kept changing under other daemons"
        )))
    }

    /// A few expired tokens to delete, every SWEEP_EVERY seconds at most.
    fn expired_tokens(&self, e: &Etcd, now: u64) -> Vec<Put> {
        // Per store (each daemon, each test's store), not per process.
        let last = e.last_sweep.load(Ordering::Relaxed);
        if now < last + SWEEP_EVERY
            || e.last_sweep
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (k, v) in e.list("boot_tokens") {
            if out.len() >= SWEEP {
                break;
            }
            match serde_json::from_slice::<BootToken>(&v) {
                Ok(b) if b.expires <= now => {
                    out.push((format!("boot_tokens/{k}"), None));
                    // Its MAC's index row stays until that MAC boots again;
                    // it names a token that is gone, which finds nothing.
                }
                _ => {}
            }
        }
        out
    }
}
