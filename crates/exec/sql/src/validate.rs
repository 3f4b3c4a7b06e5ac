//! Validation of `query_db` arguments: parse, check the statement against the handle, normalise.
//!
//! Everything here works on the parsed AST (`sqlparser`), never on the SQL text, and needs no
//! secret and no I/O (T01, T02). The rules:
//!
//! * exactly one statement of the handle's dialect;
//! * statement kinds by scope: `read_only` allows queries only (`SELECT`, `WITH`, set operations,
//!   `VALUES`, `TABLE t`); `read_write` adds `INSERT`, `UPDATE`, `DELETE` and `MERGE`. Everything
//!   else is refused, `EXPLAIN` included (`EXPLAIN ANALYZE` executes its statement, and a plan is
//!   not worth a second code path). Nested statements (data-modifying CTEs) obey the same rule;
//! * `SELECT ... INTO` (a table, a variable, `OUTFILE`, `DUMPFILE`), optimizer hints (they can
//!   change session limits, e.g. MySQL `SET_VAR`) and, in `read_only`, locking clauses are refused;
//! * every relation anywhere in the tree (joins, subqueries, CTE bodies, DML targets, `TABLE t`) is
//!   checked against the catalog deny list and the handle's table allow-list. A bare name that
//!   refers to a CTE in scope is not a table; CTE scoping follows SQL (a non-recursive CTE sees only
//!   the CTEs before it) and is exact, so a CTE cannot shadow a real table elsewhere. DML targets
//!   are always real tables;
//! * functions are allowed by default, except a deny list of functions that reach the file system,
//!   the network, server settings, other sessions, or run SQL given as a string, plus (unless
//!   `allow_catalogs`) every `pg_*` function outside a small harmless set;
//! * placeholders are the dialect's (`$1`.. for PostgreSQL, `?` for MySQL and SQLite) and their
//!   number must match `params`.
//!
//! The statement is then printed back from the AST and re-parsed; the printed text (no comments,
//! canonical spacing) is what the database runs. So lexer differences between `sqlparser` and the
//! server (MySQL `--x` and `/*! */`, nested comments) cannot smuggle SQL that was never checked.

use airlock_core::config::{DatabaseConstraints, Handle, HandleKind, Scope};
use airlock_core::{CallError, ErrorCode};
use serde::Deserialize;
use sqlparser::ast::{
    ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, TableFactor, TableObject, Value,
    ValueWithSpan, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::{Parser, ParserOptions};
use std::collections::HashSet;
use std::ops::ControlFlow;

/// Largest SQL text accepted, in bytes (T20: bounded parsing work).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Most parameters accepted.
pub const MAX_PARAMS: usize = 1000;

/// The arguments of `query_db` besides the handle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// One SQL statement.
    pub query: String,
    /// Values for the placeholders, bound by the driver (never interpolated).
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

/// One bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

/// A statement that passed validation for one handle: the normalised SQL and its parameters.
/// Holds no secret.
#[derive(Debug, Clone)]
pub struct ValidatedQuery {
    pub(crate) kind: HandleKind,
    pub(crate) sql: String,
    pub(crate) params: Vec<Param>,
    pub(crate) writes: bool,
}

impl ValidatedQuery {
    /// The SQL the database will run (printed from the validated AST).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// True for INSERT, UPDATE, DELETE and MERGE (the result then carries `rows_affected`).
    pub fn is_write(&self) -> bool {
        self.writes
    }

    /// Number of bound parameters.
    pub fn param_count(&self) -> usize {
        self.params.len()
    }
}

fn dialect(kind: HandleKind) -> Option<Box<dyn Dialect>> {
    match kind {
        HandleKind::Postgres => Some(Box::new(PostgreSqlDialect {})),
        HandleKind::Mysql => Some(Box::new(MySqlDialect {})),
        HandleKind::Sqlite => Some(Box::new(SQLiteDialect {})),
        _ => None,
    }
}

/// Parses `sql` as exactly one statement, literals kept as written (no unescaping), so printing
/// the AST reproduces each literal's source text.
fn parse_one(dialect: &dyn Dialect, sql: &str) -> Result<Statement, CallError> {
    let opts = ParserOptions::new().with_unescape(false);
    let mut statements = Parser::new(dialect)
        .with_options(opts)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| {
            CallError::with_message(
                ErrorCode::InvalidSql,
                format!("the query does not parse: {e}"),
            )
        })?;
    match statements.len() {
        0 => Err(CallError::with_message(
            ErrorCode::InvalidSql,
            "the query holds no statement",
        )),
        1 => Ok(statements.remove(0)),
        _ => Err(CallError::with_message(
            ErrorCode::StatementNotAllowed,
            "exactly one statement per call",
        )),
    }
}

