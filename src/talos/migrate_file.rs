//! `kiln patch migrate FILE --talos-version V [--role R]`: a patch file
//! rewritten by [`super::migrate`], what moved listed as comments on top.

use super::migrate::{for_role, migrate, MigrateError};

use crate::model::inventory::Role;

/// Why `kiln patch migrate` could not rewrite a file.
#[derive(Debug, thiserror::Error)]
pub enum MigrateFileError {
    #[error("{}: {err}", path.display())]
    Read {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] crate::model::patch::PatchError),
    #[error("{0}")]
    Version(String),
    #[error("{}: {err}", path.display())]
    Migrate {
        path: std::path::PathBuf,
        err: MigrateError,
    },
}

/// `kiln patch migrate FILE --talos-version V`: the rewritten patch as YAML,
/// what moved listed as comments at the top.
pub fn migrate_file(
    path: &std::path::Path,
    talos_version: &str,
    role: Option<Role>,
) -> Result<String, MigrateFileError> {
    let c = crate::model::contract::Contract::parse(talos_version)
        .map_err(|e| MigrateFileError::Version(e.to_string()))?;
    if !c.multidoc_kubernetes() {
        return Err(MigrateFileError::Version(format!("Talos {talos_version} reads the v1alpha1 fields as they are: nothing to migrate (the move is Talos v1.14's)")));
    }
    let text = std::fs::read_to_string(path).map_err(|err| MigrateFileError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let name = path.display().to_string();
    let docs = match crate::model::patch::parse(&text, &name)? {
        crate::model::patch::Patch::Strategic(d) => d,
        crate::model::patch::Patch::Json6902(_) => {
            return Err(MigrateFileError::Version(format!("{name}: JSON6902 patches are not supported for multi-document machine configuration (every Talos {talos_version} config is one): write it as a strategic-merge patch")))
        }
    };
    let m = migrate(&docs).map_err(|err| MigrateFileError::Migrate {
        path: path.to_path_buf(),
        err,
    })?;
    let cp_only: Vec<String> = m
        .docs
        .iter()
        .filter_map(|d| d.get("kind").and_then(serde_json::Value::as_str))
        .filter(|k| super::conflicts::CONTROL_PLANE_ONLY.contains(k))
        .map(String::from)
        .collect();
    let m = match role {
        Some(r) => for_role(m, r, &docs),
        None => m,
    };
    let mut out = format!("# {name} migrated for Talos {talos_version} by kiln patch migrate\n");
    if role.is_none() && !cp_only.is_empty() {
        out.push_str(&format!("# control planes only ({}): apply with --config-patch-control-plane, or migrate again with --role worker for workers\n", cp_only.join(", ")));
    }
    if m.notes.is_empty() {
        out.push_str("# nothing to move: no field Talos v1.14 moved is set\n");
    }
    for n in &m.notes {
        out.push_str(&format!("#   {n}\n"));
    }
    if m.docs.is_empty() {
        out.push_str("# nothing is left for Talos v1.14: drop this patch\n");
    } else {
        out.push_str(&crate::model::yaml::to_yaml(&m.docs));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
