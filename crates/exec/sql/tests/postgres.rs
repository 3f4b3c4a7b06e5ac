//! Against the real PostgreSQL at 127.0.0.1:5432 (user postgres, database test).

mod common;

use airlock_core::config::{HandleKind, Scope};
use airlock_core::ErrorCode;
use airlock_exec_sql::SqlExecutor;
use common::*;
use serde_json::json;
use sqlx::Executor;

const ADDR: &str = "127.0.0.1:5432";

async fn admin() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(PG_URL)
        .await
        .expect("admin connection")
}

/// A table with one row of every common type and one row of NULLs.
async fn typed_table(a: &sqlx::PgPool) -> String {
    let t = unique("airlock_pg_types");
    a.execute(
        format!(
            "CREATE TABLE {t} (id int4 PRIMARY KEY, small int2, big int8, real4 float4, dbl float8, num numeric,
              txt text, vc varchar(10), ok bool, data bytea, d date, tm time, ts timestamp, tstz timestamptz,
              j jsonb, u uuid, iv interval, arr int4[], tarr text[], ip inet);
             INSERT INTO {t} VALUES (1, 2, 9007199254740993, 1.5, 2.25, 12345678901234567890.123456789,
              'héllo', 'v', true, '\\x00ff', '2024-02-29', '13:14:15', '2024-02-29 13:14:15.5',
              '2024-02-29 13:14:15+00', '{{\"a\": [1, null]}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
              '1 mon 2 days 3 seconds', '{{1,NULL,3}}', '{{a,b}}', '10.0.0.1');
             INSERT INTO {t} (id) VALUES (2);"
        )
        .as_str(),
    )
    .await
    .unwrap();
    t
}

