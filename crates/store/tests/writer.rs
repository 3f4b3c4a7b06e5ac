//! The SQLite store's one writer: audit records, share creates and share burns that arrive
//! together are committed together (one transaction, one signed checkpoint per group), each
//! operation is answered by its own outcome, and a caller that goes away stalls nothing; a
//! generated mix of operations, one at a time or all at once, ends as a model of them says; and a
//! group whose operations fail anywhere in it answers each as if it had been alone.

mod common;

use airlock_store::audit::{AuditKey, AuditLog, AuditRecord};
use airlock_store::shares::NewShareRecord;
use airlock_store::{Store, StoreError};
use std::future::Future;
use std::time::Duration;

/// Long enough for every spawned caller to reach the writer's queue while the store is locked,
/// even on a loaded machine.
const QUEUE_UP: Duration = Duration::from_secs(1);

fn rec(i: usize) -> AuditRecord {
    common::record(i, "bot")
}

/// A 22-character share id from `n`.
fn id(n: usize) -> String {
    format!("{n:0>22}")
}

fn share(id: &str, views: u32) -> NewShareRecord<'_> {
    NewShareRecord {
        id,
        ciphertext: b"ciphertext-bytes",
        proof_hash: &[7; 32],
        expires_at: chrono::Utc::now().timestamp() + 3600,
        views,
        creator: None,
        recipient: None,
    }
}

/// A store committing with `sync = full` (as [`Store::open`]) and its audit log.
async fn setup() -> (tempfile::TempDir, Store, AuditLog, Vec<u8>) {
    setup_with(airlock_core::config::SyncMode::Full).await
}

async fn setup_with(sync: airlock_core::config::SyncMode) -> (tempfile::TempDir, Store, AuditLog, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), sync).await.unwrap();
    let key = AuditKey::create(dir.path()).unwrap();
    let public = key.public_key();
    let log = AuditLog::start(store.clone(), key);
    (dir, store, log, public)
}

async fn count(store: &Store, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(store.pool().unwrap()).await.unwrap();
    n
}

/// Holds the store's write lock from another connection until `release` is dropped, so that
/// everything submitted meanwhile queues behind the first operation.
async fn hold_write_lock(store: &Store) -> tokio::sync::oneshot::Sender<()> {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let pool = store.pool().unwrap().clone();
    tokio::spawn(async move {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.unwrap();
        locked.send(()).unwrap();
        let _ = released.await;
        sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    });
    is_locked.await.unwrap();
    release
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_that_arrive_together_commit_as_one_group_with_one_checkpoint() {
    let (_dir, store, log, public) = setup().await;
    let release = hold_write_lock(&store).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(rec(i)).await.unwrap() }));
    }
    // The first caller waits on the lock holding the writer's turn; the other 63 queue.
    tokio::time::sleep(QUEUE_UP).await;
    drop(release);
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=64).collect::<Vec<i64>>(), "every record a place in the chain, none twice");
    assert_eq!(count(&store, "SELECT count(*) FROM audit_checkpoints").await, 2, "one group of 1, then one group of 63: one signature each");
    let report = store.verify_audit(&public).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_operation_in_a_group_gets_its_own_outcome() {
    let (_dir, store, log, public) = setup().await;
    for s in 0..8 {
        store.create_share(&share(&id(s), 3)).await.unwrap();
    }
    let release = hold_write_lock(&store).await;
    let mut consumes = Vec::new();
    let mut wrong = Vec::new();
    let mut dupes = Vec::new();
    let mut appends = Vec::new();
    for s in 0..8 {
        for _ in 0..5 {
            let st = store.clone();
            consumes.push((s, tokio::spawn(async move { st.consume_share(&id(s), &[7; 32], None).await.unwrap() })));
        }
        let st = store.clone();
        wrong.push(tokio::spawn(async move { st.consume_share(&id(s), &[8; 32], None).await.unwrap() }));
        let st = store.clone();
        dupes.push(tokio::spawn(async move { st.create_share(&share(&id(s), 1)).await }));
        let st = store.clone();
        // New shares in the same groups succeed next to the conflicts.
        dupes.push(tokio::spawn(async move { st.create_share(&share(&id(100 + s), 1)).await }));
        let log = log.clone();
        appends.push(tokio::spawn(async move { log.append(rec(s)).await.unwrap() }));
    }
    tokio::time::sleep(QUEUE_UP).await;
    drop(release);
    let mut per_share = [0u32; 8];
    for (s, t) in consumes {
        if let Some(c) = t.await.unwrap() {
            per_share[s] += 1;
            assert_eq!(c.ciphertext, b"ciphertext-bytes");
        }
    }
    assert_eq!(per_share, [3; 8], "exactly as many burns as views, in groups too");
    for t in wrong {
        assert!(t.await.unwrap().is_none(), "a wrong proof burns nothing");
    }
    let mut conflicts = 0;
    let mut created = 0;
    for t in dupes {
        match t.await.unwrap() {
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Ok(()) => created += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((conflicts, created), (8, 8), "a taken id fails alone; the rest of its group is written");
    for s in 0..8 {
        assert_eq!(store.share_views_left(&id(100 + s)).await.unwrap(), Some(1));
    }
    let mut seqs = Vec::new();
    for t in appends {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=8).collect::<Vec<i64>>());
    assert!(store.verify_audit(&public).await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_that_go_away_lose_no_record_and_stall_no_one() {
    let (_dir, store, log, public) = setup().await;
    let release = hold_write_lock(&store).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(rec(i)).await.unwrap() }));
    }
    tokio::time::sleep(QUEUE_UP).await;
    // Every other caller goes away while its record waits in the queue (the first one holds the
    // turn inside SQLite's busy wait and cannot be cancelled there).
    for t in tasks.iter().skip(1).step_by(2) {
        t.abort();
    }
    drop(release);
    let mut answered = 0;
    for t in tasks {
        if t.await.is_ok() {
            answered += 1;
        }
    }
    assert!(answered >= 20, "the callers still there are answered ({answered})");
    // The writer's turn ended: a new caller is written at once, not stuck behind the gone ones.
    let seq = tokio::time::timeout(Duration::from_secs(10), log.append(rec(99))).await.expect("the writer is not stalled").unwrap();
    assert_eq!(seq, 41, "the records of callers that went away were written too, in order");
    let report = store.verify_audit(&public).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, 41);
}

