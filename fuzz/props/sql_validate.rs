//! The property of the `sql_validate` fuzz target, shared with
//! `crates/exec/sql/tests/fuzz_regressions.rs` (which replays the corpus with stable Rust).
//!
//! Input: `[selector, sql...]`. The selector picks the handle ([`handle`]): the dialect
//! (PostgreSQL, MySQL/MariaDB, SQLite), the scope (read-only, read-write), the table allow-list
//! (none; `orders`, `public.customers`, `shop.items`; the same with column rules),
//! `allow_catalogs` and `allow_functions = ["my_func"]`. The rest (invalid UTF-8 replaced) is the
//! query, given to `SqlExecutor::validate` with as many null parameters as it asks for.
//!
//! `validate` never panics, and a statement it accepts satisfies, checked here with `sqlparser`
//! (same dialect) and independently of the validator's own walk:
//! * what runs (`ValidatedQuery::sql`) parses again to exactly one statement that prints back to
//!   the same text, and holds no comment (MySQL `/*! */` and friends cannot ride along);
//! * it has the same tables, the same statement kinds (the top one and every nested one) and the
//!   same called functions as the statement the agent sent: printing did not change what it does;
//! * on a read-only handle every statement in the tree is a query, no query locks rows, and
//!   `is_write()` is false; on a read-write handle `is_write()` is true whenever the tree holds a
//!   statement other than a query or a locking clause;
//! * every table is one the handle allows (an oracle for the allow-list, written here from the
//!   documented rule), or the name of a CTE of the statement; without `allow_catalogs`, no system
//!   catalog (`pg_catalog`, `information_schema`, `mysql`, `sys`, `performance_schema`,
//!   `pg_toast`; `pg_*`, `sqlite_*`, SQLite's `pragma_*` and `dbstat`) is named at all;
//! * every called function resolves (`functions::resolve`) on this handle, and none is one of a
//!   list of functions that read files, settings or other sessions, sleep, lock or change state
//!   (`pg_read_file`, `current_setting`, `load_file`, `sleep`, `nextval`, `lo_export`, ...).

use airlock_core::config::{
    Constraints, DatabaseConstraints, Handle, HandleKind, Scope, SecretRef, TableColumns,
};
use airlock_core::{ErrorCode, HandleName};
use airlock_exec_sql::validate::functions;
use airlock_exec_sql::{QueryArgs, SqlExecutor, ValidatedQuery};
use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::{Parser, ParserOptions};
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// Handles the selector byte chooses from (3 dialects x 2 scopes x 3 table rules x catalogs x
/// functions).
pub const HANDLES: u8 = 72;

/// The allow-list of the handles that have one.
pub const TABLES: [&str; 3] = ["orders", "public.customers", "shop.items"];

/// Functions no handle here may run: they read files, settings, catalogs or other sessions, sleep,
/// lock, or change state. None is on a built-in list, and no handle here names one.
pub const DANGEROUS: &[&str] = &[
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_sleep",
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_advisory_lock",
    "pg_advisory_xact_lock", "current_setting", "set_config", "query_to_xml", "to_regclass",
    "lo_import", "lo_export", "lo_get", "lo_put", "lo_from_bytea", "dblink", "dblink_exec",
    "nextval", "setval", "currval", "load_file", "sleep", "benchmark", "get_lock",
    "release_lock", "sys_exec", "sys_eval", "load_extension", "readfile", "writefile", "edit",
    "fts3_tokenizer", "connection_id",
];

/// The handle of a selector byte.
pub fn handle(selector: u8) -> Handle {
    let s = selector % HANDLES;
    let kind = [HandleKind::Postgres, HandleKind::Mysql, HandleKind::Sqlite][(s % 3) as usize];
    let scope = if (s / 3).is_multiple_of(2) { Scope::ReadOnly } else { Scope::ReadWrite };
    let rule = (s / 6) % 3;
    let allow_catalogs = (s / 18) % 2 == 1;
    let with_function = (s / 36) % 2 == 1;
    let mut db = DatabaseConstraints {
        scope,
        tables: (rule > 0).then(|| TABLES.iter().map(|t| t.to_string()).collect()),
        allow_catalogs,
        allow_functions: if with_function { vec!["my_func".into()] } else { vec![] },
        max_rows: 100,
        max_bytes: 10_000,
        statement_timeout_ms: 1000,
        url: None,
        ..DatabaseConstraints::default()
    };
    if rule == 2 {
        db.columns.insert(
            "orders".into(),
            TableColumns { columns: Some(vec!["id".into(), "total".into()]), deny_columns: vec![] },
        );
        db.columns.insert(
            "public.customers".into(),
            TableColumns { columns: None, deny_columns: vec!["ssn".into()] },
        );
    }
    Handle {
        name: HandleName::parse("DB").expect("a valid handle name"),
        kind,
        secret: SecretRef::Env("UNUSED".into()),
        description: String::new(),
        constraints: Constraints::Database(db),
    }
}

