//! T17 over e-mail: a link made for a person (a `share_secret` link, a `connect_account` code)
//! delivered through a `[shares.channels.NAME]` of type smtp, against a real SMTP server (PyPI
//! `aiosmtpd`, with AUTH) on 127.0.0.1 that records every message it receives. The link reaches
//! the channel's one address and opens; the agent's answer, the audit and the logs never hold it;
//! a link that could not be sent is withdrawn. Skips (printing why) when aiosmtpd is not
//! installed, unless AIRLOCK_REQUIRE_SERVICES=1.

mod common;

use airlock_share::{derive, Link};
use common::{code, Fixture};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SMTP_USER: &str = "mailer@example.test";
const SMTP_PASSWORD: &str = "canarySmtp_Sh4reMail9Qx2";
const FROM: &str = "airlock@example.test";
const ALICE: &str = "alice@example.test";
/// The secret behind SECRET_ONLY (tests/common).
const SHARED: &str = "canaryGeneric_Zx81Lq0Pw";
const BASE: &str = "https://airlock.example";

/// aiosmtpd (tests/smtp/server.py) on 127.0.0.1:0, stopped when dropped.
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

    /// Stops the server: nothing listens on its port any more.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).unwrap().get("message").cloned())
            .collect()
    }
}

/// The fixture's configuration with an smtp handle MAILER on the test server, an smtp channel
/// to Alice and an outbox channel to Bob, `share_secret` on SECRET_ONLY, and an oauth handle
/// ACME whose owner is Alice.
fn with_mail_channel(port: u16) -> impl FnOnce(String) -> String {
    move |t: String| {
        let t = t.replace(
            "  { handle = \"API\", tools = [\"http_request\"] },\n]",
            "  { handle = \"API\", tools = [\"http_request\"] },\n  { handle = \"SECRET_ONLY\", tools = [\"share_secret\"] },\n  \
             { handle = \"ACME\", tools = [\"connect_account\", \"connect_status\"] },\n]",
        );
        format!(
            "{t}\n[handles.MAILER]\nkind = \"smtp\"\nsecret = \"env:AIRLOCK_TEST_SHARE_SMTP_PASSWORD\"\n\
             [handles.MAILER.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nusername = \"{SMTP_USER}\"\n\
             from = \"{FROM}\"\nallowed_recipients = [\"{ALICE}\"]\ntimeout_ms = 5000\n\
             [handles.ACME]\nkind = \"oauth\"\nsecret = \"local:ACME_CLIENT\"\n\
             [handles.ACME.oauth]\nauthorization_url = \"https://auth.example/authorize\"\ntoken_url = \"https://auth.example/token\"\n\
             client_id = \"airlock-test\"\nscopes = [\"api:read\"]\nowners = [\"alice\"]\n\
             [handles.ACME.http]\ndestinations = [{{ url = \"https://api.example/\" }}]\n\
             [shares]\ncreate_per_minute = 100000\nbase_url = \"{BASE}\"\n\
             [shares.channels.alice-mail]\ntype = \"smtp\"\nhandle = \"MAILER\"\nto = \"{ALICE}\"\n\
             [shares.channels.box]\ntype = \"outbox\"\npath = \"outbox.jsonl\"\n\
             [shares.recipients]\n\"alice\" = \"alice-mail\"\n\"bob\" = \"box\"\n"
        )
    }
}

async fn setup() -> Option<(Fixture, SmtpServer, tempfile::TempDir)> {
    common::capture_logs();
    std::env::set_var("AIRLOCK_TEST_SHARE_SMTP_PASSWORD", SMTP_PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path())?;
    let f = Fixture::start_with(with_mail_channel(smtp.port)).await;
    f.broker.vault().put("ACME_CLIENT", &airlock_core::Secret::from_str_value("canaryClient_Acme0Sm7")).await.unwrap();
    Some((f, smtp, dir))
}

