//! The brain: holds the live inventory and durable state, and decides what each
//! machine gets. Protocol edges ask it; it never touches a socket.
//! May import: talos, store, model.

pub(crate) mod adopt;
pub(crate) mod assets;
pub(crate) mod bootstrap;
pub(crate) mod check;
pub(crate) mod dhcp;
pub(crate) mod error;
mod explain;
pub mod factory;
pub(crate) mod ipxe;
pub(crate) mod kmsg;
pub(crate) mod lifecycle;
pub(crate) mod manual;
pub(crate) mod owner;
pub(crate) mod ratelog;
pub(crate) mod release;
pub mod render;
pub(crate) mod replace;
pub mod secrets;
pub(crate) mod timeline;
pub(crate) mod uki;

pub use crate::store::machines::{Record, State};

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};

use crate::brain::dhcp::pool::Pool;
use crate::model::config::{Config, UnknownMachines};
use crate::model::inventory::{Inventory, Machine};
use crate::model::mac::Mac;
use crate::store::tokens::BootToken;
use crate::store::{Store, StoreError};
use crate::talos::secrets::Bundle;

/// Unix seconds now: the store's clock (`store::unix_now`).
pub fn now() -> u64 {
    crate::store::unix_now()
}

pub struct Provisioner {
    pub cfg: Config,
    inventory: RwLock<Arc<Inventory>>,
    pub store: Store,
    /// Full-mode address pool, rebuilt from the store on start.
    pool: Arc<Mutex<Pool>>,
    /// The pool's durable changes, submitted under its lock (decision order).
    leases: crate::store::leases::LeaseWriter,
    /// Each cluster's secrets.
    pub secrets: BTreeMap<String, Bundle>,
    /// Who DHCP proved holds which address (see `owner`).
    owners: owner::Owners,
    /// What happened to each MAC, for `kiln explain` (bounded, in memory).
    pub(crate) timeline: timeline::Timeline,
    /// Each machine's kernel log (`kiln logs`), under state_dir.
    kernel_logs: kmsg::KernelLogs,
}

/// Why a config request was refused (logged; the client gets only the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigDecision {
    Serve { body: String, hostname: String },
    Forbidden(String),
    NotFound(String),
}

impl ConfigDecision {
    /// A short name for metrics (`kiln_configs_total{reason}`), from the
    /// refusals `Provisioner::config` writes.
    pub fn reason(&self) -> &'static str {
        let why = match self {
            ConfigDecision::Serve { .. } => return "ok",
            ConfigDecision::Forbidden(w) | ConfigDecision::NotFound(w) => w.as_str(),
        };
        for (prefix, key) in [
            ("unknown boot token", "unknown_token"),
            ("token lookup failed", "store_error"),
            ("token belongs to", "token_of_another_mac"),
            ("token expired", "token_expired"),
            ("request from", "address_not_proven"),
            ("not in the inventory", "unknown_machine"),
            ("SMBIOS UUID", "uuid_mismatch"),
            ("profile", "profile_gone"),
            ("control-plane configs", "control_plane_unknown_machine"),
            ("cannot record", "store_error"),
            ("cannot render", "render_failed"),
        ] {
            if why.starts_with(prefix) {
                return key;
            }
        }
        "other"
    }
}

/// What a machine's iPXE script does, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub body: String,
    pub why: String,
    /// The script refuses to boot (logged as a refusal, rate limited).
    pub refused: bool,
    /// Answer HTTP 404 instead of the script (`local_boot: http-404`).
    pub not_found: bool,
}

