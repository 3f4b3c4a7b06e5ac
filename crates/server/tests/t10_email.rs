//! send_email through the whole broker against a real SMTP server (PyPI `aiosmtpd`, with AUTH) on
//! 127.0.0.1 (T10). The server records every AUTH attempt and every message that arrives.
//! Skips (printing why) when aiosmtpd is not installed, unless AIRLOCK_REQUIRE_SERVICES=1.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SMTP_USER: &str = "mailer@example.test";
const SMTP_PASSWORD: &str = "canarySmtp_Pw4Lk8Rt2Zq6Nd0";
const FROM: &str = "airlock-bot@example.test";

struct SmtpServer {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    /// Starts aiosmtpd, or returns None (skip) when it is not installed and services are not
    /// required.
    fn start(dir: &Path) -> Option<SmtpServer> {
        let have = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !have {
            if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("python3 with aiosmtpd is required (AIRLOCK_REQUIRE_SERVICES=1): pip install aiosmtpd==1.4.6");
            }
            println!("skipped: python package aiosmtpd not installed (pip install aiosmtpd==1.4.6)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = dir.join("smtp.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&out)
            .env("SMTP_TEST_USER", SMTP_USER)
            .env("SMTP_TEST_PASSWORD", SMTP_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "READY", "aiosmtpd did not start");
        Some(SmtpServer { child, port, out })
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn messages(&self) -> Vec<Value> {
        self.events().into_iter().filter_map(|e| e.get("message").cloned()).collect()
    }
}

fn with_smtp(t: String, port: u16, sends_per_minute: u32) -> String {
    let t = t.replace(
        "  { handle = \"API\", tools = [\"http_request\"] },\n]",
        "  { handle = \"API\", tools = [\"http_request\"] },\n  { handle = \"MAIL\", tools = [\"send_email\"] },\n]",
    );
    format!(
        "{t}\n[handles.MAIL]\nkind = \"smtp\"\nsecret = \"env:AIRLOCK_TEST_SMTP_PASSWORD\"\ndescription = \"ops mail\"\n\
         [handles.MAIL.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nusername = \"{SMTP_USER}\"\n\
         from = \"{FROM}\"\nallowed_recipients = [\"ops@example.test\", \"@team.example.test\"]\n\
         sends_per_minute = {sends_per_minute}\ntimeout_ms = 5000\n"
    )
}

async fn setup(sends_per_minute: u32) -> Option<(Fixture, SmtpServer, tempfile::TempDir)> {
    std::env::set_var("AIRLOCK_TEST_SMTP_PASSWORD", SMTP_PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path())?;
    let port = smtp.port;
    let f = Fixture::start_with(move |t| with_smtp(t, port, sends_per_minute)).await;
    Some((f, smtp, dir))
}

#[tokio::test]
async fn t10_mail_reaches_allowed_recipients_and_the_password_is_used_only_for_auth() {
    let Some((f, smtp, _d)) = setup(10).await else { return };
    let (s, v) = f
        .invoke(
            "send_email",
            json!({"credential_handle": "MAIL", "to": ["ops@example.test"], "cc": "lead@team.example.test",
                   "subject": "Nightly report", "body": "All green.\n.\nA line with a lone dot above.", "reply_to": "ops@example.test"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["accepted"], json!(["ops@example.test", "lead@team.example.test"]));

    let events = smtp.events();
    let auths: Vec<&Value> = events.iter().filter_map(|e| e.get("auth")).collect();
    assert_eq!(auths.len(), 1, "{events:?}");
    assert_eq!(auths[0]["login"], SMTP_USER);
    assert_eq!(auths[0]["ok"], true);
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m["authenticated"], true);
    assert_eq!(m["mail_from"], FROM);
    assert_eq!(m["rcpt_tos"], json!(["ops@example.test", "lead@team.example.test"]));
    let data = m["data"].as_str().unwrap();
    assert!(data.contains("Subject: Nightly report"), "{data}");
    assert!(data.contains(&format!("From: {FROM}")), "{data}");
    assert!(data.contains("Reply-To: ops@example.test"), "{data}");
    assert!(data.contains("All green."), "{data}");
    assert!(data.contains("A line with a lone dot above."), "{data}");
    // The password went over AUTH only: not in the message, the envelope or the agent's answer.
    let everything = format!("{m} {v}");
    assert!(!everything.contains(SMTP_PASSWORD));
    assert!(!everything.contains(&b64(SMTP_PASSWORD)));

    // The audit keeps recipients and sizes, not the text.
    let tail = f.store.audit_tail(1).await.unwrap();
    let rec = serde_json::to_string(&tail[0].1).unwrap();
    assert!(rec.contains("ops@example.test") && rec.contains("body_bytes"), "{rec}");
    assert!(!rec.contains("All green") && !rec.contains("Nightly report"), "{rec}");
    f.stop().await;
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn t10_recipients_outside_the_list_are_refused_and_nothing_is_sent() {
    let Some((f, smtp, _d)) = setup(10).await else { return };
    for to in [
        json!("evil@attacker.test"),
        json!(["ops@example.test", "evil@attacker.test"]),
        json!("x@sub.team.example.test"),
        json!("ops@example.test.attacker.test"),
    ] {
        let (s, v) = f.invoke("send_email", json!({"credential_handle": "MAIL", "to": to, "subject": "s", "body": "b"})).await;
        assert_eq!((s, code(&v)), (403, "recipient-not-allowed"), "{to} {v}");
    }
    let (s, v) = f
        .invoke("send_email", json!({"credential_handle": "MAIL", "to": "ops@example.test", "cc": ["evil@attacker.test"], "subject": "s", "body": "b"}))
        .await;
    assert_eq!((s, code(&v)), (403, "recipient-not-allowed"), "{v}");
    // Display names and address lists in one string are not addresses.
    let (s, v) = f
        .invoke("send_email", json!({"credential_handle": "MAIL", "to": "Ops <ops@example.test>, evil@attacker.test", "subject": "s", "body": "b"}))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid-arguments"), "{v}");
    assert!(smtp.events().is_empty(), "nothing may reach the server: {:?}", smtp.events());
    f.stop().await;
}

#[tokio::test]
async fn t10_a_reply_to_off_the_allow_list_is_refused_like_a_recipient_and_nothing_is_sent() {
    let Some((f, smtp, _d)) = setup(10).await else { return };
    for reply_to in ["evil@attacker.test", "x@sub.team.example.test", "ops@example.test.attacker.test", "OPS@example.test.evil"] {
        let (s, v) = f
            .invoke(
                "send_email",
                json!({"credential_handle": "MAIL", "to": "ops@example.test", "subject": "s", "body": "b", "reply_to": reply_to}),
            )
            .await;
        assert_eq!((s, code(&v)), (403, "recipient-not-allowed"), "{reply_to} {v}");
    }
    assert!(smtp.events().is_empty(), "nothing may reach the server: {:?}", smtp.events());
    // On the list (an exact address or a whole domain, any case): sent.
    let (s, v) = f
        .invoke(
            "send_email",
            json!({"credential_handle": "MAIL", "to": "ops@example.test", "subject": "s", "body": "b", "reply_to": "Lead@Team.Example.test"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(smtp.messages().len(), 1);
    f.stop().await;
}

#[tokio::test]
async fn t10_cr_or_lf_in_a_header_value_is_refused_not_stripped() {
    let Some((f, smtp, _d)) = setup(10).await else { return };
    let base = json!({"credential_handle": "MAIL", "to": "ops@example.test", "subject": "s", "body": "b"});
    for (field, value) in [
        ("subject", json!("hello\r\nBcc: evil@attacker.test")),
        ("subject", json!("hello\nBcc: evil@attacker.test")),
        ("subject", json!("hello\rX-Injected: 1")),
        ("to", json!("ops@example.test\r\nBcc: evil@attacker.test")),
        ("to", json!(["ops@example.test", "ops@example.test\nBcc: evil@attacker.test"])),
        ("cc", json!("lead@team.example.test\n")),
        ("reply_to", json!("ops@example.test\r\nBcc: evil@attacker.test")),
    ] {
        let mut a = base.clone();
        a[field] = value.clone();
        let (s, v) = f.invoke("send_email", a).await;
        assert_eq!((s, code(&v)), (400, "header-injection"), "{field}={value} {v}");
    }
    // A multi-line body is fine: it is not a header.
    let mut a = base.clone();
    a["body"] = json!("line 1\r\nBcc: not-a-header@attacker.test\nline 3");
    let (s, v) = f.invoke("send_email", a).await;
    assert_eq!(s, 200, "{v}");
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["rcpt_tos"], json!(["ops@example.test"]));
    f.stop().await;
}

#[tokio::test]
async fn t10_a_secret_or_an_encoding_of_one_blocks_the_send() {
    let Some((f, smtp, _d)) = setup(10).await else { return };
    let hex_token = API_TOKEN.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for (field, text) in [
        ("body", format!("here it is: {API_TOKEN}")),
        ("body", format!("base64: {}", b64(API_TOKEN))),
        ("body", format!("hex: {hex_token}")),
        ("body", format!("the mail password {SMTP_PASSWORD}")),
        ("subject", format!("key {API_TOKEN}")),
        ("body", API_TOKEN.chars().map(|c| format!("{c} ")).collect::<String>()),
    ] {
        let a = json!({"credential_handle": "MAIL", "to": "ops@example.test", "subject": if field == "subject" { text.clone() } else { "s".into() },
                       "body": if field == "body" { text.clone() } else { "b".into() }});
        let (s, v) = f.invoke("send_email", a).await;
        assert_eq!((s, code(&v)), (403, "outbound-contains-secret"), "{field}: {v}");
        assert!(!v.to_string().contains(API_TOKEN) && !v.to_string().contains(SMTP_PASSWORD));
    }
    assert!(smtp.events().is_empty(), "nothing may reach the server: {:?}", smtp.events());
    // The audit does not keep the text either.
    for (_, r) in f.store.audit_tail(20).await.unwrap() {
        let r = serde_json::to_string(&r).unwrap();
        assert!(!r.contains(API_TOKEN) && !r.contains(SMTP_PASSWORD) && !r.contains(&b64(API_TOKEN)), "{r}");
    }
    f.stop().await;
}

#[tokio::test]
async fn t10_sends_are_rate_limited_per_handle() {
    let Some((f, smtp, _d)) = setup(2).await else { return };
    let a = json!({"credential_handle": "MAIL", "to": "ops@example.test", "subject": "s", "body": "b"});
    for _ in 0..2 {
        let (s, v) = f.invoke("send_email", a.clone()).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = f.invoke("send_email", a.clone()).await;
    assert_eq!((s, code(&v)), (429, "rate-limited"), "{v}");
    let (s, v) = f.invoke_as(&f.other_token, "send_email", a).await;
    assert_eq!((s, code(&v)), (403, "handle-unavailable"), "{v}");
    assert_eq!(smtp.messages().len(), 2);
    f.stop().await;
}

#[tokio::test]
async fn t10_unreachable_server_is_a_fixed_error() {
    std::env::set_var("AIRLOCK_TEST_SMTP_PASSWORD", SMTP_PASSWORD);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let f = Fixture::start_with(move |t| with_smtp(t, port, 10)).await;
    let (s, v) = f.invoke("send_email", json!({"credential_handle": "MAIL", "to": "ops@example.test", "subject": "s", "body": "b"})).await;
    assert_eq!((s, code(&v)), (502, "upstream-unavailable"), "{v}");
    assert!(!v.to_string().contains(SMTP_PASSWORD));
    f.stop().await;
}
