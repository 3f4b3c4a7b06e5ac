//! The master key at rest (`[store.master_key]`): a raw file wrapped under a passphrase
//! (Argon2id) and then under a real OpenBao transit key with `airlock key wrap`; the broker opens
//! each; a wrong passphrase, a tampered or weakened document, a group-readable passphrase file, a
//! configuration that no longer matches the file, a transit server that is down or denies: each
//! a clear error, and the stored secrets still open with the right means.

#[path = "../crates/vault/tests/bao/mod.rs"]
mod bao;

use airlock_core::config::{Config, SecretRef};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const CANARY: &str = "canaryWrapped_7Hq2Lx9Zp";

fn airlock(dir: &Path, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airlock"));
    c.current_dir(dir)
        .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
        .env_remove("RUST_LOG")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(i) = input {
        stdin.write_all(i.as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
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
    let e = airlock_server::Broker::open(cfg).await.err().expect("no broker without its key").to_string();
    assert!(e.contains("master key") && e.contains("unwrapping through transit"), "{e}");
    assert!(!e.contains(CANARY) && !e.contains(&token));
}
