//! DHCP on the wire: bytes to typed requests (`packet`) and the socket loop
//! (`server`). May import: brain, store (lease writes), model.

mod arp;
pub mod packet;
mod ping;
pub(crate) mod server;

#[cfg(test)]
mod decide_tests;
#[cfg(test)]
mod http_boot_tests;
