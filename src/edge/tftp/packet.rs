//! TFTP on the wire (RFC 1350, options RFC 2347-2349, windowsize RFC 7440):
//! requests parsed strictly, replies built. Nothing here panics on input.

use std::fmt;

pub(crate) const RRQ: u16 = 1;
pub(crate) const WRQ: u16 = 2;
pub(crate) const DATA: u16 = 3;
pub(crate) const ERROR: u16 = 5;
pub(crate) const OACK: u16 = 6;

/// Transfer modes (RFC 1350 5); `mail` is obsolete and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Octet,
    Netascii,
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) write: bool,
    pub(crate) filename: String,
    pub(crate) mode: Mode,
    /// Options as sent, names lower-cased (RFC 2347: case-insensitive).
    pub(crate) options: Vec<(String, String)>,
}

/// Why a datagram is not a request kiln can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadRequest {
    /// Not a request at all (a stray ACK, DATA...): ignored silently.
    NotRequest,
    /// A request kiln answers with a TFTP error.
    Refused(ErrorCode, String),
}

/// TFTP error codes kiln sends (RFC 1350 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRequest::NotRequest => f.write_str("not a request"),
            BadRequest::Refused(_, m) => f.write_str(m),
        }
    }
}

/// Split NUL-terminated strings; the last must be terminated too.
fn strings(b: &[u8]) -> Option<Vec<&[u8]>> {
    if b.last() != Some(&0) {
        return None;
    }
    Some(b[..b.len() - 1].split(|c| *c == 0).collect())
}

pub(crate) fn parse_request(buf: &[u8]) -> Result<Request, BadRequest> {
    let refused = |m: String| BadRequest::Refused(ErrorCode::IllegalOperation, m);
    let op = match buf {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => return Err(BadRequest::NotRequest),
    };
    if op != RRQ && op != WRQ {
        return Err(BadRequest::NotRequest);
    }
    let parts = strings(&buf[2..]).ok_or_else(|| refused("request not NUL-terminated".into()))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let [name, mode, opts @ ..] = parts.as_slice() else {
        return Err(refused("request without a filename and mode".into()));
    };
    if name.is_empty() {
        return Err(refused("empty filename".into()));
    }
    let mode = match text(mode).to_ascii_lowercase().as_str() {
        "octet" => Mode::Octet,
        "netascii" => Mode::Netascii,
        other => {
            // Named, but short and printable: an error reply is never larger
            // than what a client could send for it.
            let shown: String = other
                .chars()
                .take(16)
                .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                .collect();
            return Err(refused(format!(
                "transfer mode \"{shown}\" is not supported (octet or netascii)"
            )));
        }
    };
    if opts.len() % 2 != 0 {
        return Err(refused("an option without a value".into()));
    }
    let options = opts
        .chunks(2)
        .map(|kv| (text(kv[0]).to_ascii_lowercase(), text(kv[1])))
        .collect();
    Ok(Request {
        write: op == WRQ,
        filename: text(name),
        mode,
        options,
    })
}

/// The block an ACK acknowledges, if `buf` is one.
pub(crate) fn parse_ack(buf: &[u8]) -> Option<u16> {
    match buf {
        [0, 4, a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Whether `buf` is an ERROR from the client (it gives up).
pub(crate) fn is_error(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf[..2] == ERROR.to_be_bytes()
}

pub(crate) fn error(code: ErrorCode, msg: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(5 + msg.len());
    b.extend_from_slice(&ERROR.to_be_bytes());
    b.extend_from_slice(&(code as u16).to_be_bytes());
    b.extend_from_slice(msg.as_bytes());
    b.push(0);
    b
}

pub(crate) fn oack(opts: &[(&str, String)]) -> Vec<u8> {
    let mut b = OACK.to_be_bytes().to_vec();
    for (k, v) in opts {
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b
}

/// Netascii (RFC 764, as RFC 1350 uses it): LF becomes CR LF, CR becomes
/// CR NUL. Streaming: a block boundary may fall anywhere.
pub(crate) fn to_netascii(data: &[u8], out: &mut Vec<u8>) {
    for &c in data {
        match c {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let r =
            parse_request(b"\0\x01undionly.kpxe\0OCTET\0blksize\x001468\0TSize\x000\0").unwrap();
        assert_eq!(r.filename, "undionly.kpxe");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(
            r.options,
            vec![
                ("blksize".into(), "1468".into()),
                ("tsize".into(), "0".into())
            ]
        );
        assert_eq!(parse_request(b"\0\x04\0\x01"), Err(BadRequest::NotRequest));
        for bad in [
            &b"\0\x01a\0mail\0"[..],
            b"\0\x01a\0octet",
            b"\0\x01\0octet\0",
            b"\0\x01a\0octet\0blksize\0",
            b"\0",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        let e = parse_request(b"\0\x01a\0mail\0").unwrap_err().to_string();
        assert!(e.contains("mail"), "{e}");
    }

    #[test]
    fn netascii_translation() {
        let mut out = Vec::new();
        to_netascii(b"a\nb\rc\r\n", &mut out);
        assert_eq!(out, b"a\r\nb\r\0c\r\0\r\n");
    }
}
