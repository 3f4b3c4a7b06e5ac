//! T21: tool lists are generated from the argument types and stay what they were.
//!
//! `tests/golden/tools.{mcp,openai,anthropic}.json` hold the tool list of agent `bot` in
//! [`CONFIG`] (every tool kind: two database handles, two HTTP handles, e-mail, a command with
//! placeholders, an aws handle and its `s3_object` lease, a generic secret to share), rendered
//! in each format and pretty-printed. The test regenerates them and compares byte for byte.
//! After an intended change, rewrite them and review the diff:
//!
//! ```text
//! AIRLOCK_UPDATE_GOLDEN=1 cargo test -p airlock-server --test t21_tool_schema_golden
//! ```
//!
//! The schemas cannot drift from the argument types: for every tool (and both kinds of
//! `request_lease`), the schema's properties are exactly the fields serde reads for the type
//! the executor parses, and arguments built from the schema (each enum value, each `anyOf`
//! branch, bounds, only the required properties or all of them) parse with
//! `airlock_core::executor::parse_args`, while an extra property does not.

use airlock_core::config::Config;
use airlock_core::executor::parse_args;
use airlock_core::{HandleName, Tool};
use airlock_exec_aws::S3Args;
use airlock_exec_command::CommandArgs;
use airlock_exec_email::EmailArgs;
use airlock_exec_http::HttpArgs;
use airlock_exec_sql::QueryArgs;
use airlock_policy::PolicyEngine;
use airlock_server::broker::lease::{RawAwsLeaseArgs, RawLeaseArgs};
use airlock_server::broker::oauth::{ConnectArgs, ConnectStatusArgs};
use airlock_server::broker::share::ShareArgs;
use airlock_server::broker::request::{RequestArgs, RequestStatusArgs};
use airlock_server::broker::tools::{render, request_tool_defs, tool_defs, Format, ToolDef};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A fixed configuration with one agent, `bot`, granted every tool.
const CONFIG: &str = r#"
[store]
data_dir = "/var/lib/airlock"

[shares]
max_views = 3
max_expiry_seconds = 86400
[shares.channels.box]
type = "outbox"
path = "outbox.jsonl"
[shares.recipients]
"dba@example.com" = "box"
"ops" = "box"

[handles.ORDERS_DB]
kind = "postgres"
secret = "local:ORDERS_DB"
description = "orders and customers"
[handles.ORDERS_DB.database]
scope = "read_write"
tables = ["orders", "public.customers"]
[handles.ORDERS_DB.lease]
max_ttl_seconds = 1800
scopes = ["read_only", "read_write"]

[handles.REPORTS_DB]
kind = "sqlite"
secret = "local:REPORTS_DB"
[handles.REPORTS_DB.database]
scope = "read_only"

[handles.BILLING_API]
kind = "http"
secret = "local:BILLING_API"
description = "Billing"
[handles.BILLING_API.http]
destinations = [
  { url = "https://billing.example.com/v1/", methods = ["GET", "POST"] },
  { url = "https://uploads.example.com/", methods = ["PUT"] },
]
inject = { type = "header", name = "Authorization", format = "Bearer {}" }

[handles.STATUS_API]
kind = "http"
secret = "local:STATUS_API"
[handles.STATUS_API.http]
destinations = [{ url = "https://status.example.com/" }]
inject = { type = "query", param = "key" }

[handles.MAIL]
kind = "smtp"
secret = "local:MAIL"
[handles.MAIL.smtp]
host = "smtp.example.com"
username = "bot@example.com"
from = "bot@example.com"
allowed_recipients = ["ops@example.com", "@team.example.com"]

[handles.DEPLOY]
kind = "command"
secret = "local:DEPLOY"
description = "deploys a tag"
[handles.DEPLOY.command]
program = "/usr/bin/deploy"
args = ["--env", "{target}", "--key", "{secret_file}", "{tag}"]
placeholders = { target = { enum = ["staging", "prod"] }, tag = { regex = 'v[0-9]+', max_bytes = 16 } }
secret_via = "file"

[handles.S3]
kind = "aws"
secret = "local:S3"
[handles.S3.aws]
region = "eu-west-1"
role_arn = "arn:aws:iam::123456789012:role/agents"
buckets = ["reports", "exports"]
scopes = ["read_only", "read_write"]
max_ttl_seconds = 3600

