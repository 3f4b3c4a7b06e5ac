//! The bounded form of a read: the validated query wrapped so that the server itself stops at the
//! row cap and never sends a row whose cells exceed the byte cap (T20).
//!
//! ```text
//!  SELECT c1, CASE WHEN n <= max_bytes THEN c2 END, ..., n          -- outer: the guard
//!  FROM (SELECT q.*, <bytes of the guarded cells of this row> AS n    -- inner: size and LIMIT
//!        FROM (<validated query>) AS q(c1, c2, ...)
//!        LIMIT max_rows + 1)
//! ```
//!
//! * **Rows**: the inner `LIMIT max_rows + 1` ends the statement on the server one row after the
//!   cap (the extra row is how the broker knows the result was cut), so a cross join of 10^8 rows
//!   produces 1,001 rows and completes; nothing is left to cancel.
//! * **Cells**: every column of a type without a small fixed width is *guarded*: the server
//!   measures the row's guarded cells (`n`, the last column) and sends them as `NULL` when `n`
//!   exceeds `max_bytes`. Such a row can never be returned (the byte cap counts cell data), so the
//!   broker ends the result there with `truncated: true` without the value ever crossing the wire.
//!   The measure is the length in bytes of the cell's text form (raw bytes for `bytea` and
//!   binary strings). For text, bytes and JSON that is what arrives within a few bytes; the
//!   binary form of PostgreSQL arrays and composite values of small fixed-width elements is
//!   larger than their text (at most 12 bytes per element of `int8[]`, against at least 2 in
//!   text), so for those a row received can reach about 6 times `max_bytes`. Columns of
//!   fixed-width types (numbers, booleans, dates and times, UUIDs) are sent as they are.
//! * **Types** are preserved: `CASE` over one column yields that column's type (a domain yields
//!   its base type), so decoding is unchanged. Column names come from the original statement.
//!
//! Per engine:
//! * PostgreSQL wraps the query as a subquery with a column alias list (duplicate or missing
//!   names do not matter). The subquery with `LIMIT` is never flattened, so `n` is computed once
//!   per row; PostgreSQL keeps a subquery's `ORDER BY` order through a plain scan and `LIMIT`.
//! * MySQL/MariaDB wrap it as a CTE with a column list (a derived table refuses duplicate column
//!   names). MariaDB drops the `ORDER BY` of a derived table or CTE that has no `LIMIT`, so the
//!   query first gets a top-level `LIMIT` of at most `max_rows + 1` in its own AST (added, or a
//!   larger literal lowered; the tree is printed and re-parsed to the same tree, as validation
//!   does), which keeps its order. MariaDB materializes a CTE with a `LIMIT` before it sends a
//!   row: the server computes up to `max_rows + 1` rows first. For ordinary rows that costs
//!   nothing measurable (a 10^8-row cross join answers in about 2 ms); for wide rows it is server
//!   time and temporary space within the statement timeout (1,001 rows of 100 kB: 0.25 to 0.35 s to
//!   the truncated answer, 0.29 s of it computing the rows). Up to [`INLINE_GUARDS`] guarded
//!   columns the row's size is computed inline in each guard (one materialized level); beyond,
//!   once per row in a second level.
//! * SQLite is not wrapped: it runs inside the broker's process and copies a value at every
//!   level of a subquery (a 100 MB cell behind this wrapper costs about 400 MB, against about
//!   200 MB plain), so a wrapper would multiply a huge cell rather than keep it out. The executor
//!   caps SQLite while it streams and interrupts the statement at the cap.
//!
//! A wrapper the server refuses (say a PostgreSQL data-modifying CTE, which must stay at the top
//! level) is not an error: the executor runs the statement as validated and caps it while it
//! streams (see `exec`).

use airlock_core::config::DatabaseConstraints;
use sqlparser::ast::{Expr, LimitClause, Statement};
use sqlparser::dialect::{Dialect, MySqlDialect};
use sqlparser::parser::{Parser, ParserOptions};
use std::fmt::Write as _;

/// One column of the statement being wrapped: its name and its type's name as the driver reports
/// it (`TypeInfo::name`).
pub(crate) struct Col {
    pub name: String,
    pub ty: String,
}

