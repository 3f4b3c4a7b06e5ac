//! The one-time link format, version 1 (`docs/share-format.md` is the normative text).
//!
//! A link is `{base}/s/{id}#{key}` (or `#{key}.p` when a passphrase is needed). The key is 32
//! random bytes that only the link holder has; from it (and the passphrase, if any) HKDF-SHA256
//! derives the AES-256-GCM key and the consume proof. The server stores the ciphertext and
//! SHA-256 of the proof, never the key, so it can neither read a share nor let someone without
//! the key burn one. The associated data binds the version, id, expiry, view limit and the
//! passphrase flag, so a server that extends or swaps them makes decryption fail.
//!
//! Everything here is pure computation with `ring`; the browser does the same with WebCrypto
//! (`crates/server/web/share-format.js`), and `tests/vectors.json` pins both to the same bytes.
#![forbid(unsafe_code)]

pub mod hints;
pub mod intake;

use airlock_core::Secret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::{aead, digest, hkdf, pbkdf2};
use std::num::NonZeroU32;
use zeroize::Zeroizing;

/// The format version, bound into the associated data.
pub const VERSION: &str = "airlock-share-v1";
/// PBKDF2-HMAC-SHA256 iterations for a passphrase (OWASP 2023 figure; WebCrypto offers it).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Bytes of the random link key.
pub const KEY_LEN: usize = 32;
/// Bytes of a random share id (22 base64url characters).
pub const ID_LEN: usize = 16;
/// Bytes of the AES-GCM nonce prepended to the ciphertext.
pub const NONCE_LEN: usize = 12;
/// Bytes of the AES-GCM tag appended to the ciphertext.
pub const TAG_LEN: usize = 16;
/// The padded plaintext starts with its real length as a big-endian u32.
pub const LEN_PREFIX: usize = 4;

const INFO_ENC: &[u8] = b"airlock-share-v1 encryption key";
const INFO_PROOF: &[u8] = b"airlock-share-v1 consume proof";

/// Why a share could not be built, parsed or opened. Messages carry no key, proof or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// The link is not `{base}/s/{id}#{key}` with a well-formed id and key.
    #[error("not a one-time link: {0}")]
    BadLink(&'static str),
    /// The id is not 22 base64url characters.
    #[error("not a share id")]
    BadId,
    /// The ciphertext is not base64url, or its length is not a padded bucket plus nonce and tag.
    #[error("malformed ciphertext")]
    Malformed,
    /// Authentication failed: wrong key or passphrase, or the server changed the ciphertext,
    /// the expiry or the view limit.
    #[error("the share does not decrypt (wrong key or passphrase, or it was altered)")]
    Decrypt,
    /// The plaintext is larger than the format (or the configured limit) allows.
    #[error("the secret is larger than {0} bytes")]
    TooLarge(usize),
    /// The system random generator failed.
    #[error("no randomness available")]
    Random,
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ShareError>;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// True when `id` is 22 base64url characters encoding 16 bytes.
pub fn valid_id(id: &str) -> bool {
    id.len() == 22 && unb64(id).is_some_and(|b| b.len() == ID_LEN)
}

/// A fresh random share id.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; ID_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).map_err(|_| ShareError::Random)?;
    Ok(b64(&b))
}

/// The link key: 32 random bytes, zeroized on drop, never printed by `Debug`.
#[derive(Clone)]
pub struct LinkKey(Zeroizing<[u8; KEY_LEN]>);

impl LinkKey {
    /// A fresh random key.
    pub fn generate() -> Result<LinkKey> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k[..]).map_err(|_| ShareError::Random)?;
        Ok(LinkKey(k))
    }

    /// From raw bytes (test vectors).
    pub fn from_bytes(b: [u8; KEY_LEN]) -> LinkKey {
        LinkKey(Zeroizing::new(b))
    }

    /// Parses the base64url form found in a link's fragment.
    pub fn parse(s: &str) -> Result<LinkKey> {
        let b = Zeroizing::new(unb64(s).ok_or(ShareError::BadLink("the key is not base64url"))?);
        let arr: [u8; KEY_LEN] = b.as_slice().try_into().map_err(|_| ShareError::BadLink("the key is not 32 bytes"))?;
        Ok(LinkKey::from_bytes(arr))
    }

    /// The base64url form (for the fragment). Treat it as the secret it is.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(b64(&self.0[..]))
    }
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey([hidden])")
    }
}

