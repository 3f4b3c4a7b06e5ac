//! `[handles.X.smtp]`: the server, sender and recipients of an smtp handle.

use super::defaults;
use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;

/// How an SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required; port 587 by default).
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No TLS at all. Accepted only for a loopback host (tests, a local relay): the password
    /// would otherwise cross the network in clear.
    None,
}

/// Constraints of an `smtp` handle. None of them comes from the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpConstraints {
    /// The server's host name (also the TLS server name).
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// The AUTH user name; the secret is the password.
    pub username: String,
    /// The sender address (`From` and the envelope sender); never chosen by the agent.
    pub from: String,
    /// Allowed recipients: exact addresses (compared case-insensitively) or `@domain` (that
    /// domain exactly, not its subdomains).
    pub allowed_recipients: Vec<String>,
    /// Sends per minute through this handle, all agents together.
    pub sends_per_minute: u32,
    /// Whole-send timeout.
    pub timeout_ms: u64,
    /// Largest subject plus body the agent may send.
    pub max_body_bytes: usize,
}

/// `[handles.X.smtp]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default = "default_smtp_tls")]
    tls: SmtpTls,
    username: String,
    from: String,
    allowed_recipients: Vec<String>,
    #[serde(default = "defaults::sends_per_minute")]
    sends_per_minute: u32,
    #[serde(default = "defaults::http_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "defaults::max_bytes")]
    max_body_bytes: usize,
}

/// True for an e-mail address `local@domain` with no spaces, angle brackets, CR or LF (a bare
/// address; display names are not accepted anywhere).
pub fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && a.len() <= 254
        && (domain.contains('.') || domain == "localhost")
        && a.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'"' | b'(' | b')' | b';' | b'\\'))
}

/// True when `addr` is allowed by `allowed` (an smtp handle's `allowed_recipients`, as loaded:
/// exact addresses in lowercase, or `@domain`, that domain exactly and not its subdomains). The
/// one matcher for `send_email` and for `[shares.channels.NAME]` of type smtp.
pub fn recipient_allowed(allowed: &[String], addr: &str) -> bool {
    let addr = addr.to_ascii_lowercase();
    let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    allowed.iter().any(|a| match a.strip_prefix('@') {
        Some(d) => d == domain,
        None => *a == addr,
    })
}

impl RawSmtp {
    /// Checks the host, TLS, sender, recipients and limits; fills in the port.
    pub(super) fn check(self, r: &mut Report<'_, '_>, at: &FieldPath) -> Option<SmtpConstraints> {
        let before = r.count();
        let host = self.host.trim().to_ascii_lowercase();
        if host.is_empty() || host.bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')) {
            r.problem(&at.join("host"), ProblemCode::BadHost, "not a host name or IP address");
        }
        if self.tls == SmtpTls::None && !matches!(host.as_str(), "127.0.0.1" | "::1" | "localhost") {
            r.problem(
                &at.join("tls"),
                ProblemCode::InsecureTransport,
                "tls = \"none\" is accepted only for a loopback host (127.0.0.1, ::1, localhost)",
            );
        }
        let port = self.port.unwrap_or(match self.tls {
            SmtpTls::Tls => 465,
            SmtpTls::Starttls => 587,
            SmtpTls::None => 25,
        });
        if self.username.is_empty() || self.username.bytes().any(|b| b == b'\r' || b == b'\n') {
            r.problem(&at.join("username"), ProblemCode::BadValue, "must be non-empty, without CR or LF");
        }
        if !plausible_address(&self.from) {
            r.problem(&at.join("from"), ProblemCode::BadAddress, format!("'{}' is not a bare e-mail address", self.from.escape_debug()));
        }
        if self.allowed_recipients.is_empty() {
            r.problem(&at.join("allowed_recipients"), ProblemCode::EmptyList, "list at least one address or @domain");
        }
        let mut allowed = Vec::new();
        for a in &self.allowed_recipients {
            let a = a.to_ascii_lowercase();
            let ok = match a.strip_prefix('@') {
                Some(d) => plausible_address(&format!("x@{d}")),
                None => plausible_address(&a),
            };
            if !ok {
                r.problem(
                    &at.join("allowed_recipients"),
                    ProblemCode::BadAddress,
                    format!("'{}' is not an address or @domain", a.escape_debug()),
                );
            }
            allowed.push(a);
        }
        for (field, value) in [
            ("sends_per_minute", u64::from(self.sends_per_minute)),
            ("timeout_ms", self.timeout_ms),
            ("max_body_bytes", self.max_body_bytes as u64),
        ] {
            if value == 0 {
                r.problem(&at.join(field), ProblemCode::OutOfRange, "must be at least 1");
            }
        }
        (r.count() == before).then_some(SmtpConstraints {
            host,
            port,
            tls: self.tls,
            username: self.username,
            from: self.from,
            allowed_recipients: allowed,
            sends_per_minute: self.sends_per_minute,
            timeout_ms: self.timeout_ms,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

fn default_smtp_tls() -> SmtpTls {
    SmtpTls::Starttls
}

#[cfg(test)]
mod tests {
    use super::recipient_allowed;

    #[test]
    fn t10_allow_list_matches_exact_addresses_and_whole_domains() {
        let allowed = vec!["ops@example.com".to_owned(), "@team.example".to_owned()];
        assert!(recipient_allowed(&allowed, "ops@example.com"));
        assert!(recipient_allowed(&allowed, "OPS@Example.com"));
        assert!(recipient_allowed(&allowed, "anyone@team.example"));
        assert!(!recipient_allowed(&allowed, "dev@example.com"));
        assert!(!recipient_allowed(&allowed, "x@sub.team.example"));
        assert!(!recipient_allowed(&allowed, "x@team.example.evil"));
        assert!(!recipient_allowed(&allowed, "team.example"));
    }
}
