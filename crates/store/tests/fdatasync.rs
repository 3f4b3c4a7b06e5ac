//! With `sync = full`, a commit of the SQLite store waits for what it wrote with fdatasync(2),
//! never fsync(2). On Linux fsync also writes the file's inode whenever its modification time
//! moved since the last one (every clock tick under load), one more synchronous write on the
//! path of every durable call; fdatasync writes the inode only when the file's size changed,
//! which the data needs. Observed on the real process with strace: this test runs itself again
//! under `strace -f` and reads which call synced the store's files.

mod common;

use airlock_core::config::SyncMode;
use airlock_store::audit::{AuditKey, AuditLog};
use airlock_store::Store;
use std::path::Path;
use std::process::Command;

/// Set in the child run: the data directory to write in.
const CHILD: &str = "AIRLOCK_TEST_FDATASYNC_DIR";
/// Audit records appended one after another: one group, so one WAL sync, each.
const APPENDS: usize = 12;

async fn write_durably(dir: &Path) {
    let store = Store::open_with(dir, SyncMode::Full).await.unwrap();
    let log = AuditLog::start(store.clone(), AuditKey::create(dir).unwrap());
    for i in 0..APPENDS {
        log.append(common::record(i, "bot")).await.unwrap();
    }
}

/// The syscall name and the path strace printed for its file descriptor (`-y`), of each line
/// such as `4242 fdatasync(7</tmp/x/store.db-wal>) = 0`.
fn syncs(trace: &str) -> Vec<(String, String)> {
    trace
        .lines()
        .filter_map(|line| {
            let call = line.split_whitespace().nth(1)?;
            let (name, rest) = call.split_once('(')?;
            let path = rest.split_once('<')?.1.split_once('>')?.0;
            Some((name.to_string(), path.to_string()))
        })
        .collect()
}

fn strace_available() -> bool {
    Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_commit_waits_with_fdatasync_and_never_fsync() {
    if let Ok(dir) = std::env::var(CHILD) {
        write_durably(Path::new(&dir)).await;
        return;
    }
    if !strace_available() {
        assert_ne!(
            std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref(),
            Ok("1"),
            "strace is required (AIRLOCK_REQUIRE_SERVICES=1) but not installed"
        );
        println!("skipped: strace is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let trace = dir.path().join("trace");
    let status = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-e", "signal=none", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "a_durable_commit_waits_with_fdatasync_and_never_fsync", "--test-threads=1"])
        .env(CHILD, &data)
        .status()
        .unwrap();
    assert!(status.success(), "the run under strace failed: {status}");
    let calls = syncs(&std::fs::read_to_string(&trace).unwrap());
    let store_file = |path: &str| path.starts_with(data.join("store.db").to_str().unwrap());
    let wal = data.join("store.db-wal");
    let wal_datasyncs = calls.iter().filter(|(name, path)| name == "fdatasync" && Path::new(path) == wal).count();
    assert!(
        wal_datasyncs >= APPENDS,
        "{APPENDS} durable appends, {wal_datasyncs} fdatasync of the WAL; calls: {calls:?}"
    );
    let fsyncs: Vec<_> = calls.iter().filter(|(name, path)| name == "fsync" && store_file(path)).collect();
    assert!(fsyncs.is_empty(), "the store's files were synced with fsync: {fsyncs:?}");
}
