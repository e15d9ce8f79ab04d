//! Durable state in one redb file under `state_dir` (mode 0600), behind typed
//! repositories: `leases`, `tokens`, `machines`, `clusters`, `replacements`,
//! `adoption`. Every write is committed and fsynced before the caller acts on
//! it; writes made at the same time share one commit (`group`). May import:
//! model.

pub mod adoption;
pub mod clusters;
mod error;
mod etcd;
mod etcd_follow;
mod group;
pub mod leases;
pub mod machines;
pub mod migrate;
pub mod replacements;
pub mod sealed;
pub use error::StoreError;
mod shared;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// redb's page cache: the whole store of a 10,000-machine site fits.
const CACHE_BYTES: usize = 16 << 20;

/// A table of JSON records keyed by text.
type Records = TableDefinition<'static, &'static str, &'static [u8]>;

#[derive(Clone)]
pub struct Store {
    /// The redb file (None with etcd).
    db: Option<Arc<Database>>,
    /// What errors name: the redb file, or etcd's endpoints and prefix.
    path: PathBuf,
    /// The first storage failure, once there was one.
    failure: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// The open batch every redb write joins.
    group: Option<Arc<group::Group>>,
    /// Its committer thread, stopped when the last handle goes.
    _committer: Option<Arc<group::Committer>>,
    /// The etcd backend (None with redb).
    etcd: Option<Arc<etcd::Etcd>>,
    /// What cluster secrets are sealed with in etcd (`store.secrets_key`).
    secrets_key: Option<Arc<sealed::SecretsKey>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

/// Create `dir` (0700) if needed; tighten it to 0700 if others can read it.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let e = |source| StoreError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(e)?;
    } else {
        let mode = std::fs::metadata(dir).map_err(e)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(e)?;
        }
    }
    Ok(())
}

impl Store {
    /// The store `cfg` names (`store:`): redb under state_dir, or etcd.
    pub fn open_for(cfg: &crate::model::config::Config) -> Result<Store, StoreError> {
        match &cfg.store {
            crate::model::store::StoreSettings::Redb => Store::open(&cfg.state_dir),
            crate::model::store::StoreSettings::Etcd(e) => Store::open_etcd(e),
        }
    }

    /// An etcd-backed store, shared with every daemon on the same prefix.
    pub fn open_etcd(settings: &crate::model::store::EtcdSettings) -> Result<Store, StoreError> {
        // The key first: a daemon that cannot seal stops before it joins.
        let key = match &settings.secrets_key {
            Some(p) => Some(Arc::new(sealed::SecretsKey::load(p)?)),
            None => None,
        };
        let e = etcd::Etcd::open(settings)?;
        let s = Store {
            db: None,
            path: PathBuf::from(e.name.clone()),
            failure: Arc::new(tokio::sync::watch::Sender::new(None)),
            group: None,
            _committer: None,
            etcd: Some(Arc::new(e)),
            secrets_key: key,
        };
        s.verify()?;
        Ok(s)
    }

