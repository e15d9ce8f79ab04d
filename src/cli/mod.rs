//! The `kiln` command line: parses arguments, talks to the daemon (`client`,
//! `remote`) or calls the library (`local`); no logic of its own. anyhow lives
//! here and nowhere below. May import: everything below.

mod args;
pub(crate) mod client;
mod local;
mod remote;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Cmd};

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Serve { at } => return local::serve(&at.config),
        Cmd::Check { at } => return local::check(&at.config),
        Cmd::Render { at, mac } => local::render(&at.config, &mac),
        Cmd::Machines {
            action,
            output,
            api,
        } => remote::machines(action, &output, &api),
        Cmd::Bootstrap {
            cluster,
            node,
            reset,
            api,
        } => remote::bootstrap(cluster, node, reset, &api),
        Cmd::Replace {
            machine,
            mac,
            adopt,
            dry_run,
            yes,
            api,
        } => remote::replace(machine, mac, adopt, dry_run, yes, &api),
        Cmd::Kubeconfig(a) => local::client_export("kubeconfig", a),
        Cmd::Talosconfig(a) => local::client_export("talosconfig", a),
        Cmd::Gen { what } => local::gen(what),
    };
    finish(r)
}

/// Print what a command produced, or its error; the exit code follows. The
/// library's errors name their causes in their own text, so only the
/// outermost is printed.
fn finish(r: anyhow::Result<String>) -> ExitCode {
    match r {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}
