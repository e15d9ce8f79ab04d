//! Durable state in one redb file under `state_dir` (mode 0600): DHCP leases now,
//! machine and cluster records as they come. Every write is a committed, fsynced
//! transaction before the caller acts on it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub mod leases;

use leases::{Lease, LeaseChange};

const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("leases");
const BOOT_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("boot_tokens");
/// Machine lifecycle records, keyed by MAC.
pub const MACHINES: TableDefinition<&str, &[u8]> = TableDefinition::new("machines");
/// Per-cluster records (bootstrap decision and outcome), keyed by cluster name.
pub const CLUSTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("clusters");
/// Machine replacements in progress or done, keyed by hostname.
pub const REPLACEMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("replacements");
/// Machines marked failed, and whether the next unknown PXE client adopts one.
pub const ADOPT: TableDefinition<&str, &[u8]> = TableDefinition::new("adopt");

/// A per-boot token: it lets one machine fetch its config, from one address, for a while.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootToken {
    pub mac: crate::model::mac::Mac,
    /// The address that fetched the iPXE script carrying the token.
    pub ip: Option<Ipv4Addr>,
    /// Unix seconds.
    pub expires: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {message}")]
    Db { path: PathBuf, message: String },
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

/// Create `dir` (0700) if needed.
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
            message: e.to_string(),
        })?;
        let s = Store {
            db: Arc::new(db),
            path,
        };
        // Make sure the tables exist so readers never fail on a fresh file.
        s.write(|tx| {
            tx.open_table(LEASES)?;
            tx.open_table(BOOT_TOKENS)?;
            tx.open_table(MACHINES)?;
            tx.open_table(CLUSTERS)?;
            tx.open_table(REPLACEMENTS)?;
            tx.open_table(ADOPT)?;
            Ok(())
        })?;
        Ok(s)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Apply lease changes in one durable transaction.
    pub fn apply(&self, changes: &[LeaseChange]) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut t = tx.open_table(LEASES)?;
            for c in changes {
                match c {
                    LeaseChange::Bind(l) => {
                        let v = serde_json::to_vec(l)
                            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                        t.insert(u32::from(l.ip), v.as_slice())?;
                    }
                    LeaseChange::Free(ip) => {
                        t.remove(u32::from(*ip))?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Read-modify-write one JSON record in one durable transaction; `f` sees the
    /// current value (if any) and returns the new one (None deletes).
    pub fn update<T, R>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        f: impl FnOnce(Option<T>) -> (Option<T>, R),
    ) -> Result<R, StoreError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let mut out = None;
        self.write(|tx| {
            let mut t = tx.open_table(table)?;
            let cur: Option<T> = t
                .get(key)?
                .and_then(|v| serde_json::from_slice(v.value()).ok());
            let (new, r) = f(cur);
            match new {
                Some(v) => {
                    let bytes = serde_json::to_vec(&v)
                        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                    t.insert(key, bytes.as_slice())?;
                }
                None => {
                    t.remove(key)?;
                }
            }
            out = Some(r);
            Ok(())
        })?;
        out.ok_or_else(|| self.err("update did not run"))
    }

    pub fn get<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(table).map_err(|e| self.err(e))?;
        let v = t.get(key).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    pub fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(table).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = row.map_err(|e| self.err(e))?;
            if let Ok(x) = serde_json::from_slice(v.value()) {
                out.push(x);
            }
        }
        Ok(out)
    }

    /// Record a boot token, dropping expired ones and voiding the same MAC's
    /// earlier tokens (a new boot makes the old ones worthless).
    pub fn put_token(&self, token: &str, t: &BootToken, now: u64) -> Result<(), StoreError> {
        self.drop_tokens(&t.mac, now, Some((token, t)))
    }

    /// Void every boot token of `mac` (`kiln machines reinstall`).
    pub fn void_tokens(&self, mac: &crate::model::mac::Mac) -> Result<(), StoreError> {
        self.drop_tokens(mac, 0, None)
    }

    /// Drop expired tokens and `mac`'s, then insert `new`, in one transaction.
    fn drop_tokens(
        &self,
        mac: &crate::model::mac::Mac,
        now: u64,
        new: Option<(&str, &BootToken)>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut tab = tx.open_table(BOOT_TOKENS)?;
            let stale: Vec<String> = tab
                .iter()?
                .filter_map(|r| r.ok())
                .filter(|(_, v)| {
                    serde_json::from_slice::<BootToken>(v.value())
                        .map(|b| b.expires <= now || b.mac == *mac)
                        .unwrap_or(true)
                })
                .map(|(k, _)| k.value().to_string())
                .collect();
            for k in stale {
                tab.remove(k.as_str())?;
            }
            if let Some((token, t)) = new {
                let v = serde_json::to_vec(t).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                tab.insert(token, v.as_slice())?;
            }
            Ok(())
        })
    }

    pub fn token(&self, token: &str) -> Result<Option<BootToken>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BOOT_TOKENS).map_err(|e| self.err(e))?;
        let v = t.get(token).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    pub fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(LEASES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
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

#[cfg(test)]
mod tests {
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
            s.apply(&[LeaseChange::Bind(l.clone())]).unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.leases().unwrap(), vec![l.clone()]);
        s.apply(&[LeaseChange::Free(l.ip)]).unwrap();
        assert!(s.leases().unwrap().is_empty());
        let mode = std::fs::metadata(dir.join("kiln.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
