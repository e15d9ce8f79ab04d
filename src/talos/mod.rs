//! Talos: secrets, machine config generation and patching, talosconfig (pure).

pub mod contract;
pub mod generate;
pub mod patch;
pub mod secrets;
