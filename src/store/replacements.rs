//! The replacements repository: each `kiln replace` (or adoption), its step
//! and log, keyed by the hostname whose identity moves.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::{Records, Store, StoreError};
use crate::model::inventory::Role;
use crate::model::mac::Mac;

pub(super) const TABLE: Records = TableDefinition::new("replacements");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Planned,
    EtcdRemoved,
    NodeDeleted,
    IdentityMoved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceRecord {
    pub hostname: String,
    pub old_mac: Mac,
    pub new_mac: Mac,
    pub role: Role,
    pub cluster: Option<String>,
    pub step: Step,
    pub started: u64,
    pub updated: u64,
    #[serde(default)]
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Replacements<'a>(pub(super) &'a Store);

impl Replacements<'_> {
    pub fn get(&self, hostname: &str) -> Result<Option<ReplaceRecord>, StoreError> {
        self.0.get(TABLE, hostname)
    }

    pub fn all(&self) -> Result<Vec<ReplaceRecord>, StoreError> {
        self.0.all(TABLE)
    }

    pub fn put(&self, r: &ReplaceRecord) -> Result<(), StoreError> {
        let r = r.clone();
        self.0.modify(
            TABLE,
            &r.hostname.clone(),
            move |_: Option<ReplaceRecord>| (Some(r.clone()), ()),
        )
    }
}