/// Validates `sql` on `h`; when the validator asks for parameters, gives it that many nulls.
pub fn validate(h: &Handle, sql: &str) -> Option<ValidatedQuery> {
    let mut args = QueryArgs { query: sql.to_owned(), params: vec![] };
    match SqlExecutor::validate(h, &args) {
        Ok(v) => Some(v),
        Err(e) if e.code == ErrorCode::InvalidArguments => {
            // "the query has N placeholders but 0 params were given"
            let n: usize = e.message.strip_prefix("the query has ")?.split(' ').next()?.parse().ok()?;
            args.params = vec![serde_json::Value::Null; n];
            SqlExecutor::validate(h, &args).ok()
        }
        Err(_) => None,
    }
}

/// Whether the validator accepts the input (for the replay's count of inputs that reach the
/// property's checks).
pub fn accepted(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else { return false };
    validate(&handle(selector), &String::from_utf8_lossy(rest)).is_some()
}

/// Runs the property on one input; panics (a fuzz crash, a failed test) when it does not hold.
pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let sql = String::from_utf8_lossy(rest);
    let h = handle(selector);
    let Some(v) = validate(&h, &sql) else { return };
    if let Err(why) = accepted_holds(&h, &sql, &v) {
        panic!("sql_validate property ({:?}, selector {selector}): {why}\nsent: {sql:?}\nruns: {:?}", h.kind, v.sql());
    }
}

fn dialect(kind: HandleKind) -> Box<dyn Dialect> {
    match kind {
        HandleKind::Postgres => Box::new(PostgreSqlDialect {}),
        HandleKind::Mysql => Box::new(MySqlDialect {}),
        _ => Box::new(SQLiteDialect {}),
    }
}

fn parse(kind: HandleKind, sql: &str) -> Result<Vec<Statement>, String> {
    let d = dialect(kind);
    Parser::new(d.as_ref())
        .with_options(ParserOptions::new().with_unescape(false))
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| e.to_string())
}

/// What a statement names and does, collected over its whole tree.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Relations read or written (not table functions), as printed.
    pub tables: BTreeSet<String>,
    /// The identifiers of each relation, for the allow-list oracle.
    pub relations: Vec<Vec<Ident>>,
    /// Table-valued functions in FROM.
    pub table_functions: BTreeSet<String>,
    /// Statement kinds, top and nested, with their count.
    pub kinds: Vec<String>,
    /// Called functions (scalar, aggregate, window, table-valued).
    pub functions: Vec<ObjectName>,
    /// Names of every CTE defined anywhere.
    pub ctes: BTreeSet<String>,
    /// Some query has a locking clause.
    pub locks: bool,
}

struct Collect(Facts);

fn kind_name(s: &Statement) -> String {
    let d = format!("{s:?}");
    d.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("").to_owned()
}