/// The limits a share was created with; all of them are in the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The view limit the share was created with.
    pub views: u32,
    /// Whether a passphrase is mixed into the key derivation.
    pub passphrase: bool,
}

/// The associated data: `airlock-share-v1\n{id}\n{expires_at}\n{views}\n{p|-}`.
pub fn aad(id: &str, limits: &Limits) -> Vec<u8> {
    format!(
        "{VERSION}\n{id}\n{}\n{}\n{}",
        limits.expires_at,
        limits.views,
        if limits.passphrase { "p" } else { "-" }
    )
    .into_bytes()
}

/// The keys derived from a link key (and passphrase) for one share id.
pub struct Derived {
    enc: Zeroizing<[u8; 32]>,
    proof: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived([hidden])")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf32(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    let info = [info];
    prk.expand(&info, Len(32)).expect("32 bytes is a valid HKDF-SHA256 length").fill(&mut out[..]).expect("fill");
    out
}

/// Derives the encryption key and the consume proof.
///
/// `IKM = K || PBKDF2-HMAC-SHA256(passphrase, "airlock-share-v1 passphrase " || id, 600000, 32)`
/// (just `K` without a passphrase); both outputs are HKDF-SHA256 of `IKM` with salt
/// `"airlock-share-v1 " || id` and distinct info labels.
pub fn derive(key: &LinkKey, id: &str, passphrase: Option<&str>) -> Derived {
    let mut ikm = Zeroizing::new(Vec::with_capacity(64));
    ikm.extend_from_slice(&key.0[..]);
    if let Some(p) = passphrase {
        let mut w = Zeroizing::new([0u8; 32]);
        let salt = format!("{VERSION} passphrase {id}");
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero"),
            salt.as_bytes(),
            p.as_bytes(),
            &mut w[..],
        );
        ikm.extend_from_slice(&w[..]);
    }
    let salt = format!("{VERSION} {id}");
    Derived { enc: hkdf32(&ikm, salt.as_bytes(), INFO_ENC), proof: hkdf32(&ikm, salt.as_bytes(), INFO_PROOF) }
}

impl Derived {
    /// The consume proof, base64url, to send to `POST /v1/shares/{id}/consume`.
    pub fn proof(&self) -> Zeroizing<String> {
        Zeroizing::new(b64(&self.proof[..]))
    }

    /// SHA-256 of the proof: what the server stores.
    pub fn proof_hash(&self) -> [u8; 32] {
        proof_hash(&self.proof[..])
    }

    /// The raw encryption key (test vectors only).
    pub fn enc_key_bytes(&self) -> &[u8] {
        &self.enc[..]
    }

    /// The raw proof bytes (test vectors only).
    pub fn proof_bytes(&self) -> &[u8] {
        &self.proof[..]
    }
}

/// SHA-256 of a proof.
pub fn proof_hash(proof: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, proof).as_ref().try_into().expect("32 bytes")
}

/// Parses a base64url proof into bytes; None when it is not 32 bytes of base64url.
pub fn parse_proof(s: &str) -> Option<[u8; 32]> {
    unb64(s)?.as_slice().try_into().ok()
}

/// The padded size for `n` plaintext bytes: the length prefix plus the plaintext rounded up to
/// 256 bytes, then to the next power of two up to 64 KiB, then to a multiple of 64 KiB.
pub fn bucket_len(n: usize) -> usize {
    let m = n + LEN_PREFIX;
    if m <= 256 {
        256
    } else if m <= 65536 {
        m.next_power_of_two()
    } else {
        m.div_ceil(65536) * 65536
    }
}

