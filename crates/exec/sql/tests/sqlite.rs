//! Against real SQLite files in a temporary directory.

mod common;

use airlock_core::config::{HandleKind, Scope};
use airlock_core::ErrorCode;
use airlock_exec_sql::SqlExecutor;
use common::*;
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};
use std::str::FromStr;

/// A database file with one typed row and one row of NULLs; returns (dir guard, secret URL).
async fn fixture() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let url = format!("sqlite://{}", path.display());
    let mut c = SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    c.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB, flag BOOLEAN, at DATETIME);
         INSERT INTO items VALUES (1, 'héllo', 1.5, X'00FF', 1, '2024-02-29 13:14:15');
         INSERT INTO items (id) VALUES (2);
         CREATE TABLE secrets (token TEXT);
         INSERT INTO secrets VALUES ('tok');",
    )
    .await
    .unwrap();
    c.close().await.unwrap();
    (dir, url)
}

#[tokio::test]
async fn types_and_nulls_round_trip() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let h = handle("LITE", HandleKind::Sqlite, db(Scope::ReadOnly));
    let r = call(&ex, &h, &url, "SELECT * FROM items ORDER BY id", vec![])
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({
            "columns": ["id", "name", "price", "data", "flag", "at"],
            "rows": [[1, "héllo", 1.5, "AP8=", 1, "2024-02-29 13:14:15"], [2, null, null, null, null, null]],
            "row_count": 2,
            "truncated": false
        })
    );
}

#[tokio::test]
async fn params_are_bound_not_interpolated() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let h = handle("LITE", HandleKind::Sqlite, db(Scope::ReadWrite));
    let evil = "x'); DROP TABLE items; --";
    let r = call(
        &ex,
        &h,
        &url,
        "SELECT ?, ?, ?, ?, ?",
        vec![json!(evil), json!(7), json!(2.5), json!(true), json!(null)],
    )
    .await
    .unwrap();
    assert_eq!(rows(&r)[0], json!([evil, 7, 2.5, 1, null]));
    let r = call(
        &ex,
        &h,
        &url,
        "INSERT INTO items (id, name) VALUES (?, ?)",
        vec![json!(3), json!(evil)],
    )
    .await
    .unwrap();
    assert_eq!(r["rows_affected"], 1);
    let r = call(
        &ex,
        &h,
        &url,
        "SELECT name FROM items WHERE id = ?",
        vec![json!(3)],
    )
    .await
    .unwrap();
    assert_eq!(r["rows"], json!([[evil]]));
}

#[tokio::test]
async fn read_only_handle_opens_the_file_read_only() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let h = handle("LITE", HandleKind::Sqlite, db(Scope::ReadOnly));
    let r = call(&ex, &h, &url, "SELECT count(*) FROM items", vec![])
        .await
        .unwrap();
    assert_eq!(r["rows"], json!([[2]]));
    let e = call(&ex, &h, &url, "DELETE FROM items", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::StatementNotAllowed);
    // The same file through a read-write handle accepts writes.
    let w = handle("LITERW", HandleKind::Sqlite, db(Scope::ReadWrite));
    let r = call(&ex, &w, &url, "DELETE FROM items WHERE id = 2", vec![])
        .await
        .unwrap();
    assert_eq!(r["rows_affected"], 1);
}

#[tokio::test]
async fn t01_sqlite_catalog_and_allow_list() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.tables = Some(vec!["items".into()]);
    let h = handle("LITE", HandleKind::Sqlite, d);
    assert!(call(&ex, &h, &url, "SELECT name FROM main.items", vec![])
        .await
        .is_ok());
    for sql in [
        "SELECT sql FROM sqlite_master",
        "SELECT * FROM pragma_table_info('secrets')",
        "SELECT token FROM secrets",
        "SELECT * FROM items WHERE name IN (SELECT token FROM secrets)",
    ] {
        assert_eq!(
            call(&ex, &h, &url, sql, vec![]).await.unwrap_err().code,
            ErrorCode::TableNotAllowed,
            "{sql}"
        );
    }
}

