//! The clusters repository: per cluster, the one node Bootstrap may go to
//! (decided and written before the first call) and the outcome.

use std::net::Ipv4Addr;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::{Records, Store, StoreError};
use crate::model::mac::Mac;

pub(super) const TABLE: Records = TableDefinition::new("clusters");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub mac: Mac,
    pub hostname: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    /// The one node Bootstrap may ever be sent to, decided before the first call.
    pub bootstrap_node: Option<Node>,
    pub decided_at: Option<u64>,
    pub bootstrapped_at: Option<u64>,
    /// When the recorded node proved itself (talos::proof) before the first call.
    #[serde(default)]
    pub proved_at: Option<u64>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// With several daemons (etcd): the one that calls Bootstrap. Another
    /// takes over only once this one is no longer alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_by: Option<String>,
    /// SHA-256 of the cluster's CA certificates, by name, pinned when kiln
    /// first made or loaded its secrets.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ca_fingerprints: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Clusters<'a>(pub(super) &'a Store);

impl Clusters<'_> {
    /// The cluster's record; an empty one if nothing was recorded yet.
    pub fn get(&self, name: &str) -> Result<ClusterRecord, StoreError> {
        Ok(self.0.get(TABLE, name)?.unwrap_or_else(|| ClusterRecord {
            name: name.into(),
            ..Default::default()
        }))
    }

    /// The record, if the store has ever known this cluster.
    pub fn find(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.0.get(TABLE, name)
    }

    /// Change the cluster's record in one durable transaction; returns it.
    pub fn update(
        &self,
        name: &str,
        mut f: impl FnMut(&mut ClusterRecord),
    ) -> Result<ClusterRecord, StoreError> {
        self.0.modify(TABLE, name, |cur: Option<ClusterRecord>| {
            let mut r = cur.unwrap_or_else(|| ClusterRecord {
                name: name.into(),
                ..Default::default()
            });
            f(&mut r);
            (Some(r.clone()), r)
        })
    }
}
