//! Row decoding: every column of every engine to JSON, by the value's type.
//!
//! Integers and floats become numbers (non-finite floats the strings `NaN`, `inf`, `-inf`);
//! NUMERIC/DECIMAL become strings (exact); text stays text; bytes become standard base64; dates,
//! times, timestamps and UUIDs become strings; JSON stays JSON. A type with no decoder is tried as
//! text; if that fails the cell is `null` and the column is named in `unsupported_columns`.
//!
//! The `*_min_bytes` functions give, from a raw value and without copying it, a lower bound of
//! what the decoded cell counts against the byte cap (exact for text, base64 length for bytes), so
//! the executor refuses an over-budget cell before decoding it (T20).

use base64::Engine as _;
use serde_json::{json, Value};
use sqlx::{Row, TypeInfo, ValueRef};

/// One decoded cell.
pub(crate) enum Cell {
    Value(Value),
    /// No decoder for this type; the payload is the type's name (from the server, not data).
    Unsupported(String),
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(x.to_string()))
}

fn b64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// Text from a decoder of last resort, kept only if it looks like text.
fn printable(s: String) -> Option<Value> {
    (!s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')))
    .then_some(Value::String(s))
}

fn naive_dt(d: chrono::NaiveDateTime) -> Value {
    Value::String(d.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
}

fn utc_dt(d: chrono::DateTime<chrono::Utc>) -> Value {
    Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

macro_rules! get {
    ($row:expr, $i:expr, $t:ty, $f:expr) => {
        $row.try_get::<$t, _>($i).ok().map($f)
    };
}

fn arr<T>(v: Vec<Option<T>>, f: impl Fn(T) -> Value) -> Value {
    Value::Array(
        v.into_iter()
            .map(|x| x.map(&f).unwrap_or(Value::Null))
            .collect(),
    )
}

pub(crate) fn pg_cell(row: &sqlx::postgres::PgRow, i: usize) -> Cell {
    use sqlx::types::{chrono as c, BigDecimal, Uuid};
    let ty = match row.try_get_raw(i) {
        Ok(raw) if raw.is_null() => return Cell::Value(Value::Null),
        Ok(raw) => raw.type_info().name().to_owned(),
        Err(_) => return Cell::Unsupported("?".into()),
    };
    let v: Option<Value> = match ty.as_str() {
        "BOOL" => get!(row, i, bool, Value::Bool),
        "INT2" => get!(row, i, i16, |x| json!(x)),
        "INT4" => get!(row, i, i32, |x| json!(x)),
        "INT8" => get!(row, i, i64, |x| json!(x)),
        "OID" => get!(row, i, sqlx::postgres::types::Oid, |x| json!(x.0)),
        "FLOAT4" => get!(row, i, f32, |x| float(x as f64)),
        "FLOAT8" => get!(row, i, f64, float),
        "NUMERIC" => get!(row, i, BigDecimal, |x| Value::String(pg_numeric_text(
            row, i, x
        ))),
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "UNKNOWN" => get!(row, i, String, Value::String),
        "\"CHAR\"" => get!(row, i, i8, |x| Value::String(
            char::from(x as u8).to_string()
        )),
        "BYTEA" => get!(row, i, Vec<u8>, |x| b64(&x)),
        "JSON" | "JSONB" => get!(row, i, Value, |x| x),
        "UUID" => get!(row, i, Uuid, |x| Value::String(x.to_string())),
        "DATE" => get!(row, i, c::NaiveDate, |x| Value::String(x.to_string())),
        "TIME" => get!(row, i, c::NaiveTime, |x| Value::String(x.to_string())),
        "TIMESTAMP" => get!(row, i, c::NaiveDateTime, naive_dt),
        "TIMESTAMPTZ" => get!(row, i, c::DateTime<c::Utc>, utc_dt),
        "INTERVAL" => get!(row, i, sqlx::postgres::types::PgInterval, |x| {
            json!({"months": x.months, "days": x.days, "microseconds": x.microseconds})
        }),
        "VOID" => Some(Value::Null),
        "BOOL[]" => get!(row, i, Vec<Option<bool>>, |v| arr(v, Value::Bool)),
        "INT2[]" => get!(row, i, Vec<Option<i16>>, |v| arr(v, |x| json!(x))),
        "INT4[]" => get!(row, i, Vec<Option<i32>>, |v| arr(v, |x| json!(x))),
        "INT8[]" => get!(row, i, Vec<Option<i64>>, |v| arr(v, |x| json!(x))),
        "FLOAT4[]" => get!(row, i, Vec<Option<f32>>, |v| arr(v, |x| float(x as f64))),
        "FLOAT8[]" => get!(row, i, Vec<Option<f64>>, |v| arr(v, float)),
        "NUMERIC[]" => get!(row, i, Vec<Option<BigDecimal>>, |v| arr(v, |x| {
            Value::String(x.to_string())
        })),
        "TEXT[]" | "VARCHAR[]" | "CHAR[]" | "NAME[]" => {
            get!(row, i, Vec<Option<String>>, |v| arr(v, Value::String))
        }
        "UUID[]" => get!(row, i, Vec<Option<Uuid>>, |v| arr(v, |x| Value::String(
            x.to_string()
        ))),
        "JSON[]" | "JSONB[]" => get!(row, i, Vec<Value>, Value::Array),
        // Enums, domains over text, citext and the like are text on the wire.
        _ => row
            .try_get_unchecked::<String, _>(i)
            .ok()
            .and_then(printable),
    };
    v.map(Cell::Value).unwrap_or(Cell::Unsupported(ty))
}

/// A NUMERIC printed with its display scale, as PostgreSQL prints it (`1.50` stays `1.50`). The
/// binary NUMERIC header is `ndigits, weight, sign, dscale` (four big-endian 16-bit fields).
fn pg_numeric_text(row: &sqlx::postgres::PgRow, i: usize, x: sqlx::types::BigDecimal) -> String {
    let dscale = row
        .try_get_raw(i)
        .ok()
        .filter(|raw| raw.format() == sqlx::postgres::PgValueFormat::Binary)
        .and_then(|raw| {
            raw.as_bytes()
                .ok()
                .and_then(|b| b.get(6..8).map(|s| u16::from_be_bytes([s[0], s[1]])))
        });
    match dscale {
        Some(d) => x.with_scale(i64::from(d)).to_string(),
        None => x.to_string(),
    }
}

pub(crate) fn mysql_cell(row: &sqlx::mysql::MySqlRow, i: usize) -> Cell {
    use sqlx::types::chrono as c;
    let ty = match row.try_get_raw(i) {
        Ok(raw) if raw.is_null() => return Cell::Value(Value::Null),
        Ok(raw) => raw.type_info().name().to_owned(),
        Err(_) => return Cell::Unsupported("?".into()),
    };
    let text = || row.try_get_unchecked::<String, _>(i).ok();
    let v: Option<Value> = match ty.as_str() {
        "NULL" => Some(Value::Null),
        // TINYINT(1): MySQL's boolean.
        "BOOLEAN" => row.try_get_unchecked::<i64, _>(i).ok().map(|x| match x {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            x => json!(x),
        }),
        "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" | "YEAR" => {
            row.try_get_unchecked::<i64, _>(i).ok().map(|x| json!(x))
        }
        t if t.ends_with(" UNSIGNED") => row.try_get_unchecked::<u64, _>(i).ok().map(|x| json!(x)),
        "FLOAT" => get!(row, i, f32, |x| float(x as f64)),
        "DOUBLE" => get!(row, i, f64, float),
        "DECIMAL" => text().map(Value::String),
        "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            text().map(Value::String)
        }
        "JSON" => text().map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s))),
        // The protocol flags `_bin` collations (and MariaDB's JSON) as binary too, and sqlx does not
        // expose the character set: printable UTF-8 comes back as text, anything else as base64.
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => row
            .try_get_unchecked::<Vec<u8>, _>(i)
            .ok()
            .map(|b| match String::from_utf8(b) {
                Ok(s) => printable(s.clone()).unwrap_or_else(|| b64(s.as_bytes())),
                Err(e) => b64(e.as_bytes()),
            }),
        "GEOMETRY" | "BIT" => row.try_get_unchecked::<Vec<u8>, _>(i).ok().map(|b| b64(&b)),
        "DATE" => get!(row, i, c::NaiveDate, |x| Value::String(x.to_string())),
        "DATETIME" => get!(row, i, c::NaiveDateTime, naive_dt),
        "TIMESTAMP" => get!(row, i, c::DateTime<c::Utc>, utc_dt),
        "TIME" => get!(row, i, sqlx::mysql::types::MySqlTime, |x| Value::String(
            x.to_string()
        )),
        _ => text().and_then(printable),
    };
    v.map(Cell::Value).unwrap_or(Cell::Unsupported(ty))
}

