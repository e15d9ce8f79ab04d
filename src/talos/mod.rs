//! Talos: secrets, machine config per contract and patches, talosconfig and
//! kubeconfig (pure), `kiln gen`, and the Talos API client (`client`, `proof`,
//! `proto`). May import: model.

pub mod clientconfig;
pub mod gen;
pub mod generate;
pub mod kubeconfig;
pub mod patch;
pub mod proto;
pub mod secrets;
pub mod talosconfig;

/// YAML as talosctl writes it (go-yaml): 4-space indentation, list items indented
/// under their key, long base64 values on one line.
pub fn yaml_options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! { indent_step: 4, compact_list_indent: false, prefer_block_scalars: false }
}
pub mod client;
pub mod proof;
pub mod settings;
