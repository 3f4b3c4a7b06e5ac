//! `airlock policy`: validate the grants and Cedar files of the configuration, and explain one
//! decision (which policy allowed or denied an agent a tool on a handle).

use airlock_core::config::{Config, HandleKind, Scope};
use airlock_core::{HandleName, Tool};
use airlock_policy::PolicyEngine;
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;
use std::path::Path;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate the grants and Cedar files against the schema.
    Check {
        /// Also print the Cedar generated from the grants.
        #[arg(long)]
        show: bool,
        /// Print the Cedar schema.
        #[arg(long)]
        schema: bool,
    },
    /// Say whether an agent may call a tool on a handle, and which policy decided.
    Explain {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        tool: String,
        #[arg(long)]
        handle: String,
    },
}

pub async fn run(config: &Path, cmd: PolicyCmd, json: bool) -> Result<u8> {
    let cfg = super::load(config)?;
    let engine = PolicyEngine::from_config(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    match cmd {
        PolicyCmd::Check { show, schema } if json => {
            let mut out = json!({
                "ok": true,
                "policies": engine.policy_count(),
                "version": engine.version(),
                "warnings": database_warnings(&cfg),
            });
            if schema {
                out["cedar_schema"] = json!(airlock_policy::schema_text());
            }
            if show {
                out["generated_policies"] = json!(engine.generated_policies());
            }
            super::print_json(&out)?;
            Ok(0)
        }
        PolicyCmd::Check { show, schema } => {
            if schema {
                println!("{}", airlock_policy::schema_text());
            }
            if show {
                println!("{}", engine.generated_policies());
            }
            println!("policies ok: {} policies, version {}", engine.policy_count(), engine.version());
            for w in database_warnings(&cfg) {
                println!("warning: {w}");
            }
            Ok(0)
        }
        PolicyCmd::Explain { agent, tool, handle } => explain(&cfg, &engine, &agent, &tool, &handle, json),
    }
}

/// What a valid configuration cannot prove about its read-only database handles: that the
/// database itself refuses what airlock's statement checks refuse (T25). `airlock doctor`
/// connects and reads each credential's privileges; these name the handles it should look at.
fn database_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for h in cfg.handles.values() {
        let Some(db) = h.database().filter(|d| d.scope == Scope::ReadOnly) else { continue };
        let narrowed = match h.kind {
            HandleKind::Postgres => db.query_role.is_some(),
            HandleKind::Mysql => false,
            _ => continue,
        };
        if !narrowed {
            out.push(format!(
                "{} is read_only, but its credential runs statements as it is: whether that role could write or read catalogs is up to the database (`airlock doctor` checks it){}",
                h.name,
                if h.kind == HandleKind::Postgres { "; a query_role makes every statement run as a role granted SELECT only" } else { "" }
            ));
        }
        if db.allow_catalogs {
            out.push(format!("{} sets allow_catalogs: agents can read the server's catalogs (every table's name, roles, settings)", h.name));
        }
    }
    out
}

/// `policy explain`: allow (exit 0) or deny (exit 1), with the deciding policies.
/// With `json`: `{decision, policies, reason, errors}`, where `reason` says why no policy was
/// asked (no such handle, a tool that does not apply to it).
fn explain(cfg: &Config, engine: &PolicyEngine, agent: &str, tool: &str, handle: &str, json: bool) -> Result<u8> {
    let t = Tool::parse(tool).with_context(|| format!("unknown tool {tool:?}"))?;
    let h = HandleName::parse(handle).map_err(|e| anyhow::anyhow!("{handle:?}: {e}"))?;
    let not_asked = |reason: String| -> Result<u8> {
        if json {
            super::print_json(&json!({"decision": "deny", "policies": [], "reason": reason, "errors": []}))?;
        } else {
            println!("deny: {reason}");
        }
        Ok(1)
    };
    let Some(handle) = cfg.handles.get(&h) else {
        return not_asked(format!("no handle {h} in {}", cfg.source));
    };
    if !t.applies_to(handle.kind) {
        return not_asked(format!("{} does not apply to {} handle {h}", t.name(), handle.kind.as_str()));
    }
    let d = engine.decide(agent, t, handle);
    if json {
        let decision = if d.allowed { "allow" } else { "deny" };
        let reason = if d.policies.is_empty() { Some("default deny (no policy matched)") } else { None };
        super::print_json(&json!({"decision": decision, "policies": d.policies, "reason": reason, "errors": d.errors}))?;
        return Ok(if d.allowed { 0 } else { 1 });
    }
    let who = if d.policies.is_empty() { "default deny (no policy matched)".to_owned() } else { d.policies.join(", ") };
    println!("{}: {who}", if d.allowed { "allow" } else { "deny" });
    for e in &d.errors {
        println!("evaluation error: {e}");
    }
    Ok(if d.allowed { 0 } else { 1 })
}
