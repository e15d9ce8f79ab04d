//! Durable state in one redb file under `state_dir` (mode 0600), behind typed
//! repositories: `leases`, `tokens`, `machines`, `clusters`, `replacements`,
//! `adoption`. Every write is one committed, fsynced transaction before the
//! caller acts on it. May import: model.

pub mod adoption;
pub mod clusters;
pub mod leases;
pub mod machines;
pub mod replacements;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A table of JSON records keyed by text.
type Records = TableDefinition<'static, &'static str, &'static [u8]>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// redb's own error, kind kept (storage I/O, corruption, a second opener, ...).
    #[error("store {}: {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("store {}: {table} record {key:?} cannot be encoded: {message}", path.display())]
    Encode {
        path: PathBuf,
        table: String,
        key: String,
        message: String,
    },
    /// The blocking task that ran a write died before it answered.
    #[error("store write did not finish: {0}")]
    Interrupted(String),
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
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
        let db = Database::create(&path).map_err(|e| StoreError::Db {
            path: path.clone(),
            source: e.into(),
        })?;
        let s = Store {
            db: Arc::new(db),
            path,
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
            Ok(())
        })?;
        Ok(s)
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

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    fn encode<T: Serialize>(&self, table: &str, key: &str, v: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(v).map_err(|e| StoreError::Encode {
            path: self.path.clone(),
            table: table.to_string(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    /// One durable transaction: `f`'s writes are committed (fsynced) or none are.
    fn write<R>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        let r = f(&tx)?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(r)
    }

    /// Read-modify-write one JSON record in one durable transaction; `f` sees
    /// the current value (if any) and returns the new one (None deletes).
    fn modify<T, R>(
        &self,
        table: Records,
        key: &str,
        f: impl FnOnce(Option<T>) -> (Option<T>, R),
    ) -> Result<R, StoreError>
    where
        T: Serialize + DeserializeOwned,
    {
        self.write(|tx| {
            let mut t = tx.open_table(table).map_err(|e| self.db_err(e))?;
            let cur: Option<T> = t
                .get(key)
                .map_err(|e| self.db_err(e))?
                .and_then(|v| decode(table, key, v.value()));
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
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = tx.open_table(table).map_err(|e| self.db_err(e))?;
        let v = t.get(key).map_err(|e| self.db_err(e))?;
        Ok(v.and_then(|v| decode(table, key, v.value())))
    }

    fn all<T: DeserializeOwned>(&self, table: Records) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = tx.open_table(table).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            if let Some(x) = decode(table, k.value(), v.value()) {
                out.push(x);
            }
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

/// A record that does not decode is skipped, and said so.
fn decode<T: DeserializeOwned>(table: Records, key: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(table = table.name(), key, error = %e, "skipping unreadable record");
            None
        }
    }
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
}