async fn drop_table(a: &sqlx::PgPool, t: &str) {
    a.execute(format!("DROP TABLE IF EXISTS {t}").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn types_and_nulls_round_trip() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let a = admin().await;
    let t = typed_table(&a).await;
    let ex = SqlExecutor::new();
    let h = handle("PG", HandleKind::Postgres, db(Scope::ReadOnly));
    let r = call(
        &ex,
        &h,
        PG_URL,
        &format!("SELECT * FROM {t} ORDER BY id"),
        vec![],
    )
    .await
    .unwrap();
    drop_table(&a, &t).await;
    assert_eq!(r["columns"][0], "id");
    assert_eq!(r["columns"].as_array().unwrap().len(), 20);
    assert_eq!(r["row_count"], 2);
    assert_eq!(r["truncated"], false);
    let row = &rows(&r)[0];
    assert_eq!(row[0], 1);
    assert_eq!(row[1], 2);
    assert_eq!(row[2], 9007199254740993i64);
    assert_eq!(row[3], 1.5);
    assert_eq!(row[4], 2.25);
    assert_eq!(row[5], "12345678901234567890.123456789");
    assert_eq!(row[6], "héllo");
    assert_eq!(row[7], "v");
    assert_eq!(row[8], true);
    assert_eq!(row[9], "AP8=");
    assert_eq!(row[10], "2024-02-29");
    assert_eq!(row[11], "13:14:15");
    assert_eq!(row[12], "2024-02-29T13:14:15.500");
    assert_eq!(row[13], "2024-02-29T13:14:15Z");
    assert_eq!(row[14], json!({"a": [1, null]}));
    assert_eq!(row[15], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(
        row[16],
        json!({"months": 1, "days": 2, "microseconds": 3_000_000})
    );
    assert_eq!(row[17], json!([1, null, 3]));
    assert_eq!(row[18], json!(["a", "b"]));
    // inet has no decoder: null plus a marker naming the column and type.
    assert_eq!(row[19], json!(null));
    assert_eq!(r["unsupported_columns"], json!(["ip (INET)"]));
    let nulls = &rows(&r)[1];
    assert_eq!(nulls[0], 2);
    assert!(
        nulls.as_array().unwrap()[1..].iter().all(|v| v.is_null()),
        "{nulls}"
    );
}

#[tokio::test]
async fn empty_result_still_names_columns() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let ex = SqlExecutor::new();
    let h = handle("PG", HandleKind::Postgres, db(Scope::ReadOnly));
    let r = call(
        &ex,
        &h,
        PG_URL,
        "SELECT 1 AS one, 'x' AS two WHERE false",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        r,
        json!({"columns": ["one", "two"], "rows": [], "row_count": 0, "truncated": false})
    );
}

#[tokio::test]
async fn params_are_bound_not_interpolated() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let a = admin().await;
    let t = typed_table(&a).await;
    let ex = SqlExecutor::new();
    let h = handle("PG", HandleKind::Postgres, db(Scope::ReadWrite));
    let evil = format!("x'); DROP TABLE {t}; --");
    let r = call(&ex, &h, PG_URL, "SELECT $1::text AS s, $2::int8 AS n, $3::bool AS b, $4::float8 AS f, $5::text IS NULL AS isnull",
        vec![json!(evil), json!(42), json!(true), json!(0.5), json!(null)]).await.unwrap();
    assert_eq!(rows(&r)[0], json!([evil, 42, true, 0.5, true]));
    let r = call(
        &ex,
        &h,
        PG_URL,
        &format!("SELECT id FROM {t} WHERE txt = $1 OR txt = $2"),
        vec![json!("héllo"), json!(evil)],
    )
    .await
    .unwrap();
    assert_eq!(r["rows"], json!([[1]]));
    let still: (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {t}"))
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(still.0, 2);
    drop_table(&a, &t).await;
}

#[tokio::test]
async fn read_write_commits_and_reports_rows_affected() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let a = admin().await;
    let t = typed_table(&a).await;
    let ex = SqlExecutor::new();
    let h = handle("PG", HandleKind::Postgres, db(Scope::ReadWrite));
    let r = call(
        &ex,
        &h,
        PG_URL,
        &format!("INSERT INTO {t} (id, txt) VALUES ($1, $2), ($3, $4)"),
        vec![json!(10), json!("a"), json!(11), json!("b")],
    )
    .await
    .unwrap();
    assert_eq!(r["rows_affected"], 2);
    let r = call(
        &ex,
        &h,
        PG_URL,
        &format!("UPDATE {t} SET txt = 'z' WHERE id >= 10 RETURNING id"),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r["rows_affected"], 2);
    assert_eq!(r["row_count"], 2);
    // A failing statement leaves nothing behind.
    let e = call(
        &ex,
        &h,
        PG_URL,
        &format!("INSERT INTO {t} (id) VALUES (12), (10)"),
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::QueryFailed);
    assert!(e.message.contains("23505"), "{}", e.message);
    let n: (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {t} WHERE id >= 10"))
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(n.0, 2);
    drop_table(&a, &t).await;
}

#[tokio::test]
async fn t02_read_only_transaction_blocks_writes_even_via_function() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let a = admin().await;
    let t = typed_table(&a).await;
    let f = unique("airlock_writer");
    a.execute(format!("CREATE FUNCTION {f}() RETURNS int LANGUAGE sql VOLATILE AS $$ INSERT INTO {t} (id) VALUES (77); SELECT 1 $$").as_str())
        .await
        .unwrap();
    let ex = SqlExecutor::new();
    // The handle names the function (T25), so the read-only transaction is what stops it.
    let mut d = db(Scope::ReadOnly);
    d.allow_functions = vec![f.clone()];
    let h = handle("PG", HandleKind::Postgres, d);
    let e = call(&ex, &h, PG_URL, &format!("SELECT {f}()"), vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::QueryFailed);
    assert!(
        e.message.contains("25006"),
        "read_only_sql_transaction expected: {}",
        e.message
    );
    let n: (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {t} WHERE id = 77"))
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(n.0, 0);
    // The connection is still good afterwards.
    let r = call(&ex, &h, PG_URL, "SELECT 1", vec![]).await.unwrap();
    assert_eq!(r["rows"], json!([[1]]));
    a.execute(format!("DROP FUNCTION {f}()").as_str())
        .await
        .unwrap();
    drop_table(&a, &t).await;
}

#[tokio::test]
async fn t01_catalog_and_allow_list_hold_against_the_real_server() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let a = admin().await;
    let t = typed_table(&a).await;
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.tables = Some(vec![t.clone()]);
    let h = handle("PG", HandleKind::Postgres, d);
    assert!(call(
        &ex,
        &h,
        PG_URL,
        &format!("SELECT count(*) FROM public.{t}"),
        vec![]
    )
    .await
    .is_ok());
    for sql in [
        "SELECT rolpassword FROM pg_authid",
        "SELECT usename, passwd FROM pg_shadow",
        "SELECT * FROM information_schema.tables",
    ] {
        assert_eq!(
            call(&ex, &h, PG_URL, sql, vec![]).await.unwrap_err().code,
            ErrorCode::TableNotAllowed,
            "{sql}"
        );
    }
    let e = call(
        &ex,
        &h,
        PG_URL,
        "SELECT current_setting('data_directory')",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::FunctionNotAllowed);
    drop_table(&a, &t).await;
}

