//! Validation cost of one `query_db` statement (no I/O): a 50-table join with 200 select-list
//! expressions on PostgreSQL, checked against a 50-table allow-list, the function allow-list and
//! (second case) column rules on ten of the tables. Target: p50 at most 50 µs per statement.
//! Each case is measured at first sight (parsed and checked) and repeated (the same text with new
//! params, answered by the executor's cache of checked statements).
//!
//! Run: `cargo bench -p airlock-exec-sql --bench validate` (criterion's flags after `--`). Besides
//! criterion's estimate, it prints its own p50 and p99 over 5,000 validations of each case, and
//! the p50 of sqlparser parsing the statement once, the floor under all of it: validation parses
//! twice (the agent's text, then the printed text that runs) and prints twice.

use airlock_core::config::{
    Constraints, DatabaseConstraints, Handle, HandleKind, Scope, SecretRef, TableColumns,
};
use airlock_core::HandleName;
use airlock_exec_sql::{QueryArgs, SqlExecutor};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Instant;

const TABLES: usize = 50;
const EXPRESSIONS: usize = 200;

fn handle(column_rules: bool) -> Handle {
    let mut d = DatabaseConstraints {
        scope: Scope::ReadOnly,
        tables: Some((0..TABLES).map(|i| format!("t{i}")).collect()),
        ..DatabaseConstraints::default()
    };
    if column_rules {
        for i in 0..10 {
            let rule = if i % 2 == 0 {
                TableColumns {
                    columns: Some(vec!["id".into(), "a".into(), "b".into(), "name".into()]),
                    deny_columns: vec![],
                }
            } else {
                TableColumns {
                    columns: None,
                    deny_columns: vec!["secret".into()],
                }
            };
            d.columns.insert(format!("t{i}"), rule);
        }
    }
    Handle {
        name: HandleName::parse("BENCH").unwrap(),
        kind: HandleKind::Postgres,
        secret: SecretRef::Env("UNUSED".into()),
        description: String::new(),
        constraints: Constraints::Database(d),
    }
}

/// `SELECT <200 expressions> FROM t0 JOIN t1 ON ... JOIN t49 ON ... WHERE ... ORDER BY ...`.
fn statement() -> String {
    let exprs: Vec<String> = (0..EXPRESSIONS)
        .map(|i| {
            let t = i % TABLES;
            match i % 5 {
                0 => format!("t{t}.a + {i} AS e{i}"),
                1 => format!("coalesce(t{t}.b, 0) AS e{i}"),
                2 => format!("lower(t{t}.name) AS e{i}"),
                3 => format!("CASE WHEN t{t}.a > {i} THEN 'x' ELSE 'y' END AS e{i}"),
                _ => format!("round(t{t}.b::numeric, 2) AS e{i}"),
            }
        })
        .collect();
    let joins: String = (1..TABLES)
        .map(|i| format!(" JOIN t{i} ON t{i}.id = t{}.id", i - 1))
        .collect();
    format!(
        "SELECT {} FROM t0{joins} WHERE t0.a > $1 AND t1.name LIKE $2 ORDER BY e0 LIMIT 10",
        exprs.join(", ")
    )
}

fn args() -> QueryArgs {
    serde_json::from_value(serde_json::json!({"query": statement(), "params": [1, "x%"]})).unwrap()
}

/// CPU time this thread has used, in µs (Linux `schedstat`), so that a figure taken on a busy
/// machine is not inflated by waiting for a core.
fn thread_cpu_us() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? / 1e3)
}

/// Mean CPU time per call of `f` over `n` calls.
fn cpu_per_call(n: usize, mut f: impl FnMut()) -> Option<f64> {
    let start = thread_cpu_us()?;
    for _ in 0..n {
        f();
    }
    Some((thread_cpu_us()? - start) / n as f64)
}

/// p50 and p99 wall time of `f` over 5,000 calls, in µs.
fn percentiles(mut f: impl FnMut()) -> (f64, f64) {
    let mut us: Vec<f64> = (0..5000)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    (us[us.len() / 2], us[us.len() * 99 / 100])
}

/// The floor: sqlparser alone tokenizing and parsing the statement once (validation parses the
/// agent's text and then the printed text, and prints twice).
fn parse_once(sql: &str) -> usize {
    let d = sqlparser::dialect::PostgreSqlDialect {};
    let opts = sqlparser::parser::ParserOptions::new().with_unescape(false);
    sqlparser::parser::Parser::new(&d)
        .with_options(opts)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map(|s| s.len())
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let a = args();
    c.bench_function("sqlparser_parse_once", |b| {
        b.iter(|| parse_once(black_box(&a.query)))
    });
    let mut us: Vec<f64> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            black_box(parse_once(&a.query));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    let cpu = cpu_per_call(2000, || {
        black_box(parse_once(&a.query));
    });
    println!(
        "sqlparser_parse_once: p50 {:.1} µs wall, {cpu:.1?} µs CPU mean",
        us[us.len() / 2]
    );
    for (name, rules) in [
        ("join50_expr200", false),
        ("join50_expr200_column_rules", true),
    ] {
        let h = handle(rules);
        SqlExecutor::validate(&h, &a).expect("the benchmark statement validates");
        c.bench_function(name, |b| {
            b.iter(|| SqlExecutor::validate(black_box(&h), black_box(&a)).unwrap())
        });
        let (p50, p99) = percentiles(|| {
            black_box(SqlExecutor::validate(&h, &a).unwrap());
        });
        let cpu = cpu_per_call(2000, || {
            black_box(SqlExecutor::validate(&h, &a).unwrap());
        });
        println!(
            "{name}: {} bytes of SQL, first sight p50 {p50:.1} µs, p99 {p99:.1} µs wall, {cpu:.1?} µs CPU mean per statement",
            a.query.len()
        );
        // The same statement again (new params each time, as an agent repeats a query): the
        // executor's cache of checked statements answers.
        let x = SqlExecutor::new();
        let mut params = 0i64;
        let mut again = || {
            params += 1;
            let a = QueryArgs { query: a.query.clone(), params: vec![params.into(), "x%".into()] };
            black_box(x.validate_cached(&h, &a).unwrap());
        };
        again();
        c.bench_function(&format!("{name}_repeated"), |b| b.iter(&mut again));
        let (p50, p99) = percentiles(&mut again);
        println!("{name}_repeated: p50 {p50:.1} µs, p99 {p99:.1} µs wall per statement (cached check)");
    }
}

/// For scale: a typical small statement on the same handle.
fn bench_small(c: &mut Criterion) {
    let a: QueryArgs = serde_json::from_value(serde_json::json!({
        "query": "SELECT t0.id, upper(t0.name), t1.b FROM t0 JOIN t1 ON t1.id = t0.id WHERE t0.a > $1 ORDER BY t0.id LIMIT 50",
        "params": [1]
    }))
    .unwrap();
    let h = handle(true);
    c.bench_function("small_join_column_rules", |b| {
        b.iter(|| SqlExecutor::validate(black_box(&h), black_box(&a)).unwrap())
    });
    let (p50, p99) = percentiles(|| {
        black_box(SqlExecutor::validate(&h, &a).unwrap());
    });
    println!(
        "small_join_column_rules: {} bytes of SQL, p50 {p50:.1} µs, p99 {p99:.1} µs wall",
        a.query.len()
    );
}

criterion_group!(benches, bench, bench_small);
criterion_main!(benches);
