//! `[shares]`: one-time links, their limits, and the channels that deliver them.

use super::problem::ProblemCode;
use super::smtp::plausible_address;
use super::source::{FieldPath, Report};
use crate::handle::HandleName;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `[shares]`: one-time links.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharesConfig {
    /// Largest secret a share may hold, in bytes of plaintext (default 1 MiB).
    #[serde(default = "default_max_share_bytes")]
    pub max_plaintext_bytes: usize,
    /// Most views a share may allow.
    #[serde(default = "default_max_views")]
    pub max_views: u32,
    /// Longest expiry, in seconds (default 7 days).
    #[serde(default = "default_max_expiry")]
    pub max_expiry_seconds: u64,
    /// Shares created per minute per client address (token bucket).
    #[serde(default = "default_share_create_rate")]
    pub create_per_minute: u32,
    /// Failed consumes (wrong proof, unknown, used or expired id) per minute per client address.
    #[serde(default = "default_share_fail_rate")]
    pub failed_consumes_per_minute: u32,
    /// Failed consumes of one share id per minute from all addresses together (T29). A correct
    /// proof is never refused by either limit: it is the key's holder.
    #[serde(default = "default_share_fail_rate_per_share")]
    pub failed_consumes_per_share_per_minute: u32,
    /// Shares created without an agent token kept at once; at the cap the oldest are burned
    /// unread to make room (T29).
    #[serde(default = "default_max_anonymous_shares")]
    pub max_anonymous_shares: u64,
    /// Entries each in-memory map keyed by client input (addresses, share ids) may hold; at the
    /// cap the least recently used are evicted (T29).
    #[serde(default = "default_max_tracked_clients")]
    pub max_tracked_clients: usize,
    /// The public base of links the broker makes for `share_secret`, for example
    /// `https://airlock.example`; default `http://{server.listen}`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Delivery channels by name.
    #[serde(default)]
    pub channels: BTreeMap<String, ShareChannelConfig>,
    /// Recipients an agent may name in `share_secret`, each with the channel that reaches it.
    /// Exact match; anyone else is refused.
    #[serde(default)]
    pub recipients: BTreeMap<String, String>,
}

impl Default for SharesConfig {
    fn default() -> Self {
        SharesConfig {
            max_plaintext_bytes: default_max_share_bytes(),
            max_views: default_max_views(),
            max_expiry_seconds: default_max_expiry(),
            create_per_minute: default_share_create_rate(),
            failed_consumes_per_minute: default_share_fail_rate(),
            failed_consumes_per_share_per_minute: default_share_fail_rate_per_share(),
            max_anonymous_shares: default_max_anonymous_shares(),
            max_tracked_clients: default_max_tracked_clients(),
            base_url: None,
            channels: BTreeMap::new(),
            recipients: BTreeMap::new(),
        }
    }
}

/// How a link made for a person (`share_secret`, the code of `connect_account`) reaches its
/// recipient. Every kind gets the same message: webhooks and outboxes as JSON, e-mail as a
/// subject and a plain-text body.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShareChannelConfig {
    /// POST `{purpose, recipient, link, ...}` as JSON to this URL (`purpose`: `share`,
    /// `connect` or `request`).
    Webhook {
        /// The endpoint (http or https).
        url: String,
    },
    /// Append the same JSON as one line to this file (created with mode 0600). Relative to the
    /// configuration.
    Outbox {
        /// The file.
        path: PathBuf,
    },
    /// Send the link by e-mail to one address, through an smtp handle of `[handles]`: the broker
    /// signs in with the handle's secret and sends from its `from`. The handle's
    /// `allowed_recipients` must allow `to` (checked at load).
    Smtp {
        /// The smtp handle.
        handle: HandleName,
        /// The one address this channel reaches.
        to: String,
    },
    /// The person at the asking agent's MCP client: the link of a `request_secret` goes to the
    /// client as a URL-mode elicitation (`elicitation/create`, `mode: "url"`), never into the
    /// tool's result. Only for requests, and only to a client that declared URL-mode
    /// elicitation; anything else through it is refused.
    Elicitation {},
}

