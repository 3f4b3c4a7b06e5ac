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

/// `airlock ARGS` as the broker's operator would run it in `dir` (its `airlock.toml`), with none
/// of the machine's agent variables or log settings.
pub fn operator(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    c.current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .env_remove("AIRLOCK_TOKEN")
        .env_remove("AIRLOCK_ENDPOINT")
        .env_remove("RUST_LOG")
        .args(args);
    c
}

/// [`operator`] with `stdin` written to it, waited for.
pub fn operator_run(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = operator(dir, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Waits (20 s at most) until `server`, started in `dir` with its log in `dir/serve.log`,
/// answers `GET {base}/healthz`; fails with the log when it exits first.
pub async fn until_healthy(mut server: Server, dir: &Path, base: &str) -> Server {
    let client = reqwest::Client::new();
    for _ in 0..800 {
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            return server;
        }
        assert!(server.0.try_wait().unwrap().is_none(), "airlock serve exited: {}", std::fs::read_to_string(dir.join("serve.log")).unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("airlock serve did not answer /healthz");
}

/// A running `airlock serve` with its stderr in `log`, killed and reaped when dropped.
pub struct Serving {
    pub child: Child,
    pub log: PathBuf,
}

impl Serving {
    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `airlock serve` as the operator in `dir` (stderr in `dir/serve.log`), once `socket` accepts
/// connections (20 s at most); fails with the log when it exits first.
pub fn serve_until_socket(dir: &Path, socket: &Path) -> Serving {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let log = dir.join("serve.log");
    let child = operator(dir, &["serve"]).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let mut s = Serving { child, log };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return s;
        }
        if let Ok(Some(st)) = s.child.try_wait() {
            panic!("airlock serve exited with {st}: {}", s.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("airlock serve did not open its socket: {}", s.log());
}

/// `airlock serve` in `dir` with `env` and `args` added (RUST_LOG=info unless `env` says
/// otherwise; none of the machine's OTEL_* settings), its stderr appended to `dir/serve.log`;
/// once it answers `GET {base}/healthz`.
pub async fn serve_http(dir: &Path, base: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
    use std::process::Stdio;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("serve.log")).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    for v in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED", "OTEL_BSP_SCHEDULE_DELAY"] {
        c.env_remove(v);
    }
    let child = c
        .current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    until_healthy(Server(child), dir, base).await
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
