//! Talos: secrets, machine config per contract and patches, talosconfig and
//! kubeconfig (pure), `kiln gen`, and the Talos API client (`client`, `proof`,
//! `proto`). May import: model.

pub(crate) mod clientconfig;
pub mod conflicts;
pub mod factory;
pub(crate) mod gen;
pub mod generate;
pub mod kubeconfig;
pub mod migrate;
pub mod migrate_file;
pub mod multidoc;
pub mod patch;
pub mod proto;
pub mod secrets;
pub mod talosconfig;

pub mod client;
pub(crate) mod proof;
pub mod settings;
