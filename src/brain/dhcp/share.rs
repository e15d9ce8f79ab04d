//! Several daemons on one segment (`store: {backend: etcd}`): each answers
//! the clients whose RFC 3074 hash falls to it among the daemons alive now,
//! as Kea's load-balancing mode splits them. Kea hashes the client
//! identifier when there is one; kiln hashes the MAC, which a PXE ROM and
//! iPXE share (their client identifiers can differ), so every stage of one
//! boot goes to the same daemon.

use crate::model::mac::Mac;

/// RFC 3074 section 6: a "mixing table" of 256 distinct values.
const MIX: [u8; 256] = [
    251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0, 232, 31, 32, 55, 60, 152,
    58, 17, 237, 174, 70, 160, 144, 220, 90, 57, 223, 59, 3, 18, 140, 111, 166, 203, 196, 134, 243,
    124, 95, 222, 179, 197, 65, 180, 48, 36, 15, 107, 46, 233, 130, 165, 30, 123, 161, 209, 23, 97,
    16, 40, 91, 219, 61, 100, 10, 210, 109, 250, 127, 22, 138, 29, 108, 244, 67, 207, 9, 178, 204,
    74, 98, 126, 249, 167, 116, 34, 77, 193, 200, 121, 5, 20, 113, 71, 35, 128, 13, 182, 94, 25,
    226, 227, 199, 75, 27, 41, 245, 230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115, 241,
    73, 88, 105, 39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122, 12, 84, 82,
    163, 44, 139, 228, 236, 205, 242, 217, 11, 187, 146, 159, 64, 86, 239, 195, 42, 106, 198, 118,
    112, 184, 172, 87, 2, 173, 117, 176, 229, 247, 253, 137, 185, 99, 164, 102, 147, 45, 66, 231,
    52, 141, 211, 194, 206, 246, 238, 56, 110, 78, 248, 63, 240, 189, 93, 92, 51, 53, 183, 19, 171,
    72, 50, 33, 104, 101, 69, 8, 252, 83, 120, 76, 135, 85, 54, 202, 125, 188, 213, 96, 235, 136,
    208, 162, 129, 190, 132, 156, 38, 47, 1, 7, 254, 24, 4, 216, 131, 89, 21, 28, 133, 37, 153,
    149, 80, 170, 68, 6, 169, 234, 151,
];

/// RFC 3074's hash: start from the key's length, mix in its bytes last first.
pub(crate) fn rfc3074(key: &[u8]) -> u8 {
    key.iter()
        .rev()
        .fold(key.len() as u8, |h, b| MIX[usize::from(h ^ b)])
}

/// The daemon that answers `mac` among `live` (names, sorted): the hash
/// modulo their number, as Kea's load balancing picks a server.
pub(crate) fn answerer<'a>(mac: &Mac, live: &'a [String]) -> Option<&'a str> {
    if live.is_empty() {
        return None;
    }
    let i = usize::from(rfc3074(&mac.0)) % live.len();
    Some(live[i].as_str())
}

/// This daemon's place among `live` (sorted names) and their number, for
/// the pool's share of each range; (0, 1) when it is not among them (its
/// liveness key is not up yet): the whole range, as alone.
pub(crate) fn place(live: &[String], me: &str) -> (u32, u32) {
    match live.iter().position(|n| n == me) {
        Some(i) => (i as u32, live.len() as u32),
        None => (0, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_a_permutation_and_the_split_is_even() {
        let mut seen = [false; 256];
        for v in MIX {
            assert!(!seen[usize::from(v)], "{v} twice");
            seen[usize::from(v)] = true;
        }
        // By hand from the RFC's definition: one byte k hashes to MIX[1 ^ k].
        assert_eq!(rfc3074(&[0]), MIX[1]);
        assert_eq!(rfc3074(&[7, 1]), MIX[usize::from(MIX[2 ^ 1] ^ 7)]);
        let live = vec!["a".to_string(), "b".to_string()];
        let a = (0..4096u32)
            .filter(|i| {
                let b = i.to_be_bytes();
                answerer(&Mac([2, 0, b[0], b[1], b[2], b[3]]), &live) == Some("a")
            })
            .count();
        assert!((1700..2400).contains(&a), "{a} of 4096 to a");
        assert_eq!(answerer(&Mac([2, 0, 0, 0, 0, 1]), &[]), None);
    }
}
