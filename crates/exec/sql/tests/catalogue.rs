//! T25 against the real function catalogues: every function a server has that is not on the
//! dialect's allow-list is refused by the validator, and every name on the allow-list is one the
//! server has (or SQL syntax the list says it is), so the lists hold no typo and no stale name.
//!
//! PostgreSQL at 127.0.0.1:5432 (user postgres, database test, with the tablefunc extension
//! installed by the test: Debian's postgresql-contrib); MariaDB/MySQL at 127.0.0.1:3306 (root,
//! database test); SQLite as bundled by sqlx, in memory.

mod common;

use airlock_core::config::{HandleKind, Scope};
use airlock_core::{CallError, ErrorCode};
use airlock_exec_sql::validate::functions;
use airlock_exec_sql::{QueryArgs, SqlExecutor};
use common::*;
use sqlx::{Connection, Executor, Row};
use std::collections::{BTreeMap, BTreeSet};

fn validate(kind: HandleKind, catalogs: bool, sql: &str) -> Result<(), CallError> {
    let mut d = db(Scope::ReadOnly);
    d.allow_catalogs = catalogs;
    let h = handle("CAT", kind, d);
    SqlExecutor::validate(
        &h,
        &QueryArgs {
            query: sql.into(),
            params: vec![],
        },
    )
    .map(drop)
}

/// What became of every catalogue name off the allow-list, by error code.
#[derive(Default)]
struct Tally {
    names: usize,
    listed: usize,
    refused: BTreeMap<&'static str, usize>,
    /// Names whose unquoted spelling the parser reads as syntax, not as a call.
    syntax: BTreeSet<String>,
}

impl Tally {
    fn report(&self, what: &str) {
        let refused: usize = self.refused.values().sum();
        println!(
            "{what}: {} catalogue functions, {} on the allow-list, {refused} refused ({:?}); read as syntax unquoted: {:?}",
            self.names, self.listed, self.refused, self.syntax
        );
    }
}

/// Calls `name` in each spelling given (the first one quoted, so that it always parses as a
/// function call) and asserts none validates; the quoted call must be `function-not-allowed`.
fn assert_refused(kind: HandleKind, catalogs: bool, name: &str, quoted: &str, tally: &mut Tally) {
    let l = functions::lists(kind);
    let lower = name.to_lowercase();
    let listed =
        l.builtin.contains(&lower.as_str()) || (catalogs && l.catalog.contains(&lower.as_str()));
    // PostgreSQL compares a quoted name exactly: "LOWER" is not lower.
    let exact = kind != HandleKind::Postgres || lower == name;
    if listed && exact {
        tally.listed += 1;
        return;
    }
    for args in ["", "1", "1, 2"] {
        let sql = format!("SELECT {quoted}({args})");
        let e = validate(kind, catalogs, &sql).err();
        assert_eq!(
            e.as_ref().map(|e| e.code),
            Some(ErrorCode::FunctionNotAllowed),
            "{kind:?}: {sql}"
        );
        if !listed && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            // Unquoted, the parser may read some names as syntax; refused all the same.
            for sql in [
                format!("SELECT {name}({args})"),
                format!("SELECT * FROM {name}({args}) AS t"),
            ] {
                if validate(kind, catalogs, &sql).is_ok() {
                    tally.syntax.insert(name.to_owned());
                }
            }
        }
    }
    *tally
        .refused
        .entry(ErrorCode::FunctionNotAllowed.as_str())
        .or_default() += 1;
}

/// Every allow-listed name is in the server's catalogue or in the list's syntax names.
fn assert_all_exist(kind: HandleKind, catalogue: &BTreeSet<String>) {
    let l = functions::lists(kind);
    let missing: Vec<&str> = l
        .builtin
        .iter()
        .chain(l.catalog)
        .filter(|f| !catalogue.contains(**f) && !l.syntax.contains(f))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{kind:?}: allow-listed but not in the server's catalogue: {missing:?}"
    );
    let not_syntax: Vec<&str> = l
        .syntax
        .iter()
        .filter(|f| catalogue.contains(**f))
        .copied()
        .collect();
    assert!(
        not_syntax.is_empty(),
        "{kind:?}: listed as syntax but in the catalogue: {not_syntax:?}"
    );
}

