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
//! A token read from a file is followed by `airlock mcp`. `airlock call`, `tools` and `lease`
//! read the file anew on every run; an MCP session lasts longer than a platform's short-lived
//! token (a Kubernetes projected service-account token, a CI OIDC token: `[issuers.NAME]` on
//! the broker), whose file the platform rewrites before it expires. So before it forwards each
//! JSON-RPC line from stdin, and every [`TOKEN_CHECK`] in between, `airlock mcp` looks at the
//! file's metadata (modification time, length, inode: no read); when it changed, it reads the
//! file and, if the token differs, sends it to the broker in band, between two lines, as the
//! notification `{"jsonrpc":"2.0","method":"notifications/airlock/token","params":{"token":"…"}}`.
//! The broker adopts it for the session only when it authenticates as the session's agent (see
//! the broker's stream, `airlock_mcp`); a file that cannot be read just now (mid-rewrite) is
//! tried again at the next check. A token given in `AIRLOCK_TOKEN` is fixed for the session.
//!
//! Exit codes: 0 the call succeeded, 1 the broker refused or the call failed (the envelope says
//! why), 2 a usage or local error, 3 no broker answered at the endpoint.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// How often `airlock mcp` looks at its token file while no message goes to the broker.
pub const TOKEN_CHECK: Duration = Duration::from_secs(5);

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
    /// The file the token came from, and what it looked like when it was read.
    token_file: Option<TokenFile>,
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

impl Unreachable {
    /// No broker answered at `endpoint`, for the reason `why`.
    pub fn new(endpoint: Endpoint, why: String) -> Unreachable {
        Unreachable { endpoint, why }
    }
}

/// What a token file looked like: enough to notice that it was rewritten without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    /// The file's stamp (following symlinks, as Kubernetes swaps a `..data` link), if it exists.
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })
    }
}

/// A token file being followed.
#[derive(Clone, Debug)]
struct TokenFile {
    path: PathBuf,
    /// Taken before the read, so a rewrite between the two is noticed at the next check.
    seen: Option<Stamp>,
}

impl TokenFile {
    /// The file's token when the file changed since the last look and holds another token than
    /// `current`. A file that cannot be read now, or holds nothing, is looked at again next time.
    fn rotated(&mut self, current: &str) -> Option<Zeroizing<String>> {
        let now = Stamp::of(&self.path);
        if now == self.seen {
            return None;
        }
        let text = Zeroizing::new(std::fs::read_to_string(&self.path).ok()?);
        let token = text.trim();
        if token.is_empty() {
            return None;
        }
        self.seen = now;
        // In band as a JSON string written as is: a token is printable ASCII without quotes or
        // backslashes (airlock's and JWTs are), so nothing needs escaping.
        if !token.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            tracing::warn!(file = %self.path.display(), "the token file holds characters no token has; not sent");
            return None;
        }
        (token != current).then(|| Zeroizing::new(token.to_owned()))
    }
}

/// The token, and the file it came from (none when it came from `AIRLOCK_TOKEN`).
fn read_token(file: Option<&Path>) -> Result<(Zeroizing<String>, Option<TokenFile>)> {
    if let Ok(t) = std::env::var("AIRLOCK_TOKEN") {
        return Ok((Zeroizing::new(t.trim().to_owned()), None));
    }
    let file = std::env::var_os("AIRLOCK_TOKEN_FILE").map(PathBuf::from).or_else(|| file.map(Path::to_path_buf));
    let Some(file) = file else {
        bail!("no agent token: set AIRLOCK_TOKEN or AIRLOCK_TOKEN_FILE (or token_file in the client config)")
    };
    let seen = Stamp::of(&file);
    let t = Zeroizing::new(std::fs::read_to_string(&file).with_context(|| format!("reading the token file {}", file.display()))?);
    Ok((Zeroizing::new(t.trim().to_owned()), Some(TokenFile { path: file, seen })))
}

