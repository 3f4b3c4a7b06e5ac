//! Validation of `query_db` arguments: parse, check the statement against the handle, normalise.
//!
//! Everything here works on the parsed AST (`sqlparser`), never on the SQL text, and needs no
//! secret and no I/O (T01, T02). The rules:
//!
//! * exactly one statement of the handle's dialect;
//! * statement kinds by scope: `read_only` allows queries only (`SELECT`, `WITH`, set operations,
//!   `VALUES`, `TABLE t`); `read_write` adds `INSERT`, `UPDATE`, `DELETE`, `MERGE` and `CALL` of
//!   a procedure the handle names in `allow_functions`. Everything
//!   else is refused, `EXPLAIN` included (`EXPLAIN ANALYZE` executes its statement, and a plan is
//!   not worth a second code path). Nested statements (data-modifying CTEs) obey the same rule;
//! * writes are found over the whole tree, not only at the top (T26): a DML statement, a
//!   data-modifying CTE inside a `SELECT`, a locking clause (`FOR UPDATE`, `FOR SHARE`), `CALL`,
//!   and a function that changes data or state (sequences, large objects, advisory locks) each
//!   make the statement a write ([`ValidatedQuery::is_write`], which approvals for writes read),
//!   and each is refused on a `read_only` handle;
//! * `SELECT ... INTO` (a table, a variable, `OUTFILE`, `DUMPFILE`) and optimizer hints (they can
//!   change session limits, e.g. MySQL `SET_VAR`) are refused;
//! * every relation anywhere in the tree (joins, subqueries, CTE bodies, DML targets, `TABLE t`) is
//!   checked against the catalog deny list and the handle's table allow-list. A bare name that
//!   refers to a CTE in scope is not a table; CTE scoping follows SQL (a non-recursive CTE sees only
//!   the CTEs before it) and is exact, so a CTE cannot shadow a real table elsewhere. DML targets
//!   are always real tables;
//! * functions are allowed by name from a per-dialect allow-list of functions that read nothing
//!   beyond their arguments ([`functions`](mod@functions)), plus catalog functions under
//!   `allow_catalogs` and the handle's own `allow_functions`; anything else, an extension's or a
//!   user's function included, is `function-not-allowed` (T25). `CALL` needs `allow_functions`;
//! * with column rules (`tables = { t = { columns = [...] } }`), every column reference is checked
//!   (the `columns` module): a denied column, `*` over a restricted table or a whole-row
//!   reference is `column-not-allowed` (T25);
//! * placeholders are the dialect's (`$1`.. for PostgreSQL, `?` for MySQL and SQLite) and their
//!   number must match `params`.
//!
//! The statement is printed back from the AST and the printed text (no comments, canonical
//! spacing) is what the database runs; that text is parsed again and the checks run on *that*
//! tree, which must print back to the same text. So lexer differences between `sqlparser` and the
//! server (MySQL `--x` and `/*! */`, nested comments) cannot smuggle SQL that was never checked.
//!
//! Pathological input is bounded before any tree walk can exhaust the stack (T20): the text is at
//! most [`MAX_QUERY_BYTES`], the parser nests at most 50 levels, a statement has at most
//! [`MAX_OPERATORS`] operators and operator keywords (the parser builds `a + a + ...` and
//! `... UNION ...` chains in a loop, one tree level each), and the checks walk at most
//! [`MAX_DEPTH`] nested expressions or set operations; past any of them the call is refused with
//! `limit-exceeded`.

use airlock_core::config::{DatabaseConstraints, Handle, HandleKind, Scope};
use airlock_core::{CallError, ErrorCode};
use serde::Deserialize;
use sqlparser::ast::{
    BinaryOperator, Expr, Ident, ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement,
    TableFactor, TableObject, Value, ValueWithSpan, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError, ParserOptions};
use sqlparser::tokenizer::{Token, Tokenizer};
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

/// Largest SQL text accepted, in bytes (T20: bounded parsing work).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Most parameters accepted.
pub const MAX_PARAMS: usize = 1000;
/// Most operators and operator keywords (`AND`, `UNION`, `::`, `+`, ...) in one statement (T20).
/// Each can add a level to the tree outside the parser's own recursion limit.
pub const MAX_OPERATORS: usize = 4096;
/// Deepest nesting of expressions, or of set operations, the checks walk (T20).
pub const MAX_DEPTH: usize = 256;

