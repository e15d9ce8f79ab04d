//! The protocol edges: decode a request, ask the brain, encode its answer; no
//! policy here. May import: brain, store (through the brain's types), talos
//! (protobuf types), model.

pub mod api;
pub mod dhcp;
pub mod events;
pub mod http;
pub mod ra;
pub mod tftp;
