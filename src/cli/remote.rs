//! Subcommands that ask the running daemon, over its local API: `machines`,
//! `bootstrap`, `replace`.

use anyhow::{anyhow, bail};

use super::args::{ApiArgs, MachinesCmd};
use super::client::{self, Endpoint};

fn endpoint(api: &ApiArgs) -> anyhow::Result<Endpoint> {
    Ok(api.endpoint().map_err(|e| anyhow!(e))?.0)
}

/// `kiln machines [reinstall|mark-failed MACHINE]`.
pub(super) fn machines(
    action: Option<MachinesCmd>,
    output: &str,
    api: &ApiArgs,
) -> anyhow::Result<String> {
    let at = &endpoint(api)?;
    let mut s = match action {
        Some(MachinesCmd::MarkFailed { machine }) => {
            client::post_to(at, &format!("/api/v1/machines/{machine}/mark-failed"))
        }
        Some(MachinesCmd::Reinstall { machine }) => {
            client::post_to(at, &format!("/api/v1/machines/{machine}/reinstall"))
        }
        None => client::fetch(at, "/api/v1/machines").and_then(|body| {
            if output == "json" {
                return Ok(body);
            }
            let v: Vec<crate::edge::api::MachineView> =
                serde_json::from_str(&body).map_err(|e| e.to_string())?;
            Ok(crate::edge::api::table(&v))
        }),
    }
    .map_err(|e| anyhow!(e))?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

/// `kiln machines --watch`: the table again each second it changes; on a
/// terminal the screen is redrawn, otherwise each new table is printed
/// (with a timestamp), so a log or a pipe sees every change once.
pub(super) fn watch(output: &str, api: &ApiArgs) -> anyhow::Result<String> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let now = machines(None, output, api)?;
        if now != last {
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let mut out = std::io::stdout().lock();
            if tty {
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            let _ = write!(out, "# {stamp}\n{}", super::printable(&now));
            let _ = out.flush();
            last = now;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `kiln logs MAC|HOST [-f]`.
pub(super) fn logs(machine: &str, follow: bool, api: &ApiArgs) -> anyhow::Result<String> {
    use std::io::Write;
    let at = &endpoint(api)?;
    let id = clean_id(machine);
    let mut since = 0usize;
    loop {
        let body = client::fetch(at, &format!("/api/v1/machines/{id}/logs?since={since}"))
            .map_err(|e| anyhow!(e))?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| anyhow!("{e}"))?;
        let mut out = std::io::stdout().lock();
        for l in v["lines"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "{}", super::printable(l.as_str().unwrap_or_default()));
        }
        let _ = out.flush();
        since = v["next"].as_u64().unwrap_or(since as u64) as usize;
        if !follow {
            return Ok(String::new());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// A machine id as it may go into a URL path.
fn clean_id(machine: &str) -> String {
    machine
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '.' | '_'))
        .collect()
}

/// `kiln explain MAC|HOST`.
pub(super) fn explain(machine: &str, api: &ApiArgs) -> anyhow::Result<String> {
    let at = &endpoint(api)?;
    let id = clean_id(machine);
    let mut s =
        client::fetch(at, &format!("/api/v1/machines/{id}/explain")).map_err(|e| anyhow!(e))?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

/// `kiln bootstrap [CLUSTER] [--node HOST | --reset]`.
pub(super) fn bootstrap(
    cluster: Option<String>,
    node: Option<String>,
    reset: bool,
    api: &ApiArgs,
) -> anyhow::Result<String> {
    let (at, cfg) = api.endpoint().map_err(|e| anyhow!(e))?;
    // The only cluster, from the config already read for the endpoint (read
    // here only when --socket named the endpoint).
    let cluster = cluster.or_else(|| {
        cfg.or_else(|| crate::model::config::Config::load(&api.config).ok())
            .and_then(|c| (c.clusters.len() == 1).then(|| c.clusters.keys().next().cloned()))
            .flatten()
    });
    let Some(cluster) = cluster else {
        bail!("name the cluster to bootstrap");
    };
    let path = if reset {
        format!("/api/v1/cluster/{cluster}/bootstrap/reset")
    } else {
        let q = node.map(|n| format!("?node={n}")).unwrap_or_default();
        format!("/api/v1/cluster/{cluster}/bootstrap{q}")
    };
    client::post_to(&at, &path).map_err(|e| anyhow!(e))
}

/// `kiln replace MACHINE --mac NEW [--dry-run] [--yes]`, or `--adopt`: shows
/// the plan (a dry run on the daemon) and asks before carrying it out.
pub(super) fn replace(
    machine: Option<String>,
    mac: Option<String>,
    adopt: bool,
    dry_run: bool,
    yes: bool,
    api: &ApiArgs,
) -> anyhow::Result<String> {
    let at = &endpoint(api)?;
    if adopt {
        let q = machine.map(|m| format!("?machine={m}")).unwrap_or_default();
        return client::post_to(at, &format!("/api/v1/adopt{q}")).map_err(|e| anyhow!(e));
    }
    let (Some(machine), Some(mac)) = (machine, mac) else {
        bail!("name the failed machine and the new box's --mac (or use --adopt)");
    };
    let run = |dry: bool| {
        let req = crate::edge::api::ReplaceRequest {
            machine: machine.clone(),
            new_mac: mac.clone(),
            dry_run: dry,
        };
        client::post_json(at, "/api/v1/replace", &req)
            .and_then(|body| {
                serde_json::from_str::<serde_json::Value>(&body).map_err(|e| e.to_string())
            })
            .map_err(|e| anyhow!(e))
    };
    let show = |v: &serde_json::Value| {
        for l in v["plan"].as_array().into_iter().flatten() {
            println!("{}", super::printable(l.as_str().unwrap_or_default()));
        }
    };
    show(&run(true)?);
    if dry_run {
        return Ok(String::new());
    }
    if !yes {
        confirm(&format!("Replace {machine} by {mac}?"))?;
    }
    show(&run(false)?);
    Ok(String::new())
}

/// Ask on the terminal; anything but "yes" (or no terminal) changes nothing.
fn confirm(question: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("pass --yes to replace without a terminal to confirm on");
    }
    eprint!("{question} Type yes: ");
    let mut a = String::new();
    let _ = std::io::stdin().read_line(&mut a);
    if a.trim() != "yes" {
        bail!("nothing changed");
    }
    Ok(())
}
