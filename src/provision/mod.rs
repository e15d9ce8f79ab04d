//! The brain: holds the live inventory and durable state, and decides what each
//! machine gets. Protocol edges ask it; it never touches a socket.

pub mod adopt;
pub mod bootstrap;
pub mod lifecycle;
pub mod render;
pub mod replace;

pub use lifecycle::{Record, State};

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, UnknownMachines};
use crate::dhcp::leases::Pool;
use crate::inventory::{Inventory, Machine};
use crate::ipxe;
use crate::mac::Mac;
use crate::store::{BootToken, Store, StoreError};
use crate::talos::secrets::Bundle;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Provisioner {
    pub cfg: Config,
    inventory: RwLock<Arc<Inventory>>,
    pub store: Store,
    /// Full-mode address pool, rebuilt from the store on start.
    pub pool: Mutex<Pool>,
    /// Each cluster's secrets.
    pub secrets: BTreeMap<String, Bundle>,
    /// Proxy mode: the address DHCP last saw each MAC use.
    seen: Mutex<HashMap<Mac, Ipv4Addr>>,
}

/// Why a config request was refused (logged; the client gets only the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigDecision {
    Serve { body: String, hostname: String },
    Forbidden(String),
    NotFound(String),
}

/// What a machine's iPXE script does, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub body: String,
    pub why: String,
}

