//! Against the real MariaDB/MySQL at 127.0.0.1:3306 (user root, empty password, database test).

mod common;

use airlock_core::config::{HandleKind, Scope};
use airlock_core::ErrorCode;
use airlock_exec_sql::SqlExecutor;
use common::*;
use serde_json::json;
use sqlx::Executor;

const ADDR: &str = "127.0.0.1:3306";

async fn admin() -> sqlx::MySqlPool {
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .connect(MY_URL)
        .await
        .expect("admin connection")
}

async fn typed_table(a: &sqlx::MySqlPool) -> String {
    let t = unique("airlock_my_types");
    a.execute(
        format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY, tiny TINYINT, flag BOOLEAN, big BIGINT, ubig BIGINT UNSIGNED,
              f FLOAT, dbl DOUBLE, num DECIMAL(30,9), txt TEXT, vc VARCHAR(10), data VARBINARY(10), bl BLOB,
              d DATE, dt DATETIME(3), ts TIMESTAMP NULL, tm TIME, y YEAR, e ENUM('a','b'), j JSON)"
        )
        .as_str(),
    )
    .await
    .unwrap();
    a.execute(
        format!(
            "INSERT INTO {t} VALUES (1, -5, TRUE, 9007199254740993, 18446744073709551615, 1.5, 2.25,
              12345678901234567890.123456789, 'héllo', 'v', X'00FF', X'0102', '2024-02-29',
              '2024-02-29 13:14:15.500', '2024-02-29 13:14:15', '13:14:15', 2024, 'b', '{{\"a\": [1, null]}}')"
        )
        .as_str(),
    )
    .await
    .unwrap();
    a.execute(format!("INSERT INTO {t} (id) VALUES (2)").as_str())
        .await
        .unwrap();
    t
}

async fn drop_table(a: &sqlx::MySqlPool, t: &str) {
    a.execute(format!("DROP TABLE IF EXISTS {t}").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn types_and_nulls_round_trip() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let a = admin().await;
    let t = typed_table(&a).await;
    let ex = SqlExecutor::new();
    let h = handle("MY", HandleKind::Mysql, db(Scope::ReadOnly));
    let r = call(
        &ex,
        &h,
        MY_URL,
        &format!("SELECT * FROM {t} ORDER BY id"),
        vec![],
    )
    .await
    .unwrap();
    drop_table(&a, &t).await;
    assert_eq!(r["row_count"], 2);
    let row = &rows(&r)[0];
    let expected = json!([
        1,
        -5,
        true,
        9007199254740993i64,
        18446744073709551615u64,
        1.5,
        2.25,
        "12345678901234567890.123456789",
        "héllo",
        "v",
        "AP8=",
        "AQI=",
        "2024-02-29",
        "2024-02-29T13:14:15.500",
        "2024-02-29T13:14:15Z",
        "13:14:15",
        2024,
        "b"
    ]);
    for (i, want) in expected.as_array().unwrap().iter().enumerate() {
        assert_eq!(&row[i], want, "column {} ({})", i, r["columns"][i]);
    }
    // MariaDB's JSON is LONGTEXT (text); MySQL's is JSON.
    assert!(
        row[18] == json!({"a": [1, null]}) || row[18] == json!("{\"a\": [1, null]}"),
        "{}",
        row[18]
    );
    // A binary string that happens to be printable UTF-8 comes back as text (see decode.rs).
    assert!(
        rows(&r)[1].as_array().unwrap()[1..]
            .iter()
            .all(|v| v.is_null()),
        "{}",
        rows(&r)[1]
    );
}

#[tokio::test]
async fn params_are_bound_not_interpolated() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let a = admin().await;
    let t = typed_table(&a).await;
    let ex = SqlExecutor::new();
    let h = handle("MY", HandleKind::Mysql, db(Scope::ReadOnly));
    let evil = format!("x'); DROP TABLE {t}; -- \\");
    let r = call(
        &ex,
        &h,
        MY_URL,
        "SELECT ? AS s, ? AS n, ? IS NULL AS isnull",
        vec![json!(evil), json!(42), json!(null)],
    )
    .await
    .unwrap();
    assert_eq!(rows(&r)[0][0], json!(evil));
    assert_eq!(rows(&r)[0][1], json!(42));
    let r = call(
        &ex,
        &h,
        MY_URL,
        &format!("SELECT id FROM {t} WHERE txt = ? OR txt = ?"),
        vec![json!("héllo"), json!(evil)],
    )
    .await
    .unwrap();
    assert_eq!(r["rows"], json!([[1]]));
    let n: (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {t}"))
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(n.0, 2);
    drop_table(&a, &t).await;
}

#[tokio::test]
async fn read_write_commits_and_failures_roll_back() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let a = admin().await;
    let t = typed_table(&a).await;
    let ex = SqlExecutor::new();
    let h = handle("MY", HandleKind::Mysql, db(Scope::ReadWrite));
    let r = call(
        &ex,
        &h,
        MY_URL,
        &format!("INSERT INTO {t} (id, txt) VALUES (?, ?), (?, ?)"),
        vec![json!(10), json!("a"), json!(11), json!("b")],
    )
    .await
    .unwrap();
    assert_eq!(r["rows_affected"], 2);
    let e = call(
        &ex,
        &h,
        MY_URL,
        &format!("INSERT INTO {t} (id) VALUES (12), (10)"),
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::QueryFailed);
    let n: (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {t} WHERE id >= 10"))
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(n.0, 2);
    drop_table(&a, &t).await;
}

#[tokio::test]
async fn t02_read_only_handle_runs_in_a_read_only_transaction() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let ex = SqlExecutor::new();
    // `@@tx_read_only` is refused by the validator (T01); the catalog view of the session's
    // variables is open to a handle that allows catalogs.
    let mut d = db(Scope::ReadOnly);
    d.allow_catalogs = true;
    let h = handle("MY", HandleKind::Mysql, d);
    let r = call(
        &ex,
        &h,
        MY_URL,
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_VARIABLES \
         WHERE VARIABLE_NAME IN ('TX_READ_ONLY', 'TRANSACTION_READ_ONLY')",
        vec![],
    )
    .await
    .unwrap();
    assert!(!rows(&r).is_empty(), "{r}");
    for row in rows(&r) {
        assert_eq!(row[0], json!("ON"), "{r}");
    }
}

