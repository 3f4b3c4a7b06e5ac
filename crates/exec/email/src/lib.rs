//! The `send_email` executor: `{to, cc?, subject, body, reply_to?}` on an `smtp` handle.
//!
//! Two steps, like the other executors. [`EmailExecutor::validate`] checks the agent's message
//! with no secret and no I/O: a header value holding CR or LF is refused, never stripped
//! (`header-injection`); every recipient, and the reply-to, must be on the handle's allow-list
//! (`recipient-not-allowed`); and the subject, body and addresses are scanned for any known
//! secret or its encodings (`outbound-contains-secret`), because an e-mail cannot be redacted
//! once it has left (T10). Only then does [`EmailExecutor::execute`] expose the secret, as the
//! SMTP AUTH password and nowhere else: the sender is the handle's, the transport is STARTTLS or
//! TLS (plain only for a loopback host the operator configured), and failures map to fixed codes.
#![forbid(unsafe_code)]

mod tool;

use airlock_core::config::{Handle, SmtpConstraints, SmtpTls};
use airlock_core::{CallError, ErrorCode, Secret};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};
use std::time::Duration;

/// Most recipients (to and cc together) of one message.
pub const MAX_RECIPIENTS: usize = 50;

/// One address or a list of them.
#[derive(Clone, Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Addresses {
    /// A single address.
    One(String),
    /// Several addresses.
    Many(Vec<String>),
}

impl Addresses {
    fn into_vec(self) -> Vec<String> {
        match self {
            Addresses::One(a) => vec![a],
            Addresses::Many(v) => v,
        }
    }
}

/// The arguments of `send_email` besides `credential_handle`.
///
/// The doc comments of the fields are the descriptions in the tool's JSON Schema (`schemars`).
#[derive(Clone, Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailArgs {
    /// Recipients: bare addresses (`name@example.com`), one or a list.
    pub to: Addresses,
    /// Copy recipients, one or a list.
    #[serde(default)]
    pub cc: Option<Addresses>,
    /// The subject (one line).
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// A `Reply-To` address.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// A message admitted against a handle. Holds no secret.
#[derive(Clone, Debug)]
pub struct ValidatedEmail {
    to: Vec<String>,
    cc: Vec<String>,
    subject: String,
    body: String,
    reply_to: Option<String>,
}

impl ValidatedEmail {
    /// The envelope recipients, to then cc.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        self.to.iter().chain(self.cc.iter()).map(String::as_str)
    }
}

/// Sends e-mail. Holds no connection: each send opens, authenticates and closes one.
#[derive(Debug, Default)]
pub struct EmailExecutor;

fn has_crlf(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n')
}

/// True when `addr` is allowed by `allowed` (exact addresses, lowercase, or `@domain`): the
/// configuration checks smtp share channels with this same matcher.
pub use airlock_core::config::recipient_allowed;

fn constraints(handle: &Handle) -> Result<&SmtpConstraints, CallError> {
    handle.smtp().ok_or_else(|| CallError::new(ErrorCode::HandleUnavailable))
}

impl EmailExecutor {
    /// A new executor.
    pub fn new() -> Self {
        EmailExecutor
    }

    /// Checks a message against the handle: header values without CR/LF, bare addresses, every
    /// recipient on the allow-list, size limits, and no known secret in any of the agent's text
    /// (`contains_secret` is the scrubber's outbound check). No I/O, no secret.
    pub fn validate(
        handle: &Handle,
        args: EmailArgs,
        contains_secret: impl Fn(&str) -> bool,
    ) -> Result<ValidatedEmail, CallError> {
        let c = constraints(handle)?;
        let to = args.to.into_vec();
        let cc = args.cc.map(Addresses::into_vec).unwrap_or_default();
        // Refused before anything else is looked at: a CR or LF in a header value is an attempt
        // to add headers or recipients (T10). Never stripped.
        let headers = to.iter().chain(cc.iter()).chain(args.reply_to.iter()).chain(std::iter::once(&args.subject));
        for h in headers {
            if has_crlf(h) {
                return Err(CallError::new(ErrorCode::HeaderInjection));
            }
        }
        if to.is_empty() {
            return Err(CallError::with_message(ErrorCode::InvalidArguments, "at least one recipient in `to`"));
        }
        if to.len() + cc.len() > MAX_RECIPIENTS {
            return Err(CallError::with_message(
                ErrorCode::LimitExceeded,
                format!("at most {MAX_RECIPIENTS} recipients"),
            ));
        }
        if args.subject.len() + args.body.len() > c.max_body_bytes {
            return Err(CallError::with_message(
                ErrorCode::LimitExceeded,
                format!("subject and body exceed {} bytes", c.max_body_bytes),
            ));
        }
        for a in to.iter().chain(cc.iter()).chain(args.reply_to.iter()) {
            if !airlock_core::config::plausible_address(a) || a.parse::<lettre::Address>().is_err() {
                return Err(CallError::with_message(
                    ErrorCode::InvalidArguments,
                    "an address is not a bare e-mail address (name@example.com)",
                ));
            }
        }
        for (i, a) in to.iter().chain(cc.iter()).enumerate() {
            if !recipient_allowed(&c.allowed_recipients, a) {
                return Err(CallError::with_message(
                    ErrorCode::RecipientNotAllowed,
                    format!("recipient #{} is not allowed for this handle; nothing was sent", i + 1),
                ));
            }
        }
        // Replies go where the reply-to says: it follows the same allow-list (T10), or the agent
        // could route the answers to a message anywhere.
        if let Some(r) = &args.reply_to {
            if !recipient_allowed(&c.allowed_recipients, r) {
                return Err(CallError::with_message(
                    ErrorCode::RecipientNotAllowed,
                    "reply_to is not allowed for this handle; nothing was sent",
                ));
            }
        }
        let texts = to.iter().chain(cc.iter()).chain(args.reply_to.iter()).chain([&args.subject, &args.body]);
        for t in texts {
            if contains_secret(t) {
                return Err(CallError::new(ErrorCode::OutboundContainsSecret));
            }
        }
        Ok(ValidatedEmail { to, cc, subject: args.subject, body: args.body, reply_to: args.reply_to })
    }

