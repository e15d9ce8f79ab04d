//! Wire <-> typed messages. Decoding validates everything dhcproto would trip over
//! (it asserts on some option lengths in debug builds and underflows on others), so
//! no packet from the network can panic kiln; encoding builds replies with dhcproto.

use dhcproto::v4::{self, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::brain::dhcp::msg::{ClientClass, Reply, Request};
use crate::model::mac::Mac;

/// Smallest BOOTP message: 236-byte header plus the 4-byte magic cookie.
const MIN_LEN: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// The BROADCAST bit of `flags` (RFC 2131 2).
pub const BROADCAST: u16 = 0x8000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{0} bytes is shorter than a DHCP message (240)")]
    TooShort(usize),
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    #[error("hardware type {htype} with length {hlen} is not Ethernet")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("bad magic cookie {0:?}")]
    BadMagic([u8; 4]),
    #[error("option {code} runs past the end of the packet")]
    Truncated { code: u8 },
    #[error("option {code} has length {len}, expected {want}")]
    BadOptionLength {
        code: u8,
        len: usize,
        want: &'static str,
    },
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
    #[error("undecodable: {0}")]
    Malformed(String),
}

/// Check every option's length against what the decoder will read, joining
/// RFC 3396 continuations the way dhcproto does (consecutive same-code fragments).
fn validate_options(mut b: &[u8]) -> Result<(), DecodeError> {
    let mut run: Option<(u8, usize)> = None;
    let check = |code: u8, len: usize| -> Result<(), DecodeError> {
        let bad = |want| Err(DecodeError::BadOptionLength { code, len, want });
        match code {
            // read_u8 / read_bool
            19 | 20 | 23 | 27 | 29 | 30 | 31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 | 116 | 156
            | 157
                if len < 1 =>
            {
                bad("1")
            }
            // read_u16
            13 | 22 | 26 | 57 | 93 if len < 2 => bad("2"),
            // read_u32 / read_i32; 152-155 also assert == 4
            2 | 24 | 35 | 38 | 51 | 58 | 59 | 91 | 108 if len < 4 => bad("4"),
            152..=155 if len != 4 => bad("4"),
            80 if len != 0 => bad("0"),
            94 if len != 3 => bad("3"),
            81 if len < 3 => bad("at least 3"),
            151 if len < 1 => bad("at least 1"),
            _ => Ok(()),
        }
    };
    while let Some((&code, rest)) = b.split_first() {
        match code {
            0 => {
                b = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some((&len, rest)) = rest.split_first() else {
            return Err(DecodeError::Truncated { code });
        };
        let len = len as usize;
        if rest.len() < len {
            return Err(DecodeError::Truncated { code });
        }
        run = match run {
            Some((c, l)) if c == code => Some((c, l + len)),
            Some((c, l)) => {
                check(c, l)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        b = &rest[len..];
    }
    if let Some((c, l)) = run {
        check(c, l)?;
    }
    Ok(())
}

pub fn decode(buf: &[u8]) -> Result<Request, DecodeError> {
    if buf.len() < MIN_LEN {
        return Err(DecodeError::TooShort(buf.len()));
    }
    if buf[0] != 1 {
        return Err(DecodeError::NotRequest(buf[0]));
    }
    if buf[1] != 1 || buf[2] != 6 {
        return Err(DecodeError::NotEthernet {
            htype: buf[1],
            hlen: buf[2],
        });
    }
    let magic: [u8; 4] = [buf[236], buf[237], buf[238], buf[239]];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    validate_options(&buf[MIN_LEN..])?;
    // Belt and braces: should a future dhcproto assert on something not checked
    // above, the packet is dropped instead of taking the server down.
    let msg = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(buf)))
        .map_err(|_| DecodeError::Malformed("decoder panicked".into()))?
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let mut req = from_message(&msg)?;
    req.relay_info = raw_option(buf, 82);
    Ok(req)
}

/// A message's options after the magic cookie, in wire order: (code, body,
/// offset of the code byte). Stops at END, or where an option would run
/// past the end of the buffer.
fn walk(buf: &[u8]) -> impl Iterator<Item = (u8, &[u8], usize)> + '_ {
    let mut at = MIN_LEN;
    std::iter::from_fn(move || loop {
        match *buf.get(at)? {
            0 => at += 1,
            255 => return None,
            code => {
                let len = usize::from(*buf.get(at + 1)?);
                let body = buf.get(at + 2..at + 2 + len)?;
                let here = at;
                at += 2 + len;
                return Some((code, body, here));
            }
        }
    })
}

/// A message's options in wire order, (code, body) (tests and tools: the
/// order matters for option 82, which goes last).
pub fn options(buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    walk(buf).map(|(c, b, _)| (c, b.to_vec())).collect()
}

/// The bytes of option `code` (fragments joined, RFC 3396), as sent.
fn raw_option(buf: &[u8], code: u8) -> Option<Vec<u8>> {
    walk(buf)
        .filter(|(c, _, _)| *c == code)
        .fold(None, |acc: Option<Vec<u8>>, (_, body, _)| {
            let mut v = acc.unwrap_or_default();
            v.extend_from_slice(body);
            Some(v)
        })
}

/// Put option `code` with `body` last, just before END (RFC 3046 2.2: the
/// relay agent information option goes last), in 255-byte fragments.
fn append_last(buf: &mut Vec<u8>, code: u8, body: &[u8]) {
    let at = walk(buf)
        .last()
        .map(|(_, b, here)| here + 2 + b.len())
        .unwrap_or(MIN_LEN);
    // Only pads, then END (or nothing), may follow: never insert into an
    // option the walk could not read.
    let rest = buf.get(at..).unwrap_or_default();
    let after_pads = rest.iter().position(|b| *b != 0);
    if after_pads.is_some_and(|i| rest[i] != 255) {
        return;
    }
    let mut opt = Vec::with_capacity(body.len() + 4);
    for chunk in body.chunks(255) {
        opt.push(code);
        opt.push(chunk.len() as u8);
        opt.extend_from_slice(chunk);
    }
    buf.splice(at..at, opt);
}

fn from_message(msg: &Message) -> Result<Request, DecodeError> {
    if msg.opcode() != Opcode::BootRequest {
        return Err(DecodeError::NotRequest(2));
    }
    let mac = Mac::from_slice(msg.chaddr()).ok_or(DecodeError::NotEthernet {
        htype: 1,
        hlen: msg.hlen(),
    })?;
    let o = msg.opts();
    let msg_type = o.msg_type().ok_or(DecodeError::NoMessageType)?;
    let vendor_class = match o.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v.clone()),
        _ => None,
    };
    let class = match &vendor_class {
        Some(v) if v.starts_with(b"PXEClient") => ClientClass::Pxe,
        Some(v) if v.starts_with(b"HTTPClient") => ClientClass::Http,
        _ => ClientClass::Other,
    };
    let arch = match o.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
        _ => None,
    };
    let user_class_ipxe = match o.get(OptionCode::UserClass) {
        // RFC 3004 form (length-prefixed items) or iPXE's plain "iPXE".
        Some(DhcpOption::UserClass(v)) => v.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    let opt175 = o.get(OptionCode::Unknown(175)).is_some();
    Ok(Request {
        msg_type,
        xid: msg.xid(),
        mac,
        hops: msg.hops(),
        secs: msg.secs(),
        flags: msg.flags().into(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        requested_ip: match o.get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        },
        server_id: match o.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        },
        vendor_class,
        class,
        arch,
        ipxe: user_class_ipxe || opt175,
        machine_id: match o.get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
            _ => None,
        },
        hostname: match o.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => Some(h.clone()),
            _ => None,
        },
        param_list: match o.get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(v)) => v.iter().map(|c| u8::from(*c)).collect(),
            _ => Vec::new(),
        },
        // Filled from the raw bytes by `decode`, so it is echoed as sent.
        relay_info: None,
        max_size: match o.get(OptionCode::MaxMessageSize) {
            Some(DhcpOption::MaxMessageSize(s)) => Some(*s),
            _ => None,
        },
    })
}

