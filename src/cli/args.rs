//! kiln's arguments (clap), in talosctl's spirit.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Provision Talos Linux clusters on bare metal"
)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) cmd: Cmd,
}

#[derive(Subcommand)]
pub(super) enum Cmd {
    /// Run the daemon: DHCP, TFTP and HTTP for netbooting the inventory.
    Serve {
        #[command(flatten)]
        at: ConfigArg,
    },
    /// Validate the config, profiles, inventory and boot assets; exit non-zero on any problem.
    Check {
        #[command(flatten)]
        at: ConfigArg,
    },
    /// Print the machine config a MAC would be served (it holds secrets: mind where it goes).
    Render {
        #[command(flatten)]
        at: ConfigArg,
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
        /// Keep watching: redraw on a terminal, print each change otherwise.
        #[arg(short, long)]
        watch: bool,
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
    /// A machine's kernel log, as Talos streamed it to kiln.
    Logs {
        /// A MAC or an inventory hostname.
        machine: String,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The chain of decisions for one machine, in plain words (from the daemon).
    Explain {
        /// A MAC (any machine kiln has seen) or an inventory hostname.
        machine: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Boot assets from the Talos Image Factory: pull, list, prune, import.
    Assets {
        #[command(subcommand)]
        what: AssetsCmd,
    },
    /// Work on config patch files.
    Patch {
        #[command(subcommand)]
        what: PatchCmd,
    },
    /// kiln's state store: move it between redb and etcd.
    Store {
        #[command(subcommand)]
        what: StoreCmd,
    },
}

#[derive(Subcommand)]
pub(super) enum StoreCmd {
    /// Copy every record between state_dir's redb file and the etcd cluster
    /// `store:` names (`backend: etcd`), with kiln stopped. The target must
    /// be empty; both sides are read back and compared.
    Migrate {
        /// Where the records go: etcd (from redb) or redb (from etcd).
        #[arg(long, value_parser = ["etcd", "redb"])]
        to: String,
        #[command(flatten)]
        at: ConfigArg,
    },
    /// Write a new random key for `store.secrets_key` (0600, never over an
    /// existing file): cluster secrets are sealed with it in etcd. Copy the
    /// same file to every daemon.
    Keygen {
        /// Where to write it (e.g. /etc/kiln/secrets.key).
        path: PathBuf,
    },
}

#[derive(Subcommand)]
pub(super) enum AssetsCmd {
    /// Register each profile's schematic with the factory and fetch its
    /// kernel, initramfs and kernel command line into boot_assets/factory/
    /// (resumable; sha256 recorded in a manifest `kiln check` verifies).
    Pull {
        #[command(flatten)]
        at: ConfigArg,
        /// Only this profile (default: every profile naming no kernel of its own).
        #[arg(long, conflicts_with = "all")]
        profile: Option<String>,
        /// Every profile (the default).
        #[arg(long)]
        all: bool,
        /// Architectures to fetch instead of the profiles' own (amd64, arm64).
        #[arg(long, value_delimiter = ',')]
        arch: Vec<String>,
    },
    /// What is cached, and which profiles use it.
    List {
        #[command(flatten)]
        at: ConfigArg,
    },
    /// Remove cached assets no profile uses.
    Prune {
        #[command(flatten)]
        at: ConfigArg,
        #[arg(long)]
        dry_run: bool,
    },
    /// Import assets pulled elsewhere (an air-gapped site): DIR holds
    /// <schematic id>/<version>/manifest.json and the files, checked first.
    Import {
        dir: PathBuf,
        #[command(flatten)]
        at: ConfigArg,
    },
}

#[derive(Subcommand)]
pub(super) enum PatchCmd {
    /// Rewrite a patch written for the v1alpha1 fields Talos v1.14 moved
    /// (machine.kubelet, machine.install, cluster.network, ...) into the v1.14
    /// documents; prints it (with what moved, as comments) or writes -o.
    Migrate {
        file: PathBuf,
        /// The Talos release the patch is for (v1.14 or v1.15).
        #[arg(long)]
        talos_version: String,
        /// For workers, leave out the documents Talos takes on control planes only.
        #[arg(long, value_parser = ["controlplane", "worker"])]
        role: Option<String>,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub(super) struct ApiArgs {
    /// Use the opt-in TCP API on 127.0.0.1:PORT (`api_tcp: true`) with the
    /// bearer token from state_dir/api-token, instead of the Unix socket.
    #[arg(long, global = true)]
    pub(super) api_port: Option<u16>,
    /// The daemon's API socket (default: state_dir/kiln.sock from the config).
    #[arg(long, global = true)]
    pub(super) socket: Option<PathBuf>,
    #[arg(
        short,
        long,
        env = "KILN_CONFIG",
        default_value = "/etc/kiln/kiln.yaml",
        global = true
    )]
    pub(super) config: PathBuf,
}

impl ApiArgs {
    /// Where the daemon listens: the socket in state_dir, unless told
    /// otherwise; with the config, when it had to be read for that.
    pub(super) fn endpoint(
        &self,
    ) -> Result<
        (
            crate::cli::client::Endpoint,
            Option<crate::model::config::Config>,
        ),
        String,
    > {
        use crate::cli::client::Endpoint;
        if let Some(s) = &self.socket {
            return Ok((Endpoint::Socket(s.clone()), None));
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
                let at = Endpoint::Tcp {
                    port,
                    token: token.trim().to_string(),
                };
                Ok((at, Some(cfg)))
            }
            None => Ok((Endpoint::Socket(cfg.api_socket()), Some(cfg))),
        }
    }
}

/// `--config`: kiln.yaml, for the subcommands that read it here.
#[derive(clap::Args)]
pub(super) struct ConfigArg {
    #[arg(
        short,
        long,
        env = "KILN_CONFIG",
        default_value = "/etc/kiln/kiln.yaml"
    )]
    pub(super) config: PathBuf,
}

