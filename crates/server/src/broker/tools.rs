//! Tool definitions per agent, in MCP, OpenAI and Anthropic shapes.
//!
//! Built only from tool names, handle names, handle kinds and constraints' non-secret facts, and
//! the operator's descriptions; never from a secret (T21). `credential_handle` is an enum of
//! exactly the handles this agent may use with that tool.

use airlock_core::config::{ArgTemplate, Handle, Scope, SharesConfig};
use airlock_core::{HandleName, Tool};
use std::borrow::Cow;
use std::collections::BTreeMap;
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
    /// True when the tool reaches beyond airlock and its bound services (e-mail goes out to
    /// people; a command with network access can reach anything).
    pub open_world: bool,
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
    if let Some(aws) = handle.aws() {
        let scopes: Vec<&str> = aws
            .scopes
            .iter()
            .map(|s| match s {
                Scope::ReadOnly => "read-only",
                Scope::ReadWrite => "read-write",
            })
            .collect();
        facts.push(scopes.join(" or "));
        facts.push(format!("buckets: {}", aws.buckets.join(", ")));
        facts.push(format!("lease duration: 900 to {} s", aws.max_ttl_seconds));
    }
    if let Some(smtp) = handle.smtp() {
        facts.push(format!("recipients: {}", smtp.allowed_recipients.join(", ")));
    }
    if let Some(cmd) = handle.command() {
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| match a {
                ArgTemplate::Fixed(s) => s.clone(),
                ArgTemplate::Placeholder(n) => format!("{{{n}}}"),
                ArgTemplate::SecretFile => "{secret_file}".into(),
            })
            .collect();
        facts.push(format!("program: {} {}", cmd.program.display(), args.join(" ")));
        facts.push(if cmd.network { "network: on".into() } else { "network: off".into() });
    }
    let desc = if handle.description.is_empty() { String::new() } else { format!(" {}", handle.description) };
    format!("- {h}:{desc} ({})", facts.join(", "))
}

