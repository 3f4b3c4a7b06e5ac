//! T28, continued: rotating the audit signing key with a signed hand-over
//! (`AuditLog::rotate_key`, docs/audit-format.md "Signing-key rotation"). Every test runs on the
//! real store: the SQLite file of a data directory, and a PostgreSQL database of its own on
//! 127.0.0.1:5432 (skipped, printing why, when the server is down, unless
//! AIRLOCK_REQUIRE_SERVICES=1, when it fails).
//!
//! The messages and hashes an attacker or an outside verifier computes are written again here
//! from the document, not taken from the crate.

mod common;

use airlock_store::audit::{self, AuditKey, AuditLog, ExportLine, Failure, KeyHandover, VerifyReport, TOOL_KEY_ROTATED};
use airlock_store::Store;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sqlx::Connection;
use std::path::Path;

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store with its data directory (the audit key) and, on PostgreSQL, its database.
struct Fx {
    dir: tempfile::TempDir,
    store: Store,
    pg: Option<String>,
}

/// Runs `$body` with `$p` bound to whichever pool the fixture's store has.
macro_rules! on_pool {
    ($fx:expr, |$p:ident| $body:expr) => {
        match ($fx.store.pool(), $fx.store.pg_pool()) {
            (Some($p), _) => $body,
            (_, Some($p)) => $body,
            _ => unreachable!(),
        }
    };
}

/// One `audit` row, every column.
#[derive(Clone, Debug)]
struct Row {
    seq: i64,
    format: i64,
    ts: String,
    agent: String,
    tool: String,
    decision: String,
    body: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

type RowTuple = (i64, i64, String, String, String, String, String, Vec<u8>, Vec<u8>);

impl Fx {
    async fn sqlite() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        AuditKey::create(dir.path()).unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        Fx { dir, store, pg: None }
    }

