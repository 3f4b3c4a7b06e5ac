//! The property of the `share_envelope` fuzz target, shared with
//! `crates/share/tests/fuzz_regressions.rs` (which replays the corpus with stable Rust).
//!
//! Every parser of the one-time link format (`airlock_share`) on arbitrary input:
//! * never panics: `Link::parse`, `LinkKey::parse`, `parse_proof`, `valid_id`, `decode_blob`,
//!   `decode_b64`, `check_blob`, `open`;
//! * what decodes re-encodes to the same bytes where the format is canonical: base64url without
//!   padding (a key, a proof, an id, a ciphertext: one spelling per value), and a link already in
//!   the rendered form `{base}/s/{id}#{key}[.p]` (base without a trailing `/`), which
//!   `Link::render` must give back byte for byte; any parsed link renders to a link that parses
//!   to the same base (without trailing `/`), id, key and passphrase flag;
//! * the padded plaintext inside a sealed blob: the input, used as the 256 or 512 bytes of a
//!   padded plaintext (length prefix and padding as the fuzzer chose them), is sealed with
//!   AES-256-GCM under a share's derived key; `open` must accept it exactly when the prefix and
//!   the zero padding are the format's (`docs/share-format.md`, Padding: any bucket size), return
//!   exactly the `n` bytes the prefix says, and, when the bucket is the smallest for `n` (the
//!   canonical one), what it returns must seal back to the same blob. An authentic blob with a bad
//!   padding is `Malformed`, never `Decrypt`, never a panic;
//! * an arbitrary input opened as a blob under a real key yields a plaintext only when it is
//!   exactly what `seal` makes of that plaintext with its nonce (in the smallest bucket).

use airlock_share::{
    aad, bucket_len, check_blob, decode_b64, decode_blob, derive, encode_b64, encode_blob, open,
    parse_proof, seal_with_nonce, valid_id, Derived, Limits, Link, LinkKey, ShareError, ID_LEN,
    LEN_PREFIX, NONCE_LEN,
};
use std::sync::OnceLock;

/// A fixed share id (22 base64url characters).
const ID: &str = "EREREREREREREREREREREQ";
const LIMITS: Limits = Limits { expires_at: 1_900_000_000, views: 1, passphrase: false };
const NONCE: [u8; NONCE_LEN] = [0x22; NONCE_LEN];
/// Plaintext limit for `seal` and `check_blob`.
const MAX: usize = 1 << 16;

fn derived() -> &'static Derived {
    static D: OnceLock<Derived> = OnceLock::new();
    D.get_or_init(|| {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        derive(&LinkKey::from_bytes(k), ID, None)
    })
}

/// Runs the property on one input; panics (a fuzz crash, a failed test) when it does not hold.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let texts = [text.as_ref(), text.trim()];
    for t in texts {
        if let Err(why) = link_round_trip(t) {
            panic!("share_envelope property (link): {why}\ninput: {t:?}");
        }
        if let Err(why) = base64_canonical(t) {
            panic!("share_envelope property (base64url): {why}\ninput: {t:?}");
        }
    }
    // The fragment and path pieces of a link, as `Link::parse` cuts them.
    if let Some((_, frag)) = text.split_once('#') {
        if let Err(why) = base64_canonical(frag.strip_suffix(".p").unwrap_or(frag)) {
            panic!("share_envelope property (key): {why}");
        }
    }
    let _ = check_blob(data, MAX);
    if let Err(why) = padding_canonical(data) {
        panic!("share_envelope property (padding): {why}");
    }
    // An arbitrary blob under a real key: never a panic, and what opens is exactly what `seal`
    // makes of its plaintext with that nonce (no forgery, no second form of a blob).
    if let Ok(s) = open(data, derived(), ID, &LIMITS) {
        let s = s.expose_secret();
        let nonce: [u8; NONCE_LEN] = data[..NONCE_LEN].try_into().expect("open checked the length");
        let again = seal_with_nonce(s, derived(), ID, &LIMITS, MAX, nonce).expect("re-seal");
        if again.len() == data.len() && again != data {
            panic!("share_envelope property: a {}-byte blob opened that seal does not produce", data.len());
        }
    }
}

/// `Link::parse` then `Link::render`; `Err` says how the round trip failed.
pub fn link_round_trip(s: &str) -> Result<(), String> {
    let Ok(l) = Link::parse(s) else { return Ok(()) };
    if !valid_id(&l.id) {
        return Err(format!("a parsed link has an invalid id {:?}", l.id));
    }
    let key_text = l.key.encode();
    let rendered = Link::render(&l.base, &l.id, &l.key, l.passphrase);
    let back = Link::parse(&rendered).map_err(|e| format!("the rendered link {:?} does not parse: {e}", rendered.as_str()))?;
    let base = l.base.trim_end_matches('/');
    if back.base != base || back.id != l.id || back.passphrase != l.passphrase || *back.key.encode() != *key_text {
        return Err(format!("the rendered link {:?} parses to other fields", rendered.as_str()));
    }
    // Canonical input: exactly what render writes.
    let canonical = format!("{base}/s/{}#{}{}", l.id, key_text.as_str(), if l.passphrase { ".p" } else { "" });
    if s == canonical && rendered.as_str() != s {
        return Err(format!("a canonical link renders as {:?}", rendered.as_str()));
    }
    Ok(())
}