/// Spawns an append of each record in `recs` at once, then awaits them all: their places in
/// the chain, sorted.
async fn append_together(log: &AuditLog, recs: std::ops::Range<usize>) -> Vec<i64> {
    let tasks: Vec<_> = recs
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(rec(i)).await.unwrap() })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    seqs
}

/// A current-thread runtime (no `block_in_place` there): the caller writes inline, and what
/// queues meanwhile still gets written.
#[tokio::test]
async fn a_current_thread_runtime_writes_inline() {
    let (_dir, store, log, public) = setup().await;
    let seqs = append_together(&log, 0..32).await;
    assert_eq!(seqs, (1..=32).collect::<Vec<i64>>());
    assert!(store.verify_audit(&public).await.unwrap().ok());
}

/// With `sync = normal` the caller that takes the writer's turn yields once before it writes
/// while the writer is crowded (as it is at first), so that the calls already runnable on its
/// thread reach their own writes and share its group. 32 appends spawned together on one thread
/// make a group or a few (the scheduler may wake the yielded caller early, at its periodic poll
/// of the reactor), not 32; each record is answered with its own place in the chain, and the
/// chain verifies.
#[tokio::test]
async fn calls_runnable_together_share_the_group_of_the_caller_that_yielded() {
    let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
    let seqs = append_together(&log, 0..32).await;
    assert_eq!(seqs, (1..=32).collect::<Vec<i64>>(), "every record a place in the chain, none twice");
    let (groups, writes) = store.group_stats().read();
    assert!(groups <= 4, "32 calls runnable together made {groups} groups");
    assert_eq!(writes, 32);
    assert_eq!(count(&store, "SELECT count(*) FROM audit_checkpoints").await, groups as i64);
    let report = store.verify_audit(&public).await.unwrap();
    assert!(report.ok() && report.records == 32, "{report:?}");
}