    async fn postgres() -> Option<Fx> {
        let up = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect("127.0.0.1:5432"))
            .await
            .is_ok_and(|r| r.is_ok());
        if !up {
            if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("PostgreSQL at 127.0.0.1:5432 is required (AIRLOCK_REQUIRE_SERVICES=1) but unreachable");
            }
            println!("skipped on PostgreSQL: 127.0.0.1:5432 is unreachable");
            return None;
        }
        let name = new_db().await;
        let dir = tempfile::tempdir().unwrap();
        AuditKey::create(dir.path()).unwrap();
        let store = Store::open_postgres(&pg_url(&name), dir.path()).await.unwrap();
        Some(Fx { dir, store, pg: Some(name) })
    }

    /// The SQLite fixture, and the PostgreSQL one when the server is up.
    async fn all() -> Vec<Fx> {
        let mut v = vec![Fx::sqlite().await];
        v.extend(Fx::postgres().await);
        v
    }

    fn engine(&self) -> &'static str {
        self.store.engine()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn finish(self) {
        self.store.close().await;
        if let Some(name) = self.pg {
            drop_db(&name).await;
        }
    }

    /// A log signing with the key now in the data directory, as a process started now has.
    fn log(&self) -> AuditLog {
        AuditLog::start(self.store.clone(), AuditKey::load(self.path()).unwrap())
    }

    /// `sql` in SQLite's spelling, `?` numbered for PostgreSQL.
    fn sql(&self, sql: &str) -> String {
        if self.pg.is_none() {
            return sql.to_owned();
        }
        let mut n = 0;
        sql.chars()
            .map(|c| {
                if c == '?' {
                    n += 1;
                    format!("${n}")
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    async fn exec(&self, sql: &str) {
        on_pool!(self, |p| drop(sqlx::raw_sql(sql).execute(p).await.unwrap()))
    }

    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        on_pool!(self, |p| sqlx::query_scalar(&sql).fetch_one(p).await.unwrap())
    }

    async fn rows(&self) -> Vec<Row> {
        let sql = "SELECT seq, format, ts, agent, tool, decision, body, prev_hash, hash FROM audit ORDER BY seq";
        let rows: Vec<RowTuple> = on_pool!(self, |p| sqlx::query_as(sql).fetch_all(p).await.unwrap());
        rows.into_iter()
            .map(|(seq, format, ts, agent, tool, decision, body, prev_hash, hash)| Row { seq, format, ts, agent, tool, decision, body, prev_hash, hash })
            .collect()
    }

    async fn update_row(&self, r: &Row) {
        let sql = self.sql("UPDATE audit SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?");
        on_pool!(self, |p| {
            let q = sqlx::query(&sql).bind(&r.body).bind(&r.prev_hash).bind(&r.hash).bind(r.seq);
            assert_eq!(q.execute(p).await.unwrap().rows_affected(), 1);
        })
    }

    /// (seq, ts) of every stored checkpoint.
    async fn checkpoints(&self) -> Vec<(i64, String)> {
        on_pool!(self, |p| sqlx::query_as("SELECT seq, ts FROM audit_checkpoints ORDER BY seq").fetch_all(p).await.unwrap())
    }

    async fn set_checkpoint(&self, seq: i64, hash: &[u8], signature: &[u8]) {
        let sql = self.sql("UPDATE audit_checkpoints SET hash = ?, signature = ? WHERE seq = ?");
        on_pool!(self, |p| {
            let q = sqlx::query(&sql).bind(hash).bind(signature).bind(seq);
            assert_eq!(q.execute(p).await.unwrap().rows_affected(), 1);
        })
    }

    /// What someone who can write the database but holds no key can do: apply `edit` to
    /// record `seq`, then recompute its hash and every later record's link and hash (the
    /// checkpoints are left as they are).
    async fn rehash_from(&self, seq: i64, edit: impl FnOnce(&mut Row)) {
        let mut rows = self.rows().await;
        let mut edit = Some(edit);
        let mut prev = vec![0u8; 32];
        for r in rows.iter_mut() {
            if r.seq == seq {
                (edit.take().unwrap())(r);
            }
            if r.seq >= seq {
                r.prev_hash = prev.clone();
                r.hash = documented_row_hash(r);
                self.update_row(r).await;
            }
            prev = r.hash.clone();
        }
    }

    /// Re-signs every stored checkpoint of a record from `from` on with `key`, over the records'
    /// hashes as they are now: someone holding `key`.
    async fn resign_from(&self, from: i64, key: &Ed25519KeyPair) {
        let hashes: std::collections::HashMap<i64, Vec<u8>> = self.rows().await.into_iter().map(|r| (r.seq, r.hash)).collect();
        for (seq, ts) in self.checkpoints().await {
            if seq >= from {
                let hash = &hashes[&seq];
                self.set_checkpoint(seq, hash, key.sign(&documented_checkpoint_message(seq, hash, &ts)).as_ref()).await;
            }
        }
    }

    async fn verify(&self, pk: &[u8]) -> VerifyReport {
        self.store.verify_audit(pk).await.unwrap()
    }

    async fn assert_ok(&self, pk: &[u8], what: &str) -> VerifyReport {
        let r = self.verify(pk).await;
        assert!(r.ok(), "{} {what}: {r:?}", self.engine());
        r
    }

    async fn assert_bad(&self, pk: &[u8], seq: i64, code: Failure, what: &str) {
        let r = self.verify(pk).await;
        let bad = r.first_bad.unwrap_or_else(|| panic!("{} {what}: verify did not notice", self.engine()));
        assert_eq!((bad.seq, bad.code), (seq, code), "{} {what}: {bad}", self.engine());
    }

    /// The key pair in `audit-signing.key` now.
    fn key_pair(&self) -> Ed25519KeyPair {
        Ed25519KeyPair::from_pkcs8(&std::fs::read(self.path().join("audit-signing.key")).unwrap()).unwrap()
    }

    /// The export as a file.
    async fn export(&self) -> String {
        self.store.audit_export(0, 1_000_000).await.unwrap().iter().map(|l| serde_json::to_string(l).unwrap() + "\n").collect()
    }
}

fn pg_url(name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

async fn new_db() -> String {
    let name = format!("airlock_t28r_{:016x}", rand::random::<u64>());
    let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
    name
}

async fn drop_db(name: &str) {
    let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await.unwrap();
}

/// Appends records `from..to` from concurrent tasks (commit groups of any size).
async fn fill(log: &AuditLog, from: usize, to: usize) {
    let tasks: Vec<_> = (from..to)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(common::record(i, "bot")).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// docs/audit-format.md's encoding, written again from the document.
enum V<'a> {
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

fn documented_encoding(domain: &str, fields: &[(&str, V<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((domain.len() as u32).to_be_bytes());
    out.extend(domain.as_bytes());
    out.extend((fields.len() as u32).to_be_bytes());
    for (name, v) in fields {
        out.extend((name.len() as u32).to_be_bytes());
        out.extend(name.as_bytes());
        let (tag, bytes) = match v {
            V::Int(n) => (1u8, n.to_be_bytes().to_vec()),
            V::Text(t) => (2, t.as_bytes().to_vec()),
            V::Bytes(b) => (3, b.to_vec()),
        };
        out.push(tag);
        out.extend((bytes.len() as u64).to_be_bytes());
        out.extend(bytes);
    }
    out
}

fn documented_row_hash(r: &Row) -> Vec<u8> {
    let enc = documented_encoding(
        "airlock-audit-v2",
        &[
            ("seq", V::Int(r.seq)),
            ("format", V::Int(r.format)),
            ("ts", V::Text(&r.ts)),
            ("agent", V::Text(&r.agent)),
            ("tool", V::Text(&r.tool)),
            ("decision", V::Text(&r.decision)),
            ("body", V::Text(&r.body)),
            ("prev_hash", V::Bytes(&r.prev_hash)),
        ],
    );
    ring::digest::digest(&ring::digest::SHA256, &enc).as_ref().to_vec()
}

fn documented_checkpoint_message(seq: i64, hash: &[u8], ts: &str) -> Vec<u8> {
    documented_encoding("airlock-audit-checkpoint-v2", &[("seq", V::Int(seq)), ("hash", V::Bytes(hash)), ("ts", V::Text(ts))])
}

fn documented_handover_message(seq: i64, prev_hash: &[u8], previous: &[u8], next: &[u8]) -> Vec<u8> {
    documented_encoding(
        "airlock-audit-key-handover-v1",
        &[("seq", V::Int(seq)), ("prev_hash", V::Bytes(prev_hash)), ("previous", V::Bytes(previous)), ("next", V::Bytes(next))],
    )
}

fn new_pair() -> Ed25519KeyPair {
    Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap()
}

fn handover_of(body: &str) -> KeyHandover {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    serde_json::from_value(v["key_handover"].clone()).unwrap()
}

/// A chain signed by three keys: records 1..=10 by the original key, a hand-over, ten records by
/// the second key, a hand-over, ten records by the third.
struct Chain {
    /// The public keys, oldest first.
    keys: Vec<Vec<u8>>,
    /// Their key pairs (what a holder of each could sign with).
    pairs: Vec<Ed25519KeyPair>,
    /// The hand-over records.
    handovers: Vec<i64>,
}

async fn two_rotations(fx: &Fx) -> Chain {
    let log = fx.log();
    let mut keys = vec![log.public_key()];
    let mut pairs = vec![fx.key_pair()];
    let mut handovers = Vec::new();
    fill(&log, 0, 10).await;
    for round in 1..=2 {
        let r = log.rotate_key(AuditKey::stage(fx.path()).unwrap()).await.unwrap();
        assert_eq!(r.previous, keys[keys.len() - 1]);
        assert_eq!(r.seq, 11 * round as i64, "{r:?}");
        keys.push(r.next.clone());
        pairs.push(fx.key_pair());
        handovers.push(r.seq);
        fill(&log, 10 * round as usize, 10 * round as usize + 10).await;
    }
    // The data directory holds the newest key, the public file says so, nothing is left staged.
    assert_eq!(log.public_key(), keys[2]);
    assert_eq!(fx.key_pair().public_key().as_ref(), keys[2].as_slice());
    assert_eq!(AuditKey::load_public(fx.path()).unwrap(), keys[2]);
    assert!(staged_files(fx.path()).is_empty(), "{:?}", staged_files(fx.path()));
    Chain { keys, pairs, handovers }
}

fn staged_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit-signing.key.next-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_chain_rotated_twice_verifies_with_the_original_the_middle_and_the_newest_key() {
    for fx in Fx::all().await {
        let c = two_rotations(&fx).await;
        assert_eq!(c.handovers, vec![11, 22]);
        for (i, k) in c.keys.iter().enumerate() {
            let r = fx.assert_ok(k, &format!("trusting key {i}")).await;
            assert_eq!((r.records, r.handovers, r.keys, r.last_seq), (32, 2, 3, 32), "{r:?}");
        }

        // Each hand-over is what the document says: a record of tool audit_key_rotated whose
        // body names both keys, the next key's signature over (seq, prev_hash, previous, next),
        // and a checkpoint of its own signed by the previous key; later checkpoints are the
        // next key's.
        let rows = fx.rows().await;
        let cps = fx.store.audit_checkpoints(0, 1000).await.unwrap();
        for (i, &seq) in c.handovers.iter().enumerate() {
            let row = &rows[seq as usize - 1];
            assert_eq!(row.tool, TOOL_KEY_ROTATED);
            assert_eq!(row.hash, documented_row_hash(row));
            let h = handover_of(&row.body);
            assert_eq!((hex::decode(&h.previous).unwrap(), hex::decode(&h.next).unwrap()), (c.keys[i].clone(), c.keys[i + 1].clone()));
            let msg = documented_handover_message(seq, &row.prev_hash, &c.keys[i], &c.keys[i + 1]);
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &c.keys[i + 1])
                .verify(&msg, &hex::decode(&h.signature).unwrap())
                .expect("the next key signs the documented hand-over message");
            assert!(cps.iter().any(|cp| cp.seq == seq) && cps.iter().any(|cp| cp.seq == seq - 1), "the hand-over is a group of its own");
        }
        for cp in &cps {
            let era = c.handovers.iter().filter(|&&h| cp.seq > h).count();
            let msg = documented_checkpoint_message(cp.seq, &hex::decode(&cp.hash).unwrap(), &cp.time);
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &c.keys[era])
                .verify(&msg, &hex::decode(&cp.signature).unwrap())
                .unwrap_or_else(|_| panic!("{} checkpoint {} is signed by key {era}", fx.engine(), cp.seq));
        }
        // The current key is kept where every appender reads it.
        let (public, since): (Vec<u8>, i64) = on_pool!(fx, |p| sqlx::query_as("SELECT public, since_seq FROM audit_signing_key").fetch_one(p).await.unwrap());
        assert_eq!((public, since), (c.keys[2].clone(), 22));
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_log_started_before_a_rotation_reloads_the_new_key_and_one_without_it_refuses() {
    for fx in Fx::all().await {
        let other = fx.log(); // another process, started before the rotation
        // A replica whose data directory still holds only the old key.
        let stale_dir = tempfile::tempdir().unwrap();
        std::fs::copy(fx.path().join("audit-signing.key"), stale_dir.path().join("audit-signing.key")).unwrap();
        let stale = AuditLog::start(fx.store.clone(), AuditKey::load(stale_dir.path()).unwrap());
        let k0 = other.public_key();
        fill(&other, 0, 5).await;

        let rotating = fx.log();
        let r = rotating.rotate_key(AuditKey::stage(fx.path()).unwrap()).await.unwrap();
        assert_eq!(other.public_key(), k0, "nothing told the other log yet");
        fill(&other, 5, 15).await;
        assert_eq!(other.public_key(), r.next, "the other log reloaded the key at its first group after the hand-over");
        for k in [&k0, &r.next] {
            let v = fx.assert_ok(k, "after another log appended past the hand-over").await;
            assert_eq!((v.records, v.handovers), (16, 1));
        }
        // The other log's checkpoints after the hand-over are signed by the new key.
        let cps = fx.store.audit_checkpoints(r.seq, 1000).await.unwrap();
        assert!(!cps.is_empty());
        for cp in cps {
            let msg = documented_checkpoint_message(cp.seq, &hex::decode(&cp.hash).unwrap(), &cp.time);
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &r.next).verify(&msg, &hex::decode(&cp.signature).unwrap()).unwrap();
        }

        // The stale replica cannot get the new key: its group is refused, nothing is written.
        let before = (fx.count("audit").await, fx.count("audit_checkpoints").await);
        assert!(stale.append(common::record(99, "bot")).await.is_err(), "{} a retired key signed", fx.engine());
        assert_eq!((fx.count("audit").await, fx.count("audit_checkpoints").await), before);
        // Once the operator copies the new key there, it signs with it.
        std::fs::copy(fx.path().join("audit-signing.key"), stale_dir.path().join("audit-signing.key")).unwrap();
        stale.append(common::record(100, "bot")).await.unwrap();
        assert_eq!(stale.public_key(), r.next);
        fx.assert_ok(&k0, "after the stale replica got the key").await;
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_forged_or_re_made_hand_over_is_caught() {
    // The new key's signature flipped (the chain re-hashed after it by someone with no key).
    for fx in Fx::all().await {
        let c = two_rotations(&fx).await;
        let s = c.handovers[0];
        fx.rehash_from(s, |r| {
            let mut h = handover_of(&r.body);
            let mut sig = hex::decode(&h.signature).unwrap();
            sig[10] ^= 1;
            let old = serde_json::to_string(&h).unwrap();
            h.signature = hex::encode(sig);
            r.body = r.body.replace(&old, &serde_json::to_string(&h).unwrap());
        })
        .await;
        for k in &c.keys[..2] {
            fx.assert_bad(k, s, Failure::HandoverInvalid, "a hand-over whose signature was flipped").await;
        }
        fx.finish().await;
    }

    // The last hand-over's next key replaced by an attacker's, with a valid signature of the
    // attacker's key, the chain re-hashed from there and every later checkpoint re-signed by
    // the attacker; the attacker does not hold the key being retired.
    for fx in Fx::all().await {
        let c = two_rotations(&fx).await;
        let s = c.handovers[1];
        let attacker = new_pair();
        let ak = attacker.public_key().as_ref().to_vec();
        fx.rehash_from(s, |r| {
            let mut h = handover_of(&r.body);
            let old = serde_json::to_string(&h).unwrap();
            h.next = hex::encode(&ak);
            h.signature = hex::encode(attacker.sign(&documented_handover_message(s, &r.prev_hash, &c.keys[1], &ak)).as_ref());
            r.body = r.body.replace(&old, &serde_json::to_string(&h).unwrap());
        })
        .await;
        fx.resign_from(s + 1, &attacker).await;
        // Its own checkpoint still signs the genuine record: moved to the forged one, it cannot
        // be re-signed without the retiring key.
        for k in [&c.keys[0], &c.keys[1], &ak] {
            fx.assert_bad(k, s, Failure::HandoverInvalid, "a hand-over to an attacker's key").await;
        }
        let rows = fx.rows().await;
        fx.set_checkpoint(s, &rows[s as usize - 1].hash, c.pairs[0].sign(b"junk").as_ref()).await;
        fx.assert_bad(&c.keys[0], s, Failure::HandoverInvalid, "a hand-over to an attacker's key, checkpoint moved").await;
        // The key the operator pinned after the genuine rotation is in no hand-over any more.
        fx.assert_bad(&c.keys[2], c.handovers[0], Failure::UnknownKey, "trusting the genuine newest key").await;
        fx.finish().await;
    }

    // Someone holding the retired original key (leaked: why it was rotated) re-makes the chain
    // before the first hand-over, drops everything after it, and re-signs every checkpoint with
    // that key: the hand-over record still names the genuine next key, but that key's signature
    // bound the hand-over to the chain as it was.
    for fx in Fx::all().await {
        let c = two_rotations(&fx).await;
        let s = c.handovers[0];
        fx.exec(&format!("DELETE FROM audit WHERE seq > {s}; DELETE FROM audit_checkpoints WHERE seq > {s}")).await;
        fx.rehash_from(3, |r| r.body = r.body.replace("\"req-", "\"req-innocent-")).await;
        fx.resign_from(1, &c.pairs[0]).await;
        for k in &c.keys[..2] {
            fx.assert_bad(k, s, Failure::HandoverInvalid, "a chain re-made with the retired key").await;
        }
        fx.assert_bad(&c.keys[2], s, Failure::UnknownKey, "a chain re-made with the retired key, trusting the newest").await;
        // Dropping the hand-over too: the limit (docs/audit-format.md), trusting only the leaked
        // key it verifies; any key pinned after the rotation does not.
        fx.exec(&format!("DELETE FROM audit WHERE seq >= {s}; DELETE FROM audit_checkpoints WHERE seq >= {s}")).await;
        fx.assert_ok(&c.keys[0], "a chain re-made with the retired key, trusting only that key").await;
        for k in &c.keys[1..] {
            assert!(!fx.verify(k).await.ok(), "{} a chain re-made with the retired key verified with a later key", fx.engine());
        }
        fx.finish().await;
    }

    // A hand-over whose own checkpoint was deleted: nothing of the retiring key vouches for it.
    for fx in Fx::all().await {
        let c = two_rotations(&fx).await;
        let s = c.handovers[0];
        fx.exec(&format!("DELETE FROM audit_checkpoints WHERE seq = {s}")).await;
        fx.assert_bad(&c.keys[0], s, Failure::HandoverInvalid, "a hand-over without its checkpoint").await;
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_checkpoint_after_a_hand_over_signed_by_the_retired_key_is_caught() {
    for fx in Fx::all().await {
        let c = two_rotations(&fx).await;
        // The first checkpoint after the first hand-over, signed again by the original key (as a
        // process that went on signing with it would have).
        let (seq, ts) = fx.checkpoints().await.into_iter().find(|(s, _)| *s > c.handovers[0]).unwrap();
        assert!(seq < c.handovers[1]);
        let hash = fx.rows().await[seq as usize - 1].hash.clone();
        fx.set_checkpoint(seq, &hash, c.pairs[0].sign(&documented_checkpoint_message(seq, &hash, &ts)).as_ref()).await;
        for k in &c.keys {
            fx.assert_bad(k, seq, Failure::CheckpointRetiredKey, "a checkpoint signed by the retired key").await;
        }
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_trusted_key_the_chain_does_not_name_is_unknown() {
    for fx in Fx::all().await {
        let c = two_rotations(&fx).await;
        let stranger = new_pair();
        fx.assert_bad(stranger.public_key().as_ref(), c.handovers[0], Failure::UnknownKey, "a key the chain never named").await;
        // The export says the same.
        let f = audit::verify_checkpoint_file(&fx.export().await, stranger.public_key().as_ref());
        assert_eq!(f.first_bad.map(|b| b.code), Some(Failure::UnknownKey));
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_an_export_spans_the_rotations_and_its_hand_over_lines_cannot_be_forged() {
    for fx in Fx::all().await {
        let c = two_rotations(&fx).await;
        let text = fx.export().await;
        let lines: Vec<&str> = text.lines().collect();
        let kinds: Vec<bool> = lines.iter().map(|l| matches!(ExportLine::parse(l).unwrap(), ExportLine::Handover(_))).collect();
        assert_eq!(kinds.iter().filter(|h| **h).count(), 2, "{text}");
        for (i, k) in c.keys.iter().enumerate() {
            let f = audit::verify_checkpoint_file(&text, k);
            assert!(f.ok() && f.handovers == 2 && f.keys == 3 && f.last.as_ref().unwrap().seq == 32, "key {i}: {f:?}");
            // And the file anchors the store's chain under any of the keys.
            let r = fx.store.verify_audit_anchored(k, &f.anchors).await.unwrap();
            assert!(r.ok() && r.anchors == f.checkpoints, "key {i}: {r:?}");
        }
        // Incremental exports concatenate into the same file.
        let first = fx.store.audit_export(0, 3).await.unwrap();
        let ExportLine::Checkpoint(last) = first.last().unwrap() else { panic!() };
        let rest = fx.store.audit_export(last.seq, 1_000_000).await.unwrap();
        let joined: String = first.iter().chain(&rest).map(|l| serde_json::to_string(l).unwrap() + "\n").collect();
        assert_eq!(joined, text);

        let h = kinds.iter().position(|h| *h).unwrap();
        let with = |i: usize, line: String| -> String {
            let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            v[i] = line;
            v.join("\n") + "\n"
        };
        let without = |i: usize| -> String { lines.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, l)| format!("{l}\n")).collect() };
        let edit = |f: &dyn Fn(&mut serde_json::Value)| -> String {
            let mut v: serde_json::Value = serde_json::from_str(lines[h]).unwrap();
            f(&mut v);
            v.to_string()
        };
        // The body's hand-over signature flipped, and the line's hash recomputed to match.
        let flipped = edit(&|v| {
            let body = v["body"].as_str().unwrap().to_owned();
            let hh = handover_of(&body);
            let mut sig = hex::decode(&hh.signature).unwrap();
            sig[0] ^= 0x80;
            let body = body.replace(&hh.signature, &hex::encode(sig));
            rehash_line(v, body);
        });
        // The next key replaced by an attacker's, signed by it, the hash recomputed.
        let attacker = new_pair();
        let forged = edit(&|v| {
            let body = v["body"].as_str().unwrap().to_owned();
            let hh = handover_of(&body);
            let ak = attacker.public_key().as_ref().to_vec();
            let prev = hex::decode(v["prev_hash"].as_str().unwrap()).unwrap();
            let sig = attacker.sign(&documented_handover_message(v["seq"].as_i64().unwrap(), &prev, &c.keys[0], &ak));
            let body = body.replace(&hh.next, &hex::encode(&ak)).replace(&hh.signature, &hex::encode(sig.as_ref()));
            rehash_line(v, body);
        });
        // Someone holding the retired original key re-makes the history before the first
        // hand-over (a new prev_hash for it), re-signs its checkpoint and drops what follows:
        // only the next key's signature, bound to the old prev_hash, tells.
        let remade = {
            let mut hv: serde_json::Value = serde_json::from_str(lines[h]).unwrap();
            hv["prev_hash"] = hex::encode([0x5a; 32]).into();
            let body = hv["body"].as_str().unwrap().to_owned();
            rehash_line(&mut hv, body);
            let mut cv: serde_json::Value = serde_json::from_str(lines[h + 1]).unwrap();
            let hash = hex::decode(hv["hash"].as_str().unwrap()).unwrap();
            let msg = documented_checkpoint_message(cv["seq"].as_i64().unwrap(), &hash, cv["time"].as_str().unwrap());
            cv["hash"] = hv["hash"].clone();
            cv["signature"] = hex::encode(c.pairs[0].sign(&msg).as_ref()).into();
            let head: String = lines[..h].iter().map(|l| format!("{l}\n")).collect();
            format!("{head}{hv}\n{cv}\n")
        };
        for (what, file, key, code) in [
            ("a hand-over re-made with the retired key", remade.clone(), &c.keys[1], Failure::HandoverInvalid),
            ("a hand-over re-made with the retired key", remade, &c.keys[0], Failure::HandoverInvalid),
            ("a flipped hand-over signature", with(h, flipped.clone()), &c.keys[0], Failure::HandoverInvalid),
            ("a flipped hand-over signature", with(h, flipped), &c.keys[2], Failure::HandoverInvalid),
            ("a hand-over to an attacker's key", with(h, forged.clone()), &c.keys[0], Failure::HandoverInvalid),
            ("a hand-over to an attacker's key", with(h, forged.clone()), &c.keys[1], Failure::HandoverInvalid),
            ("a hand-over to an attacker's key", with(h, forged), &c.keys[2], Failure::HandoverInvalid),
            ("a hand-over line without its checkpoint", without(h + 1), &c.keys[0], Failure::HandoverInvalid),
            ("the first hand-over line removed", without(h), &c.keys[0], Failure::UnknownKey),
            ("the first hand-over line removed", without(h), &c.keys[2], Failure::ExportBadSignature),
            ("an unknown line kind", with(h, lines[h].replace("\"key_handover\"", "\"key_handover2\"")), &c.keys[0], Failure::ExportMalformed),
        ] {
            let f = audit::verify_checkpoint_file(&file, key);
            let bad = f.first_bad.unwrap_or_else(|| panic!("{} {what} was accepted", fx.engine()));
            assert_eq!(bad.code, code, "{what}: {bad}");
        }
        fx.finish().await;
    }
}

/// Sets the body of an exported hand-over line and recomputes its hash (the documented rule).
fn rehash_line(v: &mut serde_json::Value, body: String) {
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    let row = Row {
        seq: v["seq"].as_i64().unwrap(),
        format: v["format"].as_i64().unwrap(),
        ts: s("ts"),
        agent: s("agent"),
        tool: s("tool"),
        decision: s("decision"),
        body: body.clone(),
        prev_hash: hex::decode(s("prev_hash")).unwrap(),
        hash: vec![],
    };
    v["body"] = body.into();
    v["hash"] = hex::encode(documented_row_hash(&row)).into();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_rotation_killed_at_any_point_leaves_a_chain_that_signs_on() {
    for fx in Fx::all().await {
        let log = fx.log();
        fill(&log, 0, 3).await;
        let k0 = log.public_key();

        // Killed after staging, before the commit: the chain still names the old key, which
        // signs on; the staged file is left alone.
        let abandoned = AuditKey::stage(fx.path()).unwrap();
        let abandoned_pk = abandoned.public_key();
        drop(abandoned);
        fill(&log, 3, 6).await;
        fx.assert_ok(&k0, "a rotation killed before its commit").await;
        assert_eq!(staged_files(fx.path()), vec![format!("audit-signing.key.next-{}", hex::encode(&abandoned_pk))]);
        std::fs::remove_file(fx.path().join(&staged_files(fx.path())[0])).unwrap();

        // Killed after the commit, before the files were replaced (the key and the public file
        // still the retired key's), and after the public file but before the key: put the
        // files back in each of those states; a process started now (with the retired key in
        // audit-signing.key) finishes the renames at its first group and signs with the new
        // key.
        let mut keys = vec![k0.clone()];
        for pub_replaced in [false, true] {
            let retired_file = std::fs::read(fx.path().join("audit-signing.key")).unwrap();
            let r = fx.log().rotate_key(AuditKey::stage(fx.path()).unwrap()).await.unwrap();
            let staged = fx.path().join(format!("audit-signing.key.next-{}", hex::encode(&r.next)));
            std::fs::rename(fx.path().join("audit-signing.key"), &staged).unwrap();
            std::fs::write(fx.path().join("audit-signing.key"), &retired_file).unwrap();
            if !pub_replaced {
                std::fs::write(fx.path().join("audit-signing.pub"), format!("{}\n", hex::encode(&r.previous))).unwrap();
            }
            // `audit verify` with the data directory's public file works meanwhile.
            fx.assert_ok(&AuditKey::load_public(fx.path()).unwrap(), "between the commit and the renames").await;
            let restarted = fx.log();
            assert_eq!(restarted.public_key(), r.previous);
            fill(&restarted, 0, 4).await;
            assert_eq!(restarted.public_key(), r.next);
            assert_eq!(fx.key_pair().public_key().as_ref(), r.next.as_slice());
            assert_eq!(AuditKey::load_public(fx.path()).unwrap(), r.next);
            assert!(staged_files(fx.path()).is_empty());
            keys.push(r.next);
            for k in &keys {
                fx.assert_ok(k, "after a restart finished the rotation").await;
            }
        }
        let v = fx.assert_ok(&k0, "at the end").await;
        assert_eq!((v.handovers, v.keys), (2, 3));
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_rotated_sqlite_store_migrates_to_postgres_with_its_current_key() {
    let lite = Fx::sqlite().await;
    let Some(pg) = Fx::postgres().await else { return lite.finish().await };
    let c = two_rotations(&lite).await;
    lite.store.copy_into(&pg.store).await.unwrap();
    for k in &c.keys {
        pg.assert_ok(k, "the copied chain").await;
    }
    // A PostgreSQL replica with another key refuses; with the chain's current key it signs on.
    assert!(pg.log().append(common::record(1, "bot")).await.is_err(), "signed with a key the chain does not name");
    std::fs::copy(lite.path().join("audit-signing.key"), pg.path().join("audit-signing.key")).unwrap();
    pg.log().append(common::record(2, "bot")).await.unwrap();
    let r = pg.assert_ok(&c.keys[0], "the PostgreSQL chain after the copy").await;
    assert_eq!((r.records, r.handovers), (33, 2));
    lite.finish().await;
    pg.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_two_rotations_at_once_leave_the_key_file_on_the_chains_key() {
    for fx in Fx::all().await {
        let k0 = fx.log().public_key();
        for round in 0..5 {
            let (a, b) = (fx.log(), fx.log());
            let (ka, kb) = (AuditKey::stage(fx.path()).unwrap(), AuditKey::stage(fx.path()).unwrap());
            let (ra, rb) = tokio::join!(a.rotate_key(ka), b.rotate_key(kb));
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            // One after the other: the later one hands over from the earlier one's key.
            let (first, second) = if ra.seq < rb.seq { (ra, rb) } else { (rb, ra) };
            assert_eq!((second.seq, &second.previous), (first.seq + 1, &first.next), "{} round {round}", fx.engine());
            assert_eq!(fx.key_pair().public_key().as_ref(), second.next.as_slice(), "{} round {round}: the key file", fx.engine());
            assert_eq!(AuditKey::load_public(fx.path()).unwrap(), second.next);
            assert!(staged_files(fx.path()).is_empty(), "{:?}", staged_files(fx.path()));
            fill(&a, 0, 3).await;
            fill(&b, 3, 6).await;
            for k in [&k0, &first.next, &second.next] {
                fx.assert_ok(k, &format!("round {round}")).await;
            }
        }
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_rotate_key_refuses_an_unstaged_key_and_works_on_an_empty_chain() {
    let fx = Fx::sqlite().await;
    let log = fx.log();
    let other = tempfile::tempdir().unwrap();
    let unstaged = AuditKey::create(other.path()).unwrap();
    assert!(log.rotate_key(unstaged).await.is_err());
    let elsewhere = AuditKey::stage(other.path()).unwrap();
    assert!(log.rotate_key(elsewhere).await.is_err());
    assert_eq!(fx.count("audit").await, 0);
    // On an empty chain the hand-over is record 1, after the 32 zero bytes.
    let k0 = log.public_key();
    let r = log.rotate_key(AuditKey::stage(fx.path()).unwrap()).await.unwrap();
    assert_eq!(r.seq, 1);
    assert_eq!(fx.rows().await[0].prev_hash, vec![0u8; 32]);
    log.append(common::record(1, "bot")).await.unwrap();
    for k in [&k0, &r.next] {
        let v = fx.assert_ok(k, "a rotation on an empty chain").await;
        assert_eq!((v.records, v.handovers, v.keys), (2, 1, 2));
    }
    fx.finish().await;
}

mod properties {
    //! Random positions of rotations among random record counts, on SQLite (a store per case).
    use super::*;
    use proptest::prelude::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// A SQLite store with `groups[i]` records appended one at a time, a rotation after each
    /// group but the last: (fixture, every public key oldest first, hand-over seqs).
    async fn chain(groups: &[usize]) -> (Fx, Vec<Vec<u8>>, Vec<i64>) {
        let fx = Fx::sqlite().await;
        let log = fx.log();
        let mut keys = vec![log.public_key()];
        let mut handovers = Vec::new();
        for (i, &n) in groups.iter().enumerate() {
            for j in 0..n {
                log.append(common::record(j, "bot")).await.unwrap();
            }
            if i + 1 < groups.len() {
                let r = log.rotate_key(AuditKey::stage(fx.path()).unwrap()).await.unwrap();
                keys.push(r.next);
                handovers.push(r.seq);
            }
        }
        (fx, keys, handovers)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn prop_rotations_anywhere_verify_with_every_key(groups in prop::collection::vec(0usize..6, 1..5)) {
            runtime().block_on(async {
                let (fx, keys, handovers) = chain(&groups).await;
                let text = fx.export().await;
                for k in &keys {
                    let r = fx.verify(k).await;
                    assert!(r.ok() && r.handovers as usize == handovers.len(), "{groups:?}: {r:?}");
                    let f = audit::verify_checkpoint_file(&text, k);
                    assert!(f.ok() && f.handovers as usize == handovers.len(), "{groups:?}: {f:?}");
                    assert!(fx.store.verify_audit_anchored(k, &f.anchors).await.unwrap().ok());
                }
                fx.finish().await;
            });
        }

        #[test]
        fn prop_any_byte_of_a_hand_over_body_flipped_fails(groups in prop::collection::vec(0usize..4, 2..4), pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), bit in 0u8..7) {
            runtime().block_on(async {
                let (fx, keys, handovers) = chain(&groups).await;
                let s = handovers[pick.index(handovers.len())];
                let text = fx.export().await;
                let mut flipped_body = String::new();
                // In the store, re-hashed after the flip by someone with no key.
                fx.rehash_from(s, |r| {
                    let mut b = r.body.clone().into_bytes();
                    let i = at.index(b.len());
                    b[i] ^= 1 << bit; // an ASCII byte stays ASCII
                    r.body = String::from_utf8(b).unwrap();
                    flipped_body = r.body.clone();
                }).await;
                for k in &keys {
                    assert!(!fx.verify(k).await.ok(), "{groups:?}: a flipped byte of hand-over {s} verified");
                }
                // In an export, the line's hash recomputed to match.
                let forged: String = text
                    .lines()
                    .map(|l| {
                        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                        if v.get("kind").is_some() && v["seq"].as_i64() == Some(s) {
                            rehash_line(&mut v, flipped_body.clone());
                        }
                        v.to_string() + "\n"
                    })
                    .collect();
                for k in &keys {
                    assert!(!audit::verify_checkpoint_file(&forged, k).ok(), "{groups:?}: a flipped byte of exported hand-over {s} verified");
                }
                fx.finish().await;
            });
        }
    }
}