/// True when `padded` is a size that [`bucket_len`] produces.
pub fn is_bucket(padded: usize) -> bool {
    padded >= 256 && (padded <= 65536 && padded.is_power_of_two() || padded > 65536 && padded.is_multiple_of(65536))
}

/// The largest sealed blob (nonce, padded plaintext, tag) for a plaintext limit.
pub fn max_blob_len(max_plaintext: usize) -> usize {
    NONCE_LEN + bucket_len(max_plaintext) + TAG_LEN
}

/// Checks the shape of a sealed blob (what the server can check without the key).
pub fn check_blob(blob: &[u8], max_plaintext: usize) -> Result<()> {
    if blob.len() < NONCE_LEN + TAG_LEN || !is_bucket(blob.len() - NONCE_LEN - TAG_LEN) {
        return Err(ShareError::Malformed);
    }
    if blob.len() > max_blob_len(max_plaintext) {
        return Err(ShareError::TooLarge(max_plaintext));
    }
    Ok(())
}

/// Decodes a base64url ciphertext as carried in JSON.
pub fn decode_blob(s: &str) -> Result<Vec<u8>> {
    unb64(s).ok_or(ShareError::Malformed)
}

/// Encodes a sealed blob for JSON.
pub fn encode_blob(b: &[u8]) -> String {
    b64(b)
}

/// Seals `plaintext` with a random nonce: returns `nonce || AES-256-GCM(padded) || tag`.
pub fn seal(plaintext: &[u8], derived: &Derived, id: &str, limits: &Limits, max_plaintext: usize) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).map_err(|_| ShareError::Random)?;
    seal_with_nonce(plaintext, derived, id, limits, max_plaintext, nonce)
}

/// As [`seal`] with a given nonce. Only for test vectors: a nonce must never repeat under a key.
pub fn seal_with_nonce(
    plaintext: &[u8],
    derived: &Derived,
    id: &str,
    limits: &Limits,
    max_plaintext: usize,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>> {
    if !valid_id(id) {
        return Err(ShareError::BadId);
    }
    if plaintext.len() > max_plaintext || plaintext.len() > u32::MAX as usize - LEN_PREFIX {
        return Err(ShareError::TooLarge(max_plaintext));
    }
    let padded_len = bucket_len(plaintext.len());
    let mut buf = Zeroizing::new(Vec::with_capacity(NONCE_LEN + padded_len + TAG_LEN));
    buf.extend_from_slice(&(plaintext.len() as u32).to_be_bytes());
    buf.extend_from_slice(plaintext);
    buf.resize(padded_len, 0);
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &derived.enc[..]).expect("32-byte key"));
    let mut body: Vec<u8> = buf.to_vec();
    key.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad(id, limits)), &mut body)
        .map_err(|_| ShareError::Malformed)?;
    let mut out = Vec::with_capacity(NONCE_LEN + body.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a sealed blob. Fails with [`ShareError::Decrypt`] on any authentication failure and
/// with [`ShareError::Malformed`] when the padding is not the format's.
pub fn open(blob: &[u8], derived: &Derived, id: &str, limits: &Limits) -> Result<Secret> {
    if blob.len() < NONCE_LEN + TAG_LEN || !is_bucket(blob.len() - NONCE_LEN - TAG_LEN) {
        return Err(ShareError::Malformed);
    }
    let nonce: [u8; NONCE_LEN] = blob[..NONCE_LEN].try_into().expect("length checked");
    let mut body = Zeroizing::new(blob[NONCE_LEN..].to_vec());
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &derived.enc[..]).expect("32-byte key"));
    let plain = key
        .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad(id, limits)), &mut body[..])
        .map_err(|_| ShareError::Decrypt)?;
    let n = u32::from_be_bytes(plain[..LEN_PREFIX].try_into().expect("bucket >= 256")) as usize;
    if n > plain.len() - LEN_PREFIX || plain[LEN_PREFIX + n..].iter().any(|&b| b != 0) {
        return Err(ShareError::Malformed);
    }
    Ok(Secret::new(plain[LEN_PREFIX..LEN_PREFIX + n].to_vec()))
}