/// The arguments of `query_db` besides the handle.
///
/// The doc comments of the fields are the descriptions in the tool's JSON Schema (`schemars`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// One SQL statement.
    pub query: String,
    /// Values for the placeholders, in order, bound by the driver (never interpolated).
    // Only scalars bind; an array or an object is refused (`params[i] must be ...`).
    #[serde(default)]
    #[schemars(extend("items" = {"type": ["string", "number", "boolean", "null"]}))]
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
    pub(crate) taints_session: bool,
}

impl ValidatedQuery {
    /// The SQL the database will run (printed from the validated AST).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// True when the statement may change data or state anywhere in its tree: INSERT, UPDATE,
    /// DELETE and MERGE, a data-modifying CTE, a locking clause, `CALL`, a function that writes
    /// (sequences, large objects, advisory locks), or, on a `read_write` handle, a function
    /// allowed only by the handle's `allow_functions`. The result then carries `rows_affected`.
    pub fn is_write(&self) -> bool {
        self.writes
    }

    /// True when the statement calls a function that is not on the dialect's built-in lists
    /// (one of its state-changing functions, or one the handle allows by name): such a function
    /// can leave state on the database session that outlives the transaction (a session-level
    /// `set_config`, such as a `search_path` that redirects later statements; an advisory lock;
    /// a temporary object made by a user-defined function). The executor closes the connection
    /// after such a call instead of returning it to the handle's pool, so the next call, another
    /// agent's included, starts on a clean session.
    pub fn taints_session(&self) -> bool {
        self.taints_session
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

/// Keywords that continue an expression or a query as infix operators, so that a chain of them
/// nests the tree one level each without the parser's recursion limit seeing it.
const OPERATOR_KEYWORDS: &[Keyword] = &[
    Keyword::AND,
    Keyword::AT,
    Keyword::BETWEEN,
    Keyword::COLLATE,
    Keyword::DIV,
    Keyword::ESCAPE,
    Keyword::EXCEPT,
    Keyword::GLOB,
    Keyword::GLOBAL,
    Keyword::ILIKE,
    Keyword::IN,
    Keyword::INTERSECT,
    Keyword::IS,
    Keyword::LIKE,
    Keyword::MATCH,
    Keyword::MEMBER,
    Keyword::MINUS,
    Keyword::MOD,
    Keyword::NOT,
    Keyword::NOTNULL,
    Keyword::OPERATOR,
    Keyword::OR,
    Keyword::OVERLAPS,
    Keyword::REGEXP,
    Keyword::RLIKE,
    Keyword::SIMILAR,
    Keyword::UNION,
    Keyword::XOR,
];

/// Whether a token may continue an expression or a query as an operator: every symbol but
/// commas, parentheses and the statement's end, and the keywords above. Names, numbers, strings
/// and placeholders never do.
fn operator_token(t: &Token) -> bool {
    match t {
        Token::Word(w) => OPERATOR_KEYWORDS.contains(&w.keyword),
        Token::EOF
        | Token::Whitespace(_)
        | Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::SemiColon
        | Token::Number(..)
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => false,
        _ => true,
    }
}

/// Parses `sql` as exactly one statement, literals kept as written (no unescaping), so printing
/// the AST reproduces each literal's source text. Refuses, before building a tree, a statement
/// with more than [`MAX_OPERATORS`] operators, and maps the parser's recursion limit to
/// `limit-exceeded`.
fn parse_one(dialect: &dyn Dialect, sql: &str) -> Result<Statement, CallError> {
    let invalid = |e: &dyn std::fmt::Display| {
        CallError::with_message(
            ErrorCode::InvalidSql,
            format!("the query does not parse: {e}"),
        )
    };
    let tokens = Tokenizer::new(dialect, sql)
        .with_unescape(false)
        .tokenize_with_location()
        .map_err(|e| invalid(&e))?;
    if tokens.iter().filter(|t| operator_token(&t.token)).count() > MAX_OPERATORS {
        return Err(CallError::with_message(
            ErrorCode::LimitExceeded,
            format!("the statement has more than {MAX_OPERATORS} operators"),
        ));
    }
    let opts = ParserOptions::new().with_unescape(false);
    let mut statements = Parser::new(dialect)
        .with_options(opts)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| match e {
            ParserError::RecursionLimitExceeded => CallError::with_message(
                ErrorCode::LimitExceeded,
                "the statement nests deeper than the parser allows (50 levels)",
            ),
            e => invalid(&e),
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

/// A statement checked against one handle, before its parameters are bound: the part of
/// validation that depends only on the handle's kind and constraints and on the statement text,
/// which is what the executor's cache of checked statements keeps.
#[derive(Debug, Clone)]
pub(crate) struct CheckedStatement {
    pub(crate) sql: String,
    pub(crate) writes: bool,
    /// See [`ValidatedQuery::taints_session`].
    pub(crate) taints_session: bool,
    /// Placeholders the statement uses: the highest `$n` on PostgreSQL, the `?` count elsewhere.
    pub(crate) placeholders: usize,
}

/// How [`validate`] gets a statement checked: [`check_statement`] itself, or a cache in front of
/// it. Called with the handle, its constraints and the statement text.
pub(crate) type CheckFn<'a> =
    &'a dyn Fn(&Handle, &DatabaseConstraints, &str) -> Result<Arc<CheckedStatement>, CallError>;

/// Checks the statement with no cache.
pub(crate) fn check_uncached(
    handle: &Handle,
    db: &DatabaseConstraints,
    query: &str,
) -> Result<Arc<CheckedStatement>, CallError> {
    check_statement(handle.kind, db, query).map(Arc::new)
}

/// Checks `args` against `handle`, the statement through `check`.
pub(crate) fn validate(handle: &Handle, args: &QueryArgs, check: CheckFn<'_>) -> Result<ValidatedQuery, CallError> {
    let Some(db) = handle.database().filter(|_| dialect(handle.kind).is_some()) else {
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
    let checked = check(handle, db, &args.query)?;
    if checked.placeholders != params.len() {
        return Err(CallError::with_message(
            ErrorCode::InvalidArguments,
            format!(
                "the query has {} placeholders but {} params were given",
                checked.placeholders,
                params.len()
            ),
        ));
    }
    Ok(ValidatedQuery {
        kind: handle.kind,
        sql: checked.sql.clone(),
        params,
        writes: checked.writes,
        taints_session: checked.taints_session,
    })
}

/// Parses `query`, checks it against `db` and prints the text that runs. A pure function of its
/// arguments (no I/O, no clock), which is what makes its result safe to cache.
pub(crate) fn check_statement(
    kind: HandleKind,
    db: &DatabaseConstraints,
    query: &str,
) -> Result<CheckedStatement, CallError> {
    let Some(dialect) = dialect(kind) else {
        return Err(CallError::new(ErrorCode::HandleUnavailable)
            .detail("query_db on a handle that is not a database"));
    };
    // What runs is the statement printed from its tree; what is checked is that text parsed
    // again, which must print back to itself.
    let sql = parse_one(dialect.as_ref(), query)?.to_string();
    let unfaithful = || {
        CallError::with_message(
            ErrorCode::InvalidSql,
            "the statement uses a construct airlock cannot reproduce faithfully",
        )
        .detail("AST round trip through Display changed the statement")
    };
    let statement = parse_one(dialect.as_ref(), &sql).map_err(|_| unfaithful())?;
    if statement.to_string() != sql {
        return Err(unfaithful());
    }
    let mut checker = Checker::new(kind, db);
    if let ControlFlow::Break(e) = statement.visit(&mut checker) {
        return Err(e);
    }
    let writes = !matches!(statement, Statement::Query(_))
        || checker.writes
        || (checker.handle_functions && db.scope == Scope::ReadWrite);
    Ok(CheckedStatement {
        sql,
        writes,
        taints_session: checker.taints_session,
        placeholders: checker.placeholders(),
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

/// An unquoted word the MySQL dialect reads as a variable: `@name` or `@@name`. A quoted
/// `` `@@name` `` is an ordinary column name.
fn variable(i: &Ident) -> bool {
    i.quote_style.is_none() && i.value.starts_with('@')
}

fn refuse_variable() -> ControlFlow<CallError> {
    refuse(
        ErrorCode::FunctionNotAllowed,
        "server and session variables (@@name, @name) are not allowed".into(),
    )
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
    /// Something in the tree changes data or state (T26).
    writes: bool,
    /// A function allowed only by the handle's `allow_functions` is called: it may write.
    handle_functions: bool,
    /// A function off the built-in lists is called: it may leave session state behind.
    taints_session: bool,
    /// Nesting of the expressions being visited.
    depth: usize,
    /// Restricted relations in scope, innermost last (only when the handle has column rules).
    scopes: Vec<columns::ColumnScope<'a>>,
    /// `SELECT`s that are a query's body: their scope lasts until the query's `ORDER BY`.
    query_bodies: HashSet<usize>,
    /// Bare `ORDER BY` names that are output aliases (no column check).
    order_aliases: HashSet<usize>,
}

fn refuse(code: ErrorCode, message: String) -> ControlFlow<CallError> {
    ControlFlow::Break(CallError::with_message(code, message))
}

fn too_deep() -> ControlFlow<CallError> {
    refuse(
        ErrorCode::LimitExceeded,
        format!("the statement nests expressions or set operations deeper than {MAX_DEPTH} levels"),
    )
}

/// How deep the set operations of a query body go, counted without recursion; stops past
/// [`MAX_DEPTH`].
fn set_depth(body: &SetExpr) -> usize {
    let mut deepest = 0;
    let mut todo = vec![(body, 1usize)];
    while let Some((e, d)) = todo.pop() {
        deepest = deepest.max(d);
        if d > MAX_DEPTH {
            break;
        }
        if let SetExpr::SetOperation { left, right, .. } = e {
            todo.push((left, d + 1));
            todo.push((right, d + 1));
        }
    }
    deepest
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
            writes: false,
            handle_functions: false,
            taints_session: false,
            depth: 0,
            scopes: Vec::new(),
            query_bodies: HashSet::new(),
            order_aliases: HashSet::new(),
        }
    }

    /// Records a write (T26); on a read-only handle, refuses it saying why.
    fn write(&mut self, why: &str) -> ControlFlow<CallError> {
        if self.db.scope == Scope::ReadOnly {
            return refuse(
                ErrorCode::StatementNotAllowed,
                format!("this handle is read-only: {why}"),
            );
        }
        self.writes = true;
        ControlFlow::Continue(())
    }

    /// How an identifier names an object: PostgreSQL folds unquoted names to lower case and keeps
    /// quoted ones; MySQL and SQLite keep the spelling (the stricter choice for CTE matching).
    fn ident_key(&self, i: &Ident) -> String {
        if self.kind == HandleKind::Postgres && i.quote_style.is_none() {
            i.value.to_lowercase()
        } else {
            i.value.clone()
        }
    }

    /// Allow-list key: as SQL identifiers compare (PostgreSQL quoted names exactly), otherwise
    /// case-insensitive.
    fn table_key(&self, i: &Ident) -> String {
        if self.kind == HandleKind::Postgres && i.quote_style.is_some() {
            i.value.clone()
        } else {
            i.value.to_lowercase()
        }
    }

    /// The identifiers of a relation's name, if it is one this dialect can name (at most
    /// database.schema.table on PostgreSQL, schema.table elsewhere).
    fn relation_parts<'n>(&self, name: &'n ObjectName) -> Option<Vec<&'n Ident>> {
        let max_parts = if self.kind == HandleKind::Postgres {
            3
        } else {
            2
        };
        if name.0.is_empty() || name.0.len() > max_parts {
            return None;
        }
        name.0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => Some(i),
                _ => None,
            })
            .collect()
    }

    /// The entry of the handle's `tables` a relation name matches, as the config spells it.
    fn allow_list_entry(&self, name: &ObjectName) -> Option<&'a String> {
        let parts = self.relation_parts(name)?;
        let allowed = self.db.tables.as_ref()?;
        let t = self.table_key(parts.last()?);
        let schema = (parts.len() >= 2).then(|| self.table_key(parts[parts.len() - 2]));
        let default = self.default_schema.as_deref();
        // Entries are compared in lower case (ASCII, checked at load) without allocating: this
        // runs for every relation against every entry.
        let lower_eq = |entry: &str, key: &str| {
            entry.len() == key.len()
                && entry
                    .bytes()
                    .zip(key.bytes())
                    .all(|(e, k)| e.to_ascii_lowercase() == k)
        };
        allowed.iter().find(|entry| {
            let (es, et) = match entry.split_once('.') {
                Some((s, t)) => (Some(s), t),
                None => (None, entry.as_str()),
            };
            if !lower_eq(et, &t) {
                return false;
            }
            match (schema.as_deref(), es) {
                (None, None) => true,
                (None, Some(es)) => default.is_some_and(|d| lower_eq(es, d)),
                (Some(rs), None) => Some(rs) == default,
                (Some(rs), Some(es)) => lower_eq(es, rs),
            }
        })
    }

    fn check_relation(&self, name: &ObjectName, ctes: &[&String]) -> ControlFlow<CallError> {
        let shown = name.to_string();
        let not_allowed = || {
            refuse(
                ErrorCode::TableNotAllowed,
                format!("table {shown} is not allowed on this handle"),
            )
        };
        let Some(parts) = self.relation_parts(name) else {
            return not_allowed();
        };
        let Some(table) = parts.last() else {
            return not_allowed();
        };
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
        if self.db.tables.is_none() || self.allow_list_entry(name).is_some() {
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

    /// A called function (or procedure): on the dialect's allow-list, under `allow_catalogs`
    /// in its catalog list, or in the handle's `allow_functions` (T25). A function that
    /// changes data makes the statement a write (T26).
    fn check_function_name(&mut self, name: &ObjectName) -> ControlFlow<CallError> {
        let Some(f) = functions::resolve(self.kind, self.db, name) else {
            return refuse(
                ErrorCode::FunctionNotAllowed,
                format!("function {name} is not allowed on this handle"),
            );
        };
        let writes = functions::writes(self.kind, &f.name);
        let by_handle = f.origin == functions::Origin::Handle;
        self.taints_session |= writes || by_handle;
        if writes {
            return self.write(&format!("{name} changes data"));
        }
        self.handle_functions |= by_handle;
        ControlFlow::Continue(())
    }

    fn placeholders(&self) -> usize {
        if self.kind == HandleKind::Postgres {
            self.max_dollar
        } else {
            self.question_marks
        }
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
                let name = ObjectName::from(idents);
                self.check_relation(&name, &ctes)?;
                self.check_table_statement(&name)
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
            Statement::Insert(i) => {
                self.write("INSERT changes data")?;
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
                self.write("UPDATE changes data")?;
                self.check_target_factor(&u.table.relation)?;
                for j in &u.table.joins {
                    self.check_target_factor(&j.relation)?;
                }
                &u.optimizer_hints
            }
            Statement::Delete(d) => {
                self.write("DELETE changes data")?;
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
                self.write("MERGE changes data")?;
                self.check_target_factor(&m.table)?;
                &m.optimizer_hints
            }
            Statement::Call(f) => {
                // A procedure may do anything its owner can: only one the handle names runs.
                self.write("CALL runs a procedure")?;
                return self.check_function_name(&f.name);
            }
            _ if self.db.scope == Scope::ReadOnly => {
                return refuse(
                    ErrorCode::StatementNotAllowed,
                    "this handle is read-only: queries only".into(),
                )
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
        self.enter_dml(s)
    }

    fn post_visit_statement(&mut self, s: &Statement) -> ControlFlow<CallError> {
        if matches!(
            s,
            Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Delete(_)
                | Statement::Merge(_)
        ) {
            self.leave_scope();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<CallError> {
        if set_depth(&q.body) > MAX_DEPTH {
            return too_deep();
        }
        if !q.locks.is_empty() {
            self.write("a locking clause (FOR UPDATE, FOR SHARE) locks rows")?;
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
        if let SetExpr::Select(s) = q.body.as_ref() {
            self.query_bodies.insert(addr(&**s));
            self.note_order_aliases(q);
        }
        self.check_set_expr(&q.body)
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<CallError> {
        self.frames.pop();
        if matches!(q.body.as_ref(), SetExpr::Select(_)) {
            self.leave_scope();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<CallError> {
        if s.into.is_some() {
            self.write("SELECT ... INTO writes its result")?;
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
        self.enter_select(s)
    }

    fn post_visit_select(&mut self, s: &Select) -> ControlFlow<CallError> {
        if !self.query_bodies.contains(&addr(s)) {
            self.leave_scope();
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
                self.check_function_name(name)
            }
            TableFactor::Pivot { .. }
            | TableFactor::Unpivot { .. }
            | TableFactor::MatchRecognize { .. }
            | TableFactor::OpenJsonTable { .. } => refuse(
                ErrorCode::StatementNotAllowed,
                "this kind of FROM item is not allowed".into(),
            ),
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

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<CallError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return too_deep();
        }
        match e {
            Expr::Function(f) => self.check_function_name(&f.name)?,
            // MySQL and MariaDB read server and session variables as bare words (`@@datadir`,
            // `@@global.secure_file_priv`, `@x`): settings and state outside the statement's
            // tables, as `current_setting` is on PostgreSQL (T01, T25).
            Expr::Identifier(i) if variable(i) => return refuse_variable(),
            Expr::CompoundIdentifier(parts) if parts.first().is_some_and(variable) => {
                return refuse_variable()
            }
            // A user-defined operator is a function under another name.
            Expr::BinaryOp {
                op: op @ (BinaryOperator::Custom(_) | BinaryOperator::PGCustomBinaryOperator(_)),
                ..
            } => {
                return refuse(
                    ErrorCode::FunctionNotAllowed,
                    format!("operator {op} is not allowed on this handle"),
                )
            }
            _ => {}
        }
        self.check_expr_columns(e)
    }

    fn post_visit_expr(&mut self, _e: &Expr) -> ControlFlow<CallError> {
        self.depth -= 1;
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

mod columns;
pub mod functions;

#[cfg(test)]
mod tests;
