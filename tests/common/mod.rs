//! What the browser tests share: the `airlock serve` child they stop on drop, and the check
//! for headless Chromium and playwright-core.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A running `airlock serve`, killed and reaped when dropped.
pub struct Server(pub Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a missing service fails the test (AIRLOCK_REQUIRE_SERVICES=1, as in CI).
pub fn require() -> bool {
    std::env::var("AIRLOCK_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why the browser tests cannot run here, if they cannot.
pub fn missing_browser() -> Option<String> {
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is missing (apt-get install chromium)".into());
    }
    if !root().join("tests/browser/node_modules/playwright-core").exists() {
        return Some("tests/browser/node_modules is missing (cd tests/browser && npm ci)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is missing".into());
    }
    None
}