/// The rows the wrapped statement may produce: one past the cap, so a cut is visible.
pub(crate) fn fetch_limit(db: &DatabaseConstraints) -> u64 {
    (db.max_rows as u64).saturating_add(1).min(i64::MAX as u64)
}

/// The per-row byte bound the server applies to guarded cells.
fn guard(db: &DatabaseConstraints) -> u64 {
    (db.max_bytes as u64).min(i64::MAX as u64)
}

/// `airlock_c1`, ... (1-based): names that cannot collide, since the alias list renames them all.
fn col(i: usize) -> String {
    format!("airlock_c{}", i + 1)
}

/// The outer select list: guarded columns behind the check `n <= g` (`n` the row's size, an
/// expression or a column), then `last` (the size as the executor reads it).
fn outer(cols: &[Col], guarded: &[bool], g: u64, n: &str, last: &str) -> String {
    let mut s = String::new();
    for (i, _) in cols.iter().enumerate() {
        if guarded[i] {
            let _ = write!(s, "CASE WHEN {n} <= {g} THEN {} END, ", col(i));
        } else {
            let _ = write!(s, "{}, ", col(i));
        }
    }
    s.push_str(last);
    s
}

/// The sum of `measure(column)` over the guarded columns, or `zero`.
fn size(guarded: &[bool], zero: &str, measure: impl Fn(usize) -> String) -> String {
    let parts: Vec<String> = (0..guarded.len())
        .filter(|&i| guarded[i])
        .map(|i| format!("COALESCE({}, 0)", measure(i)))
        .collect();
    if parts.is_empty() {
        zero.to_owned()
    } else {
        parts.join(" + ")
    }
}

fn alias_list(cols: &[Col]) -> String {
    (0..cols.len()).map(col).collect::<Vec<_>>().join(", ")
}

/// PostgreSQL types sent as they are: fixed width, at most a few dozen bytes.
fn pg_fixed(ty: &str) -> bool {
    matches!(
        ty,
        "BOOL"
            | "INT2"
            | "INT4"
            | "INT8"
            | "OID"
            | "FLOAT4"
            | "FLOAT8"
            | "MONEY"
            | "UUID"
            | "DATE"
            | "TIME"
            | "TIMETZ"
            | "TIMESTAMP"
            | "TIMESTAMPTZ"
            | "INTERVAL"
            | "\"CHAR\""
            | "INET"
            | "CIDR"
            | "MACADDR"
            | "MACADDR8"
            | "VOID"
    )
}

/// The PostgreSQL form of `q` (see the module documentation).
pub(crate) fn pg(q: &str, cols: &[Col], db: &DatabaseConstraints) -> String {
    let guarded: Vec<bool> = cols.iter().map(|c| !pg_fixed(&c.ty)).collect();
    let size = size(&guarded, "0::int8", |i| {
        let c = col(i);
        match cols[i].ty.as_str() {
            // Bytes of the value itself (bytea: raw bytes, not its hex text).
            "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "BYTEA" => format!("octet_length({c})::int8"),
            _ => format!("octet_length({c}::text)::int8"),
        }
    });
    let aliases = if cols.is_empty() {
        String::new()
    } else {
        format!("({})", alias_list(cols))
    };
    format!(
        "SELECT {outer} FROM (SELECT airlock_q.*, ({size})::int8 AS airlock_n FROM (\n{q}\n) AS airlock_q{aliases} LIMIT {limit}) AS airlock_w",
        outer = outer(cols, &guarded, guard(db), "airlock_n", "airlock_n"),
        limit = fetch_limit(db),
    )
}

/// MySQL/MariaDB types sent as they are.
fn mysql_fixed(ty: &str) -> bool {
    ty.ends_with(" UNSIGNED")
        || matches!(
            ty,
            "NULL"
                | "BOOLEAN"
                | "TINYINT"
                | "SMALLINT"
                | "MEDIUMINT"
                | "INT"
                | "BIGINT"
                | "FLOAT"
                | "DOUBLE"
                | "DECIMAL"
                | "YEAR"
                | "DATE"
                | "TIME"
                | "DATETIME"
                | "TIMESTAMP"
                | "BIT"
                | "ENUM"
                | "SET"
        )
}

