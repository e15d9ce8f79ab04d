//! Cluster secrets in the shared store (`store: {backend: etcd, secrets_key:
//! FILE}`): sealed with AES-256-GCM (ring) under a key every daemon reads
//! from a 0600 file, so etcd, its snapshots and its backups never hold a CA
//! key in clear. Each record names the key it was sealed with (a digest, not
//! the key) and is bound to its cluster and prefix, so a record copied to
//! another cluster's key does not open.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{Store, StoreError};

/// The key, as read from its file.
pub struct SecretsKey {
    key: LessSafeKey,
    /// sha256 of a label and the key, 16 hex digits: names the key in
    /// records and errors without revealing it.
    pub id: String,
    pub path: PathBuf,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretsKey({}, id {})", self.path.display(), self.id)
    }
}

/// A sealed record as etcd holds it (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    v: u32,
    alg: String,
    key_id: String,
    nonce: String,
    sealed: String,
}

const ALG: &str = "AES-256-GCM";

fn key_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::SecretsKey {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl SecretsKey {
    /// Read the key: a regular file, mode 0600 (or stricter), 64 hex digits.
    pub fn load(path: &Path) -> Result<SecretsKey, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            key_err(
                path,
                format!(
                    "{e}; `kiln store keygen {}` makes one (copy it to every daemon, 0600)",
                    path.display()
                ),
            )
        })?;
        if !meta.is_file() {
            return Err(key_err(path, "not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_err(
                path,
                format!(
                    "mode {mode:04o}: a secrets key is for kiln alone (chmod 600 {})",
                    path.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
        let hex = text.trim();
        let bytes = crate::model::hex::decode(hex)
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                key_err(
                    path,
                    format!(
                        "holds {} characters: a secrets key is 64 hex digits (32 bytes)",
                        hex.len()
                    ),
                )
            })?;
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| key_err(path, "not an AES-256 key"))?;
        let digest = sha2::Sha256::new()
            .chain_update(b"kiln secrets key\0")
            .chain_update(&bytes)
            .finalize();
        Ok(SecretsKey {
            key: LessSafeKey::new(unbound),
            id: crate::model::hex::encode(&digest[..8]),
            path: path.to_path_buf(),
        })
    }

    /// Write a new random key to `path` (0600; never over an existing file).
    pub fn generate(path: &Path) -> std::io::Result<()> {
        use rand_core::RngCore;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut key);
        let hex = crate::model::hex::encode(&key);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(format!("{hex}\n").as_bytes())?;
        f.sync_all()
    }

    /// Seal `plain` for `aad` (what the record is: its cluster and prefix).
    fn seal(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        use rand_core::RngCore;
        let mut n = [0u8; NONCE_LEN];
        rand_core::OsRng.fill_bytes(&mut n);
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::from(aad), &mut buf)
            .map_err(|_| key_err(&self.path, "sealing failed"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::to_vec(&Record {
            v: 1,
            alg: ALG.into(),
            key_id: self.id.clone(),
            nonce: b64.encode(n),
            sealed: b64.encode(&buf),
        })
        .map_err(|e| key_err(&self.path, e.to_string()))
    }

    /// Open a record sealed for `aad`; `what` names it in errors.
    fn open(&self, aad: &str, record: &[u8], what: &str) -> Result<Vec<u8>, StoreError> {
        let bad = |m: String| StoreError::Sealed {
            what: what.to_string(),
            message: m,
        };
        let r: Record =
            serde_json::from_slice(record).map_err(|e| bad(format!("unreadable: {e}")))?;
        if r.v != 1 || r.alg != ALG {
            return Err(bad(format!(
                "sealed as v{} {}: this kiln knows v1 {ALG}",
                r.v, r.alg
            )));
        }
        if r.key_id != self.id {
            return Err(bad(format!(
                "sealed with key {}, and this daemon's key {} is {}: give every daemon the same store.secrets_key",
                r.key_id,
                self.path.display(),
                self.id
            )));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let n: [u8; NONCE_LEN] = b64
            .decode(&r.nonce)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("its nonce is not 12 bytes".into()))?;
        let mut buf = b64
            .decode(&r.sealed)
            .map_err(|e| bad(format!("not base64: {e}")))?;
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(n), Aad::from(aad), &mut buf)
            .map_err(|_| {
                bad("does not open with this key (altered, or sealed for another cluster)".into())
            })?;
        Ok(plain.to_vec())
    }
}