#[tokio::test]
async fn t20_row_cap_truncates() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.max_rows = 5;
    let h = handle("LITE", HandleKind::Sqlite, d);
    let r = call(
        &ex,
        &h,
        &url,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r["row_count"], 5);
    assert_eq!(r["truncated"], true);
}

#[tokio::test]
async fn t20_byte_cap_truncates() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.max_bytes = 250;
    let h = handle("LITE", HandleKind::Sqlite, d);
    let r = call(&ex, &h, &url,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100) SELECT printf('%.100c', 'x') FROM r", vec![])
        .await
        .unwrap();
    assert_eq!(r["row_count"], 2);
    assert_eq!(r["truncated"], true);
}

#[tokio::test]
async fn t20_statement_timeout_fires() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.statement_timeout_ms = 300;
    let h = handle("LITE", HandleKind::Sqlite, d);
    let start = std::time::Instant::now();
    let e = call(
        &ex,
        &h,
        &url,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamTimeout, "{e} {:?}", e.detail);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The statement was interrupted, not left running: the handle answers at once.
    let start = std::time::Instant::now();
    assert_eq!(
        call(&ex, &h, &url, "SELECT 1", vec![]).await.unwrap()["rows"],
        json!([[1]])
    );
    assert!(
        start.elapsed() < std::time::Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn t12_missing_file_error_hides_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("Canary-Path-4d2e.db");
    let ex = SqlExecutor::new();
    let h = handle("LITE", HandleKind::Sqlite, db(Scope::ReadOnly));
    let e = call(
        &ex,
        &h,
        &format!("sqlite://{}", secret_path.display()),
        "SELECT 1",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable, "{e}");
    assert!(!e.message.contains("Canary-Path"), "{}", e.message);
    assert!(
        !secret_path.exists(),
        "a read-only handle must not create the file"
    );
}

#[tokio::test]
async fn connection_is_reusable_after_a_failed_statement() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let h = handle("LITE", HandleKind::Sqlite, db(Scope::ReadWrite));
    let e = call(&ex, &h, &url, "INSERT INTO items (id) VALUES (1)", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::QueryFailed);
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let n: (i64,) = sqlx::query_as("SELECT count(*) FROM items")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n.0, 2);
    for _ in 0..6 {
        assert!(call(&ex, &h, &url, "SELECT 1", vec![]).await.is_ok());
    }
}

#[tokio::test]
async fn rotated_secret_gets_a_new_pool() {
    let (_a, first) = fixture().await;
    let (_b, second) = fixture().await;
    // Tell the two files apart.
    let mut c = sqlx::SqliteConnection::connect(&second).await.unwrap();
    c.execute("UPDATE items SET name = 'second' WHERE id = 1")
        .await
        .unwrap();
    c.close().await.unwrap();
    let ex = SqlExecutor::new();
    let h = handle("LITE", HandleKind::Sqlite, db(Scope::ReadOnly));
    let q = "SELECT name FROM items WHERE id = 1";
    assert_eq!(
        call(&ex, &h, &first, q, vec![]).await.unwrap()["rows"],
        json!([["héllo"]])
    );
    assert_eq!(
        call(&ex, &h, &second, q, vec![]).await.unwrap()["rows"],
        json!([["second"]])
    );
    assert_eq!(ex.pool_count(), 1);
    ex.forget(&h.name).await;
    assert_eq!(ex.pool_count(), 0);
}

/// How a generated call ends: out of time, cut at the row cap, failed part-way through its rows,
/// or read to its end.
const ENDINGS: [&str; 4] = [
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 10000) SELECT a.n FROM s a, s b",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 200) \
     SELECT CASE WHEN n < 150 THEN n ELSE abs(-9223372036854775807 - 1) END FROM r",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 20000) SELECT count(*) FROM r",
];

