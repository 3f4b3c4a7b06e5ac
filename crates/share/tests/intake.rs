//! The intake format (docs/request-format.md): the RFC 9180 vector for our suite, round trips,
//! tampering, limits, airlock's own documented vector, and interop with the page's JavaScript
//! (`crates/server/web/request-format.js`, run by `node`).

use airlock_share::intake::{self, IntakeError, IntakeKey, Sealed, INFO};
use airlock_share::{bucket_len, decode_b64, encode_b64};
use hpke::aead::{AeadTag, AesGcm256};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::{CryptoRng, RngCore};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

type Kem = X25519HkdfSha256;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rfc() -> Value {
    serde_json::from_str(&std::fs::read_to_string(manifest().join("testdata/hpke-x25519-aes256gcm.json")).unwrap()).unwrap()
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

/// The fixed `ikmE` of a vector as the only randomness HPKE draws.
struct Fixed(Vec<u8>);
impl RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        unimplemented!()
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        assert!(dst.len() <= self.0.len(), "HPKE asked for more randomness than ikmE");
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
    }
}
impl CryptoRng for Fixed {}

// ---------------------------------------------------------------------------------------------
// (a) RFC 9180's own vector for DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM.

#[test]
fn rfc9180_vector_is_our_suite() {
    let v = rfc();
    assert_eq!(
        (v["mode"].as_u64(), v["kem_id"].as_u64(), v["kdf_id"].as_u64(), v["aead_id"].as_u64()),
        (Some(0), Some(0x20), Some(1), Some(2))
    );
    assert_eq!((intake::KEM_ID, intake::KDF_ID, intake::AEAD_ID), (0x20, 1, 2));

    // DeriveKeyPair gives the vector's keys.
    let (sk_r, pk_r) = Kem::derive_keypair(&h(&v["ikmR"]));
    assert_eq!(sk_r.to_bytes().to_vec(), h(&v["skRm"]));
    assert_eq!(pk_r.to_bytes().to_vec(), h(&v["pkRm"]));
    let (sk_e, pk_e) = Kem::derive_keypair(&h(&v["ikmE"]));
    assert_eq!(sk_e.to_bytes().to_vec(), h(&v["skEm"]));
    assert_eq!(pk_e.to_bytes().to_vec(), h(&v["pkEm"]));

    // Our key type computes the same public key from the stored private key.
    let key = IntakeKey::from_secret_bytes(&h(&v["skRm"])).unwrap();
    assert_eq!(key.public_bytes().to_vec(), h(&v["pkRm"]));

    // Open: one receiver context, message i with sequence number i.
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&h(&v["skRm"])).unwrap();
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&h(&v["enc"])).unwrap();
    let mut rx = hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(&OpModeR::Base, &sk, &enc, &h(&v["info"])).unwrap();
    let encs = v["encryptions"].as_array().unwrap();
    assert_eq!(encs.len(), 3);
    for e in encs {
        let ct = h(&e["ct"]);
        let (body, tag) = ct.split_at(ct.len() - 16);
        let mut buf = body.to_vec();
        rx.open_in_place_detached(&mut buf, &h(&e["aad"]), &AeadTag::<AesGcm256>::from_bytes(tag).unwrap()).unwrap();
        assert_eq!(buf, h(&e["pt"]));
    }

    // Seal: the vector's ikmE as the sender's randomness reproduces enc and every ciphertext.
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&h(&v["pkRm"])).unwrap();
    let (enc2, mut tx) =
        hpke::setup_sender::<AesGcm256, HkdfSha256, Kem, _>(&OpModeS::Base, &pk, &h(&v["info"]), &mut Fixed(h(&v["ikmE"]))).unwrap();
    assert_eq!(enc2.to_bytes().to_vec(), h(&v["enc"]));
    for e in encs {
        let mut buf = h(&e["pt"]);
        let tag = tx.seal_in_place_detached(&mut buf, &h(&e["aad"])).unwrap();
        buf.extend_from_slice(&tag.to_bytes());
        assert_eq!(hex::encode(&buf), e["ct"].as_str().unwrap());
    }

    // Our seal (padding, INFO) with the same ephemeral key: the same KEM output (enc), and our
    // open reads it back.
    let ikm_e: [u8; 32] = h(&v["ikmE"]).try_into().unwrap();
    let s = intake::seal_with_ephemeral_ikm(&h(&v["pkRm"]), b"Beauty is truth, truth beauty", b"Count-0", 1000, &ikm_e).unwrap();
    assert_eq!(s.enc, h(&v["enc"]));
    assert_eq!(intake::open(&key, &s.enc, &s.ciphertext, b"Count-0", 1000).unwrap().expose_secret(), b"Beauty is truth, truth beauty");
}

