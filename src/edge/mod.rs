//! The protocol edges: decode a request, ask the brain, encode its answer; no
//! policy here. May import: brain, store (through the brain's types), talos
//! (protobuf types), model.

pub(crate) mod api;
pub mod dhcp;
pub(crate) mod events;
pub(crate) mod http;
pub(crate) mod kmsg;
pub(crate) mod ra;
pub(crate) mod status;
pub(crate) mod tftp;
pub(crate) mod vip;
pub(crate) mod zerocopy;