#[tokio::test]
async fn t20_row_cap_truncates() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.max_rows = 10;
    let h = handle("PG", HandleKind::Postgres, d);
    let r = call(
        &ex,
        &h,
        PG_URL,
        "SELECT g FROM generate_series(1, 100000) g",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r["row_count"], 10);
    assert_eq!(r["truncated"], true);
    assert_eq!(rows(&r)[9], json!([10]));
    let r = call(
        &ex,
        &h,
        PG_URL,
        "SELECT g FROM generate_series(1, 10) g",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        (r["row_count"].clone(), r["truncated"].clone()),
        (json!(10), json!(false))
    );
}

#[tokio::test]
async fn t20_byte_cap_truncates() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.max_bytes = 5000;
    let h = handle("PG", HandleKind::Postgres, d);
    let r = call(
        &ex,
        &h,
        PG_URL,
        "SELECT repeat('x', 1000) FROM generate_series(1, 100)",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r["row_count"], 5);
    assert_eq!(r["truncated"], true);
}

#[tokio::test]
async fn t20_statement_timeout_fires() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.statement_timeout_ms = 300;
    let h = handle("PG", HandleKind::Postgres, d);
    let start = std::time::Instant::now();
    let e = call(
        &ex,
        &h,
        PG_URL,
        "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamTimeout, "{e}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The handle keeps working.
    assert!(call(&ex, &h, PG_URL, "SELECT 1", vec![]).await.is_ok());
}

#[tokio::test]
async fn url_on_handle_takes_the_secret_as_password_and_rotation_renews_the_pool() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.url = Some(PG_URL.into());
    // current_user is session information, a catalog function (T25).
    d.allow_catalogs = true;
    let h = handle("PGPW", HandleKind::Postgres, d);
    // Trust authentication here: any password connects; what matters is the path.
    let r = call(
        &ex,
        &h,
        "first-password",
        "SELECT current_user::text",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r["rows"], json!([["postgres"]]));
    assert_eq!(ex.pool_count(), 1);
    call(&ex, &h, "second-password", "SELECT 1", vec![])
        .await
        .unwrap();
    assert_eq!(ex.pool_count(), 1);
    ex.forget(&h.name).await;
    assert_eq!(ex.pool_count(), 0);
}