/// Checks that call `i` ended as [`ENDINGS`]`[i]` says.
fn ended_as(i: usize, r: Result<serde_json::Value, airlock_core::CallError>) {
    match i {
        0 => assert_eq!(r.unwrap_err().code, ErrorCode::UpstreamTimeout),
        1 => {
            let v = r.unwrap();
            assert_eq!((v["row_count"].clone(), v["truncated"].clone()), (json!(1000), json!(true)));
        }
        2 => assert_eq!(r.unwrap_err().code, ErrorCode::QueryFailed),
        _ => assert_eq!(r.unwrap()["rows"], json!([[20000]])),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..proptest::prelude::ProptestConfig::default() })]

    /// Any order of endings on one handle, one call at a time (so each reuses the connection the
    /// last one left): each call ends by its own statement, never by what the one before left
    /// armed or stopped.
    #[test]
    fn t20_any_order_of_endings_leaves_nothing_for_the_next_call(order in proptest::collection::vec(0usize..4, 1..7)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (_dir, url) = fixture().await;
            let ex = SqlExecutor::new();
            let mut d = db(Scope::ReadOnly);
            d.statement_timeout_ms = 200;
            let h = handle("LITE", HandleKind::Sqlite, d);
            for &i in &order {
                ended_as(i, call(&ex, &h, &url, ENDINGS[i], vec![]).await);
            }
        });
    }
}

/// More calls at once than the handle has connections, mixing every ending of [`ENDINGS`]: each
/// answers as its own statement says, on connections reused after every kind of ending (a
/// deadline or a stop left armed on a reused connection would cut a read that should finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_calls_at_once_end_each_by_their_own_statement() {
    let (_dir, url) = fixture().await;
    let ex = std::sync::Arc::new(SqlExecutor::new());
    let mut d = db(Scope::ReadOnly);
    d.statement_timeout_ms = 400;
    let h = std::sync::Arc::new(handle("LITE", HandleKind::Sqlite, d));
    let mut set = tokio::task::JoinSet::new();
    for n in 0..24 {
        let (ex, h, url) = (ex.clone(), h.clone(), url.clone());
        set.spawn(async move { (n % 4, call(&ex, &h, &url, ENDINGS[n % 4], vec![]).await) });
    }
    while let Some(r) = set.join_next().await {
        let (i, r) = r.unwrap();
        ended_as(i, r);
    }
    // And one at a time afterwards, on the same connections.
    for _ in 0..8 {
        ended_as(3, call(&ex, &h, &url, ENDINGS[3], vec![]).await);
    }
}

/// A value as the property test stores it (no declared column type, so SQLite keeps the class).
#[derive(Debug, Clone)]
enum Stored {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Stored {
    /// What `query_db` answers for it: numbers, text as text, blobs as standard base64.
    fn json(&self) -> serde_json::Value {
        use base64::Engine as _;
        match self {
            Stored::Null => json!(null),
            Stored::Int(x) => json!(x),
            Stored::Real(x) => json!(x),
            Stored::Text(s) => json!(s),
            Stored::Blob(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }

    fn sql(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match self {
            Stored::Null => V::Null,
            Stored::Int(x) => V::Integer(*x),
            Stored::Real(x) => V::Real(*x),
            Stored::Text(s) => V::Text(s.clone()),
            Stored::Blob(b) => V::Blob(b.clone()),
        }
    }
}

fn stored() -> impl proptest::strategy::Strategy<Value = Stored> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Stored::Null),
        any::<i64>().prop_map(Stored::Int),
        // Finite and not -0.0 (JSON has no negative zero to compare).
        any::<f64>().prop_filter("finite", |x| x.is_finite() && *x != 0.0).prop_map(Stored::Real),
        ".{0,24}".prop_map(Stored::Text),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Stored::Blob),
    ]
}

