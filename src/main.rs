//! The `kiln` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Provision Talos Linux clusters on bare metal"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: DHCP, TFTP and HTTP for netbooting the inventory.
    Serve {
        #[arg(
            short,
            long,
            env = "KILN_CONFIG",
            default_value = "/etc/kiln/kiln.yaml"
        )]
        config: PathBuf,
    },
    /// Validate the config, profiles, inventory and boot assets; exit non-zero on any problem.
    Check {
        #[arg(
            short,
            long,
            env = "KILN_CONFIG",
            default_value = "/etc/kiln/kiln.yaml"
        )]
        config: PathBuf,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match kiln::daemon::load(&config) {
            Ok((cfg, inv)) => {
                println!(
                    "{}: ok ({} profiles, {} machines)",
                    cfg.file.display(),
                    inv.profiles.len(),
                    inv.machines().len()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                eprintln!("{} problem(s) found", problems.0.len());
                ExitCode::FAILURE
            }
        },
        Cmd::Serve { config } => {
            init_logging();
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("kiln: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(kiln::daemon::serve(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kiln: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
