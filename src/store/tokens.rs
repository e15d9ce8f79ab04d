//! The boot tokens repository: a per-boot token lets one machine fetch its
//! config, from one address, for a while. Two indexes, rebuilt from the
//! tokens at every open, keep each write O(log n): the live token of each
//! MAC (a new boot voids the last), and the tokens by expiry.

use std::net::Ipv4Addr;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction};

use super::{Records, Store, StoreError};
use crate::model::mac::Mac;

pub(super) const TABLE: Records = TableDefinition::new("boot_tokens");
/// MAC → its live token.
const BY_MAC: TableDefinition<'static, &'static str, &'static str> =
    TableDefinition::new("boot_tokens_by_mac");
/// (expires, token) → ().
const BY_EXPIRY: TableDefinition<'static, (u64, &'static str), ()> =
    TableDefinition::new("boot_tokens_by_expiry");

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootToken {
    pub mac: Mac,
    /// The address that fetched the iPXE script carrying the token.
    pub ip: Option<Ipv4Addr>,
    /// Unix seconds.
    pub expires: u64,
}

/// At most this many boot tokens are live at once (one per booting machine;
/// a 10,000-machine storm fits with room).
pub const MAX_TOKENS: usize = 65_536;

/// Most expired tokens one write sweeps (the rest go with the next writes).
const SWEEP: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a>(pub(super) &'a Store);

impl Tokens<'_> {
    /// Record a boot token, dropping expired ones and voiding the same MAC's
    /// earlier token (a new boot makes the old one worthless).
    pub fn put(&self, token: &str, t: &BootToken, now: u64) -> Result<(), StoreError> {
        let s = self.0;
        if let Some(e) = &s.etcd {
            return s.etcd_token_put(e, token, t, now);
        }
        let v = s.encode(TABLE.name(), "(token)", t)?;
        let mac = t.mac.to_string();
        s.write(|tx| {
            let mut stale = s.expired(tx, now)?;
            stale.extend(s.token_of(tx, &mac)?);
            let live = tx.open_table(TABLE).map_err(|e| s.db_err(e))?.len();
            let live = live.map_err(|e| s.db_err(e))? as usize;
            // Bounded: past MAX_TOKENS live tokens the ones closest to expiry go.
            if live + 1 > MAX_TOKENS + stale.len() {
                stale.extend(s.soonest(tx, live + 1 - MAX_TOKENS - stale.len())?);
            }
            s.remove_tokens(tx, &stale)?;
            tx.open_table(TABLE)
                .map_err(|e| s.db_err(e))?
                .insert(token, v.as_slice())
                .map_err(|e| s.db_err(e))?;
            tx.open_table(BY_MAC)
                .map_err(|e| s.db_err(e))?
                .insert(mac.as_str(), token)
                .map_err(|e| s.db_err(e))?;
            tx.open_table(BY_EXPIRY)
                .map_err(|e| s.db_err(e))?
                .insert((t.expires, token), ())
                .map_err(|e| s.db_err(e))?;
            Ok(())
        })
    }

    /// Void the boot token of `mac` (`kiln machines reinstall`).
    pub fn void(&self, mac: &Mac) -> Result<(), StoreError> {
        let s = self.0;
        if let Some(e) = &s.etcd {
            return s.etcd_token_void(e, mac);
        }
        let mac = mac.to_string();
        s.write(|tx| {
            let stale: Vec<_> = s.token_of(tx, &mac)?.into_iter().collect();
            s.remove_tokens(tx, &stale)
        })
    }

    pub fn get(&self, token: &str) -> Result<Option<BootToken>, StoreError> {
        self.0.get(TABLE, token)
    }

    pub fn all(&self) -> Result<Vec<BootToken>, StoreError> {
        self.0.all(TABLE)
    }
}

/// A token to remove: its key and when it expires (for the expiry index).
type Stale = (String, u64);

impl Store {
    /// Rebuild both indexes from the tokens (at open).
    pub(super) fn index_tokens(&self, tx: &WriteTransaction) -> Result<(), StoreError> {
        let mut rows = Vec::new();
        for row in tx
            .open_table(TABLE)
            .map_err(|x| self.db_err(x))?
            .iter()
            .map_err(|x| self.db_err(x))?
        {
            let (k, v) = row.map_err(|x| self.db_err(x))?;
            // The key is a secret: an unreadable row is named by position.
            let b: BootToken = self.decode(TABLE, "(a boot token)", v.value())?;
            rows.push((k.value().to_string(), b));
        }
        tx.delete_table(BY_MAC).map_err(|x| self.db_err(x))?;
        tx.delete_table(BY_EXPIRY).map_err(|x| self.db_err(x))?;
        let mut by_mac = tx.open_table(BY_MAC).map_err(|x| self.db_err(x))?;
        let mut by_expiry = tx.open_table(BY_EXPIRY).map_err(|x| self.db_err(x))?;
        // One live token per MAC: if an older store kept two, the later-expiring wins.
        rows.sort_by_key(|(_, b)| b.expires);
        for (k, b) in &rows {
            by_mac
                .insert(b.mac.to_string().as_str(), k.as_str())
                .map_err(|x| self.db_err(x))?;
            by_expiry
                .insert((b.expires, k.as_str()), ())
                .map_err(|x| self.db_err(x))?;
        }
        Ok(())
    }

