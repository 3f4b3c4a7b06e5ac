//! Shared helpers of the integration tests: handles, unique names, and the service check.
#![allow(dead_code)]

use airlock_core::config::{
    Constraints, DatabaseConstraints, Handle, HandleKind, Scope, SecretRef,
};
use airlock_core::{CallError, HandleName, Secret};
use airlock_exec_sql::{QueryArgs, SqlExecutor};
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MY_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Whether a database server answers on `addr`. When it does not, the test is skipped with a
/// printed `skipped: <reason>` line, unless AIRLOCK_REQUIRE_SERVICES=1, where it fails.
pub async fn service(addr: &str, what: &str) -> bool {
    let up = matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    );
    if !up {
        if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{what} at {addr} is unreachable and AIRLOCK_REQUIRE_SERVICES=1");
        }
        println!("skipped: {what} at {addr} is unreachable");
    }
    up
}

/// A name unique to this process and call, for tables and functions.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn db(scope: Scope) -> DatabaseConstraints {
    DatabaseConstraints {
        scope,
        tables: None,
        allow_catalogs: false,
        max_rows: 1000,
        max_bytes: 1_000_000,
        statement_timeout_ms: 5000,
        url: None,
        ..DatabaseConstraints::default()
    }
}

pub fn handle(name: &str, kind: HandleKind, d: DatabaseConstraints) -> Handle {
    Handle {
        name: HandleName::parse(name).unwrap(),
        kind,
        secret: SecretRef::Env("UNUSED".into()),
        description: String::new(),
        constraints: Constraints::Database(d),
    }
}

/// Validate then execute, as the broker does.
pub async fn call(
    ex: &SqlExecutor,
    h: &Handle,
    secret: &str,
    query: &str,
    params: Vec<Value>,
) -> Result<Value, CallError> {
    let q = SqlExecutor::validate(
        h,
        &QueryArgs {
            query: query.into(),
            params,
        },
    )?;
    ex.execute(h, &q, &Secret::from_str_value(secret)).await
}

/// Rows of a result.
pub fn rows(v: &Value) -> &Vec<Value> {
    v["rows"].as_array().expect("rows")
}
