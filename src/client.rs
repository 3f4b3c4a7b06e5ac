//! The agent's side: thin clients of a running `airlock serve`.
//!
//! `airlock mcp`, `airlock call`, `airlock tools` and `airlock lease issue` run as the agent's
//! user. They hold an agent token and an endpoint, nothing else: they never read the broker's
//! configuration, store, master key or audit key, and there is no in-process broker to fall back
//! to (T22). The endpoint is the broker's Unix socket (the peer's uid and pid go into the audit)
//! or its loopback/TLS HTTP listener.
//!
//! Where they look, first match wins:
//! - endpoint: `AIRLOCK_ENDPOINT`, else `endpoint` in the client config, else the default socket
//!   ([`airlock_core::config::default_socket_path`]);
//! - token: `AIRLOCK_TOKEN`, else the file named by `AIRLOCK_TOKEN_FILE`, else `token_file` in
//!   the client config. Never argv.
//! - client config: `AIRLOCK_CLIENT_CONFIG`, else `$XDG_CONFIG_HOME/airlock/client.toml` (or
//!   `~/.config/airlock/client.toml`), if it exists.
//!
//! Exit codes: 0 the call succeeded, 1 the broker refused or the call failed (the envelope says
//! why), 2 a usage or local error, 3 no broker answered at the endpoint.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Exit code when no broker answers at the endpoint (distinct from a refusal, 1).
pub const EXIT_UNREACHABLE: u8 = 3;

/// Where the broker is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Its Unix socket.
    Unix(PathBuf),
    /// Its HTTP listener: `https://`, or `http://` on a loopback address only.
    Http(url::Url),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Http(u) => write!(f, "{}", u.as_str().trim_end_matches('/')),
        }
    }
}

impl Endpoint {
    /// `unix:/path`, `/path`, `https://host[:port]` or `http://127.0.0.1:port`. Plain `http://`
    /// elsewhere than loopback is refused: the token would cross the network in clear.
    pub fn parse(s: &str) -> Result<Endpoint> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        let u = url::Url::parse(s).with_context(|| format!("endpoint {s:?}: expected unix:/path or http(s)://host:port"))?;
        match u.scheme() {
            "https" => {}
            "http" => {
                let loopback = match u.host() {
                    Some(url::Host::Ipv4(a)) => a.is_loopback(),
                    Some(url::Host::Ipv6(a)) => a.is_loopback(),
                    Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                    None => false,
                };
                if !loopback {
                    bail!("endpoint {s}: plain http is only for loopback; use https:// so the token is not sent in clear");
                }
            }
            other => bail!("endpoint {s}: scheme {other:?} is not supported (unix:, http://127.0.0.1, https://)"),
        }
        if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
            bail!("endpoint {s}: give only scheme, host and port");
        }
        Ok(Endpoint::Http(u))
    }
}

/// The optional client configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    endpoint: Option<String>,
    token_file: Option<PathBuf>,
}

