//! kiln: provisions Talos Linux clusters on bare metal.
//!
//! Layers (arrows point down only): `daemon` wires the protocol edges (`dhcp`,
//! `tftp`, `http`) to the brain (`provision`), which reads `inventory` and keeps
//! durable state in `store`. See docs/architecture.md.

pub mod api;
pub mod api_client;
pub mod api_http;
pub mod assets;
pub mod clientconfig;
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod events;
pub mod gen;
pub mod http;
pub mod inventory;
pub mod ipxe;
pub mod kubeconfig;
pub mod mac;
pub mod problems;
pub mod profile;
pub mod provision;
pub mod ra;
pub mod ratelog;
pub mod store;
pub mod talos;
pub mod tftp;
