//! `airlock request`: ask a person for a secret as an agent (`new`, `status`: thin clients of
//! the running broker, token from AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE), and answer such a
//! request as the person (`fill`: the link from a file or a prompt, the value from stdin or a
//! prompt, encrypted here to the request's own key; docs/request-format.md).

use super::call::print_envelope;
use super::share::{client, error_of};
use crate::client::Client;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// `airlock request ...`
#[derive(Subcommand, Debug)]
pub enum RequestCmd {
    /// Ask a person for a secret (the tool request_secret). Prints the request id; the link goes
    /// to the recipient, never here.
    New(Box<NewArgs>),
    /// The status of a request (the tool request_status).
    Status {
        /// The request id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Answer a request as the person it was sent to: prints what is asked and where the value
    /// will be bound, then encrypts the value (stdin, or a prompt that does not echo) to the
    /// request's key and sends it. The link is read from --link-file or a prompt, never argv.
    Fill {
        /// A file whose first line is the link.
        #[arg(long)]
        link_file: Option<PathBuf>,
        /// Send without asking for confirmation (the binding is still printed).
        #[arg(long)]
        yes: bool,
    },
    /// Revoke a request (the operator, on the broker's configuration): a pending link stops
    /// opening; a value that landed is deleted and its handle stops working; the name can be
    /// asked for again. Audited. Exit 0 revoked, 1 no such live request.
    Revoke {
        /// The request id.
        #[arg(long, required_unless_present = "handle", conflicts_with = "handle", allow_hyphen_values = true)]
        id: Option<String>,
        /// The handle a live request names (pending, received or approved).
        #[arg(long)]
        handle: Option<String>,
    },
}

/// What `airlock request new` asks for.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The new handle's name.
    #[arg(long)]
    handle: String,
    /// http, postgres, mysql or secret.
    #[arg(long)]
    kind: String,
    /// The recipient (a name of [shares.recipients]).
    #[arg(long)]
    recipient: String,
    /// What it is for, shown to the person.
    #[arg(long)]
    description: String,
    /// http: the HTTPS URL prefix the key may go to.
    #[arg(long)]
    destination: Option<String>,
    /// http: allowed methods, comma-separated (default GET).
    #[arg(long)]
    methods: Option<String>,
    /// http: the header the key goes in (default Authorization).
    #[arg(long)]
    header: Option<String>,
    /// http: the header value format with one {} (default "Bearer {}").
    #[arg(long)]
    header_format: Option<String>,
    /// postgres, mysql: read_only (default) or read_write.
    #[arg(long)]
    scope: Option<String>,
    /// The value starts with this.
    #[arg(long)]
    prefix: Option<String>,
    /// A regular expression the whole value matches.
    #[arg(long)]
    pattern: Option<String>,
    /// Seconds until the link expires (default 3600).
    #[arg(long)]
    expires_in: Option<u64>,
}

/// Runs one `airlock request` command; its exit code. `json`: `new` and `status` print the
/// broker's JSON envelope either way; `fill` prints `{request_id, sent, status}` instead of its
/// closing line.
pub async fn run(config: &std::path::Path, cmd: RequestCmd, json: bool) -> Result<u8> {
    match cmd {
        RequestCmd::New(n) => {
            let NewArgs { handle, kind, recipient, description, destination, methods, header, header_format, scope, prefix, pattern, expires_in } = *n;
            let mut args = json!({"handle": handle, "kind": kind, "recipient": recipient, "description": description});
            if let Some(d) = destination {
                args["destination"] = json!(d);
            }
            if let Some(m) = methods {
                args["methods"] = json!(m.split(',').map(str::trim).collect::<Vec<_>>());
            }
            if header.is_some() || header_format.is_some() {
                args["inject"] = json!({"type": "header", "name": header.unwrap_or_else(|| "Authorization".into()), "format": header_format});
            }
            if let Some(s) = scope {
                args["scope"] = json!(s);
            }
            if prefix.is_some() || pattern.is_some() {
                args["format"] = json!({"prefix": prefix, "pattern": pattern});
            }
            if let Some(e) = expires_in {
                args["expires_in"] = json!(e);
            }
            print_envelope(Client::from_env()?.call("request_secret", args).await?)
        }
        RequestCmd::Status { id } => print_envelope(Client::from_env()?.call("request_status", json!({"request_id": id})).await?),
        RequestCmd::Fill { link_file, yes } => fill(link_file, yes, json).await,
        RequestCmd::Revoke { id, handle } => revoke(config, id, handle, json).await,
    }
}

/// `request revoke`: the request by id, or the live one naming `handle`.
async fn revoke(config: &std::path::Path, id: Option<String>, handle: Option<String>, json: bool) -> Result<u8> {
    let broker = super::open_broker(super::load(config)?).await?;
    let id = match (id, &handle) {
        (Some(id), _) => Some(id),
        (None, Some(h)) => broker.live_request_for(h).await.context("reading the requests")?,
        (None, None) => unreachable!("clap requires one"),
    };
    let revoked = match &id {
        Some(id) => broker.revoke_request(id, "operator").await.context("revoking the request")?,
        None => false,
    };
    if json {
        super::print_json(&json!({"request_id": id, "handle": handle, "revoked": revoked}))?;
    } else if revoked {
        println!("revoked {}", id.as_deref().unwrap_or_default());
    } else {
        println!("no live request {}", id.as_deref().or(handle.as_deref()).unwrap_or_default());
    }
    Ok(if revoked { 0 } else { 1 })
}

