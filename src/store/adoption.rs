//! The adoption repository: machines marked failed, and whether the next
//! unknown PXE client takes one over.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::{Records, Store, StoreError};

pub(super) const TABLE: Records = TableDefinition::new("adopt");
const KEY: &str = "state";

/// For racks where nobody types MACs: machines marked failed, and whether the
/// next unknown MAC that PXE boots takes one over (`kiln replace --adopt`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptState {
    pub failed: Vec<String>,
    pub armed: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Adoption<'a>(pub(super) &'a Store);

impl Adoption<'_> {
    pub fn get(&self) -> Result<AdoptState, StoreError> {
        Ok(self.0.get(TABLE, KEY)?.unwrap_or_default())
    }

    /// Change the state in one durable transaction; returns it.
    pub fn update(&self, mut f: impl FnMut(&mut AdoptState)) -> Result<AdoptState, StoreError> {
        self.0.modify(TABLE, KEY, |cur: Option<AdoptState>| {
            let mut s = cur.unwrap_or_default();
            f(&mut s);
            (Some(s.clone()), s)
        })
    }
}