// ---------------------------------------------------------------------------------------------
// (b) Round trips.

const MAX: usize = 1500;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn round_trip(value in prop::collection::vec(any::<u8>(), 0..=MAX), aad in prop::collection::vec(any::<u8>(), 0..300)) {
        let k = IntakeKey::generate();
        let s = intake::seal(&k.public_bytes(), &value, &aad, MAX).unwrap();
        prop_assert_eq!(s.enc.len(), 32);
        prop_assert_eq!(s.ciphertext.len(), bucket_len(value.len()) + 16);
        let opened = intake::open(&k, &s.enc, &s.ciphertext, &aad, MAX).unwrap();
        prop_assert_eq!(opened.expose_secret(), &value[..]);
        // Through the wire encoding and a key restored from its stored bytes.
        let k2 = IntakeKey::from_secret_bytes(&k.secret_bytes()).unwrap();
        let enc = decode_b64(&s.enc_b64()).unwrap();
        let ct = decode_b64(&s.ciphertext_b64()).unwrap();
        let again = intake::open(&k2, &enc, &ct, &aad, MAX).unwrap();
        prop_assert_eq!(again.expose_secret(), &value[..]);
    }
}

#[test]
fn keys_round_trip_and_stay_hidden() {
    let k = IntakeKey::generate();
    assert_eq!(decode_b64(&k.public_b64()).unwrap(), k.public_bytes());
    assert_eq!(k.public_b64().len(), 43);
    let from_secret = IntakeKey::from_secret(&k.to_secret()).unwrap();
    assert_eq!(from_secret.public_bytes(), k.public_bytes());
    assert_eq!(*from_secret.secret_bytes(), *k.secret_bytes());
    let shown = format!("{k:?} {k:#?}");
    assert!(!shown.contains(&encode_b64(&k.secret_bytes())));
    assert!(!shown.contains(&hex::encode(&*k.secret_bytes())));
    assert!(shown.contains("[hidden]"));
    for bad in [&[][..], &[7; 31][..], &[7; 33][..]] {
        assert_eq!(IntakeKey::from_secret_bytes(bad).unwrap_err(), IntakeError::BadKey);
    }
    assert_ne!(IntakeKey::generate().public_bytes(), k.public_bytes());
}

// ---------------------------------------------------------------------------------------------
// (c) Tampering and limits.

