//! The brain: holds the live inventory and durable state, and decides what each
//! machine gets. Protocol edges ask it; it never touches a socket.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, UnknownMachines};
use crate::dhcp::leases::Pool;
use crate::inventory::{Inventory, Machine};
use crate::ipxe;
use crate::mac::Mac;
use crate::store::{Store, StoreError};

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

    /// The per-machine iPXE script.
    pub fn script(&self, mac: Mac) -> Script {
        let inv = self.inventory();
        let Some(machine) = self.machine_for(&inv, mac) else {
            let why = "not in the inventory (unknown_machines: ignore)";
            return Script {
                body: ipxe::refuse_script(&mac.to_string(), why),
                why: why.into(),
            };
        };
        let Some(profile) = inv.profile(&machine.profile) else {
            let why = format!("profile {:?} is gone", machine.profile);
            return Script {
                body: ipxe::refuse_script(&mac.to_string(), &why),
                why,
            };
        };
        let base = self.cfg.http_base();
        let config_url = format!(
            "{base}/config/{}?uuid=${{uuid}}&mac=${{mac}}",
            mac.hyphenated()
        );
        let body = ipxe::machine_script(&ipxe::BootParams {
            http_base: &base,
            machine: &machine,
            profile,
            config_url: Some(config_url),
            extra_args: Vec::new(),
        });
        Script {
            body,
            why: format!(
                "boot {} as {} with profile {}",
                profile.talos_version, machine.hostname, profile.name
            ),
        }
    }
}
