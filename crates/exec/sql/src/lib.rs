//! The `query_db` executor: validates one SQL statement against a database handle, runs it with
//! the handle's credential, and returns rows as JSON.
//!
//! The shape of a call is validate (no secret, no I/O: [`SqlExecutor::validate`]) then execute
//! (the only place the secret is used: [`SqlExecutor::execute`]); the broker scrubs the result.
//! [`validate`](mod@validate) owns the statement rules (T01, T02), `exec` the pools, transactions,
//! timeouts and caps (T12, T20), `wrap` the bounded form of a read that lets the server enforce
//! the row and cell caps, `decode` the conversion of values to JSON, [`statements`] the bounded
//! cache of statements already checked.
//!
//! Notes for callers:
//! * PostgreSQL parameters are typed by their JSON value (`null` and strings as `text`, integers as
//!   `int8`, floats as `float8`); write `$1::int` where the server cannot coerce.
//! * MySQL flags `_bin` collations like binary strings: such values come back as text when they
//!   are printable UTF-8, as base64 otherwise. PostgreSQL `bytea` and SQLite blobs are always
//!   base64.
//! * [`lease`] creates and drops the real database roles of dynamic leases.
//! * With `DatabaseConstraints::url` set the secret is the password (SQLite: unused); otherwise
//!   the secret is the whole URL and its scheme must match the handle's kind.
#![forbid(unsafe_code)]

mod decode;
mod exec;
mod lite;
pub mod lease;
pub mod statements;
mod tool;
pub mod validate;
mod rows;
mod wrap;

pub use exec::SqlExecutor;
pub use validate::{QueryArgs, ValidatedQuery};
