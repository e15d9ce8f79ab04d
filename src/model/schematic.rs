//! Talos Image Factory schematics: what a profile asks of its image (system
//! extensions, kernel arguments, an overlay) and its ID, computed offline
//! exactly as the factory does (image-factory pkg/schematic: sha256 of the
//! yaml marshalling, fields in struct order, empty ones omitted except
//! `customization`, map keys sorted, 4-space indentation).

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The ID of the empty schematic (`customization: {}`).
pub const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

/// An overlay for boards that need one (e.g. `rpi_generic` from
/// `siderolabs/sbc-raspberrypi`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    pub image: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
}

/// The part of a schematic kiln writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schematic {
    pub overlay: Option<Overlay>,
    pub extra_kernel_args: Vec<String>,
    /// (META key, value) pairs.
    pub meta: Vec<(u8, String)>,
    /// Official system extensions, e.g. `siderolabs/iscsi-tools`.
    pub extensions: Vec<String>,
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    super::hex::encode(&Sha256::digest(bytes))
}

/// Go marshals maps with their keys sorted.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

impl Schematic {
    /// The schematic as the factory's data model (what is POSTed).
    pub fn to_value(&self) -> Value {
        let mut top = Map::new();
        if let Some(o) = &self.overlay {
            let mut m = Map::new();
            m.insert("image".into(), json!(o.image));
            m.insert("name".into(), json!(o.name));
            // Go's omitempty drops an empty map.
            let empty = |v: &&Value| v.is_null() || v.as_object().is_some_and(|m| m.is_empty());
            if let Some(opts) = o.options.as_ref().filter(|v| !empty(v)) {
                m.insert("options".into(), sorted(opts));
            }
            top.insert("overlay".into(), Value::Object(m));
        }
        let mut c = Map::new();
        if !self.extra_kernel_args.is_empty() {
            c.insert("extraKernelArgs".into(), json!(self.extra_kernel_args));
        }
        if !self.meta.is_empty() {
            let meta: Vec<Value> = self
                .meta
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect();
            c.insert("meta".into(), Value::Array(meta));
        }
        if !self.extensions.is_empty() {
            c.insert(
                "systemExtensions".into(),
                json!({ "officialExtensions": self.extensions }),
            );
        }
        top.insert("customization".into(), Value::Object(c));
        Value::Object(top)
    }

    /// The canonical text the ID hashes.
    pub fn canonical_yaml(&self) -> String {
        crate::model::yaml::to_yaml(&[self.to_value()])
    }

    /// The schematic ID (hex sha256 of the canonical text).
    pub fn id(&self) -> String {
        sha256_hex(self.canonical_yaml().as_bytes())
    }

    /// The installer image for this schematic from `factory_host` (e.g.
    /// `factory.talos.dev`): `metal-installer/` from Talos v1.10, `installer/` before.
    pub fn installer(&self, factory_host: &str, talos_version: &str, minor: u32) -> String {
        let repo = if minor >= 10 {
            "metal-installer"
        } else {
            "installer"
        };
        format!("{factory_host}/{repo}/{}:{talos_version}", self.id())
    }
}

/// The image a profile describes.
impl crate::model::profile::Profile {
    /// The Image Factory schematic of this profile's image: its extensions,
    /// kernel arguments (with `net.ifnames=0` for `stable_interface_names`)
    /// and overlay.
    pub fn schematic(&self) -> Schematic {
        let mut args = self.extra_kernel_args.clone();
        if self.stable_interface_names && !args.iter().any(|a| a == "net.ifnames=0") {
            args.push("net.ifnames=0".into());
        }
        Schematic {
            overlay: self.overlay.clone(),
            extra_kernel_args: args,
            meta: Vec::new(),
            extensions: self.extensions.clone(),
        }
    }

    /// Where `kiln assets pull` puts this profile's boot files under boot_assets.
    pub fn factory_dir(&self) -> String {
        format!("factory/{}/{}", self.schematic().id(), self.talos_version)
    }

    /// The factory installer of this profile's schematic, for its release.
    pub fn installer(&self, factory_host: &str) -> String {
        let minor = crate::model::contract::Contract::for_release(&self.talos_version)
            .map_or(crate::model::contract::DEFAULT.minor, |c| c.minor);
        self.schematic()
            .installer(factory_host, &self.talos_version, minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// image-factory pkg/schematic/schematic_test.go TestID / TestUnmarshalID.
    #[test]
    fn ids_equal_the_factory_test_vectors() {
        assert_eq!(Schematic::default().id(), EMPTY_ID);
        assert_eq!(Schematic::default().canonical_yaml(), "customization: {}\n");
        let s = Schematic {
            extra_kernel_args: vec!["noapic".into(), "nolapic".into()],
            ..Default::default()
        };
        assert_eq!(
            s.id(),
            "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c"
        );
        let meta = Schematic {
            meta: vec![(10, "foo".into())],
            ..Default::default()
        };
        assert_eq!(
            meta.id(),
            "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f"
        );
        let overlay = Schematic {
            overlay: Some(Overlay {
                name: "rpi_generic".into(),
                image: "siderolabs/sbc-raspberrypi".into(),
                options: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            overlay.id(),
            "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"
        );
        assert_eq!(
            overlay.installer("factory.talos.dev", "v1.14.0", 14),
            "factory.talos.dev/metal-installer/ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9:v1.14.0"
        );
    }
}
