//! Tool definitions per agent, in MCP, OpenAI and Anthropic shapes.
//!
//! Built only from tool names, handle names, handle kinds and constraints' non-secret facts, and
//! the operator's descriptions; never from a secret (T21). `credential_handle` is an enum of
//! exactly the handles this agent may use with that tool.

use airlock_core::config::{Handle, Scope};
use std::collections::BTreeMap;
use airlock_core::{HandleName, Tool};
use serde_json::{json, Value};

/// The three output shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// MCP `tools/list` entries: `{name, description, inputSchema, annotations}`.
    Mcp,
    /// OpenAI function calling: `{type: "function", function: {name, description, parameters}}`.
    Openai,
    /// Anthropic tool use: `{name, description, input_schema}`.
    Anthropic,
}

impl Format {
    /// Parses `mcp`, `openai` or `anthropic`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "mcp" => Some(Format::Mcp),
            "openai" => Some(Format::Openai),
            "anthropic" => Some(Format::Anthropic),
            _ => None,
        }
    }
}

/// One tool available to an agent, with the handles it may use.
#[derive(Clone, Debug)]
pub struct ToolDef {
    /// The tool.
    pub tool: Tool,
    /// The description shown to the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
    /// True when every permitted handle is read-only.
    pub read_only: bool,
}

/// The handles a tool list is built from: the configured ones and the caller's live leases.
pub type Handles = BTreeMap<HandleName, Handle>;

fn handle_line(cfg: &Handles, h: &HandleName) -> String {
    let handle = &cfg[h];
    let mut facts = vec![handle.kind.as_str().to_owned()];
    if let Some(db) = handle.database() {
        facts.push(match db.scope {
            Scope::ReadOnly => "read-only".into(),
            Scope::ReadWrite => "read-write".into(),
        });
        if let Some(t) = &db.tables {
            facts.push(format!("tables: {}", t.join(", ")));
        }
    }
    if let Some(http) = handle.http() {
        let d: Vec<String> = http
            .destinations
            .iter()
            .map(|d| format!("{} {}://{}:{}{}", d.methods.join("|"), d.scheme, d.host, d.port, d.path_prefix))
            .collect();
        facts.push(d.join("; "));
    }
    let desc = if handle.description.is_empty() { String::new() } else { format!(" {}", handle.description) };
    format!("- {h}:{desc} ({})", facts.join(", "))
}

/// The tools `handles_for` permits, with their schemas.
pub fn tool_defs(cfg: &Handles, handles_for: impl Fn(Tool) -> Vec<HandleName>) -> Vec<ToolDef> {
    let mut out = Vec::new();
    for &tool in Tool::ALL {
        let handles = handles_for(tool);
        if handles.is_empty() {
            continue;
        }
        let names: Vec<&str> = handles.iter().map(|h| h.as_str()).collect();
        let lines: Vec<String> = handles.iter().map(|h| handle_line(cfg, h)).collect();
        let handle_prop = json!({
            "type": "string",
            "enum": names,
            "description": "The credential to use, by handle name. airlock performs the call; the credential is never shown."
        });
        let (summary, props, required, read_only) = match tool {
            Tool::QueryDb => {
                let ro = handles
                    .iter()
                    .all(|h| cfg[h].database().map(|d| d.scope == Scope::ReadOnly).unwrap_or(true));
                (
                    "Run one SQL statement on a database through airlock. Use placeholders ($1 for postgres, ? for mysql and sqlite) with `params`; results are capped.",
                    json!({
                        "credential_handle": handle_prop,
                        "query": {"type": "string", "description": "One SQL statement."},
                        "params": {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}, "description": "Values bound to the placeholders, in order."}
                    }),
                    vec!["credential_handle", "query"],
                    ro,
                )
            }
            Tool::HttpRequest => {
                let mut methods: Vec<String> = handles
                    .iter()
                    .filter_map(|h| cfg[h].http())
                    .flat_map(|c| c.destinations.iter().flat_map(|d| d.methods.clone()))
                    .collect();
                methods.sort();
                methods.dedup();
                let ro = methods.iter().all(|m| m == "GET" || m == "HEAD" || m == "OPTIONS");
                (
                    "Send an HTTP request to an API through airlock, which adds the credential. `path_or_url` is a path on the handle's API or a full URL on one of its bound destinations.",
                    json!({
                        "credential_handle": handle_prop,
                        "method": {"type": "string", "enum": methods},
                        "path_or_url": {"type": "string", "description": "A path such as /v1/items, or a full URL on a bound destination."},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra request headers (never credentials)."},
                        "body": {"type": "string", "description": "Request body."}
                    }),
                    vec!["credential_handle", "method", "path_or_url"],
                    ro,
                )
            }
            Tool::RequestLease => (
                "Ask airlock for a short-lived lease on a database handle: a new handle, usable only by you with query_db until it expires, limited to the scope and tables you name (never wider than the handle). Nothing secret is returned.",
                json!({
                    "credential_handle": handle_prop,
                    "scope": {"type": "string", "enum": ["read_only", "read_write"]},
                    "ttl_seconds": {"type": "integer", "minimum": 1, "description": "Lifetime in seconds; the handle's policy caps it."},
                    "tables": {"type": "array", "items": {"type": "string"}, "description": "The tables the lease may touch (default: all of the handle's)."},
                    "task_id": {"type": "string", "description": "A task from POST /v1/tasks; closing it revokes the lease."}
                }),
                vec!["credential_handle", "scope", "ttl_seconds"],
                // Issuing a lease changes no data.
                true,
            ),
        };
        out.push(ToolDef {
            tool,
            description: format!("{summary}\nHandles:\n{}", lines.join("\n")),
            input_schema: json!({
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": false
            }),
            read_only,
        });
    }
    out
}

/// Renders definitions in one of the shapes.
pub fn render(defs: &[ToolDef], format: Format) -> Value {
    let items: Vec<Value> = defs
        .iter()
        .map(|d| match format {
            Format::Mcp => json!({
                "name": d.tool.name(),
                "description": d.description,
                "inputSchema": d.input_schema,
                "annotations": {
                    "readOnlyHint": d.read_only,
                    "destructiveHint": !d.read_only,
                    "openWorldHint": d.tool == Tool::HttpRequest,
                }
            }),
            Format::Openai => json!({
                "type": "function",
                "function": {"name": d.tool.name(), "description": d.description, "parameters": d.input_schema}
            }),
            Format::Anthropic => json!({
                "name": d.tool.name(), "description": d.description, "input_schema": d.input_schema
            }),
        })
        .collect();
    json!({ "tools": items })
}
