//! `kiln gen secrets` and `kiln gen config`: talosctl's commands, same flags,
//! same files, so an operator can switch without relearning.

use std::path::{Path, PathBuf};

use crate::model::contract::Contract;
use crate::model::files::write_private;
use crate::model::inventory::Role;
use crate::model::yaml::to_yaml;
use crate::talos::conflicts;
use crate::talos::generate::{default_install_image, generate, Options};
use crate::talos::patch::{self, Patch};
use crate::talos::secrets::Bundle;
use crate::talos::talosconfig;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GenCmdError {
    #[error("{0}")]
    Msg(String),
}

fn msg(e: impl std::fmt::Display) -> GenCmdError {
    GenCmdError::Msg(e.to_string())
}

/// Arguments of `gen config`, as talosctl names them.
#[derive(Debug, Clone, Default)]
pub(crate) struct GenConfig {
    pub cluster_name: String,
    pub endpoint: String,
    pub with_secrets: Option<PathBuf>,
    pub config_patch: Vec<String>,
    pub config_patch_control_plane: Vec<String>,
    pub config_patch_worker: Vec<String>,
    pub kubernetes_version: Option<String>,
    pub talos_version: Option<String>,
    pub install_disk: String,
    pub install_image: Option<String>,
    pub additional_sans: Vec<String>,
    pub dns_domain: String,
    pub output: PathBuf,
    pub force: bool,
}

/// `@file` reads a file; anything else is the patch itself (YAML or JSON).
pub(crate) fn load_patch(arg: &str) -> Result<(Patch, String), GenCmdError> {
    let (text, name) = match arg.strip_prefix('@') {
        Some(f) => (
            std::fs::read_to_string(f).map_err(|e| msg(format!("{f}: {e}")))?,
            f.to_string(),
        ),
        None => (arg.to_string(), "inline patch".to_string()),
    };
    Ok((crate::model::patch::parse(&text, &name).map_err(msg)?, name))
}

/// The contract `--talos-version` names (every Talos v1.8 through v1.15 has
/// its own); talosctl's default when none is given is its own line, v1.14.
pub(crate) fn contract_of(v: Option<&str>) -> Result<Contract, GenCmdError> {
    match v {
        Some(v) => Contract::parse(v).map_err(msg),
        None => Ok(crate::model::contract::DEFAULT),
    }
}

/// Render controlplane and worker documents for `args` (no files written).
pub(crate) fn render(
    args: &GenConfig,
    bundle: &Bundle,
) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>), GenCmdError> {
    let contract = contract_of(args.talos_version.as_deref())?;
    let mut o = Options::new(contract, &args.cluster_name, &args.endpoint);
    if let Some(k) = &args.kubernetes_version {
        o.kubernetes_version = k.trim_start_matches('v').to_string();
    }
    o.install_disk = (!args.install_disk.is_empty()).then(|| args.install_disk.clone());
    let release = match args.talos_version.as_deref() {
        Some(v) if v.trim_start_matches('v').split('.').count() >= 3 => {
            format!("v{}", v.trim_start_matches('v'))
        }
        _ => contract.default_release().to_string(),
    };
    o.install_image = Some(
        args.install_image
            .clone()
            .unwrap_or_else(|| default_install_image(contract, &release)),
    );
    o.additional_sans = args.additional_sans.clone();
    o.dns_domain = args.dns_domain.clone();
    let common: Vec<(Patch, String)> = args
        .config_patch
        .iter()
        .map(|a| load_patch(a))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for (role, extra, file) in [
        (
            Role::Controlplane,
            &args.config_patch_control_plane,
            "controlplane.yaml",
        ),
        (Role::Worker, &args.config_patch_worker, "worker.yaml"),
    ] {
        let own: Vec<(Patch, String)> = extra
            .iter()
            .map(|a| load_patch(a))
            .collect::<Result<_, _>>()?;
        let steps: Vec<(&Patch, &str)> = common
            .iter()
            .chain(own.iter())
            .map(|(p, n)| (p, n.as_str()))
            .collect();
        let base = generate(&o, bundle, role).map_err(msg)?;
        let mut docs = base.clone();
        for (p, name) in &steps {
            patch::apply(&mut docs, p, name).map_err(msg)?;
        }
        // talosctl writes configs a node refuses at boot; kiln does not.
        if !conflicts::check_for(&docs, contract).is_empty() {
            let blamed = conflicts::blame(base, &steps, contract).map_err(msg)?;
            refused.push(conflicts::report(file, &blamed));
        }
        out.push(docs);
    }
    if !refused.is_empty() {
        return Err(msg(refused.join("\n")));
    }
    let worker = out.pop().unwrap_or_default();
    let cp = out.pop().unwrap_or_default();
    Ok((cp, worker))
}

/// `kiln gen config`: writes controlplane.yaml, worker.yaml and talosconfig
/// (and secrets.yaml when it had to make one), all 0600.
pub(crate) fn gen_config(args: &GenConfig) -> Result<Vec<PathBuf>, GenCmdError> {
    let contract = contract_of(args.talos_version.as_deref())?;
    let mut written = Vec::new();
    let (bundle, generated) = match &args.with_secrets {
        Some(p) => (Bundle::load(p).map_err(msg)?, false),
        None => (Bundle::generate(contract.minor).map_err(msg)?, true),
    };
    // Everything is checked before the first file is written.
    let (cp, worker) = render(args, &bundle)?;
    if generated {
        // talosctl keeps generated secrets only inside the configs; kiln also
        // writes them, so the cluster can be extended later.
        let p = args.output.join("secrets.yaml");
        bundle.save(&p, args.force).map_err(msg)?;
        written.push(p);
    }
    let out = |name: &str| args.output.join(name);
    for (name, docs) in [("controlplane.yaml", &cp), ("worker.yaml", &worker)] {
        write_private(&out(name), to_yaml(docs).as_bytes(), args.force).map_err(msg)?;
        written.push(out(name));
    }
    let ctx = talosconfig::admin_context(&bundle, Vec::new()).map_err(msg)?;
    let tc = talosconfig::single(&args.cluster_name, ctx);
    write_private(&out("talosconfig"), tc.to_yaml().as_bytes(), args.force).map_err(msg)?;
    written.push(out("talosconfig"));
    Ok(written)
}

/// `kiln gen secrets`.
pub(crate) fn gen_secrets(
    output: &Path,
    talos_version: Option<&str>,
    force: bool,
) -> Result<(), GenCmdError> {
    let c = contract_of(talos_version)?;
    Bundle::generate(c.minor)
        .map_err(msg)?
        .save(output, force)
        .map_err(msg)
}