    /// Which backend this is, in words (`kiln store`, logs).
    pub fn describe(&self) -> String {
        match &self.etcd {
            Some(e) => e.name.clone(),
            None => format!("redb {}", self.path.display()),
        }
    }

    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        ensure_private_dir(state_dir)?;
        let path = state_dir.join("kiln.redb");
        // Create it 0600 ourselves so there is no moment it is world-readable.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
            .map_err(|source| StoreError::Dir {
                path: path.clone(),
                source,
            })?;
        // redb caches up to 1 GiB by default; kiln's working set for 10,000
        // machines is a few MiB, and every cached page is resident memory.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::Db {
                path: path.clone(),
                source: e.into(),
            })?;
        let db = Arc::new(db);
        let failure = Arc::new(tokio::sync::watch::Sender::new(None));
        let group = group::Group::new(db.clone());
        let (f, p) = (failure.clone(), path.clone());
        let latch: group::Latch = Box::new(move |e| latch(&f, &p, &e));
        let committer =
            group::Committer::start(group.clone(), latch).map_err(|source| StoreError::Dir {
                path: path.clone(),
                source,
            })?;
        let s = Store {
            db: Some(db),
            path,
            failure,
            group: Some(group),
            _committer: Some(Arc::new(committer)),
            etcd: None,
            secrets_key: None,
        };
        // Make sure the tables exist so readers never fail on a fresh file.
        s.write(|tx| {
            tx.open_table(leases::TABLE).map_err(|e| s.db_err(e))?;
            for t in [
                tokens::TABLE,
                machines::TABLE,
                clusters::TABLE,
                replacements::TABLE,
                adoption::TABLE,
            ] {
                tx.open_table(t).map_err(|e| s.db_err(e))?;
            }
            s.index_tokens(tx)
        })?;
        s.verify()?;
        Ok(s)
    }

    /// Read and decode every record once: an unreadable one stops startup,
    /// naming its table and key.
    fn verify(&self) -> Result<(), StoreError> {
        self.leases().all()?;
        self.tokens().all()?;
        self.machines().all()?;
        self.all::<clusters::ClusterRecord>(clusters::TABLE)?;
        self.replacements().all()?;
        self.all::<adoption::AdoptState>(adoption::TABLE)?;
        Ok(())
    }

    /// Resolves with the first storage failure (at once if there was one).
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.subscribe();
        let first = match rx.wait_for(|f| f.is_some()).await {
            Ok(f) => f.clone().unwrap_or_default(),
            // The sender lives as long as this Store: never reached.
            Err(_) => std::future::pending().await,
        };
        first
    }

    /// Why the store stopped taking writes, if it did (`/readyz`): a latched
    /// failure, or (etcd) no quorum within the fence time.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone().or_else(|| self.fenced())
    }

    /// With etcd: the daemons alive on this one's segment (sorted) and this
    /// one's name, for splitting DHCP clients among them; None with redb.
    pub fn peers(&self) -> Option<(Vec<String>, String)> {
        self.etcd.as_ref().map(|e| (e.peers(), e.daemon.clone()))
    }

    /// With etcd: hold `service/<addr>` (the shared service address) for
    /// this daemon unless another does; the holder's name. None: redb, or
    /// no liveness lease yet.
    pub fn claim_service(&self, addr: std::net::Ipv4Addr) -> Result<Option<String>, StoreError> {
        match &self.etcd {
            Some(e) => e.claim(&format!("service/{addr}")),
            None => Ok(None),
        }
    }

    /// With etcd: how long since a quorum last answered (None: redb).
    pub fn quorum_age(&self) -> Option<std::time::Duration> {
        self.etcd.as_ref().map(|e| e.quorum_age())
    }

    /// With etcd: every daemon alive on the prefix, any segment (sorted).
    pub fn alive_daemons(&self) -> Option<Vec<String>> {
        self.etcd.as_ref().map(|e| e.alive())
    }

    /// A clean stop: give up this daemon's liveness key (etcd) so its peers
    /// take its clients at once; nothing with redb.
    pub fn leave(&self) {
        if let Some(e) = &self.etcd {
            e.leave();
        }
    }

    /// Why this daemon must not act on its view now (etcd: no quorum within
    /// the fence time); None with redb, or while a quorum answers.
    pub fn fenced(&self) -> Option<String> {
        self.etcd.as_ref().and_then(|e| e.fenced())
    }

    /// A cheap end-to-end check for the watchdog: a read transaction and a
    /// durable write both complete.
    pub fn health_check(&self) -> Result<(), StoreError> {
        if let Some(e) = &self.etcd {
            return e.health_check();
        }
        self.write(|tx| {
            let mut t = tx.open_table(HEALTH).map_err(|e| self.db_err(e))?;
            t.insert("checked", unix_now())
                .map_err(|e| self.db_err(e))?;
            Ok(())
        })?;
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        tx.open_table(leases::TABLE).map_err(|e| self.db_err(e))?;
        Ok(())
    }

    pub fn leases(&self) -> leases::Leases<'_> {
        leases::Leases(self)
    }
    pub fn tokens(&self) -> tokens::Tokens<'_> {
        tokens::Tokens(self)
    }
    pub fn machines(&self) -> machines::Machines<'_> {
        machines::Machines(self)
    }
    pub fn clusters(&self) -> clusters::Clusters<'_> {
        clusters::Clusters(self)
    }
    pub fn replacements(&self) -> replacements::Replacements<'_> {
        replacements::Replacements(self)
    }
    pub fn adoption(&self) -> adoption::Adoption<'_> {
        adoption::Adoption(self)
    }
    pub fn cluster_secrets(&self) -> sealed::ClusterSecrets<'_> {
        sealed::ClusterSecrets(self)
    }

    /// Wrap redb's error; a storage failure also latches the store.
    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        let source: redb::Error = e.into();
        latch(&self.failure, &self.path, &source);
        StoreError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Fail fast once the store has failed, or while it is fenced.
    fn alive(&self) -> Result<(), StoreError> {
        if let Some(why) = self.fenced() {
            return Err(StoreError::Etcd {
                store: self.path.display().to_string(),
                message: why,
            });
        }
        match &*self.failure.borrow() {
            None => Ok(()),
            Some(first) => Err(StoreError::Failed {
                path: self.path.clone(),
                first: first.clone(),
            }),
        }
    }

    fn corrupt(&self, table: &str, key: &str, message: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            table: table.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: Records,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        // A boot token's key is a secret: an unreadable one is named by kind.
        let key = if table.name() == tokens::TABLE.name() {
            "(a boot token)"
        } else {
            key
        };
        serde_json::from_slice(bytes).map_err(|e| self.corrupt(table.name(), key, e))
    }

    fn encode<T: Serialize>(&self, table: &str, key: &str, v: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(v).map_err(|e| StoreError::Encode {
            path: self.path.clone(),
            table: table.to_string(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    /// One durable write: `f`'s writes are committed (fsynced) or none are.
    /// `f` joins the open batch (see `group`): if it fails with anything but
    /// a storage error it must have written nothing, so it reads, decodes
    /// and encodes before it writes.
    fn write<R>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.alive()?;
        match &self.group {
            Some(g) => g.write(&|e| self.db_err(e), f),
            None => Err(StoreError::Interrupted(
                "a redb write on an etcd store".into(),
            )),
        }
    }

    /// The redb file (every redb-only path asks for it).
    fn db(&self) -> Result<&Database, StoreError> {
        self.db
            .as_deref()
            .ok_or_else(|| StoreError::Interrupted("a redb read on an etcd store".into()))
    }

    /// `<table>/<key>`: a record's key in etcd.
    fn etcd_key(table: &str, key: &str) -> String {
        format!("{table}/{key}")
    }

    /// Read-modify-write one JSON record in one durable write; `f` sees the
    /// current value (if any) and returns the new one (None deletes). With
    /// etcd, `f` runs again on the fresh value if another daemon wrote the
    /// record first.
    fn modify<T, R>(
        &self,
        table: Records,
        key: &str,
        mut f: impl FnMut(Option<T>) -> (Option<T>, R),
    ) -> Result<R, StoreError>
    where
        T: Serialize + DeserializeOwned,
    {
        if let Some(e) = &self.etcd {
            return e.modify(&Store::etcd_key(table.name(), key), |cur| {
                let cur: Option<T> = cur.map(|b| self.decode(table, key, b)).transpose()?;
                let (new, r) = f(cur);
                let bytes = new
                    .map(|v| self.encode(table.name(), key, &v))
                    .transpose()?;
                Ok((bytes, r))
            });
        }
        self.write(|tx| {
            let mut t = tx.open_table(table).map_err(|e| self.db_err(e))?;
            let cur: Option<T> = match t.get(key).map_err(|e| self.db_err(e))? {
                Some(v) => Some(self.decode(table, key, v.value())?),
                None => None,
            };
            let (new, r) = f(cur);
            match new {
                Some(v) => {
                    let bytes = self.encode(table.name(), key, &v)?;
                    t.insert(key, bytes.as_slice())
                        .map_err(|e| self.db_err(e))?;
                }
                None => {
                    t.remove(key).map_err(|e| self.db_err(e))?;
                }
            }
            Ok(r)
        })
    }

    fn get<T: DeserializeOwned>(&self, table: Records, key: &str) -> Result<Option<T>, StoreError> {
        self.alive()?;
        if let Some(e) = &self.etcd {
            let v = e.get(&Store::etcd_key(table.name(), key));
            return v.map(|v| self.decode(table, key, &v)).transpose();
        }
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let t = tx.open_table(table).map_err(|e| self.db_err(e))?;
        let v = t.get(key).map_err(|e| self.db_err(e))?;
        v.map(|v| self.decode(table, key, v.value())).transpose()
    }

    fn all<T: DeserializeOwned>(&self, table: Records) -> Result<Vec<T>, StoreError> {
        self.alive()?;
        if let Some(e) = &self.etcd {
            let rows = e.list(table.name());
            return rows.iter().map(|(k, v)| self.decode(table, k, v)).collect();
        }
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let t = tx.open_table(table).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            out.push(self.decode(table, k.value(), v.value())?);
        }
        Ok(out)
    }
}

/// Run a durable write off the async workers (it fsyncs); a task that dies
/// before answering is [`StoreError::Interrupted`].
pub(crate) async fn blocking<R, E>(
    f: impl FnOnce() -> Result<R, E> + Send + 'static,
) -> Result<R, E>
where
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Interrupted(e.to_string()).into()))
}

