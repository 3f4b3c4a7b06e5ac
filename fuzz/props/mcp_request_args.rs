//! The argument half of the `mcp_request` fuzz target, shared with
//! `crates/server/tests/fuzz_regressions.rs` (which replays the corpus with stable Rust); the
//! JSON-RPC half is `mcp_request_jsonrpc.rs`.
//!
//! Arbitrary bytes as the body of `POST /v1/invoke` (`{"tool", "arguments"}`), of an MCP
//! `tools/call` (`params.name`, `params.arguments`), or as a tool's arguments on their own, go
//! the way the broker takes them before any secret exists (`Broker::invoke` → `check` →
//! `Prepared::validate`): `credential_handle` is taken out and parsed, the tool name is parsed,
//! the arguments are parsed (`parse_args`) into every tool's argument type (`QueryArgs`,
//! `HttpArgs`, `EmailArgs`, `CommandArgs`, `S3Args`, `ShareArgs`, `RawLeaseArgs`,
//! `RawAwsLeaseArgs`, `ConnectArgs`, `ConnectStatusArgs`, `RequestArgs`, `RequestStatusArgs`)
//! and the sub-agent request (`ChildRequest`), and the named tool's executor validates them
//! against every handle of `crates/core/src/config/testdata/full.toml` it applies to (the pure
//! validators: SQL, HTTP, e-mail, command, S3). Properties:
//! * nothing panics;
//! * an argument error is `invalid-arguments` with a message of at most 200 characters after its
//!   prefix (`strip_serde_detail`'s bound: it may quote the agent's value);
//! * a refusal always carries a code and a non-empty message.

use airlock_core::config::{Config, Handle};
use airlock_core::executor::parse_args;
use airlock_core::{CallError, ErrorCode, HandleName, Tool};
use airlock_exec_aws::{AwsExecutor, S3Args};
use airlock_exec_command::{CommandArgs, CommandExecutor, SandboxSettings};
use airlock_exec_email::{EmailArgs, EmailExecutor};
use airlock_exec_http::{HttpArgs, HttpExecutor};
use airlock_exec_sql::{QueryArgs, SqlExecutor};
use airlock_server::broker::lease::{RawAwsLeaseArgs, RawLeaseArgs};
use airlock_server::broker::oauth::{ConnectArgs, ConnectStatusArgs};
use airlock_server::broker::request::{RequestArgs, RequestStatusArgs};
use airlock_server::broker::share::ShareArgs;
use airlock_server::broker::ChildRequest;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

/// The longest message `parse_args` may give: its prefix and 200 characters of serde's.
const MAX_ARGS_MESSAGE: usize = "invalid arguments: ".len() + 200;

struct World {
    cfg: Config,
    command: CommandExecutor,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let cfg = Config::parse(
            include_str!("../../crates/core/src/config/testdata/full.toml"),
            "full.toml",
            Path::new("/etc/airlock"),
        )
        .expect("full.toml loads");
        let command = CommandExecutor::new(SandboxSettings::from_config(&cfg));
        World { cfg, command }
    })
}

/// Runs the property on one input; panics (a fuzz crash, a failed test) when it does not hold.
pub fn check(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    // REST: {"tool": ..., "arguments": ...}
    if let Some(tool) = v.get("tool").and_then(Value::as_str) {
        invoke(tool, v.get("arguments").cloned().unwrap_or(Value::Null));
    }
    // MCP: {"method": "tools/call", "params": {"name": ..., "arguments": ...}}
    if let Some(p) = v.get("params") {
        if let Some(tool) = p.get("name").and_then(Value::as_str) {
            invoke(tool, p.get("arguments").cloned().unwrap_or(Value::Object(Default::default())));
        }
    }
    // The arguments on their own, for every tool (and `POST /v1/leases`, `POST
    // /v1/agents/self/children`, whose bodies are arguments).
    for t in Tool::ALL {
        invoke(t.name(), v.clone());
    }
    parsed::<ChildRequest>(&v);
}

fn parsed<A: DeserializeOwned>(v: &Value) -> Option<A> {
    match parse_args::<A>(v) {
        Ok(a) => Some(a),
        Err(e) => {
            if let Err(why) = argument_error(&e) {
                panic!("mcp_request property: {why}");
            }
            None
        }
    }
}

/// The shape of a `parse_args` error; `Err` says what is wrong with it.
pub fn argument_error(e: &CallError) -> Result<(), String> {
    if e.code != ErrorCode::InvalidArguments {
        return Err(format!("an argument error has code {:?}", e.code));
    }
    if e.message.chars().count() > MAX_ARGS_MESSAGE {
        return Err(format!("an argument error message is {} characters long", e.message.chars().count()));
    }
    Ok(())
}

fn refusal(e: &CallError) {
    assert!(!e.message.is_empty(), "mcp_request property: a refusal ({:?}) with an empty message", e.code);
}

/// One call as the broker takes it, up to the executor's validation.
fn invoke(tool_name: &str, mut args: Value) {
    let handle = args.get("credential_handle").and_then(Value::as_str).map(|h| HandleName::parse(h).ok());
    if let Some(obj) = args.as_object_mut() {
        obj.remove("credential_handle");
    }
    let _ = handle;
    let Some(tool) = Tool::parse(tool_name) else { return };
    if !args.is_object() {
        return;
    }
    let w = world();
    let handles = w.cfg.handles.values().filter(|h| tool.applies_to(h.kind));
    match tool {
        Tool::QueryDb => {
            if let Some(a) = parsed::<QueryArgs>(&args) {
                handles.for_each(|h| each(SqlExecutor::validate(h, &a)));
            }
        }
        Tool::HttpRequest => {
            if let Some(a) = parsed::<HttpArgs>(&args) {
                handles.for_each(|h| each(HttpExecutor::validate(h, &a)));
            }
        }
        Tool::SendEmail => {
            if let Some(a) = parsed::<EmailArgs>(&args) {
                handles.for_each(|h| each(EmailExecutor::validate(h, a.clone(), |_: &str| false)));
            }
        }
        Tool::RunCommand => {
            if let Some(a) = parsed::<CommandArgs>(&args) {
                handles.for_each(|h: &Handle| each(w.command.validate(h, &a)));
            }
        }
        Tool::S3Object => {
            if let Some(a) = parsed::<S3Args>(&args) {
                handles.for_each(|h| each(AwsExecutor::validate(h, &a)));
            }
        }
        Tool::ShareSecret => {
            parsed::<ShareArgs>(&args);
        }
        Tool::RequestLease => {
            parsed::<RawLeaseArgs>(&args);
            parsed::<RawAwsLeaseArgs>(&args);
        }
        Tool::ConnectAccount => {
            parsed::<ConnectArgs>(&args);
        }
        Tool::ConnectStatus => {
            parsed::<ConnectStatusArgs>(&args);
        }
        Tool::RequestSecret => {
            parsed::<RequestArgs>(&args);
        }
        Tool::RequestStatus => {
            parsed::<RequestStatusArgs>(&args);
        }
    }
}

fn each<T>(r: Result<T, CallError>) {
    if let Err(e) = r {
        refusal(&e);
    }
}