#[derive(clap::Args)]
pub(super) struct ClientArgs {
    /// Only this cluster's context.
    pub(super) cluster: Option<String>,
    #[command(flatten)]
    pub(super) at: ConfigArg,
    /// Write to this file (0600).
    #[arg(short, long)]
    pub(super) output: Option<PathBuf>,
    /// Merge into this file (default ~/.kube/config or ~/.talos/config), as talosctl kubeconfig does.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub(super) merge: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(super) enum MachinesCmd {
    /// Install Talos again on the machine's next PXE boot (e.g. after a disk swap).
    Reinstall { machine: String },
    /// Mark a machine as failed, for `kiln replace --adopt`.
    MarkFailed { machine: String },
}

#[derive(Subcommand)]
pub(super) enum GenCmd {
    /// Generate a secrets bundle (talosctl's secrets.yaml format, mode 0600).
    Secrets {
        #[arg(short, long, default_value = "secrets.yaml")]
        output_file: PathBuf,
        /// Talos version the secrets are for (v1.8 .. v1.15; default v1.14).
        #[arg(long)]
        talos_version: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Generate controlplane.yaml, worker.yaml and talosconfig.
    Config(Box<ConfigArgs>),
}

#[derive(clap::Args)]
pub(super) struct ConfigArgs {
    /// Cluster name.
    pub(super) cluster_name: String,
    /// Kubernetes API endpoint, e.g. https://192.168.50.200:6443.
    pub(super) cluster_endpoint: String,
    #[arg(long)]
    pub(super) with_secrets: Option<PathBuf>,
    /// Patch for all machines: @file or inline YAML/JSON; repeatable, applied in order.
    #[arg(long = "config-patch")]
    pub(super) config_patch: Vec<String>,
    #[arg(long = "config-patch-control-plane")]
    pub(super) config_patch_control_plane: Vec<String>,
    #[arg(long = "config-patch-worker")]
    pub(super) config_patch_worker: Vec<String>,
    #[arg(long)]
    pub(super) kubernetes_version: Option<String>,
    /// Version contract to generate for (v1.8 .. v1.15; default v1.14, the
    /// current release line; v1.14+ is multi-document).
    #[arg(long)]
    pub(super) talos_version: Option<String>,
    #[arg(long, default_value = "/dev/sda")]
    pub(super) install_disk: String,
    #[arg(long)]
    pub(super) install_image: Option<String>,
    #[arg(long, value_delimiter = ',')]
    pub(super) additional_sans: Vec<String>,
    #[arg(long, default_value = "cluster.local")]
    pub(super) dns_domain: String,
    #[arg(short, long, default_value = ".")]
    pub(super) output: PathBuf,
    #[arg(long)]
    pub(super) force: bool,
}
