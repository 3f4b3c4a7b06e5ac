//! Intake links ("request a secret"): the end-to-end encryption of a value a person pastes into
//! the broker's page (`docs/request-format.md` is the normative text).
//!
//! Each request has its own X25519 key pair. The page encrypts the value to the public key with
//! HPKE (RFC 9180) in base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM
//! (kem 0x0020, kdf 0x0001, aead 0x0002), `info` = [`INFO`], and the request's canonical context
//! as associated data; only the broker process, which holds the private key under its vault,
//! can open it. Before sealing, the value is padded to a bucket (the one-time link format's
//! [`crate::bucket_len`]) so its length does not show on the wire.
//!
//! The browser side is `crates/server/web/request-format.js` (WebCrypto); the RFC's own test
//! vector for this suite pins both (`tests/intake.rs`).

use crate::{bucket_len, is_bucket, LEN_PREFIX, TAG_LEN};
use airlock_core::Secret;
use hpke::aead::{AeadTag, AesGcm256};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::{CryptoRng, RngCore};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::{Zeroize, Zeroizing};

pub use crate::{decode_b64, encode_b64};

/// The HPKE `info` string: binds every intake ciphertext to this format and version.
pub const INFO: &[u8] = b"airlock-request-v1";
/// HPKE KEM id: DHKEM(X25519, HKDF-SHA256).
pub const KEM_ID: u16 = 0x0020;
/// HPKE KDF id: HKDF-SHA256.
pub const KDF_ID: u16 = 0x0001;
/// HPKE AEAD id: AES-256-GCM.
pub const AEAD_ID: u16 = 0x0002;
/// Bytes of an X25519 public key, and of `enc` (the sender's ephemeral public key).
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an X25519 private key.
pub const SECRET_KEY_LEN: usize = 32;

type Kem = X25519HkdfSha256;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// Why a value could not be sealed or opened. Messages carry no key or plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// A key is not an X25519 key: not 32 bytes, or (for a public key) a low-order point with
    /// which no shared secret can be made.
    #[error("not an X25519 key")]
    BadKey,
    /// `enc` is not 32 bytes, or the ciphertext's length is not a padding bucket plus the tag.
    /// Checked before any cryptography.
    #[error("malformed ciphertext")]
    Malformed,
    /// Authentication failed: another key, or `enc`, the ciphertext or the associated data (the
    /// request's context) was altered.
    #[error("the value does not decrypt (wrong key, or it was altered)")]
    Decrypt,
    /// The ciphertext authenticated but its padding is not the format's (a non-zero byte after
    /// the value, or a length prefix past the end). Only a sender that misbehaves makes this.
    #[error("the decrypted value is not padded as the format requires")]
    BadPadding,
    /// The value (or, before any cryptography, the ciphertext) is larger than the request's
    /// `max_value_bytes` allows.
    #[error("the value is larger than the request allows")]
    TooLarge,
    /// The system random generator failed.
    #[error("no randomness available")]
    Random,
}

/// Result alias.
pub type Result<T> = std::result::Result<T, IntakeError>;

/// A request's X25519 key pair. The private key is zeroized on drop and never printed.
#[derive(Clone)]
pub struct IntakeKey {
    secret: Zeroizing<[u8; SECRET_KEY_LEN]>,
    public: [u8; PUBLIC_KEY_LEN],
}

impl IntakeKey {
    /// A fresh random key pair (32 bytes from the system random generator as the private key).
    ///
    /// # Panics
    ///
    /// When the operating system's random generator fails, as a thread RNG would.
    pub fn generate() -> IntakeKey {
        let mut secret = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret[..]).expect("the system random generator failed");
        IntakeKey::from_secret_bytes(&secret[..]).expect("32 bytes are an X25519 private key")
    }

    /// The key pair of a stored private key (32 bytes, as [`IntakeKey::secret_bytes`] gives).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<IntakeKey> {
        let secret: Zeroizing<[u8; SECRET_KEY_LEN]> = Zeroizing::new(bytes.try_into().map_err(|_| IntakeError::BadKey)?);
        let sk = PrivateKey::from_bytes(&secret[..]).map_err(|_| IntakeError::BadKey)?;
        let public: [u8; PUBLIC_KEY_LEN] = Kem::sk_to_pk(&sk).to_bytes().into();
        Ok(IntakeKey { secret, public })
    }

    /// [`IntakeKey::from_secret_bytes`] of a [`Secret`] (the broker's vault hands one back).
    pub fn from_secret(secret: &Secret) -> Result<IntakeKey> {
        IntakeKey::from_secret_bytes(secret.expose_secret())
    }

    /// The 32 private key bytes, for the broker to seal under its vault.
    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_vec())
    }

    /// The private key as a [`Secret`], for the broker to seal under its vault.
    pub fn to_secret(&self) -> Secret {
        Secret::new(self.secret.to_vec())
    }

    /// The 32 public key bytes.
    pub fn public_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// The public key in base64url without padding (43 characters), as the page receives it.
    pub fn public_b64(&self) -> String {
        encode_b64(&self.public)
    }

    fn private_key(&self) -> Result<PrivateKey> {
        PrivateKey::from_bytes(&self.secret[..]).map_err(|_| IntakeError::BadKey)
    }
}