/// The turn's holder yields twice while the writer is crowded, so that a call whose I/O became
/// ready meanwhile (its upstream's answer) reaches its write and joins the group. One yield is
/// not enough on a lane (a multi-threaded runtime of one worker): the poll of the reactor that
/// follows the yield readies the call's task, but the yielded caller is woken after it, into
/// the worker's next-task slot, and would take the queue before that task ran. Here the other
/// call waits on a socket whose byte is written just before the caller appends; both records
/// must be one group, one checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_call_the_reactor_readies_during_the_yield_joins_the_group() {
    let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
    let (upstream, answer) = tokio::net::UnixStream::pair().unwrap();
    let caller = tokio::spawn(async move {
        let other_log = log.clone();
        let other = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            loop {
                answer.readable().await.unwrap();
                if answer.try_read(&mut byte).is_ok() {
                    break;
                }
            }
            other_log.append(rec(1)).await.unwrap()
        });
        // The other call runs up to its wait for the answer.
        tokio::task::yield_now().await;
        // Its answer arrives; only the reactor's next poll tells its task.
        upstream.try_write(b"x").unwrap();
        let first = log.append(rec(0)).await.unwrap();
        (first, other.await.unwrap())
    });
    let (first, second) = caller.await.unwrap();
    assert_eq!((first, second), (1, 2), "the caller's record first, the other's next");
    assert_eq!(store.group_stats().read(), (1, 2), "the two records were not one group");
    assert_eq!(count(&store, "SELECT count(*) FROM audit_checkpoints").await, 1);
    assert!(store.verify_audit(&public).await.unwrap().ok());
}

/// Polls `f` once: its output if that poll finished it, else `f` itself, pending.
async fn poll_once<F: Future + Unpin>(mut f: F) -> Result<F::Output, F> {
    match std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut f).poll(cx))).await {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => Err(f),
    }
}

/// A lone caller on a quiet writer (its last 16 groups were one record each, nobody queued
/// behind them) does not yield: on the worker, with `sync = normal`, its record is written and
/// answered within the first poll of its append, so nothing that was runnable behind it goes
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_lone_caller_on_a_quiet_writer_does_not_yield() {
    let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
    for i in 0..16 {
        log.append(rec(i)).await.unwrap();
    }
    for i in 16..21 {
        let log = log.clone();
        let first = tokio::spawn(async move {
            match poll_once(Box::pin(log.append(rec(i)))).await {
                Ok(seq) => (true, seq.unwrap()),
                Err(pending) => (false, pending.await.unwrap()),
            }
        });
        let (at_once, seq) = first.await.unwrap();
        assert!(at_once, "record {i}: the lone caller yielded");
        assert_eq!(seq, i as i64 + 1);
    }
    assert_eq!(store.group_stats().read(), (21, 21));
    assert!(store.verify_audit(&public).await.unwrap().ok());
}

/// Company makes a quiet writer crowded again: once callers have queued behind a group (here
/// behind one that waited for a write lock held elsewhere), the next caller that takes the
/// turn yields before it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn company_makes_a_quiet_writer_yield_again() {
    let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
    for i in 0..16 {
        log.append(rec(i)).await.unwrap();
    }
    let release = hold_write_lock(&store).await;
    let waiting: Vec<_> = (16..20)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(rec(i)).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(QUEUE_UP).await;
    drop(release);
    for t in waiting {
        t.await.unwrap();
    }
    // The blocking-pool task that wrote the queued callers ends the turn just after answering.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log2 = log.clone();
    let at_once = tokio::spawn(async move {
        match poll_once(Box::pin(log2.append(rec(20)))).await {
            Ok(seq) => (true, seq.unwrap()),
            Err(pending) => (false, pending.await.unwrap()),
        }
    });
    let (at_once, seq) = at_once.await.unwrap();
    assert!(!at_once, "the caller after company wrote without yielding");
    assert_eq!(seq, 21);
    assert!(store.verify_audit(&public).await.unwrap().ok());
}

