//! `airlock lease`: short-lived, scoped credentials. `issue` is the agent's, a thin client of the
//! running broker; `list` and `revoke` are the operator's, on the broker's configuration.

use crate::client::Client;
use airlock_core::ErrorCode;
use airlock_server::Broker;
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::Path;

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// Issue a lease on HANDLE for an agent (a thin client of the running broker; token from
    /// AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE).
    Issue(IssueArgs),
    /// Every lease, with its status (`revoke-pending` for a revocation being retried).
    List,
    /// Revoke a lease by id.
    Revoke {
        /// The lease id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

// The arguments of `lease issue` (its help text is the variant's above).
#[derive(Args)]
pub struct IssueArgs {
    /// The base handle.
    handle: String,
    /// read_only or read_write.
    #[arg(long, default_value = "read_only")]
    scope: String,
    /// Lifetime in seconds (default: 300, or 900, STS's minimum, on an aws handle).
    #[arg(long)]
    ttl: Option<u64>,
    /// Comma-separated tables.
    #[arg(long)]
    tables: Option<String>,
    /// Comma-separated S3 buckets (aws handles; default: all of the handle's).
    #[arg(long)]
    buckets: Option<String>,
}

/// `json`: `issue` prints the broker's JSON envelope either way.
pub async fn run(config: &Path, cmd: LeaseCmd, json: bool) -> Result<u8> {
    match cmd {
        LeaseCmd::Issue(args) => issue(args).await,
        LeaseCmd::List => list(&super::open_broker(super::load(config)?).await?, json).await,
        LeaseCmd::Revoke { id } => revoke(&super::open_broker(super::load(config)?).await?, &id, json).await,
    }
}

/// `lease issue`: `POST /v1/leases` as the agent; prints the broker's envelope.
async fn issue(a: IssueArgs) -> Result<u8> {
    let list = |s: String| s.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>();
    let mut args = serde_json::json!({"credential_handle": a.handle, "scope": a.scope});
    if let Some(t) = a.ttl {
        args["ttl_seconds"] = t.into();
    }
    if let Some(t) = a.tables {
        args["tables"] = list(t).into();
    }
    if let Some(b) = a.buckets {
        args["buckets"] = list(b).into();
    }
    super::call::print_envelope(Client::from_env()?.lease(args).await?)
}

/// `lease list`: one line a lease, with its status.
async fn list(broker: &Broker, json: bool) -> Result<u8> {
    if json {
        let items = broker.store().list_leases().await?.into_iter().map(|l| {
            json!({
                "id": l.id,
                "handle": l.handle,
                "base": l.base,
                "agent_id": l.agent_id,
                "scope": l.scope,
                "status": l.status,
                "tables": l.tables,
                "buckets": l.buckets,
                "dynamic": l.dynamic,
                "created_at": l.created_at,
                "expires_at": l.expires_at,
                "revoked_at": l.revoked_at,
            })
        });
        super::print_json(&Value::Array(items.collect()))?;
        return Ok(0);
    }
    for l in broker.store().list_leases().await? {
        println!("{}\t{}\t{}\t{}\texpires {}\tagent {}", l.id, l.handle, l.scope, l.status, l.expires_at, l.agent_id);
    }
    Ok(0)
}

/// `lease revoke`: 0 when revoked now or before, 1 when there is no such lease or the revocation
/// failed and is retried.
async fn revoke(broker: &Broker, id: &str, json: bool) -> Result<u8> {
    let outcome = broker.revoke_lease(id).await;
    if json {
        let (status, error, code) = match &outcome {
            Ok(true) => ("revoked", None, 0),
            Ok(false) => ("already-revoked", None, 0),
            Err(e) if e.code == ErrorCode::NotFound => ("not-found", Some(e.code.as_str()), 1),
            Err(e) => ("revoke-pending", Some(e.code.as_str()), 1),
        };
        super::print_json(&json!({"id": id, "status": status, "error": error}))?;
        return Ok(code);
    }
    match outcome {
        Err(e) if e.code == ErrorCode::NotFound => {
            println!("{id}: no such lease");
            Ok(1)
        }
        Ok(true) => {
            println!("revoked {id}");
            Ok(0)
        }
        Ok(false) => {
            println!("{id} was already revoked");
            Ok(0)
        }
        Err(e) => {
            println!("{id}: {}; the revocation is retried (revoke-pending)", e.code);
            Ok(1)
        }
    }
}
