//! Tool definitions per agent, in MCP, OpenAI and Anthropic shapes.
//!
//! Built only from tool names, handle names, handle kinds and constraints' non-secret facts, and
//! the operator's descriptions; never from a secret (T21). `credential_handle` is an enum of
//! exactly the handles this agent may use with that tool.

use airlock_core::config::{Config, Scope};
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

fn handle_line(cfg: &Config, h: &HandleName) -> String {
    let handle = &cfg.handles[h];
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
pub fn tool_defs(cfg: &Config, handles_for: impl Fn(Tool) -> Vec<HandleName>) -> Vec<ToolDef> {
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
                    .all(|h| cfg.handles[h].database().map(|d| d.scope == Scope::ReadOnly).unwrap_or(true));
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
                    .filter_map(|h| cfg.handles[h].http())
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
            Tool::ShareSecret => {
                let recipients: Vec<&str> = cfg.shares.recipients.keys().map(String::as_str).collect();
                (
                    "Hand the credential behind a handle to a person as a one-time, end-to-end encrypted link. airlock creates the link and delivers it to the recipient through a configured channel; you get only the share id and its expiry, never the link or the secret.",
                    json!({
                        "credential_handle": handle_prop,
                        "recipient": {"type": "string", "enum": recipients, "description": "Who receives the link (a recipient configured in airlock)."},
                        "views": {"type": "integer", "minimum": 1, "maximum": cfg.shares.max_views, "description": "How many times the link can be opened; default 1."},
                        "expires_in": {"type": "integer", "minimum": 60, "maximum": cfg.shares.max_expiry_seconds, "description": "Seconds until the link expires; default 3600."}
                    }),
                    vec!["credential_handle", "recipient"],
                    false,
                )
            }
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
                    // Creating a one-time link adds a record and destroys nothing.
                    "destructiveHint": !d.read_only && d.tool != Tool::ShareSecret,
                    // Both reach beyond airlock: an upstream API, or a person through a channel.
                    "openWorldHint": matches!(d.tool, Tool::HttpRequest | Tool::ShareSecret),
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
