//! The `kiln` command line: parses arguments, talks to the daemon (`client`)
//! or calls the library; no logic. May import: everything below.

pub mod client;

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
    /// Print the machine config a MAC would be served (it holds secrets: mind where it goes).
    Render {
        #[arg(
            short,
            long,
            env = "KILN_CONFIG",
            default_value = "/etc/kiln/kiln.yaml"
        )]
        config: PathBuf,
        #[arg(long)]
        mac: String,
    },
    /// Show machines and their lifecycle (from the running daemon), or act on one.
    Machines {
        #[command(subcommand)]
        action: Option<MachinesCmd>,
        /// table or json
        #[arg(short, long, default_value = "table")]
        output: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Bootstrap etcd on a cluster (for clusters with auto_bootstrap: false); kiln
    /// still never bootstraps a second node.
    Bootstrap {
        /// Cluster name (default: the only one).
        cluster: Option<String>,
        /// Control plane to bootstrap (default: the first that runs).
        #[arg(long)]
        node: Option<String>,
        /// Clear a recorded bootstrap node that never proved itself (refused
        /// once it did, or when any etcd member exists).
        #[arg(long, conflicts_with = "node")]
        reset: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Replace a failed machine with a new box: remove its etcd member (keeping
    /// quorum), delete its Node, then give its identity to the new MAC.
    Replace {
        /// Hostname or old MAC of the failed machine.
        machine: Option<String>,
        /// MAC of the new box.
        #[arg(long, required_unless_present = "adopt")]
        mac: Option<String>,
        /// No MAC to type: the next unknown machine that PXE boots takes over
        /// MACHINE (or the first one marked failed).
        #[arg(long, conflicts_with = "mac")]
        adopt: bool,
        /// Print the plan and the quorum arithmetic; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do it without asking.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the admin kubeconfig kiln keeps, write it (-o), or merge it into yours.
    Kubeconfig(ClientArgs),
    /// Print the talosconfig kiln keeps, write it (-o), or merge it into yours.
    Talosconfig(ClientArgs),
    /// Generate secrets or machine configs, as `talosctl gen` does.
    Gen {
        #[command(subcommand)]
        what: GenCmd,
    },
}

#[derive(clap::Args)]
struct ApiArgs {
    /// Use the opt-in TCP API on 127.0.0.1:PORT (`api_tcp: true`) with the
    /// bearer token from state_dir/api-token, instead of the Unix socket.
    #[arg(long, global = true)]
    api_port: Option<u16>,
    /// The daemon's API socket (default: state_dir/kiln.sock from the config).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[arg(
        short,
        long,
        env = "KILN_CONFIG",
        default_value = "/etc/kiln/kiln.yaml",
        global = true
    )]
    config: PathBuf,
}

impl ApiArgs {
    /// Where the daemon listens: the socket in state_dir, unless told otherwise.
    fn endpoint(&self) -> Result<crate::cli::client::Endpoint, String> {
        use crate::cli::client::Endpoint;
        if let Some(s) = &self.socket {
            return Ok(Endpoint::Socket(s.clone()));
        }
        let cfg = crate::model::config::Config::load(&self.config).map_err(|e| {
            format!("{e}\n(kiln finds the daemon's API socket through its config: pass --config or --socket)")
        })?;
        match self.api_port {
            Some(port) => {
                let path = cfg.state_dir.join("api-token");
                let token = std::fs::read_to_string(&path).map_err(|e| {
                    format!("{}: {e} (the TCP API needs its token)", path.display())
                })?;
                Ok(Endpoint::Tcp {
                    port,
                    token: token.trim().to_string(),
                })
            }
            None => Ok(Endpoint::Socket(cfg.api_socket())),
        }
    }
}

#[derive(clap::Args)]
struct ClientArgs {
    /// Only this cluster's context.
    cluster: Option<String>,
    #[arg(
        short,
        long,
        env = "KILN_CONFIG",
        default_value = "/etc/kiln/kiln.yaml"
    )]
    config: PathBuf,
    /// Write to this file (0600).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Merge into this file (default ~/.kube/config or ~/.talos/config), as talosctl kubeconfig does.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    merge: Option<PathBuf>,
}

