//! `airlock share` and `airlock open`: the one-time link format (crates/share) over the REST
//! endpoints, interoperable with the web pages in both directions.

use airlock_share::{derive, Link, NewShare};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

// The arguments of `airlock share` (its help text is the variant's in the command list).
#[derive(Args)]
pub struct ShareArgs {
    /// How many times the link can be opened.
    #[arg(long, default_value_t = 1)]
    views: u32,
    /// When it expires: 5m, 1h, 1d, 7d (or seconds).
    #[arg(long, default_value = "1h")]
    expires: String,
    /// Also require a passphrase (prompted on the terminal).
    #[arg(long)]
    passphrase: bool,
    /// Read the passphrase from the first line of this file instead of prompting.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// The airlock server; default `shares.base_url`, else the configured listen address.
    #[arg(long, env = "AIRLOCK_URL")]
    server: Option<String>,
}

/// `airlock share`: the configuration is optional here, since a person may share to any airlock
/// server; it gives the default server and the size limit.
pub async fn run(config: &Path, args: ShareArgs, json: bool) -> Result<u8> {
    let cfg = if config.exists() { Some(super::load(config)?) } else { None };
    let server = match (&args.server, &cfg) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => super::configured_server(c),
        (None, None) => "http://127.0.0.1:7878".to_owned(),
    };
    let max_plaintext = cfg.as_ref().map(|c| c.shares.max_plaintext_bytes).unwrap_or(1 << 20);
    share(&args, &server, max_plaintext, json).await?;
    Ok(0)
}

/// `unshare`: 0 when the link was live and is revoked now, 1 when there is no live link by
/// that id (unknown, used up, expired or revoked before).
pub async fn revoke(broker: &airlock_server::Broker, id: &str, json: bool) -> Result<u8> {
    let outcome = broker.revoke_share_by(id, None, &airlock_server::broker::Revoker::OPERATOR).await;
    if json {
        let error = outcome.as_ref().err().map(|e| e.code.as_str());
        super::print_json(&json!({"id": id, "revoked": outcome.is_ok(), "error": error}))?;
        return Ok(if outcome.is_ok() { 0 } else { 1 });
    }
    match outcome {
        Ok(_) => {
            println!("revoked {id}");
            Ok(0)
        }
        Err(e) => {
            println!("{id}: {}", e.code);
            Ok(1)
        }
    }
}

/// Parses `90s`, `5m`, `1h`, `1d`, `7d` or a number of seconds.
fn parse_duration(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().with_context(|| format!("{s:?} is not a duration such as 5m, 1h, 1d or 7d"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{s:?} is not a duration such as 5m, 1h, 1d or 7d"),
    };
    n.checked_mul(mul).context("duration too long")
}

/// The passphrase: from a file (first line), or prompted on the terminal.
fn passphrase(file: Option<&Path>, prompt: &str, confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(p) = file {
        let text = Zeroizing::new(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?);
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            bail!("{} holds an empty passphrase", p.display());
        }
        return Ok(Zeroizing::new(line.to_owned()));
    }
    let a = Zeroizing::new(rpassword::prompt_password(prompt).context("reading the passphrase from the terminal")?);
    if a.is_empty() {
        bail!("an empty passphrase");
    }
    if confirm {
        let b = Zeroizing::new(rpassword::prompt_password("Again: ").context("reading the passphrase")?);
        if *a != *b {
            bail!("the passphrases differ");
        }
    }
    Ok(a)
}

pub(super) fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

pub(super) async fn error_of(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    match v["error"]["code"].as_str() {
        Some(code) => anyhow::anyhow!("{code}: {}", v["error"]["message"].as_str().unwrap_or("")),
        None => anyhow::anyhow!("the server answered {status}"),
    }
}

