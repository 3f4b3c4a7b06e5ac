//! The master key at rest (`[store.master_key]`): a raw file wrapped under a passphrase
//! (Argon2id) and then under a real OpenBao transit key with `airlock key wrap`; the broker opens
//! each; a wrong passphrase, a tampered or weakened document, a group-readable passphrase file, a
//! configuration that no longer matches the file, a transit server that is down or denies: each
//! a clear error, and the stored secrets still open with the right means.

#[path = "../crates/vault/tests/bao/mod.rs"]
mod bao;
mod common;

use airlock_core::config::{Config, SecretRef};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const CANARY: &str = "canaryWrapped_7Hq2Lx9Zp";

fn airlock(dir: &Path, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Output {
    common::airlock_in(dir, args, input, env)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn private(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The starter configuration with `extra` appended.
fn configure(dir: &Path, base: &str, extra: &str) {
    std::fs::write(dir.join("airlock.toml"), format!("{base}\n{extra}")).unwrap();
}

/// Opens the key as the configuration says and resolves the stored secret.
#[allow(clippy::disallowed_methods)] // the test reads the value back to compare it
async fn resolve(dir: &Path) -> Result<String, String> {
    let cfg = Config::load(&dir.join("airlock.toml")).map_err(|e| e.to_string())?;
    let key = airlock_vault::wrap::open(&cfg.store.master_key, &cfg.vaults, &cfg.store.data_dir.join("master.key"))
        .await
        .map_err(|e| e.to_string())?;
    let store = airlock_store::Store::connect(&cfg.store).await.map_err(|e| e.to_string())?;
    let v = airlock_vault::Vault::new(key, store);
    let s = v.resolve(&SecretRef::Local("API_KEY".into())).await.map_err(|e| e.to_string())?;
    Ok(s.expose_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn master_key_wrapped_by_passphrase_then_transit() {
    let Some(mut b) = bao::Bao::start().await else { return };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let o = airlock(dir, &["init"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let starter = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    let o = airlock(dir, &["secret", "put", "API_KEY"], Some(&format!("{CANARY}\n")), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let key_path = dir.join("airlock-data/master.key");
    let raw = std::fs::read(&key_path).unwrap();
    assert_eq!(raw.len(), 32);
    assert_eq!(resolve(dir).await.unwrap(), CANARY);

    // The configuration asks for a passphrase the file does not have yet: refused, clearly.
    private(&dir.join("pass"), "correct horse battery staple\n");
    configure(dir, &starter, "[store.master_key]\nwrap = \"passphrase\"\npassphrase_file = \"pass\"\n");
    let e = resolve(dir).await.unwrap_err();
    assert!(e.contains("is protected by File") && e.contains("airlock key wrap"), "{e}");
    let o = airlock(dir, &["key", "status"], None, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Wrap it: a JSON document without the raw key; the secret opens as before.
    let o = airlock(dir, &["key", "wrap"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let doc_bytes = std::fs::read(&key_path).unwrap();
    assert!(!doc_bytes.windows(32).any(|w| w == raw.as_slice()), "the raw key is in the wrapped file");
    // Audited, with the protections and nothing of the key or the passphrase.
    let tail = text(&airlock(dir, &["audit", "tail", "-n", "5"], None, &[]));
    let rec = tail.lines().find(|l| l.contains("master_key_wrapped")).unwrap_or_else(|| panic!("not audited: {tail}"));
    assert!(rec.contains("\"from\":\"File\"") && rec.contains("\"to\":\"Passphrase\"") && !rec.contains("correct horse"), "{rec}");
    let doc: Value = serde_json::from_slice(&doc_bytes).unwrap();
    assert_eq!((doc["format"].as_str(), doc["wrap"].as_str(), doc["kdf"]["alg"].as_str()), (Some("airlock-master-key/1"), Some("passphrase"), Some("argon2id")));
    assert!(doc["kdf"]["m_kib"].as_u64().unwrap() >= 19 * 1024 && doc["kdf"]["t"].as_u64().unwrap() >= 2);
    assert_eq!(airlock(dir, &["key", "status"], None, &[]).status.code(), Some(0));
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
    let cfg = Config::load(&dir.join("airlock.toml")).unwrap();
    let broker = airlock_server::Broker::open(cfg).await.expect("the broker opens a passphrase-wrapped key");
    drop(broker);

    // A wrong passphrase, a tampered document, weakened parameters, a group-readable
    // passphrase file: refused, and nothing is written.
    private(&dir.join("pass"), "wrong horse battery staple\n");
    let e = resolve(dir).await.unwrap_err();
    assert!(e.contains("the passphrase is wrong, or the key file was altered"), "{e}");
    private(&dir.join("pass"), "correct horse battery staple\n");
    for (what, edit) in [
        ("ciphertext", Box::new(|d: &mut Value| {
            let mut c = d["ciphertext"].as_str().unwrap().to_owned().into_bytes();
            c[3] = if c[3] == b'A' { b'B' } else { b'A' };
            d["ciphertext"] = json!(String::from_utf8(c).unwrap());
        }) as Box<dyn Fn(&mut Value)>),
        ("salt", Box::new(|d: &mut Value| d["kdf"]["salt"] = json!("AAAAAAAAAAAAAAAAAAAAAA=="))),
        ("cheap kdf", Box::new(|d: &mut Value| d["kdf"]["m_kib"] = json!(1024))),
        ("one pass", Box::new(|d: &mut Value| d["kdf"]["t"] = json!(1))),
        ("wrap kind", Box::new(|d: &mut Value| d["wrap"] = json!("transit"))),
    ] {
        let mut d = doc.clone();
        edit(&mut d);
        private(&key_path, &d.to_string());
        let e = resolve(dir).await.unwrap_err();
        assert!(e.contains("master key"), "{what}: {e}");
        assert!(!e.contains(CANARY));
    }
    private(&key_path, &String::from_utf8(doc_bytes.clone()).unwrap());
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
    std::fs::set_permissions(dir.join("pass"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let e = resolve(dir).await.unwrap_err();
    assert!(e.contains("readable by group or others"), "{e}");
    private(&dir.join("pass"), "correct horse battery staple\n");

    // A new passphrase: the old one is given once, then no longer opens the key.
    private(&dir.join("pass2"), "a much longer new passphrase\n");
    configure(dir, &starter, "[store.master_key]\nwrap = \"passphrase\"\npassphrase_file = \"pass2\"\n");
    let o = airlock(dir, &["key", "wrap", "--old-passphrase-file", "pass"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
    configure(dir, &starter, "[store.master_key]\nwrap = \"passphrase\"\npassphrase_file = \"pass\"\n");
    assert!(resolve(dir).await.unwrap_err().contains("passphrase is wrong"));

    // OpenBao transit: a key, and a token allowed only to encrypt and decrypt with it.
    b.call("POST", "sys/mounts/transit", Some(json!({"type": "transit"}))).await;
    b.call("POST", "transit/keys/airlock-master", None).await;
    let policy = r#"path "transit/encrypt/airlock-master" { capabilities = ["update"] }
path "transit/decrypt/airlock-master" { capabilities = ["update"] }"#;
    b.call("PUT", "sys/policies/acl/wrap", Some(json!({"policy": policy}))).await;
    let token = b.call("POST", "auth/token/create", Some(json!({"policies": ["wrap"], "ttl": "1h"}))).await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let denied = b.call("POST", "auth/token/create", Some(json!({"policies": ["default"], "ttl": "1h"}))).await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    private(&dir.join("bao-token"), &token);
    private(&dir.join("denied-token"), &denied);
    let transit = |token_file: &str| {
        format!(
            "[store.master_key]\nwrap = \"transit\"\nvault = \"corp\"\n\n{}",
            b.vault_toml("corp", &format!("{{ method = \"token\", token = \"file:{}\" }}", dir.join(token_file).display()), 0)
        )
    };
    configure(dir, &starter, &transit("bao-token"));
    // From a passphrase to transit: the old passphrase is needed.
    let o = airlock(dir, &["key", "wrap"], None, &[]);
    assert!(!o.status.success() && text(&o).contains("--old-passphrase-file"), "{}", text(&o));
    let o = airlock(dir, &["key", "wrap", "--old-passphrase-file", "pass2"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: Value = serde_json::from_slice(&std::fs::read(&key_path).unwrap()).unwrap();
    assert_eq!(doc["wrap"], "transit");
    assert!(doc["ciphertext"].as_str().unwrap().starts_with("vault:v1:"), "{doc}");
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
    let cfg = Config::load(&dir.join("airlock.toml")).unwrap();
    drop(airlock_server::Broker::open(cfg).await.expect("the broker opens a transit-wrapped key"));

    // A token the transit key's policy does not allow: permission denied, named.
    configure(dir, &starter, &transit("denied-token"));
    let e = resolve(dir).await.unwrap_err();
    assert!(e.contains("unwrapping through transit") && e.contains("permission"), "{e}");
    // Transit down: the broker does not start, and says why.
    configure(dir, &starter, &transit("bao-token"));
    b.kill();
    let cfg = Config::load(&dir.join("airlock.toml")).unwrap();
    let e = match airlock_server::Broker::open(cfg).await {
        Ok(_) => panic!("a broker started without its key"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("master key") && e.contains("unwrapping through transit"), "{e}");
    assert!(!e.contains(CANARY) && !e.contains(&token));
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_then_wipe_then_restore_verifies_and_every_secret_opens() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(airlock(dir, &["init"], None, &[]).status.success());
    let starter = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    assert!(airlock(dir, &["secret", "put", "API_KEY"], Some(&format!("{CANARY}\n")), &[]).status.success());
    let data = dir.join("airlock-data");
    let raw = std::fs::read(data.join("master.key")).unwrap();
    private(&dir.join("pass"), "correct horse battery staple\n");
    configure(dir, &starter, "[store.master_key]\nwrap = \"passphrase\"\npassphrase_file = \"pass\"\n");
    assert!(airlock(dir, &["key", "wrap"], None, &[]).status.success());
    // Some audit records, written by a broker.
    {
        let b = airlock_server::Broker::open(Config::load(&dir.join("airlock.toml")).unwrap()).await.unwrap();
        for _ in 0..5 {
            b.refuse("query_db", airlock_core::CallError::new(airlock_core::ErrorCode::Unauthenticated)).await;
        }
    }
    let o = airlock(dir, &["backup", "b.bak"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(dir.join("b.bak")).unwrap();
    // The plain snapshot it was made from is gone.
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with(".airlock-backup")).collect();
    assert!(left.is_empty(), "a scratch snapshot was left: {left:?}");
    for needle in [CANARY.as_bytes(), b"correct horse", raw.as_slice()] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "the backup holds plaintext");
    }
    let header: Value = serde_json::from_slice(bytes.split(|b| *b == b'\n').nth(1).unwrap()).unwrap();
    // The `key wrap` above and the broker's five.
    assert_eq!(header["audit"]["last_seq"], 6, "{header}");
    assert_eq!(header["master_key"]["wrap"], "passphrase");
    // A backup never replaces a file.
    assert!(!airlock(dir, &["backup", "b.bak"], None, &[]).status.success());

    // Not over a live data directory.
    let o = airlock(dir, &["restore", "b.bak", "--to", "airlock-data"], None, &[]);
    assert!(!o.status.success() && text(&o).contains("not empty"), "{}", text(&o));
    // Wipe, then every broken variant is refused and leaves no directory behind.
    std::fs::remove_dir_all(&data).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() - 100].to_vec()),
        ("cut in the header", bytes[..40].to_vec()),
        ("another audit head", {
            let s = String::from_utf8_lossy(&bytes[..200]).into_owned();
            let at = s.find("\"last_seq\":6").unwrap();
            let mut b = bytes.clone();
            b[at + 11] = b'7';
            b
        }),
        ("a flipped payload byte", {
            let mut b = bytes.clone();
            let i = b.len() - 20;
            b[i] ^= 1;
            b
        }),
    ];
    cases.push(("not a backup", b"hello\n{}\n".to_vec()));
    for (what, b) in cases {
        std::fs::write(dir.join("bad.bak"), &b).unwrap();
        let o = airlock(dir, &["restore", "bad.bak", "--to", "airlock-data"], None, &[]);
        assert!(!o.status.success(), "{what}: {}", text(&o));
        assert!(!data.exists(), "{what}: a half-restored directory was left");
        assert!(!text(&o).contains(CANARY));
    }
    // The wrong passphrase.
    private(&dir.join("pass"), "wrong\n");
    let o = airlock(dir, &["restore", "b.bak", "--to", "airlock-data"], None, &[]);
    assert!(!o.status.success() && text(&o).contains("passphrase is wrong"), "{}", text(&o));
    assert!(!data.exists());
    // The right one: restored, the chain verifies, the secret opens.
    private(&dir.join("pass"), "correct horse battery staple\n");
    let o = airlock(dir, &["restore", "b.bak", "--to", "airlock-data"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
    let o = airlock(dir, &["audit", "verify"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));

    // A raw key is never in a backup: restoring needs it given.
    let d2 = tempfile::tempdir().unwrap();
    let dir2 = d2.path();
    assert!(airlock(dir2, &["init"], None, &[]).status.success());
    assert!(airlock(dir2, &["secret", "put", "API_KEY"], Some(&format!("{CANARY}\n")), &[]).status.success());
    let raw2 = std::fs::read(dir2.join("airlock-data/master.key")).unwrap();
    assert!(airlock(dir2, &["backup", "plain.bak"], None, &[]).status.success());
    let b2 = std::fs::read(dir2.join("plain.bak")).unwrap();
    assert!(!b2.windows(32).any(|w| w == raw2.as_slice()));
    std::fs::rename(dir2.join("airlock-data/master.key"), dir2.join("kept.key")).unwrap();
    std::fs::remove_dir_all(dir2.join("airlock-data")).unwrap();
    let o = airlock(dir2, &["restore", "plain.bak", "--to", "airlock-data"], None, &[]);
    assert!(!o.status.success() && text(&o).contains("--master-key-file"), "{}", text(&o));
    let o = airlock(dir2, &["restore", "plain.bak", "--to", "airlock-data", "--master-key-file", "kept.key"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(resolve(dir2).await.unwrap(), CANARY);
}

#[test]
fn doctor_warns_of_a_plain_master_key_where_the_broker_serves_beyond_this_machine() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(airlock(dir, &["init"], None, &[]).status.success());
    let starter = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    let finding = |dir: &Path| -> Value {
        let o = airlock(dir, &["doctor", "--json"], None, &[]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
        v["findings"].as_array().unwrap().iter().find(|f| f["check"] == "master-key").cloned().unwrap_or_else(|| panic!("{v}"))
    };
    // Loopback: a note.
    assert_eq!(finding(dir)["level"], "ok");
    // Serving beyond this machine: a warning with the fix.
    let public = starter.replacen("listen = \"127.0.0.1:", "listen = \"0.0.0.0:", 1) + "\n[shares]\nbase_url = \"https://airlock.example\"\n";
    std::fs::write(dir.join("airlock.toml"), public).unwrap();
    let f = finding(dir);
    assert_eq!(f["level"], "warning", "{f}");
    assert!(f["fix"].as_str().unwrap().contains("airlock key wrap"), "{f}");
    // Configured for a passphrase the file does not have: an error before the broker fails.
    private(&dir.join("pass"), "pp\n");
    configure(dir, &starter, "[store.master_key]\nwrap = \"passphrase\"\npassphrase_file = \"pass\"\n");
    assert_eq!(finding(dir)["level"], "error");
    assert!(airlock(dir, &["key", "wrap"], None, &[]).status.success());
    assert_eq!(finding(dir)["level"], "ok");
}

#[path = "../crates/server/tests/moto/mod.rs"]
mod moto;

#[tokio::test(flavor = "multi_thread")]
async fn master_key_wrapped_by_aws_kms() {
    let Some(mut m) = moto::Moto::start(&[]).await else { return };
    let (s, created) = m.setup_with("kms", "POST", "/", b"{}".to_vec(), &[("x-amz-target", "TrentService.CreateKey")]).await;
    assert_eq!(s, 200, "{created}");
    let key_id = serde_json::from_str::<Value>(&created).unwrap()["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(airlock(dir, &["init"], None, &[]).status.success());
    let starter = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    assert!(airlock(dir, &["secret", "put", "API_KEY"], Some(&format!("{CANARY}\n")), &[]).status.success());
    let raw = std::fs::read(dir.join("airlock-data/master.key")).unwrap();
    private(&dir.join("aws.json"), r#"{"access_key_id": "AKIAKMSTEST000000001", "secret_access_key": "canaryKmsSecret/Zq81Lx0Pw"}"#);
    let kms = |key: &str, endpoint: &str| {
        format!(
            "[store.master_key]\nwrap = \"aws_kms\"\nkms_key_id = \"{key}\"\naws_region = \"us-east-1\"\naws_endpoint = \"{endpoint}\"\naws_credentials = \"file:{}\"\n",
            dir.join("aws.json").display()
        )
    };
    configure(dir, &starter, &kms(&key_id, &m.url));
    let o = airlock(dir, &["key", "wrap"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let doc_bytes = std::fs::read(dir.join("airlock-data/master.key")).unwrap();
    assert!(!doc_bytes.windows(32).any(|w| w == raw.as_slice()));
    let doc: Value = serde_json::from_slice(&doc_bytes).unwrap();
    assert_eq!((doc["wrap"].as_str(), doc["key_id"].as_str()), (Some("aws_kms"), Some(key_id.as_str())));
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
    drop(airlock_server::Broker::open(Config::load(&dir.join("airlock.toml")).unwrap()).await.expect("the broker opens a KMS-wrapped key"));

    // Another key named in the configuration, an altered blob, credentials that are not there:
    // refused, each saying why, and nothing of the key or the credentials in the message.
    configure(dir, &starter, &kms("alias/other", &m.url));
    assert!(resolve(dir).await.unwrap_err().contains("another KMS key"));
    configure(dir, &starter, &kms(&key_id, &m.url));
    let mut altered = doc.clone();
    let mut blob = base64_decode(altered["ciphertext"].as_str().unwrap());
    let n = blob.len();
    blob[n / 2] ^= 0x55;
    altered["ciphertext"] = json!(base64_encode(&blob));
    private(&dir.join("airlock-data/master.key"), &altered.to_string());
    let e = resolve(dir).await.unwrap_err();
    assert!(e.contains("unwrapping through KMS"), "{e}");
    private(&dir.join("airlock-data/master.key"), &String::from_utf8(doc_bytes.clone()).unwrap());
    std::fs::remove_file(dir.join("aws.json")).unwrap();
    let e = resolve(dir).await.unwrap_err();
    assert!(e.contains("aws_credentials"), "{e}");
    private(&dir.join("aws.json"), r#"{"access_key_id": "AKIAKMSTEST000000001", "secret_access_key": "canaryKmsSecret/Zq81Lx0Pw"}"#);
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
    // KMS down: the broker does not start.
    let url = m.url.clone();
    drop(std::mem::replace(&mut m, moto::Moto::start(&[]).await.unwrap()));
    configure(dir, &starter, &kms(&key_id, &url));
    let e = match airlock_server::Broker::open(Config::load(&dir.join("airlock.toml")).unwrap()).await {
        Ok(_) => panic!("a broker started without its key"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("unwrapping through KMS") && !e.contains("canaryKmsSecret") && !e.contains(CANARY), "{e}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Whether `systemd-creds` can wrap here: `Err(None)` when it is not installed (skipped even
/// under AIRLOCK_REQUIRE_SERVICES=1), `Err(Some(why))` when it is but cannot encrypt.
fn systemd_creds() -> Result<(), Option<String>> {
    let child = Command::new("systemd-creds")
        .args(["encrypt", "--with-key=auto", "--name=airlock-probe", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.map_err(|_| None)?;
    child.stdin.take().unwrap().write_all(b"probe").unwrap();
    let o = child.wait_with_output().unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(Some(String::from_utf8_lossy(&o.stderr).into_owned()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn master_key_wrapped_by_systemd_creds() {
    match systemd_creds() {
        Ok(()) => {}
        Err(None) => {
            println!("skipped: systemd-creds is not installed");
            return;
        }
        Err(Some(why)) => {
            if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("systemd-creds is installed but cannot encrypt: {why}");
            }
            println!("skipped: systemd-creds cannot encrypt here: {why}");
            return;
        }
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    assert!(airlock(dir, &["init"], None, &[]).status.success());
    let starter = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    assert!(airlock(dir, &["secret", "put", "API_KEY"], Some(&format!("{CANARY}\n")), &[]).status.success());
    let key_path = dir.join("airlock-data/master.key");
    let raw = std::fs::read(&key_path).unwrap();
    configure(dir, &starter, "[store.master_key]\nwrap = \"systemd_creds\"\n");
    let o = airlock(dir, &["key", "wrap"], None, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let doc_bytes = std::fs::read(&key_path).unwrap();
    assert!(!doc_bytes.windows(32).any(|w| w == raw.as_slice()));
    let doc: Value = serde_json::from_slice(&doc_bytes).unwrap();
    assert_eq!(doc["wrap"], "systemd_creds");
    let ct = base64_decode(doc["ciphertext"].as_str().unwrap());
    assert!(!ct.windows(32).any(|w| w == raw.as_slice()));
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
    drop(airlock_server::Broker::open(Config::load(&dir.join("airlock.toml")).unwrap()).await.expect("the broker opens it"));
    // An altered credential does not open, and says which tool refused.
    let mut altered = doc.clone();
    let mut c = ct.clone();
    let n = c.len();
    c[n - 20] ^= 0x01;
    altered["ciphertext"] = json!(base64_encode(&c));
    private(&key_path, &altered.to_string());
    let e = resolve(dir).await.unwrap_err();
    assert!(e.contains("systemd-creds decrypt failed"), "{e}");
    private(&key_path, &String::from_utf8(doc_bytes).unwrap());
    assert_eq!(resolve(dir).await.unwrap(), CANARY);
}