[handles.GITHUB]
kind = "oauth"
secret = "local:GITHUB_CLIENT"
description = "the owner's GitHub account"
[handles.GITHUB.oauth]
authorization_url = "https://github.com/login/oauth/authorize"
token_url = "https://github.com/login/oauth/access_token"
client_id = "Iv1.0123456789abcdef"
scopes = ["repo", "read:org"]
owners = ["dba@example.com"]
[handles.GITHUB.http]
destinations = [{ url = "https://api.github.com/", methods = ["GET", "POST"] }]

[handles.NOTE]
kind = "generic"
secret = "local:NOTE"
description = "a password to hand over"

[agents.bot]
grants = [
  { handle = "ORDERS_DB", tools = ["query_db", "request_lease"] },
  { handle = "REPORTS_DB", tools = ["query_db"] },
  { handle = "BILLING_API", tools = ["http_request"] },
  { handle = "STATUS_API", tools = ["http_request"] },
  { handle = "MAIL", tools = ["send_email"] },
  { handle = "DEPLOY", tools = ["run_command"] },
  { handle = "S3", tools = ["request_lease"] },
  { handle = "NOTE", tools = ["share_secret"] },
  { handle = "GITHUB", tools = ["http_request", "connect_account", "connect_status"] },
]

[agents.db_leases]
grants = [{ handle = "ORDERS_DB", tools = ["request_lease"] }]

[agents.aws_leases]
grants = [{ handle = "S3", tools = ["request_lease"] }]
"#;

fn config() -> Config {
    Config::parse(CONFIG, "airlock.toml", Path::new("/etc/airlock")).unwrap_or_else(|e| panic!("{e}"))
}

/// `agent`'s tools as the broker lists them, with `s3_object` on the aws handles it may lease
/// (standing in for its live leases, whose names are random).
fn defs_for(cfg: &Config, agent: &str) -> Vec<ToolDef> {
    let policy = PolicyEngine::from_config(cfg).unwrap();
    let mut defs = tool_defs(&cfg.handles, &cfg.shares, |t| {
        if t == Tool::S3Object {
            policy
                .allowed_handles(agent, Tool::RequestLease, cfg)
                .into_iter()
                .filter(|h| cfg.handles[h].aws().is_some())
                .collect::<Vec<HandleName>>()
        } else {
            policy.allowed_handles(agent, t, cfg)
        }
    });
    // `bot` stands in for an agent a Cedar policy lets ask a person for a secret.
    if agent == "bot" {
        defs.extend(request_tool_defs(&cfg.shares, &cfg.requests));
    }
    defs
}

fn golden_path(format: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("tools.{format}.json"))
}

