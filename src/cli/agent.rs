//! `airlock agent`: agent identities in the store. A new agent's token is printed once; revoking
//! goes through the broker so that the agent's sub-agents and leases go with it.

use crate::home;
use airlock_store::agents::Agent;
use anyhow::Result;
use serde_json::{json, Value};
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand)]
pub enum AgentCmd {
    /// Create an agent and print its token once.
    Add {
        /// The agent's name (the one grants refer to).
        name: String,
        /// Expire the token after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List agents.
    List,
    /// Revoke an agent and its sub-agents, and their leases.
    Revoke {
        /// The agent's name or id.
        name: String,
    },
    /// Agents and their sub-agents, as a tree.
    Tree,
    /// Give an agent a new token, printed once. Its current token keeps working for --overlap
    /// (e.g. 10m, 1h; default 0: it stops now), so that the agent can switch without a failed
    /// call; a token from before an earlier rotation stops now.
    Rotate {
        /// The agent's name or id.
        name: String,
        /// How long the current token keeps working: seconds, or a number with s, m or h.
        #[arg(long, default_value = "0")]
        overlap: String,
    },
}

pub async fn run(config: &Path, cmd: AgentCmd, json: bool) -> Result<u8> {
    let cfg = super::load(config)?;
    let store = home::open_store(&cfg).await?;
    match cmd {
        AgentCmd::Add { name, expires_in } => {
            let exp = expires_in.map(|s| {
                (chrono::Utc::now() + chrono::Duration::seconds(s as i64)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            });
            let (a, token) = store.add_agent(&name, None, exp.as_deref()).await?;
            if !cfg.agents.contains_key(&name) {
                eprintln!("note: no [agents.{name}] grants in {}; this agent can call nothing yet", cfg.source);
            }
            if json {
                // The token, once: printing it to the operator is what `agent add` is for.
                super::print_json(&json!({"id": a.id, "name": a.name, "expires_at": a.expires_at, "token": token.reveal()}))?;
            } else {
                eprintln!("agent {} ({}) created; its token is shown once:", a.name, a.id);
                println!("{}", token.reveal());
            }
        }
        AgentCmd::List if json => super::print_json(&Value::Array(store.list_agents().await?.iter().map(agent_json).collect()))?,
        AgentCmd::List => {
            for a in store.list_agents().await? {
                let state = if a.revoked_at.is_some() { "revoked" } else { "live" };
                println!("{}\t{}\t{}\tcreated {}", a.id, a.name, state, a.created_at);
            }
        }
        AgentCmd::Revoke { name } => {
            drop(store);
            // Through the broker, so that the agents' leases are revoked now.
            let broker = super::open_broker(cfg).await?;
            let n = broker.revoke_agent(&name).await?;
            if json {
                super::print_json(&json!({"name": name, "revoked": n}))?;
            } else {
                println!("revoked {n} agent(s)");
            }
        }
        AgentCmd::Tree if json => super::print_json(&Value::Array(tree_json(&store.list_agents().await?, None, 0)))?,
        AgentCmd::Tree => print_tree(&store.list_agents().await?, None, 0),
        AgentCmd::Rotate { name, overlap: o } => {
            let o = super::overlap(&o)?;
            drop(store);
            // Through the broker, so that the rotation is audited.
            let broker = super::open_broker(cfg).await?;
            let (a, token) = broker.rotate_agent_token(&name, o).await?;
            if json {
                // The new token, once: printing it to the operator is what `agent rotate` is for.
                super::print_json(&json!({"id": a.id, "name": a.name, "overlap_seconds": o.as_secs(), "token": token.reveal()}))?;
            } else {
                eprintln!("agent {} ({}) has a new token, shown once; the previous one works for {} s more:", a.name, a.id, o.as_secs());
                println!("{}", token.reveal());
            }
        }
    }
    Ok(0)
}

fn state(a: &Agent) -> &'static str {
    if a.revoked_at.is_some() {
        "revoked"
    } else {
        "live"
    }
}

/// An agent in `agent list --json` (never its token).
fn agent_json(a: &Agent) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "parent": a.parent,
        "status": state(a),
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "revoked_at": a.revoked_at,
    })
}

/// `agent tree --json`: the agents under `parent`, each with its own under `children`; 16
/// levels at most, as in the text.
fn tree_json(agents: &[Agent], parent: Option<&str>, depth: usize) -> Vec<Value> {
    agents
        .iter()
        .filter(|a| a.parent.as_deref() == parent)
        .map(|a| {
            let children = if depth < 16 { tree_json(agents, Some(&a.id), depth + 1) } else { Vec::new() };
            json!({"id": a.id, "name": a.name, "status": state(a), "children": children})
        })
        .collect()
}

/// The agents under `parent` (the roots for None), each followed by its own, indented; 16 levels
/// at most.
fn print_tree(agents: &[Agent], parent: Option<&str>, depth: usize) {
    for a in agents.iter().filter(|a| a.parent.as_deref() == parent) {
        let state = if a.revoked_at.is_some() { "revoked" } else { "live" };
        println!("{}{} ({}, {state})", "  ".repeat(depth), a.name, a.id);
        if depth < 16 {
            print_tree(agents, Some(&a.id), depth + 1);
        }
    }
}
