//! What the binary's tests share: the `airlock serve` child they stop on drop, one run of the
//! `airlock` command in a directory, and the check for headless Chromium and playwright-core.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Runs `airlock ARGS` in `dir` (its `airlock.toml`) with `env` added and `input` on stdin,
/// and waits for it.
pub fn airlock_in(dir: &Path, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    // Nothing of the machine's airlock variables: only what the test gives.
    for v in ["AIRLOCK_TOKEN", "AIRLOCK_TOKEN_FILE", "AIRLOCK_APPROVER_TOKEN", "AIRLOCK_URL", "AIRLOCK_ENDPOINT", "RUST_LOG"] {
        c.env_remove(v);
    }
    c.current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(i) = input {
        stdin.write_all(i.as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

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