#[test]
fn t21_tool_lists_match_the_golden_files() {
    let cfg = config();
    let defs = defs_for(&cfg, "bot");
    assert_eq!(defs.len(), Tool::ALL.len(), "the golden config covers every tool");
    let update = std::env::var_os("AIRLOCK_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, format) in [("mcp", Format::Mcp), ("openai", Format::Openai), ("anthropic", Format::Anthropic)] {
        let text = format!("{}\n", serde_json::to_string_pretty(&render(&defs, format)).unwrap());
        let path = golden_path(name);
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        if stored != text {
            let line = stored.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(stored.lines().count().min(text.lines().count()));
            stale.push(format!("{} differs from line {}", path.display(), line + 1));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nrerun with AIRLOCK_UPDATE_GOLDEN=1 to rewrite the golden files, then review their diff",
        stale.join("\n")
    );
}

/// An argument type an executor parses.
#[derive(Clone, Copy, Debug)]
enum ArgType {
    Query,
    Http,
    Email,
    Command,
    Share,
    S3,
    Lease,
    AwsLease,
    Connect,
    ConnectStatus,
    Request,
    RequestStatus,
}

impl ArgType {
    /// The types `def`'s handles take: one per tool, two for `request_lease` on database and
    /// aws handles.
    fn of(cfg: &Config, def: &ToolDef) -> Vec<ArgType> {
        match def.tool {
            Tool::QueryDb => vec![ArgType::Query],
            Tool::HttpRequest => vec![ArgType::Http],
            Tool::SendEmail => vec![ArgType::Email],
            Tool::RunCommand => vec![ArgType::Command],
            Tool::ShareSecret => vec![ArgType::Share],
            Tool::S3Object => vec![ArgType::S3],
            Tool::ConnectAccount => vec![ArgType::Connect],
            Tool::ConnectStatus => vec![ArgType::ConnectStatus],
            Tool::RequestSecret => vec![ArgType::Request],
            Tool::RequestStatus => vec![ArgType::RequestStatus],
            Tool::RequestLease => {
                let handles = def.input_schema["properties"]["credential_handle"]["enum"].as_array().unwrap();
                let mut types = Vec::new();
                let aws = |h: &Value| cfg.handles.iter().any(|(n, c)| n.as_str() == h && c.aws().is_some());
                if handles.iter().any(|h| !aws(h)) {
                    types.push(ArgType::Lease);
                }
                if handles.iter().any(aws) {
                    types.push(ArgType::AwsLease);
                }
                types
            }
        }
    }

    /// Parses `args` as this type, as the broker does (without `credential_handle`).
    fn parse(self, args: Value) -> Result<(), String> {
        fn p<T: DeserializeOwned>(args: Value) -> Result<(), String> {
            parse_args::<T>(&args).map(|_| ()).map_err(|e| e.message)
        }
        match self {
            ArgType::Query => p::<QueryArgs>(args),
            ArgType::Http => p::<HttpArgs>(args),
            ArgType::Email => p::<EmailArgs>(args),
            ArgType::Command => p::<CommandArgs>(args),
            ArgType::Share => p::<ShareArgs>(args),
            ArgType::S3 => p::<S3Args>(args),
            ArgType::Lease => p::<RawLeaseArgs>(args),
            ArgType::AwsLease => p::<RawAwsLeaseArgs>(args),
            ArgType::Connect => p::<ConnectArgs>(args),
            ArgType::ConnectStatus => p::<ConnectStatusArgs>(args),
            ArgType::Request => p::<RequestArgs>(args),
            ArgType::RequestStatus => p::<RequestStatusArgs>(args),
        }
    }

    /// The field names serde reads for this type.
    fn fields(self) -> BTreeSet<&'static str> {
        match self {
            ArgType::Query => fields::<QueryArgs>(),
            ArgType::Http => fields::<HttpArgs>(),
            ArgType::Email => fields::<EmailArgs>(),
            ArgType::Command => fields::<CommandArgs>(),
            ArgType::Share => fields::<ShareArgs>(),
            ArgType::S3 => fields::<S3Args>(),
            ArgType::Lease => fields::<RawLeaseArgs>(),
            ArgType::Connect => fields::<ConnectArgs>(),
            ArgType::ConnectStatus => fields::<ConnectStatusArgs>(),
            ArgType::AwsLease => fields::<RawAwsLeaseArgs>(),
            ArgType::Request => fields::<RequestArgs>(),
            ArgType::RequestStatus => fields::<RequestStatusArgs>(),
        }
    }
}

/// The field names `T` deserializes: serde's own list, which derived `Deserialize` hands to
/// `deserialize_struct` (renames applied), caught by a deserializer that reads nothing.
fn fields<T: DeserializeOwned>() -> BTreeSet<&'static str> {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut BTreeSet<&'static str>);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Self::Error> {
            self.0.extend(fields);
            Err(Self::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut out = BTreeSet::new();
    let _ = T::deserialize(Probe(&mut out));
    assert!(!out.is_empty(), "{} is not a struct", std::any::type_name::<T>());
    out
}

/// Fails if a schema keyword that must not appear in a tool schema does, anywhere (property
/// names are not keywords and are not checked).
fn assert_self_contained(schema: &Value, at: &str) {
    let Value::Object(obj) = schema else { return };
    for key in ["$ref", "$defs", "definitions", "$schema", "title", "default"] {
        assert!(!obj.contains_key(key), "{at}: `{key}` in {schema}");
    }
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("properties", Value::Object(props)) => props.iter().for_each(|(n, p)| assert_self_contained(p, &format!("{at}.{n}"))),
            ("enum", _) => {}
            (_, Value::Array(items)) => items.iter().for_each(|i| assert_self_contained(i, &format!("{at}.{k}[]"))),
            (_, v) => assert_self_contained(v, &format!("{at}.{k}")),
        }
    }
}

/// The most alternatives any one choice in `schema` offers (enum values, `anyOf`/`oneOf`
/// branches, types), so that `variant` in `0..that` reaches each of them.
fn alternatives(schema: &Value) -> usize {
    match schema {
        Value::Object(o) => {
            let here = ["enum", "anyOf", "oneOf", "type"].iter().filter_map(|k| o.get(*k)?.as_array().map(Vec::len)).max().unwrap_or(1);
            o.values().map(alternatives).max().unwrap_or(1).max(here).max(2)
        }
        Value::Array(a) => a.iter().map(alternatives).max().unwrap_or(1),
        _ => 1,
    }
}

