//! T20: time to the truncated answer of a 10^8-row cross join under a 1,000-row cap, on the real
//! PostgreSQL (127.0.0.1:5432, user postgres, database test) and MariaDB (127.0.0.1:3306, root,
//! database test), through the executor as the broker calls it (validate, then execute on a
//! warm pool). Target: at most 100 ms.
//!
//! * `rows`: the cap is hit by the row count; the server's own LIMIT (max_rows + 1) ends the
//!   statement.
//! * `bytes`: 100 kB a row under the 1 MB byte cap; the stream is left after 10 rows, the
//!   statement cancelled from another session (`pg_cancel_backend`, `KILL QUERY`) and its
//!   connection closed, so the next call also opens a connection.
//!
//! Run: `cargo bench -p airlock-exec-sql --bench caps` (criterion's flags after `--`). Medians
//! are in `target/criterion/<group>/<name>/new/estimates.json`. A server that does not answer is
//! skipped with a printed line.

use airlock_core::config::{
    Constraints, DatabaseConstraints, Handle, HandleKind, Scope, SecretRef,
};
use airlock_core::{HandleName, Secret};
use airlock_exec_sql::{QueryArgs, SqlExecutor};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const MY_URL: &str = "mysql://root@127.0.0.1:3306/test";

fn handle(kind: HandleKind) -> Handle {
    let d = DatabaseConstraints {
        scope: Scope::ReadOnly,
        max_rows: 1000,
        max_bytes: 1_000_000,
        statement_timeout_ms: 60_000,
        ..DatabaseConstraints::default()
    };
    Handle {
        name: HandleName::parse("BENCH").unwrap(),
        kind,
        secret: SecretRef::Env("UNUSED".into()),
        description: String::new(),
        constraints: Constraints::Database(d),
    }
}

fn up(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_ok()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg_rows = "SELECT a, b FROM generate_series(1, 10000) a, generate_series(1, 10000) b";
    let pg_bytes = "SELECT a, repeat('x', 100000) FROM generate_series(1, 10000) a, generate_series(1, 10000) b";
    let seq = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 10000) ";
    let my_rows = format!("{seq}SELECT a.n, b.n FROM s a, s b");
    let my_bytes = format!("{seq}SELECT a.n, REPEAT('x', 100000) FROM s a, s b");
    let cases = [
        (
            "postgres",
            "127.0.0.1:5432",
            HandleKind::Postgres,
            PG_URL,
            pg_rows.to_owned(),
            pg_bytes.to_owned(),
        ),
        (
            "mariadb",
            "127.0.0.1:3306",
            HandleKind::Mysql,
            MY_URL,
            my_rows,
            my_bytes,
        ),
    ];
    let mut g = c.benchmark_group("t20_cross_join_1e8_cap_1000");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    for (name, addr, kind, url, rows, bytes) in cases {
        if !up(addr) {
            println!("skipped: {name} at {addr} is unreachable");
            continue;
        }
        let ex = SqlExecutor::new();
        let h = handle(kind);
        let secret = Secret::from_str_value(url);
        for (what, query, expect) in [("rows", rows, 1000), ("bytes", bytes, 9)] {
            let q = SqlExecutor::validate(
                &h,
                &QueryArgs {
                    query,
                    params: vec![],
                },
            )
            .unwrap();
            let run = || async {
                let r = ex.execute(&h, &q, &secret).await.unwrap();
                assert_eq!(
                    (r["row_count"].as_u64(), r["truncated"].as_bool()),
                    (Some(expect), Some(true))
                );
            };
            rt.block_on(run()); // warm the pool and the statement cache
            g.bench_function(format!("{name}/{what}"), |b| b.iter(|| rt.block_on(run())));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