/// SQLite is dynamically typed: decode by the value's storage class, not the declared type.
/// Text that is not UTF-8 (SQLite stores what it is given) has no decoder.
pub(crate) fn sqlite_cell(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef as V;
    Cell::Value(match v {
        V::Null => Value::Null,
        V::Integer(x) => json!(x),
        V::Real(x) => float(x),
        V::Blob(b) => b64(b),
        V::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => return Cell::Unsupported("TEXT".into()),
        },
    })
}

/// Length of the standard, padded base64 of `n` bytes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

/// The bytes a PostgreSQL cell will count for at least ([`cell_bytes`] of its decoded value),
/// read from the raw value the row already holds, without decoding (copying) it: exact for text,
/// the base64 length for `bytea`, 0 for types whose size is known only once decoded. The
/// executor checks it against the byte budget first, so an over-budget cell is never copied.
pub(crate) fn pg_min_bytes(row: &sqlx::postgres::PgRow, i: usize) -> usize {
    let Ok(raw) = row.try_get_raw(i) else {
        return 0;
    };
    if raw.is_null() {
        return 0;
    }
    let n = raw.as_bytes().map(<[u8]>::len).unwrap_or(0);
    match raw.type_info().name() {
        // Binary and text format alike: the UTF-8 text itself.
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" => n,
        "BYTEA" if raw.format() == sqlx::postgres::PgValueFormat::Binary => base64_len(n),
        _ => 0,
    }
}

