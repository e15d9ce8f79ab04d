//! Validated data, pure: kiln.yaml (`config`), profiles, the inventory, Role,
//! Arch, MAC, Talos release contracts, and the problems a bad file gets.
//! May import: nothing of kiln above it.

pub mod config;
pub mod contract;
pub mod inventory;
pub mod mac;
pub mod problems;
pub mod profile;