impl std::fmt::Debug for IntakeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeKey").field("public", &self.public_b64()).field("secret", &"[hidden]").finish()
    }
}

/// A sealed value: what the page (or `airlock request`) posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// HPKE `enc`: the sender's ephemeral X25519 public key (32 bytes).
    pub enc: Vec<u8>,
    /// The AES-256-GCM ciphertext of the padded value, with its 16-byte tag appended.
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// `enc` in base64url without padding (the wire field `enc`).
    pub fn enc_b64(&self) -> String {
        encode_b64(&self.enc)
    }

    /// The ciphertext in base64url without padding (the wire field `ciphertext`).
    pub fn ciphertext_b64(&self) -> String {
        encode_b64(&self.ciphertext)
    }
}

/// The largest ciphertext (padded value and tag) a request with this limit accepts.
pub fn max_ciphertext_len(max_value_bytes: usize) -> usize {
    bucket_len(max_value_bytes.min(u32::MAX as usize - LEN_PREFIX)) + TAG_LEN
}

/// Checks what can be checked without the key: `enc` is 32 bytes, the ciphertext is not longer
/// than the limit allows ([`IntakeError::TooLarge`]) and its length is a padding bucket plus the
/// tag ([`IntakeError::Malformed`]).
pub fn check_shape(enc: &[u8], ciphertext: &[u8], max_value_bytes: usize) -> Result<()> {
    if ciphertext.len() > max_ciphertext_len(max_value_bytes) {
        return Err(IntakeError::TooLarge);
    }
    if enc.len() != PUBLIC_KEY_LEN || ciphertext.len() < TAG_LEN || !is_bucket(ciphertext.len() - TAG_LEN) {
        return Err(IntakeError::Malformed);
    }
    Ok(())
}

/// Seals `value` to a request's public key (32 bytes) with `aad` (the request's context bytes):
/// the client side, used by `airlock request` and the benchmarks; the page does the same in
/// JavaScript. The value is padded to a bucket first; one longer than `max_value_bytes` is
/// [`IntakeError::TooLarge`].
pub fn seal(public: &[u8], value: &[u8], aad: &[u8], max_value_bytes: usize) -> Result<Sealed> {
    let mut ikm_e = Zeroizing::new([0u8; SECRET_KEY_LEN]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut ikm_e[..]).map_err(|_| IntakeError::Random)?;
    seal_with_ephemeral_ikm(public, value, aad, max_value_bytes, &ikm_e)
}

/// As [`seal`], with the ephemeral key derived from `ikm_e` by the RFC's `DeriveKeyPair` (as the
/// RFC's test vectors give it). Only for test vectors: an ephemeral key must never repeat.
pub fn seal_with_ephemeral_ikm(
    public: &[u8],
    value: &[u8],
    aad: &[u8],
    max_value_bytes: usize,
    ikm_e: &[u8; SECRET_KEY_LEN],
) -> Result<Sealed> {
    let pk = PublicKey::from_bytes(public).map_err(|_| IntakeError::BadKey)?;
    if value.len() > max_value_bytes || value.len() > u32::MAX as usize - LEN_PREFIX {
        return Err(IntakeError::TooLarge);
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(bucket_len(value.len()) + TAG_LEN));
    buf.extend_from_slice(&(value.len() as u32).to_be_bytes());
    buf.extend_from_slice(value);
    buf.resize(bucket_len(value.len()), 0);
    let mut rng = OneShotRng { bytes: ikm_e, used: 0, overrun: false };
    let sealed =
        hpke::single_shot_seal_in_place_detached::<AesGcm256, HkdfSha256, Kem, _>(&OpModeS::Base, &pk, INFO, &mut buf[..], aad, &mut rng);
    if rng.overrun {
        return Err(IntakeError::Random);
    }
    let (enc, tag) = sealed.map_err(|_| IntakeError::BadKey)?;
    let mut ciphertext = buf.to_vec();
    ciphertext.extend_from_slice(&tag.to_bytes());
    Ok(Sealed { enc: enc.to_bytes().to_vec(), ciphertext })
}

