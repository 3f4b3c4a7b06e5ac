//! `airlock connect` and `airlock account`: connected OAuth accounts, for the operator, on the
//! broker's configuration. `connect` prints a link and the owner's code (the operator hands
//! them over); `account list` shows each account's status; `account revoke` ends the grant at
//! the provider (RFC 7009) and deletes the tokens. No command prints a token.

use airlock_core::HandleName;
use airlock_server::broker::oauth::Requester;
use airlock_server::broker::Revoker;
use airlock_server::Broker;
use anyhow::{anyhow, Result};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum AccountCmd {
    /// Every connected account: handle, owner, status (connected or needs-reauth), when it was
    /// connected and last refreshed.
    List,
    /// Revoke a handle's account: at the provider's revocation endpoint if it has one, then the
    /// tokens held here. Exit 0 revoked, 1 no account connected.
    Revoke {
        /// The oauth handle.
        handle: String,
    },
}

fn oauth_handle(broker: &Broker, name: &str) -> Result<airlock_core::config::Handle> {
    let name = HandleName::parse(name).map_err(|e| anyhow!("{e}"))?;
    broker
        .config()
        .handles
        .get(&name)
        .filter(|h| h.oauth().is_some())
        .cloned()
        .ok_or_else(|| anyhow!("{name} is not an oauth handle of this configuration"))
}

/// `airlock connect HANDLE --owner OWNER`: a connect link for the owner, and the code its page
/// asks for.
pub async fn connect(broker: &Broker, handle: &str, owner: &str, json: bool) -> Result<u8> {
    let h = oauth_handle(broker, handle)?;
    let l = broker
        .create_connect(&h, owner, Requester { id: "operator", name: "operator" })
        .await
        .map_err(|e| anyhow!("{}: {}", e.code, e.message))?;
    let expires = airlock_server::broker::share::rfc3339(l.expires_at);
    if json {
        // The link and the code are what the operator hands over: the text prints them too.
        super::print_json(&json!({"handle": handle, "owner": owner, "link": l.link, "code": l.code, "expires_at": expires}))?;
    } else {
        println!("link: {}", l.link);
        println!("code: {}", l.code);
        println!("expires: {expires}");
    }
    Ok(0)
}

pub async fn run(broker: &Broker, cmd: AccountCmd, json: bool) -> Result<u8> {
    match cmd {
        AccountCmd::List if json => {
            let items = broker.store().accounts().await?.into_iter().map(|a| {
                json!({"handle": a.handle, "owner": a.owner, "status": a.status, "connected_at": a.connected_at, "refreshed_at": a.refreshed_at})
            });
            super::print_json(&Value::Array(items.collect()))?;
            Ok(0)
        }
        AccountCmd::List => {
            for a in broker.store().accounts().await? {
                let refreshed = a.refreshed_at.as_deref().unwrap_or("-");
                println!("{}\t{}\t{}\tconnected {}\trefreshed {refreshed}", a.handle, a.owner, a.status, a.connected_at);
            }
            Ok(0)
        }
        AccountCmd::Revoke { handle } => {
            let h = oauth_handle(broker, &handle)?;
            let outcome = broker.revoke_account(&h, &Revoker::OPERATOR).await.map_err(|e| anyhow!("{}: {}", e.code, e.message))?;
            if json {
                let revoked = outcome.is_some();
                super::print_json(&json!({"handle": handle, "revoked": revoked, "provider_confirmed": outcome}))?;
                return Ok(if revoked { 0 } else { 1 });
            }
            match outcome {
                None => {
                    println!("{handle} has no connected account");
                    Ok(1)
                }
                Some(true) => {
                    println!("revoked {handle} at the provider and here");
                    Ok(0)
                }
                Some(false) => {
                    println!("revoked {handle} here; the provider did not confirm (revoke the grant there too)");
                    Ok(0)
                }
            }
        }
    }
}