/// A parsed link. The key is inside; do not log it.
#[derive(Debug)]
pub struct Link {
    /// Everything before `/s/` (scheme, host, port, optional path prefix).
    pub base: String,
    /// The share id.
    pub id: String,
    /// The key from the fragment.
    pub key: LinkKey,
    /// True when the fragment ends in `.p`: a passphrase is mixed into the key derivation.
    pub passphrase: bool,
}

impl Link {
    /// Parses `{base}/s/{id}#{key}` or `{base}/s/{id}#{key}.p`.
    pub fn parse(s: &str) -> Result<Link> {
        let s = s.trim();
        let (before, frag) = s.split_once('#').ok_or(ShareError::BadLink("no #key fragment (was the link cut?)"))?;
        let (key_text, passphrase) = match frag.strip_suffix(".p") {
            Some(k) => (k, true),
            None => (frag, false),
        };
        let key = LinkKey::parse(key_text)?;
        let (base, id) = before.rsplit_once("/s/").ok_or(ShareError::BadLink("no /s/{id} path"))?;
        let id = id.trim_end_matches('/');
        if !valid_id(id) {
            return Err(ShareError::BadLink("the id is not 22 base64url characters"));
        }
        let rest = base.strip_prefix("https://").or_else(|| base.strip_prefix("http://")).ok_or(ShareError::BadLink("the link is not http(s)"))?;
        // A host, and nothing that moves it: `https:///s/...` would render as `https:/s/...`
        // and reach whatever a client makes of an empty host; `user@` and `\` can make a
        // reader see another host than the client uses.
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '\\' | '?' | '#')) {
            return Err(ShareError::BadLink("the link has no host, or a host with characters a link never has"));
        }
        Ok(Link { base: base.to_owned(), id: id.to_owned(), key, passphrase })
    }

    /// The link text. It carries the key: hand it only to the recipient.
    pub fn render(base: &str, id: &str, key: &LinkKey, passphrase: bool) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{}/s/{id}#{}{}",
            base.trim_end_matches('/'),
            key.encode().as_str(),
            if passphrase { ".p" } else { "" }
        ))
    }
}

/// Everything a creator sends to `POST /v1/shares`, built from a plaintext.
#[derive(Debug)]
pub struct NewShare {
    /// The share id.
    pub id: String,
    /// The sealed blob.
    pub blob: Vec<u8>,
    /// SHA-256 of the consume proof.
    pub proof_hash: [u8; 32],
    /// The limits bound into the associated data.
    pub limits: Limits,
    /// The link key (goes only into the link).
    pub key: LinkKey,
}

impl NewShare {
    /// Generates an id and key and seals `plaintext`.
    pub fn create(plaintext: &[u8], passphrase: Option<&str>, expires_at: i64, views: u32, max_plaintext: usize) -> Result<NewShare> {
        let id = new_id()?;
        let key = LinkKey::generate()?;
        let limits = Limits { expires_at, views, passphrase: passphrase.is_some() };
        let d = derive(&key, &id, passphrase);
        let blob = seal(plaintext, &d, &id, &limits, max_plaintext)?;
        Ok(NewShare { proof_hash: d.proof_hash(), id, blob, limits, key })
    }

    /// [`NewShare::create`] for a secret the broker holds (`share_secret`): the plaintext is
    /// read here, where it is sealed, and nowhere else.
    pub fn for_secret(secret: &Secret, expires_at: i64, views: u32, max_plaintext: usize) -> Result<NewShare> {
        NewShare::create(secret.expose_secret(), None, expires_at, views, max_plaintext)
    }

    /// The JSON body for `POST /v1/shares` (ciphertext and proof hash in base64url).
    pub fn request_fields(&self) -> (String, String) {
        (encode_blob(&self.blob), b64(&self.proof_hash))
    }
}