#[tokio::test]
async fn t12_connection_error_hides_dsn_and_password() {
    // Needs no server: port 1 refuses.
    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.statement_timeout_ms = 1000;
    let h = handle("PGBAD", HandleKind::Postgres, d.clone());
    let password = "Canary-Pw-7f3a2c";
    let dsn = format!("postgres://postgres:{password}@127.0.0.1:1/test");
    let e = call(&ex, &h, &dsn, "SELECT 1", vec![]).await.unwrap_err();
    assert!(
        matches!(
            e.code,
            ErrorCode::UpstreamUnavailable | ErrorCode::UpstreamTimeout
        ),
        "{e}"
    );
    for shown in [e.message.as_str(), &e.to_string()] {
        assert!(
            !shown.contains(password)
                && !shown.contains("127.0.0.1:1")
                && !shown.contains("postgres://"),
            "{shown}"
        );
    }
    assert!(!e.detail.unwrap_or_default().contains(password));

    // A secret that is not a URL: refused without echoing it anywhere.
    let e = call(
        &ex,
        &h,
        &format!("not a url {password}"),
        "SELECT 1",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::SecretUnavailable);
    assert!(!e.message.contains(password) && !e.detail.unwrap_or_default().contains(password));

    // With the handle's url, the secret is the password.
    let mut d2 = d;
    d2.url = Some("postgres://postgres@127.0.0.1:1/test".into());
    let h = handle("PGBAD2", HandleKind::Postgres, d2);
    let e = call(&ex, &h, password, "SELECT 1", vec![])
        .await
        .unwrap_err();
    assert!(!e.message.contains(password) && !e.detail.unwrap_or_default().contains(password));
}

/// T25: the database enforces a read-only handle too. With `query_role`, every read runs under
/// a role granted `SELECT` on one table and one of its columns only, although the credential is
/// the superuser: a statement the validator passes (the handle allows the table and the column
/// rules are the role's, not the handle's) is refused by the server when it reaches beyond the
/// role's grants, and an allowed one runs as the role.
#[tokio::test]
async fn t25_a_query_role_makes_the_database_refuse_what_it_does_not_grant() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let a = admin().await;
    let (t, other, role) = (unique("airlock_qr_t"), unique("airlock_qr_other"), unique("airlock_qr_role"));
    a.execute(
        format!(
            "CREATE TABLE {t} (id int4, secret text); INSERT INTO {t} VALUES (1, 'hidden');
             CREATE TABLE {other} (id int4); INSERT INTO {other} VALUES (7);
             CREATE ROLE {role} NOLOGIN; GRANT SELECT (id) ON {t} TO {role};"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let mut d = db(Scope::ReadOnly);
    d.tables = Some(vec![t.clone(), other.clone()]);
    d.query_role = Some(role.clone());
    let h = handle("PG_QR", HandleKind::Postgres, d);
    let ex = SqlExecutor::new();
    let ok = call(&ex, &h, PG_URL, &format!("SELECT id FROM {t}"), vec![]).await.unwrap();
    assert_eq!(ok["rows"], json!([[1]]));
    for q in [format!("SELECT secret FROM {t}"), format!("SELECT id FROM {other}"), format!("SELECT upper(secret) FROM {t} WHERE id = 1")] {
        let e = call(&ex, &h, PG_URL, &q, vec![]).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::QueryFailed, "{q}: {e:?}");
    }
    // The same handle without the role reads everything the validator allows.
    let mut d = db(Scope::ReadOnly);
    d.tables = Some(vec![t.clone()]);
    let h = handle("PG_NO_QR", HandleKind::Postgres, d);
    let r = call(&ex, &h, PG_URL, &format!("SELECT secret FROM {t}"), vec![]).await.unwrap();
    assert_eq!(r["rows"], json!([["hidden"]]));
    a.execute(format!("DROP TABLE {t}; DROP TABLE {other}; DROP ROLE {role};").as_str()).await.unwrap();
}

/// Reads `SELECT v FROM {t}` through the handle `n` times, each on whatever session the pool
/// hands out.
async fn read_v(ex: &SqlExecutor, h: &airlock_core::config::Handle, t: &str, n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = call(ex, h, PG_URL, &format!("SELECT v FROM {t}"), vec![]).await.unwrap();
        out.push(r["rows"][0][0].clone());
    }
    out
}

