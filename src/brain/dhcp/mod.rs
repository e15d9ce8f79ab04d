//! DHCP decisions, pure: the typed request and reply (`msg`), which boot file
//! and which answer (`policy`), the full-mode address pool (`pool`).
//! May import: store (lease records), model.

pub(crate) mod answer;
pub(crate) mod msg;
pub(crate) mod policy;
pub(crate) mod pool;
pub(crate) mod reason;
pub(crate) mod share;
