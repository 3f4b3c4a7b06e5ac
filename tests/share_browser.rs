//! T17 in a real browser: `airlock serve` on a free port, then tests/browser/share.mjs drives
//! headless Chromium (playwright-core) through the share pages and the `airlock` CLI.
//!
//! Without Chromium or the node modules the test skips, unless AIRLOCK_REQUIRE_SERVICES=1 (CI),
//! where it fails.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{missing_browser, require, root, Server};

#[test]
fn t17_browser_and_cli_interoperate_through_the_share_pages() {
    if let Some(why) = missing_browser() {
        if require() {
            panic!("AIRLOCK_REQUIRE_SERVICES=1 but {why}");
        }
        eprintln!("skipping: {why}");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_airlock");
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("airlock.toml");
    let o = Command::new(bin).current_dir(d.path()).args(["--config", cfg.to_str().unwrap(), "init"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = std::fs::read_to_string(&cfg).unwrap().replace("127.0.0.1:7878\"", &format!("127.0.0.1:{port}\"\nsocket = \"off\""));
    std::fs::write(&cfg, text).unwrap();
    let server = Server(
        Command::new(bin)
            .current_dir(d.path())
            .env("AIRLOCK_CONFIG", &cfg)
            .env("RUST_LOG", "warn")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "airlock serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new("node")
        .arg(root().join("tests/browser/share.mjs"))
        .current_dir(root().join("tests/browser"))
        .env("AIRLOCK_BASE", &base)
        .env("AIRLOCK_BIN", bin)
        .env("AIRLOCK_CONFIG", &cfg)
        .env("AIRLOCK_VECTORS", root().join("crates/share/tests/vectors.json"))
        .env("AIRLOCK_WORK", d.path())
        .output()
        .unwrap();
    drop(server);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "browser checks failed:\n{report}");
    assert!(report.contains(" 0 failed"), "{report}");
}