/// T26: a call that changes its session (a session-level `search_path` that would point every
/// later unqualified name at a table the caller controls, through an allowed `set_config` or a
/// user-defined function on a read-only handle; a session-level advisory lock) leaves nothing
/// behind for the next call: its connection is closed, not returned to the pool.
#[tokio::test]
async fn t26_session_state_a_call_changes_never_reaches_the_next_call() {
    if !service(ADDR, "PostgreSQL").await {
        return;
    }
    let a = admin().await;
    let t = unique("airlock_sp");
    let s = unique("airlock_sp_schema");
    let f = unique("airlock_sp_fn");
    a.execute(
        format!(
            "CREATE TABLE {t} (v text); INSERT INTO {t} VALUES ('public');
             CREATE SCHEMA {s}; CREATE TABLE {s}.{t} (v text); INSERT INTO {s}.{t} VALUES ('planted');
             CREATE FUNCTION {f}() RETURNS text LANGUAGE sql AS $$ SELECT set_config('search_path', '{s}', false) $$"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let ex = SqlExecutor::new();
    let public = vec![json!("public"); 6];

    // The operator allowed set_config on a read-write handle.
    let mut d = db(Scope::ReadWrite);
    d.allow_functions = vec!["set_config".into()];
    let h = handle("PG_SP", HandleKind::Postgres, d);
    assert_eq!(read_v(&ex, &h, &t, 2).await, vec![json!("public"); 2]);
    for local in ["false", "true"] {
        let r = call(&ex, &h, PG_URL, &format!("SELECT set_config('search_path', '{s}', {local})"), vec![])
            .await
            .unwrap();
        assert_eq!(r["rows"][0][0], json!(s), "the call itself ran");
        assert_eq!(read_v(&ex, &h, &t, 6).await, public, "is_local = {local}");
    }
    // In a statement that then fails: the change is rolled back, and the session closed anyway.
    let e = call(&ex, &h, PG_URL, &format!("SELECT set_config('search_path', '{s}', false), 1 / 0"), vec![]).await;
    assert!(e.is_err());
    assert_eq!(read_v(&ex, &h, &t, 6).await, public);

    // A function the operator allowed on a read-only handle changes the session from inside.
    let mut d = db(Scope::ReadOnly);
    d.allow_functions = vec![f.clone()];
    let h = handle("PG_SP_RO", HandleKind::Postgres, d);
    let r = call(&ex, &h, PG_URL, &format!("SELECT {f}()"), vec![]).await.unwrap();
    assert_eq!(r["rows"][0][0], json!(s));
    assert_eq!(read_v(&ex, &h, &t, 6).await, public);

    // A session-level advisory lock ends with its session.
    let key: i64 = rand_key();
    let mut d = db(Scope::ReadWrite);
    d.allow_functions = vec!["pg_advisory_lock".into()];
    let h = handle("PG_LOCK", HandleKind::Postgres, d);
    call(&ex, &h, PG_URL, &format!("SELECT pg_advisory_lock({key})"), vec![]).await.unwrap();
    let mut other = a.acquire().await.unwrap();
    let mut free = false;
    for _ in 0..100 {
        let (got,): (bool,) = sqlx::query_as(&format!("SELECT pg_try_advisory_lock({key})"))
            .fetch_one(&mut *other)
            .await
            .unwrap();
        if got {
            free = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(free, "the lock outlived the call");
    other.execute(format!("SELECT pg_advisory_unlock({key})").as_str()).await.unwrap();
    drop(other);

    a.execute(format!("DROP FUNCTION {f}(); DROP SCHEMA {s} CASCADE; DROP TABLE {t}").as_str())
        .await
        .unwrap();
}

/// An advisory-lock key no other test run uses at the same time.
fn rand_key() -> i64 {
    (std::process::id() as i64) << 20 | (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as i64 & 0xFFFFF)
}
