//! Interoperability vectors (`vectors.json`), also decrypted by the browser's WebCrypto code in
//! `tests/browser/`. `AIRLOCK_WRITE_VECTORS=1` rewrites the file from the fixed inputs below.

use airlock_share::{aad, derive, encode_b64, open, seal_with_nonce, Limits, Link, LinkKey};
use serde_json::{json, Value};
use std::path::PathBuf;

const MAX: usize = 1 << 20;

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors.json")
}

struct Input {
    name: &'static str,
    key: [u8; 32],
    id_bytes: [u8; 16],
    passphrase: Option<&'static str>,
    expires_at: i64,
    views: u32,
    nonce: [u8; 12],
    plaintext: String,
}

fn inputs() -> Vec<Input> {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    vec![
        Input { name: "short, no passphrase", key: k, id_bytes: [0x11; 16], passphrase: None, expires_at: 1_900_000_000, views: 1, nonce: [0x22; 12], plaintext: "postgres://app:S3cr3t!@db.internal/app".into() },
        Input { name: "empty", key: [0xab; 32], id_bytes: [0x01; 16], passphrase: None, expires_at: 1_800_000_000, views: 3, nonce: [0; 12], plaintext: String::new() },
        Input { name: "unicode with passphrase", key: k, id_bytes: [0x5a; 16], passphrase: Some("correct horse battery staple ✓"), expires_at: 1_900_003_600, views: 2, nonce: [0x33; 12], plaintext: "pässwörd ✓ 🔑".into() },
        Input { name: "second bucket", key: [0x7f; 32], id_bytes: [0xfe; 16], passphrase: None, expires_at: 2_000_000_000, views: 10, nonce: [0x44; 12], plaintext: "x".repeat(300) },
    ]
}

fn build(i: &Input) -> Value {
    let key = LinkKey::from_bytes(i.key);
    let id = encode_b64(&i.id_bytes);
    let limits = Limits { expires_at: i.expires_at, views: i.views, passphrase: i.passphrase.is_some() };
    let d = derive(&key, &id, i.passphrase);
    let blob = seal_with_nonce(i.plaintext.as_bytes(), &d, &id, &limits, MAX, i.nonce).unwrap();
    json!({
        "name": i.name,
        "key": key.encode().as_str(),
        "id": id,
        "passphrase": i.passphrase,
        "expires_at": i.expires_at,
        "views": i.views,
        "plaintext": i.plaintext,
        "aad": String::from_utf8(aad(&id, &limits)).unwrap(),
        "enc_key_hex": hex::encode(d.enc_key_bytes()),
        "proof": d.proof().as_str(),
        "proof_hash": encode_b64(&d.proof_hash()),
        "nonce_hex": hex::encode(i.nonce),
        "ciphertext": encode_b64(&blob),
        "link": Link::render("https://airlock.example", &id, &key, i.passphrase.is_some()).as_str(),
    })
}

#[test]
fn t17_interop_vectors_match() {
    let built: Vec<Value> = inputs().iter().map(build).collect();
    let doc = json!({
        "format": "airlock-share-v1",
        "note": "Fixed nonces are for these vectors only; real shares use a random nonce.",
        "vectors": built,
    });
    if std::env::var_os("AIRLOCK_WRITE_VECTORS").is_some() {
        std::fs::write(path(), serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    assert_eq!(stored, doc, "vectors.json differs from what this implementation computes");

    // Each stored vector also opens from its own fields, through the parsed link.
    for v in stored["vectors"].as_array().unwrap() {
        let link = Link::parse(v["link"].as_str().unwrap()).unwrap();
        assert_eq!(link.id, v["id"].as_str().unwrap());
        let pass = v["passphrase"].as_str();
        assert_eq!(link.passphrase, pass.is_some());
        let limits = Limits { expires_at: v["expires_at"].as_i64().unwrap(), views: v["views"].as_u64().unwrap() as u32, passphrase: link.passphrase };
        let d = derive(&link.key, &link.id, pass);
        assert_eq!(d.proof().as_str(), v["proof"].as_str().unwrap());
        let blob = airlock_share::decode_blob(v["ciphertext"].as_str().unwrap()).unwrap();
        let s = open(&blob, &d, &link.id, &limits).unwrap();
        assert_eq!(s.expose_str().unwrap(), v["plaintext"].as_str().unwrap());
    }
}

#[test]
fn t17_wrong_passphrase_gives_another_proof_and_no_plaintext() {
    let i = &inputs()[2];
    let key = LinkKey::from_bytes(i.key);
    let id = encode_b64(&i.id_bytes);
    let limits = Limits { expires_at: i.expires_at, views: i.views, passphrase: true };
    let right = derive(&key, &id, i.passphrase);
    let blob = seal_with_nonce(i.plaintext.as_bytes(), &right, &id, &limits, MAX, i.nonce).unwrap();
    for wrong in [Some("correct horse battery staple"), Some(""), None] {
        let d = derive(&key, &id, wrong);
        assert_ne!(d.proof_hash(), right.proof_hash(), "a wrong passphrase must not yield the proof");
        assert!(open(&blob, &d, &id, &limits).is_err());
    }
}

#[test]
fn t17_tampered_aad_fails_for_every_vector() {
    for i in inputs() {
        let key = LinkKey::from_bytes(i.key);
        let id = encode_b64(&i.id_bytes);
        let limits = Limits { expires_at: i.expires_at, views: i.views, passphrase: i.passphrase.is_some() };
        let d = derive(&key, &id, i.passphrase);
        let blob = seal_with_nonce(i.plaintext.as_bytes(), &d, &id, &limits, MAX, i.nonce).unwrap();
        for t in [
            Limits { expires_at: limits.expires_at + 1, ..limits },
            Limits { views: limits.views + 1, ..limits },
            Limits { passphrase: !limits.passphrase, ..limits },
        ] {
            assert!(open(&blob, &d, &id, &t).is_err(), "{}", i.name);
        }
    }
}