/// base64url (no padding) of bytes, as the wire format uses everywhere.
pub fn encode_b64(b: &[u8]) -> String {
    b64(b)
}

/// Decodes base64url (no padding); None on any other character.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    unb64(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn buckets() {
        assert_eq!(bucket_len(0), 256);
        assert_eq!(bucket_len(252), 256);
        assert_eq!(bucket_len(253), 512);
        assert_eq!(bucket_len(65532), 65536);
        assert_eq!(bucket_len(65533), 131072);
        assert_eq!(bucket_len(MAX), 17 * 65536);
        for n in [0, 1, 300, 5000, 70000, MAX] {
            assert!(is_bucket(bucket_len(n)));
        }
        assert!(!is_bucket(300));
    }

    #[test]
    fn t17_round_trip_and_tamper() {
        let s = NewShare::create(b"hunter2", None, 1_900_000_000, 1, MAX).unwrap();
        let d = derive(&s.key, &s.id, None);
        assert_eq!(open(&s.blob, &d, &s.id, &s.limits).unwrap().expose_secret(), b"hunter2");
        // The server extends the expiry or the view limit: decryption fails.
        let longer = Limits { expires_at: s.limits.expires_at + 3600, ..s.limits };
        assert_eq!(open(&s.blob, &d, &s.id, &longer).unwrap_err(), ShareError::Decrypt);
        let more = Limits { views: 5, ..s.limits };
        assert_eq!(open(&s.blob, &d, &s.id, &more).unwrap_err(), ShareError::Decrypt);
        // Swapped to another id.
        let other = new_id().unwrap();
        assert_eq!(open(&s.blob, &derive(&s.key, &other, None), &other, &s.limits).unwrap_err(), ShareError::Decrypt);
        // A flipped ciphertext byte.
        let mut bad = s.blob.clone();
        bad[20] ^= 1;
        assert_eq!(open(&bad, &d, &s.id, &s.limits).unwrap_err(), ShareError::Decrypt);
        // Truncated.
        assert_eq!(open(&s.blob[..100], &d, &s.id, &s.limits).unwrap_err(), ShareError::Malformed);
    }

    #[test]
    fn t17_oversized_is_refused() {
        assert_eq!(NewShare::create(&vec![b'a'; 1001], None, 0, 1, 1000).unwrap_err(), ShareError::TooLarge(1000));
        let s = NewShare::create(&vec![b'a'; 1000], None, 0, 1, 1000).unwrap();
        assert!(check_blob(&s.blob, 1000).is_ok());
        assert_eq!(check_blob(&s.blob, 900), Ok(()), "same bucket");
        assert_eq!(check_blob(&s.blob, 100), Err(ShareError::TooLarge(100)));
        let big = NewShare::create(&vec![b'a'; 70000], None, 0, 1, 100000).unwrap();
        assert_eq!(check_blob(&big.blob, 1000), Err(ShareError::TooLarge(1000)));
        assert_eq!(check_blob(&big.blob[1..], 100000), Err(ShareError::Malformed));
    }

    #[test]
    fn links_parse_and_render() {
        let k = LinkKey::generate().unwrap();
        let id = new_id().unwrap();
        let l = Link::render("http://127.0.0.1:7878/", &id, &k, true);
        let p = Link::parse(&l).unwrap();
        assert_eq!(p.base, "http://127.0.0.1:7878");
        assert_eq!(p.id, id);
        assert!(p.passphrase);
        assert_eq!(p.key.encode(), k.encode());
        assert!(Link::parse(&format!("http://x/s/{id}")).is_err(), "no fragment");
        assert!(Link::parse(&format!("http://x/s/{id}#abc")).is_err(), "short key");
        assert!(Link::parse(&format!("http://x/s/short#{}", k.encode().as_str())).is_err());
        assert!(!format!("{p:?}").contains(k.encode().as_str()));
    }
}