/// Parses MySQL text as validation does (literals kept as written): exactly one statement.
fn mysql_parse(sql: &str) -> Option<Statement> {
    let dialect: &dyn Dialect = &MySqlDialect {};
    let mut v = Parser::new(dialect)
        .with_options(ParserOptions::new().with_unescape(false))
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .ok()?;
    (v.len() == 1).then(|| v.remove(0))
}

/// `q` with a top-level `LIMIT` of at most `limit` rows: added when it has none (MariaDB
/// honours the `ORDER BY` of a CTE only when the CTE has a `LIMIT`), lowered when it is a larger
/// number (so the server never materializes more), kept when it is a placeholder. `None` when `q`
/// is not a query or the printed result does not parse back to the same tree.
fn mysql_limited(q: &str, limit: u64) -> Option<String> {
    let Statement::Query(mut query) = mysql_parse(q)? else {
        return None;
    };
    // The clause as the parser builds it, so the tree is what printing and parsing give.
    let Statement::Query(model) = mysql_parse(&format!("SELECT 1 LIMIT {limit}"))? else {
        return None;
    };
    let Some(LimitClause::LimitOffset {
        limit: Some(cap), ..
    }) = model.limit_clause
    else {
        return None;
    };
    let over = |e: &Expr| e.to_string().parse::<u64>().is_ok_and(|n| n > limit);
    match &mut query.limit_clause {
        Some(LimitClause::LimitOffset { limit: Some(e), .. })
        | Some(LimitClause::OffsetCommaLimit { limit: e, .. }) => {
            if !over(e) {
                return Some(q.to_owned());
            }
            *e = cap;
        }
        Some(LimitClause::LimitOffset { limit, .. }) => *limit = Some(cap),
        None => {
            query.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(cap),
                offset: None,
                limit_by: Vec::new(),
            })
        }
    }
    let statement = Statement::Query(query);
    let printed = statement.to_string();
    (mysql_parse(&printed)? == statement).then_some(printed)
}

/// Up to this many guarded columns, MySQL/MariaDB compute the row's size inline in each guard
/// (one materialized level); beyond, once per row in a second level (materialized too).
const INLINE_GUARDS: usize = 16;