    /// Sends a validated message. The secret is the SMTP AUTH password and goes nowhere else.
    pub async fn execute(&self, handle: &Handle, mail: &ValidatedEmail, secret: &Secret) -> Result<Value, CallError> {
        let c = constraints(handle)?;
        let internal = |what: &str| CallError::new(ErrorCode::Internal).detail(what.to_owned());
        let from: Mailbox = c.from.parse().map_err(|_| internal("the handle's from address does not parse"))?;
        let mut b = Message::builder().from(from);
        for a in &mail.to {
            b = b.to(a.parse().map_err(|_| internal("a validated address does not parse"))?);
        }
        for a in &mail.cc {
            b = b.cc(a.parse().map_err(|_| internal("a validated address does not parse"))?);
        }
        if let Some(r) = &mail.reply_to {
            b = b.reply_to(r.parse().map_err(|_| internal("a validated address does not parse"))?);
        }
        let message = b
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| internal(&format!("message build: {e}")))?;

        let resp = send(c, secret, message).await.map_err(|f| f.into_error(|e| format!("smtp: {e}")))?;
        Ok(json!({
            "accepted": mail.recipients().collect::<Vec<_>>(),
            "smtp_code": resp.code().to_string(),
        }))
    }
}

/// Sends the broker's own plain-text message (a link for a person, through a
/// `[shares.channels.NAME]` of type smtp) from the handle's sender to `to`, signed in with the
/// handle's secret as `send_email` is. `to` must be on the handle's allow-list, `subject` one
/// line.
///
/// The body holds a secret (the link): no error carries it, nor the subject, nor any text the
/// server answered with; an error names only what failed and the server's reply code.
pub async fn send_plain(handle: &Handle, secret: &Secret, to: &str, subject: &str, body: &str) -> Result<(), CallError> {
    let c = constraints(handle)?;
    if has_crlf(subject) || has_crlf(to) {
        return Err(CallError::new(ErrorCode::HeaderInjection));
    }
    if !recipient_allowed(&c.allowed_recipients, to) {
        return Err(CallError::new(ErrorCode::RecipientNotAllowed).detail("the address is not on the handle's allow-list"));
    }
    let internal = |what: &str| CallError::new(ErrorCode::Internal).detail(what.to_owned());
    let from: Mailbox = c.from.parse().map_err(|_| internal("the handle's from address does not parse"))?;
    let to: Mailbox = to.parse().map_err(|_| internal("the address does not parse"))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(plain_body(body))
        .map_err(|_| internal("the message could not be built"))?;
    send(c, secret, message).await.map_err(|f| f.into_error(reply_only)).map(|_| ())
}

/// A body whose lines stay whole on the wire when they can: ASCII text with lines of at most
/// 998 characters goes as 7bit (a link is not cut by quoted-printable soft breaks); anything
/// else is encoded as lettre chooses.
fn plain_body(text: &str) -> Body {
    let text = text.replace('\r', "");
    if text.bytes().all(|b| b.is_ascii() && b != 0) && text.lines().all(|l| l.len() <= 998) {
        Body::dangerous_pre_encoded(text.replace('\n', "\r\n").into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text)
    }
}

