//! Validation rules, per dialect. Threat tests are named after THREATS.md ids.

use super::*;
use airlock_core::config::{Constraints, SecretRef};
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
        }),
    }
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
        Some(ErrorCode::StatementNotAllowed)
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
    assert_eq!(code(&h, &deep), Some(ErrorCode::InvalidSql));
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
        (HandleKind::Postgres, "CALL p()"),
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
    // The hard deny list stays.
    assert_eq!(
        code(&h, "SELECT pg_read_file('/etc/passwd')"),
        Some(ErrorCode::StatementNotAllowed)
    );
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
        "SELECT * FROM pg_stat_get_activity(NULL)",
        "SELECT query_to_xml('select * from pg_authid', true, true, '')",
        "SELECT table_to_xml('pg_authid', true, true, '')",
        "SELECT ts_stat('select 1')",
    ] {
        let c = code(&h, sql);
        assert!(
            matches!(
                c,
                Some(ErrorCode::StatementNotAllowed | ErrorCode::TableNotAllowed)
            ),
            "{sql}: {c:?}"
        );
    }
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
            assert_eq!(code(&h, sql), Some(ErrorCode::StatementNotAllowed), "{sql}");
        }
    }
    for sql in [
        "SELECT load_extension('/tmp/x.so')",
        "SELECT readfile('/etc/passwd')",
        "SELECT writefile('/tmp/x', 'y')",
    ] {
        assert_eq!(
            code(&ro(HandleKind::Sqlite), sql),
            Some(ErrorCode::StatementNotAllowed),
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
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT * FROM orders, LATERAL pg_ls_dir('.')",
        "SELECT pg_stat_file('x')",
        "SELECT pg_sleep(10)",
        "SELECT pg_sleep_for('1 minute')",
        "SELECT pg_terminate_backend(1)",
        "SELECT pg_reload_conf()",
        "SELECT 1 WHERE (SELECT pg_sleep(1)) IS NULL",
    ] {
        assert_eq!(code(&h, sql), Some(ErrorCode::StatementNotAllowed), "{sql}");
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
        assert_eq!(code(&h, sql), Some(ErrorCode::StatementNotAllowed), "{sql}");
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
        assert_eq!(code(&h, sql), Some(ErrorCode::StatementNotAllowed), "{sql}");
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
