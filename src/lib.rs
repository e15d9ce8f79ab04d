//! kiln: provisions Talos Linux clusters on bare metal.
//!
//! The layers are folders; arrows point down only (docs/architecture.md):
//!
//! ```text
//! cli     -> daemon -> edge -> brain -> {talos, store} -> model
//! ```
//!
//! - `cli`: arguments, talks to the daemon or calls the library; no logic.
//! - `daemon`: wires the servers together; startup checks, signals, shutdown.
//! - `edge`: DHCP, TFTP, HTTP, events, the local API: decode, ask the brain, encode.
//! - `brain`: every decision (boot file, script, who may have a config,
//!   lifecycle, bootstrap once, replace, adopt).
//! - `talos`: secrets, machine config per contract, patches, client configs,
//!   the Talos API client.
//! - `store`: durable state behind typed repositories.
//! - `model`: kiln.yaml, profiles, inventory, Role, Arch, MAC: validated data.

#![warn(unreachable_pub)]

pub mod brain;
pub mod cli;
pub(crate) mod daemon;
pub mod edge;
pub mod metrics;
pub mod model;
pub mod store;
pub mod talos;
