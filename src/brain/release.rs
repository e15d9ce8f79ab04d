//! Releasing a machine's config: to the holder of a per-boot token minted
//! for the address DHCP proved is the MAC's (iPXE's `talos.config=` line), or,
//! for a profile that boots a UKI (no kernel line, no token), to that proven
//! address alone.

use std::net::Ipv4Addr;

use super::{now, render, ConfigDecision, Provisioner, State};
use crate::model::boot::HttpBoot;
use crate::model::mac::Mac;

impl Provisioner {
    /// The rendered config for `mac`, if `token` and `peer` entitle it: the
    /// token was minted for `mac`, is unexpired, and `peer` is both the address
    /// it was minted for and the one DHCP proves is `mac`'s now.
    pub fn config(&self, mac: Mac, token: &str, peer: Ipv4Addr, uuid: &str) -> ConfigDecision {
        use ConfigDecision::*;
        let t = match self.store.tokens().get(token) {
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
        let owner = self.owner_address(&mac);
        if Some(peer) != owner || Some(peer) != t.ip {
            return not_the_owner(mac, peer, owner);
        }
        self.release(mac, peer, uuid)
    }

    /// The config for `mac` asked without a token, as a UKI's embedded
    /// `talos.config=.../config?mac=${mac}&uuid=${uuid}` asks: only for a
    /// machine in the inventory whose profile boots a UKI, and only from the
    /// address DHCP proved is `mac`'s (its lease, or its proxyDHCP request).
    pub fn config_by_lease(&self, mac: Mac, peer: Ipv4Addr, uuid: &str) -> ConfigDecision {
        use ConfigDecision::*;
        let uki = {
            let inv = self.inventory();
            inv.machine(&mac)
                .and_then(|m| inv.profile(&m.profile))
                .is_some_and(|p| p.http_boot == HttpBoot::Uki)
        };
        if !uki {
            return Forbidden(
                "no boot token, and the machine's profile does not boot a UKI (http_boot: uki)"
                    .into(),
            );
        }
        let owner = self.owner_address(&mac);
        if Some(peer) != owner {
            return not_the_owner(mac, peer, owner);
        }
        self.release(mac, peer, uuid)
    }

    /// `peer` is entitled: render and hand out `mac`'s config.
    fn release(&self, mac: Mac, peer: Ipv4Addr, uuid: &str) -> ConfigDecision {
        use ConfigDecision::*;
        let inv = self.inventory();
        let in_inventory = inv.machine(&mac).is_some();
        let Some(machine) = self.machine_for(&inv, mac) else {
            return NotFound("not in the inventory".into());
        };
        if let Some(want) = &machine.uuid {
            if !want.eq_ignore_ascii_case(uuid) {
                return Forbidden(format!("SMBIOS UUID {uuid:?} is not the pinned {want}"));
            }
        }
        let Some(profile) = inv.profile(&machine.profile) else {
            return NotFound(format!("profile {:?} is gone", machine.profile));
        };
        if !in_inventory && profile.role == crate::model::inventory::Role::Controlplane {
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
                    body: crate::model::yaml::to_yaml(&docs),
                    hostname: machine.hostname,
                }
            }
            Err(e) => NotFound(format!("cannot render: {e}")),
        }
    }
}

/// Refused: `peer` is not the address DHCP proved is `mac`'s.
fn not_the_owner(mac: Mac, peer: Ipv4Addr, owner: Option<Ipv4Addr>) -> ConfigDecision {
    ConfigDecision::Forbidden(format!(
        "request from {peer}, but {mac} holds {}",
        owner
            .map(|i| i.to_string())
            .unwrap_or_else(|| "no DHCP-proven address".into())
    ))
}
