//! T28: tampering with the audit trail. Every test runs on the real store: the SQLite file of a
//! data directory, and a PostgreSQL database of its own on 127.0.0.1:5432 (skipped, printing why,
//! when the server is down, unless AIRLOCK_REQUIRE_SERVICES=1).
//!
//! The column lists come from the database's own schema (`pragma_table_info` on SQLite,
//! `information_schema.columns` on PostgreSQL), never from a list in this file, so a column added
//! later is tampered with here too and must be under the hash.

use airlock_store::audit::{
    self, Anchor, AuditKey, AuditLog, AuditRecord, Decision, ExportedCheckpoint, Failure, FORMAT_CURRENT, HASHED_COLUMNS,
};
use airlock_store::Store;
use ring::signature::{Ed25519KeyPair, KeyPair};

mod common;
use common::TempDb;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Int,
    Text,
    Bytes,
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Val {
    /// A different value of the same type: what an editor of the database would write.
    fn tampered(&self) -> Val {
        match self {
            Val::Int(n) => Val::Int(n + 1000),
            Val::Text(t) => Val::Text(format!("{t}x")),
            Val::Bytes(b) => {
                let mut b = b.clone();
                *b.last_mut().expect("no empty blob in the audit tables") ^= 1;
                Val::Bytes(b)
            }
        }
    }
}

/// A store with its data directory (the audit key) and, on PostgreSQL, its database.
struct Fx {
    dir: tempfile::TempDir,
    store: Store,
    pk: Vec<u8>,
    pg: Option<TempDb>,
}