/// Reads stdin (at most `max_plaintext` bytes), seals it, stores it on `server`, prints the link.
async fn share(o: &ShareArgs, server: &str, max_plaintext: usize, json: bool) -> Result<()> {
    let expires_in = parse_duration(&o.expires)?;
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(max_plaintext as u64 + 2)
        .read_to_end(&mut buf)
        .context("reading the secret from stdin")?;
    super::trim_one_newline(&mut buf);
    if buf.is_empty() {
        bail!("nothing on stdin to share");
    }
    if buf.len() > max_plaintext {
        bail!("the secret is larger than the limit of {} bytes", max_plaintext);
    }
    let pass = if o.passphrase || o.passphrase_file.is_some() {
        Some(passphrase(o.passphrase_file.as_deref(), "Passphrase for the link: ", true)?)
    } else {
        None
    };
    let expires_at = chrono::Utc::now().timestamp() + expires_in as i64;
    let s = NewShare::create(&buf, pass.as_ref().map(|p| p.as_str()), expires_at, o.views, max_plaintext)?;
    let (ciphertext, proof_hash) = s.request_fields();
    let base = server.trim_end_matches('/');
    let resp = client()?
        .post(format!("{base}/v1/shares"))
        .json(&json!({"id": s.id, "ciphertext": ciphertext, "proof_hash": proof_hash, "expires_at": expires_at, "views": o.views}))
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await.context("creating the share"));
    }
    let link = Link::render(base, &s.id, &s.key, pass.is_some());
    let when = chrono::DateTime::from_timestamp(expires_at, 0).map(|t| t.to_rfc3339()).unwrap_or_default();
    if json {
        // The link (its key after `#`) is what `share` is for: the text prints it too.
        let out = json!({"link": link.as_str(), "id": s.id, "expires_at": when, "views": o.views, "passphrase": pass.is_some()});
        return super::print_json(&out);
    }
    println!("{}", link.as_str());
    eprintln!(
        "expires {when}; {}; end-to-end encrypted{}",
        if o.views == 1 { "one-time view".to_owned() } else { format!("{} views", o.views) },
        if pass.is_some() { "; the recipient also needs the passphrase" } else { "" }
    );
    Ok(())
}

/// The link to open: the first non-empty line of stdin, or, on a terminal, typed at a prompt
/// that does not echo it (the key is in the link).
fn read_link() -> Result<Zeroizing<String>> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let l = Zeroizing::new(rpassword::prompt_password("Link: ").context("reading the link from the terminal")?);
        return Ok(Zeroizing::new(l.trim().to_owned()));
    }
    let mut text = Zeroizing::new(String::new());
    stdin.lock().take(64 * 1024).read_to_string(&mut text).context("reading the link from stdin")?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    if line.is_empty() {
        bail!("no link on stdin: pipe it in (`airlock open < link.txt`) or run `airlock open` in a terminal and paste it");
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// Burns one view of the link read from stdin or a prompt and writes the secret to stdout.
/// `link_in_argv`: a link was given as an argument, which is refused before anything is read
/// or sent (argv is readable by other users in /proc and lands in shell history).
pub async fn open(link_in_argv: bool, passphrase_file: Option<&Path>) -> Result<u8> {
    if link_in_argv {
        bail!(
            "a link on the command line is visible to other users (/proc) and stays in shell history, so it was not used; \
             run `airlock open` and paste it at the prompt, or pipe it in: `airlock open < link.txt`"
        );
    }
    let link = read_link()?;
    let l = Link::parse(&link)?;
    let pass = if l.passphrase { Some(passphrase(passphrase_file, "Passphrase: ", false)?) } else { None };
    let d = derive(&l.key, &l.id, pass.as_ref().map(|p| p.as_str()));
    // One attempt id for this open: a consume whose answer is lost (the connection or the
    // server died after the view was burned) is asked again with it, and answered again.
    let attempt = airlock_share::encode_b64(&rand::random::<[u8; 16]>());
    let (http, url) = (client()?, format!("{}/v1/shares/{}/consume", l.base, l.id));
    let body = json!({"proof": d.proof().as_str(), "attempt": attempt});
    let mut tries = 0;
    let resp = loop {
        match http.post(&url).json(&body).send().await {
            Ok(r) => break r,
            Err(e) if tries < 4 => {
                tries += 1;
                eprintln!("no answer from {} ({e}); asking again", l.base);
                tokio::time::sleep(std::time::Duration::from_millis(500 * tries)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reaching {}", l.base))),
        }
    };
    if resp.status().as_u16() == 404 {
        eprintln!(
            "this link was already opened or has expired{}",
            if l.passphrase { ", or the passphrase is wrong" } else { "" }
        );
        return Ok(1);
    }
    if !resp.status().is_success() {
        return Err(error_of(resp).await.context("opening the share"));
    }
    let v: Value = resp.json().await.context("the server's answer is not JSON")?;
    let blob = airlock_share::decode_blob(v["ciphertext"].as_str().unwrap_or(""))?;
    let limits = airlock_share::Limits {
        expires_at: v["expires_at"].as_i64().context("no expires_at")?,
        views: v["views"].as_u64().context("no views")? as u32,
        passphrase: l.passphrase,
    };
    let secret = airlock_share::open(&blob, &d, &l.id, &limits)?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // The person's side: printing what the link carried is what `open` is for.
    #[allow(clippy::disallowed_methods)]
    let plaintext = secret.expose_secret();
    out.write_all(plaintext)?;
    if !plaintext.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("5m").unwrap(), 300);
        assert_eq!(super::parse_duration("1h").unwrap(), 3600);
        assert_eq!(super::parse_duration("7d").unwrap(), 604_800);
        assert_eq!(super::parse_duration("90").unwrap(), 90);
        assert!(super::parse_duration("1w").is_err());
        assert!(super::parse_duration("h").is_err());
    }
}
