//! `airlock key rotate` on a store of 10,000 secrets, killed with SIGKILL at random points and
//! run again: after every kill each secret still opens to its value (the store is on the old
//! version, the new, or between with both readable), and the rotation finishes on the next run;
//! `key status` tells how far it got; the rotation is audited and the audit chain verifies.

mod common;

use airlock_core::config::{Config, SecretRef};
use airlock_core::Secret;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const N: usize = 10_000;

fn value(i: usize) -> String {
    format!("rotation-value-{i:05}-{}", "x".repeat(i % 37))
}

/// Seals `N` secrets under the root key and stores them in one transaction (as `N` `secret
/// put`s would, faster).
async fn fill(dir: &Path) {
    let cfg = Config::load(&dir.join("airlock.toml")).unwrap();
    let key = airlock_vault::MasterKey::load(&cfg.store.data_dir.join("master.key")).unwrap();
    let store = airlock_store::Store::connect(&cfg.store).await.unwrap();
    let mut tx = store.pool().unwrap().begin().await.unwrap();
    for i in 0..N {
        let name = format!("S{i:05}");
        let sealed = airlock_vault::seal(&key, &name, &Secret::from_str_value(&value(i)));
        sqlx::query("INSERT INTO secrets (name, sealed, created_at, updated_at, version) VALUES (?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 1)")
            .bind(&name)
            .bind(sealed)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    store.close().await;
}

/// Opens every secret as a freshly started broker would; the key versions in the store.
#[allow(clippy::disallowed_methods)] // the test compares values
async fn check_all(dir: &Path) -> airlock_vault::keyring::RotationStatus {
    let cfg = Config::load(&dir.join("airlock.toml")).unwrap();
    let key = airlock_vault::MasterKey::load(&cfg.store.data_dir.join("master.key")).unwrap();
    let store = airlock_store::Store::connect(&cfg.store).await.unwrap();
    let vault = airlock_vault::Vault::new(key, store.clone());
    vault.reload_keyring().await.unwrap();
    for i in 0..N {
        let name = format!("S{i:05}");
        let s = vault.resolve(&SecretRef::Local(name.clone())).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.expose_str().unwrap(), value(i), "{name}");
    }
    let status = vault.rotation_status().await.unwrap();
    store.close().await;
    status
}