#[tokio::test]
async fn t01_mysql_catalogs_are_refused() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let ex = SqlExecutor::new();
    let h = handle("MY", HandleKind::Mysql, db(Scope::ReadOnly));
    for sql in [
        "SELECT user, password FROM mysql.user",
        "SELECT * FROM information_schema.processlist",
    ] {
        assert_eq!(
            call(&ex, &h, MY_URL, sql, vec![]).await.unwrap_err().code,
            ErrorCode::TableNotAllowed,
            "{sql}"
        );
    }
    let e = call(&ex, &h, MY_URL, "SELECT LOAD_FILE('/etc/passwd')", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::FunctionNotAllowed);
}

#[tokio::test]
async fn t20_row_cap_truncates() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.max_rows = 3;
    let h = handle("MY", HandleKind::Mysql, d);
    let r = call(&ex, &h, MY_URL, "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 50) SELECT n FROM r", vec![])
        .await
        .unwrap();
    assert_eq!(r["row_count"], 3);
    assert_eq!(r["truncated"], true);
}

#[tokio::test]
async fn t20_statement_timeout_fires() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.statement_timeout_ms = 300;
    let h = handle("MY", HandleKind::Mysql, d);
    let start = std::time::Instant::now();
    let e = call(&ex, &h, MY_URL,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000) SELECT count(*) FROM r a, r b, r c", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamTimeout, "{e} {:?}", e.detail);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(call(&ex, &h, MY_URL, "SELECT 1", vec![]).await.is_ok());
}

#[tokio::test]
async fn t12_connection_error_hides_dsn_and_password() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let ex = SqlExecutor::new();
    let h = handle("MYBAD", HandleKind::Mysql, db(Scope::ReadOnly));
    let password = "Canary-Pw-91b0e4";
    let dsn = format!("mysql://root:{password}@127.0.0.1:3306/test");
    let e = call(&ex, &h, &dsn, "SELECT 1", vec![]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable, "{e} {:?}", e.detail);
    for shown in [e.message.as_str(), &e.to_string()] {
        assert!(
            !shown.contains(password) && !shown.contains("mysql://") && !shown.contains("root"),
            "{shown}"
        );
    }
    assert!(!e.detail.unwrap_or_default().contains(password));
}

/// T26: a named lock a call takes with an allowed `GET_LOCK` belongs to its session, and the
/// session is closed after the call: the lock is free for everyone else, and the next call
/// through the handle does not hold it.
#[tokio::test]
async fn t26_a_named_lock_ends_with_the_call_that_took_it() {
    if !service(ADDR, "MariaDB").await {
        return;
    }
    let a = admin().await;
    let name = unique("airlock_lock");
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadWrite);
    d.allow_functions = vec!["get_lock".into(), "is_used_lock".into()];
    let h = handle("MY_LOCK", HandleKind::Mysql, d);
    let r = call(&ex, &h, MY_URL, &format!("SELECT GET_LOCK('{name}', 0)"), vec![]).await.unwrap();
    assert_eq!(r["rows"], json!([[1]]));
    let mut free = false;
    for _ in 0..100 {
        let (f,): (i64,) = sqlx::query_as(&format!("SELECT IS_FREE_LOCK('{name}')")).fetch_one(&a).await.unwrap();
        if f == 1 {
            free = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(free, "the lock outlived the call");
    let r = call(&ex, &h, MY_URL, &format!("SELECT IS_USED_LOCK('{name}')"), vec![]).await.unwrap();
    assert_eq!(r["rows"], json!([[null]]));
}
