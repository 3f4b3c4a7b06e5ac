//! The rows of one result, gathered under the handle's caps (T20), whatever driver reads them.
//!
//! A row is kept whole or not at all: at `max_rows` rows, or at the first row whose cells would
//! take the total past `max_bytes`, the result ends with `truncated: true`. Each cell is checked
//! against the budget from its raw size (`decode::*_min_bytes`) before it is decoded, so an
//! over-budget cell is never copied.

use crate::decode::{cell_bytes, Cell};
use airlock_core::config::DatabaseConstraints;
use serde_json::{json, Value};

/// The rows kept so far, and what they count against the caps.
pub(crate) struct Rows {
    max_rows: usize,
    max_bytes: usize,
    rows: Vec<Value>,
    bytes: usize,
    truncated: bool,
    /// `name (type)` of each column with a value no decoder took.
    unsupported: Vec<String>,
}

impl Rows {
    pub(crate) fn new(db: &DatabaseConstraints) -> Rows {
        Rows { max_rows: db.max_rows, max_bytes: db.max_bytes, rows: Vec::new(), bytes: 0, truncated: false, unsupported: Vec::new() }
    }

    /// A cap was reached: no row is kept any more.
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// The row cap is reached: the next row would pass it.
    pub(crate) fn full(&self) -> bool {
        self.rows.len() >= self.max_rows
    }

    /// Offers the next row of `columns.len()` cells: `min_bytes(i)` is cell `i`'s lower bound from
    /// its raw value, `cell(i)` decodes it. With `over` (a cap the caller saw: the row cap, or the
    /// server's measure of the row), or when its cells would pass the byte cap, the row is not
    /// kept and the result is truncated. Returns whether it was kept.
    pub(crate) fn offer(
        &mut self,
        over: bool,
        columns: &[impl AsRef<str>],
        min_bytes: impl Fn(usize) -> usize,
        cell: impl Fn(usize) -> Cell,
    ) -> bool {
        let mut cells = Vec::with_capacity(columns.len());
        let mut row_bytes = 0usize;
        let mut fits = !over;
        for (i, name) in columns.iter().enumerate() {
            if !fits {
                break;
            }
            if self.bytes + row_bytes + min_bytes(i) > self.max_bytes {
                fits = false;
                break;
            }
            let v = match cell(i) {
                Cell::Value(v) => v,
                Cell::Unsupported(ty) => {
                    let note = format!("{} ({ty})", name.as_ref());
                    if !self.unsupported.contains(&note) {
                        self.unsupported.push(note);
                    }
                    Value::Null
                }
            };
            row_bytes += cell_bytes(&v);
            fits = self.bytes + row_bytes <= self.max_bytes;
            cells.push(v);
        }
        if fits {
            self.bytes += row_bytes;
            self.rows.push(Value::Array(cells));
        } else {
            self.truncated = true;
        }
        fits
    }

    /// The result: `{columns, row_count, rows, truncated}`, with `rows_affected` when given (a
    /// statement that writes) and `unsupported_columns` when a value had no decoder.
    pub(crate) fn into_value(self, columns: &[impl AsRef<str>], rows_affected: Option<u64>) -> Value {
        let mut out = json!({
            "columns": columns.iter().map(AsRef::as_ref).collect::<Vec<&str>>(),
            "row_count": self.rows.len(),
            "rows": self.rows,
            "truncated": self.truncated,
        });
        if let Some(n) = rows_affected {
            out["rows_affected"] = json!(n);
        }
        if !self.unsupported.is_empty() {
            out["unsupported_columns"] = json!(self.unsupported);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::config::Scope;

    fn caps(max_rows: usize, max_bytes: usize) -> DatabaseConstraints {
        DatabaseConstraints { scope: Scope::ReadOnly, max_rows, max_bytes, ..DatabaseConstraints::default() }
    }

    fn text(s: &str) -> Cell {
        Cell::Value(json!(s))
    }

    #[test]
    fn rows_are_kept_whole_up_to_each_cap() {
        let cols = ["a", "b"];
        // Byte cap: 10 bytes; the second row's second cell would pass it.
        let mut r = Rows::new(&caps(100, 10));
        assert!(r.offer(false, &cols, |_| 3, |_| text("abc")));
        assert!(!r.offer(false, &cols, |i| if i == 0 { 3 } else { 5 }, |i| text(if i == 0 { "abc" } else { "abcde" })));
        assert!(r.truncated());
        assert_eq!(r.into_value(&cols, None), json!({"columns": ["a", "b"], "row_count": 1, "rows": [["abc", "abc"]], "truncated": true}));
        // A cell over the budget by its raw size is never decoded.
        let mut r = Rows::new(&caps(100, 10));
        assert!(!r.offer(false, &cols, |_| 11, |_| panic!("decoded an over-budget cell")));
        // Row cap: the caller says `over`.
        let mut r = Rows::new(&caps(1, 1000));
        assert!(!r.full());
        assert!(r.offer(r.full(), &cols, |_| 0, |_| Cell::Value(json!(1))));
        assert!(r.full());
        assert!(!r.offer(r.full(), &cols, |_| 0, |_| panic!("decoded past the row cap")));
        let v = r.into_value(&cols, Some(7));
        assert_eq!((v["row_count"].clone(), v["truncated"].clone(), v["rows_affected"].clone()), (json!(1), json!(true), json!(7)));
    }

    #[test]
    fn an_undecodable_value_is_null_and_its_column_named_once() {
        let cols = ["x"];
        let mut r = Rows::new(&caps(10, 1000));
        for _ in 0..3 {
            assert!(r.offer(false, &cols, |_| 0, |_| Cell::Unsupported("TEXT".into())));
        }
        let v = r.into_value(&cols, None);
        assert_eq!(v["rows"], json!([[null], [null], [null]]));
        assert_eq!(v["unsupported_columns"], json!(["x (TEXT)"]));
    }
}