/// A caller that goes away while it yields holding the writer's turn (its request was dropped
/// after its record was queued) loses no record, and the turn passes on: the next caller is
/// written, not stalled behind it. The caller is dropped after each number of polls in turn:
/// at its first yield, at every later one, and once it has written (answered, nothing to drop).
/// Each round is a new store, whose writer is crowded at first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_during_its_yield_loses_no_record_and_stalls_no_one() {
    for polls in 1..=4 {
        for round in 0..3 {
            let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
            // Each poll: the first queues the record, takes the turn and yields; each later one
            // yields again, until the group is written. Then what is left is dropped.
            let mut append = Box::pin(log.append(rec(0)));
            let mut answered = None;
            for k in 1..=polls {
                match poll_once(append).await {
                    Ok(seq) => {
                        assert!(k > 1, "polls {polls}, round {round}: the first poll wrote at once, without a yield");
                        answered = Some(seq.unwrap());
                        break;
                    }
                    Err(pending) if k < polls => append = pending,
                    Err(pending) => {
                        drop(pending);
                        break;
                    }
                }
            }
            assert!(answered.is_none_or(|s| s == 1), "polls {polls}, round {round}: {answered:?}");
            let seq = tokio::time::timeout(Duration::from_secs(10), log.append(rec(1))).await.expect("the writer is not stalled").unwrap();
            assert_eq!(seq, 2, "polls {polls}, round {round}: the dropped caller's record was written before this one");
            let report = store.verify_audit(&public).await.unwrap();
            assert!(report.ok() && report.records == 2, "polls {polls}, round {round}: {report:?}");
        }
    }
}

/// With `sync = normal` a lone caller's group is written on the async worker itself (its
/// commit waits for no disk); with `full`, off the serving lanes, never there (its fsync would
/// hold the worker, and nothing says who else is waiting for it). Both chain and verify alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_without_fsync_is_written_on_the_worker_and_one_with_it_off() {
    use airlock_core::config::SyncMode;
    for (sync, on_worker) in [(SyncMode::Normal, 20), (SyncMode::Full, 0)] {
        let (_dir, store, log, public) = setup_with(sync).await;
        // The connection opens off the worker, on the first write.
        log.append(rec(0)).await.unwrap();
        let before = store.group_stats().written_on_worker();
        for i in 1..=20 {
            let log = log.clone();
            let seq = tokio::spawn(async move { log.append(rec(i)).await.unwrap() }).await.unwrap();
            assert_eq!(seq, i as i64 + 1, "{sync:?}");
        }
        assert_eq!(store.group_stats().written_on_worker() - before, on_worker, "{sync:?}");
        let report = store.verify_audit(&public).await.unwrap();
        assert!(report.ok() && report.records == 21, "{sync:?}: {report:?}");
    }
}

/// A runtime shaped like a serving lane: one worker, every thread of it joined to `lane`.
fn lane_runtime(lane: &airlock_core::lane::Lane) -> tokio::runtime::Runtime {
    let lane = lane.clone();
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).on_thread_start(move || lane.join()).enable_all().build().unwrap()
}

/// With `sync = full`, a caller whose request is the only one in flight on its lane writes its
/// group on the worker (the fsync holds up no other request); with a second request in flight
/// there, or with no request counted on the lane, off it (`block_in_place` hands the lane's
/// other tasks to another thread first). A store whose write lock is held elsewhere is waited
/// for off the worker either way.
#[test]
fn with_full_a_request_alone_on_its_lane_is_written_on_the_worker_and_one_with_company_off_it() {
    let lane = airlock_core::lane::Lane::new();
    let rt = lane_runtime(&lane);
    rt.block_on(async {
        let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Full).await;
        // The connection opens off the worker, on the first write.
        log.append(rec(0)).await.unwrap();
        let mut seq = 1;
        // (whether the caller is a counted request, other requests in flight on the lane,
        // written on the worker); a lane with no request counted tells nothing.
        for (own, others, expected) in [(true, 0, true), (true, 1, false), (false, 0, false), (true, 0, true), (true, 3, false), (true, 0, true)] {
            let others: Vec<_> = (0..others).map(|_| lane.request()).collect();
            let before = store.group_stats().written_on_worker();
            let log = log.clone();
            let lane_seen = tokio::spawn(async move {
                let _own = own.then(|| airlock_core::lane::request().expect("the runtime's threads joined the lane"));
                let seq = log.append(rec(7)).await.unwrap();
                (seq, airlock_core::lane::current().map(|l| l.in_flight()))
            })
            .await
            .unwrap();
            seq += 1;
            assert_eq!(lane_seen, (seq, Some(others.len() + usize::from(own))));
            let on_worker = store.group_stats().written_on_worker() - before;
            assert_eq!(on_worker, u64::from(expected), "own request {own}, {} other requests in flight", others.len());
        }
        // Alone on the lane, but the store is locked by another connection: not waited for on
        // the worker (a task spawned meanwhile runs on the lane's only worker), and written
        // once the lock is free.
        let release = hold_write_lock(&store).await;
        let before = store.group_stats().written_on_worker();
        let waiting = {
            let log = log.clone();
            tokio::spawn(async move {
                let _own = airlock_core::lane::request().expect("the runtime's threads joined the lane");
                log.append(rec(8)).await
            })
        };
        tokio::time::sleep(QUEUE_UP).await;
        assert!(!waiting.is_finished(), "the store is locked: the record cannot be written yet");
        tokio::spawn(async move { drop(release) }).await.unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), seq + 1);
        assert_eq!(store.group_stats().written_on_worker(), before, "the locked store's group was written off the worker");
        let report = store.verify_audit(&public).await.unwrap();
        assert!(report.ok() && report.records == seq as u64 + 1, "{report:?}");
    });
    assert_eq!(lane.in_flight(), 0);
}

