//! The machines repository: what kiln knows of each machine (its lifecycle
//! state, last event, proven address), keyed by MAC. States only move forward
//! (`Record::advance`); `reinstall` is the one way back.

use serde::{Deserialize, Serialize};

use redb::TableDefinition;

use super::{Records, Store, StoreError};
use crate::model::mac::Mac;

pub(super) const TABLE: Records = TableDefinition::new("machines");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Discovered,
    Booting,
    ConfigServed,
    Installing,
    Installed,
    Running,
    Ready,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 7] = [
        State::Discovered,
        State::Booting,
        State::ConfigServed,
        State::Installing,
        State::Installed,
        State::Running,
        State::Ready,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Discovered => "discovered",
            State::Booting => "booting",
            State::ConfigServed => "config_served",
            State::Installing => "installing",
            State::Installed => "installed",
            State::Running => "running",
            State::Ready => "ready",
        }
    }

    /// Installed to disk: its next PXE boot goes to the local disk.
    pub fn installed(self) -> bool {
        self >= State::Installed
    }
}

/// What kiln knows of one machine, kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub mac: Mac,
    pub hostname: String,
    pub state: State,
    /// Unix seconds when `state` was entered.
    pub since: u64,
    #[serde(default)]
    pub last_event: Option<String>,
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
}

impl Record {
    pub fn new(mac: Mac, hostname: &str, now: u64) -> Record {
        Record {
            mac,
            hostname: hostname.into(),
            state: State::Discovered,
            since: now,
            last_event: None,
            ip: None,
        }
    }

    /// Move forward to `to` (never back); returns whether the state changed.
    pub fn advance(&mut self, to: State, now: u64) -> bool {
        if to > self.state {
            self.state = to;
            self.since = now;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Machines<'a>(pub(super) &'a Store);

impl Machines<'_> {
    pub fn get(&self, mac: &Mac) -> Result<Option<Record>, StoreError> {
        self.0.get(TABLE, &mac.to_string())
    }

    pub fn all(&self) -> Result<Vec<Record>, StoreError> {
        self.0.all(TABLE)
    }

    /// Change `mac`'s record in one durable transaction: `f` gets the current
    /// record (None if there is none), may create, change or delete it
    /// (leaving None), and returns what the caller wants back.
    pub fn modify<R>(
        &self,
        mac: &Mac,
        mut f: impl FnMut(&mut Option<Record>) -> R,
    ) -> Result<R, StoreError> {
        self.0.modify(TABLE, &mac.to_string(), |mut cur| {
            let r = f(&mut cur);
            (cur, r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_never_regress() {
        let mut r = Record::new("52:54:00:00:00:01".parse().unwrap(), "cp-1", 1);
        assert!(r.advance(State::Installed, 2));
        assert!(!r.advance(State::Booting, 3));
        assert_eq!((r.state, r.since), (State::Installed, 2));
        assert!(r.state.installed());
    }
}
