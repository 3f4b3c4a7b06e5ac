//! Delivering a link made for a person: the one way every feature that makes one (a one-time
//! share from `share_secret`, the owner's code of `connect_account`, an intake link of
//! `request_secret`) reaches its recipient.
//!
//! The recipient is a `[shares.recipients]` entry; its channel (`[shares.channels.NAME]`) is a
//! webhook (POST the JSON), an outbox (append the JSON as one line to a 0600 file) or an smtp
//! handle (an e-mail to the channel's one address, sent with the handle's secret through
//! `airlock_exec_email`). A [`Delivery`] carries both forms of the message: the JSON, to which
//! `"purpose"` is added, and the e-mail's subject and plain-text body.
//!
//! The link is a secret: it is never logged, and no error returned from here carries it (a
//! webhook's error is stripped of its URL, an outbox's names the file, an e-mail's names what
//! failed and the server's reply code only).

use super::Broker;
use airlock_core::config::{ShareChannelConfig, SharesConfig};
use airlock_core::HandleName;
use serde_json::Value;
use std::path::Path;

/// What a link is for: the `"purpose"` of the JSON a webhook or outbox receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A one-time share of a handle's secret (`share_secret`).
    Share,
    /// The owner's code and link to connect an account (`connect_account`).
    Connect,
    /// An intake link for a person to send a secret in (`request_secret`).
    Request,
}

impl Purpose {
    /// The wire name: `share`, `connect` or `request`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Purpose::Share => "share",
            Purpose::Connect => "connect",
            Purpose::Request => "request",
        }
    }
}

/// One message for a person, in the forms channels take. It holds the link: it has no `Debug`
/// that shows it, and nothing here logs it.
pub(crate) struct Delivery<'a> {
    /// What the link is for; added to the JSON as `"purpose"`.
    pub(crate) purpose: Purpose,
    /// The JSON object a webhook or an outbox receives (the link included), without `"purpose"`.
    pub(crate) json: &'a Value,
    /// The e-mail's subject: one line, never the link.
    pub(crate) subject: &'a str,
    /// The e-mail's plain-text body: the link on its own line, who asked, the expiry
    /// ([`mail_body`] lays it out).
    pub(crate) body: &'a str,
}

impl std::fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("purpose", &self.purpose).field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// An e-mail body for a link: `intro`, a blank line, the link alone on its line, a blank line,
/// then `after` (who asked, the expiry, what to do), each part ending with a newline.
pub(crate) fn mail_body(intro: &str, link: &str, after: &str) -> String {
    format!("{}\n\n{link}\n\n{}\n", intro.trim_end(), after.trim_end())
}

/// The channel that reaches `recipient`, if it is a `[shares.recipients]` entry.
pub(crate) fn channel_of<'c>(shares: &'c SharesConfig, recipient: &str) -> Option<&'c ShareChannelConfig> {
    shares.recipients.get(recipient).and_then(|name| shares.channels.get(name))
}

impl Broker {
    /// Delivers `message` to `recipient` through its channel. The one entry point for every link
    /// made for a person. An error says what failed, for the operator's log (it never holds the
    /// link); the caller decides what the link's failure means (a share is withdrawn, a connect
    /// link fails).
    pub(crate) async fn deliver(&self, recipient: &str, message: &Delivery<'_>) -> Result<(), String> {
        let cfg = self.config();
        let channel = channel_of(&cfg.shares, recipient).ok_or_else(|| format!("no channel reaches recipient {recipient}"))?;
        match channel {
            ShareChannelConfig::Webhook { url } => post_json(url, &with_purpose(message)?).await,
            ShareChannelConfig::Outbox { path } => append_json(path, &with_purpose(message)?).await,
            ShareChannelConfig::Smtp { handle, to } => self.send_mail(handle, to, message).await,
            // The front end hands such a link to the client itself (`Invocation::elicit`).
            ShareChannelConfig::Elicitation {} => Err(format!("recipient {recipient} is reached only by URL-mode elicitation of a request")),
        }
    }

    /// An e-mail through smtp handle `name`: its secret from the vault, its server, its sender;
    /// counted against the handle's `sends_per_minute` like any send through it.
    async fn send_mail(&self, name: &HandleName, to: &str, message: &Delivery<'_>) -> Result<(), String> {
        let cfg = self.config();
        let handle = cfg.handles.get(name).filter(|h| h.smtp().is_some()).ok_or_else(|| format!("smtp handle {name} is not defined"))?;
        let smtp = handle.smtp().ok_or_else(|| format!("smtp handle {name} is not defined"))?;
        if !self.limits.sends.check(&format!("handle:{name}"), smtp.sends_per_minute) {
            return Err(format!("smtp handle {name}: sends_per_minute is spent"));
        }
        let secret = self.resolve(handle).await.map_err(|e| format!("smtp handle {name}: {}", e.detail.as_deref().unwrap_or(e.code.as_str())))?;
        airlock_exec_email::send_plain(handle, &secret, to, message.subject, message.body)
            .await
            .map_err(|e| format!("smtp handle {name}: {}: {}", e.code.as_str(), e.detail.as_deref().unwrap_or("")))
    }
}

/// The message's JSON with `"purpose"`.
fn with_purpose(message: &Delivery<'_>) -> Result<Value, String> {
    let mut v = message.json.clone();
    let obj = v.as_object_mut().ok_or("the message's JSON is not an object")?;
    obj.insert("purpose".into(), Value::from(message.purpose.as_str()));
    Ok(v)
}

/// POSTs `payload` to `url`: no redirects, 10 seconds, a 2xx answer or an error without the URL.
async fn post_json(url: &str, payload: &Value) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let r = client.post(url).json(payload).send().await.map_err(|e| format!("webhook: {}", e.without_url()))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered {}", r.status()))
    }
}

/// Appends `payload` as one JSON line to `path` (created 0600) and syncs it.
async fn append_json(path: &Path, payload: &Value) -> Result<(), String> {
    use std::io::Write;
    let mut line = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut o = std::fs::OpenOptions::new();
        o.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&path).map_err(|e| format!("outbox {}: {e}", path.display()))?;
        f.write_all(&line).and_then(|_| f.sync_data()).map_err(|e| format!("outbox {}: {e}", path.display()))
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_json_gets_its_purpose_and_the_mail_the_link_on_its_own_line() {
        let json = json!({"recipient": "a@example.com", "link": "https://x/s/ID#KEY"});
        let body = mail_body("bot shared a secret with you.", "https://x/s/ID#KEY", "It expires at 2030-01-01T00:00:00Z.");
        let d = Delivery { purpose: Purpose::Share, json: &json, subject: "A one-time link", body: &body };
        let v = with_purpose(&d).unwrap();
        assert_eq!(v["purpose"], "share");
        assert_eq!(v["link"], "https://x/s/ID#KEY");
        assert!(body.lines().any(|l| l == "https://x/s/ID#KEY"), "{body}");
        assert!(!format!("{d:?}").contains("KEY"), "no Debug shows the link");
        let not_object = json!("x");
        assert!(with_purpose(&Delivery { json: &not_object, ..d }).is_err());
        assert_eq!([Purpose::Share, Purpose::Connect, Purpose::Request].map(Purpose::as_str), ["share", "connect", "request"]);
    }
}