/// `decode` then `encode` gives back `s` whenever `decode` accepts it (one spelling per value);
/// `Err` names the decoder that accepts another spelling.
pub fn round_trips(name: &str, decode: &dyn Fn(&str) -> Option<Vec<u8>>, encode: &dyn Fn(&[u8]) -> String, s: &str) -> Result<(), String> {
    match decode(s) {
        Some(b) if encode(&b) != s => Err(format!("{name} accepts a non-canonical spelling {s:?} (canonical: {:?})", encode(&b))),
        _ => Ok(()),
    }
}

/// Every base64url decoder of the crate: what decodes re-encodes to the same text.
pub fn base64_canonical(s: &str) -> Result<(), String> {
    round_trips("decode_b64", &decode_b64, &encode_b64, s)?;
    round_trips("decode_blob", &|s| decode_blob(s).ok(), &encode_blob, s)?;
    round_trips("parse_proof", &|s| parse_proof(s).map(|p| p.to_vec()), &encode_b64, s)?;
    round_trips("LinkKey::parse", &|s| LinkKey::parse(s).ok().and_then(|k| decode_b64(&k.encode())), &encode_b64, s)?;
    round_trips("valid_id", &|s| valid_id(s).then(|| decode_b64(s).unwrap_or_default()), &encode_b64, s)?;
    if valid_id(s) && decode_b64(s).map(|b| b.len()) != Some(ID_LEN) {
        return Err(format!("valid_id accepts {s:?}, which is not {ID_LEN} bytes of base64url"));
    }
    Ok(())
}

/// Seals `data` as a padded plaintext (not through `seal`, which always pads correctly) and
/// checks what `open` makes of it.
pub fn padding_canonical(data: &[u8]) -> Result<(), String> {
    use ring::aead;
    let padded_len = if data.len() <= 256 { 256 } else { 512 };
    let mut padded = data.to_vec();
    padded.truncate(padded_len);
    padded.resize(padded_len, 0);
    let plain = padded.clone();
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, derived().enc_key_bytes()).map_err(|_| "key")?,
    );
    key.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(NONCE), aead::Aad::from(aad(ID, &LIMITS)), &mut padded)
        .map_err(|_| "seal")?;
    let mut blob = NONCE.to_vec();
    blob.extend_from_slice(&padded);
    if check_blob(&blob, MAX).is_err() {
        return Err("check_blob refuses a blob of a bucket size".into());
    }
    // What the format says about this padded plaintext, computed here.
    let n = u32::from_be_bytes([
        *data.first().unwrap_or(&0),
        *data.get(1).unwrap_or(&0),
        *data.get(2).unwrap_or(&0),
        *data.get(3).unwrap_or(&0),
    ]) as usize;
    let well_formed = n <= padded_len - LEN_PREFIX
        && data.get(LEN_PREFIX + n..padded_len.min(data.len())).is_none_or(|rest| rest.iter().all(|&b| b == 0));
    match open(&blob, derived(), ID, &LIMITS) {
        Ok(s) => {
            let s = s.expose_secret();
            if s.len() != n || plain.get(LEN_PREFIX..LEN_PREFIX + n) != Some(s) {
                return Err(format!("open returned {} bytes for a length prefix of {n}", s.len()));
            }
            // The opener accepts any bucket (docs/share-format.md, Padding); the smallest bucket
            // for the length is the canonical one, and `seal` must give it back byte for byte.
            let again = seal_with_nonce(s, derived(), ID, &LIMITS, MAX, NONCE).map_err(|e| format!("re-seal: {e}"))?;
            if bucket_len(n) == padded_len && again != blob {
                return Err(format!("a {}-byte plaintext opened from a blob that does not re-seal to it (prefix {n}, {padded_len} padded)", s.len()));
            }
            if !well_formed {
                return Err(format!("open accepted a padding the format does not produce (prefix {n}, {padded_len} padded)"));
            }
        }
        Err(ShareError::Malformed) => {
            if well_formed {
                return Err(format!("open refused a well-formed padding (prefix {n}, {padded_len} padded)"));
            }
        }
        Err(e) => return Err(format!("an authentic blob failed with {e:?}")),
    }
    Ok(())
}