/// The tools `handles_for` permits, with their schemas.
pub fn tool_defs(cfg: &Handles, shares: &SharesConfig, handles_for: impl Fn(Tool) -> Vec<HandleName>) -> Vec<ToolDef> {
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
        let mut open_world = matches!(tool, Tool::HttpRequest | Tool::SendEmail | Tool::ShareSecret | Tool::S3Object);
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
            Tool::SendEmail => {
                let addresses = json!({"oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}}
                ]});
                (
                    "Send a plain-text e-mail through airlock, which signs in to the mail server. The sender is fixed by the handle; recipients must be on its allow-list. Header values must not contain line breaks, and a message containing a credential is refused.",
                    json!({
                        "credential_handle": handle_prop,
                        "to": {"description": "Recipient address (name@example.com) or a list of them.", "oneOf": addresses["oneOf"]},
                        "cc": {"description": "Copy recipients.", "oneOf": addresses["oneOf"]},
                        "subject": {"type": "string", "description": "One line."},
                        "body": {"type": "string", "description": "Plain text."},
                        "reply_to": {"type": "string", "description": "A Reply-To address."}
                    }),
                    vec!["credential_handle", "to", "subject", "body"],
                    false,
                )
            }
            Tool::RunCommand => {
                // The union of the permitted handles' placeholders; one handle's enums are shown.
                let mut props = serde_json::Map::new();
                for h in &handles {
                    let Some(cmd) = cfg[h].command() else { continue };
                    open_world |= cmd.network;
                    for (name, p) in &cmd.placeholders {
                        let mut schema = json!({"type": "string", "maxLength": p.max_bytes});
                        if let Some(v) = &p.one_of {
                            schema["enum"] = json!(v);
                        }
                        if let Some(re) = &p.regex {
                            schema["description"] = json!(format!("must match the regular expression {re}"));
                        }
                        props.entry(name.clone()).or_insert(schema);
                    }
                }
                (
                    "Run the handle's program through airlock, which gives it the credential privately (never in its arguments). Supply only the values of the handle's argument placeholders. Returns the exit code and the (capped) output.",
                    json!({
                        "credential_handle": handle_prop,
                        "args": {
                            "type": "object",
                            "properties": props,
                            "additionalProperties": false,
                            "description": "One value per placeholder of the handle's argument template."
                        }
                    }),
                    vec!["credential_handle"],
                    false,
                )
            }
            Tool::ShareSecret => {
                let recipients: Vec<&str> = shares.recipients.keys().map(String::as_str).collect();
                (
                    "Hand the credential behind a handle to a person as a one-time, end-to-end encrypted link. airlock creates the link and delivers it to the recipient through a configured channel; you get only the share id and its expiry, never the link or the secret.",
                    json!({
                        "credential_handle": handle_prop,
                        "recipient": {"type": "string", "enum": recipients, "description": "Who receives the link (a recipient configured in airlock)."},
                        "views": {"type": "integer", "minimum": 1, "maximum": shares.max_views, "description": "How many times the link can be opened; default 1."},
                        "expires_in": {"type": "integer", "minimum": 60, "maximum": shares.max_expiry_seconds, "description": "Seconds until the link expires; default 3600."}
                    }),
                    vec!["credential_handle", "recipient"],
                    false,
                )
            }
            Tool::RequestLease => {
                let aws = handles.iter().any(|h| cfg[h].aws().is_some());
                let mut props = json!({
                    "credential_handle": handle_prop,
                    "scope": {"type": "string", "enum": ["read_only", "read_write"]},
                    "ttl_seconds": {"type": "integer", "minimum": 1, "description": "Lifetime in seconds; the handle's policy caps it (aws handles: 900, STS's minimum and the default, or more)."},
                    "tables": {"type": "array", "items": {"type": "string"}, "description": "Database handles: the tables the lease may touch (default: all of the handle's)."},
                    "task_id": {"type": "string", "description": "A task from POST /v1/tasks; closing it revokes the lease."}
                });
                if aws {
                    props["buckets"] = json!({"type": "array", "items": {"type": "string"}, "description": "aws handles: the buckets the lease may use with s3_object (default: all of the handle's)."});
                }
                (
                    "Ask airlock for a short-lived lease: a new handle, usable only by you until it expires, limited to the scope and tables or buckets you name (never wider than the handle). On a database handle use it with query_db; on an aws handle it is a short-lived AWS session used with s3_object. Nothing secret is returned.",
                    props,
                    vec!["credential_handle", "scope", "ttl_seconds"],
                    // Issuing a lease changes no data.
                    true,
                )
            }
            Tool::S3Object => {
                let mut buckets: Vec<String> = handles.iter().filter_map(|h| cfg[h].aws()).flat_map(|a| a.buckets.clone()).collect();
                buckets.sort();
                buckets.dedup();
                let ro = handles.iter().all(|h| cfg[h].aws().is_none_or(|a| !a.scopes.contains(&Scope::ReadWrite)));
                let ops: &[&str] = if ro { &["get", "list"] } else { &["get", "put", "list", "delete"] };
                (
                    "Get, put, list or delete objects in S3 through airlock with a lease of an aws handle (request_lease first). The bucket must be one the lease names; airlock signs the request with the lease's short-lived credentials, which are never shown. get returns the object as text (encoding utf-8) or base64, capped; list returns keys (capped); put stores `body` as the object's content (read_write leases only).",
                    json!({
                        "credential_handle": handle_prop,
                        "operation": {"type": "string", "enum": ops},
                        "bucket": {"type": "string", "enum": buckets},
                        "key": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "The object key (get, put, delete) or a key prefix (list)."},
                        "body": {"type": "string", "description": "put: the object's content, as text."}
                    }),
                    vec!["credential_handle", "operation", "bucket"],
                    ro,
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
            open_world,
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
                    "openWorldHint": d.open_world,
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

use super::Caller;

impl super::Broker {
    /// The tools `agent` (an agent of the configuration) may call.
    pub fn tool_defs(&self, agent: &str) -> Vec<ToolDef> {
        // s3_object is only ever on a lease, never on a configured handle.
        tool_defs(&self.cfg.handles, &self.cfg.shares, |t| {
            if t == Tool::S3Object {
                Vec::new()
            } else {
                self.policy.allowed_handles(agent, t, &self.cfg)
            }
        })
    }

    /// The tools `caller` may call: its grants, `query_db` on its live database leases and
    /// `s3_object` on its live aws leases.
    pub async fn tool_defs_for(&self, caller: &Caller) -> Vec<ToolDef> {
        let leases = self.live_lease_handles(&caller.agent.id).await;
        let mut handles = Cow::Borrowed(&self.cfg.handles);
        if !leases.is_empty() {
            let h = handles.to_mut();
            for l in &leases {
                h.insert(l.name.clone(), l.clone());
            }
        }
        tool_defs(&handles, &self.cfg.shares, |t| {
            let mut v: Vec<HandleName> = self
                .cfg
                .handles
                .values()
                .filter(|h| t != Tool::S3Object && t.applies_to(h.kind) && self.decide(caller, t, h).allowed)
                .map(|h| h.name.clone())
                .collect();
            // Lease handles: query_db on database leases, s3_object on aws leases.
            if matches!(t, Tool::QueryDb | Tool::S3Object) {
                v.extend(leases.iter().filter(|l| t.applies_to(l.kind)).map(|l| l.name.clone()));
            }
            v
        })
    }

    /// [`Broker::tool_defs_for`], rendered and scrubbed (T21).
    pub async fn tools_json_for(&self, caller: &Caller, format: Format) -> Value {
        let mut v = render(&self.tool_defs_for(caller).await, format);
        self.scrubber().scrub_json(&mut v);
        v
    }

    /// Agent ids whose tool list changed, as they change (for MCP `list_changed`).
    pub fn subscribe_tool_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.leases.tool_changes.subscribe()
    }

    /// The tools `agent` may call, rendered and scrubbed (T21).
    pub fn tools_json(&self, agent: &str, format: Format) -> Value {
        let mut v = render(&self.tool_defs(agent), format);
        self.scrubber().scrub_json(&mut v);
        v
    }
}