impl Provisioner {
    pub fn new(cfg: Config, inventory: Inventory, store: Store) -> Result<Provisioner, StoreError> {
        let (mut pool, stale) = Pool::new(store.leases().all()?);
        if !stale.is_empty() {
            tracing::info!(
                rows = stale.len(),
                "freeing lease rows a MAC left behind when it moved"
            );
            store.leases().apply(&stale)?;
        }
        pool.set_reservations(inventory.reserved_ips());
        pool.set_retired(inventory.retired_macs());
        let owners = owner::Owners::default();
        if matches!(cfg.dhcp, crate::model::config::DhcpMode::Proxy) {
            // Renewals go to the LAN's server, unseen: after a restart, the
            // addresses recorded from proven requests stand until a new claim.
            for r in store.machines().all()? {
                if let Some(ip) = r.ip {
                    owners.seed(r.mac, ip);
                }
            }
        }
        let cfg_state_dir = cfg.state_dir.clone();
        let pool = Arc::new(Mutex::new(pool));
        if matches!(cfg.dhcp, crate::model::config::DhcpMode::Full(_)) {
            // With peers on a shared store, what they hand out is held here too.
            let learner = pool.clone();
            store.leases().follow(move |l| {
                learner
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .learn(&l, now());
            });
        }
        Ok(Provisioner {
            cfg,
            inventory: RwLock::new(Arc::new(inventory)),
            pool,
            leases: crate::store::leases::LeaseWriter::start(store.clone())
                .map_err(|e| StoreError::Interrupted(format!("starting the lease writer: {e}")))?,
            store,
            secrets: BTreeMap::new(),
            owners,
            timeline: timeline::Timeline::default(),
            kernel_logs: kmsg::KernelLogs::new(&cfg_state_dir),
        })
    }

