//! `kiln store migrate`: every record from one backend into another, as the
//! records are (the same JSON in both), offline. The target must be empty;
//! what each backend derives (redb's token indexes, etcd's MAC bindings) is
//! rebuilt from the records. Afterwards both sides are read back and
//! compared: a migration that would lose a record fails, naming it.

use redb::{ReadableDatabase, ReadableTable, TableHandle};

use super::{
    adoption, clusters, leases, machines, replacements, tokens, Records, Store, StoreError,
};

/// One record: its table, key and JSON.
pub type Row = (String, String, Vec<u8>);

/// The tables of JSON records keyed by text (leases are keyed by address).
const RECORDS: [Records; 5] = [
    tokens::TABLE,
    machines::TABLE,
    clusters::TABLE,
    replacements::TABLE,
    adoption::TABLE,
];

impl Store {
    /// Every record, sorted by table and key.
    pub fn dump(&self) -> Result<Vec<Row>, StoreError> {
        self.alive()?;
        let mut out = Vec::new();
        if let Some(e) = &self.etcd {
            for t in RECORDS.iter().map(|t| t.name()).chain(["leases"]) {
                for (k, v) in e.list(t) {
                    out.push((t.to_string(), k, v));
                }
            }
        } else {
            let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
            for t in RECORDS {
                let tab = tx.open_table(t).map_err(|e| self.db_err(e))?;
                for row in tab.iter().map_err(|e| self.db_err(e))? {
                    let (k, v) = row.map_err(|e| self.db_err(e))?;
                    out.push((
                        t.name().to_string(),
                        k.value().to_string(),
                        v.value().to_vec(),
                    ));
                }
            }
            let tab = tx.open_table(leases::TABLE).map_err(|e| self.db_err(e))?;
            for row in tab.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                let ip = std::net::Ipv4Addr::from(k.value()).to_string();
                out.push(("leases".into(), ip, v.value().to_vec()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Write `rows` (from [`Store::dump`]) into this store, which must hold
    /// no records yet.
    pub fn load(&self, rows: &[Row]) -> Result<(), StoreError> {
        let have = self.dump()?.len();
        if have > 0 {
            return Err(StoreError::Conflict(format!(
                "{} already holds {have} records: migrate only into an empty store",
                self.describe()
            )));
        }
        match &self.etcd {
            Some(e) => self.load_etcd(e, rows),
            None => self.load_redb(rows),
        }
    }

    fn load_redb(&self, rows: &[Row]) -> Result<(), StoreError> {
        self.write(|tx| {
            for (t, k, v) in rows {
                if t == "leases" {
                    let ip: std::net::Ipv4Addr = k
                        .parse()
                        .map_err(|e| self.corrupt("leases", k, format!("not an address: {e}")))?;
                    let mut tab = tx.open_table(leases::TABLE).map_err(|e| self.db_err(e))?;
                    tab.insert(u32::from(ip), v.as_slice())
                        .map_err(|e| self.db_err(e))?;
                    continue;
                }
                let Some(def) = RECORDS.iter().find(|d| d.name() == t) else {
                    return Err(self.corrupt(t, k, "no such table"));
                };
                let mut tab = tx.open_table(*def).map_err(|e| self.db_err(e))?;
                tab.insert(k.as_str(), v.as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
            self.index_tokens(tx)
        })
    }

    fn load_etcd(&self, e: &super::etcd::Etcd, rows: &[Row]) -> Result<(), StoreError> {
        let mut puts = Vec::new();
        for (t, k, v) in rows {
            puts.push((format!("{t}/{k}"), Some(v.clone())));
            // What the etcd backend keeps beside the records.
            if t == "leases" {
                let l: leases::Lease =
                    serde_json::from_slice(v).map_err(|x| self.corrupt("leases", k, x))?;
                puts.push((
                    format!("lease_macs/{}", l.mac),
                    Some(k.clone().into_bytes()),
                ));
            } else if t == tokens::TABLE.name() {
                let b: tokens::BootToken =
                    serde_json::from_slice(v).map_err(|x| self.corrupt(t, "(a boot token)", x))?;
                puts.push((
                    format!("boot_tokens_by_mac/{}", b.mac),
                    Some(k.clone().into_bytes()),
                ));
            }
        }
        for chunk in puts.chunks(100) {
            if !e.swap(&[], chunk)? {
                return Err(StoreError::Conflict(
                    "a write with nothing to compare failed".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Copy every record from `from` into `to` (empty), then read both back:
/// returns how many records moved.
pub fn copy(from: &Store, to: &Store) -> Result<usize, StoreError> {
    let rows = from.dump()?;
    to.load(&rows)?;
    let back = to.dump()?;
    if back != rows {
        let missing = rows.iter().find(|r| !back.contains(r));
        return Err(StoreError::Conflict(format!(
            "{} does not read back what was written{}",
            to.describe(),
            missing.map_or(String::new(), |(t, k, _)| {
                let k = if t == tokens::TABLE.name() {
                    "(a boot token)"
                } else {
                    k
                };
                format!(": {t} record {k:?} is missing or differs")
            })
        )));
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// redb → redb: every table's records, token indexes rebuilt (a MAC's
    /// token is voided by a new boot after the move), nothing lost.
    #[test]
    fn a_redb_copy_reads_back_the_same_and_keeps_working() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = Store::open(a.path()).unwrap();
        let mac: crate::model::mac::Mac = "52:54:00:00:00:07".parse().unwrap();
        src.machines()
            .modify(&mac, |r| *r = Some(machines::Record::new(mac, "cp-7", 1)))
            .unwrap();
        src.clusters().update("prod", |r| r.attempts = 2).unwrap();
        src.leases()
            .apply(&[leases::LeaseChange::Bind(leases::Lease {
                ip: "10.0.0.7".parse().unwrap(),
                mac,
                expires: 99,
                hostname: None,
                declined: false,
            })])
            .unwrap();
        let t = tokens::BootToken {
            mac,
            ip: None,
            expires: u64::MAX,
        };
        src.tokens().put("tok-a", &t, 1).unwrap();
        let dst = Store::open(b.path()).unwrap();
        assert_eq!(
            copy(&src, &dst).unwrap(),
            4,
            "machine, cluster, lease, token"
        );
        assert!(copy(&src, &dst).is_err(), "only into an empty store");
        dst.tokens().put("tok-b", &t, 2).unwrap();
        assert_eq!(
            dst.tokens().get("tok-a").unwrap(),
            None,
            "the index came along"
        );
        assert_eq!(dst.leases().all().unwrap(), src.leases().all().unwrap());
    }
}
