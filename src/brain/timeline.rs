//! What happened to each MAC kiln has seen, newest last: DHCP decisions,
//! scripts, configs served or refused and why, Talos events. In memory and
//! bounded (entries per MAC, MACs in all, the longest-unseen dropped first),
//! for `kiln explain`; the durable lifecycle lives in the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use crate::model::mac::Mac;

/// Entries kept per MAC.
pub(crate) const PER_MAC: usize = 64;
/// MACs kept (known or not): a flood of made-up MACs costs at most this.
pub(crate) const MACS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Entry {
    /// Unix seconds.
    pub at: u64,
    /// `dhcp`, `script`, `config`, `event`.
    pub kind: String,
    pub text: String,
}

#[derive(Default)]
pub(crate) struct Timeline {
    inner: Mutex<Inner>,
}

/// A MAC's DHCP sightings: when first and last, from what firmware.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Seen {
    pub mac: String,
    pub firmware: String,
    pub vendor_class: String,
    pub first: u64,
    pub last: u64,
}

#[derive(Default)]
struct Inner {
    by_mac: HashMap<Mac, VecDeque<Entry>>,
    seen: HashMap<Mac, Seen>,
    /// MACs by when they were last noted (a counter), least recent first,
    /// and each MAC's place in it: O(log n) a note.
    order: BTreeMap<u64, Mac>,
    stamp: HashMap<Mac, u64>,
    clock: u64,
}

impl Timeline {
    pub(crate) fn note(&self, mac: Mac, kind: &str, text: impl Into<String>) {
        let at = super::now();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.stamp.get(&mac).copied() {
            g.order.remove(&old);
        } else if g.order.len() >= MACS {
            if let Some((_, old)) = g.order.pop_first() {
                g.by_mac.remove(&old);
                g.seen.remove(&old);
                g.stamp.remove(&old);
            }
        }
        g.clock += 1;
        let now = g.clock;
        g.order.insert(now, mac);
        g.stamp.insert(mac, now);
        let e = g.by_mac.entry(mac).or_default();
        if e.len() >= PER_MAC {
            e.pop_front();
        }
        // One line: what came from the network may hold control characters.
        let text: String = text
            .into()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        e.push_back(Entry {
            at,
            kind: kind.to_string(),
            text,
        });
    }

    /// A DHCP packet from `mac` (after [`note`](Self::note), which keeps the MAC).
    pub(crate) fn saw(&self, mac: Mac, firmware: String, vendor_class: &[u8]) {
        let now = super::now();
        let vendor: String = String::from_utf8_lossy(vendor_class)
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !g.by_mac.contains_key(&mac) {
            return;
        }
        let s = g.seen.entry(mac).or_insert(Seen {
            mac: mac.to_string(),
            firmware: String::new(),
            vendor_class: String::new(),
            first: now,
            last: now,
        });
        s.last = now;
        s.firmware = firmware;
        s.vendor_class = vendor;
    }

    /// Every MAC seen on DHCP, newest last.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Seen> = g.seen.values().cloned().collect();
        v.sort_by_key(|s| s.last);
        v
    }

    pub(crate) fn of(&self, mac: &Mac) -> Vec<Entry> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.by_mac
            .get(mac)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Option 93 in words.
pub(crate) fn firmware(arch: Option<u16>, http: bool) -> String {
    let base = match arch {
        None => return "firmware that sent no architecture".into(),
        Some(0) => "BIOS",
        Some(6) => "x86 UEFI",
        Some(7) | Some(9) => "x86-64 UEFI",
        Some(11) => "arm64 UEFI",
        Some(16) => "x86-64 UEFI",
        Some(19) => "arm64 UEFI",
        Some(_) => "",
    };
    let a = arch.unwrap_or_default();
    match (base, http) {
        ("", _) => format!("firmware architecture {a}"),
        (b, true) => format!("{b} HTTP boot (arch {a})"),
        (b, false) => format!("{b} (arch {a})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_mac_and_in_macs() {
        let t = Timeline::default();
        let m: Mac = "52:54:00:00:00:01".parse().unwrap();
        for i in 0..(PER_MAC + 5) {
            t.note(m, "dhcp", format!("n{i}\nforged"));
        }
        let e = t.of(&m);
        assert_eq!(e.len(), PER_MAC);
        assert_eq!(e[0].text, "n5 forged");
        for i in 0..MACS as u32 {
            let b = (i + 2).to_be_bytes();
            t.note(Mac([2, 0, b[0], b[1], b[2], b[3]]), "dhcp", "x");
        }
        assert!(t.of(&m).is_empty(), "the longest-unseen MAC went first");
        // Noting a MAC again makes it the most recent: the next to go is another.
        let second = Mac([2, 0, 0, 0, 0, 2]);
        t.note(second, "dhcp", "again");
        t.note(m, "dhcp", "new");
        assert_eq!(t.of(&second).len(), 2, "kept: noted recently");
        assert_eq!(t.of(&Mac([2, 0, 0, 0, 0, 3])), vec![], "the oldest went");
        assert_eq!(firmware(Some(7), false), "x86-64 UEFI (arch 7)");
        assert_eq!(firmware(Some(16), true), "x86-64 UEFI HTTP boot (arch 16)");
    }
}
