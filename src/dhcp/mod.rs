//! DHCP: packet decoding (`packet`), the pure decision (`policy`), the address
//! pool (`leases`) and the socket loop (`server`).

pub mod leases;
pub mod packet;
pub mod policy;
pub mod server;
