//! Why kiln says nothing to a DHCP request: typed, so the brain acts on the
//! kind (an unknown PXE client may be adopted) and the edge logs the text.

use std::fmt;
use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use super::policy::Port;
use super::pool::PoolError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The MAC's machine was replaced (`kiln replace`).
    Retired {
        host: String,
    },
    /// Not in the inventory, and `unknown_machines: ignore`.
    UnknownMac,
    /// Proxy mode answers only PXE and HTTP-boot firmware.
    NotPxe,
    /// proxyDHCP answers DISCOVER on 67 and REQUEST/INFORM on 4011 only.
    NotAnswered {
        msg: MessageType,
        port: Port,
    },
    NotBootClient,
    /// Option 93 names a firmware kiln has no iPXE build for.
    NoIpxeFor {
        arch: u16,
    },
    /// Relayed from a network no configured subnet contains.
    NoSubnet {
        giaddr: Ipv4Addr,
    },
    /// Full mode had no address to offer (an operator should look).
    NoOffer(PoolError),
    OtherServer(Ipv4Addr),
    RequestWithoutAddress,
    ReleaseNotHeld(Ipv4Addr),
    DeclineNotGiven(Ipv4Addr),
    /// INFORM whose ciaddr is not in the subnet it came from.
    InformOutside(Ipv4Addr),
    Unhandled(MessageType),
    /// The shared store is out of reach (etcd: no quorum): another daemon may
    /// have changed what this one would answer from.
    Fenced,
    /// Another daemon alive on the shared store answers this client (RFC 3074).
    PeerAnswers(String),
}

impl Reason {
    /// A short name for metrics (`kiln_dhcp_decisions_total{reason}`).
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Reason::Retired { .. } => "retired",
            Reason::UnknownMac => "unknown_mac",
            Reason::NotPxe => "not_pxe",
            Reason::NotAnswered { .. } => "not_for_this_port",
            Reason::NotBootClient => "not_boot_client",
            Reason::NoIpxeFor { .. } => "no_ipxe_for_arch",
            Reason::NoSubnet { .. } => "no_subnet",
            Reason::NoOffer(_) => "no_address",
            Reason::OtherServer(_) => "other_server",
            Reason::RequestWithoutAddress => "request_without_address",
            Reason::ReleaseNotHeld(_) => "release_not_held",
            Reason::DeclineNotGiven(_) => "decline_not_given",
            Reason::InformOutside(_) => "inform_outside",
            Reason::Unhandled(_) => "unhandled",
            Reason::Fenced => "store_fenced",
            Reason::PeerAnswers(_) => "peer_answers",
        }
    }

    /// Worth a warning: kiln should have answered and could not.
    pub(crate) fn is_trouble(&self) -> bool {
        matches!(self, Reason::NoOffer(_))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Retired { host } => {
                write!(f, "retired MAC: {host} was replaced by another machine")
            }
            Reason::UnknownMac => f.write_str("unknown MAC (unknown_machines: ignore)"),
            Reason::NotPxe => f.write_str("proxy mode answers only PXE/HTTP-boot clients"),
            Reason::NotAnswered { msg, port } => {
                write!(f, "proxyDHCP does not answer {msg:?} on the {port:?} port")
            }
            Reason::NotBootClient => f.write_str("not a PXE or HTTP-boot client"),
            Reason::NoIpxeFor { arch } => write!(
                f,
                "client architecture {arch} (option 93) has no iPXE build kiln serves"
            ),
            Reason::NoSubnet { giaddr } => write!(
                f,
                "relayed through {giaddr} but no subnet configured contains it"
            ),
            Reason::NoOffer(e) => write!(f, "no offer: {e}"),
            Reason::OtherServer(sid) => write!(f, "client chose server {sid}"),
            Reason::RequestWithoutAddress => f.write_str("REQUEST without an address"),
            Reason::ReleaseNotHeld(ip) => write!(f, "release of {ip} it does not hold"),
            Reason::DeclineNotGiven(ip) => write!(f, "decline of {ip} it was not given"),
            Reason::InformOutside(ip) => {
                write!(
                    f,
                    "INFORM from {ip}, which is not in the subnet it came from"
                )
            }
            Reason::Unhandled(t) => write!(f, "{t:?} is not handled"),
            Reason::Fenced => f.write_str("fenced: the shared store has no quorum"),
            Reason::PeerAnswers(p) => write!(f, "daemon {p} answers this client (RFC 3074 split)"),
        }
    }
}