#[tokio::test]
async fn t25_every_postgres_function_off_the_allow_list_is_refused() {
    if !service("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let mut c = sqlx::PgConnection::connect(PG_URL).await.unwrap();
    c.execute("CREATE EXTENSION IF NOT EXISTS tablefunc")
        .await
        .expect("tablefunc (postgresql-contrib)");
    let names: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT proname::text FROM pg_proc ORDER BY 1")
            .fetch_all(&mut c)
            .await
            .unwrap();
    for f in [
        "crosstab",
        "connectby",
        "normal_rand",
        "pg_read_file",
        "current_setting",
        "nextval",
        "lo_export",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} is in pg_proc");
    }
    for catalogs in [false, true] {
        let mut tally = Tally {
            names: names.len(),
            ..Tally::default()
        };
        for n in &names {
            let quoted = format!("\"{}\"", n.replace('"', "\"\""));
            assert_refused(HandleKind::Postgres, catalogs, n, &quoted, &mut tally);
            // Qualified with the catalog schema it resolves the same; with any other, never.
            let sql = format!("SELECT public.{quoted}()");
            assert_eq!(
                validate(HandleKind::Postgres, catalogs, &sql)
                    .err()
                    .map(|e| e.code),
                Some(ErrorCode::FunctionNotAllowed),
                "{sql}"
            );
        }
        tally.report(if catalogs {
            "PostgreSQL, allow_catalogs"
        } else {
            "PostgreSQL"
        });
        // `interval(1)` unquoted is an INTERVAL literal to the parser, not a call.
        assert_eq!(tally.syntax, BTreeSet::from(["interval".to_owned()]));
    }
    let catalogue: BTreeSet<String> = names.into_iter().collect();
    assert_all_exist(HandleKind::Postgres, &catalogue);
}

#[tokio::test]
async fn t25_every_mariadb_function_off_the_allow_list_is_refused() {
    if !service("127.0.0.1:3306", "MariaDB").await {
        return;
    }
    let mut c = sqlx::MySqlConnection::connect(MY_URL).await.unwrap();
    let mut names: BTreeSet<String> = BTreeSet::new();
    // Built-in functions that are not keywords (MariaDB 10.6+).
    for r in c
        .fetch_all("SELECT CAST(FUNCTION AS CHAR) FROM information_schema.SQL_FUNCTIONS")
        .await
        .unwrap()
    {
        names.insert(r.get::<String, _>(0).to_lowercase());
    }
    let builtin_count = names.len();
    // The help tables name the keyword functions too (CHAR, IF, LEFT, DATE, ...), as
    // `REPEAT Function` or `JSON\_ARRAY`; statements and operators are left out by category.
    let topics = c
        .fetch_all(
            "SELECT CAST(t.name AS CHAR) FROM mysql.help_topic t JOIN mysql.help_category c USING (help_category_id)
             WHERE c.name NOT IN ('Administration', 'Data Definition', 'Data Manipulation', 'Account Management',
               'Compound Statements', 'Transactions', 'Utility', 'Table Maintenance', 'Plugins', 'Procedures',
               'Help Metadata', 'Language Structure', 'Data Types')",
        )
        .await
        .unwrap();
    for r in &topics {
        let t = r.get::<String, _>(0).replace("\\_", "_");
        let t = t.trim();
        let t = t
            .strip_suffix(" Function")
            .or_else(|| t.strip_suffix(" FUNCTION"))
            .unwrap_or(t);
        if !t.is_empty()
            && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !t.starts_with(|c: char| c.is_ascii_digit())
        {
            names.insert(t.to_lowercase());
        }
    }
    // Stored functions and procedures, and loadable UDFs.
    for r in c
        .fetch_all("SELECT CAST(ROUTINE_NAME AS CHAR) FROM information_schema.ROUTINES")
        .await
        .unwrap()
    {
        names.insert(r.get::<String, _>(0).to_lowercase());
    }
    for r in c
        .fetch_all("SELECT CAST(name AS CHAR) FROM mysql.func")
        .await
        .unwrap()
    {
        names.insert(r.get::<String, _>(0).to_lowercase());
    }
    assert!(
        builtin_count > 200 && names.len() > builtin_count,
        "{builtin_count} / {}",
        names.len()
    );
    for catalogs in [false, true] {
        let mut tally = Tally {
            names: names.len(),
            ..Tally::default()
        };
        for n in &names {
            assert_refused(
                HandleKind::Mysql,
                catalogs,
                n,
                &format!("`{n}`"),
                &mut tally,
            );
            let sql = format!("SELECT test.`{n}`()");
            assert_eq!(
                validate(HandleKind::Mysql, catalogs, &sql)
                    .err()
                    .map(|e| e.code),
                Some(ErrorCode::FunctionNotAllowed),
                "{sql}"
            );
        }
        tally.report(if catalogs {
            "MariaDB, allow_catalogs"
        } else {
            "MariaDB"
        });
        assert!(tally.syntax.is_empty(), "{:?}", tally.syntax);
    }
    assert_all_exist(HandleKind::Mysql, &names);
    // And the server itself knows every listed name: an unknown one is error 1305 ("FUNCTION
    // test.x does not exist"); a known one runs, or wants other arguments, or is syntax.
    let l = functions::lists(HandleKind::Mysql);
    for f in l.builtin.iter().chain(l.catalog) {
        if let Err(sqlx::Error::Database(e)) = c.execute(format!("SELECT {f}()").as_str()).await {
            assert_ne!(
                e.code().as_deref(),
                Some("42000").filter(|_| e.message().contains("does not exist")),
                "{f}: {}",
                e.message()
            );
        }
    }
}

