//! What a store call can fail with.

use std::path::PathBuf;

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
    /// A record that does not decode: kiln never treats it as absent.
    #[error("store {}: {table} record {key:?} is unreadable: {message}\nrestore {} from a backup (or stop kiln and remove that record); kiln does not guess what it held", path.display(), path.display())]
    Corrupt {
        path: PathBuf,
        table: String,
        key: String,
        message: String,
    },
    /// A storage failure happened earlier: the store is out of service until
    /// kiln restarts (and reopens it).
    #[error("store {}: out of service after an earlier failure: {first}", path.display())]
    Failed { path: PathBuf, first: String },
    /// The blocking task that ran a write died before it answered.
    #[error("store write did not finish: {0}")]
    Interrupted(String),
    /// The shared commit that held this write failed (nothing of it was kept).
    #[error("store write not committed: {0}")]
    Commit(String),
    /// etcd did not answer, or refused (`store: {backend: etcd}`).
    #[error("store {store}: {message}")]
    Etcd { store: String, message: String },
    /// Another daemon changed what this write depended on first (etcd).
    #[error("store: {0}")]
    Conflict(String),
    /// `store.secrets_key` cannot be used.
    #[error("secrets key {}: {message}", path.display())]
    SecretsKey { path: PathBuf, message: String },
    /// A sealed record that does not open (never treated as absent).
    #[error("store: sealed record {what}: {message}")]
    Sealed { what: String, message: String },
}