fn flip(b: &[u8], bit: usize) -> Vec<u8> {
    let mut out = b.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

#[test]
fn every_bit_flip_fails_with_decrypt() {
    let k = IntakeKey::generate();
    let aad = br#"{"handle":"stripe_test","request_id":"abc"}"#;
    let s = intake::seal(&k.public_bytes(), b"sk_test_canary_4242", aad, 1000).unwrap();
    assert!(intake::open(&k, &s.enc, &s.ciphertext, aad, 1000).is_ok());
    for bit in 0..s.enc.len() * 8 {
        assert_eq!(intake::open(&k, &flip(&s.enc, bit), &s.ciphertext, aad, 1000).unwrap_err(), IntakeError::Decrypt, "enc bit {bit}");
    }
    for bit in 0..s.ciphertext.len() * 8 {
        assert_eq!(
            intake::open(&k, &s.enc, &flip(&s.ciphertext, bit), aad, 1000).unwrap_err(),
            IntakeError::Decrypt,
            "ciphertext bit {bit}"
        );
    }
    for bit in 0..aad.len() * 8 {
        assert_eq!(intake::open(&k, &s.enc, &s.ciphertext, &flip(aad, bit), 1000).unwrap_err(), IntakeError::Decrypt, "aad bit {bit}");
    }
    // Another aad entirely (another request's context), none, one byte more or less.
    for other in [&br#"{"handle":"prod","request_id":"abc"}"#[..], b"", &aad[1..], &[&aad[..], b" "].concat()] {
        assert_eq!(intake::open(&k, &s.enc, &s.ciphertext, other, 1000).unwrap_err(), IntakeError::Decrypt);
    }
}

#[test]
fn truncated_extended_and_wrong_key_fail() {
    let k = IntakeKey::generate();
    let s = intake::seal(&k.public_bytes(), b"hunter2", b"ctx", 1000).unwrap();
    assert_eq!(s.ciphertext.len(), 256 + 16);
    let open = |enc: &[u8], ct: &[u8]| intake::open(&k, enc, ct, b"ctx", 1000);
    // Truncated ciphertexts: not a bucket plus tag.
    for n in [0, 1, 15, 16, 17, 100, 255, 256, 271] {
        assert_eq!(open(&s.enc, &s.ciphertext[..n]).unwrap_err(), IntakeError::Malformed, "truncated to {n}");
    }
    // Extended: one byte is malformed; to the next bucket it is well-formed but does not decrypt.
    assert_eq!(open(&s.enc, &[&s.ciphertext[..], &[0]].concat()).unwrap_err(), IntakeError::Malformed);
    assert_eq!(open(&s.enc, &[&s.ciphertext[..], &[0; 256]].concat()).unwrap_err(), IntakeError::Decrypt);
    // Past the largest bucket for the limit: refused before any cryptography.
    assert_eq!(open(&s.enc, &vec![0; 1024 + 16 + 1]).unwrap_err(), IntakeError::TooLarge);
    assert_eq!(open(&s.enc, &vec![0; 2048 + 16]).unwrap_err(), IntakeError::TooLarge);
    // enc of another length.
    for n in [0, 31, 33] {
        assert_eq!(open(&vec![9; n], &s.ciphertext).unwrap_err(), IntakeError::Malformed, "enc of {n} bytes");
    }
    // Another request's key.
    let other = IntakeKey::generate();
    assert_eq!(intake::open(&other, &s.enc, &s.ciphertext, b"ctx", 1000).unwrap_err(), IntakeError::Decrypt);
    // enc and ciphertext from two different seals.
    let s2 = intake::seal(&k.public_bytes(), b"hunter2", b"ctx", 1000).unwrap();
    assert_ne!(s2.enc, s.enc, "a fresh ephemeral key per seal");
    assert_eq!(open(&s2.enc, &s.ciphertext).unwrap_err(), IntakeError::Decrypt);
    assert_eq!(open(&s.enc, &s.ciphertext).unwrap().expose_secret(), b"hunter2");
}

#[test]
fn limits() {
    let k = IntakeKey::generate();
    let p = k.public_bytes();
    // Sealing over the limit.
    assert_eq!(intake::seal(&p, &[b'a'; 1001], b"", 1000).unwrap_err(), IntakeError::TooLarge);
    let at = intake::seal(&p, &[b'a'; 1000], b"", 1000).unwrap();
    assert_eq!(at.ciphertext.len(), 1024 + 16);
    assert_eq!(intake::open(&k, &at.enc, &at.ciphertext, b"", 1000).unwrap().len(), 1000);
    // The opener's limit is lower: refused before decryption when the bucket is larger...
    assert_eq!(intake::open(&k, &at.enc, &at.ciphertext, b"", 500).unwrap_err(), IntakeError::TooLarge);
    // ... and after it when the bucket is the same but the value is longer.
    let s = intake::seal(&p, &[b'a'; 300], b"", 1000).unwrap();
    assert_eq!(s.ciphertext.len(), 512 + 16);
    assert_eq!(intake::open(&k, &s.enc, &s.ciphertext, b"", 260).unwrap_err(), IntakeError::TooLarge);
    assert_eq!(intake::open(&k, &s.enc, &s.ciphertext, b"", 300).unwrap().len(), 300);
    assert_eq!(intake::max_ciphertext_len(1000), 1024 + 16);
    assert_eq!(intake::max_ciphertext_len(0), 256 + 16);
    // Bad public keys.
    assert_eq!(intake::seal(&p[..31], b"x", b"", 10).unwrap_err(), IntakeError::BadKey);
    assert_eq!(intake::seal(&[0; 32], b"x", b"", 10).unwrap_err(), IntakeError::BadKey, "low-order point");
}

/// A sender with the public key can make a ciphertext that authenticates but is not padded as
/// the format requires: refused, without the value.
#[test]
fn bad_padding_is_refused() {
    let k = IntakeKey::generate();
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&k.public_bytes()).unwrap();
    let mut rng = Fixed(vec![0x5a; 32]);
    let mut padded = |len_prefix: u32, body: &[u8], last: u8| {
        let mut p = vec![0u8; 256];
        p[..4].copy_from_slice(&len_prefix.to_be_bytes());
        p[4..4 + body.len()].copy_from_slice(body);
        p[255] |= last;
        rng.0 = vec![0x5a; 32];
        let (enc, tag) =
            hpke::single_shot_seal_in_place_detached::<AesGcm256, HkdfSha256, Kem, _>(&OpModeS::Base, &pk, INFO, &mut p, b"ctx", &mut rng)
                .unwrap();
        p.extend_from_slice(&tag.to_bytes());
        intake::open(&k, &enc.to_bytes(), &p, b"ctx", 1000)
    };
    // Well-formed: opens.
    assert_eq!(padded(2, b"hi", 0).unwrap().expose_secret(), b"hi");
    // A non-zero byte in the padding.
    assert_eq!(padded(2, b"hi", 1).unwrap_err(), IntakeError::BadPadding);
    // A length past the end.
    assert_eq!(padded(253, b"hi", 0).unwrap_err(), IntakeError::BadPadding);
    assert_eq!(padded(u32::MAX, b"hi", 0).unwrap_err(), IntakeError::BadPadding);
    // The whole bucket is the value: fits exactly.
    assert_eq!(padded(252, &[b'x'; 251], b'x').unwrap().len(), 252);
}

