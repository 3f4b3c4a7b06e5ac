//! Approvals. `airlock approver add|list|revoke`: the operator manages the people who decide
//! held calls, each with a token of their own. `airlock approve ID` / `airlock deny ID`: an
//! approver decides a held call through the server, which records the decision, wakes a waiting
//! call and audits it. The approver token comes from AIRLOCK_APPROVER_TOKEN or a prompt, never
//! from argv.

use crate::home;
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::Value;
use std::path::Path;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum ApproverCmd {
    /// Create an approver and print its token once.
    Add {
        /// The approver's name (recorded with each decision).
        name: String,
    },
    /// List approvers.
    List,
    /// Revoke an approver.
    Revoke {
        /// The approver's name or id.
        name: String,
    },
}

/// `airlock approver ...`, on the store of the configuration.
pub async fn approvers(config: &Path, cmd: ApproverCmd, json: bool) -> Result<u8> {
    let cfg = super::load(config)?;
    let store = home::open_store(&cfg).await?;
    match cmd {
        ApproverCmd::Add { name } => {
            let (a, token) = store.add_approver(&name).await?;
            if json {
                // The token, once: printing it to the operator is what `approver add` is for.
                super::print_json(&serde_json::json!({"id": a.id, "name": a.name, "token": token.reveal()}))?;
            } else {
                eprintln!("approver {} ({}) created; its token is shown once:", a.name, a.id);
                println!("{}", token.reveal());
            }
        }
        ApproverCmd::List if json => {
            let items = store.list_approvers().await?.into_iter().map(|a| {
                let state = if a.revoked_at.is_some() { "revoked" } else { "live" };
                serde_json::json!({"id": a.id, "name": a.name, "status": state, "created_at": a.created_at, "revoked_at": a.revoked_at})
            });
            super::print_json(&Value::Array(items.collect()))?;
        }
        ApproverCmd::List => {
            for a in store.list_approvers().await? {
                let state = if a.revoked_at.is_some() { "revoked" } else { "live" };
                println!("{}\t{}\t{}\tcreated {}", a.id, a.name, state, a.created_at);
            }
        }
        ApproverCmd::Revoke { name } => {
            store.revoke_approver(&name).await?;
            if json {
                super::print_json(&serde_json::json!({"name": name, "revoked": true}))?;
            } else {
                println!("revoked approver {name}");
            }
        }
    }
    Ok(0)
}

/// `airlock approve` / `airlock deny`, against `server` or the configured one.
pub async fn decide_at(config: &Path, server: Option<String>, id: &str, approve: bool, json: bool) -> Result<u8> {
    let server = match server {
        Some(s) => s,
        None => super::configured_server(&super::load(config)?),
    };
    decide(&server, id, approve, json).await
}

fn token() -> Result<Zeroizing<String>> {
    if let Ok(t) = std::env::var("AIRLOCK_APPROVER_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(Zeroizing::new(t.trim().to_owned()));
        }
    }
    let t = Zeroizing::new(rpassword::prompt_password("Approver token: ").context("reading the approver token from the terminal")?);
    Ok(Zeroizing::new(t.trim().to_owned()))
}

/// The server refused: its error on stderr, or with `json` as `{id, decision: null, error}` on
/// stdout; exit 1.
fn refused(v: &Value, id: &str, json: bool) -> Result<u8> {
    let code = v["error"]["code"].as_str().unwrap_or("unknown");
    let message = v["error"]["message"].as_str().unwrap_or("");
    if json {
        super::print_json(&serde_json::json!({"id": id, "decision": null, "error": {"code": code, "message": message}}))?;
    } else {
        eprintln!("refused: {code}: {message}");
    }
    Ok(1)
}

/// Sends `req` and reads the server's JSON answer.
async fn answer(req: reqwest::RequestBuilder, server: &str) -> Result<Value> {
    req.send()
        .await
        .with_context(|| format!("reaching {server}"))?
        .json()
        .await
        .context("reading the server's answer")
}

/// Shows the call on stderr, then approves or denies it. Exit 0 when the decision is recorded,
/// 1 when the server refused it.
async fn decide(server: &str, id: &str, approve: bool, json: bool) -> Result<u8> {
    let server = server.trim_end_matches('/');
    if !(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())) {
        anyhow::bail!("{id:?} is not an approval id (32 hex digits)");
    }
    let token = token()?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let v = answer(client.get(format!("{server}/v1/approvals/{id}")).bearer_auth(token.as_str()), server).await?;
    if v["ok"] != true {
        return refused(&v, id, json);
    }
    let a = &v["approval"];
    eprintln!("agent     {}", a["agent"].as_str().unwrap_or(""));
    if let Some(p) = a["parent_chain"].as_array().filter(|p| !p.is_empty()) {
        let names: Vec<&str> = p.iter().filter_map(Value::as_str).collect();
        eprintln!("parents   {}", names.join(" <- "));
    }
    eprintln!("tool      {}", a["tool"].as_str().unwrap_or(""));
    eprintln!("handle    {}", a["handle"].as_str().unwrap_or(""));
    eprintln!("why       {}", a["reason"].as_str().unwrap_or(""));
    eprintln!("expires   {}", a["expires_at"].as_str().unwrap_or(""));
    eprintln!("arguments {}", serde_json::to_string_pretty(&a["arguments"]).unwrap_or_default());
    let verb = if approve { "approve" } else { "deny" };
    let v = answer(client.post(format!("{server}/v1/approvals/{id}/{verb}")).bearer_auth(token.as_str()), server).await?;
    if v["ok"] != true {
        return refused(&v, id, json);
    }
    let decision = if approve { "approved" } else { "denied" };
    if json {
        super::print_json(&serde_json::json!({"id": id, "decision": decision, "error": null}))?;
    } else {
        println!("{decision} {id}");
    }
    Ok(0)
}
