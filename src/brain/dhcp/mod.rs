//! DHCP decisions, pure: the typed request and reply (`msg`), which boot file
//! and which answer (`policy`), the full-mode address pool (`pool`).
//! May import: store (lease records), model.

pub mod answer;
pub mod msg;
pub mod policy;
pub mod pool;
pub mod reason;