/// A send failure as the operator may read it: what failed and the server's reply code, never
/// the text of a reply (a server may quote the message back).
fn reply_only(e: &lettre::transport::smtp::Error) -> String {
    if let Some(code) = e.status() {
        let kind = if e.is_permanent() { "permanent" } else { "transient" };
        format!("smtp: {kind} error ({code})")
    } else if e.is_response() {
        "smtp: the server's reply does not parse".to_owned()
    } else if e.is_client() {
        "smtp: client error".to_owned()
    } else {
        // Connection, network and TLS errors carry only their I/O or TLS cause.
        format!("smtp: {e}")
    }
}

/// Why a send failed, before the caller decides how much of it to tell.
enum Failure {
    /// Mapped already (no UTF-8 password, no transport, the whole-send timeout).
    Call(CallError),
    /// The SMTP exchange failed.
    Smtp(lettre::transport::smtp::Error),
}

impl Failure {
    fn into_error(self, describe: impl Fn(&lettre::transport::smtp::Error) -> String) -> CallError {
        match self {
            Failure::Call(e) => e,
            Failure::Smtp(e) if e.is_timeout() => CallError::new(ErrorCode::UpstreamTimeout).detail("smtp timed out"),
            Failure::Smtp(e) => CallError::new(ErrorCode::UpstreamUnavailable).detail(describe(&e)),
        }
    }
}

/// Opens a connection to the handle's server (STARTTLS or TLS; plain only for the loopback host
/// the configuration admits), signs in with the secret as the AUTH password, sends `message`
/// and closes, all within the handle's timeout.
async fn send(c: &SmtpConstraints, secret: &Secret, message: Message) -> Result<Response, Failure> {
    let password = secret.expose_str().ok_or_else(|| {
        Failure::Call(CallError::with_message(ErrorCode::SecretUnavailable, "the credential behind this handle is not a UTF-8 password"))
    })?;
    let creds = Credentials::new(c.username.clone(), password.to_owned());
    let timeout = Duration::from_millis(c.timeout_ms);
    let builder = match c.tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host),
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host),
        // Config validation admits this only for a loopback host.
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)),
    }
    .map_err(|e| Failure::Call(CallError::new(ErrorCode::UpstreamUnavailable).detail(format!("smtp transport: {e}"))))?;
    let transport = builder
        .port(c.port)
        .credentials(creds)
        .authentication(vec![Mechanism::Plain, Mechanism::Login])
        .timeout(Some(timeout))
        .build();
    match tokio::time::timeout(timeout, transport.send(message)).await {
        Err(_) => Err(Failure::Call(CallError::new(ErrorCode::UpstreamTimeout).detail("smtp send timed out"))),
        Ok(Err(e)) => Err(Failure::Smtp(e)),
        Ok(Ok(resp)) => Ok(resp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t10_the_allow_list_is_cores_matcher() {
        // The matcher itself is tested in airlock-core (config/smtp.rs).
        let allowed = vec!["ops@example.com".to_owned(), "@team.example".to_owned()];
        assert!(recipient_allowed(&allowed, "OPS@Example.com") && !recipient_allowed(&allowed, "x@sub.team.example"));
    }

    #[test]
    fn a_plain_body_keeps_a_long_link_on_one_line() {
        let link = format!("https://airlock.example/s/{}#{}", "i".repeat(22), "k".repeat(43));
        let b = plain_body(&format!("A link for you:\n\n{link}\n\nIt expires soon.\n"));
        assert_eq!(b.encoding(), ContentTransferEncoding::SevenBit);
        let wire = String::from_utf8(b.into_vec()).unwrap();
        assert!(wire.contains(&format!("\r\n{link}\r\n")), "{wire}");
        assert_ne!(plain_body("caf\u{e9}").encoding(), ContentTransferEncoding::SevenBit);
    }

    #[tokio::test]
    async fn send_plain_refuses_an_address_the_handle_does_not_allow_and_a_split_subject() {
        let cfg = airlock_core::config::Config::parse(
            "[handles.M]\nkind = \"smtp\"\nsecret = \"env:X\"\n[handles.M.smtp]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n\
             username = \"u\"\nfrom = \"me@localhost\"\nallowed_recipients = [\"you@localhost\"]\ntimeout_ms = 3000\n",
            "t.toml",
            std::path::Path::new("."),
        )
        .unwrap();
        let h = cfg.handles.values().next().unwrap();
        let s = Secret::from_str_value("pw");
        let e = send_plain(h, &s, "eve@localhost", "hi", "body").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::RecipientNotAllowed);
        let e = send_plain(h, &s, "you@localhost", "hi\r\nBcc: eve@localhost", "body").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::HeaderInjection);
        // Nothing listens on port 9: the error names the connection, never the body.
        let e = send_plain(h, &s, "you@localhost", "hi", "the link https://x/s/ID#KEYKEY").await.unwrap_err();
        assert!(matches!(e.code, ErrorCode::UpstreamUnavailable | ErrorCode::UpstreamTimeout), "{e:?}");
        assert!(!format!("{e:?}").contains("KEYKEY"), "{e:?}");
    }
}
