//! Per-profile and per-machine boot choices: how an installed machine leaves
//! iPXE for its disk, and which UEFI iPXE binary it gets.

use serde::{Deserialize, Serialize};

/// How an installed machine leaves iPXE for its disk. Each is the only one
/// that works on some firmware; default: `sanboot` on BIOS, `exit` on UEFI.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum LocalBoot {
    /// `exit`: back to the firmware, which boots the next device.
    #[serde(rename = "exit")]
    Exit,
    /// `sanboot` the first disk (BIOS drive 0x80).
    #[serde(rename = "sanboot")]
    Sanboot,
    /// Answer the machine script with HTTP 404: iPXE's chain fails, and so
    /// does the network boot.
    #[serde(rename = "http-404")]
    Http404,
}

impl LocalBoot {
    pub fn as_str(self) -> &'static str {
        match self {
            LocalBoot::Exit => "exit",
            LocalBoot::Sanboot => "sanboot",
            LocalBoot::Http404 => "http-404",
        }
    }
}

/// The UEFI iPXE binary: `ipxe.efi` (iPXE's own drivers) or `snponly.efi`
/// (the firmware's network driver, for NICs iPXE has no driver for).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum UefiBinary {
    #[default]
    #[serde(rename = "ipxe.efi")]
    Ipxe,
    #[serde(rename = "snponly.efi")]
    Snponly,
}

/// What a UEFI HTTP Boot client (arch 16, 19) is sent: iPXE, which then
/// fetches the machine's script as PXE clients' iPXE does, or the Talos UKI
/// of the profile's schematic straight away. A UKI has no kernel line for a
/// per-boot token: its embedded command line names
/// `/config?mac=${mac}&uuid=${uuid}`, which kiln answers only from the
/// address DHCP proved is that MAC's.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum HttpBoot {
    #[default]
    #[serde(rename = "ipxe")]
    Ipxe,
    #[serde(rename = "uki")]
    Uki,
}

/// Per-machine boot choices (machines.yaml), over the profile's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BootChoices {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_boot: Option<LocalBoot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi_binary: Option<UefiBinary>,
}