/// As [`pg_min_bytes`] for MySQL/MariaDB: text types by length; binary strings at least by length
/// (they come back as text when printable, as longer base64 otherwise).
pub(crate) fn mysql_min_bytes(row: &sqlx::mysql::MySqlRow, i: usize) -> usize {
    let ty = match row.try_get_raw(i) {
        Ok(raw) if !raw.is_null() => raw.type_info().name().to_owned(),
        _ => return 0,
    };
    match ty.as_str() {
        "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "BINARY"
        | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => row
            .try_get_unchecked::<&[u8], _>(i)
            .map(<[u8]>::len)
            .unwrap_or(0),
        _ => 0,
    }
}

/// As [`pg_min_bytes`] for SQLite: text by length, blobs by their base64 length, read from the
/// value SQLite holds without copying it. Exact: what [`sqlite_cell`] of the value counts.
pub(crate) fn sqlite_min_bytes(v: rusqlite::types::ValueRef<'_>) -> usize {
    use rusqlite::types::ValueRef as V;
    match v {
        // Text that is not UTF-8 decodes to nothing (`sqlite_cell`), so it counts for nothing.
        V::Text(t) => std::str::from_utf8(t).map_or(0, str::len),
        V::Blob(b) => base64_len(b.len()),
        _ => 0,
    }
}

/// Bytes a cell counts against `max_bytes`: text and base64 by length, others by JSON length.
pub(crate) fn cell_bytes(v: &Value) -> usize {
    match v {
        Value::Null => 0,
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// What a SQLite value counts against the byte cap before it is decoded is exactly what
        /// its decoded cell counts, for every storage class (text that is not UTF-8 included).
        #[test]
        fn sqlite_min_bytes_is_what_the_cell_counts(
            int in proptest::num::i64::ANY,
            real in proptest::num::f64::ANY,
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            text in ".{0,40}",
        ) {
            use rusqlite::types::ValueRef as V;
            for v in [V::Null, V::Integer(int), V::Real(real), V::Blob(&bytes), V::Text(&bytes), V::Text(text.as_bytes())] {
                let counted = match sqlite_cell(v) {
                    Cell::Value(x) => cell_bytes(&x),
                    Cell::Unsupported(_) => 0,
                };
                let min = sqlite_min_bytes(v);
                proptest::prop_assert!(min <= counted, "{v:?}: {min} > {counted}");
                if matches!(v, V::Text(_) | V::Blob(_)) {
                    proptest::prop_assert_eq!(min, counted, "{:?}", v);
                }
            }
        }
    }

    #[test]
    fn floats_and_bytes_and_text() {
        assert_eq!(float(1.5), json!(1.5));
        assert_eq!(float(f64::NAN), json!("NaN"));
        assert_eq!(b64(b"\x00\xff"), json!("AP8="));
        assert!(printable("a\u{1}b".into()).is_none());
        assert_eq!(printable("ok\n".into()), Some(json!("ok\n")));
        assert_eq!(cell_bytes(&json!("abcd")), 4);
        assert_eq!(cell_bytes(&json!(12345)), 5);
        assert_eq!(cell_bytes(&Value::Null), 0);
        // The lower bound used before decoding matches what decoding then counts.
        for n in 0..10 {
            assert_eq!(base64_len(n), cell_bytes(&b64(&vec![7u8; n])));
        }
    }
}
