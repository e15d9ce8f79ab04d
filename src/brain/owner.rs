//! Who owns an address: the proof kiln has that a request comes from the
//! machine it names. MACs are public, so only DHCP counts: in full mode the
//! machine's bound, unexpired lease; in proxy mode (kiln hands out no
//! addresses) the address the machine itself used in DHCP traffic kiln saw.
//! The first such claim wins: a different address claimed for the same MAC
//! while the claim is live is refused and logged, never taken.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::{now, Provisioner};
use crate::brain::ratelog::RateLog;
use crate::model::config::DhcpMode;
use crate::model::mac::Mac;

/// Proxy mode: the address a MAC used in its DHCP traffic, and until when no
/// other address may take its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    pub ip: Ipv4Addr,
    pub live_until: u64,
}

/// Proxy-mode claims.
#[derive(Default)]
pub(crate) struct Owners {
    claims: Mutex<HashMap<Mac, Claim>>,
}

/// One rate limit per kind of refusal, so a flood of one kind does not hide
/// another; each also counts every refusal offered (`RateLog::total`).
pub(crate) static SCRIPT_REFUSALS: RateLog = RateLog::new(10);
pub(crate) static CONFIG_REFUSALS: RateLog = RateLog::new(10);
pub(crate) static EVENT_REFUSALS: RateLog = RateLog::new(10);
pub(crate) static CLAIM_REFUSALS: RateLog = RateLog::new(10);

/// At most this many MACs are remembered (any PXE client on the LAN makes
/// one): past it lapsed claims are purged, then the oldest go.
pub(crate) const MAX_CLAIMS: usize = 65_536;

/// Make room: drop lapsed claims (seeds from records, with `live_until` 0,
/// stay), and if that is not enough, the tenth closest to lapsing, at once,
/// so a full map costs one pass per 6,553 new MACs, not one per packet.
fn bound(c: &mut HashMap<Mac, Claim>, t: u64) {
    c.retain(|_, v| v.live_until == 0 || v.live_until > t);
    if c.len() < MAX_CLAIMS {
        return;
    }
    let mut ends: Vec<u64> = c
        .values()
        .map(|v| v.live_until)
        .filter(|e| *e != 0)
        .collect();
    let k = (MAX_CLAIMS / 10).min(ends.len().saturating_sub(1));
    if ends.is_empty() {
        return;
    }
    let (_, cut, _) = ends.select_nth_unstable(k);
    let cut = *cut;
    c.retain(|_, v| v.live_until == 0 || v.live_until > cut);
}

impl Owners {
    /// Record that `mac` used `ip`; Err(the live claim) when another address holds it.
    pub(crate) fn claim(&self, mac: Mac, ip: Ipv4Addr, ttl: u64, t: u64) -> Result<(), Claim> {
        let mut c = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        match c.get(&mac) {
            Some(old) if old.ip != ip && old.live_until > t => Err(*old),
            _ => {
                // The LAN's server gave `ip` to `mac`: a lapsed claim of another
                // MAC on it is over.
                c.retain(|m, v| *m == mac || v.ip != ip || v.live_until > t);
                if c.len() >= MAX_CLAIMS && !c.contains_key(&mac) {
                    bound(&mut c, t);
                }
                c.insert(
                    mac,
                    Claim {
                        ip,
                        live_until: t + ttl,
                    },
                );
                Ok(())
            }
        }
    }

    /// An address recorded from a proven request before a restart: it stands
    /// for attribution, and any new DHCP claim replaces it.
    pub(crate) fn seed(&self, mac: Mac, ip: Ipv4Addr) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(mac)
            .or_insert(Claim { ip, live_until: 0 });
    }

    pub(crate) fn claim_of(&self, mac: &Mac) -> Option<Claim> {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(mac)
            .copied()
    }

    /// The one MAC (not `gone`) that claimed `ip`; None when none did or several did.
    fn claimant(&self, ip: Ipv4Addr, gone: impl Fn(&Mac) -> bool) -> Option<Mac> {
        let c = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = c
            .iter()
            .filter(|(m, v)| v.ip == ip && !gone(m))
            .map(|(k, _)| *k);
        match (found.next(), found.next()) {
            (Some(m), None) => Some(m),
            _ => None,
        }
    }
}

impl Provisioner {
    /// Proxy mode: DHCP saw `mac` use `ip` (its ciaddr, requested address, or
    /// the source of its 4011 request). Full mode has leases and ignores this.
    pub fn saw(&self, mac: Mac, ip: Ipv4Addr) {
        if !matches!(self.cfg.dhcp, DhcpMode::Proxy) {
            return;
        }
        let ttl = self.cfg.boot_token_ttl.as_secs();
        if let Err(held) = self.owners.claim(mac, ip, ttl, now()) {
            crate::refusal!(
                CLAIM_REFUSALS,
                %mac,
                claimed = %ip,
                held = %held.ip,
                "address claim refused: {mac} already used {} in DHCP (first claim wins for {}s more)",
                held.ip,
                held.live_until.saturating_sub(now())
            );
        }
    }

    /// The address DHCP proved belongs to `mac`, if any.
    pub fn owner_address(&self, mac: &Mac) -> Option<Ipv4Addr> {
        match self.cfg.dhcp {
            DhcpMode::Full(_) => self
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lease_of(mac, now()),
            DhcpMode::Proxy => self.owners.claim_of(mac).map(|c| c.ip),
        }
    }

    /// The machine DHCP proved sends from `ip`, if any.
    pub fn mac_at(&self, ip: Ipv4Addr) -> Option<Mac> {
        match self.cfg.dhcp {
            DhcpMode::Full(_) => self
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .mac_of(ip, now()),
            DhcpMode::Proxy => {
                let inv = self.inventory();
                self.owners.claimant(ip, |m| inv.retired(m).is_some())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u8) -> Mac {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    #[test]
    fn the_first_claim_wins_until_it_lapses() {
        let o = Owners::default();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6));
        o.claim(m(1), a, 600, 100).unwrap();
        o.claim(m(1), a, 600, 200).unwrap(); // the same address refreshes it
        assert_eq!(o.claim(m(1), b, 600, 300).unwrap_err().ip, a);
        assert_eq!(o.claim_of(&m(1)).unwrap().ip, a);
        o.claim(m(1), b, 600, 800).unwrap(); // lapsed at 200 + 600
        assert_eq!(o.claim_of(&m(1)).unwrap().ip, b);
    }

    #[test]
    fn an_address_two_macs_claimed_belongs_to_neither() {
        let o = Owners::default();
        let a = Ipv4Addr::new(10, 0, 0, 5);
        o.claim(m(1), a, 600, 0).unwrap();
        assert_eq!(o.claimant(a, |_| false), Some(m(1)));
        o.claim(m(2), a, 600, 0).unwrap();
        assert_eq!(o.claimant(a, |_| false), None);
        assert_eq!(
            o.claimant(a, |x| *x == m(1)),
            Some(m(2)),
            "a retired MAC is no claimant"
        );
        // Once m(1)'s claim lapsed, m(2)'s fresh claim on the address ends it.
        o.claim(m(2), a, 600, 700).unwrap();
        assert_eq!(o.claimant(a, |_| false), Some(m(2)));
    }
}
