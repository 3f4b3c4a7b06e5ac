//! Tool definitions per agent, in MCP, OpenAI and Anthropic shapes.
//!
//! Built only from tool names, handle names, handle kinds and constraints' non-secret facts, and
//! the operator's descriptions; never from a secret (T21). `credential_handle` is an enum of
//! exactly the handles this agent may use with that tool.
//!
//! Each tool's JSON Schema is generated with `schemars` from the argument type its executor
//! parses (`QueryArgs`, `HttpArgs`, ...; the doc comments of their fields are the
//! descriptions), then the per-agent facts are laid over it. tests/t21_tool_schema_golden.rs
//! holds the result for a fixed configuration and checks that every schema's properties are
//! exactly the fields its type reads.

use super::lease::{RawAwsLeaseArgs, RawLeaseArgs};
use super::oauth::{ConnectArgs, ConnectStatusArgs};
use super::request::{RequestArgs, RequestStatusArgs};
use super::share::ShareArgs;
use airlock_core::config::{ArgTemplate, Handle, RequestsConfig, Scope, SharesConfig};
use airlock_core::{HandleName, Tool};
use airlock_exec_aws::S3Args;
use airlock_exec_command::CommandArgs;
use airlock_exec_email::EmailArgs;
use airlock_exec_http::HttpArgs;
use airlock_exec_sql::QueryArgs;
use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

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
    if let Some(o) = handle.oauth() {
        facts.push(format!("connected account, scopes: {}", o.provider.scopes.join(" ")));
        facts.push(format!("owners: {}", o.provider.owners.join(", ")));
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

/// A JSON object (a schema, or the properties of one).
type Object = Map<String, Value>;

/// The JSON Schema of the argument type `T` (a tool's arguments besides `credential_handle`),
/// self-contained as MCP, OpenAI and Anthropic tool schemas must be: subschemas inlined (no
/// `$ref` or `$defs`), no `$schema`, and no description at the top (the tool has its own).
/// Every subschema is tidied (`tidy`). `additionalProperties: false` comes from `deny_unknown_fields`.
fn args_schema<T: JsonSchema>() -> Object {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(RecursiveTransform(tidy))
        .into_generator();
    match generator.into_root_schema_for::<T>().to_value() {
        Value::Object(mut schema) => {
            schema.remove("description");
            schema
        }
        // Only `true`/`false` schemas are not objects; no argument type is one.
        _ => Object::new(),
    }
}

/// Tidies one generated subschema for a tool list:
///
/// - no `title` and no `default` (the descriptions say what a default is);
/// - descriptions (doc comments) with each paragraph on one line;
/// - no `null` alternative for an optional property (an `Option` field): serde reads `null` as
///   absent, and the schema says so by not requiring the property, as the hand-written schemas
///   did (a `null` the type really takes, such as a `params` value, stays);
/// - no `format` on integers (`uint32` and the like are not JSON Schema formats);
/// - a `oneOf` of string constants (an enum whose variants have doc comments, such as `Scope`)
///   as one `{"type": "string", "enum": [...]}`.
fn tidy(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else { return };
    obj.remove("title");
    obj.remove("default");
    if let Some(Value::String(d)) = obj.get_mut("description") {
        *d = d.split("\n\n").map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n\n");
    }
    let required: Vec<Value> = obj.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for (name, prop) in props.iter_mut() {
            if !required.iter().any(|r| r == name.as_str()) {
                if let Value::Object(prop) = prop {
                    drop_null(prop);
                }
            }
        }
    }
    if obj.get("type").and_then(Value::as_str) == Some("integer") {
        obj.remove("format");
    }
    if let Some(Value::Array(alts)) = obj.get("oneOf") {
        let consts: Option<Vec<Value>> = alts
            .iter()
            .map(|a| match (a.get("type").and_then(Value::as_str), a.get("const")) {
                (Some("string"), Some(c @ Value::String(_))) => Some(c.clone()),
                _ => None,
            })
            .collect();
        if let Some(values) = consts {
            obj.remove("oneOf");
            obj.insert("type".into(), json!("string"));
            obj.insert("enum".into(), Value::Array(values));
        }
    }
}