/// A value valid against `schema`: alternative number `variant` of each choice, and the lower
/// bound of a range on even variants, the upper one on odd variants.
fn sample(schema: &Value, variant: usize) -> Value {
    let pick = |a: &Vec<Value>| a[variant % a.len()].clone();
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return pick(values);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            return sample(&pick(branches), variant);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::Array(types)) => pick(types),
        Some(t) => t.clone(),
        None => json!("string"),
    };
    let bound = |lo: &str, hi: &str| {
        let (lo, hi) = (schema.get(lo).and_then(Value::as_u64), schema.get(hi).and_then(Value::as_u64));
        if variant.is_multiple_of(2) { lo.or(hi) } else { hi.or(lo) }
    };
    match ty.as_str().unwrap() {
        "string" => json!("x".repeat(bound("minLength", "maxLength").unwrap_or(8).clamp(1, 64) as usize)),
        "integer" => json!(bound("minimum", "maximum").unwrap_or(1)),
        "number" => json!(1.5),
        "boolean" => json!(variant.is_multiple_of(2)),
        "null" => Value::Null,
        "array" => match schema.get("items") {
            Some(items @ Value::Object(_)) => json!([sample(items, variant)]),
            _ => json!(["x"]),
        },
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (name, p) in props {
                    out.insert(name.clone(), sample(p, variant));
                }
            } else if let Some(extra @ Value::Object(_)) = schema.get("additionalProperties") {
                out.insert("name".into(), sample(extra, variant));
            }
            Value::Object(out)
        }
        other => panic!("unexpected type {other} in {schema}"),
    }
}

/// Arguments for `ty` from `schema`: the properties `names` (which exist in the schema),
/// without `credential_handle` (the broker takes it off before the executor parses).
fn args_for(schema: &Value, names: &BTreeSet<&str>, variant: usize) -> Value {
    let props = schema["properties"].as_object().unwrap();
    let out: Map<String, Value> =
        names.iter().filter(|n| **n != "credential_handle").map(|n| (n.to_string(), sample(&props[*n], variant))).collect();
    Value::Object(out)
}

