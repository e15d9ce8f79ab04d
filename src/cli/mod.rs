//! The `kiln` command line: parses arguments, talks to the daemon (`client`,
//! `remote`) or calls the library (`local`); no logic of its own. anyhow lives
//! here and nowhere below. May import: everything below.

mod args;
mod assets;
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
            action: None,
            output,
            watch: true,
            api,
        } => remote::watch(&output, &api),
        Cmd::Machines {
            action,
            output,
            watch: _,
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
        Cmd::Assets { what } => assets::run(what),
        Cmd::Store {
            what: args::StoreCmd::Migrate { to, at },
        } => local::store_migrate(&at.config, &to),
        Cmd::Store {
            what: args::StoreCmd::Keygen { path },
        } => local::store_keygen(&path),
        Cmd::Explain { machine, api } => remote::explain(&machine, &api),
        Cmd::Logs {
            machine,
            follow,
            api,
        } => remote::logs(&machine, follow, &api),
        Cmd::Patch {
            what:
                args::PatchCmd::Migrate {
                    file,
                    talos_version,
                    role,
                    output,
                },
        } => local::patch_migrate(
            &file,
            &talos_version,
            match role.as_deref() {
                Some("worker") => Some(crate::model::inventory::Role::Worker),
                Some(_) => Some(crate::model::inventory::Role::Controlplane),
                None => None,
            },
            output.as_deref(),
        ),
    };
    finish(r)
}

/// Print what a command produced, or its error; the exit code follows. The
/// library's errors name their causes in their own text, so only the
/// outermost is printed.
fn finish(r: anyhow::Result<String>) -> ExitCode {
    match r {
        Ok(s) => {
            print!("{}", printable(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln: {}", printable(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Text safe for a terminal: what came from the network (event strings,
/// hostnames a node reported, error texts) may carry escape sequences that
/// rewrite the screen or the title. Control characters other than newline and
/// tab, and the bidirectional overrides, are shown escaped (`\u{1b}`).
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n' && c != '\t') || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_escapes_are_shown_not_obeyed() {
        let s = super::printable("cp-1\t\x1b]0;pwned\x07\x1b[2Jok\r\u{202e}\n");
        assert_eq!(
            s,
            "cp-1\t\\u{1b}]0;pwned\\u{7}\\u{1b}[2Jok\\u{d}\\u{202e}\n"
        );
    }
}