fn client_file() -> Result<ClientFile> {
    let path = match std::env::var_os("AIRLOCK_CLIENT_CONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("airlock").join("client.toml"))
            .filter(|p| p.exists()),
    };
    let Some(path) = path else { return Ok(ClientFile::default()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the client config {}", path.display()))?;
    let mut f: ClientFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    f.token_file = f.token_file.map(|t| base.join(t));
    Ok(f)
}

/// A thin client: an endpoint and, for agent commands, a token.
pub struct Client {
    endpoint: Endpoint,
    http: reqwest::Client,
    base: String,
    token: Zeroizing<String>,
}

/// Why a request got no answer from a broker.
#[derive(Debug)]
pub struct Unreachable {
    endpoint: Endpoint,
    why: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no airlock broker answers at {} ({}). Start one with `airlock serve` (as the broker's own user), \
             or point AIRLOCK_ENDPOINT at the one that runs (unix:/path/to/airlock.sock or http://127.0.0.1:PORT)",
            self.endpoint, self.why
        )
    }
}

impl std::error::Error for Unreachable {}

fn read_token(file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Ok(t) = std::env::var("AIRLOCK_TOKEN") {
        return Ok(Zeroizing::new(t.trim().to_owned()));
    }
    let file = std::env::var_os("AIRLOCK_TOKEN_FILE").map(PathBuf::from).or_else(|| file.map(Path::to_path_buf));
    let Some(file) = file else {
        bail!("no agent token: set AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE (or token_file in the client config)")
    };
    let t = Zeroizing::new(std::fs::read_to_string(&file).with_context(|| format!("reading the token file {}", file.display()))?);
    Ok(Zeroizing::new(t.trim().to_owned()))
}

impl Client {
    /// The endpoint and token from the environment and the client config.
    pub fn from_env() -> Result<Client> {
        let file = client_file()?;
        let endpoint = match std::env::var("AIRLOCK_ENDPOINT").ok().filter(|s| !s.is_empty()).or(file.endpoint) {
            Some(s) => Endpoint::parse(&s)?,
            None => Endpoint::Unix(airlock_core::config::default_socket_path()),
        };
        let token = read_token(file.token_file.as_deref())?;
        Client::new(endpoint, token)
    }

    fn new(endpoint: Endpoint, token: Zeroizing<String>) -> Result<Client> {
        let b = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5)).redirect(reqwest::redirect::Policy::none());
        let (http, base) = match &endpoint {
            // The host name is only the Host header (the MCP endpoint's guard accepts localhost).
            Endpoint::Unix(p) => (b.unix_socket(p.as_path()).build()?, "http://localhost".to_owned()),
            Endpoint::Http(u) => (b.build()?, u.as_str().trim_end_matches('/').to_owned()),
        };
        Ok(Client { endpoint, http, base, token })
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        // The chain's innermost message (e.g. "No such file or directory", "Connection refused").
        let mut why = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            why = s.to_string();
            src = s.source();
        }
        anyhow::Error::new(Unreachable { endpoint: self.endpoint.clone(), why })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        req.bearer_auth(self.token.as_str()).send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                self.unreachable(&e)
            } else {
                anyhow::Error::new(e).context(format!("talking to the broker at {}", self.endpoint))
            }
        })
    }

    async fn envelope(&self, resp: reqwest::Response) -> Result<(u8, Value)> {
        let status = resp.status();
        let body = resp.bytes().await.with_context(|| format!("reading the broker's answer from {}", self.endpoint))?;
        let v: Value = serde_json::from_slice(&body)
            .with_context(|| format!("the broker at {} answered {status} with something that is not JSON", self.endpoint))?;
        Ok((if status.is_success() && v["ok"] != Value::Bool(false) { 0 } else { 1 }, v))
    }

    /// `POST /v1/invoke`: the contract's envelope and the exit code.
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<(u8, Value)> {
        let body = serde_json::json!({"tool": tool, "arguments": arguments});
        let resp = self.send(self.http.post(format!("{}/v1/invoke", self.base)).json(&body)).await?;
        self.envelope(resp).await
    }

    /// `GET /v1/tools?format=`.
    pub async fn tools(&self, format: &str) -> Result<(u8, Value)> {
        let resp = self.send(self.http.get(format!("{}/v1/tools", self.base)).query(&[("format", format)])).await?;
        self.envelope(resp).await
    }

    /// `POST /v1/leases`.
    pub async fn lease(&self, args: Value) -> Result<(u8, Value)> {
        let resp = self.send(self.http.post(format!("{}/v1/leases", self.base)).json(&args)).await?;
        self.envelope(resp).await
    }

    /// MCP over stdin/stdout: upgrades a connection to the broker's MCP stream and relays bytes
    /// both ways until either side closes. Nothing but MCP goes to stdout.
    pub async fn mcp_stdio(&self) -> Result<u8> {
        let req = self
            .http
            .get(format!("{}{}", self.base, airlock_mcp::STREAM_PATH))
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, airlock_mcp::STREAM_PROTOCOL);
        let resp = self.send(req).await?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let (_, v) = self.envelope(resp).await?;
            let code = v["error"]["code"].as_str().unwrap_or("unknown");
            eprintln!("error: the broker at {} refused the MCP session: {code}", self.endpoint);
            return Ok(1);
        }
        let upgraded = resp.upgrade().await.with_context(|| format!("upgrading the connection to {}", self.endpoint))?;
        let (mut from_broker, mut to_broker) = tokio::io::split(upgraded);
        let (mut stdin, mut stdout) = stdio();
        let up = async {
            let r = tokio::io::copy(&mut stdin, &mut to_broker).await;
            // The MCP host closed our stdin: end the session on the broker's side too.
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_broker).await;
            r
        };
        let down = async {
            let r = tokio::io::copy(&mut from_broker, &mut stdout).await;
            let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
            r
        };
        tokio::pin!(up, down);
        tokio::select! {
            // The broker ended the session (or went away): nothing more can be answered.
            r = &mut down => {
                r.with_context(|| format!("the MCP session with {} broke", self.endpoint))?;
                Ok(0)
            }
            r = &mut up => {
                r.context("reading stdin")?;
                // Let the broker's last answers through, then stop.
                match tokio::time::timeout(std::time::Duration::from_secs(5), down).await {
                    Ok(r) => { r.with_context(|| format!("the MCP session with {} broke", self.endpoint))?; }
                    Err(_) => tracing::warn!("the broker did not end the session within 5 s of stdin closing"),
                }
                Ok(0)
            }
        }
    }
}

/// stdin and stdout for the relay. An MCP host connects them to pipes: those are read and
/// written non-blocking on the runtime's reactor, which saves the hop to a blocking thread that
/// `tokio::io::stdin`/`stdout` make on every read and write (about 30 µs per message each way).
/// Anything else (a terminal, a file) falls back to those.
fn stdio() -> (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Box<dyn tokio::io::AsyncWrite + Unpin + Send>) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().ok().map(std::fs::File::from);
    let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> =
        match dup(std::io::stdin().as_fd()).and_then(|f| pipe::Receiver::from_file(f).ok()) {
            Some(r) => Box::new(r),
            None => Box::new(tokio::io::stdin()),
        };
    let output: Box<dyn tokio::io::AsyncWrite + Unpin + Send> =
        match dup(std::io::stdout().as_fd()).and_then(|f| pipe::Sender::from_file(f).ok()) {
            Some(w) => Box::new(w),
            None => Box::new(tokio::io::stdout()),
        };
    (input, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_plain_http_is_loopback_only() {
        assert_eq!(Endpoint::parse("unix:/run/airlock/airlock.sock").unwrap(), Endpoint::Unix("/run/airlock/airlock.sock".into()));
        assert_eq!(Endpoint::parse("/tmp/a.sock").unwrap(), Endpoint::Unix("/tmp/a.sock".into()));
        for ok in ["http://127.0.0.1:7878", "http://localhost:7878", "http://[::1]:7878", "https://airlock.example", "https://10.0.0.1:8443"] {
            assert!(Endpoint::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:7878", "http://airlock.example", "http://127.0.0.1.attacker.test", "ftp://127.0.0.1",
            "http://user:pw@127.0.0.1:7878", "http://127.0.0.1:7878/?x=1", "airlock.example:7878", "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