/// The watchdog's table: one row, the time of the last health check.
const HEALTH: TableDefinition<'static, &'static str, u64> = TableDefinition::new("health");

/// Unix seconds now.
/// Unix seconds now (0 before 1970): the one clock records are stamped with.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Latch the store's first storage failure (logged once); returns the error's text.
fn latch(
    failure: &tokio::sync::watch::Sender<Option<String>>,
    path: &Path,
    source: &redb::Error,
) -> String {
    let text = source.to_string();
    if is_storage_failure(source) {
        failure.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            tracing::error!(store = %path.display(), "store failed: {text}; kiln stops serving");
            *f = Some(text.clone());
            true
        });
    }
    text
}

/// Errors after which redb's file can no longer be trusted in this process
/// (redb itself latches `PreviousIo` after an I/O error).
fn is_storage_failure(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::Io(_)
            | redb::Error::PreviousIo
            | redb::Error::Corrupted(_)
            | redb::Error::Backend(_)
            | redb::Error::DatabaseClosed
            | redb::Error::LockPoisoned(_)
            | redb::Error::TransactionPoisoned
    )
}

#[cfg(test)]
mod tests {
    use super::leases::{Lease, LeaseChange};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn leases_survive_reopen_and_files_are_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let l = Lease {
            ip: "10.0.0.5".parse().unwrap(),
            mac: "52:54:00:00:00:01".parse().unwrap(),
            expires: 99,
            hostname: Some("cp-1".into()),
            declined: false,
        };
        {
            let s = Store::open(&dir).unwrap();
            s.leases().apply(&[LeaseChange::Bind(l.clone())]).unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.leases().all().unwrap(), vec![l.clone()]);
        s.leases().apply(&[LeaseChange::Free(l.ip)]).unwrap();
        assert!(s.leases().all().unwrap().is_empty());
        let mode = std::fs::metadata(dir.join("kiln.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn an_unreadable_record_stops_open_naming_table_and_key() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.machines()
            .modify(&"52:54:00:00:00:09".parse().unwrap(), |r| {
                *r = Some(machines::Record::new(
                    "52:54:00:00:00:09".parse().unwrap(),
                    "cp-9",
                    1,
                ))
            })
            .unwrap();
        s.write(|tx| {
            let mut t = tx.open_table(clusters::TABLE).map_err(|e| s.db_err(e))?;
            t.insert("prod", b"{not json".as_slice())
                .map_err(|e| s.db_err(e))?;
            Ok(())
        })
        .unwrap();
        // At runtime: an error, never "absent" (which would mean a second Bootstrap).
        let e = s.clusters().get("prod").unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(
            s.clusters().update("prod", |_| {}).is_err(),
            "never overwritten"
        );
        drop(s);
        let e = Store::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("clusters record \"prod\" is unreadable"), "{e}");
        assert!(e.contains("restore"), "{e}");
    }
}
