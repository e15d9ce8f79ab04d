//! The leases repository: full mode's bound addresses, keyed by address.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use std::sync::Arc;

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
    /// A DECLINE put the address on probation until `expires` (someone else
    /// answers on it): it is held out of the pool, for nobody.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declined: bool,
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
        if let Some(e) = &s.etcd {
            return s.etcd_leases(e, changes);
        }
        // Encoded first: a write that fails before the store is touched leaves nothing.
        let mut rows = Vec::with_capacity(changes.len());
        for c in changes {
            rows.push(match c {
                LeaseChange::Bind(l) => (l.ip, Some(s.encode("leases", &l.ip.to_string(), l)?)),
                LeaseChange::Free(ip) => (*ip, None),
            });
        }
        s.write(|tx| {
            let mut t = tx.open_table(TABLE).map_err(|e| s.db_err(e))?;
            for (ip, v) in &rows {
                match v {
                    Some(v) => t.insert(u32::from(*ip), v.as_slice()),
                    None => t.remove(u32::from(*ip)),
                }
                .map_err(|e| s.db_err(e))?;
            }
            Ok(())
        })
    }

    pub fn all(&self) -> Result<Vec<Lease>, StoreError> {
        let s = self.0;
        s.alive()?;
        if let Some(e) = &s.etcd {
            let mut out = Vec::new();
            for (k, v) in e.list("leases") {
                let l: Lease =
                    serde_json::from_slice(&v).map_err(|x| s.corrupt("leases", &k, x))?;
                if l.ip.to_string() != k {
                    return Err(s.corrupt("leases", &k, format!("the record is for {}", l.ip)));
                }
                out.push(l);
            }
            return Ok(out);
        }
        let tx = s.db()?.begin_read().map_err(|e| s.db_err(e))?;
        let t = tx.open_table(TABLE).map_err(|e| s.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| s.db_err(e))? {
            let (k, v) = row.map_err(|e| s.db_err(e))?;
            let key = Ipv4Addr::from(k.value()).to_string();
            let l: Lease =
                serde_json::from_slice(v.value()).map_err(|e| s.corrupt("leases", &key, e))?;
            if u32::from(l.ip) != k.value() {
                return Err(s.corrupt("leases", &key, format!("the record is for {}", l.ip)));
            }
            out.push(l);
        }
        Ok(out)
    }

    /// With etcd: `f` hears of every lease a watch event brings (other
    /// daemons' binds, and this daemon's own coming back), so a pool can
    /// learn what its peers handed out. An unreadable record is logged and
    /// skipped (the bind that wrote it is refused by no one but its reader).
    /// False: the redb store (one daemon, nothing to learn) or a listener
    /// set before.
    pub fn follow(&self, f: impl Fn(Lease) + Send + Sync + 'static) -> bool {
        let Some(e) = &self.0.etcd else {
            return false;
        };
        let name = e.name.clone();
        e.listen(Box::new(move |key, value| {
            let Some(ip) = key.strip_prefix("leases/") else {
                return;
            };
            match serde_json::from_slice::<Lease>(value) {
                Ok(l) if l.ip.to_string() == ip => f(l),
                Ok(l) => {
                    tracing::warn!(store = %name, "lease record {ip} is for {}: skipped", l.ip)
                }
                Err(x) => tracing::warn!(store = %name, "lease record {ip} is unreadable: {x}"),
            }
        }))
    }
}

/// Lease writes as the DHCP policy decided them: callers submit changes (in
/// decision order, under the pool's lock) and wait; one writer thread drains
/// whatever has queued and commits it in one fsynced transaction (group
/// commit), in submission order, so the store's order is the decision order.
#[derive(Clone, Debug)]
pub struct LeaseWriter {
    tx: std::sync::mpsc::Sender<Job>,
}

type Done = tokio::sync::oneshot::Sender<Result<(), std::sync::Arc<StoreError>>>;
type Job = (Vec<LeaseChange>, Done);

/// A submitted change, durable once [`Pending::wait`] says so.
#[derive(Debug)]
pub struct Pending(tokio::sync::oneshot::Receiver<Result<(), std::sync::Arc<StoreError>>>);

impl Pending {
    pub async fn wait(self) -> Result<(), std::sync::Arc<StoreError>> {
        self.0.await.unwrap_or_else(|_| {
            Err(std::sync::Arc::new(StoreError::Interrupted(
                "lease writer stopped".into(),
            )))
        })
    }
}

/// Most jobs committed in one transaction.
const BATCH: usize = 512;

impl LeaseWriter {
    /// Start the writer thread; it ends when the last writer handle is dropped.
    pub fn start(store: Store) -> std::io::Result<LeaseWriter> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lease-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(more) => batch.push(more),
                            Err(_) => break,
                        }
                    }
                    let changes: Vec<LeaseChange> =
                        batch.iter().flat_map(|(c, _)| c.iter().cloned()).collect();
                    let res = store.leases().apply(&changes);
                    // With etcd a batch is several transactions, and a bind
                    // another daemon got to first fails only its own: each
                    // job is tried alone then (what was written already is
                    // written again, unchanged), so one refusal does not
                    // silence the rest.
                    if matches!(res, Err(StoreError::Conflict(_))) && batch.len() > 1 {
                        for (c, done) in batch {
                            let _ = done.send(store.leases().apply(&c).map_err(Arc::new));
                        }
                        continue;
                    }
                    let res = res.map_err(Arc::new);
                    for (_, done) in batch {
                        let _ = done.send(res.clone());
                    }
                }
            })?;
        Ok(LeaseWriter { tx })
    }

    /// Queue `changes` behind everything submitted before; never blocks.
    pub fn submit(&self, changes: Vec<LeaseChange>) -> Pending {
        let (done, wait) = tokio::sync::oneshot::channel();
        // A stopped writer drops `done`, which `wait` reports.
        let _ = self.tx.send((changes, done));
        Pending(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: &str, mac: &str, expires: u64) -> Lease {
        Lease {
            ip: ip.parse().unwrap(),
            mac: mac.parse().unwrap(),
            expires,
            hostname: None,
            declined: false,
        }
    }

    /// A RELEASE and a later bind of the same address by another MAC reach
    /// the store in the order they were decided, however the commits group.
    #[test]
    fn the_writer_keeps_decision_order() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let w = LeaseWriter::start(store.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for round in 0..200u64 {
            let a = lease("10.0.0.9", "52:54:00:00:00:01", 1000 + round);
            let b = lease("10.0.0.9", "52:54:00:00:00:02", 2000 + round);
            let pending = [
                w.submit(vec![LeaseChange::Bind(a)]),
                w.submit(vec![LeaseChange::Free(b.ip)]),
                w.submit(vec![LeaseChange::Bind(b.clone())]),
            ];
            for p in pending {
                rt.block_on(p.wait()).unwrap();
            }
            assert_eq!(store.leases().all().unwrap(), vec![b], "round {round}");
        }
    }
}