/// Commits on the worker do not checkpoint (a checkpoint copies WAL pages into the database
/// and syncs both), yet the WAL stays bounded: every 64th lone group is written off the worker
/// with SQLite's automatic checkpoint on. 3,000 lone records write some 9,000 WAL pages; with
/// no checkpoint the WAL file would hold them all (it is reused from its start after one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_on_the_worker_leave_checkpoints_to_the_others_and_the_wal_bounded() {
    let (dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
    const N: usize = 3000;
    for i in 0..N {
        let log = log.clone();
        tokio::spawn(async move { log.append(rec(i)).await.unwrap() }).await.unwrap();
    }
    let on_worker = store.group_stats().written_on_worker() as usize;
    assert!((N - N / 64 - 1..N).contains(&on_worker), "{on_worker} of {N} lone groups on the worker");
    let wal = std::fs::metadata(dir.path().join("store.db-wal")).unwrap().len();
    // SQLite checkpoints once the WAL holds 1,000 pages; 64 groups add a few hundred more.
    assert!(wal < 12 << 20, "the WAL file is {wal} bytes: not checkpointed");
    let report = store.verify_audit(&public).await.unwrap();
    assert!(report.ok() && report.records == N as u64, "{report:?}");
}

/// A caller that finds the store's write lock held by another connection does not wait for it
/// on the worker: with one worker thread, a task spawned while the caller waits runs at once,
/// and the record is written once the lock is free. Waiting on the worker would hold the only
/// worker in SQLite's busy wait (the writer's busy timeout is 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_commit_that_finds_the_store_locked_waits_off_the_worker() {
    let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
    log.append(rec(0)).await.unwrap();
    let release = hold_write_lock(&store).await;
    let before = store.group_stats().written_on_worker();
    let waiting = {
        let log = log.clone();
        tokio::spawn(async move { log.append(rec(1)).await })
    };
    // The test's own thread is no worker: sleeping on it leaves the worker to the append,
    // which reaches the lock meanwhile.
    std::thread::sleep(QUEUE_UP);
    assert!(!waiting.is_finished(), "the store is locked: the record cannot be written yet");
    let asked = std::time::Instant::now();
    // A task on the only worker, which frees the lock.
    tokio::spawn(async move { drop(release) }).await.unwrap();
    let held = asked.elapsed();
    assert!(held < Duration::from_secs(5), "the only worker was held {held:?}: the append waited for the lock on it");
    assert_eq!(waiting.await.unwrap().unwrap(), 2);
    assert_eq!(store.group_stats().written_on_worker(), before, "the locked store's group was written off the worker");
    // The lock is free again: the next lone record is written on the worker.
    let log2 = log.clone();
    assert_eq!(tokio::spawn(async move { log2.append(rec(2)).await.unwrap() }).await.unwrap(), 3);
    assert_eq!(store.group_stats().written_on_worker(), before + 1);
    assert!(store.verify_audit(&public).await.unwrap().ok());
}