/// A vault on the same store, to watch the rotation's progress from outside.
async fn watcher(dir: &Path) -> (airlock_vault::Vault, airlock_store::Store) {
    let cfg = Config::load(&dir.join("airlock.toml")).unwrap();
    let key = airlock_vault::MasterKey::load(&cfg.store.data_dir.join("master.key")).unwrap();
    let store = airlock_store::Store::connect(&cfg.store).await.unwrap();
    (airlock_vault::Vault::new(key, store.clone()), store)
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_killed_at_random_points_resumes_and_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let o = common::airlock_in(dir, &["init"], None, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fill(dir).await;

    let seed: u64 = std::env::var("AIRLOCK_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (AIRLOCK_TEST_SEED={seed} replays the kill points)");
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let (watch, watch_store) = watcher(dir).await;
    let mut mid_rewrap = 0;
    for round in 0..8 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .current_dir(dir)
            .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
            .env_remove("RUST_LOG")
            .args(["key", "rotate"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A random point: most rounds when the re-wrap has a random number of values left,
        // one in four as soon as the new version is in the store (before any re-wrap).
        let start = watch.rotation_status().await.unwrap();
        let left_at_start = if start.in_progress() { start.remaining } else { N as u64 };
        let target = if r.random_bool(0.25) { left_at_start } else { r.random_range(0..=left_at_start) };
        let killed = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            let st = watch.rotation_status().await.unwrap();
            if st.in_progress() && st.remaining <= target {
                child.kill().unwrap(); // SIGKILL
                break true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        child.wait().unwrap();
        let status = check_all(dir).await;
        println!(
            "round {round}: target {target} left: {}, versions {:?}, {} left",
            if killed { "killed" } else { "finished first" },
            status.versions,
            status.remaining
        );
        if killed && status.in_progress() && status.remaining > 0 && status.remaining < N as u64 {
            mid_rewrap += 1;
        }
    }
    watch_store.close().await;
    assert!(mid_rewrap > 0, "no kill landed inside the re-wrap: seed {seed}");

    // Run to the end: one version left, every value under it.
    let o = common::airlock_in(dir, &["key", "rotate"], None, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status = check_all(dir).await;
    assert!(!status.in_progress() && status.remaining == 0, "{status:?}");
    let o = common::airlock_in(dir, &["key", "status"], None, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains(&format!("key version {}", status.active)), "{out}");

    // Audited, and the chain verifies.
    let o = common::airlock_in(dir, &["audit", "tail", "-n", "200"], None, &[]);
    let tail = String::from_utf8_lossy(&o.stdout);
    // The start is recorded before the version is made, so even a run killed right after it
    // left its record.
    assert!(tail.contains("master_key_rotation_started") && tail.contains("master_key_rotated"), "{tail}");
    let o = common::airlock_in(dir, &["audit", "verify"], None, &[]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// `airlock doctor` finding `check`: (level, message).
fn doctor(dir: &Path, check: &str) -> (String, String) {
    let o = common::airlock_in(dir, &["doctor", "--json"], None, &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    let f = v["findings"].as_array().unwrap().iter().find(|f| f["check"] == check).unwrap_or_else(|| panic!("no {check} finding: {v}"));
    (f["level"].as_str().unwrap().to_owned(), f["message"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_an_unfinished_rotation_and_an_audit_key_rotated_elsewhere() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(common::airlock_in(dir, &["init"], None, &[]).status.success());
    for name in ["A", "B", "C"] {
        assert!(common::airlock_in(dir, &["secret", "put", name], Some("a-value-of-some-length\n"), &[]).status.success());
    }
    assert_eq!(doctor(dir, "key-rotation"), ("ok".into(), "the vault key was never rotated".into()));
    // A rotation started and stopped before any re-wrap (as a kill leaves it).
    let (vault, store) = watcher(dir).await;
    assert_eq!(vault.begin_rotation().await.unwrap(), 1);
    store.close().await;
    let (level, message) = doctor(dir, "key-rotation");
    assert!(level == "warning" && message.contains("version 1") && message.contains("3 value(s)"), "{level}: {message}");
    assert!(common::airlock_in(dir, &["key", "rotate"], None, &[]).status.success());
    assert_eq!(doctor(dir, "key-rotation"), ("ok".into(), "the vault key is at version 1".into()));
    // The run that finished it recorded that it resumed a rotation under way.
    let tail = String::from_utf8_lossy(&common::airlock_in(dir, &["audit", "tail", "-n", "5"], None, &[]).stdout).into_owned();
    let resumed = tail.lines().find(|l| l.contains("master_key_rotation_resumed")).unwrap_or_else(|| panic!("{tail}"));
    assert!(resumed.contains("\"remaining\":3"), "{resumed}");

    // The audit signing key rotated by "another replica": this directory keeps its old key.
    let data = dir.join("airlock-data");
    let old_key = std::fs::read(data.join("audit-signing.key")).unwrap();
    let old_pub = std::fs::read(data.join("audit-signing.pub")).unwrap();
    assert_eq!(doctor(dir, "audit-key").0, "ok");
    assert!(common::airlock_in(dir, &["audit", "rotate-key"], None, &[]).status.success());
    assert_eq!(doctor(dir, "audit-key").0, "ok");
    std::fs::write(data.join("audit-signing.key"), &old_key).unwrap();
    std::fs::write(data.join("audit-signing.pub"), &old_pub).unwrap();
    let (level, message) = doctor(dir, "audit-key");
    assert!(level == "error" && message.contains("rotated elsewhere"), "{level}: {message}");
}