/// Bytes a cell counts against `max_bytes`: text and base64 by length, other values by their JSON.
fn counted(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Null => 0,
        serde_json::Value::String(s) => s.len(),
        other => other.to_string().len(),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..proptest::prelude::ProptestConfig::default() })]

    /// Generated rows of every storage class, read under generated caps: the answer is the longest
    /// run of whole rows within both caps, each value by its class, `truncated` exactly when a row
    /// was left out, and a read-write handle's answer the same, whether the read ran on the async
    /// worker or off it. The byte cap is drawn at, just
    /// under or just over what a run of rows counts, where an off-by-one would show.
    #[test]
    fn stored_values_come_back_by_class_within_the_caps(
        table in proptest::collection::vec(proptest::collection::vec(stored(), 3), 0..12),
        max_rows in 0usize..14,
        cut in proptest::prelude::any::<proptest::sample::Index>(),
        off in -1isize..=1,
    ) {
        let mut sums = vec![0usize];
        for row in &table {
            let n: usize = row.iter().map(|v| counted(&v.json())).sum();
            sums.push(sums.last().unwrap() + n);
        }
        let max_bytes = sums[cut.index(sums.len())].saturating_add_signed(off);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE t (a, b, c)").unwrap();
            for row in &table {
                c.execute("INSERT INTO t VALUES (?1, ?2, ?3)", rusqlite::params![row[0].sql(), row[1].sql(), row[2].sql()]).unwrap();
            }
        }
        let url = format!("sqlite://{}", path.display());
        let mut want = Vec::new();
        let mut bytes = 0;
        for row in &table {
            let cells: Vec<serde_json::Value> = row.iter().map(Stored::json).collect();
            let n: usize = cells.iter().map(counted).sum();
            if want.len() == max_rows || bytes + n > max_bytes {
                break;
            }
            bytes += n;
            want.push(serde_json::Value::Array(cells));
        }
        let truncated = want.len() < table.len();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let ex = SqlExecutor::new();
            for scope in [Scope::ReadOnly, Scope::ReadWrite] {
                let mut d = db(scope);
                d.max_rows = max_rows;
                d.max_bytes = max_bytes;
                let h = handle("LITE", HandleKind::Sqlite, d);
                // The first call opens the connection off the worker; the second is tried on the
                // worker (`lite::INLINE`): both answer the same.
                for _ in 0..2 {
                    let r = call(&ex, &h, &url, "SELECT a, b, c FROM t ORDER BY rowid", vec![]).await.unwrap();
                    assert_eq!(r, json!({"columns": ["a", "b", "c"], "rows": want, "row_count": want.len(), "truncated": truncated}), "{scope:?}");
                }
            }
            assert!(ex.sqlite_runs().0 > 0, "no read was answered on the worker: {:?}", ex.sqlite_runs());
        });
    }
}

#[tokio::test]
async fn text_that_is_not_utf8_is_null_and_its_column_named() {
    let (_dir, url) = fixture().await;
    {
        let path = url.trim_start_matches("sqlite://");
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch("CREATE TABLE raw (v); INSERT INTO raw VALUES (CAST(X'FF00FE' AS TEXT)), ('ok');").unwrap();
    }
    let ex = SqlExecutor::new();
    let h = handle("LITE", HandleKind::Sqlite, db(Scope::ReadOnly));
    let r = call(&ex, &h, &url, "SELECT v FROM raw ORDER BY rowid", vec![]).await.unwrap();
    assert_eq!(r["rows"], json!([[null], ["ok"]]));
    assert_eq!(r["unsupported_columns"], json!(["v (TEXT)"]));
}

