//! The property of the `config_load` fuzz target, shared with
//! `crates/core/tests/fuzz_regressions.rs` (which replays the corpus with stable Rust).
//!
//! `Config::parse(text, file, dir)` on arbitrary text (invalid UTF-8 replaced, as a file read
//! would refuse it before parsing):
//! * never panics;
//! * an error is a list of at least one problem, each shown on exactly one line that starts with
//!   the file name (`FILE[:LINE]: ...`), with a line number inside the text;
//! * a configuration that loads prints (`Debug`) without panicking.

use airlock_core::config::{Config, ConfigError};
use std::path::Path;

/// The file name problems are reported under.
pub const FILE: &str = "fuzz.toml";

/// Runs the property on one input; panics (a fuzz crash, a failed test) when it does not hold.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = Config::parse(&text, FILE, Path::new("/fuzz/base"));
    let _ = format!("{parsed:?}");
    if let Err(e) = &parsed {
        if let Err(why) = error_is_well_formed(&text, e) {
            panic!("config_load property: {why}\nerror: {e}");
        }
    }
}

/// The shape an error must have; `Err` says what is wrong with it.
pub fn error_is_well_formed(text: &str, e: &ConfigError) -> Result<(), String> {
    let problems = match e {
        ConfigError::Invalid { problems, .. } => problems,
        other => return Err(format!("Config::parse returned another kind of error: {other:?}")),
    };
    if problems.is_empty() {
        return Err("an Invalid error with no problem".into());
    }
    let lines = text.split('\n').count();
    for p in problems {
        let one = p.display_in(FILE).to_string();
        if one.contains(['\n', '\r']) {
            return Err(format!("a problem is shown on more than one line: {one:?}"));
        }
        if !one.starts_with(&format!("{FILE}:")) {
            return Err(format!("a problem does not start with the file name: {one:?}"));
        }
        if let Some(l) = p.location {
            if l.line == 0 || l.line > lines {
                return Err(format!("a problem points at line {} of a {lines}-line text", l.line));
            }
        }
    }
    let whole = e.to_string();
    if whole.split('\n').count() != problems.len() {
        return Err(format!("{} problems shown on {} lines", problems.len(), whole.split('\n').count()));
    }
    Ok(())
}
