//! The brain: holds the live inventory and durable state, and decides what each
//! machine gets. Protocol edges ask it; it never touches a socket.

pub mod render;

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
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_reservations(inv.reserved_ips());
        *self.inventory.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inv);
    }

    /// The machine entry a MAC boots as: its own, or the default profile's for
    /// unknown MACs when `unknown_machines: boot`.
    pub fn machine_for(&self, inv: &Inventory, mac: Mac) -> Option<Machine> {
        if let Some(m) = inv.machine(&mac) {
            return Some(m.clone());
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
            Ok(docs) => Serve {
                body: crate::talos::generate::to_yaml(&docs),
                hostname: machine.hostname,
            },
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