#[test]
fn t21_every_schema_is_its_argument_type() {
    let cfg = config();
    let mut checked = BTreeSet::new();
    for agent in ["bot", "db_leases", "aws_leases"] {
        for def in defs_for(&cfg, agent) {
            let name = format!("{agent}/{}", def.tool.name());
            let schema = &def.input_schema;
            assert_self_contained(schema, &name);
            assert_eq!(schema["type"], "object", "{name}");
            assert_eq!(schema["additionalProperties"], false, "{name}: every argument type denies unknown fields");
            let props: BTreeSet<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
            let required: BTreeSet<&str> = schema["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
            // Every tool names a configured handle first, but those that propose one or ask
            // about a request.
            let on_handle = !matches!(def.tool, Tool::RequestSecret | Tool::RequestStatus);
            if on_handle {
                assert_eq!(schema["properties"].as_object().unwrap().keys().next().map(String::as_str), Some("credential_handle"), "{name}");
                assert_eq!(schema["required"][0], "credential_handle", "{name}");
            }
            assert!(required.is_subset(&props), "{name}: required {required:?} not among {props:?}");

            let types = ArgType::of(&cfg, &def);
            // The schema's properties are exactly the fields of the type(s): nothing offered
            // that the executor refuses, nothing it reads left out.
            let mut all: BTreeSet<&str> = types.iter().flat_map(|t| t.fields()).collect();
            if on_handle {
                all.insert("credential_handle");
            }
            assert_eq!(props, all, "{name}: schema properties vs the fields of {types:?}");

            for ty in types {
                let fields = ty.fields();
                let mine: BTreeSet<&str> = props.iter().copied().filter(|p| fields.contains(p)).collect();
                // What the schema requires is all a call of this type needs.
                let needed: BTreeSet<&str> = required.iter().copied().filter(|p| *p != "credential_handle").collect();
                assert!(needed.is_subset(&mine), "{name}: {ty:?} lacks required {needed:?}");
                for variant in 0..alternatives(schema) {
                    for names in [&needed, &mine] {
                        let args = args_for(schema, names, variant);
                        if let Err(e) = ty.parse(args.clone()) {
                            panic!("{name}: {ty:?} refuses {args} built from its schema: {e}");
                        }
                    }
                }
                let mut extra = args_for(schema, &needed, 0);
                extra["not_a_field"] = json!("x");
                assert!(ty.parse(extra).is_err(), "{name}: {ty:?} takes a property its schema does not offer");
                checked.insert(format!("{ty:?}"));
            }
        }
    }
    assert_eq!(checked.len(), 12, "every argument type was checked: {checked:?}");
}

#[test]
fn t21_lease_schemas_show_only_what_the_handle_kind_takes() {
    let cfg = config();
    let lease = |agent: &str| {
        let defs = defs_for(&cfg, agent);
        let d = defs.iter().find(|d| d.tool == Tool::RequestLease).unwrap();
        let props: Vec<String> = d.input_schema["properties"].as_object().unwrap().keys().cloned().collect();
        (props, d.input_schema["required"].clone())
    };
    let req = json!(["credential_handle", "scope", "ttl_seconds"]);
    assert_eq!(lease("db_leases"), (vec!["credential_handle".into(), "scope".into(), "ttl_seconds".into(), "tables".into(), "task_id".into()], req.clone()));
    assert_eq!(lease("aws_leases"), (vec!["credential_handle".into(), "scope".into(), "ttl_seconds".into(), "buckets".into(), "task_id".into()], req.clone()));
    assert_eq!(
        lease("bot"),
        (vec!["credential_handle".into(), "scope".into(), "ttl_seconds".into(), "tables".into(), "task_id".into(), "buckets".into()], req)
    );
}

/// `parse_args` reads a tool's arguments from the borrowed request value; the outcome and the
/// message must be what deserializing an owned copy gave (`serde_json::from_value`).
fn same_as_owned<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    let borrowed = parse_args::<T>(v).map(|_| ()).map_err(|e| e.message);
    let owned = serde_json::from_value::<T>(v.clone())
        .map(|_| ())
        .map_err(|e| format!("invalid arguments: {}", airlock_core::executor::strip_serde_detail(&e)));
    if borrowed == owned {
        Ok(())
    } else {
        Err(format!("borrowed {borrowed:?}, owned {owned:?}"))
    }
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zA-Z0-9 _./:-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Every argument type, objects made of its own field names (some left out, now and then a
    /// stray one) with values of any JSON type, and non-objects: read from the borrowed value,
    /// each parses or fails exactly as an owned copy did, with the same message.
    #[test]
    fn t21_arguments_read_borrowed_parse_as_an_owned_copy(
        picks in proptest::collection::vec((proptest::bool::ANY, any_json()), 0..12),
        stray in proptest::option::of(("[a-z_]{1,10}", any_json())),
        whole in any_json(),
    ) {
        let types = [
            ArgType::Query, ArgType::Http, ArgType::Email, ArgType::Command, ArgType::Share, ArgType::S3,
            ArgType::Lease, ArgType::AwsLease, ArgType::Connect, ArgType::ConnectStatus, ArgType::Request,
            ArgType::RequestStatus,
        ];
        for ty in types {
            let mut obj = Map::new();
            for (name, (keep, v)) in ty.fields().into_iter().zip(&picks) {
                if *keep {
                    obj.insert(name.to_owned(), v.clone());
                }
            }
            if let Some((k, v)) = &stray {
                obj.insert(k.clone(), v.clone());
            }
            for v in [Value::Object(obj), whole.clone()] {
                let r = match ty {
                    ArgType::Query => same_as_owned::<QueryArgs>(&v),
                    ArgType::Http => same_as_owned::<HttpArgs>(&v),
                    ArgType::Email => same_as_owned::<EmailArgs>(&v),
                    ArgType::Command => same_as_owned::<CommandArgs>(&v),
                    ArgType::Share => same_as_owned::<ShareArgs>(&v),
                    ArgType::S3 => same_as_owned::<S3Args>(&v),
                    ArgType::Lease => same_as_owned::<RawLeaseArgs>(&v),
                    ArgType::AwsLease => same_as_owned::<RawAwsLeaseArgs>(&v),
                    ArgType::Connect => same_as_owned::<ConnectArgs>(&v),
                    ArgType::ConnectStatus => same_as_owned::<ConnectStatusArgs>(&v),
                    ArgType::Request => same_as_owned::<RequestArgs>(&v),
                    ArgType::RequestStatus => same_as_owned::<RequestStatusArgs>(&v),
                };
                proptest::prop_assert!(r.is_ok(), "{ty:?} on {v}: {}", r.unwrap_err());
            }
        }
    }
}
