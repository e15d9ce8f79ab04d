//! YAML in and out, as talosctl reads and writes it.

use serde_json::Value;

/// YAML that does not parse (or does not fit the type): one line, with the
/// line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(pub String);

/// YAML as talosctl writes it (go-yaml): 4-space indentation, list items indented
/// under their key, long base64 values on one line.
pub fn yaml_options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! { indent_step: 4, compact_list_indent: false, prefer_block_scalars: false }
}

/// Documents as YAML, `---` between them, 4-space indentation like talosctl.
pub fn to_yaml(docs: &[Value]) -> String {
    let opts = yaml_options();
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string_with_options(d, opts.clone()).unwrap_or_default());
    }
    out
}

/// Parse (possibly multi-document) YAML into JSON values.
pub fn from_yaml(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs: Vec<Value> = serde_saphyr::from_str_multiple_with_options(
        text,
        serde_saphyr::options! { with_snippet: false },
    )
    .map_err(|e| YamlError(crate::model::problems::one_line(&e)))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}