/// A parsed intake link `{base}/r/{id}#{proof}`.
struct IntakeLink {
    base: String,
    id: String,
    proof: Zeroizing<String>,
}

fn parse_link(link: &str) -> Result<IntakeLink> {
    let (url, proof) = link.trim().split_once('#').context("the link has no #proof: paste the whole link")?;
    let (base, id) = url.rsplit_once("/r/").context("not a request link ({base}/r/{id}#{proof})")?;
    if !airlock_server::broker::request::valid_request_id(id) || airlock_server::broker::request::proof_hash(proof).is_none() {
        bail!("the link is incomplete or damaged");
    }
    Ok(IntakeLink { base: base.to_owned(), id: id.to_owned(), proof: Zeroizing::new(proof.to_owned()) })
}

fn read_link(file: Option<PathBuf>) -> Result<Zeroizing<String>> {
    match file {
        Some(f) => {
            let text = Zeroizing::new(std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?);
            Ok(Zeroizing::new(text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_owned()))
        }
        None => Ok(Zeroizing::new(rpassword::prompt_password("Link: ").context("reading the link from the terminal")?)),
    }
}

fn read_value(max: usize) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let v = Zeroizing::new(rpassword::prompt_password("Secret: ").context("reading the secret from the terminal")?);
        return Ok(Zeroizing::new(v.as_bytes().to_vec()));
    }
    let mut buf = Zeroizing::new(Vec::new());
    stdin.lock().take(max as u64 + 2).read_to_end(&mut buf).context("reading the secret from stdin")?;
    super::trim_one_newline(&mut buf);
    if buf.len() > max {
        bail!("the secret is larger than the request allows ({max} bytes)");
    }
    Ok(buf)
}

async fn fill(link_file: Option<PathBuf>, yes: bool, json: bool) -> Result<u8> {
    let l = parse_link(&read_link(link_file)?)?;
    let http = client()?;
    let url = |what: &str| format!("{}/v1/requests/{}/{what}", l.base, l.id);
    let resp = http.post(url("open")).json(&json!({"proof": l.proof.as_str()})).send().await.with_context(|| format!("reaching {}", l.base))?;
    let not_sent = |why: &str, status: &str| -> Result<u8> {
        eprintln!("{why}");
        if json {
            super::print_json(&json!({"request_id": l.id, "sent": false, "status": status}))?;
        }
        Ok(1)
    };
    if resp.status().as_u16() == 404 {
        return not_sent("this link was already used, has expired, or never existed", "gone");
    }
    if !resp.status().is_success() {
        return Err(error_of(resp).await.context("opening the request"));
    }
    let v: Value = resp.json().await.context("the server's answer is not JSON")?;
    let context = v["context"].as_str().context("no context")?.to_owned();
    let ctx: Value = serde_json::from_str(&context).context("the context is not JSON")?;
    if ctx["request_id"] != json!(l.id) {
        bail!("the request does not match its link");
    }
    // What the value is bound to is exactly what is printed here: the same bytes are the
    // ciphertext's associated data.
    eprintln!("{} asks: {}", ctx["from_agent"].as_str().unwrap_or("?"), ctx["description"].as_str().unwrap_or(""));
    eprintln!("handle {} ({}), granted for {}", ctx["handle"].as_str().unwrap_or("?"), ctx["kind"].as_str().unwrap_or("?"), ctx["grant"]);
    eprintln!("bound to {}", ctx["binding"]);
    let max = ctx["max_value_bytes"].as_u64().context("no max_value_bytes")? as usize;
    let value = read_value(max)?;
    if !yes {
        let answer = rpassword::prompt_password("Send it? Type yes: ").unwrap_or_default();
        if answer.trim() != "yes" {
            return not_sent("nothing was sent", "not-sent");
        }
    }
    let public = airlock_share::decode_b64(v["public_key"].as_str().unwrap_or("")).context("no public key")?;
    let sealed = airlock_share::intake::seal(&public, &value, context.as_bytes(), max).context("encrypting the secret")?;
    let body = json!({"proof": l.proof.as_str(), "enc": sealed.enc_b64(), "ciphertext": sealed.ciphertext_b64()});
    let resp = http.post(url("submit")).json(&body).send().await.with_context(|| format!("reaching {}", l.base))?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await.context("sending the secret"));
    }
    let v: Value = resp.json().await.context("the server's answer is not JSON")?;
    let status = v["status"].as_str().unwrap_or("?");
    if json {
        super::print_json(&json!({"request_id": l.id, "sent": true, "status": status}))?;
    } else {
        eprintln!("sent; the request is {status}");
    }
    Ok(0)
}