impl Provisioner {
    pub fn new(cfg: Config, inventory: Inventory, store: Store) -> Result<Provisioner, StoreError> {
        let mut pool = Pool::new(store.leases()?);
        pool.set_reservations(inventory.reserved_ips());
        pool.set_retired(inventory.retired_macs());
        Ok(Provisioner {
            cfg,
            inventory: RwLock::new(Arc::new(inventory)),
            store,
            pool: Mutex::new(pool),
            secrets: BTreeMap::new(),
            seen: Mutex::new(HashMap::new()),
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
            }),
            _ => None,
        }
    }

    /// Attach the clusters' secrets (see `render::load_or_create_secrets`).
    pub fn with_secrets(mut self, secrets: BTreeMap<String, Bundle>) -> Provisioner {
        self.secrets = secrets;
        self
    }

    /// DHCP saw `mac` use `ip` (proxy mode has no lease to go by).
    pub fn saw(&self, mac: Mac, ip: Ipv4Addr) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mac, ip);
    }

    /// The address `mac` holds: its lease (full mode) or what DHCP last saw.
    fn address_of(&self, mac: &Mac) -> Option<Ipv4Addr> {
        match self.cfg.dhcp {
            crate::config::DhcpMode::Full(_) => self
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lease_of(mac),
            crate::config::DhcpMode::Proxy => self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(mac)
                .copied(),
        }
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
        let key = mac.to_string();
        self.store
            .update(crate::store::MACHINES, &key, |cur: Option<Record>| {
                let mut r = cur.unwrap_or_else(|| Record::new(mac, hostname, t));
                r.hostname = hostname.to_string();
                let moved = r.advance(to, t);
                if let Some(e) = event {
                    r.last_event = Some(e);
                }
                if ip.is_some() {
                    r.ip = ip;
                }
                if moved {
                    tracing::info!(%mac, hostname, state = r.state.as_str(), "lifecycle");
                }
                (Some(r.clone()), r)
            })
    }

    pub fn record(&self, mac: &Mac) -> Option<Record> {
        self.store
            .get(crate::store::MACHINES, &mac.to_string())
            .ok()
            .flatten()
    }

    pub fn records(&self) -> Vec<Record> {
        self.store.all(crate::store::MACHINES).unwrap_or_default()
    }

    /// `kiln machines reinstall`: the next PXE boot installs again.
    pub fn reinstall(&self, mac: Mac) -> Result<bool, StoreError> {
        let t = now();
        self.store.update(
            crate::store::MACHINES,
            &mac.to_string(),
            |cur: Option<Record>| {
                let found = cur.is_some();
                let r = cur.map(|mut r| {
                    r.state = State::Discovered;
                    r.since = t;
                    r.last_event = Some("reinstall requested".into());
                    r
                });
                (r, found)
            },
        )
    }

    /// Which machine sent from `ip`: a fixed address, a lease, or what DHCP saw.
    pub fn mac_at(&self, ip: Ipv4Addr) -> Option<Mac> {
        let inv = self.inventory();
        if let Some(m) = inv.machines().iter().find(|m| m.ip == Some(ip)) {
            return Some(m.mac);
        }
        if let Some(m) = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mac_of(ip)
        {
            return Some(m);
        }
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, v)| **v == ip)
            .map(|(k, _)| *k)
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
            tracing::debug!(%peer, type_url, "event from an address no machine holds");
            return Ok(None);
        };
        let inv = self.inventory();
        let Some(machine) = self.machine_for(&inv, mac) else {
            return Ok(None);
        };
        let (state, what) = lifecycle::interpret(type_url, value);
        tracing::debug!(%mac, hostname = %machine.hostname, "event: {what}");
        let to = state.unwrap_or(State::Discovered);
        self.note(mac, &machine.hostname, to, Some(what), Some(peer))
            .map(Some)
    }

    /// The per-machine iPXE script, fetched from `peer`. For machines with a
    /// cluster it carries `talos.config=` with a fresh per-boot token.
    pub fn script(&self, mac: Mac, peer: Option<Ipv4Addr>) -> Script {
        let refuse = |why: String| Script {
            body: ipxe::refuse_script(&mac.to_string(), &why),
            why,
        };
        let inv = self.inventory();
        let Some(machine) = self.machine_for(&inv, mac) else {
            return refuse("not in the inventory (unknown_machines: ignore)".into());
        };
        let Some(profile) = inv.profile(&machine.profile) else {
            return refuse(format!("profile {:?} is gone", machine.profile));
        };
        if let Some(r) = self.record(&mac).filter(|r| r.state.installed()) {
            return Script {
                body: ipxe::local_boot_script(&machine.hostname),
                why: format!(
                    "local boot: installed ({}) since {}",
                    r.state.as_str(),
                    r.since
                ),
            };
        }
        if let Err(e) = self.note(
            mac,
            &machine.hostname,
            State::Booting,
            Some("iPXE script served".into()),
            peer,
        ) {
            return refuse(format!("cannot record the boot: {e}"));
        }
        let base = self.cfg.http_base();
        let config_url = match &profile.cluster {
            Some(_) => {
                let token = new_token();
                let t = BootToken {
                    mac,
                    ip: peer,
                    expires: now() + self.cfg.boot_token_ttl.as_secs(),
                };
                if let Err(e) = self.store.put_token(&token, &t, now()) {
                    return refuse(format!("cannot record a boot token: {e}"));
                }
                // Talos fills ${uuid} and ${mac} in query values; iPXE expands them first.
                Some(format!(
                    "{base}/config/{}?token={token}&uuid=${{uuid}}&mac=${{mac}}",
                    mac.hyphenated()
                ))
            }
            None => None,
        };
        let mut extra = Vec::new();
        if profile.cluster.is_some() {
            extra.push(format!("talos.events.sink={}", self.cfg.events_endpoint()));
        }
        if profile.stable_interface_names {
            extra.push("net.ifnames=0".to_string());
        }
        let body = ipxe::machine_script(&ipxe::BootParams {
            http_base: &base,
            machine: &machine,
            profile,
            config_url,
            extra_args: extra,
        });
        Script {
            body,
            why: format!(
                "boot {} as {} with profile {}",
                profile.talos_version, machine.hostname, profile.name
            ),
        }
    }

    /// The rendered config for `mac`, if `token` and `peer` entitle it.
    pub fn config(&self, mac: Mac, token: &str, peer: Ipv4Addr) -> ConfigDecision {
        use ConfigDecision::*;
        let t = match self.store.token(token) {
            Ok(Some(t)) => t,
            Ok(None) => return Forbidden("unknown boot token".into()),
            Err(e) => return Forbidden(format!("token lookup failed: {e}")),
        };
        if t.mac != mac {
            return Forbidden(format!("token belongs to {}", t.mac));
        }
        if t.expires <= now() {
            return Forbidden("token expired".into());
        }
        let known = self.address_of(&mac);
        if Some(peer) != known && Some(peer) != t.ip {
            return Forbidden(format!(
                "request from {peer}, but {mac} holds {}",
                known
                    .or(t.ip)
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "no address".into())
            ));
        }
        let inv = self.inventory();
        let in_inventory = inv.machine(&mac).is_some();
        let Some(machine) = self.machine_for(&inv, mac) else {
            return NotFound("not in the inventory".into());
        };
        let Some(profile) = inv.profile(&machine.profile) else {
            return NotFound(format!("profile {:?} is gone", machine.profile));
        };
        if !in_inventory && profile.role == crate::inventory::Role::Controlplane {
            // Control-plane configs carry the cluster's CA keys.
            return Forbidden("control-plane configs go only to machines in the inventory".into());
        }
        match render::render(&self.cfg, &self.secrets, &machine, profile) {
            Ok(docs) => {
                if let Err(e) = self.note(
                    mac,
                    &machine.hostname,
                    State::ConfigServed,
                    Some("config served".into()),
                    Some(peer),
                ) {
                    return Forbidden(format!("cannot record the config fetch: {e}"));
                }
                Serve {
                    body: crate::talos::generate::to_yaml(&docs),
                    hostname: machine.hostname,
                }
            }
            Err(e) => NotFound(format!("cannot render: {e}")),
        }
    }
}

/// 128 random bits, hex.
fn new_token() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
