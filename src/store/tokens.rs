//! The boot tokens repository: a per-boot token lets one machine fetch its
//! config, from one address, for a while.

use std::net::Ipv4Addr;

use redb::{ReadableTable, TableDefinition, TableHandle};

use super::{Records, Store, StoreError};
use crate::model::mac::Mac;

pub(super) const TABLE: Records = TableDefinition::new("boot_tokens");

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

#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a>(pub(super) &'a Store);

impl Tokens<'_> {
    /// Record a boot token, dropping expired ones and voiding the same MAC's
    /// earlier tokens (a new boot makes the old ones worthless).
    pub fn put(&self, token: &str, t: &BootToken, now: u64) -> Result<(), StoreError> {
        self.drop_tokens(&t.mac, now, Some((token, t)))
    }

    /// Void every boot token of `mac` (`kiln machines reinstall`).
    pub fn void(&self, mac: &Mac) -> Result<(), StoreError> {
        self.drop_tokens(mac, 0, None)
    }

    pub fn get(&self, token: &str) -> Result<Option<BootToken>, StoreError> {
        self.0.get(TABLE, token)
    }

    pub fn all(&self) -> Result<Vec<BootToken>, StoreError> {
        self.0.all(TABLE)
    }

    /// Drop expired tokens and `mac`'s, then insert `new`, in one transaction.
    fn drop_tokens(
        &self,
        mac: &Mac,
        now: u64,
        new: Option<(&str, &BootToken)>,
    ) -> Result<(), StoreError> {
        let s = self.0;
        s.write(|tx| {
            let mut tab = tx.open_table(TABLE).map_err(|e| s.db_err(e))?;
            let mut stale = Vec::new();
            let mut live = Vec::new();
            for row in tab.iter().map_err(|e| s.db_err(e))? {
                let (k, v) = row.map_err(|e| s.db_err(e))?;
                // The key is a secret: an unreadable row is named by position.
                let b: BootToken = s.decode(TABLE, "(a boot token)", v.value())?;
                if b.expires <= now || b.mac == *mac {
                    stale.push(k.value().to_string());
                } else {
                    live.push((b.expires, k.value().to_string()));
                }
            }
            // Bounded: past MAX_TOKENS live tokens the ones closest to expiry go.
            if live.len() >= MAX_TOKENS {
                live.sort_unstable();
                let excess = live.len() + 1 - MAX_TOKENS;
                stale.extend(live.into_iter().take(excess).map(|(_, k)| k));
            }
            for k in stale {
                tab.remove(k.as_str()).map_err(|e| s.db_err(e))?;
            }
            if let Some((token, t)) = new {
                let v = s.encode(TABLE.name(), "(token)", t)?;
                tab.insert(token, v.as_slice()).map_err(|e| s.db_err(e))?;
            }
            Ok(())
        })
    }
}
