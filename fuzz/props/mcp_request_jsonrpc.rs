//! The JSON-RPC half of the `mcp_request` fuzz target, shared with
//! `crates/mcp/tests/fuzz_regressions.rs` (which replays the corpus with stable Rust); the
//! argument half is `mcp_request_args.rs` (replayed by `crates/server/tests/`).
//!
//! Arbitrary bytes as an MCP request body (streamable HTTP) and as stdio lines:
//! * decoding a client message (`rmcp::model::ClientJsonRpcMessage`, what `airlock-mcp` serves)
//!   never panics, nor does encoding a decoded one again;
//! * for `tools/call`, the names the handler and the broker read from it follow their grammar:
//!   `Tool::parse` accepts exactly the nine wire names and agrees with the serde form used by the
//!   configuration; `HandleName::parse` (what `credential_handle` goes through) accepts exactly
//!   `[A-Z][A-Z0-9_]{0,63}` (T16), and its serde form agrees; `Format::parse` accepts exactly
//!   `mcp`, `openai`, `anthropic`. These name checks run on every string of any JSON input too.

use airlock_core::{HandleName, Tool};
use airlock_server::Format;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::Value;

/// Most strings of one JSON input whose names are checked.
const MAX_STRINGS: usize = 256;

/// Runs the property on one input; panics (a fuzz crash, a failed test) when it does not hold.
pub fn check(data: &[u8]) {
    message(data);
    // stdio: one message per line.
    if data.contains(&b'\n') {
        for line in data.split(|&b| b == b'\n') {
            message(line);
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let mut n = 0;
        strings(&v, &mut |s| {
            n += 1;
            if n <= MAX_STRINGS {
                names_hold(s);
            }
        });
    }
}

fn strings(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, f)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            f(k);
            strings(x, f)
        }),
        _ => {}
    }
}

fn message(bytes: &[u8]) {
    let Ok(msg) = serde_json::from_slice::<ClientJsonRpcMessage>(bytes) else { return };
    let _ = serde_json::to_string(&msg);
    if let JsonRpcMessage::Request(r) = &msg {
        if let ClientRequest::CallToolRequest(c) = &r.request {
            names_hold(&c.params.name);
            if let Some(h) = c.params.arguments.as_ref().and_then(|a| a.get("credential_handle")).and_then(Value::as_str) {
                names_hold(h);
            }
        }
    }
}

/// The handle grammar, written out: `[A-Z][A-Z0-9_]{0,63}`.
pub fn handle_grammar(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('A'..='Z'))
        && s.chars().count() <= 64
        && chars.all(|c| matches!(c, 'A'..='Z' | '0'..='9' | '_'))
}

/// The name parsers on one string; panics when one disagrees with its grammar.
pub fn names_hold(s: &str) {
    if let Err(why) = names(s) {
        panic!("mcp_request property: {why} (string {s:?})");
    }
}

/// `Err` when `parse` (a name parser, as accept or refuse) disagrees with `grammar` on `s`.
pub fn parser_agrees(what: &str, parse: &dyn Fn(&str) -> bool, grammar: &dyn Fn(&str) -> bool, s: &str) -> Result<(), String> {
    let (p, g) = (parse(s), grammar(s));
    if p != g {
        return Err(format!("{what} {} {s:?}, the grammar {}", if p { "accepts" } else { "refuses" }, if g { "accepts it" } else { "refuses it" }));
    }
    Ok(())
}

/// `Err` says which name parser disagrees with its grammar on `s`.
pub fn names(s: &str) -> Result<(), String> {
    parser_agrees("HandleName::parse", &|s| HandleName::parse(s).is_ok(), &handle_grammar, s)?;
    let parsed = HandleName::parse(s);
    if let Ok(h) = &parsed {
        if h.as_str() != s || h.to_string() != s {
            return Err("a parsed handle name changed".into());
        }
    }
    let de = serde_json::from_value::<HandleName>(Value::String(s.to_owned()));
    if de.is_ok() != parsed.is_ok() {
        return Err("HandleName's serde form disagrees with HandleName::parse".into());
    }
    let tool = Tool::parse(s);
    let listed = Tool::ALL.iter().copied().find(|t| t.name() == s);
    if tool != listed {
        return Err(format!("Tool::parse gives {tool:?}, the list {listed:?}"));
    }
    let de = serde_json::from_value::<Tool>(Value::String(s.to_owned())).ok();
    if de != tool {
        return Err(format!("Tool's serde form gives {de:?}, Tool::parse {tool:?}"));
    }
    let format = Format::parse(s).is_some();
    if format != ["mcp", "openai", "anthropic"].contains(&s) {
        return Err(format!("Format::parse says {format}"));
    }
    Ok(())
}