/// One caller at a time, so that every operation is a group of its own (the writer's path
/// without savepoints): a lone create whose id is taken fails with its own error and leaves
/// nothing, a lone wrong proof burns nothing, and the operations after them commit and chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_operation_that_fails_leaves_nothing_and_the_next_commits() {
    let (_dir, store, log, public) = setup().await;
    store.create_share(&share(&id(1), 1)).await.unwrap();
    assert_eq!(log.append(rec(0)).await.unwrap(), 1);
    for round in 0..3 {
        let taken = store.create_share(&share(&id(1), 5)).await;
        assert!(matches!(taken, Err(StoreError::Conflict(_))), "round {round}: {taken:?}");
        assert_eq!(store.share_views_left(&id(1)).await.unwrap(), Some(1), "the failed create changed nothing");
        assert!(store.consume_share(&id(1), &[8; 32], None).await.unwrap().is_none());
        assert_eq!(log.append(rec(round + 1)).await.unwrap(), round as i64 + 2);
    }
    assert_eq!(count(&store, "SELECT COUNT(*) FROM shares").await, 1);
    assert!(store.consume_share(&id(1), &[7; 32], None).await.unwrap().is_some());
    assert!(store.consume_share(&id(1), &[7; 32], None).await.unwrap().is_none(), "burned once");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_checkpoints").await, 4, "one checkpoint per record's group");
    assert!(store.verify_audit(&public).await.unwrap().ok());
}

/// One operation of a generated workload, on share slot `0..4`.
#[derive(Clone, Debug)]
enum Step {
    Append,
    /// A create of the slot's share with this many views (a taken id fails alone).
    Create(u32),
    /// A consume of the slot's share with the right proof (`true`) or a wrong one.
    Consume(bool),
}

