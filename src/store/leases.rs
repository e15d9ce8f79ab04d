//! The leases repository: full mode's bound addresses, keyed by address.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError};
use crate::model::mac::Mac;

pub(super) const TABLE: TableDefinition<u32, &[u8]> = TableDefinition::new("leases");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// Unix seconds.
    pub expires: u64,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// A durable change to write before replying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    Bind(Lease),
    Free(Ipv4Addr),
}

/// Full mode's leases, keyed by address.
#[derive(Debug, Clone, Copy)]
pub struct Leases<'a>(pub(super) &'a Store);

impl Leases<'_> {
    /// Apply lease changes in one durable transaction.
    pub fn apply(&self, changes: &[LeaseChange]) -> Result<(), StoreError> {
        let s = self.0;
        s.write(|tx| {
            let mut t = tx.open_table(TABLE).map_err(|e| s.db_err(e))?;
            for c in changes {
                match c {
                    LeaseChange::Bind(l) => {
                        let v = s.encode("leases", &l.ip.to_string(), l)?;
                        t.insert(u32::from(l.ip), v.as_slice())
                            .map_err(|e| s.db_err(e))?;
                    }
                    LeaseChange::Free(ip) => {
                        t.remove(u32::from(*ip)).map_err(|e| s.db_err(e))?;
                    }
                }
            }
            Ok(())
        })
    }

    pub fn all(&self) -> Result<Vec<Lease>, StoreError> {
        let s = self.0;
        let tx = s.db.begin_read().map_err(|e| s.db_err(e))?;
        let t = tx.open_table(TABLE).map_err(|e| s.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| s.db_err(e))? {
            let (k, v) = row.map_err(|e| s.db_err(e))?;
            match serde_json::from_slice::<Lease>(v.value()) {
                Ok(l) if u32::from(l.ip) == k.value() => out.push(l),
                _ => {
                    tracing::warn!(ip = %Ipv4Addr::from(k.value()), "skipping unreadable lease record")
                }
            }
        }
        Ok(out)
    }
}
