//! ../shared/talos: Talos's schema and golden configs (scaffolding, never copied
//! into the repo). Tests that need it skip where it is absent, except in CI.

use std::path::PathBuf;

use super::skip_unless;

pub fn talos_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/talos");
    if skip_unless(
        d.join("stability/secrets.yaml").is_file(),
        "../shared/talos (Talos golden configs)",
    ) {
        return None;
    }
    Some(d)
}
