//! The leases repository: full mode's bound addresses, keyed by address.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::mac::Mac;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// Unix seconds.
    pub expires: u64,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// A durable change to write before replying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    Bind(Lease),
    Free(Ipv4Addr),
}