// ---------------------------------------------------------------------------------------------
// airlock's own vector, as docs/request-format.md prints it.

/// The `name value` lines of the fenced block after "### airlock's vector" (a line starting with
/// spaces continues the previous value).
fn doc_vector() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(manifest().join("../../docs/request-format.md")).unwrap();
    let after = doc.split_once("### airlock's vector").expect("the doc has the vector").1;
    let block = after.split_once("```text\n").unwrap().1.split_once("```").unwrap().0;
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut last = String::new();
    for line in block.lines() {
        if line.starts_with(' ') {
            out.get_mut(&last).expect("a continuation follows a field").push_str(line.trim());
        } else if let Some((k, v)) = line.split_once(' ') {
            last = k.to_owned();
            out.insert(last.clone(), v.trim().to_owned());
        }
    }
    out
}

#[test]
fn documented_vector() {
    let d = doc_vector();
    let get = |k: &str| d.get(k).unwrap_or_else(|| panic!("{k} is in the doc's vector")).clone();
    let key = IntakeKey::from_secret_bytes(&hex::decode(get("skR")).unwrap()).unwrap();
    assert_eq!(hex::encode(key.public_bytes()), get("pkR"));
    let ikm_e: [u8; 32] = hex::decode(get("ikmE")).unwrap().try_into().unwrap();
    let (sk_e, pk_e) = Kem::derive_keypair(&ikm_e);
    assert_eq!(hex::encode(sk_e.to_bytes()), get("skE"));
    assert_eq!(hex::encode(pk_e.to_bytes()), get("pkE"));
    let max: usize = get("max_value_bytes").parse().unwrap();
    let s = intake::seal_with_ephemeral_ikm(&key.public_bytes(), get("value").as_bytes(), get("aad").as_bytes(), max, &ikm_e).unwrap();
    assert_eq!(hex::encode(&s.enc), get("enc"), "enc");
    assert_eq!(hex::encode(&s.ciphertext), get("ciphertext"), "ciphertext");
    assert_eq!(s.enc_b64(), get("enc_b64u"));
    let opened = intake::open(&key, &s.enc, &s.ciphertext, get("aad").as_bytes(), max).unwrap();
    assert_eq!(opened.expose_secret(), get("value").as_bytes());
    assert_eq!(get("value"), "sk_test_canary_4242");
    // The aad is the context's canonical JSON (keys sorted, no whitespace).
    let ctx: Value = serde_json::from_str(&get("aad")).unwrap();
    assert_eq!(ctx["max_value_bytes"].as_u64(), Some(max as u64));
}