pub(crate) fn validate(handle: &Handle, args: &QueryArgs) -> Result<ValidatedQuery, CallError> {
    let (Some(db), Some(dialect)) = (handle.database(), dialect(handle.kind)) else {
        return Err(CallError::new(ErrorCode::HandleUnavailable)
            .detail("query_db on a handle that is not a database"));
    };
    if args.query.len() > MAX_QUERY_BYTES {
        return Err(CallError::with_message(
            ErrorCode::LimitExceeded,
            format!("the query is longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    if args.params.len() > MAX_PARAMS {
        return Err(CallError::with_message(
            ErrorCode::LimitExceeded,
            format!("more than {MAX_PARAMS} params"),
        ));
    }
    let params = args
        .params
        .iter()
        .enumerate()
        .map(|(i, v)| to_param(i, v))
        .collect::<Result<Vec<_>, _>>()?;

    let statement = parse_one(dialect.as_ref(), &args.query)?;
    let mut checker = Checker::new(handle.kind, db);
    if let ControlFlow::Break(e) = statement.visit(&mut checker) {
        return Err(e);
    }
    checker.check_placeholders(params.len())?;

    let sql = statement.to_string();
    // The printed text must mean what was checked: re-parse it and compare the trees.
    match parse_one(dialect.as_ref(), &sql) {
        Ok(again) if again == statement => {}
        _ => {
            return Err(CallError::with_message(
                ErrorCode::InvalidSql,
                "the statement uses a construct airlock cannot reproduce faithfully",
            )
            .detail("AST round trip through Display changed the statement"))
        }
    }
    let writes = !matches!(statement, Statement::Query(_));
    Ok(ValidatedQuery {
        kind: handle.kind,
        sql,
        params,
        writes,
    })
}

fn to_param(i: usize, v: &serde_json::Value) -> Result<Param, CallError> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Param::Null,
        J::Bool(b) => Param::Bool(*b),
        J::Number(n) => {
            if let Some(x) = n.as_i64() {
                Param::Int(x)
            } else if let Some(x) = n.as_u64() {
                Param::UInt(x)
            } else {
                Param::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Param::Text(s.clone()),
        J::Array(_) | J::Object(_) => {
            return Err(CallError::with_message(
                ErrorCode::InvalidArguments,
                format!("params[{i}] must be null, a boolean, a number or a string"),
            ))
        }
    })
}

/// Schemas that are system catalogs in one of the engines.
const CATALOG_SCHEMAS: &[&str] = &[
    "pg_catalog",
    "information_schema",
    "pg_toast",
    "mysql",
    "performance_schema",
    "sys",
];

/// Functions refused whatever the scope and `allow_catalogs`: file system, network, server
/// settings and processes, timing oracles and locks, SQL run from a string (it would bypass the
/// table checks), extension loading. Matched on the last name part, case-insensitively.
const DENIED_FUNCTIONS: &[&str] = &[
    // PostgreSQL
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_logdir_ls",
    "lo_import",
    "lo_export",
    "lo_get",
    "lo_put",
    "lo_from_bytea",
    "lo_create",
    "lo_creat",
    "lo_open",
    "lo_unlink",
    "loread",
    "lowrite",
    "current_setting",
    "set_config",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "ts_stat",
    "ts_rewrite",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    // MySQL / MariaDB
    "load_file",
    "sys_exec",
    "sys_eval",
    "benchmark",
    "sleep",
    "get_lock",
    "release_lock",
    "release_all_locks",
    "is_free_lock",
    "is_used_lock",
    "master_pos_wait",
    "source_pos_wait",
    // SQLite (and its shell's functions)
    "load_extension",
    "readfile",
    "writefile",
    "fts3_tokenizer",
    "edit",
];

/// Prefixes refused the same way (function families).
const DENIED_FUNCTION_PREFIXES: &[&str] = &[
    "dblink",
    "pg_sleep",
    "query_to_xml",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
    "pg_ls_",
    "pg_read_",
    "pg_advisory",
    "pg_try_advisory",
    "lo_",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_backup_",
    "pg_start_backup",
    "pg_stop_backup",
];

/// `pg_*` functions that read nothing sensitive, allowed without `allow_catalogs`.
const HARMLESS_PG_FUNCTIONS: &[&str] = &[
    "pg_typeof",
    "pg_column_size",
    "pg_size_pretty",
    "pg_size_bytes",
];

fn function_denied(last: &str, allow_catalogs: bool) -> bool {
    let f = last.to_ascii_lowercase();
    DENIED_FUNCTIONS.contains(&f.as_str())
        || DENIED_FUNCTION_PREFIXES.iter().any(|p| f.starts_with(p))
        || (!allow_catalogs && f.starts_with("pg_") && !HARMLESS_PG_FUNCTIONS.contains(&f.as_str()))
}

fn catalog_table_name(kind: HandleKind, table: &str) -> bool {
    let t = table.to_ascii_lowercase();
    t.starts_with("pg_")
        || t.starts_with("sqlite_")
        || (kind == HandleKind::Sqlite && (t.starts_with("pragma_") || t == "dbstat"))
}

fn addr<T>(x: &T) -> usize {
    x as *const T as usize
}

/// CTE names visible to the relations directly inside one query.
struct Frame {
    /// Names visible before this query's own WITH.
    outer: Vec<String>,
    /// This query's CTE names, in order.
    names: Vec<String>,
    /// Addresses of this query's CTE bodies, to tell which CTE a nested query defines.
    bodies: Vec<usize>,
    recursive: bool,
}

impl Frame {
    fn visible(&self) -> impl Iterator<Item = &String> {
        self.outer.iter().chain(self.names.iter())
    }
}

struct Checker<'a> {
    kind: HandleKind,
    db: &'a DatabaseConstraints,
    default_schema: Option<String>,
    frames: Vec<Frame>,
    /// Names of table-valued functions, checked as functions rather than as relations.
    function_relations: HashSet<usize>,
    max_dollar: usize,
    question_marks: usize,
}

fn refuse(code: ErrorCode, message: String) -> ControlFlow<CallError> {
    ControlFlow::Break(CallError::with_message(code, message))
}

impl<'a> Checker<'a> {
    fn new(kind: HandleKind, db: &'a DatabaseConstraints) -> Self {
        let default_schema = match kind {
            HandleKind::Postgres => Some("public".to_owned()),
            HandleKind::Sqlite => Some("main".to_owned()),
            // The connection's database, when the handle names it; otherwise MySQL references
            // qualified with a database match only qualified allow-list entries.
            _ => db.url.as_deref().and_then(mysql_database),
        };
        Checker {
            kind,
            db,
            default_schema,
            frames: Vec::new(),
            function_relations: HashSet::new(),
            max_dollar: 0,
            question_marks: 0,
        }
    }

    /// How an identifier names an object: PostgreSQL folds unquoted names to lower case and keeps
    /// quoted ones; MySQL and SQLite keep the spelling (the stricter choice for CTE matching).
    fn ident_key(&self, i: &sqlparser::ast::Ident) -> String {
        if self.kind == HandleKind::Postgres && i.quote_style.is_none() {
            i.value.to_lowercase()
        } else {
            i.value.clone()
        }
    }

    /// Allow-list key: as SQL identifiers compare (PostgreSQL quoted names exactly), otherwise
    /// case-insensitive.
    fn table_key(&self, i: &sqlparser::ast::Ident) -> String {
        if self.kind == HandleKind::Postgres && i.quote_style.is_some() {
            i.value.clone()
        } else {
            i.value.to_lowercase()
        }
    }

    fn check_relation(&self, name: &ObjectName, ctes: &[&String]) -> ControlFlow<CallError> {
        let shown = name.to_string();
        let not_allowed = || {
            refuse(
                ErrorCode::TableNotAllowed,
                format!("table {shown} is not allowed on this handle"),
            )
        };
        let mut parts = Vec::with_capacity(name.0.len());
        for p in &name.0 {
            match p {
                ObjectNamePart::Identifier(i) => parts.push(i),
                _ => return not_allowed(),
            }
        }
        let max_parts = if self.kind == HandleKind::Postgres {
            3
        } else {
            2
        };
        let Some(table) = parts.last() else {
            return not_allowed();
        };
        if parts.len() > max_parts {
            return not_allowed();
        }
        if !self.db.allow_catalogs {
            let schema_is_catalog = parts[..parts.len() - 1]
                .iter()
                .any(|p| CATALOG_SCHEMAS.contains(&p.value.to_ascii_lowercase().as_str()));
            if schema_is_catalog || catalog_table_name(self.kind, &table.value) {
                return not_allowed();
            }
        }
        if parts.len() == 1 && ctes.iter().any(|c| **c == self.ident_key(table)) {
            return ControlFlow::Continue(());
        }
        let Some(allowed) = &self.db.tables else {
            return ControlFlow::Continue(());
        };
        let t = self.table_key(table);
        let schema = (parts.len() >= 2).then(|| self.table_key(parts[parts.len() - 2]));
        let default = self.default_schema.as_deref();
        let ok = allowed.iter().any(|entry| {
            let entry = entry.to_lowercase();
            let (es, et) = match entry.split_once('.') {
                Some((s, t)) => (Some(s), t),
                None => (None, entry.as_str()),
            };
            if et != t {
                return false;
            }
            match (schema.as_deref(), es) {
                (None, None) => true,
                (None, Some(es)) => Some(es) == default,
                (Some(rs), None) => Some(rs) == default,
                (Some(rs), Some(es)) => rs == es,
            }
        });
        if ok {
            ControlFlow::Continue(())
        } else {
            not_allowed()
        }
    }

    /// A DML target is always a real table, whatever CTEs are in scope.
    fn check_target(&self, name: &ObjectName) -> ControlFlow<CallError> {
        self.check_relation(name, &[])
    }

    fn check_target_factor(&self, t: &TableFactor) -> ControlFlow<CallError> {
        match t {
            TableFactor::Table {
                name, args: None, ..
            } => self.check_target(name),
            _ => refuse(
                ErrorCode::StatementNotAllowed,
                "the target of a data change must be a table".into(),
            ),
        }
    }

    fn check_function_name(&self, name: &ObjectName) -> ControlFlow<CallError> {
        let last = match name.0.last() {
            Some(ObjectNamePart::Identifier(i)) => i.value.as_str(),
            _ => {
                return refuse(
                    ErrorCode::StatementNotAllowed,
                    format!("function {name} is not allowed"),
                )
            }
        };
        if function_denied(last, self.db.allow_catalogs) {
            return refuse(
                ErrorCode::StatementNotAllowed,
                format!("function {name} is not allowed"),
            );
        }
        ControlFlow::Continue(())
    }

    fn check_placeholders(&self, n: usize) -> Result<(), CallError> {
        let used = if self.kind == HandleKind::Postgres {
            self.max_dollar
        } else {
            self.question_marks
        };
        if used != n {
            return Err(CallError::with_message(
                ErrorCode::InvalidArguments,
                format!("the query has {used} placeholders but {n} params were given"),
            ));
        }
        Ok(())
    }

    /// `TABLE t` (a `SetExpr::Table`) names a table without an `ObjectName`.
    fn check_set_expr(&self, body: &SetExpr) -> ControlFlow<CallError> {
        match body {
            SetExpr::SetOperation { left, right, .. } => {
                self.check_set_expr(left)?;
                self.check_set_expr(right)
            }
            SetExpr::Table(t) => {
                let Some(table) = &t.table_name else {
                    return refuse(ErrorCode::TableNotAllowed, "TABLE without a name".into());
                };
                let mut idents = Vec::new();
                if let Some(s) = &t.schema_name {
                    idents.push(s.clone());
                }
                idents.push(table.clone());
                let ctes: Vec<&String> = self
                    .frames
                    .last()
                    .map(|f| f.visible().collect())
                    .unwrap_or_default();
                self.check_relation(&ObjectName::from(idents), &ctes)
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// The database named by a MySQL URL's path, lower-cased.
fn mysql_database(u: &str) -> Option<String> {
    let url = url::Url::parse(u).ok()?;
    let db = url.path().trim_start_matches('/');
    (!db.is_empty() && !db.contains('/')).then(|| db.to_lowercase())
}

impl Visitor for Checker<'_> {
    type Break = CallError;

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<CallError> {
        let hints = match s {
            Statement::Query(_) => return ControlFlow::Continue(()),
            _ if self.db.scope == Scope::ReadOnly => {
                return refuse(
                    ErrorCode::StatementNotAllowed,
                    "this handle is read-only: queries only".into(),
                )
            }
            Statement::Insert(i) => {
                match &i.table {
                    TableObject::TableName(n) => self.check_target(n)?,
                    _ => {
                        return refuse(
                            ErrorCode::StatementNotAllowed,
                            "INSERT into a function".into(),
                        )
                    }
                }
                if i.overwrite || i.partitioned.is_some() {
                    return refuse(
                        ErrorCode::StatementNotAllowed,
                        "this form of INSERT is not allowed".into(),
                    );
                }
                &i.optimizer_hints
            }
            Statement::Update(u) => {
                self.check_target_factor(&u.table.relation)?;
                for j in &u.table.joins {
                    self.check_target_factor(&j.relation)?;
                }
                &u.optimizer_hints
            }
            Statement::Delete(d) => {
                for t in &d.tables {
                    self.check_target(t)?;
                }
                let from = match &d.from {
                    sqlparser::ast::FromTable::WithFromKeyword(f)
                    | sqlparser::ast::FromTable::WithoutKeyword(f) => f,
                };
                for twj in from {
                    self.check_target_factor(&twj.relation)?;
                    for j in &twj.joins {
                        self.check_target_factor(&j.relation)?;
                    }
                }
                &d.optimizer_hints
            }
            Statement::Merge(m) => {
                self.check_target_factor(&m.table)?;
                &m.optimizer_hints
            }
            _ => {
                return refuse(
                    ErrorCode::StatementNotAllowed,
                    "only SELECT, INSERT, UPDATE, DELETE and MERGE statements are allowed".into(),
                )
            }
        };
        if !hints.is_empty() {
            return refuse(
                ErrorCode::StatementNotAllowed,
                "optimizer hints are not allowed".into(),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<CallError> {
        if !q.locks.is_empty() && self.db.scope == Scope::ReadOnly {
            return refuse(
                ErrorCode::StatementNotAllowed,
                "locking clauses need a read-write handle".into(),
            );
        }
        if q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            return refuse(
                ErrorCode::StatementNotAllowed,
                "this query clause is not allowed".into(),
            );
        }
        let me = addr(q);
        let outer: Vec<String> = match self.frames.last() {
            None => Vec::new(),
            Some(top) => match top.bodies.iter().position(|b| *b == me) {
                // A CTE body sees the CTEs before it, or all of them under RECURSIVE.
                Some(i) => {
                    let upto = if top.recursive { top.names.len() } else { i };
                    top.outer
                        .iter()
                        .chain(&top.names[..upto])
                        .cloned()
                        .collect()
                }
                None => top.visible().cloned().collect(),
            },
        };
        let (names, bodies, recursive) = match &q.with {
            Some(w) => (
                w.cte_tables
                    .iter()
                    .map(|c| self.ident_key(&c.alias.name))
                    .collect(),
                w.cte_tables.iter().map(|c| addr(&*c.query)).collect(),
                w.recursive,
            ),
            None => (Vec::new(), Vec::new(), false),
        };
        self.frames.push(Frame {
            outer,
            names,
            bodies,
            recursive,
        });
        self.check_set_expr(&q.body)
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<CallError> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<CallError> {
        if s.into.is_some() {
            return refuse(
                ErrorCode::StatementNotAllowed,
                "SELECT ... INTO is not allowed".into(),
            );
        }
        if !s.optimizer_hints.is_empty() {
            return refuse(
                ErrorCode::StatementNotAllowed,
                "optimizer hints are not allowed".into(),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<CallError> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => {
                self.function_relations.insert(addr(name));
                self.check_function_name(name)?;
                if !self.db.allow_catalogs {
                    if let Some(ObjectNamePart::Identifier(i)) = name.0.last() {
                        if catalog_table_name(self.kind, &i.value) {
                            return refuse(
                                ErrorCode::TableNotAllowed,
                                format!("table {name} is not allowed on this handle"),
                            );
                        }
                    }
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<CallError> {
        if self.function_relations.contains(&addr(r)) {
            return ControlFlow::Continue(());
        }
        let ctes: Vec<&String> = self
            .frames
            .last()
            .map(|f| f.visible().collect())
            .unwrap_or_default();
        self.check_relation(r, &ctes)
    }

    fn pre_visit_expr(&mut self, e: &sqlparser::ast::Expr) -> ControlFlow<CallError> {
        if let sqlparser::ast::Expr::Function(f) = e {
            self.check_function_name(&f.name)?;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, v: &ValueWithSpan) -> ControlFlow<CallError> {
        if let Value::Placeholder(p) = &v.value {
            let ok = match self.kind {
                HandleKind::Postgres => {
                    match p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                        Some(n) if (1..=MAX_PARAMS).contains(&n) => {
                            self.max_dollar = self.max_dollar.max(n);
                            true
                        }
                        _ => false,
                    }
                }
                _ => {
                    self.question_marks += 1;
                    p == "?"
                }
            };
            if !ok {
                let style = if self.kind == HandleKind::Postgres {
                    "$1, $2, ..."
                } else {
                    "?"
                };
                return refuse(
                    ErrorCode::InvalidArguments,
                    format!("placeholder {p} is not supported; use {style}"),
                );
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests;