/// The message's text with its header and body, and the one line of the body that starts with
/// `prefix`.
fn line_starting<'a>(data: &'a str, prefix: &str) -> &'a str {
    let lines: Vec<&str> = data.lines().map(|l| l.trim_end_matches('\r')).filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "one line starts with {prefix:?} in {data}");
    lines[0]
}

/// Every audit record, as JSON text.
async fn audit_text(f: &Fixture) -> String {
    let tail = f.store.audit_tail(100).await.unwrap();
    serde_json::to_string(&tail.iter().map(|(_, r)| serde_json::to_value(r).unwrap()).collect::<Vec<_>>()).unwrap()
}

#[tokio::test]
async fn t17_share_secret_by_email_reaches_the_one_address_and_the_link_opens() {
    let Some((f, smtp, _d)) = setup().await else { return };
    let (st, v) = f.invoke("share_secret", json!({"credential_handle": "SECRET_ONLY", "recipient": "alice", "expires_in": 600})).await;
    assert_eq!(st, 200, "{v}");
    let r = &v["result"];
    let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["expires_at", "recipient", "share_id"], "the agent gets only these");
    let id = r["share_id"].as_str().unwrap();

    // One message, to the channel's address, from the handle's sender, signed in.
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = &msgs[0];
    assert_eq!(m["rcpt_tos"], json!([ALICE]));
    assert_eq!(m["mail_from"], FROM);
    assert_eq!(m["authenticated"], true);
    let data = m["data"].as_str().unwrap();
    assert!(data.contains(&format!("To: {ALICE}")), "{data}");
    assert!(line_starting(data, "Subject: ").contains("bot shared a secret with you"), "{data}");
    assert!(data.contains("bot (an agent using airlock)"), "who asked: {data}");
    assert!(data.contains(r["expires_at"].as_str().unwrap()), "the expiry: {data}");
    assert!(!data.contains(SMTP_PASSWORD), "the password went over AUTH only");

    // The link, alone on its line, opens to the secret.
    let link_text = line_starting(data, &format!("{BASE}/s/")).to_owned();
    let link = Link::parse(&link_text).unwrap();
    assert_eq!(link.id, id);
    let key_part = link_text.split('#').nth(1).unwrap().to_owned();
    let d = derive(&link.key, &link.id, None);
    let c = f.client.post(format!("{}/v1/shares/{id}/consume", f.base)).json(&json!({"proof": d.proof().as_str()})).send().await.unwrap();
    assert_eq!(c.status(), 200);
    let c: Value = c.json().await.unwrap();
    let blob = airlock_share::decode_blob(c["ciphertext"].as_str().unwrap()).unwrap();
    let limits = airlock_share::Limits { expires_at: c["expires_at"].as_i64().unwrap(), views: 1, passphrase: false };
    #[allow(clippy::disallowed_methods, reason = "the test plays the person who opened the link")]
    let opened = airlock_share::open(&blob, &d, id, &limits).unwrap().expose_str().map(str::to_owned);
    assert_eq!(opened.as_deref(), Some(SHARED));

    // Neither the agent's answer, nor the audit, nor any log line holds the link or its key.
    let audit = audit_text(&f).await;
    assert!(audit.contains(id), "the audit names the share");
    for (what, text) in [("answer", v.to_string()), ("audit", audit), ("logs", common::captured_logs())] {
        assert!(!text.contains(&key_part) && !text.contains(&link_text), "the link is in the {what}");
        assert!(!text.contains(SMTP_PASSWORD), "the smtp password is in the {what}");
    }

    // A webhook or an outbox recipient gets the JSON it always got, with its purpose.
    let (st, v) = f.invoke("share_secret", json!({"credential_handle": "SECRET_ONLY", "recipient": "bob"})).await;
    assert_eq!(st, 200, "{v}");
    let line: Value = serde_json::from_str(std::fs::read_to_string(f.dir.path().join("outbox.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["purpose"], "share");
    assert_eq!((line["recipient"].as_str(), line["share_id"].as_str()), (Some("bob"), v["result"]["share_id"].as_str()));
    assert!(line["link"].as_str().unwrap().starts_with(&format!("{BASE}/s/")));
    assert_eq!(smtp.messages().len(), 1, "bob's link went to the outbox only");
    f.stop().await;
}

#[tokio::test]
async fn t17_a_link_that_could_not_be_sent_is_withdrawn_and_the_call_fails() {
    let Some((f, mut smtp, _d)) = setup().await else { return };
    smtp.stop();
    let (st, v) = f.invoke("share_secret", json!({"credential_handle": "SECRET_ONLY", "recipient": "alice"})).await;
    assert_eq!(code(&v), "upstream-unavailable", "{v}");
    assert_eq!(st, 502, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(!message.contains(BASE) && !message.contains('#'), "no link in the error: {message}");
    // The share was made, then withdrawn: its id is taken, nothing of it opens.
    let id = message.split("share ").nth(1).and_then(|s| s.split(' ').next()).expect("the error names the withdrawn share");
    assert!(airlock_share::valid_id(id), "{message}");
    assert_eq!(f.store.share_views_left(id).await.unwrap(), None, "the undelivered share is not redeemable");
    let any = derive(&airlock_share::LinkKey::generate().unwrap(), id, None);
    let c = f.client.post(format!("{}/v1/shares/{id}/consume", f.base)).json(&json!({"proof": any.proof().as_str()})).send().await.unwrap();
    assert_eq!(c.status(), 404);

    let tail = f.store.audit_tail(1).await.unwrap();
    let rec = serde_json::to_value(&tail[0].1).unwrap();
    assert_eq!(rec["code"], "upstream-unavailable", "{rec}");
    assert!(!rec.to_string().contains(BASE), "{rec}");
    assert!(!common::captured_logs().contains(&format!("{BASE}/s/{id}")), "no log line holds the link");
    f.stop().await;
}

#[tokio::test]
async fn t31_a_connect_code_by_email_reaches_the_owner_and_opens_the_link() {
    let Some((f, mut smtp, _d)) = setup().await else { return };
    let (st, v) = f.invoke("connect_account", json!({"credential_handle": "ACME", "owner": "alice"})).await;
    assert_eq!(st, 200, "{v}");
    let r = &v["result"];
    let id = r["connect_id"].as_str().unwrap();

    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["rcpt_tos"], json!([ALICE]));
    let data = msgs[0]["data"].as_str().unwrap();
    assert!(line_starting(data, "Subject: ").contains("ACME"), "{data}");
    assert_eq!(line_starting(data, &format!("{BASE}/connect/")), format!("{BASE}/connect/{id}"), "the link on its own line");
    let owner_code = line_starting(data, "Your code: ").trim_start_matches("Your code: ").to_owned();
    assert_eq!(owner_code.len(), 8, "{data}");
    assert!(!v.to_string().contains(&owner_code), "the agent never gets the code");

    // The code in the message is the one the link's page asks for.
    let ok = f.client.post(format!("{}/v1/connect/{id}/verify", f.base)).json(&json!({"code": owner_code})).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let ok: Value = ok.json().await.unwrap();
    assert!(ok["authorize_url"].as_str().unwrap().starts_with("https://auth.example/authorize?"), "{ok}");
    assert!(!audit_text(&f).await.contains(&owner_code), "no audit record holds the code");

    // When the mail cannot be sent, the connect link fails.
    smtp.stop();
    let (_, v) = f.invoke("connect_account", json!({"credential_handle": "ACME", "owner": "alice"})).await;
    assert_eq!(code(&v), "upstream-unavailable", "{v}");
    assert!(!common::captured_logs().contains(&owner_code), "no log line holds a code");
    f.stop().await;
}

/// The value a person sends in the request test: distinctive, so a sweep finds it anywhere.
const REQUESTED: &str = "canaryReqMail_Vq38Lz0Xw7Tn";

/// `bot` may ask Alice for a plain secret, and use what it was given with share_secret.
fn request_policy(dir: &Path) -> PathBuf {
    let path = dir.join("requests.cedar");
    std::fs::write(
        &path,
        "permit(principal == Airlock::Agent::\"bot\", action == Airlock::Action::\"request_secret\", resource)\n\
         when { resource.requested && resource.kind == \"generic\" };\n\
         permit(principal == Airlock::Agent::\"bot\", action == Airlock::Action::\"share_secret\", resource)\n\
         when { resource.requested };\n",
    )
    .unwrap();
    path
}

#[tokio::test]
async fn t22_a_request_link_by_email_reaches_the_person_and_the_value_lands() {
    common::capture_logs();
    std::env::set_var("AIRLOCK_TEST_SHARE_SMTP_PASSWORD", SMTP_PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = SmtpServer::start(dir.path()) else { return };
    let policy = request_policy(dir.path());
    let mail = with_mail_channel(smtp.port);
    let f = common::Fixture::start_with(move |t| format!("{}\n[policy]\nfiles = [\"{}\"]\n", mail(t), policy.display())).await;
    let (st, v) = f
        .invoke("request_secret", json!({"handle": "PARTNER_KEY", "description": "the partner portal's key", "kind": "secret", "recipient": "alice"}))
        .await;
    assert_eq!(st, 200, "{v}");
    let id = v["result"]["request_id"].as_str().unwrap().to_owned();

    // One message to Alice: who asks, for what, the link alone on its line.
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["rcpt_tos"], json!([ALICE]));
    assert_eq!(msgs[0]["authenticated"], true);
    let data = msgs[0]["data"].as_str().unwrap();
    assert!(line_starting(data, "Subject: ").contains("bot asks you for a secret: PARTNER_KEY"), "{data}");
    assert!(data.contains("the partner portal's key"), "what it is for: {data}");
    let link = line_starting(data, &format!("{BASE}/r/{id}#")).to_owned();
    let proof = link.split('#').nth(1).unwrap().to_owned();

    // The person opens it, sees the binding, and sends the value encrypted to the request.
    let opened: Value = f.client.post(format!("{}/v1/requests/{id}/open", f.base)).json(&json!({"proof": proof})).send().await.unwrap().json().await.unwrap();
    let context: Value = serde_json::from_str(opened["context"].as_str().unwrap()).unwrap();
    assert_eq!((context["handle"].as_str(), context["from_agent"].as_str()), (Some("PARTNER_KEY"), Some("bot")));
    let public = airlock_share::decode_b64(opened["public_key"].as_str().unwrap()).unwrap();
    let sealed = airlock_share::intake::seal(&public, REQUESTED.as_bytes(), opened["context"].as_str().unwrap().as_bytes(), context["max_value_bytes"].as_u64().unwrap() as usize).unwrap();
    let body = json!({"proof": proof, "enc": sealed.enc_b64(), "ciphertext": sealed.ciphertext_b64()});
    let r = f.client.post(format!("{}/v1/requests/{id}/submit", f.base)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["status"], "approved", "{r}");
    // The link burned: the same submit again is refused, and nothing more was mailed.
    let again = f.client.post(format!("{}/v1/requests/{id}/submit", f.base)).json(&body).send().await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(smtp.messages().len(), 1);

    // The agent uses the handle (a one-time link of it, to Bob's outbox) without reading it.
    let (st, v2) = f.invoke("share_secret", json!({"credential_handle": "PARTNER_KEY", "recipient": "bob"})).await;
    assert_eq!(st, 200, "{v2}");
    let (_, status) = f.invoke("request_status", json!({"request_id": id})).await;
    assert_eq!(status["result"]["status"], "approved", "{status}");

    // Neither the answers, nor the audit, nor the logs hold the link, its proof or the value.
    let audit = audit_text(&f).await;
    assert!(audit.contains(&id), "the audit names the request");
    for (what, text) in [("answers", format!("{v}{v2}{status}{r}")), ("audit", audit), ("logs", common::captured_logs())] {
        assert!(!text.contains(&proof) && !text.contains(&link), "the link is in the {what}");
        assert!(!text.contains(REQUESTED), "the value is in the {what}");
    }
    f.stop().await;
}