/// Removes the `null` that `Option<T>` adds to `T`'s schema: from `"type": ["string", "null"]`,
/// or the `{"type": "null"}` branch of an `anyOf` (whose one remaining branch is merged in).
fn drop_null(prop: &mut Object) {
    let single_type = match prop.get_mut("type") {
        Some(Value::Array(types)) => {
            types.retain(|t| t != "null");
            (types.len() == 1).then(|| types[0].clone())
        }
        _ => None,
    };
    if let Some(t) = single_type {
        prop.insert("type".into(), t);
    }
    let null = json!({"type": "null"});
    let Some(Value::Array(alts)) = prop.get("anyOf") else { return };
    let rest: Vec<Value> = alts.iter().filter(|a| **a != null).cloned().collect();
    if rest.len() == alts.len() {
        return;
    }
    match <[Value; 1]>::try_from(rest) {
        Ok([Value::Object(only)]) => {
            prop.remove("anyOf");
            for (k, v) in only {
                prop.entry(k).or_insert(v);
            }
        }
        Ok([other]) => {
            prop.insert("anyOf".into(), Value::Array(vec![other]));
        }
        Err(rest) => {
            prop.insert("anyOf".into(), Value::Array(rest));
        }
    }
}

/// Adds per-agent facts to property `name` of `schema` (an enum of buckets, a maximum from the
/// configuration), replacing the keys they name. A property the type lacks is not created:
/// the schema never offers what the argument type refuses.
fn overlay(schema: &mut Object, name: &str, facts: Value) {
    let prop = schema.get_mut("properties").and_then(|p| p.get_mut(name)).and_then(Value::as_object_mut);
    if let (Some(prop), Value::Object(facts)) = (prop, facts) {
        prop.extend(facts);
    }
}

/// Lists `name` in `schema`'s `required`.
fn require(schema: &mut Object, name: &str) {
    let required = schema.entry("required").or_insert_with(|| json!([]));
    if let Some(r) = required.as_array_mut() {
        if !r.iter().any(|x| x == name) {
            r.push(json!(name));
        }
    }
}