/// Build the reply message for `req`. Longer than most: the options go in
/// one after another as RFC 2131/4578 list them, each a few lines.
pub fn encode(req: &Request, reply: &Reply) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(req.xid)
        .set_flags(Flags::new(req.flags))
        .set_giaddr(req.giaddr)
        .set_chaddr(&req.mac.octets())
        .set_hops(0);
    if reply.msg_type == MessageType::Ack && !req.ciaddr.is_unspecified() {
        m.set_ciaddr(req.ciaddr);
    }
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(reply.msg_type));
    o.insert(DhcpOption::ServerIdentifier(reply.server_id));
    if let Some(a) = &reply.assign {
        m.set_yiaddr(a.yiaddr);
        let o = m.opts_mut();
        // No lease time in an INFORM's ACK (RFC 2131 4.3.5).
        if a.lease_secs > 0 {
            o.insert(DhcpOption::AddressLeaseTime(a.lease_secs));
            o.insert(DhcpOption::Renewal(a.lease_secs / 2));
            o.insert(DhcpOption::Rebinding(a.lease_secs / 8 * 7));
        }
        o.insert(DhcpOption::SubnetMask(a.netmask));
        if let Some(r) = a.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !a.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(a.dns.clone()));
        }
        if let Some(d) = &a.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        if let Some(h) = &a.hostname {
            o.insert(DhcpOption::Hostname(h.clone()));
        }
    }
    if let Some(b) = &reply.boot {
        m.set_siaddr(b.next_server);
        // The file field holds 128 bytes including the terminating NUL.
        if b.file.len() < 128 {
            m.set_fname_str(&b.file);
        }
        let o = m.opts_mut();
        if b.file.len() >= 128 || req.param_list.contains(&67) {
            o.insert(DhcpOption::BootfileName(b.file.clone().into_bytes()));
        }
        if req.param_list.contains(&66) {
            o.insert(DhcpOption::TFTPServerName(
                b.next_server.to_string().into_bytes(),
            ));
        }
        if let Some(vc) = b.vendor_class {
            o.insert(DhcpOption::ClassIdentifier(vc.as_bytes().to_vec()));
        }
        if b.pxe_vendor_options {
            // sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: use the boot file in this
            // reply, no boot server discovery; then END.
            o.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
        }
        if let Some(id) = &req.machine_id {
            o.insert(DhcpOption::ClientMachineIdentifier(id.clone()));
        }
    }
    if let Some(msg) = &reply.message {
        m.opts_mut().insert(DhcpOption::Message(msg.clone()));
    }
    if reply.msg_type == MessageType::Nak && req.relayed() {
        // RFC 2131 4.3.2: so the relay broadcasts it to the client.
        m.set_flags(Flags::new(req.flags | BROADCAST));
    }
    let mut buf = Vec::with_capacity(576);
    let mut e = Encoder::new(&mut buf);
    // Encoding into a Vec cannot fail for the options built above; should it,
    // send nothing rather than a truncated packet.
    if m.encode(&mut e).is_err() {
        return Vec::new();
    }
    if let Some(r) = &req.relay_info {
        // RFC 3046: relay agent information is echoed unchanged, last.
        append_last(&mut buf, 82, r);
    }
    // Pad to the BOOTP minimum of 300 bytes: some PXE ROMs drop shorter replies.
    if buf.len() < 300 {
        buf.resize(300, 0);
    }
    buf
}