/// The MySQL/MariaDB form of `q`, or `None` when `q` cannot be given a top-level `LIMIT`.
pub(crate) fn mysql(q: &str, cols: &[Col], db: &DatabaseConstraints) -> Option<String> {
    let limit = fetch_limit(db);
    let q = mysql_limited(q, limit)?;
    let guarded: Vec<bool> = cols.iter().map(|c| !mysql_fixed(&c.ty)).collect();
    let size = size(&guarded, "0", |i| format!("LENGTH({})", col(i)));
    let aliases = alias_list(cols);
    let g = guard(db);
    // MariaDB materializes a CTE or derived table that has a LIMIT before it sends a row: the
    // server computes up to `limit` rows first. One level costs about half of two.
    if guarded.iter().filter(|g| **g).count() <= INLINE_GUARDS {
        let n = format!("({size})");
        let last = format!("CAST({size} AS SIGNED)");
        return Some(format!(
            "WITH airlock_q ({aliases}) AS (\n{q}\n) SELECT {outer} FROM airlock_q LIMIT {limit}",
            outer = outer(cols, &guarded, g, &n, &last),
        ));
    }
    Some(format!(
        "WITH airlock_q ({aliases}) AS (\n{q}\n) SELECT {outer} FROM (SELECT airlock_q.*, CAST({size} AS SIGNED) AS airlock_n FROM airlock_q LIMIT {limit}) AS airlock_w",
        outer = outer(cols, &guarded, g, "airlock_n", "airlock_n"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::config::Scope;

    fn db() -> DatabaseConstraints {
        DatabaseConstraints {
            scope: Scope::ReadOnly,
            tables: None,
            allow_catalogs: false,
            max_rows: 1000,
            max_bytes: 5000,
            statement_timeout_ms: 1000,
            url: None,
            ..DatabaseConstraints::default()
        }
    }

    fn cols(v: &[(&str, &str)]) -> Vec<Col> {
        v.iter()
            .map(|(n, t)| Col {
                name: (*n).into(),
                ty: (*t).into(),
            })
            .collect()
    }

    #[test]
    fn t20_pg_wrapper_limits_rows_and_guards_variable_width_cells() {
        let w = pg(
            "SELECT id, body, data FROM t",
            &cols(&[("id", "INT4"), ("body", "TEXT"), ("data", "JSONB")]),
            &db(),
        );
        assert_eq!(
            w,
            "SELECT airlock_c1, CASE WHEN airlock_n <= 5000 THEN airlock_c2 END, \
             CASE WHEN airlock_n <= 5000 THEN airlock_c3 END, airlock_n FROM (SELECT airlock_q.*, \
             (COALESCE(octet_length(airlock_c2)::int8, 0) + COALESCE(octet_length(airlock_c3::text)::int8, 0))::int8 \
             AS airlock_n FROM (\nSELECT id, body, data FROM t\n) AS airlock_q(airlock_c1, airlock_c2, airlock_c3) \
             LIMIT 1001) AS airlock_w"
        );
        // No column at all (PostgreSQL allows `SELECT FROM t`).
        assert!(pg("SELECT FROM t", &[], &db())
            .starts_with("SELECT airlock_n FROM (SELECT airlock_q.*, (0::int8)::int8"));
    }

    #[test]
    fn t20_mysql_wrapper_adds_a_limit_that_keeps_order_by() {
        let c = cols(&[("a", "INT"), ("a", "VARCHAR")]);
        let w = mysql("SELECT a, b FROM t ORDER BY a DESC", &c, &db()).unwrap();
        assert_eq!(
            w,
            "WITH airlock_q (airlock_c1, airlock_c2) AS (\nSELECT a, b FROM t ORDER BY a DESC LIMIT 1001\n) \
             SELECT airlock_c1, CASE WHEN (COALESCE(LENGTH(airlock_c2), 0)) <= 5000 THEN airlock_c2 END, \
             CAST(COALESCE(LENGTH(airlock_c2), 0) AS SIGNED) FROM airlock_q LIMIT 1001"
        );
        let limited = |q: &str| mysql_limited(q, 1001).unwrap();
        // A smaller LIMIT (or a placeholder) stays; a larger one is lowered to the cap.
        assert_eq!(
            limited("SELECT a FROM t ORDER BY a LIMIT ?"),
            "SELECT a FROM t ORDER BY a LIMIT ?"
        );
        assert_eq!(
            limited("SELECT a FROM t LIMIT 5, 10"),
            "SELECT a FROM t LIMIT 5, 10"
        );
        assert_eq!(
            limited("SELECT a FROM t LIMIT 10 OFFSET 5"),
            "SELECT a FROM t LIMIT 10 OFFSET 5"
        );
        assert_eq!(
            limited("SELECT a FROM t LIMIT 5, 100000000"),
            "SELECT a FROM t LIMIT 5, 1001"
        );
        assert_eq!(
            limited("SELECT a FROM t LIMIT 100000000 OFFSET 5"),
            "SELECT a FROM t LIMIT 1001 OFFSET 5"
        );
        // A set operation gets its LIMIT on the whole.
        assert_eq!(
            limited("SELECT a FROM t UNION SELECT b FROM u"),
            "SELECT a FROM t UNION SELECT b FROM u LIMIT 1001"
        );
        assert!(mysql("INSERT INTO t VALUES (1)", &[], &db()).is_none());
        // Many guarded columns: the size is computed once per row, in a second level.
        let wide: Vec<Col> = (0..17)
            .map(|i| Col {
                name: format!("c{i}"),
                ty: "TEXT".into(),
            })
            .collect();
        let w = mysql("SELECT * FROM t", &wide, &db()).unwrap();
        assert!(
            w.ends_with("AS airlock_n FROM airlock_q LIMIT 1001) AS airlock_w"),
            "{w}"
        );
        assert!(
            w.contains("CASE WHEN airlock_n <= 5000 THEN airlock_c17 END, airlock_n FROM"),
            "{w}"
        );
    }

    #[test]
    fn fetch_limit_saturates() {
        let mut d = db();
        d.max_rows = usize::MAX;
        assert_eq!(fetch_limit(&d), i64::MAX as u64);
    }
}