#[tokio::test]
async fn t25_every_sqlite_function_off_the_allow_list_is_refused() {
    let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .unwrap();
    let names: BTreeSet<String> = c
        .fetch_all("SELECT DISTINCT name FROM pragma_function_list")
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0).to_lowercase())
        .collect();
    assert!(
        names.len() > 100 && names.contains("load_extension") && names.contains("upper"),
        "{names:?}"
    );
    // Table-valued functions (eponymous virtual tables: json_each, json_tree, pragma_*).
    let modules: BTreeSet<String> = c
        .fetch_all("SELECT name FROM pragma_module_list")
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0).to_lowercase())
        .collect();
    for catalogs in [false, true] {
        let mut tally = Tally {
            names: names.len(),
            ..Tally::default()
        };
        for n in &names {
            let quoted = format!("\"{}\"", n.replace('"', "\"\""));
            if n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                assert_refused(HandleKind::Sqlite, catalogs, n, &quoted, &mut tally);
            } else {
                // Operators registered as functions (`->`, `->>`): no call syntax reaches them.
                *tally.refused.entry("operator").or_default() += 1;
            }
        }
        tally.report(if catalogs {
            "SQLite, allow_catalogs"
        } else {
            "SQLite"
        });
        assert!(tally.syntax.is_empty(), "{:?}", tally.syntax);
    }
    for m in &modules {
        let listed = functions::lists(HandleKind::Sqlite)
            .builtin
            .contains(&m.as_str());
        let r = validate(
            HandleKind::Sqlite,
            false,
            &format!("SELECT * FROM {m}('[]')"),
        );
        assert_eq!(r.is_ok(), listed, "table-valued {m}: {r:?}");
    }
    let all: BTreeSet<String> = names.union(&modules).cloned().collect();
    assert_all_exist(HandleKind::Sqlite, &all);
}

