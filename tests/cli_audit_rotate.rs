//! `airlock audit rotate-key`, run as a user would, with `airlock serve` running on the same data
//! directory (it holds the old key in memory): the broker signs on with the new key, and `audit
//! verify` passes with the data directory's public key, the original key pinned before the
//! rotation, the middle one and an export, and names an unknown key.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn airlock(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    c.current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .env("AIRLOCK_ENDPOINT", format!("unix:{}", socket(dir).display()))
        .env_remove("AIRLOCK_TOKEN")
        .env_remove("AIRLOCK_TOKEN_FILE")
        .env_remove("RUST_LOG")
        .args(args);
    c
}

fn socket(dir: &Path) -> std::path::PathBuf {
    dir.join("run/airlock.sock")
}

/// A running `airlock serve`, killed on drop.
struct Serve(std::process::Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> Serve {
    let mut s = Serve(airlock(dir, &["serve"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(socket(dir)).is_ok() {
            return s;
        }
        assert!(s.0.try_wait().unwrap().is_none(), "airlock serve exited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("airlock serve did not open its socket");
}

fn run(dir: &Path, args: &[&str]) -> Output {
    airlock(dir, args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(o.status.success(), "airlock {}: {}", args.join(" "), text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// A denied call (a handle that does not exist): one audit record, written by the broker.
fn denied_call(dir: &Path, token: &str) {
    let o = airlock(dir, &["call", "query_db", "--args", r#"{"credential_handle": "NOPE", "query": "SELECT 1"}"#])
        .env("AIRLOCK_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("handle-unavailable"), "{}", text(&o));
}

#[test]
fn rotate_key_with_the_broker_running_then_verify_with_every_key() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ok(dir, &["init"]);
    let cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    let cfg = cfg.replace("listen = \"127.0.0.1:7878\"", "listen = \"127.0.0.1:0\"\nsocket = \"run/airlock.sock\"");
    std::fs::write(dir.join("airlock.toml"), cfg).unwrap();
    let token = ok(dir, &["agent", "add", "bot"]).trim().to_owned();
    let _broker = serve(dir);

    denied_call(dir, &token);
    std::fs::write(dir.join("original.pub"), ok(dir, &["audit", "public-key"])).unwrap();

    // The rotation: the new public key alone on stdout (a pin file as it is), the hand-over's
    // seq on stderr.
    let o = run(dir, &["audit", "rotate-key"]);
    assert!(o.status.success(), "{}", text(&o));
    let middle = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(middle.trim().len(), 64, "{middle}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("rotated at record 2"), "{}", text(&o));
    std::fs::write(dir.join("middle.pub"), &middle).unwrap();
    assert_eq!(ok(dir, &["audit", "public-key"]), middle, "audit-signing.key and .pub hold the new key");

    // The broker, started with the old key, signs its next group with the new one; so does a
    // command that opens the broker itself.
    denied_call(dir, &token);
    ok(dir, &["agent", "revoke", "bot"]);
    for pin in [None, Some("original.pub"), Some("middle.pub")] {
        let mut args = vec!["audit", "verify"];
        args.extend(pin.iter().flat_map(|p| ["--public-key", *p]));
        let out = ok(dir, &args);
        assert!(out.contains("audit ok: 4 records") && out.contains("2 signing keys (1 hand-over)"), "{pin:?}: {out}");
    }

    // An export spans the rotation; checked offline with either key.
    ok(dir, &["audit", "checkpoints", "export", "--output", "cps.jsonl"]);
    let exported = std::fs::read_to_string(dir.join("cps.jsonl")).unwrap();
    assert_eq!(exported.lines().filter(|l| l.contains("\"kind\":\"key_handover\"")).count(), 1, "{exported}");
    for pin in ["original.pub", "middle.pub"] {
        let out = ok(dir, &["audit", "verify", "--offline", "--checkpoints", "cps.jsonl", "--public-key", pin]);
        assert!(out.contains("checkpoints ok: ") && out.contains("2 signing keys"), "{pin}: {out}");
        let out = ok(dir, &["audit", "verify", "--checkpoints", "cps.jsonl", "--public-key", pin]);
        assert!(out.contains("exported checkpoints held"), "{pin}: {out}");
    }

    // A second rotation: the middle key still verifies, the data directory's is the newest.
    let newest = ok(dir, &["audit", "rotate-key"]);
    assert_ne!(newest, middle);
    for pin in [None, Some("original.pub"), Some("middle.pub")] {
        let mut args = vec!["audit", "verify", "--json"];
        args.extend(pin.iter().flat_map(|p| ["--public-key", *p]));
        let v: serde_json::Value = serde_json::from_str(&ok(dir, &args)).unwrap();
        assert_eq!((v["audit"]["handovers"].as_u64(), v["audit"]["keys"].as_u64(), v["audit"]["records"].as_u64()), (Some(2), Some(3), Some(5)), "{v}");
    }

    // A key the chain never named.
    std::fs::write(dir.join("stranger.pub"), format!("{}\n", "ab".repeat(32))).unwrap();
    let o = run(dir, &["audit", "verify", "--public-key", "stranger.pub"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("audit-key-unknown"), "{}", text(&o));
}