impl Fx {
    async fn sqlite() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        AuditKey::create(dir.path()).unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let pk = AuditKey::load_public(dir.path()).unwrap();
        Fx { dir, store, pk, pg: None }
    }

    async fn postgres() -> Option<Fx> {
        let db = TempDb::create().await?;
        let dir = tempfile::tempdir().unwrap();
        AuditKey::create(dir.path()).unwrap();
        let store = Store::open_postgres(&db.url, dir.path()).await.unwrap();
        let pk = AuditKey::load_public(dir.path()).unwrap();
        Some(Fx { dir, store, pk, pg: Some(db) })
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

    async fn finish(self) {
        self.store.close().await;
        if let Some(db) = self.pg {
            db.drop_db().await;
        }
    }

    /// Reopens the store (running the migrations not run yet).
    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = match &self.pg {
            Some(db) => Store::open_postgres(&db.url, self.dir.path()).await.unwrap(),
            None => Store::open(self.dir.path()).await.unwrap(),
        };
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
        match (self.store.pool(), self.store.pg_pool()) {
            (Some(p), _) => drop(sqlx::raw_sql(sql).execute(p).await.unwrap()),
            (_, Some(p)) => drop(sqlx::raw_sql(sql).execute(p).await.unwrap()),
            _ => unreachable!(),
        }
    }

    /// The columns of `table` and their types, from the database's schema.
    async fn columns(&self, table: &str) -> Vec<(String, Kind)> {
        let rows: Vec<(String, String)> = match (self.store.pool(), self.store.pg_pool()) {
            (Some(p), _) => sqlx::query_as("SELECT name, type FROM pragma_table_info(?) ORDER BY cid").bind(table).fetch_all(p).await.unwrap(),
            (_, Some(p)) => sqlx::query_as(
                "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
                 WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(p)
            .await
            .unwrap(),
            _ => unreachable!(),
        };
        assert!(!rows.is_empty(), "no table {table}");
        rows.into_iter()
            .map(|(name, ty)| {
                let kind = match ty.to_ascii_lowercase().as_str() {
                    "integer" | "bigint" => Kind::Int,
                    "text" => Kind::Text,
                    "blob" | "bytea" => Kind::Bytes,
                    other => panic!("column {table}.{name} has a type this test does not know: {other}"),
                };
                (name, kind)
            })
            .collect()
    }

    /// The value of `col` in the row of `table` with `seq`.
    async fn get(&self, table: &str, seq: i64, col: &str, kind: Kind) -> Val {
        let sql = self.sql(&format!("SELECT {col} FROM {table} WHERE seq = ?"));
        macro_rules! one {
            ($p:expr) => {
                match kind {
                    Kind::Int => Val::Int(sqlx::query_scalar(&sql).bind(seq).fetch_one($p).await.unwrap()),
                    Kind::Text => Val::Text(sqlx::query_scalar(&sql).bind(seq).fetch_one($p).await.unwrap()),
                    Kind::Bytes => Val::Bytes(sqlx::query_scalar(&sql).bind(seq).fetch_one($p).await.unwrap()),
                }
            };
        }
        match (self.store.pool(), self.store.pg_pool()) {
            (Some(p), _) => one!(p),
            (_, Some(p)) => one!(p),
            _ => unreachable!(),
        }
    }

    /// Sets `col` of the row of `table` with `seq` to `val`.
    async fn set(&self, table: &str, seq: i64, col: &str, val: &Val) {
        let sql = self.sql(&format!("UPDATE {table} SET {col} = ? WHERE seq = ?"));
        macro_rules! run {
            ($p:expr) => {{
                let q = sqlx::query(&sql);
                let q = match val {
                    Val::Int(n) => q.bind(*n),
                    Val::Text(t) => q.bind(t.clone()),
                    Val::Bytes(b) => q.bind(b.clone()),
                };
                assert_eq!(q.bind(seq).execute($p).await.unwrap().rows_affected(), 1, "{sql} {seq}");
            }};
        }
        match (self.store.pool(), self.store.pg_pool()) {
            (Some(p), _) => run!(p),
            (_, Some(p)) => run!(p),
            _ => unreachable!(),
        }
    }

    /// Every column of the row of `table` with `seq`, by name.
    async fn row(&self, table: &str, seq: i64) -> Vec<(String, Val)> {
        let mut out = Vec::new();
        for (col, kind) in self.columns(table).await {
            let v = self.get(table, seq, &col, kind).await;
            out.push((col, v));
        }
        out
    }

    /// The seq of every row of `table`, in order.
    async fn seqs(&self, table: &str) -> Vec<i64> {
        let sql = format!("SELECT seq FROM {table} ORDER BY seq");
        match (self.store.pool(), self.store.pg_pool()) {
            (Some(p), _) => sqlx::query_scalar(&sql).fetch_all(p).await.unwrap(),
            (_, Some(p)) => sqlx::query_scalar(&sql).fetch_all(p).await.unwrap(),
            _ => unreachable!(),
        }
    }

    /// Inserts a row of `table` from its columns.
    async fn insert(&self, table: &str, cols: &[(String, Val)]) {
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        let marks = vec!["?"; cols.len()].join(", ");
        let sql = self.sql(&format!("INSERT INTO {table} ({}) VALUES ({marks})", names.join(", ")));
        macro_rules! run {
            ($p:expr) => {{
                let mut q = sqlx::query(&sql);
                for (_, v) in cols {
                    q = match v {
                        Val::Int(n) => q.bind(*n),
                        Val::Text(t) => q.bind(t.clone()),
                        Val::Bytes(b) => q.bind(b.clone()),
                    };
                }
                q.execute($p).await.unwrap();
            }};
        }
        match (self.store.pool(), self.store.pg_pool()) {
            (Some(p), _) => run!(p),
            (_, Some(p)) => run!(p),
            _ => unreachable!(),
        }
    }

    fn log(&self) -> AuditLog {
        AuditLog::start(self.store.clone(), AuditKey::load(self.dir.path()).unwrap())
    }

    /// Appends records `from..to`: concurrently (commit groups of any size) or one at a time
    /// (a signed checkpoint at every record).
    async fn fill(&self, from: usize, to: usize, one_at_a_time: bool) {
        let log = self.log();
        if one_at_a_time {
            for i in from..to {
                log.append(rec(i)).await.unwrap();
            }
            return;
        }
        let tasks: Vec<_> = (from..to)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(rec(i)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }

    async fn verify(&self) -> audit::VerifyReport {
        self.store.verify_audit(&self.pk).await.unwrap()
    }

    /// Asserts the chain verifies with no finding.
    async fn assert_ok(&self, what: &str) -> audit::VerifyReport {
        let r = self.verify().await;
        assert!(r.ok(), "{} {what}: {r:?}", self.engine());
        r
    }

    /// Asserts verification names record `seq` (with `code`, when given).
    async fn assert_bad(&self, seq: i64, code: Option<Failure>, what: &str) {
        let r = self.verify().await;
        let bad = r.first_bad.unwrap_or_else(|| panic!("{} {what}: verify did not notice", self.engine()));
        assert_eq!(bad.seq, seq, "{} {what}: {bad}", self.engine());
        if let Some(code) = code {
            assert_eq!(bad.code, code, "{} {what}: {bad}", self.engine());
        }
    }
}

fn rec(i: usize) -> AuditRecord {
    let deny = i.is_multiple_of(4);
    AuditRecord {
        ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        request_id: format!("req-{i}"),
        agent: format!("bot{}", i % 3),
        parent_chain: vec!["parent".into()],
        tool: "query_db".into(),
        handle: Some("DB".into()),
        arguments: serde_json::json!({"query": format!("SELECT {i}")}),
        decision: if deny { Decision::Deny } else { Decision::Allow },
        code: deny.then(|| "handle-unavailable".into()),
        outcome: if deny { "error" } else { "ok" }.into(),
        result_bytes: 10,
        redactions: 0,
        duration_us: 5,
        policies: vec![],
        approval: None,
        peer: Some(airlock_core::Peer { uid: 1000, gid: 1000, pid: Some(4242) }),
        sandbox: None,
        identity: None,
        key_handover: None,
    }
}

/// Edits each column of record `seq` in turn (the list from the schema), asserting that verify
/// names that record, and restores it.
async fn every_column_of(fx: &Fx, seq: i64) {
    let cols = fx.columns("audit").await;
    assert!(cols.iter().any(|c| c.0 == "hash"), "{cols:?}");
    for (col, kind) in cols {
        let orig = fx.get("audit", seq, &col, kind).await;
        let bad = orig.tampered();
        fx.set("audit", seq, &col, &bad).await;
        fx.assert_bad(seq, None, &format!("after editing audit.{col} of record {seq}")).await;
        // Put it back (by its new seq when the seq itself was edited).
        let at = if col == "seq" { bad_seq(&bad) } else { seq };
        fx.set("audit", at, &col, &orig).await;
        fx.assert_ok(&format!("after restoring audit.{col} of record {seq}")).await;
    }
}

fn bad_seq(v: &Val) -> i64 {
    match v {
        Val::Int(n) => *n,
        other => panic!("seq is not an integer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_an_edit_to_any_column_of_a_record_is_found_at_that_record() {
    for fx in Fx::all().await {
        fx.fill(0, 20, false).await;
        // Keep only the newest checkpoint: the hash chain alone must find an edit in the middle.
        fx.exec("DELETE FROM audit_checkpoints WHERE seq < 20").await;
        let r = fx.assert_ok("intact").await;
        assert_eq!((r.records, r.legacy_records, r.checkpoints), (20, 0, 1));
        every_column_of(&fx, 8).await;
        every_column_of(&fx, 20).await;
        every_column_of(&fx, 1).await;
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_an_edit_to_any_column_of_a_checkpoint_is_found() {
    for fx in Fx::all().await {
        fx.fill(0, 6, true).await;
        for (col, kind) in fx.columns("audit_checkpoints").await {
            for seq in [3, 6] {
                let orig = fx.get("audit_checkpoints", seq, &col, kind).await;
                let bad = orig.tampered();
                fx.set("audit_checkpoints", seq, &col, &bad).await;
                let r = fx.verify().await;
                assert!(!r.ok(), "{} editing audit_checkpoints.{col} of {seq} went unnoticed", fx.engine());
                let at = if col == "seq" { bad_seq(&bad) } else { seq };
                fx.set("audit_checkpoints", at, &col, &orig).await;
                fx.assert_ok(&format!("after restoring audit_checkpoints.{col}")).await;
            }
        }
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_deleted_reordered_and_inserted_records_are_found() {
    for fx in Fx::all().await {
        fx.fill(0, 20, false).await;
        fx.assert_ok("intact").await;
        let saved = Saved::take(&fx).await;
        let rows = &saved.audit;

        // Deletion.
        fx.exec("DELETE FROM audit WHERE seq = 5").await;
        fx.assert_bad(5, Some(Failure::RecordMissing), "deleting record 5").await;
        saved.restore(&fx).await;

        // Reorder: records 3 and 4 swap their contents (every column but seq).
        for (col, v) in &rows[3] {
            if col != "seq" {
                fx.set("audit", 3, col, v).await;
            }
        }
        for (col, v) in &rows[2] {
            if col != "seq" {
                fx.set("audit", 4, col, v).await;
            }
        }
        fx.assert_bad(3, Some(Failure::LinkBroken), "swapping records 3 and 4").await;
        saved.restore(&fx).await;

        // Insertion before record 1.
        let mut forged = rows[0].clone();
        set_col(&mut forged, "seq", Val::Int(0));
        fx.insert("audit", &forged).await;
        fx.assert_bad(0, Some(Failure::RecordInserted), "inserting record 0").await;
        saved.restore(&fx).await;

        // Insertion in the middle, done well: the records after 10 move up by one, and the
        // forged record 11 links to record 10 with a correctly computed hash. It looks intact
        // itself; the break shows at its successor, whose link no longer matches.
        for seq in (11..=20).rev() {
            fx.set("audit", seq, "seq", &Val::Int(seq + 1)).await;
            fx.exec(&format!("UPDATE audit_checkpoints SET seq = {} WHERE seq = {seq}", seq + 1)).await;
        }
        let forged = forged_row(&rows[9], 11, "innocent");
        fx.insert("audit", &forged).await;
        fx.assert_bad(12, Some(Failure::LinkBroken), "inserting a record after record 10").await;
        saved.restore(&fx).await;

        // Insertion at the end, correctly linked and hashed but not signed.
        let forged = forged_row(&rows[19], 21, "innocent");
        fx.insert("audit", &forged).await;
        fx.assert_bad(21, Some(Failure::UnsignedTail), "appending record 21 without the key").await;
        fx.finish().await;
    }
}

/// Every row of both audit tables, to put back after a tampering.
struct Saved {
    audit: Vec<Vec<(String, Val)>>,
    checkpoints: Vec<Vec<(String, Val)>>,
}

impl Saved {
    async fn take(fx: &Fx) -> Saved {
        let mut saved = Saved { audit: Vec::new(), checkpoints: Vec::new() };
        for (table, out) in [("audit", &mut saved.audit), ("audit_checkpoints", &mut saved.checkpoints)] {
            for seq in fx.seqs(table).await {
                out.push(fx.row(table, seq).await);
            }
        }
        saved
    }

    async fn restore(&self, fx: &Fx) {
        fx.exec("DELETE FROM audit; DELETE FROM audit_checkpoints").await;
        for r in &self.audit {
            fx.insert("audit", r).await;
        }
        for r in &self.checkpoints {
            fx.insert("audit_checkpoints", r).await;
        }
        fx.assert_ok("restored").await;
    }
}

fn set_col(row: &mut [(String, Val)], col: &str, v: Val) {
    row.iter_mut().find(|c| c.0 == col).unwrap_or_else(|| panic!("no column {col}")).1 = v;
}

fn col<'a>(row: &'a [(String, Val)], col: &str) -> &'a Val {
    &row.iter().find(|c| c.0 == col).unwrap_or_else(|| panic!("no column {col}")).1
}

/// A current-format record at `seq` after `prev` (a row), for `agent`, hashed as
/// docs/audit-format.md says: what someone who knows the format but not the key can make.
fn forged_row(prev: &[(String, Val)], seq: i64, agent: &str) -> Vec<(String, Val)> {
    let Val::Bytes(prev_hash) = col(prev, "hash").clone() else { panic!() };
    let mut r = rec(1000);
    r.agent = agent.into();
    let mut row: Vec<(String, Val)> = vec![
        ("seq".into(), Val::Int(seq)),
        ("format".into(), Val::Int(FORMAT_CURRENT)),
        ("ts".into(), Val::Text(r.ts.clone())),
        ("agent".into(), Val::Text(r.agent.clone())),
        ("tool".into(), Val::Text(r.tool.clone())),
        ("decision".into(), Val::Text("allow".into())),
        ("body".into(), Val::Text(serde_json::to_string(&r).unwrap())),
        ("prev_hash".into(), Val::Bytes(prev_hash)),
    ];
    let hash = documented_row_hash(&row);
    row.push(("hash".into(), Val::Bytes(hash)));
    row
}

/// docs/audit-format.md's encoding, written again from the document.
fn documented_encoding(domain: &str, fields: &[(&str, &Val)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((domain.len() as u32).to_be_bytes());
    out.extend(domain.as_bytes());
    out.extend((fields.len() as u32).to_be_bytes());
    for (name, v) in fields {
        out.extend((name.len() as u32).to_be_bytes());
        out.extend(name.as_bytes());
        let (tag, bytes) = match v {
            Val::Int(n) => (1u8, n.to_be_bytes().to_vec()),
            Val::Text(t) => (2, t.as_bytes().to_vec()),
            Val::Bytes(b) => (3, b.clone()),
        };
        out.push(tag);
        out.extend((bytes.len() as u64).to_be_bytes());
        out.extend(bytes);
    }
    out
}

/// The documented record hash over the named columns of `row` in the documented order.
fn documented_row_hash(row: &[(String, Val)]) -> Vec<u8> {
    let order = ["seq", "format", "ts", "agent", "tool", "decision", "body", "prev_hash"];
    let fields: Vec<(&str, &Val)> = order.iter().map(|name| (*name, col(row, name))).collect();
    ring::digest::digest(&ring::digest::SHA256, &documented_encoding("airlock-audit-v2", &fields)).as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_the_stored_hash_is_the_documented_hash_of_every_column() {
    for fx in Fx::all().await {
        fx.fill(0, 5, false).await;
        assert_eq!(HASHED_COLUMNS, ["seq", "format", "ts", "agent", "tool", "decision", "body", "prev_hash"], "docs/audit-format.md");
        for seq in 1..=5 {
            let row = fx.row("audit", seq).await;
            assert_eq!(row.len(), HASHED_COLUMNS.len() + 1);
            assert_eq!(col(&row, "hash"), &Val::Bytes(documented_row_hash(&row)), "{} record {seq}", fx.engine());
        }
        fx.finish().await;
    }
}

/// The checkpoints of `fx` as an export file.
async fn export(fx: &Fx) -> (Vec<ExportedCheckpoint>, String) {
    let cps = fx.store.audit_checkpoints(0, 1_000_000).await.unwrap();
    let text: String = cps.iter().map(|c| serde_json::to_string(c).unwrap() + "\n").collect();
    (cps, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_exported_checkpoints_verify_with_the_public_key_alone_and_forgeries_are_refused() {
    for fx in Fx::all().await {
        fx.fill(0, 12, false).await;
        fx.fill(12, 15, true).await;
        let (cps, text) = export(&fx).await;
        assert!(cps.len() >= 4 && cps.last().unwrap().seq == 15, "{cps:?}");
        assert!(cps.iter().all(|c| c.format == FORMAT_CURRENT));

        // With the public key alone, by the crate's verifier...
        let r = audit::verify_checkpoint_file(&text, &fx.pk);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.checkpoints as usize, cps.len());
        // ...and by ring, from the document: the signature covers seq, hash and time.
        let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &fx.pk);
        for c in &cps {
            let hash = Val::Bytes(hex::decode(&c.hash).unwrap());
            let msg = documented_encoding("airlock-audit-checkpoint-v2", &[("seq", &Val::Int(c.seq)), ("hash", &hash), ("ts", &Val::Text(c.time.clone()))]);
            pk.verify(&msg, &hex::decode(&c.signature).unwrap()).expect("an exported checkpoint verifies with the public key alone");
        }
        // The file is also an anchor for the store's chain.
        let anchored = fx.store.verify_audit_anchored(&fx.pk, &r.anchors).await.unwrap();
        assert!(anchored.ok() && anchored.anchors as usize == cps.len(), "{anchored:?}");

        // Forgeries: an edited hash, an edited time, another key's signature, a reorder, junk.
        let line = |c: &ExportedCheckpoint| serde_json::to_string(c).unwrap();
        let last = cps.last().unwrap().clone();
        let mut edited = last.clone();
        edited.hash = hex::encode([7u8; 32]);
        let mut retimed = last.clone();
        retimed.time = "2001-01-01T00:00:00.000000Z".into();
        let other = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap();
        let mut foreign = last.clone();
        let fake_hash = hex::decode(&foreign.hash).unwrap();
        let msg = documented_encoding("airlock-audit-checkpoint-v2", &[("seq", &Val::Int(foreign.seq)), ("hash", &Val::Bytes(fake_hash)), ("ts", &Val::Text(foreign.time.clone()))]);
        foreign.signature = hex::encode(other.sign(&msg).as_ref());
        let head: String = cps[..cps.len() - 1].iter().map(|c| line(c) + "\n").collect();
        assert!(audit::verify_checkpoint_file(&format!("{head}{}\n", line(&last)), &fx.pk).ok());
        for (what, bad, code) in [
            ("an edited hash", line(&edited), Failure::ExportBadSignature),
            ("an edited time", line(&retimed), Failure::ExportBadSignature),
            ("a signature by another key", line(&foreign), Failure::ExportBadSignature),
            ("a line out of order", line(&cps[0]), Failure::ExportOutOfOrder),
            ("a line that is not a checkpoint", "{\"seq\": 99}".to_owned(), Failure::ExportMalformed),
        ] {
            // The forged line replaces the last one (the out-of-order line follows it).
            let forged = if code == Failure::ExportOutOfOrder { format!("{text}{bad}\n") } else { format!("{head}{bad}\n") };
            let r = audit::verify_checkpoint_file(&forged, &fx.pk);
            let f = r.first_bad.unwrap_or_else(|| panic!("{what} was accepted"));
            assert_eq!(f.code, code, "{what}: {f}");
        }
        // The right file with the wrong public key.
        let r = audit::verify_checkpoint_file(&text, other.public_key().as_ref());
        assert_eq!(r.first_bad.unwrap().code, Failure::ExportBadSignature);
        fx.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_truncation_to_an_earlier_checkpoint_and_a_re_signed_chain_are_caught_by_an_export() {
    for fx in Fx::all().await {
        fx.fill(0, 20, true).await;
        let (_, text) = export(&fx).await;
        let anchors: Vec<Anchor> = audit::verify_checkpoint_file(&text, &fx.pk).anchors;

        // Truncated back to record 10 with the later checkpoints gone: consistent in itself...
        fx.exec("DELETE FROM audit WHERE seq > 10").await;
        fx.exec("DELETE FROM audit_checkpoints WHERE seq > 10").await;
        fx.assert_ok("truncated to a checkpoint (only an export can tell)").await;
        // ...but not with the export.
        let r = fx.store.verify_audit_anchored(&fx.pk, &anchors).await.unwrap();
        let bad = r.first_bad.expect("the export catches the truncation");
        assert_eq!((bad.seq, bad.code), (11, Failure::Truncated), "{bad}");
        fx.finish().await;
    }

    for fx in Fx::all().await {
        fx.fill(0, 8, true).await;
        let (_, text) = export(&fx).await;
        let anchors = audit::verify_checkpoint_file(&text, &fx.pk).anchors;
        // Whoever controls the host rewrites record 3, recomputes the chain and re-signs every
        // checkpoint with a key of their own, replacing audit-signing.pub.
        let other = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap();
        let mut prev = vec![0u8; 32];
        for seq in 1..=8 {
            let mut row = fx.row("audit", seq).await;
            set_col(&mut row, "prev_hash", Val::Bytes(prev.clone()));
            if seq == 3 {
                set_col(&mut row, "agent", Val::Text("innocent".into()));
            }
            let h = documented_row_hash(&row);
            for (c, v) in [("agent", col(&row, "agent").clone()), ("prev_hash", Val::Bytes(prev.clone())), ("hash", Val::Bytes(h.clone()))] {
                fx.set("audit", seq, c, &v).await;
            }
            let Val::Text(ts) = fx.get("audit_checkpoints", seq, "ts", Kind::Text).await else { panic!() };
            let msg = documented_encoding("airlock-audit-checkpoint-v2", &[("seq", &Val::Int(seq)), ("hash", &Val::Bytes(h.clone())), ("ts", &Val::Text(ts))]);
            fx.set("audit_checkpoints", seq, "hash", &Val::Bytes(h.clone())).await;
            fx.set("audit_checkpoints", seq, "signature", &Val::Bytes(other.sign(&msg).as_ref().to_vec())).await;
            prev = h;
        }
        // Against the substituted key the chain looks fine...
        assert!(fx.store.verify_audit(other.public_key().as_ref()).await.unwrap().ok());
        // ...against the pinned key it does not, and the export names the first rewritten record.
        fx.assert_bad(1, Some(Failure::CheckpointInvalid), "a chain re-signed with another key").await;
        let r = fx.store.verify_audit_anchored(other.public_key().as_ref(), &anchors).await.unwrap();
        let bad = r.first_bad.expect("the export catches the rewrite");
        assert_eq!((bad.seq, bad.code), (3, Failure::ExportMismatch), "{bad}");
        fx.finish().await;
    }
}

/// Turns `fx` (freshly opened, empty) into a store as the previous release left it: the audit
/// tables without their `format` column and the schema version before it, holding `n` records
/// written by the previous writer's rule with a checkpoint every 4 records; then reopens it,
/// which runs the migration.
async fn make_legacy(fx: &mut Fx, n: i64) {
    fx.exec("ALTER TABLE audit DROP COLUMN format").await;
    fx.exec("ALTER TABLE audit_checkpoints DROP COLUMN format").await;
    // The audit-format migration is the eighth to last (the identity generation, the live
    // shares index, the oauth tables, the rotation tables, the key versions, the share
    // deliveries and the secret requests, all idempotent, came after it), so the previous
    // release's version is eight back.
    match fx.store.pool() {
        Some(p) => {
            let (v,): (i64,) = sqlx::query_as("PRAGMA user_version").fetch_one(p).await.unwrap();
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", v - 8)).execute(p).await.unwrap();
        }
        None => fx.exec(&format!("UPDATE airlock_schema SET version = {}", airlock_store::PG_SCHEMA_VERSION - 8)).await,
    }
    assert!(fx.columns("audit").await.iter().all(|c| c.0 != "format"));
    let key = Ed25519KeyPair::from_pkcs8(&std::fs::read(fx.dir.path().join("audit-signing.key")).unwrap()).unwrap();
    let mut prev = vec![0u8; 32];
    for seq in 1..=n {
        let r = rec(seq as usize);
        let body = serde_json::to_string(&r).unwrap();
        // The previous rule: SHA-256("airlock-audit-v1" || seq u64 BE || prev_hash || body).
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"airlock-audit-v1");
        ctx.update(&(seq as u64).to_be_bytes());
        ctx.update(&prev);
        ctx.update(body.as_bytes());
        let hash = ctx.finish().as_ref().to_vec();
        let decision = if r.decision == Decision::Allow { "allow" } else { "deny" };
        let row = [
            ("seq", Val::Int(seq)),
            ("ts", Val::Text(r.ts.clone())),
            ("agent", Val::Text(r.agent.clone())),
            ("tool", Val::Text(r.tool.clone())),
            ("decision", Val::Text(decision.into())),
            ("body", Val::Text(body)),
            ("prev_hash", Val::Bytes(prev.clone())),
            ("hash", Val::Bytes(hash.clone())),
        ]
        .map(|(c, v)| (c.to_owned(), v));
        fx.insert("audit", &row).await;
        if seq % 4 == 0 || seq == n {
            let mut msg = b"airlock-audit-checkpoint-v1".to_vec();
            msg.extend((seq as u64).to_be_bytes());
            msg.extend(&hash);
            let cp = [
                ("seq", Val::Int(seq)),
                ("hash", Val::Bytes(hash.clone())),
                ("signature", Val::Bytes(key.sign(&msg).as_ref().to_vec())),
                ("ts", Val::Text(r.ts.clone())),
            ]
            .map(|(c, v)| (c.to_owned(), v));
            fx.insert("audit_checkpoints", &cp).await;
        }
        prev = hash;
    }
    fx.reopen().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_store_from_before_the_format_verifies_and_an_edit_to_any_column_of_a_legacy_record_is_found() {
    for mut fx in Fx::all().await {
        make_legacy(&mut fx, 12).await;
        let r = fx.assert_ok("the migrated legacy store").await;
        assert_eq!((r.records, r.legacy_records, r.checkpoints, r.legacy_checkpoints), (12, 12, 3, 3), "{r:?}");
        // The chain continues in the current format from the legacy head.
        fx.fill(100, 106, true).await;
        let r = fx.assert_ok("legacy records followed by current ones").await;
        assert_eq!((r.records, r.legacy_records, r.last_seq), (18, 12, 18), "{r:?}");
        assert_eq!(fx.get("audit", 13, "format", Kind::Int).await, Val::Int(FORMAT_CURRENT));
        // A legacy export verifies too (format 1: seq and hash signed).
        let (_, text) = export(&fx).await;
        let f = audit::verify_checkpoint_file(&text, &fx.pk);
        assert!(f.ok() && f.legacy_checkpoints == 3, "{f:?}");

        // Every column of a legacy record is covered: by its hash, its link, or its hashed body.
        every_column_of(&fx, 6).await;
        every_column_of(&fx, 12).await;
        every_column_of(&fx, 13).await;
        // A legacy record relabelled as the current format fails too.
        fx.set("audit", 5, "format", &Val::Int(FORMAT_CURRENT)).await;
        fx.assert_bad(5, Some(Failure::HashMismatch), "a legacy record relabelled format 2").await;
        fx.finish().await;
    }
}