#[tokio::test]
async fn t25_crosstab_and_connectby_on_a_read_only_handle_are_refused() {
    if !service("127.0.0.1:5432", "PostgreSQL").await {
        return;
    }
    let mut a = sqlx::PgConnection::connect(PG_URL).await.unwrap();
    a.execute("CREATE EXTENSION IF NOT EXISTS tablefunc")
        .await
        .unwrap();
    let open = unique("airlock_open");
    let secret = unique("airlock_secret");
    a.execute(
        format!(
            "CREATE TABLE {open} (id int PRIMARY KEY, v text); INSERT INTO {open} VALUES (1, 'ok');
             CREATE TABLE {secret} (id int, parent int, k text, token text);
             INSERT INTO {secret} VALUES (1, NULL, 'a', 't0ken-1'), (2, 1, 'b', 't0ken-2');"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let crosstab = format!("SELECT * FROM crosstab('SELECT k, k, token FROM {secret} ORDER BY 1') AS ct(k text, a text, b text)");
    let connectby = format!("SELECT * FROM connectby('{secret}', 'id', 'parent', '1', 0) AS t(id int, parent int, level int)");
    // The extension is there and would read the secret table, whatever the allow-list says.
    let leaked: Vec<String> = sqlx::query(&crosstab)
        .fetch_all(&mut a)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<Option<String>, _>(1).unwrap_or_default())
        .collect();
    assert!(leaked.iter().any(|v| v.contains("t0ken")), "{leaked:?}");
    assert_eq!(
        sqlx::query(&connectby)
            .fetch_all(&mut a)
            .await
            .unwrap()
            .len(),
        2
    );

    let ex = SqlExecutor::new();
    let mut d = db(Scope::ReadOnly);
    d.tables = Some(vec![open.clone()]);
    let h = handle("PG", HandleKind::Postgres, d);
    assert!(
        call(&ex, &h, PG_URL, &format!("SELECT v FROM {open}"), vec![])
            .await
            .is_ok()
    );
    for sql in [
        crosstab.clone(),
        connectby.clone(),
        format!("SELECT * FROM {open}, LATERAL crosstab('SELECT k, k, token FROM {secret}') AS ct(k text, a text)"),
        format!("SELECT v, (SELECT count(*) FROM connectby('{secret}', 'id', 'parent', '1', 0) AS t(id int, p int, l int)) FROM {open}"),
        "SELECT public.crosstab('SELECT 1')".to_owned(),
    ] {
        let e = call(&ex, &h, PG_URL, &sql, vec![]).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::FunctionNotAllowed, "{sql}");
        assert!(e.message.contains("crosstab") || e.message.contains("connectby"), "{}", e.message);
    }
    a.execute(format!("DROP TABLE {open}; DROP TABLE {secret}").as_str())
        .await
        .unwrap();
}

/// T01: every server variable MariaDB has, read as `@@name` in each scope and case, is refused
/// (the list comes from the server, so a new version's variables are covered too).
#[tokio::test]
async fn t01_every_mariadb_server_variable_is_refused_in_every_spelling() {
    if !service("127.0.0.1:3306", "MariaDB").await {
        return;
    }
    let mut c = sqlx::MySqlConnection::connect(MY_URL).await.unwrap();
    let mut names = BTreeSet::new();
    for q in ["SHOW GLOBAL VARIABLES", "SHOW SESSION VARIABLES"] {
        for r in c.fetch_all(q).await.unwrap() {
            names.insert(r.get::<String, _>(0));
        }
    }
    assert!(names.len() > 400, "{} variables", names.len());
    let mut tried = 0;
    for n in &names {
        let upper = n.to_uppercase();
        for sql in [
            format!("SELECT @@{n}"),
            format!("SELECT @@{upper}"),
            format!("SELECT @@global.{n}"),
            format!("SELECT @@SESSION.{n}"),
            format!("SELECT 1 WHERE @@{n} IS NOT NULL"),
            format!("SELECT @{n}"),
        ] {
            let e = validate(HandleKind::Mysql, true, &sql).expect_err(&sql);
            assert!(
                matches!(e.code, ErrorCode::FunctionNotAllowed | ErrorCode::InvalidSql),
                "{sql}: {:?}",
                e.code
            );
            tried += 1;
        }
    }
    println!("{} server variables, {tried} statements, all refused", names.len());
}