// ---------------------------------------------------------------------------------------------
// (d) Interop with the page's JavaScript under node.

fn node() -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        _ => None,
    }
}

#[test]
fn javascript_seals_what_rust_opens() {
    let Some(version) = node() else {
        assert!(
            std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "node is required (AIRLOCK_REQUIRE_SERVICES=1) but not on PATH"
        );
        println!("skipped: node is not on PATH (the JavaScript side of the intake format is untested)");
        return;
    };
    println!("node {version}");
    let d = doc_vector();
    let (sk_e, _) = Kem::derive_keypair(&hex::decode(&d["ikmE"]).unwrap());
    let key = IntakeKey::generate();
    let max = 1000;
    let aad = r#"{"description":"Stripe test key ✓","handle":"stripe_test","request_id":"ERERERERERERERERERERER"}"#;
    let count = 50;
    let input = json!({
        "rfc": rfc(),
        "airlock": {
            "skE": hex::encode(sk_e.to_bytes()), "pkE": d["pkE"], "pkR": d["pkR"], "value": d["value"], "aad": d["aad"],
            "enc": d["enc"], "ciphertext": d["ciphertext"],
        },
        "public_key": key.public_b64(),
        "aad": aad,
        "max": max,
        "count": count,
    });
    let mut child = Command::new("node")
        .arg(manifest().join("tests/intake_vectors.mjs"))
        .arg(manifest().join("../server/web/request-format.js"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "node failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0], json!({"check": "rfc", "encryptions": 3}));
    assert_eq!(lines[1], json!({"check": "airlock"}));
    assert_eq!(lines[2], json!({"check": "refusals"}));
    let seals = &lines[3..];
    assert_eq!(seals.len(), count);
    let mut lens = Vec::new();
    for l in seals {
        let value = hex::decode(l["value"].as_str().unwrap()).unwrap();
        let s = Sealed {
            enc: decode_b64(l["enc"].as_str().unwrap()).unwrap(),
            ciphertext: decode_b64(l["ciphertext"].as_str().unwrap()).unwrap(),
        };
        assert_eq!(s.ciphertext.len(), bucket_len(value.len()) + 16, "the same padding");
        let opened = intake::open(&key, &s.enc, &s.ciphertext, aad.as_bytes(), max).unwrap();
        assert_eq!(opened.expose_secret(), &value[..]);
        // Bound to the context: another one does not open it.
        assert_eq!(intake::open(&key, &s.enc, &s.ciphertext, b"{}", max).unwrap_err(), IntakeError::Decrypt);
        lens.push(value.len());
    }
    assert_eq!(&lens[..5], &[0, 1, 252, 253, max]);
}