/// One schema for arguments of either of two types (`request_lease` on database and on aws
/// handles): the properties of both (`first`'s where both have one), required what both
/// require, closed when both are.
fn either(mut first: Object, second: Object) -> Object {
    let names = |s: &Object, key: &str| -> Vec<Value> { s.get(key).and_then(Value::as_array).cloned().unwrap_or_default() };
    let theirs = names(&second, "required");
    let required: Vec<Value> = names(&first, "required").into_iter().filter(|r| theirs.contains(r)).collect();
    first.insert("required".into(), Value::Array(required));
    if let (Some(Value::Object(props)), Some(Value::Object(more))) = (first.get_mut("properties"), second.get("properties")) {
        for (k, v) in more {
            props.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if second.get("additionalProperties") != Some(&Value::Bool(false)) {
        first.remove("additionalProperties");
    }
    first
}

/// The tool's input schema: `args` with `credential_handle` first among the properties and in
/// `required`, and the top-level keys in a fixed order.
fn with_handle(mut args: Object, handle_prop: Value) -> Object {
    let mut props = Object::new();
    props.insert("credential_handle".into(), handle_prop);
    if let Some(Value::Object(p)) = args.remove("properties") {
        props.extend(p);
    }
    let mut required = vec![json!("credential_handle")];
    if let Some(Value::Array(r)) = args.remove("required") {
        required.extend(r);
    }
    let mut schema = Object::new();
    schema.insert("type".into(), args.remove("type").unwrap_or_else(|| json!("object")));
    schema.insert("properties".into(), Value::Object(props));
    schema.insert("required".into(), Value::Array(required));
    if let Some(closed) = args.remove("additionalProperties") {
        schema.insert("additionalProperties".into(), closed);
    }
    schema.extend(args);
    schema
}

/// The tools `handles_for` permits, with their schemas.
///
/// Each schema is generated from the tool's argument type with `schemars`; what depends on
/// the agent's handles and the configuration (the handles themselves, methods, buckets,
/// operations, placeholders, recipients, share limits) is laid over it.
pub fn tool_defs(cfg: &Handles, shares: &SharesConfig, handles_for: impl Fn(Tool) -> Vec<HandleName>) -> Vec<ToolDef> {
    let mut out = Vec::new();
    for &tool in Tool::ALL {
        // They name no configured handle: listed by `request_tool_defs`.
        if matches!(tool, Tool::RequestSecret | Tool::RequestStatus) {
            continue;
        }
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
        let mut open_world = matches!(tool, Tool::HttpRequest | Tool::SendEmail | Tool::ShareSecret | Tool::S3Object | Tool::ConnectAccount);
        let (summary, schema, read_only) = match tool {
            Tool::QueryDb => {
                let ro = handles
                    .iter()
                    .all(|h| cfg[h].database().map(|d| d.scope == Scope::ReadOnly).unwrap_or(true));
                (
                    "Run one SQL statement on a database through airlock. Use placeholders ($1 for postgres, ? for mysql and sqlite) with `params`; results are capped.",
                    args_schema::<QueryArgs>(),
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
                let mut schema = args_schema::<HttpArgs>();
                overlay(&mut schema, "method", json!({"enum": methods}));
                (
                    "Send an HTTP request to an API through airlock, which adds the credential. `path_or_url` is a path on the handle's API or a full URL on one of its bound destinations.",
                    schema,
                    ro,
                )
            }
            Tool::SendEmail => (
                "Send a plain-text e-mail through airlock, which signs in to the mail server. The sender is fixed by the handle; recipients must be on its allow-list. Header values must not contain line breaks, and a message containing a credential is refused.",
                args_schema::<EmailArgs>(),
                false,
            ),
            Tool::RunCommand => {
                // The union of the permitted handles' placeholders; one handle's enums are shown.
                let mut props = Object::new();
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
                let mut schema = args_schema::<CommandArgs>();
                // Only the handle's placeholders: anything else is refused.
                overlay(&mut schema, "args", json!({"properties": props, "additionalProperties": false}));
                (
                    "Run the handle's program through airlock, which gives it the credential privately (never in its arguments). Supply only the values of the handle's argument placeholders. Returns the exit code and the (capped) output.",
                    schema,
                    false,
                )
            }
            Tool::ShareSecret => {
                let recipients: Vec<&str> = shares.recipients.keys().map(String::as_str).collect();
                let mut schema = args_schema::<ShareArgs>();
                overlay(&mut schema, "recipient", json!({"enum": recipients}));
                overlay(&mut schema, "views", json!({"maximum": shares.max_views}));
                overlay(&mut schema, "expires_in", json!({"maximum": shares.max_expiry_seconds}));
                (
                    "Hand the credential behind a handle to a person as a one-time, end-to-end encrypted link. airlock creates the link and delivers it to the recipient through a configured channel; you get only the share id and its expiry, never the link or the secret.",
                    schema,
                    false,
                )
            }
            Tool::RequestLease => {
                // A database handle takes RawLeaseArgs, an aws handle RawAwsLeaseArgs.
                let aws = handles.iter().any(|h| cfg[h].aws().is_some());
                let database = handles.iter().any(|h| cfg[h].aws().is_none());
                let mut schema = match (database, aws) {
                    (true, true) => either(args_schema::<RawLeaseArgs>(), args_schema::<RawAwsLeaseArgs>()),
                    (false, true) => args_schema::<RawAwsLeaseArgs>(),
                    _ => args_schema::<RawLeaseArgs>(),
                };
                // Both types default it, but an agent asking for a lease names its lifetime.
                require(&mut schema, "ttl_seconds");
                (
                    "Ask airlock for a short-lived lease: a new handle, usable only by you until it expires, limited to the scope and tables or buckets you name (never wider than the handle). On a database handle use it with query_db; on an aws handle it is a short-lived AWS session used with s3_object. Nothing secret is returned.",
                    schema,
                    // Issuing a lease changes no data.
                    true,
                )
            }
            Tool::ConnectAccount => {
                let mut owners: Vec<&str> =
                    handles.iter().filter_map(|h| cfg[h].oauth()).flat_map(|o| o.provider.owners.iter().map(String::as_str)).collect();
                owners.sort();
                owners.dedup();
                let mut schema = args_schema::<ConnectArgs>();
                overlay(&mut schema, "owner", json!({"enum": owners}));
                (
                    "Ask a person to connect their account at the provider behind an oauth handle. airlock sends the owner a code through their own channel and returns a one-time link (valid 10 minutes) for you to give them; they finish it in their browser. You never see a code or a token: poll connect_status, then use http_request on the handle.",
                    schema,
                    false,
                )
            }
            // Skipped above.
            Tool::RequestSecret | Tool::RequestStatus => continue,
            Tool::ConnectStatus => (
                "The status of a connect link (pending, connected, denied, failed or expired) or, without connect_id, of the handle's account (connected, needs-reauth or not-connected).",
                args_schema::<ConnectStatusArgs>(),
                true,
            ),
            Tool::S3Object => {
                let mut buckets: Vec<String> = handles.iter().filter_map(|h| cfg[h].aws()).flat_map(|a| a.buckets.clone()).collect();
                buckets.sort();
                buckets.dedup();
                let ro = handles.iter().all(|h| cfg[h].aws().is_none_or(|a| !a.scopes.contains(&Scope::ReadWrite)));
                let ops: &[&str] = if ro { &["get", "list"] } else { &["get", "put", "list", "delete"] };
                let mut schema = args_schema::<S3Args>();
                overlay(&mut schema, "operation", json!({"enum": ops}));
                overlay(&mut schema, "bucket", json!({"enum": buckets}));
                (
                    "Get, put, list or delete objects in S3 through airlock with a lease of an aws handle (request_lease first). The bucket must be one the lease names; airlock signs the request with the lease's short-lived credentials, which are never shown. get returns the object as text (encoding utf-8) or base64, capped; list returns keys (capped); put stores `body` as the object's content (read_write leases only).",
                    schema,
                    ro,
                )
            }
        };
        out.push(ToolDef {
            tool,
            description: format!("{summary}\nHandles:\n{}", lines.join("\n")),
            input_schema: Value::Object(with_handle(schema, handle_prop)),
            read_only,
            open_world,
        });
    }
    out
}

/// `request_secret` and `request_status`, for an agent that may ask a person for a secret.
pub fn request_tool_defs(shares: &SharesConfig, requests: &RequestsConfig) -> Vec<ToolDef> {
    let recipients: Vec<&str> = shares.recipients.keys().map(String::as_str).collect();
    let mut schema = args_schema::<RequestArgs>();
    overlay(&mut schema, "recipient", json!({"enum": recipients}));
    overlay(&mut schema, "expires_in", json!({"maximum": requests.max_expiry_seconds}));
    vec![
        ToolDef {
            tool: Tool::RequestSecret,
            description: "Ask a person for a secret you need (an API key, a database URL, a password). airlock sends the recipient a one-time, end-to-end encrypted link showing what you asked for and where the secret will be bound; the value lands as a new handle you can then use (http_request, query_db or share_secret) but never read. You get only the request id: poll request_status.".into(),
            input_schema: Value::Object(schema),
            read_only: false,
            open_world: true,
        },
        ToolDef {
            tool: Tool::RequestStatus,
            description: "The status of one of your requests for a secret: pending, received (waiting for an approver), approved (use the handle), rejected, expired, or revoked (by an operator).".into(),
            input_schema: Value::Object(args_schema::<RequestStatusArgs>()),
            read_only: true,
            open_world: false,
        },
    ]
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
                    // Creating a one-time link (to a secret, or to connect an account) adds a
                    // record and destroys nothing.
                    "destructiveHint": !d.read_only && !matches!(d.tool, Tool::ShareSecret | Tool::ConnectAccount | Tool::RequestSecret),
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
        let mut defs = tool_defs(&self.cfg().handles, &self.cfg().shares, |t| {
            if t == Tool::S3Object {
                Vec::new()
            } else {
                self.policy().allowed_handles(agent, t, &self.cfg())
            }
        });
        if self.policy().may_permit(agent, Tool::RequestSecret) {
            defs.extend(request_tool_defs(&self.cfg().shares, &self.cfg().requests));
        }
        defs
    }

    /// The tools `caller` may call: its grants, `query_db` on its live database leases and
    /// `s3_object` on its live aws leases.
    pub async fn tool_defs_for(&self, caller: &Caller) -> Vec<ToolDef> {
        let leases = self.live_lease_handles(&caller.agent.id).await;
        let requested = if caller.grants.is_none() { self.requested_handles(caller).await } else { Vec::new() };
        let mut handles = Cow::Borrowed(&self.cfg().handles);
        if !leases.is_empty() || !requested.is_empty() {
            let h = handles.to_mut();
            for l in leases.iter().chain(requested.iter().map(|(h, _)| h)) {
                h.insert(l.name.clone(), l.clone());
            }
        }
        let mut defs = tool_defs(&handles, &self.cfg().shares, |t| {
            let mut v: Vec<HandleName> = self
                .cfg()
                .handles
                .values()
                .filter(|h| t != Tool::S3Object && t.applies_to(h.kind) && self.decide(caller, t, h).allowed)
                .map(|h| h.name.clone())
                .collect();
            // Lease handles: query_db on database leases, s3_object on aws leases.
            if matches!(t, Tool::QueryDb | Tool::S3Object) && caller.scope_allows(t) {
                v.extend(leases.iter().filter(|l| t.applies_to(l.kind)).map(|l| l.name.clone()));
            }
            // Handles that landed from this agent's approved requests, with the tool granted.
            if caller.scope_allows(t) {
                v.extend(requested.iter().filter(|(_, g)| *g == t).map(|(h, _)| h.name.clone()));
            }
            v
        });
        let may_request = caller.grants.is_none() && caller.scope_allows(Tool::RequestSecret) && self.policy().may_permit(&caller.agent.name, Tool::RequestSecret);
        if may_request {
            defs.extend(request_tool_defs(&self.cfg().shares, &self.cfg().requests));
        }
        defs
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
