//! MAC addresses as operators write them: `52:54:00:aa:bb:01`, `52-54-00-AA-BB-01`,
//! `5254.00aa.bb01` and `525400aabb01` all denote the same machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit hardware address; displays in the canonical lower-case colon form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed MAC address {0:?}: expected six hex octets such as 52:54:00:aa:00:01")]
pub struct MacError(pub String);

impl Mac {
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// iPXE's `${mac:hexhyp}` form, used in URLs: `52-54-00-aa-00-01`.
    pub fn hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }

    pub fn from_slice(b: &[u8]) -> Option<Mac> {
        let a: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(Mac(a))
    }
}

impl FromStr for Mac {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        // macaddr understands the colon, hyphen and dotted forms.
        if let Ok(m) = macaddr::MacAddr6::from_str(t) {
            return Ok(Mac(m.into_array()));
        }
        // Bare 12 hex digits, as some BMCs and spreadsheets print them.
        if t.len() == 12 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut out = [0u8; 6];
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                    .map_err(|_| MacError(s.to_string()))?;
            }
            return Ok(Mac(out));
        }
        Err(MacError(s.to_string()))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_and_case_variants_are_one_machine() {
        let want = Mac([0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01]);
        for s in [
            "52:54:00:aa:bb:01",
            "52:54:00:AA:bb:01",
            "52-54-00-aa-bb-01",
            "5254.00aa.bb01",
            "525400AABB01",
            " 52:54:00:aa:bb:01 ",
        ] {
            assert_eq!(s.parse::<Mac>().unwrap(), want, "{s}");
        }
        assert_eq!(want.to_string(), "52:54:00:aa:bb:01");
        assert_eq!(want.hyphenated(), "52-54-00-aa-bb-01");
    }

    #[test]
    fn malformed_is_rejected_with_the_input_named() {
        for s in [
            "52:54:00:aa:bb",
            "zz:54:00:aa:bb:01",
            "",
            "52:54:00:aa:bb:01:02",
        ] {
            let e = s.parse::<Mac>().unwrap_err();
            assert!(e.to_string().contains("malformed MAC"), "{e}");
        }
    }
}
