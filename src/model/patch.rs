//! A config patch as the operator wrote it (validated: a JSON patch or
//! strategic-merge documents). Applying one is `talos::patch`.

use serde_json::Value;

use super::yaml::from_yaml;

#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// One or more (partial) config documents.
    Strategic(Vec<Value>),
    /// A list of RFC 6902 operations.
    Json6902(Value),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}: {at}{message}")]
pub struct PatchError {
    pub source_name: String,
    pub at: String,
    pub message: String,
}

pub(crate) fn err(source: &str, path: &str, message: impl Into<String>) -> PatchError {
    PatchError {
        source_name: source.to_string(),
        at: if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        },
        message: message.into(),
    }
}

/// Parse a patch the way talosctl does: a list of operations is a JSON patch,
/// anything else is a strategic-merge patch.
pub fn parse(text: &str, source: &str) -> Result<Patch, PatchError> {
    let docs = from_yaml(text).map_err(|e| err(source, "", format!("not YAML: {e}")))?;
    match docs.as_slice() {
        [Value::Array(ops)] => {
            for (i, op) in ops.iter().enumerate() {
                if op.get("op").and_then(Value::as_str).is_none()
                    || op.get("path").and_then(Value::as_str).is_none()
                {
                    return Err(err(
                        source,
                        &format!("[{i}]"),
                        "a JSON patch operation needs `op` and `path`",
                    ));
                }
            }
            Ok(Patch::Json6902(Value::Array(ops.clone())))
        }
        [] => Err(err(source, "", "empty patch")),
        docs => {
            for (i, d) in docs.iter().enumerate() {
                if !d.is_object() {
                    return Err(err(
                        source,
                        &format!("document {}", i + 1),
                        "a config patch document must be a mapping",
                    ));
                }
            }
            Ok(Patch::Strategic(docs.to_vec()))
        }
    }
}