/// Opens a sealed value with the request's key and `aad` (the broker's own stored copy of the
/// request's context), then removes the padding.
///
/// Before any cryptography, a ciphertext longer than the largest bucket for `max_value_bytes`
/// (plus the tag) is [`IntakeError::TooLarge`] and a malformed one [`IntakeError::Malformed`];
/// any authentication failure is [`IntakeError::Decrypt`]; a value longer than
/// `max_value_bytes` is [`IntakeError::TooLarge`]. On error nothing of the plaintext is returned.
pub fn open(key: &IntakeKey, enc: &[u8], ciphertext: &[u8], aad: &[u8], max_value_bytes: usize) -> Result<Secret> {
    check_shape(enc, ciphertext, max_value_bytes)?;
    let encapped = EncappedKey::from_bytes(enc).map_err(|_| IntakeError::Malformed)?;
    let (body, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
    let tag = AeadTag::<AesGcm256>::from_bytes(tag).map_err(|_| IntakeError::Malformed)?;
    let sk = key.private_key()?;
    let mut plain = Zeroizing::new(body.to_vec());
    if hpke::single_shot_open_in_place_detached::<AesGcm256, HkdfSha256, Kem>(
        &OpModeR::Base,
        &sk,
        &encapped,
        INFO,
        &mut plain[..],
        aad,
        &tag,
    )
    .is_err()
    {
        // The buffer holds garbage (or, with AES-GCM, the unauthenticated decryption): wipe it.
        plain.zeroize();
        return Err(IntakeError::Decrypt);
    }
    unpad(&plain, max_value_bytes)
}

/// The value inside a padded plaintext (`u32 BE n || value || zero bytes`).
fn unpad(plain: &[u8], max_value_bytes: usize) -> Result<Secret> {
    let prefix: [u8; LEN_PREFIX] = plain.get(..LEN_PREFIX).and_then(|p| p.try_into().ok()).ok_or(IntakeError::BadPadding)?;
    let n = u32::from_be_bytes(prefix) as usize;
    if n > plain.len() - LEN_PREFIX || plain[LEN_PREFIX + n..].iter().any(|&b| b != 0) {
        return Err(IntakeError::BadPadding);
    }
    if n > max_value_bytes {
        return Err(IntakeError::TooLarge);
    }
    Ok(Secret::new(plain[LEN_PREFIX..LEN_PREFIX + n].to_vec()))
}

/// Hands HPKE's key generation fixed input keying material (the ephemeral `ikmE`): the only
/// randomness a base-mode seal draws. Asked for more, it gives zeros and records the overrun,
/// which makes the seal fail rather than use a weak key.
struct OneShotRng<'a> {
    bytes: &'a [u8; SECRET_KEY_LEN],
    used: usize,
    overrun: bool,
}

impl RngCore for OneShotRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for d in dst.iter_mut() {
            match self.bytes.get(self.used) {
                Some(&b) => *d = b,
                None => {
                    *d = 0;
                    self.overrun = true;
                }
            }
            self.used += 1;
        }
    }
}

impl CryptoRng for OneShotRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_debug() {
        let k = IntakeKey::generate();
        let s = seal(&k.public_bytes(), b"hunter2", b"ctx", 1000).unwrap();
        assert_eq!(s.enc.len(), 32);
        assert_eq!(s.ciphertext.len(), 256 + 16);
        assert_eq!(open(&k, &s.enc, &s.ciphertext, b"ctx", 1000).unwrap().expose_secret(), b"hunter2");
        let again = IntakeKey::from_secret_bytes(&k.secret_bytes()).unwrap();
        assert_eq!(again.public_bytes(), k.public_bytes());
        let shown = format!("{k:?}");
        assert!(shown.contains(&k.public_b64()));
        assert!(!shown.contains(&encode_b64(&k.secret_bytes())));
        assert!(!shown.contains(&hex_of(&k.secret_bytes())));
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn padding_rules() {
        assert_eq!(unpad(&[0, 0, 0, 2, b'h', b'i', 0, 0], 10).unwrap().expose_secret(), b"hi");
        assert_eq!(unpad(&[0, 0, 0, 5, b'h', b'i', 0, 0], 10).unwrap_err(), IntakeError::BadPadding);
        assert_eq!(unpad(&[0, 0, 0, 2, b'h', b'i', 0, 1], 10).unwrap_err(), IntakeError::BadPadding);
        assert_eq!(unpad(&[0, 0, 0, 2, b'h', b'i', 0, 0], 1).unwrap_err(), IntakeError::TooLarge);
        assert_eq!(unpad(&[0, 0], 10).unwrap_err(), IntakeError::BadPadding);
    }

    #[test]
    fn bad_keys() {
        assert_eq!(IntakeKey::from_secret_bytes(&[1; 31]).unwrap_err(), IntakeError::BadKey);
        assert_eq!(seal(&[9; 31], b"x", b"", 10).unwrap_err(), IntakeError::BadKey);
        // The all-zero point has low order: no shared secret.
        assert_eq!(seal(&[0; 32], b"x", b"", 10).unwrap_err(), IntakeError::BadKey);
    }
}