/// Whatever the URL asks (`mode=rwc`), a handle never creates its file; `mode=ro` opens it read-only
/// even on a read-write handle.
#[tokio::test]
async fn the_url_never_creates_the_file_and_mode_ro_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let ex = SqlExecutor::new();
    let h = handle("LITE", HandleKind::Sqlite, db(Scope::ReadWrite));
    let e = call(&ex, &h, &format!("sqlite://{}?mode=rwc", missing.display()), "SELECT 1", vec![]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable, "{e}");
    assert!(!missing.exists(), "the handle created its file");

    let (_d, url) = fixture().await;
    let e = call(&ex, &h, &format!("{url}?mode=ro"), "DELETE FROM items", vec![]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::QueryFailed, "{e}");
    assert!(e.message.contains("(code 8)"), "SQLITE_READONLY expected: {}", e.message);
    assert_eq!(call(&ex, &h, &url, "SELECT count(*) FROM items", vec![]).await.unwrap()["rows"], json!([[2]]));
}

/// A write that finds the database locked by another writer waits at most its statement timeout,
/// ends as a timeout with nothing written, and the handle works once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_waited_for_within_the_statement_timeout() {
    let (_dir, url) = fixture().await;
    let path = url.trim_start_matches("sqlite://").to_owned();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadWrite);
    d.statement_timeout_ms = 300;
    let h = handle("LITE", HandleKind::Sqlite, d);
    let started = std::time::Instant::now();
    let e = call(&ex, &h, &url, "INSERT INTO items (id) VALUES (10)", vec![]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamTimeout, "{e} {:?}", e.detail);
    assert!(started.elapsed() >= std::time::Duration::from_millis(250), "{:?}", started.elapsed());
    other.execute_batch("ROLLBACK").unwrap();
    let r = call(&ex, &h, &url, "INSERT INTO items (id) VALUES (10)", vec![]).await.unwrap();
    assert_eq!(r["rows_affected"], 1);
    assert_eq!(call(&ex, &h, &url, "SELECT count(*) FROM items", vec![]).await.unwrap()["rows"], json!([[3]]));
}

/// A read on an open connection is answered on the async worker; one that runs past the inline
/// budget, or finds the database locked, is run again off the worker and answers as it would have
/// (the full count, the timeout); writes always run off the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_reads_stay_on_the_worker_and_the_rest_answer_the_same_off_it() {
    let (_dir, url) = fixture().await;
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadWrite);
    d.statement_timeout_ms = 300;
    let h = handle("LITE", HandleKind::Sqlite, d);
    // The first call opens the connection, off the worker; the next reads reuse it on the worker.
    for _ in 0..3 {
        assert_eq!(call(&ex, &h, &url, "SELECT count(*) FROM items", vec![]).await.unwrap()["rows"], json!([[2]]));
    }
    assert_eq!(ex.sqlite_runs(), (2, 1));
    // Far longer than the budget: cut on the worker, run again off it, the whole count.
    let long = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 50000) SELECT count(*) FROM r";
    assert_eq!(call(&ex, &h, &url, long, vec![]).await.unwrap()["rows"], json!([[50000]]));
    assert_eq!(ex.sqlite_runs(), (2, 2));
    // A write: off the worker.
    assert_eq!(call(&ex, &h, &url, "UPDATE items SET name = 'w' WHERE id = 2", vec![]).await.unwrap()["rows_affected"], 1);
    assert_eq!(ex.sqlite_runs(), (2, 3));
    // A reader locked out (a writer elsewhere holds the exclusive lock): the try on the worker
    // does not wait; the run off it waits its statement timeout and ends as a timeout.
    let other = rusqlite::Connection::open(url.trim_start_matches("sqlite://")).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let e = call(&ex, &h, &url, "SELECT count(*) FROM items", vec![]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamTimeout, "{e} {:?}", e.detail);
    assert_eq!(ex.sqlite_runs(), (2, 4));
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(call(&ex, &h, &url, "SELECT name FROM items WHERE id = 2", vec![]).await.unwrap()["rows"], json!([["w"]]));
    assert_eq!(ex.sqlite_runs(), (3, 4));
}