fn step() -> impl proptest::strategy::Strategy<Value = (Step, usize)> {
    use proptest::prelude::*;
    (prop_oneof![Just(Step::Append), (1u32..4).prop_map(Step::Create), any::<bool>().prop_map(Step::Consume)], 0usize..4)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Whatever mix of appends, creates and consumes arrives, one at a time (each its own group,
    /// written without a savepoint) or all at once (grouped: all under one savepoint, and again
    /// each under its own when one of them fails): every append
    /// gets the next sequence number once and the chain verifies; of the creates of one id
    /// exactly the first to commit succeeds and the rest fail alone with `Conflict`; a share is
    /// burned by exactly as many right proofs as it has views and never by a wrong one. Under
    /// either sync mode: with `normal` a lone group is written on the worker itself.
    #[test]
    fn any_mix_of_operations_commits_as_a_model_says(
        batches in proptest::collection::vec((proptest::collection::vec(step(), 1..12), proptest::bool::ANY), 1..6),
        full in proptest::bool::ANY,
    ) {
        use airlock_core::config::SyncMode;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let (_dir, store, log, public) = setup_with(if full { SyncMode::Full } else { SyncMode::Normal }).await;
            // The model: views given by the create that won, right-proof consumes, appends.
            let mut views: [Option<u32>; 4] = [None; 4];
            let mut burns = [0u32; 4];
            let mut appends = 0i64;
            let mut seqs = Vec::new();
            for (batch, together) in batches {
                let mut tasks = Vec::new();
                for (st, slot) in batch.clone() {
                    let (store, log) = (store.clone(), log.clone());
                    let op = async move {
                        match st {
                            Step::Append => (slot, Some(log.append(rec(slot)).await.unwrap()), None, None),
                            Step::Create(v) => (slot, None, Some(store.create_share(&share(&id(slot), v)).await), None),
                            Step::Consume(right) => {
                                let proof = if right { [7u8; 32] } else { [8u8; 32] };
                                (slot, None, None, Some((right, store.consume_share(&id(slot), &proof, None).await.unwrap().is_some())))
                            }
                        }
                    };
                    if together {
                        tasks.push(tokio::spawn(op));
                    } else {
                        let out = op.await;
                        tasks.push(tokio::spawn(async move { out }));
                    }
                }
                // Creates and consumes of one slot in one concurrent batch commit in an order the
                // model cannot know; it checks them against what was committed.
                let mut created = [0usize; 4];
                let mut conflicts = [0usize; 4];
                let mut right_burns = [0u32; 4];
                for t in tasks {
                    let (slot, seq, create, consume) = t.await.unwrap();
                    if let Some(s) = seq {
                        seqs.push(s);
                        appends += 1;
                    }
                    match create {
                        Some(Ok(())) => created[slot] += 1,
                        Some(Err(StoreError::Conflict(_))) => conflicts[slot] += 1,
                        Some(Err(e)) => panic!("a create failed with {e}"),
                        None => {}
                    }
                    if let Some((right, burned)) = consume {
                        assert!(right || !burned, "a wrong proof burned slot {slot}");
                        right_burns[slot] += u32::from(burned);
                    }
                }
                for slot in 0..4 {
                    let creates: Vec<u32> = batch.iter().filter_map(|(s, n)| match s { Step::Create(v) if *n == slot => Some(*v), _ => None }).collect();
                    if views[slot].is_none() && !creates.is_empty() {
                        assert_eq!(created[slot], 1, "exactly one create of slot {slot} wins");
                        assert_eq!(conflicts[slot], creates.len() - 1);
                        // Which one won shows in the views it gave: a later batch checks them.
                        let left = store.share_views_left(&id(slot)).await.unwrap().unwrap_or(0) + right_burns[slot];
                        assert!(creates.contains(&left), "slot {slot}: {left} views from none of {creates:?}");
                        views[slot] = Some(left);
                    } else {
                        assert_eq!(created[slot], 0, "a taken id was created again (slot {slot})");
                        assert_eq!(conflicts[slot], creates.len());
                    }
                    burns[slot] += right_burns[slot];
                    let total = views[slot].unwrap_or(0);
                    assert!(burns[slot] <= total, "slot {slot} burned {} times with {total} views", burns[slot]);
                    let rights = batch.iter().filter(|(s, n)| *n == slot && matches!(s, Step::Consume(true))).count() as u32;
                    if !together {
                        // One at a time, every right proof burns while views are left.
                        assert_eq!(store.share_views_left(&id(slot)).await.unwrap().unwrap_or(0), total - burns[slot]);
                    }
                    assert!(right_burns[slot] <= rights);
                }
            }
            seqs.sort();
            assert_eq!(seqs, (1..=appends).collect::<Vec<i64>>(), "every append once, in one chain");
            assert!(store.verify_audit(&public).await.unwrap().ok());
        });
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Whatever subset of callers goes away after the first poll of their appends (some at the
    /// turn holder's yield, some queued behind it, some already answered), on a writer quiet or
    /// crowded: every record polled once is written exactly once, each caller still there gets
    /// its own place in the chain, the chain verifies, and the next caller is not stalled.
    #[test]
    fn callers_gone_after_one_poll_lose_no_record_and_stall_no_one(
        gone in proptest::collection::vec(proptest::bool::ANY, 1..16),
        quiet_first in proptest::bool::ANY,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
            let before = if quiet_first { 16 } else { 0 };
            for i in 0..before {
                log.append(rec(i)).await.unwrap();
            }
            let n = gone.len();
            let log2 = log.clone();
            // On a worker, as the broker's calls are: every append polled once, in order (the
            // first may take the turn and yield, the others queue behind it); then the gone ones
            // are dropped and the rest awaited.
            let answered = tokio::spawn(async move {
                let mut kept = Vec::new();
                let mut pending = Vec::new();
                for (k, go) in gone.into_iter().enumerate() {
                    match poll_once(Box::pin(log2.append(rec(100 + k)))).await {
                        Ok(seq) => kept.push(seq.unwrap()),
                        Err(p) if !go => pending.push(p),
                        Err(p) => drop(p),
                    }
                }
                for p in pending {
                    kept.push(p.await.unwrap());
                }
                kept
            })
            .await
            .unwrap();
            let mut seqs = answered.clone();
            seqs.sort();
            seqs.dedup();
            assert_eq!(seqs.len(), answered.len(), "a place in the chain given twice: {answered:?}");
            let range = (before as i64 + 1)..=(before + n) as i64;
            assert!(seqs.iter().all(|s| range.contains(s)), "{seqs:?} outside {range:?}");
            let next = tokio::time::timeout(Duration::from_secs(10), log.append(rec(999))).await.expect("the writer is not stalled").unwrap();
            assert_eq!(next, (before + n) as i64 + 1, "every record polled once was written before the next");
            let report = store.verify_audit(&public).await.unwrap();
            assert!(report.ok() && report.records == (before + n + 1) as u64, "{report:?}");
        });
    }
}

