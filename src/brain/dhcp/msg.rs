//! The DHCP vocabulary the brain decides on: a validated request in, a reply
//! to encode out. The edge (`edge::dhcp::packet`) turns bytes into these and back.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use crate::model::mac::Mac;

/// Firmware kinds as told by option 60 (vendor class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClass {
    Pxe,
    Http,
    Other,
}

/// A validated DHCP request with the fields kiln decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub msg_type: MessageType,
    pub xid: u32,
    pub mac: Mac,
    pub hops: u8,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub vendor_class: Option<Vec<u8>>,
    pub class: ClientClass,
    /// Option 93, first entry.
    pub arch: Option<u16>,
    /// User class (77) says `iPXE`, or iPXE's own option 175 is present.
    pub ipxe: bool,
    /// Option 97, echoed to PXE clients.
    pub machine_id: Option<Vec<u8>>,
    pub hostname: Option<String>,
    pub param_list: Vec<u8>,
    /// Option 82 as the relay sent it, echoed unchanged.
    pub relay_info: Option<Vec<u8>>,
    pub max_size: Option<u16>,
}

impl Request {
    pub fn relayed(&self) -> bool {
        !self.giaddr.is_unspecified()
    }
    pub fn is_pxe(&self) -> bool {
        matches!(self.class, ClientClass::Pxe | ClientClass::Http)
    }
}

/// Boot information put into a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// next-server (siaddr): where TFTP goes.
    pub next_server: Ipv4Addr,
    /// The `file` field: a TFTP path or an HTTP URL.
    pub file: String,
    /// Option 60 to echo (`PXEClient` / `HTTPClient`); PXE and HTTP-boot firmware
    /// ignore offers without it.
    pub vendor_class: Option<&'static str>,
    /// Add option 43 with PXE_DISCOVERY_CONTROL = 8 (boot straight from `file`).
    pub pxe_vendor_options: bool,
}

/// Address assignment put into a reply (full mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assign {
    pub yiaddr: Ipv4Addr,
    pub lease_secs: u32,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub msg_type: MessageType,
    pub server_id: Ipv4Addr,
    pub assign: Option<Assign>,
    pub boot: Option<Boot>,
    /// Option 56, for NAKs.
    pub message: Option<String>,
}