/// The shared store's cluster secrets (each cluster's secrets.yaml, sealed).
#[derive(Debug, Clone, Copy)]
pub struct ClusterSecrets<'a>(pub(super) &'a Store);

impl ClusterSecrets<'_> {
    /// Whether secrets are kept in the store: etcd with a `secrets_key`.
    pub fn shared(&self) -> bool {
        self.0.etcd.is_some() && self.0.secrets_key.is_some()
    }

    fn parts(&self, cluster: &str) -> Option<(&super::etcd::Etcd, &SecretsKey, String, String)> {
        let (e, k) = (self.0.etcd.as_deref()?, self.0.secrets_key.as_deref()?);
        let aad = format!("kiln cluster secrets\0{}\0{cluster}", e.prefix);
        Some((e, k, format!("cluster_secrets/{cluster}"), aad))
    }

    /// `cluster`'s secrets as the store holds them (opened); None: none yet,
    /// or not [`shared`](Self::shared).
    pub fn get(&self, cluster: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.alive()?;
        let Some((e, k, key, aad)) = self.parts(cluster) else {
            return Ok(None);
        };
        match e.get(&key) {
            Some(rec) => Ok(Some(k.open(&aad, &rec, &key)?)),
            None => Ok(None),
        }
    }

    /// Store `plain` as `cluster`'s secrets unless some daemon did first;
    /// returns the secrets that stand (these, or the first daemon's).
    pub fn put_first(&self, cluster: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.0.alive()?;
        let Some((e, k, key, aad)) = self.parts(cluster) else {
            return Ok(plain.to_vec());
        };
        let sealed = k.seal(&aad, plain)?;
        if e.swap(&[(key.clone(), 0)], &[(key.clone(), Some(sealed))])? {
            return Ok(plain.to_vec());
        }
        // Another daemon was first: the replica now holds its record.
        let rec = e
            .get(&key)
            .ok_or_else(|| StoreError::Conflict(format!("{key} changed while it was read")))?;
        k.open(&aad, &rec, &key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_must_be_private_and_well_formed_and_seals_for_one_cluster() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secrets.key");
        SecretsKey::generate(&p).unwrap();
        assert!(
            SecretsKey::generate(&p).is_err(),
            "never over an existing key"
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k = SecretsKey::load(&p).unwrap();
        let rec = k.seal("kiln cluster secrets\0/kiln\0a", b"ca key").unwrap();
        let text = String::from_utf8_lossy(&rec);
        assert!(!text.contains("ca key"), "sealed, not clear: {text}");
        assert_eq!(
            k.open("kiln cluster secrets\0/kiln\0a", &rec, "r").unwrap(),
            b"ca key"
        );
        let e = k
            .open("kiln cluster secrets\0/kiln\0b", &rec, "r")
            .unwrap_err();
        assert!(e.to_string().contains("sealed for another cluster"), "{e}");
        // Another key: named by its id, not opened.
        let p2 = d.path().join("other.key");
        SecretsKey::generate(&p2).unwrap();
        let e = SecretsKey::load(&p2)
            .unwrap()
            .open("kiln cluster secrets\0/kiln\0a", &rec, "r")
            .unwrap_err();
        assert!(e.to_string().contains(&k.id), "{e}");
        // Readable by others, or not a key: refused, naming the file.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretsKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("secrets.key"), "{e}");
        std::fs::write(&p2, "short\n").unwrap();
        let e = SecretsKey::load(&p2).unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }
}