/// One operation of a group forced together behind a held write lock.
#[derive(Clone, Debug)]
enum InGroup {
    Append,
    /// A create of the id every case starts with: it fails, and the group runs again operation
    /// by operation.
    CreateTaken,
    /// A create of an id of its own.
    CreateNew,
    /// A consume of the starting share (one view) with the right proof or a wrong one.
    Consume(bool),
}

fn in_group() -> impl proptest::strategy::Strategy<Value = InGroup> {
    use proptest::prelude::*;
    prop_oneof![Just(InGroup::Append), Just(InGroup::CreateTaken), Just(InGroup::CreateNew), any::<bool>().prop_map(InGroup::Consume)]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 10, ..Default::default() })]

    /// Any mix of operations, the failing ones (creates of a taken id) anywhere in it, queued
    /// into one group: the group's pass under one savepoint fails at the first of them, and the
    /// run again one savepoint an operation answers each as if it had been alone. Every taken id
    /// fails with `Conflict` and every new one is created, the share is burned at most once and
    /// only by a right proof, the appends take the next sequence numbers each once (the chain's
    /// head carried from record to record across the failures), the whole lot is one group (one
    /// checkpoint), and the chain verifies.
    #[test]
    fn a_group_whose_operations_fail_anywhere_answers_each_as_if_alone(ops in proptest::collection::vec(in_group(), 1..16)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        rt.block_on(async move {
            let (_dir, store, log, public) = setup_with(airlock_core::config::SyncMode::Normal).await;
            store.create_share(&share(&id(0), 1)).await.unwrap();
            let release = hold_write_lock(&store).await;
            // The first caller takes the turn and waits on the lock; the others queue as one group.
            let opener = { let log = log.clone(); tokio::spawn(async move { log.append(rec(0)).await.unwrap() }) };
            tokio::time::sleep(QUEUE_UP / 4).await;
            let tasks: Vec<_> = ops.iter().cloned().enumerate().map(|(k, op)| {
                let (store, log) = (store.clone(), log.clone());
                tokio::spawn(async move {
                    match op {
                        InGroup::Append => format!("seq {}", log.append(rec(k + 1)).await.unwrap()),
                        InGroup::CreateTaken => format!("{:?}", store.create_share(&share(&id(0), 1)).await.map_err(|e| matches!(e, StoreError::Conflict(_)))),
                        InGroup::CreateNew => format!("{:?}", store.create_share(&share(&id(100 + k), 1)).await.map_err(|e| e.to_string())),
                        InGroup::Consume(right) => {
                            let proof = if right { [7u8; 32] } else { [8u8; 32] };
                            format!("{right} {}", store.consume_share(&id(0), &proof, None).await.unwrap().is_some())
                        }
                    }
                })
            }).collect();
            tokio::time::sleep(QUEUE_UP).await;
            drop(release);
            let mut seqs = vec![opener.await.unwrap()];
            let mut burns = 0;
            for (op, t) in ops.iter().zip(tasks) {
                let out = t.await.unwrap();
                match op {
                    InGroup::Append => seqs.push(out.strip_prefix("seq ").unwrap().parse::<i64>().unwrap()),
                    InGroup::CreateTaken => assert_eq!(out, "Err(true)", "a taken id is a conflict"),
                    InGroup::CreateNew => assert_eq!(out, "Ok(())"),
                    InGroup::Consume(right) => {
                        if out.ends_with("true") {
                            assert!(right, "a wrong proof burned the share");
                            burns += 1;
                        }
                    }
                }
            }
            let rights = ops.iter().filter(|o| matches!(o, InGroup::Consume(true))).count();
            assert_eq!(burns, rights.min(1), "a one-view share is burned once when a right proof comes");
            for (k, op) in ops.iter().enumerate() {
                if let InGroup::CreateNew = op {
                    assert_eq!(store.share_views_left(&id(100 + k)).await.unwrap(), Some(1));
                }
            }
            seqs.sort();
            assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "every append once, in one chain");
            let groups = count(&store, "SELECT count(*) FROM audit_checkpoints").await;
            let appends_after_opener = ops.iter().any(|o| matches!(o, InGroup::Append));
            assert_eq!(groups, if appends_after_opener { 2 } else { 1 }, "the opener's group, then one group of the rest");
            assert!(store.verify_audit(&public).await.unwrap().ok());
        });
    }
}