    pub fn inventory(&self) -> Arc<Inventory> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the
        // Arc inside is still whole.
        self.inventory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swap in a newly validated inventory.
    pub fn replace_inventory(&self, inv: Inventory) {
        {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.set_reservations(inv.reserved_ips());
            pool.set_retired(inv.retired_macs());
        }
        *self.inventory.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inv);
    }

    /// The machine entry a MAC boots as: its own, or the default profile's for
    /// unknown MACs when `unknown_machines: boot`.
    pub fn machine_for(&self, inv: &Inventory, mac: Mac) -> Option<Machine> {
        if let Some(m) = inv.machine(&mac) {
            return Some(m.clone());
        }
        if inv.retired(&mac).is_some() {
            return None;
        }
        match (&self.cfg.unknown_machines, &self.cfg.default_profile) {
            (UnknownMachines::Boot, Some(p)) => Some(Machine {
                mac,
                hostname: format!("talos-{}", mac.hyphenated().replace('-', "")),
                profile: p.clone(),
                ip: None,
                uuid: None,
                boot: Default::default(),
            }),
            _ => None,
        }
    }

    /// One kernel log line from `mac` (attributed by its proven address).
    pub fn kernel_log(&self, mac: Mac, line: &str) -> std::io::Result<()> {
        self.kernel_logs.append(&mac, line)
    }

    /// `id`'s kernel log from line `since` on, and the number of lines; None:
    /// no such machine.
    pub fn kernel_log_lines(&self, id: &str, since: usize) -> Option<(Vec<String>, usize)> {
        let mac = self.inventory().mac_of(id)?;
        Some(self.kernel_logs.read(&mac, since))
    }

    /// Set the state gauges (`kiln_machine_state`, `kiln_dhcp_leases`,
    /// `kiln_cluster_bootstrap_state`) from what the brain knows now; called
    /// at each scrape.
    pub fn observe(&self) {
        let m = &crate::metrics::METRICS;
        let inv = self.inventory();
        m.machine_state.reset();
        for r in self.records() {
            let cluster = inv
                .machine(&r.mac)
                .and_then(|mc| inv.profile(&mc.profile))
                .and_then(|p| p.cluster.clone())
                .unwrap_or_default();
            for s in crate::store::machines::State::ALL {
                m.machine_state
                    .with_label_values(&[cluster.as_str(), r.hostname.as_str(), s.as_str()])
                    .set(i64::from(s == r.state));
            }
        }
        m.dhcp_leases.reset();
        if let crate::model::config::DhcpMode::Full(full) = &self.cfg.dhcp {
            let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            for s in &full.subnets {
                let (bound, free) = pool.counts(s, now());
                let range = format!("{}-{}", s.range.0, s.range.1);
                m.dhcp_leases
                    .with_label_values(&[range.as_str(), "bound"])
                    .set(bound as i64);
                m.dhcp_leases
                    .with_label_values(&[range.as_str(), "free"])
                    .set(free as i64);
            }
        }
        m.bootstrap_state.reset();
        for name in self.cfg.clusters.keys() {
            let rec = self.store.clusters().find(name).ok().flatten();
            let state = match &rec {
                Some(r) if r.bootstrapped_at.is_some() => "done",
                Some(r) if r.bootstrap_node.is_some() => "decided",
                _ => "pending",
            };
            for s in ["pending", "decided", "done"] {
                m.bootstrap_state
                    .with_label_values(&[name.as_str(), s])
                    .set(i64::from(s == state));
            }
        }
    }

    /// Attach the clusters' secrets (see `render::load_or_create_secrets`).
    pub fn with_secrets(mut self, secrets: BTreeMap<String, Bundle>) -> Provisioner {
        self.secrets = secrets;
        self
    }

    /// Move `mac` forward in its lifecycle (durably); returns the record.
    pub fn note(
        &self,
        mac: Mac,
        hostname: &str,
        to: State,
        event: Option<String>,
        ip: Option<Ipv4Addr>,
    ) -> Result<Record, StoreError> {
        let t = now();
        self.store.machines().modify(&mac, |cur| {
            let r = cur.get_or_insert_with(|| Record::new(mac, hostname, t));
            r.hostname = hostname.to_string();
            let moved = r.advance(to, t);
            if let Some(e) = &event {
                r.last_event = Some(e.clone());
            }
            if ip.is_some() {
                r.ip = ip;
            }
            if moved {
                tracing::info!(%mac, hostname, state = r.state.as_str(), "lifecycle");
            }
            r.clone()
        })
    }

    /// The machine's record; unreadable is an error, never "never seen".
    pub fn record(&self, mac: &Mac) -> Result<Option<Record>, StoreError> {
        self.store.machines().get(mac)
    }

    /// Every machine record, for decisions: unreadable is an error.
    pub fn try_records(&self) -> Result<Vec<Record>, StoreError> {
        self.store.machines().all()
    }

    /// Every machine record, for views and candidate lists (an error is
    /// logged and lists none, so nothing is acted on).
    pub fn records(&self) -> Vec<Record> {
        self.store.machines().all().unwrap_or_else(|e| {
            tracing::error!("machine records: {e}");
            Vec::new()
        })
    }

    /// `kiln machines reinstall`: the next PXE boot installs again.
    pub fn reinstall(&self, mac: Mac) -> Result<bool, StoreError> {
        let t = now();
        self.store.tokens().void(&mac)?;
        self.store.machines().modify(&mac, |cur| match cur {
            Some(r) => {
                r.state = State::Discovered;
                r.since = t;
                r.last_event = Some("reinstall requested".into());
                true
            }
            None => false,
        })
    }

    /// A Talos event from `peer`: advance the sender's lifecycle. Returns the
    /// machine's record, or None for events from addresses kiln cannot place.
    pub fn event(
        &self,
        peer: Ipv4Addr,
        type_url: &str,
        value: &[u8],
    ) -> Result<Option<Record>, StoreError> {
        let Some(mac) = self.mac_at(peer) else {
            crate::refusal!(
                owner::EVENT_REFUSALS,
                %peer,
                type_url,
                dropped_total = owner::EVENT_REFUSALS.total(),
                "event dropped: {peer} is no machine's DHCP-proven address"
            );
            crate::metrics::event_dropped("unproven_address");
            return Ok(None);
        };
        let inv = self.inventory();
        let Some(machine) = self.machine_for(&inv, mac) else {
            crate::metrics::event_dropped("unknown_machine");
            return Ok(None);
        };
        // The event's type without its package (`machine.SequenceEvent` → `SequenceEvent`).
        let kind = type_url.rsplit(['/', '.']).next().unwrap_or("unknown");
        crate::metrics::event(
            if kind.len() <= 64 && kind.chars().all(|c| c.is_ascii_alphanumeric()) {
                kind
            } else {
                "other"
            },
        );
        let (state, what) = lifecycle::interpret(type_url, value);
        tracing::debug!(%mac, hostname = %machine.hostname, "event: {what}");
        self.timeline.note(mac, "event", what.clone());
        let to = state.unwrap_or(State::Discovered);
        self.note(mac, &machine.hostname, to, Some(what), Some(peer))
            .map(Some)
    }

    /// The per-machine iPXE script, fetched from `peer`. For machines with a
    /// cluster it carries `talos.config=` with a fresh per-boot token, but only
    /// when `peer` is the address DHCP proved is `mac`'s.
    pub fn script(&self, mac: Mac, peer: Option<Ipv4Addr>, uefi: bool) -> Script {
        let refuse = |why: String| Script {
            body: ipxe::refuse_script(&mac.to_string(), &why),
            why,
            refused: true,
            not_found: false,
        };
        let inv = self.inventory();
        let Some(machine) = self.machine_for(&inv, mac) else {
            if self.cfg.unknown_machines == UnknownMachines::Hold && inv.retired(&mac).is_none() {
                return Script {
                    body: ipxe::hold_script(&self.cfg.http_base(), &mac.to_string(), 30),
                    why: "not in the inventory: holding (unknown_machines: hold)".into(),
                    refused: false,
                    not_found: false,
                };
            }
            return refuse("not in the inventory (unknown_machines: ignore)".into());
        };
        let Some(profile) = inv.profile(&machine.profile) else {
            return refuse(format!("profile {:?} is gone", machine.profile));
        };
        let rec = match self.record(&mac) {
            Ok(r) => r,
            Err(e) => return refuse(format!("machine record unreadable: {e}")),
        };
        if let Some(r) = rec.filter(|r| r.state.installed()) {
            let method = machine.local_boot(profile, uefi);
            return Script {
                body: ipxe::local_boot_script(&machine.hostname, method),
                why: format!(
                    "local boot: installed ({}) since {}, by {}",
                    r.state.as_str(),
                    r.since,
                    method.as_str()
                ),
                refused: false,
                not_found: method == crate::model::inventory::LocalBoot::Http404,
            };
        }
        let owner = self.owner_address(&mac);
        if profile.cluster.is_some() && (peer.is_none() || peer != owner) {
            return refuse(withheld(&machine.hostname, mac, peer, owner));
        }
        if let Err(e) = self.note(
            mac,
            &machine.hostname,
            State::Booting,
            Some("iPXE script served".into()),
            // Only a proven address is recorded (it is trusted after a restart).
            peer.filter(|p| Some(*p) == owner),
        ) {
            return refuse(format!("cannot record the boot: {e}"));
        }
        let base = self.cfg.http_base();
        let config_url = match (&profile.cluster, owner) {
            (Some(_), Some(ip)) => match self.config_url(mac, ip) {
                Ok(u) => Some(u),
                Err(e) => return refuse(format!("cannot record a boot token: {e}")),
            },
            _ => None,
        };
        let mut extra = Vec::new();
        if profile.cluster.is_some() {
            extra.push(format!("talos.events.sink={}", self.cfg.events_endpoint()));
            extra.push(format!("talos.logging.kernel={}", self.cfg.kmsg_url()));
        }
        if profile.stable_interface_names {
            extra.push("net.ifnames=0".to_string());
        }
        let body = ipxe::machine_script(&ipxe::BootParams {
            http_base: &base,
            machine: &machine,
            profile,
            files: crate::brain::assets::boot_files(&self.cfg, profile),
            config_url,
            extra_args: extra,
        });
        Script {
            body,
            why: format!(
                "boot {} as {} with profile {}",
                profile.talos_version, machine.hostname, profile.name
            ),
            refused: false,
            not_found: false,
        }
    }

    /// A fresh per-boot token for `mac` at `ip` (voiding earlier boots'), and
    /// the `talos.config=` URL that carries it.
    fn config_url(&self, mac: Mac, ip: Ipv4Addr) -> Result<String, StoreError> {
        let token = new_token();
        let t = BootToken {
            mac,
            ip: Some(ip),
            expires: now() + self.cfg.boot_token_ttl.as_secs(),
        };
        self.store.tokens().put(&token, &t, now())?;
        // Talos fills ${uuid} and ${mac} in query values; iPXE expands them first.
        Ok(format!(
            "{}/config/{}?token={token}&uuid=${{uuid}}&mac=${{mac}}",
            self.cfg.http_base(),
            mac.hyphenated()
        ))
    }
}

/// Why a script carries no config: the requester is not the MAC's proven address.
fn withheld(host: &str, mac: Mac, peer: Option<Ipv4Addr>, owner: Option<Ipv4Addr>) -> String {
    let from = peer.map_or("an address that is not IPv4".into(), |p| p.to_string());
    match owner {
        Some(o) => format!("config withheld ({host}): request from {from}, but DHCP proved {mac} is {o}"),
        None => format!("config withheld ({host}): request from {from}, but {mac} holds no DHCP-proven address (boot it through DHCP first)"),
    }
}

/// 128 random bits, hex.
fn new_token() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    crate::model::hex::encode(&b)
}