    /// Up to SWEEP tokens that expired by `now`.
    fn expired(&self, tx: &WriteTransaction, now: u64) -> Result<Vec<Stale>, StoreError> {
        let t = tx.open_table(BY_EXPIRY).map_err(|x| self.db_err(x))?;
        let mut out = Vec::new();
        for row in t
            .range(..(now.saturating_add(1), ""))
            .map_err(|x| self.db_err(x))?
            .take(SWEEP)
        {
            let (k, _) = row.map_err(|x| self.db_err(x))?;
            let (exp, tok) = k.value();
            out.push((tok.to_string(), exp));
        }
        Ok(out)
    }

    /// The `n` live tokens closest to expiry.
    fn soonest(&self, tx: &WriteTransaction, n: usize) -> Result<Vec<Stale>, StoreError> {
        let t = tx.open_table(BY_EXPIRY).map_err(|x| self.db_err(x))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|x| self.db_err(x))?.take(n) {
            let (k, _) = row.map_err(|x| self.db_err(x))?;
            let (exp, tok) = k.value();
            out.push((tok.to_string(), exp));
        }
        Ok(out)
    }

    /// `mac`'s live token, if it has one.
    fn token_of(&self, tx: &WriteTransaction, mac: &str) -> Result<Option<Stale>, StoreError> {
        let by_mac = tx.open_table(BY_MAC).map_err(|x| self.db_err(x))?;
        let tok = match by_mac.get(mac).map_err(|x| self.db_err(x))? {
            Some(t) => t.value().to_string(),
            None => return Ok(None),
        };
        drop(by_mac);
        let tokens = tx.open_table(TABLE).map_err(|x| self.db_err(x))?;
        let Some(v) = tokens.get(tok.as_str()).map_err(|x| self.db_err(x))? else {
            return Ok(None);
        };
        let b: BootToken = self.decode(TABLE, "(a boot token)", v.value())?;
        Ok(Some((tok, b.expires)))
    }

    /// Remove tokens and their index rows (a MAC's row only if it still
    /// names that token).
    fn remove_tokens(&self, tx: &WriteTransaction, stale: &[Stale]) -> Result<(), StoreError> {
        let mut tokens = tx.open_table(TABLE).map_err(|x| self.db_err(x))?;
        let mut by_mac = tx.open_table(BY_MAC).map_err(|x| self.db_err(x))?;
        let mut by_expiry = tx.open_table(BY_EXPIRY).map_err(|x| self.db_err(x))?;
        for (tok, exp) in stale {
            by_expiry
                .remove((*exp, tok.as_str()))
                .map_err(|x| self.db_err(x))?;
            let Some(v) = tokens.remove(tok.as_str()).map_err(|x| self.db_err(x))? else {
                continue;
            };
            // Written by kiln a moment ago in this same batch or decoded at
            // open: a row that no longer decodes keeps its MAC's index row.
            let Ok(b) = serde_json::from_slice::<BootToken>(v.value()) else {
                continue;
            };
            let mac = b.mac.to_string();
            let names_it = by_mac
                .get(mac.as_str())
                .map_err(|x| self.db_err(x))?
                .is_some_and(|t| t.value() == tok.as_str());
            if names_it {
                by_mac.remove(mac.as_str()).map_err(|x| self.db_err(x))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(mac: &str, expires: u64) -> BootToken {
        BootToken {
            mac: mac.parse().unwrap(),
            ip: None,
            expires,
        }
    }

    /// A new boot voids the MAC's last token; expired tokens are swept;
    /// `void` drops a MAC's token; the indexes survive a reopen.
    #[test]
    fn a_new_boot_voids_the_last_and_expired_tokens_go() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let t = s.tokens();
        t.put("a1", &token("52:54:00:00:00:01", 100), 10).unwrap();
        t.put("b1", &token("52:54:00:00:00:02", 50), 10).unwrap();
        t.put("a2", &token("52:54:00:00:00:01", 110), 20).unwrap();
        assert_eq!(t.get("a1").unwrap(), None, "voided by the new boot");
        assert!(t.get("a2").unwrap().is_some() && t.get("b1").unwrap().is_some());
        // At 60, b1 (expires 50) is swept by the next write.
        t.put("c1", &token("52:54:00:00:00:03", 200), 60).unwrap();
        assert_eq!(t.get("b1").unwrap(), None);
        drop(s);
        let s = Store::open(d.path()).unwrap();
        s.tokens()
            .void(&"52:54:00:00:00:01".parse().unwrap())
            .unwrap();
        assert_eq!(s.tokens().get("a2").unwrap(), None);
        assert_eq!(
            s.tokens().all().unwrap(),
            vec![token("52:54:00:00:00:03", 200)]
        );
    }

    /// Past MAX_TOKENS live tokens, the one closest to expiry goes.
    #[test]
    fn live_tokens_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.write(|tx| {
            let mut tab = tx.open_table(TABLE).map_err(|e| s.db_err(e))?;
            for i in 0..MAX_TOKENS as u64 {
                let mac = Mac([2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
                let v = s.encode(
                    "t",
                    "t",
                    &BootToken {
                        mac,
                        ip: None,
                        expires: 1000 + i,
                    },
                )?;
                tab.insert(format!("t{i}").as_str(), v.as_slice())
                    .map_err(|e| s.db_err(e))?;
            }
            drop(tab);
            s.index_tokens(tx)
        })
        .unwrap();
        s.tokens()
            .put("new", &token("52:54:00:00:00:01", 5000), 10)
            .unwrap();
        assert_eq!(
            s.tokens().get("t0").unwrap(),
            None,
            "the soonest to expire went"
        );
        assert!(s.tokens().get("t1").unwrap().is_some());
        assert!(s.tokens().get("new").unwrap().is_some());
        assert_eq!(s.tokens().all().unwrap().len(), MAX_TOKENS);
    }
}