impl SharesConfig {
    /// Checks limits, URLs and recipients, and makes outbox paths absolute.
    pub(super) fn checked(mut self, r: &mut Report<'_, '_>, at: &FieldPath, base: &Path) -> SharesConfig {
        if self.max_plaintext_bytes == 0 || self.max_plaintext_bytes > 64 << 20 {
            r.problem(&at.join("max_plaintext_bytes"), ProblemCode::OutOfRange, "must be between 1 and 67108864");
        }
        let at_least = [
            ("max_views", u64::from(self.max_views), 1),
            ("max_expiry_seconds", self.max_expiry_seconds, 60),
            ("create_per_minute", u64::from(self.create_per_minute), 1),
            ("failed_consumes_per_minute", u64::from(self.failed_consumes_per_minute), 1),
            ("failed_consumes_per_share_per_minute", u64::from(self.failed_consumes_per_share_per_minute), 1),
            ("max_anonymous_shares", self.max_anonymous_shares, 1),
            ("max_tracked_clients", self.max_tracked_clients as u64, 16),
        ];
        for (field, value, min) in at_least {
            if value < min {
                r.problem(&at.join(field), ProblemCode::OutOfRange, format!("must be at least {min}"));
            }
        }
        if let Some(b) = &self.base_url {
            match url::Url::parse(b) {
                Err(e) => r.problem(&at.join("base_url"), ProblemCode::BadUrl, format!("not a URL: {e}")),
                Ok(u) if u.scheme() != "https" && u.scheme() != "http" || u.fragment().is_some() || u.query().is_some() => {
                    r.problem(&at.join("base_url"), ProblemCode::BadUrl, "an http(s) URL without query or fragment")
                }
                Ok(u) if u.scheme() == "http" && !loopback(&u) => r.problem(
                    &at.join("base_url"),
                    ProblemCode::InsecureLink,
                    "links for people (shares, approvals) need https unless the host is loopback (127.0.0.1, ::1, localhost)",
                ),
                Ok(_) => {}
            }
        }
        for (name, ch) in self.channels.iter_mut() {
            match ch {
                ShareChannelConfig::Webhook { url } => {
                    let field = at.key("channels").key(name).key("url");
                    match url::Url::parse(url) {
                        Err(e) => r.problem(&field, ProblemCode::BadUrl, format!("not a URL: {e}")),
                        Ok(u) if u.scheme() != "https" && u.scheme() != "http" => {
                            r.problem(&field, ProblemCode::BadUrl, "scheme must be https or http")
                        }
                        Ok(_) => {}
                    }
                }
                ShareChannelConfig::Outbox { path } => *path = base.join(&*path),
                // The handle is checked once handles are read (`check_channel_handles`).
                ShareChannelConfig::Smtp { to, .. } => {
                    if !plausible_address(to) {
                        let field = at.key("channels").key(name).key("to");
                        r.problem(&field, ProblemCode::BadAddress, format!("'{}' is not a bare e-mail address", to.escape_debug()));
                    }
                }
                ShareChannelConfig::Elicitation {} => {}
            }
        }
        for (recipient, ch) in &self.recipients {
            let field = at.key("recipients").key(recipient);
            if recipient.is_empty() || recipient.len() > 254 || recipient.chars().any(|c| c.is_control()) {
                r.problem(&field, ProblemCode::BadValue, "a recipient is 1 to 254 printable characters");
            }
            if !self.channels.contains_key(ch) {
                r.problem(&field, ProblemCode::UnknownChannel, format!("unknown channel {ch}"));
            }
        }
        self
    }
}

/// True when `u`'s host is a loopback address or `localhost`.
pub(super) fn loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The default base of links when `[shares] base_url` is not set is `http://{server.listen}`:
/// refused (startup fails) unless `listen` is a loopback address (T17, T29).
pub(super) fn check_default_base(shares: &SharesConfig, listen: std::net::SocketAddr, r: &mut Report<'_, '_>, at: &FieldPath) {
    if shares.base_url.is_none() && !listen.ip().is_loopback() {
        r.problem(
            &at.join("base_url"),
            ProblemCode::InsecureLink,
            format!("server.listen {listen} is not loopback, so links for people need an https base_url"),
        );
    }
}

fn default_max_share_bytes() -> usize {
    1 << 20
}
fn default_max_views() -> u32 {
    100
}
fn default_max_expiry() -> u64 {
    7 * 86_400
}
fn default_share_create_rate() -> u32 {
    60
}
fn default_share_fail_rate() -> u32 {
    30
}
fn default_share_fail_rate_per_share() -> u32 {
    300
}
fn default_max_anonymous_shares() -> u64 {
    100_000
}
fn default_max_tracked_clients() -> usize {
    100_000
}