fn client_export(kind: &str, a: ClientArgs) -> ExitCode {
    let cfg = match crate::model::config::Config::load(&a.config) {
        Ok(c) => c,
        Err(p) => {
            eprintln!("{p}");
            return ExitCode::FAILURE;
        }
    };
    let merge = a.merge.map(|m| {
        if m.as_os_str().is_empty() {
            let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
            PathBuf::from(home).join(if kind == "kubeconfig" {
                ".kube/config"
            } else {
                ".talos/config"
            })
        } else {
            m
        }
    });
    report(crate::talos::clientconfig::export(
        &cfg,
        kind,
        a.cluster.as_deref(),
        a.output.as_deref(),
        merge.as_deref(),
    ))
}

#[derive(Subcommand)]
enum MachinesCmd {
    /// Install Talos again on the machine's next PXE boot (e.g. after a disk swap).
    Reinstall { machine: String },
    /// Mark a machine as failed, for `kiln replace --adopt`.
    MarkFailed { machine: String },
}

#[derive(Subcommand)]
enum GenCmd {
    /// Generate a secrets bundle (talosctl's secrets.yaml format, mode 0600).
    Secrets {
        #[arg(short, long, default_value = "secrets.yaml")]
        output_file: PathBuf,
        /// Talos version the secrets are for (v1.8 .. v1.13).
        #[arg(long)]
        talos_version: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Generate controlplane.yaml, worker.yaml and talosconfig.
    Config(Box<ConfigArgs>),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Cluster name.
    cluster_name: String,
    /// Kubernetes API endpoint, e.g. https://192.168.50.200:6443.
    cluster_endpoint: String,
    #[arg(long)]
    with_secrets: Option<PathBuf>,
    /// Patch for all machines: @file or inline YAML/JSON; repeatable, applied in order.
    #[arg(long = "config-patch")]
    config_patch: Vec<String>,
    #[arg(long = "config-patch-control-plane")]
    config_patch_control_plane: Vec<String>,
    #[arg(long = "config-patch-worker")]
    config_patch_worker: Vec<String>,
    #[arg(long)]
    kubernetes_version: Option<String>,
    /// Version contract to generate for (v1.8 .. v1.13; default v1.13). Talos
    /// v1.14 and v1.15 accept v1.13 configs.
    #[arg(long)]
    talos_version: Option<String>,
    #[arg(long, default_value = "/dev/sda")]
    install_disk: String,
    #[arg(long)]
    install_image: Option<String>,
    #[arg(long, value_delimiter = ',')]
    additional_sans: Vec<String>,
    #[arg(long, default_value = "cluster.local")]
    dns_domain: String,
    #[arg(short, long, default_value = ".")]
    output: PathBuf,
    #[arg(long)]
    force: bool,
}

/// Print what a command produced, or its error; the exit code follows.
fn report(r: Result<String, String>) -> ExitCode {
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match crate::brain::check::load(&config).and_then(|(cfg, inv)| {
            crate::brain::check::check_configs(&cfg, &inv).into_result((cfg, inv))
        }) {
            Ok((cfg, inv)) => {
                for w in crate::brain::check::warnings(&cfg, &inv) {
                    eprintln!("warning: {w}");
                }
                for r in &inv.replaced {
                    println!(
                        "{}: replaced {} by {} (kiln replace; {})",
                        r.hostname,
                        r.old_mac,
                        r.new_mac,
                        crate::model::inventory::overrides_path(&cfg).display()
                    );
                }
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
        Cmd::Render { config, mac } => match crate::brain::check::render_for(&config, &mac) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kiln: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Machines {
            action,
            output,
            api,
        } => {
            let port = match api.endpoint() {
                Ok(e) => e,
                Err(e) => return report(Err(e)),
            };
            let port = &port;
            let r = match action {
                Some(MachinesCmd::MarkFailed { machine }) => crate::cli::client::post_to(
                    port,
                    &format!("/api/v1/machines/{machine}/mark-failed"),
                ),
                Some(MachinesCmd::Reinstall { machine }) => crate::cli::client::post_to(
                    port,
                    &format!("/api/v1/machines/{machine}/reinstall"),
                ),
                None => crate::cli::client::fetch(port, "/api/v1/machines").and_then(|body| {
                    if output == "json" {
                        Ok(body)
                    } else {
                        let v: Vec<crate::edge::api::MachineView> =
                            serde_json::from_str(&body).map_err(|e| e.to_string())?;
                        Ok(crate::edge::api::table(&v))
                    }
                }),
            };
            match r {
                Ok(s) => {
                    print!("{s}");
                    if !s.ends_with('\n') {
                        println!();
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kiln: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Bootstrap {
            cluster,
            node,
            reset,
            api,
        } => {
            let port = match api.endpoint() {
                Ok(e) => e,
                Err(e) => return report(Err(e)),
            };
            let cluster = cluster.or_else(|| {
                crate::model::config::Config::load(&api.config)
                    .ok()
                    .and_then(|c| {
                        (c.clusters.len() == 1)
                            .then(|| c.clusters.keys().next().cloned())
                            .flatten()
                    })
            });
            let Some(cluster) = cluster else {
                eprintln!("kiln: name the cluster to bootstrap");
                return ExitCode::FAILURE;
            };
            if reset {
                return report(crate::cli::client::post_to(
                    &port,
                    &format!("/api/v1/cluster/{cluster}/bootstrap/reset"),
                ));
            }
            let q = node.map(|n| format!("?node={n}")).unwrap_or_default();
            report(crate::cli::client::post_to(
                &port,
                &format!("/api/v1/cluster/{cluster}/bootstrap{q}"),
            ))
        }
        Cmd::Replace {
            machine,
            mac,
            adopt,
            dry_run,
            yes,
            api,
        } => {
            let port = match api.endpoint() {
                Ok(e) => e,
                Err(e) => return report(Err(e)),
            };
            let port = &port;
            if adopt {
                let q = machine.map(|m| format!("?machine={m}")).unwrap_or_default();
                return report(crate::cli::client::post_to(
                    port,
                    &format!("/api/v1/adopt{q}"),
                ));
            }
            let (Some(machine), Some(mac)) = (machine, mac) else {
                eprintln!("kiln: name the failed machine and the new box's --mac (or use --adopt)");
                return ExitCode::FAILURE;
            };
            let run = |dry: bool| {
                crate::cli::client::post_json(
                    port,
                    "/api/v1/replace",
                    &crate::edge::api::ReplaceRequest {
                        machine: machine.clone(),
                        new_mac: mac.clone(),
                        dry_run: dry,
                    },
                )
                .and_then(|body| {
                    serde_json::from_str::<serde_json::Value>(&body).map_err(|e| e.to_string())
                })
            };
            let show = |v: &serde_json::Value| {
                for l in v["plan"].as_array().into_iter().flatten() {
                    println!("{}", l.as_str().unwrap_or_default());
                }
            };
            let plan = match run(true) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("kiln: {e}");
                    return ExitCode::FAILURE;
                }
            };
            show(&plan);
            if dry_run {
                return ExitCode::SUCCESS;
            }
            if !yes {
                use std::io::IsTerminal;
                if !std::io::stdin().is_terminal() {
                    eprintln!("kiln: pass --yes to replace without a terminal to confirm on");
                    return ExitCode::FAILURE;
                }
                eprint!("Replace {machine} by {mac}? Type yes: ");
                let mut a = String::new();
                let _ = std::io::stdin().read_line(&mut a);
                if a.trim() != "yes" {
                    eprintln!("kiln: nothing changed");
                    return ExitCode::FAILURE;
                }
            }
            match run(false) {
                Ok(v) => {
                    show(&v);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kiln: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Kubeconfig(a) => client_export("kubeconfig", a),
        Cmd::Talosconfig(a) => client_export("talosconfig", a),
        Cmd::Gen { what } => {
            let r = match what {
                GenCmd::Secrets {
                    output_file,
                    talos_version,
                    force,
                } => crate::talos::gen::gen_secrets(&output_file, talos_version.as_deref(), force)
                    .map(|()| vec![output_file]),
                GenCmd::Config(c) => {
                    let c = *c;
                    crate::talos::gen::gen_config(&crate::talos::gen::GenConfig {
                        cluster_name: c.cluster_name,
                        endpoint: c.cluster_endpoint,
                        with_secrets: c.with_secrets,
                        config_patch: c.config_patch,
                        config_patch_control_plane: c.config_patch_control_plane,
                        config_patch_worker: c.config_patch_worker,
                        kubernetes_version: c.kubernetes_version,
                        talos_version: c.talos_version,
                        install_disk: c.install_disk,
                        install_image: c.install_image,
                        additional_sans: c.additional_sans,
                        dns_domain: c.dns_domain,
                        output: c.output,
                        force: c.force,
                    })
                }
            };
            match r {
                Ok(files) => {
                    for f in files {
                        println!("created {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kiln: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Serve { config } => {
            init_logging();
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("kiln: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(crate::daemon::serve(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kiln: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
