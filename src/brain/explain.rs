//! `kiln explain MAC|HOST`: the chain of decisions for one machine, in plain
//! words, from what the brain knows: the inventory, its profile and image,
//! the store's lifecycle record and lease, and the timeline of what happened.

use std::fmt::Write as _;

use crate::brain::Provisioner;
use crate::model::config::UnknownMachines;
use crate::model::mac::Mac;

fn clock(at: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Provisioner {
    /// The explanation for `id` (a MAC, or a hostname in the inventory);
    /// None: a hostname kiln does not know.
    pub fn explain(&self, id: &str) -> Option<String> {
        let inv = self.inventory();
        let mac = inv.mac_of(id)?;
        let mut out = self.identity(&inv, mac);
        let timeline = self.timeline.of(&mac);
        let record = self.record(&mac).ok().flatten();
        if let Some(ip) = self.owner_address(&mac) {
            let _ = writeln!(out, "  proven address {ip} (its own DHCP lease or claim)");
        }
        match &record {
            Some(r) => {
                let last = r.last_event.as_ref().map(|e| format!(" (last: {e})"));
                let _ = writeln!(
                    out,
                    "  state {} since {}{}",
                    r.state.as_str(),
                    clock(r.since),
                    last.unwrap_or_default()
                );
            }
            None if timeline.is_empty() => {
                out.push_str("  not seen on the network since kiln started\n");
            }
            None => {}
        }
        if !timeline.is_empty() {
            out.push_str("what happened (since kiln started, newest last):\n");
            for e in &timeline {
                let _ = writeln!(out, "  {} {}: {}", clock(e.at), e.kind, e.text);
            }
        }
        let next = self.next_boot(&inv, mac, record.as_ref(), &timeline);
        let _ = writeln!(out, "next boot: {next}");
        Some(out)
    }

    /// Who `mac` is: its inventory entry, profile and image, or why kiln
    /// does not boot it.
    fn identity(&self, inv: &crate::model::inventory::Inventory, mac: Mac) -> String {
        let mut out = String::new();
        let Some(m) = self.machine_for(inv, mac) else {
            if let Some(host) = inv.retired(&mac) {
                let _ = writeln!(
                    out,
                    "{mac}: retired (its machine {host} was replaced): kiln answers it no more"
                );
                return out;
            }
            let what = match self.cfg.unknown_machines {
                UnknownMachines::Ignore => "kiln does not answer it (unknown_machines: ignore); add it to machines.yaml to boot it",
                UnknownMachines::Hold => "held: its script waits and asks again until it is added to machines.yaml",
                UnknownMachines::Boot => "booted with default_profile",
            };
            let _ = writeln!(out, "{mac}: not in the inventory: {what}");
            return out;
        };
        let _ = write!(out, "{} ({mac}): ", m.hostname);
        let Some(p) = inv.profile(&m.profile) else {
            let _ = writeln!(out, "profile {:?} is missing", m.profile);
            return out;
        };
        let _ = writeln!(
            out,
            "in the inventory, profile {} (role {}, cluster {}, Talos {}, {})",
            p.name,
            p.role.as_str(),
            p.cluster
                .as_deref()
                .unwrap_or("none: maintenance mode, no config"),
            p.talos_version,
            p.arch.as_str()
        );
        let files = crate::brain::assets::boot_files(&self.cfg, p);
        let _ = writeln!(out, "  boots {} + {}", files.kernel, files.initramfs);
        // The installer the config names: the cluster's install_image, if set.
        let host = self.cfg.factory_host();
        let installer = match p.cluster.as_ref().and_then(|c| self.cfg.clusters.get(c)) {
            Some(c) => crate::brain::render::install_image(c, p, host),
            None => p.installer(host),
        };
        let id = p.schematic().id();
        let _ = writeln!(out, "  image schematic {id} (installer {installer})");
        if p.http_boot == crate::model::boot::HttpBoot::Uki {
            let uki =
                crate::brain::uki::file(&self.cfg, p).unwrap_or_else(|| "none pulled yet".into());
            let _ = writeln!(
                out,
                "  UEFI HTTP Boot: the UKI {uki} (schematic {}), whose command line carries: {}",
                crate::brain::uki::schematic(&self.cfg, p).id(),
                crate::brain::uki::kernel_args(&self.cfg, p).join(" ")
            );
        }
        if let Some(ip) = m.ip {
            let _ = writeln!(out, "  fixed address {ip} (machines.yaml)");
        }
        out
    }

    fn next_boot(
        &self,
        inv: &crate::model::inventory::Inventory,
        mac: Mac,
        record: Option<&crate::brain::Record>,
        timeline: &[crate::brain::timeline::Entry],
    ) -> String {
        let Some(m) = self.machine_for(inv, mac) else {
            return "no network boot".into();
        };
        if !record.is_some_and(|r| r.state.installed()) {
            return "the Talos installer (not installed yet)".into();
        }
        let uefi = timeline
            .iter()
            .rev()
            .find(|e| e.kind == "dhcp")
            .is_some_and(|e| e.text.contains("UEFI"));
        let how = inv
            .profile(&m.profile)
            .map(|p| m.local_boot(p, uefi).as_str())
            .unwrap_or("sanboot");
        format!(
            "its disk (installed; local boot by {how}); `kiln machines reinstall {}` installs again",
            m.hostname
        )
    }
}