/// The in-band line that hands the broker's session a rotated token (`token` needs no escaping,
/// see [`TokenFile::rotated`]). Built in place, so the only copy is zeroized on drop.
fn token_notification(token: &str) -> Zeroizing<String> {
    let (head, tail) = (r#"{"jsonrpc":"2.0","method":""#, r#"","params":{"token":""#);
    let mut line = Zeroizing::new(String::with_capacity(head.len() + airlock_mcp::TOKEN_NOTIFICATION.len() + tail.len() + token.len() + 4));
    line.push_str(head);
    line.push_str(airlock_mcp::TOKEN_NOTIFICATION);
    line.push_str(tail);
    line.push_str(token);
    line.push_str("\"}}\n");
    line
}

/// Copies the MCP host's stdin to the broker, and hands the broker a rotated token from `file`
/// between two lines: checked before each line is forwarded and every [`TOKEN_CHECK`] while
/// stdin is quiet. Returns at the end of stdin.
async fn relay_following<R, W>(mut stdin: R, to_broker: &mut W, mut file: TokenFile, mut current: Zeroizing<String>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    // Whether the next byte starts a line (where a notification may go).
    let mut at_line_start = true;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TOKEN_CHECK, TOKEN_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let n = tokio::select! {
            n = stdin.read(&mut buf) => n?,
            _ = tick.tick() => {
                if at_line_start {
                    send_if_rotated(to_broker, &mut file, &mut current).await?;
                }
                continue;
            }
        };
        if n == 0 {
            return Ok(());
        }
        let mut rest = &buf[..n];
        if !at_line_start {
            // Finish the line under way first.
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    to_broker.write_all(&rest[..=i]).await?;
                    rest = &rest[i + 1..];
                }
                None => {
                    to_broker.write_all(rest).await?;
                    rest = &[];
                }
            }
        }
        if !rest.is_empty() {
            // The lines of one read arrived together: one look at the file covers them.
            send_if_rotated(to_broker, &mut file, &mut current).await?;
            to_broker.write_all(rest).await?;
        }
        at_line_start = buf[n - 1] == b'\n';
        to_broker.flush().await?;
    }
}

/// Sends the notification when the token file holds a new token.
async fn send_if_rotated<W: AsyncWrite + Unpin>(to_broker: &mut W, file: &mut TokenFile, current: &mut Zeroizing<String>) -> std::io::Result<()> {
    if let Some(new) = file.rotated(current) {
        to_broker.write_all(token_notification(&new).as_bytes()).await?;
        to_broker.flush().await?;
        tracing::debug!(file = %file.path.display(), "sent the rotated token to the broker");
        *current = new;
    }
    Ok(())
}

impl Client {
    /// The endpoint and token from the environment and the client config.
    pub fn from_env() -> Result<Client> {
        let file = client_file()?;
        let endpoint = match std::env::var("AIRLOCK_ENDPOINT").ok().filter(|s| !s.is_empty()).or(file.endpoint) {
            Some(s) => Endpoint::parse(&s)?,
            None => Endpoint::Unix(airlock_core::config::default_socket_path()),
        };
        let (token, token_file) = read_token(file.token_file.as_deref())?;
        Client::new(endpoint, token, token_file)
    }

    fn new(endpoint: Endpoint, token: Zeroizing<String>, token_file: Option<TokenFile>) -> Result<Client> {
        let b = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5)).redirect(reqwest::redirect::Policy::none());
        let (http, base) = match &endpoint {
            // The host name is only the Host header (the MCP endpoint's guard accepts localhost).
            Endpoint::Unix(p) => (b.unix_socket(p.as_path()).build()?, "http://localhost".to_owned()),
            Endpoint::Http(u) => (b.build()?, u.as_str().trim_end_matches('/').to_owned()),
        };
        Ok(Client { endpoint, http, base, token, token_file })
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
    /// both ways until either side closes. Nothing but MCP goes to stdout. A token from a file
    /// is followed: a rotated one goes to the broker in band (see the module docs).
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
            let r = match self.token_file.clone() {
                Some(file) => relay_following(&mut stdin, &mut to_broker, file, self.token.clone()).await,
                None => tokio::io::copy(&mut stdin, &mut to_broker).await.map(|_| ()),
            };
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
                r.with_context(|| format!("relaying stdin to {}", self.endpoint))?;
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