/// The client hardware address of an encoded message.
pub(crate) fn chaddr(buf: &[u8]) -> Option<Mac> {
    Mac::from_slice(buf.get(28..34)?)
}

/// Build a request (tests and tools use this to play clients).
pub fn build_request(mac: Mac, msg_type: MessageType, xid: u32, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_xid(xid)
        .set_chaddr(&mac.octets());
    m.opts_mut().insert(DhcpOption::MessageType(msg_type));
    for o in opts {
        m.opts_mut().insert(o);
    }
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf))
        .expect("encoding a request into a Vec");
    buf
}

/// Parse a reply (tests and tools).
pub fn parse_reply(buf: &[u8]) -> Option<Message> {
    std::panic::catch_unwind(|| v4::Message::decode(&mut Decoder::new(buf)).ok())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac() -> Mac {
        "52:54:00:aa:00:01".parse().unwrap()
    }

    #[test]
    fn decodes_a_pxe_discover() {
        let b = build_request(
            mac(),
            MessageType::Discover,
            7,
            vec![
                DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
                DhcpOption::ClientSystemArchitecture(v4::Architecture(7)),
                DhcpOption::ClientMachineIdentifier(vec![0; 17]),
            ],
        );
        let r = decode(&b).unwrap();
        assert_eq!(r.mac, mac());
        assert_eq!(r.class, ClientClass::Pxe);
        assert_eq!(r.arch, Some(7));
        assert!(!r.ipxe);
        assert_eq!(r.msg_type, MessageType::Discover);
    }

    #[test]
    fn ipxe_is_detected_by_user_class_or_option_175() {
        let b = build_request(
            mac(),
            MessageType::Discover,
            1,
            vec![DhcpOption::UserClass(b"iPXE".to_vec())],
        );
        assert!(decode(&b).unwrap().ipxe);
        let b = build_request(
            mac(),
            MessageType::Discover,
            1,
            vec![DhcpOption::Unknown(v4::UnknownOption::new(
                OptionCode::Unknown(175),
                vec![1, 1, 1],
            ))],
        );
        assert!(decode(&b).unwrap().ipxe);
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        let good = build_request(mac(), MessageType::Discover, 1, vec![]);
        assert!(matches!(
            decode(&good[..100]),
            Err(DecodeError::TooShort(100))
        ));
        let mut reply = good.clone();
        reply[0] = 2;
        assert!(matches!(decode(&reply), Err(DecodeError::NotRequest(2))));
        let mut magic = good.clone();
        magic[236] = 0;
        assert!(matches!(decode(&magic), Err(DecodeError::BadMagic(_))));
        // Options dhcproto would assert or underflow on.
        for (code, len) in [
            (94u8, 2u8),
            (80, 1),
            (152, 3),
            (81, 1),
            (151, 0),
            (93, 1),
            (57, 1),
        ] {
            let mut b = good[..240].to_vec();
            b.extend([53, 1, 1, code, len]);
            b.extend(std::iter::repeat_n(0xff, len as usize));
            b.push(255);
            let e = decode(&b).unwrap_err();
            assert!(
                matches!(e, DecodeError::BadOptionLength { .. }),
                "{code}: {e}"
            );
        }
        let mut b = good[..240].to_vec();
        b.extend([53, 1, 1, 60, 40, 1]);
        assert!(matches!(
            decode(&b),
            Err(DecodeError::Truncated { code: 60 })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&body);
        }

        #[test]
        fn arbitrary_options_never_panic(opts in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut b = build_request(mac(), MessageType::Discover, 1, vec![])[..240].to_vec();
            b.extend(opts);
            let _ = decode(&b);
        }
    }
}
