//! Validated data, pure: kiln.yaml (`config`), profiles, the inventory, Role,
//! Arch, MAC, Talos release contracts, and the problems a bad file gets.
//! May import: nothing of kiln above it.

pub mod boot;
pub mod config;
pub mod contract;
pub mod files;
pub mod hex;
pub mod inventory;
pub mod mac;
pub mod patch;
pub mod problems;
pub mod profile;
pub mod schematic;
pub mod settings;
pub mod store;
mod wire;
pub mod yaml;