impl Visitor for Collect {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        self.0.kinds.push(kind_name(s));
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if !q.locks.is_empty() {
            self.0.locks = true;
        }
        if let Some(w) = &q.with {
            for c in &w.cte_tables {
                self.0.ctes.insert(c.alias.name.value.to_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table { name, args: Some(_), .. } | TableFactor::Function { name, .. } => {
                self.0.table_functions.insert(name.to_string());
                self.0.functions.push(name.clone());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        let shown = r.to_string();
        if self.0.table_functions.contains(&shown) {
            return ControlFlow::Continue(());
        }
        self.0.tables.insert(shown);
        self.0.relations.push(
            r.0.iter()
                .map(|p| match p {
                    ObjectNamePart::Identifier(i) => i.clone(),
                    other => Ident::new(other.to_string()),
                })
                .collect(),
        );
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.0.functions.push(f.name.clone());
        }
        ControlFlow::Continue(())
    }
}

/// The facts of one statement.
pub fn facts(s: &Statement) -> Facts {
    let mut c = Collect(Facts::default());
    let _ = s.visit(&mut c);
    c.0.kinds.sort();
    c.0
}

/// How the database compares a name part: PostgreSQL keeps a quoted name and folds an unquoted
/// one; MySQL/MariaDB and SQLite allow-list entries compare without case (documented rule of
/// `DatabaseConstraints::tables`).
fn name_key(kind: HandleKind, i: &Ident) -> String {
    if kind == HandleKind::Postgres && i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The allow-list oracle: whether `parts` names one of [`TABLES`] on a handle of `kind`.
pub fn allowed_table(kind: HandleKind, parts: &[Ident]) -> bool {
    let max = if kind == HandleKind::Postgres { 3 } else { 2 };
    if parts.is_empty() || parts.len() > max {
        return false;
    }
    let default = match kind {
        HandleKind::Postgres => Some("public"),
        HandleKind::Sqlite => Some("main"),
        _ => None,
    };
    let t = name_key(kind, &parts[parts.len() - 1]);
    let schema = (parts.len() >= 2).then(|| name_key(kind, &parts[parts.len() - 2]));
    TABLES.iter().any(|entry| {
        let (es, et) = match entry.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, *entry),
        };
        et == t
            && match (schema.as_deref(), es) {
                (None, None) => true,
                (None, Some(es)) => default == Some(es),
                (Some(rs), None) => default == Some(rs),
                (Some(rs), Some(es)) => rs == es,
            }
    })
}

/// The catalog oracle: whether a relation (or table function) name is a system catalog's.
pub fn catalog_name(kind: HandleKind, parts: &[String]) -> bool {
    const SCHEMAS: [&str; 6] =
        ["pg_catalog", "information_schema", "pg_toast", "mysql", "performance_schema", "sys"];
    let Some((last, qualifiers)) = parts.split_last() else { return false };
    let last = last.to_lowercase();
    qualifiers.iter().any(|q| SCHEMAS.contains(&q.to_lowercase().as_str()))
        || last.starts_with("pg_")
        || last.starts_with("sqlite_")
        || (kind == HandleKind::Sqlite && (last.starts_with("pragma_") || last == "dbstat"))
}

fn part_values(n: &ObjectName) -> Vec<String> {
    n.0.iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The property for a statement `h` accepted; `Err` says what failed.
pub fn accepted_holds(h: &Handle, sent: &str, v: &ValidatedQuery) -> Result<(), String> {
    let kind = h.kind;
    let db = h.database().ok_or("not a database handle")?;
    let runs = v.sql();
    // What runs parses to one statement that prints back to itself, with no comment.
    let mut again = parse(kind, runs).map_err(|e| format!("what runs does not parse: {e}"))?;
    if again.len() != 1 {
        return Err(format!("what runs holds {} statements", again.len()));
    }
    let ran = again.remove(0);
    if ran.to_string() != runs {
        return Err(format!("what runs prints as {:?}", ran.to_string()));
    }
    let d = dialect(kind);
    let tokens = Tokenizer::new(d.as_ref(), runs).with_unescape(false).tokenize().map_err(|e| e.to_string())?;
    if tokens.iter().any(|t| {
        matches!(t, Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)))
    }) {
        return Err("what runs holds a comment".into());
    }
    // The same tables, statement kinds and functions as what was sent.
    let mut first = parse(kind, sent).map_err(|e| format!("what was sent does not parse on its own: {e}"))?;
    if first.len() != 1 {
        return Err(format!("what was sent holds {} statements", first.len()));
    }
    let sent_facts = facts(&first.remove(0));
    let f = facts(&ran);
    if sent_facts.tables != f.tables {
        return Err(format!("tables changed: sent {:?}, runs {:?}", sent_facts.tables, f.tables));
    }
    if sent_facts.kinds != f.kinds {
        return Err(format!("statement kinds changed: sent {:?}, runs {:?}", sent_facts.kinds, f.kinds));
    }
    let names = |f: &Facts| f.functions.iter().map(ToString::to_string).collect::<BTreeSet<_>>();
    if names(&sent_facts) != names(&f) {
        return Err(format!("functions changed: sent {:?}, runs {:?}", names(&sent_facts), names(&f)));
    }
    // Scope.
    let only_queries = f.kinds.iter().all(|k| k == "Query");
    if db.scope == Scope::ReadOnly {
        if !only_queries {
            return Err(format!("a read-only handle accepted {:?}", f.kinds));
        }
        if f.locks {
            return Err("a read-only handle accepted a locking clause".into());
        }
        if v.is_write() {
            return Err("a read-only handle accepted a write".into());
        }
    } else if (!only_queries || f.locks) && !v.is_write() {
        return Err(format!("{:?} (locks: {}) is not reported as a write", f.kinds, f.locks));
    }
    // Tables.
    for parts in &f.relations {
        let values: Vec<String> = parts.iter().map(|i| i.value.clone()).collect();
        if !db.allow_catalogs && catalog_name(kind, &values) {
            return Err(format!("a system catalog is named: {}", values.join(".")));
        }
        let cte = parts.len() == 1 && f.ctes.contains(&parts[0].value.to_lowercase());
        if db.tables.is_some() && !cte && !allowed_table(kind, parts) {
            return Err(format!("table {} is not on the allow-list", values.join(".")));
        }
    }
    // Functions.
    for name in &f.functions {
        let values = part_values(name);
        if !db.allow_catalogs && f.table_functions.contains(&name.to_string()) && catalog_name(kind, &values) {
            return Err(format!("a catalog table function is called: {name}"));
        }
        if functions::resolve(kind, db, name).is_none() {
            return Err(format!("function {name} does not resolve on this handle"));
        }
        let last = values.last().map(|s| s.to_lowercase()).unwrap_or_default();
        if DANGEROUS.contains(&last.as_str()) {
            return Err(format!("a dangerous function is called: {name}"));
        }
    }
    Ok(())
}
