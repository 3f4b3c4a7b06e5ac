// airlock intake format v1 in WebCrypto (docs/request-format.md). Mirrors crates/share/src/intake.rs.
// HPKE (RFC 9180) base mode, SEAL only: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
// Classic script: defines window.AirlockRequest (globalThis.AirlockRequest outside a browser).
// No third-party code.
(function () {
  'use strict';
  const te = new TextEncoder();
  const INFO = te.encode('airlock-request-v1');
  const KEM_ID = 0x0020;
  const KDF_ID = 0x0001;
  const AEAD_ID = 0x0002;
  const MODE_BASE = 0x00;
  const NSECRET = 32; // KEM shared secret (SHA-256 output)
  const NK = 32; // AES-256-GCM key
  const NN = 12; // AES-GCM nonce
  const NH = 32; // HKDF-SHA256 output
  // PKCS#8 wrapping of a raw X25519 private key (RFC 8410): WebCrypto imports no raw private key.
  const PKCS8_X25519_PREFIX = new Uint8Array([
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
  ]);

  function b64u(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function unb64u(text) {
    if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('not base64url');
    let s = text.replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) s += '=';
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function concat() {
    let n = 0;
    for (let i = 0; i < arguments.length; i++) n += arguments[i].length;
    const out = new Uint8Array(n);
    let at = 0;
    for (let i = 0; i < arguments.length; i++) {
      out.set(arguments[i], at);
      at += arguments[i].length;
    }
    return out;
  }

  // I2OSP(n, w): n as a w-byte big-endian string.
  function i2osp(n, w) {
    const out = new Uint8Array(w);
    for (let i = w - 1; i >= 0 && n > 0; i--) {
      out[i] = n & 0xff;
      n = Math.floor(n / 256);
    }
    return out;
  }

  // The one-time link format's padding buckets (docs/share-format.md, "Padding").
  function bucketLen(n) {
    const m = n + 4;
    if (m <= 256) return 256;
    if (m <= 65536) {
      let p = 256;
      while (p < m) p *= 2;
      return p;
    }
    return Math.ceil(m / 65536) * 65536;
  }

  // uint32_be(n) || value || zero bytes up to the bucket.
  function pad(value) {
    const padded = new Uint8Array(bucketLen(value.length));
    new DataView(padded.buffer).setUint32(0, value.length, false);
    padded.set(value, 4);
    return padded;
  }

  // HKDF-SHA256 (RFC 5869) from HMAC-SHA256.
  async function hmac(key, data) {
    // An empty HKDF salt means HashLen zero bytes (RFC 5869 §2.2); HMAC pads its key with zeros
    // anyway, and WebCrypto refuses an empty HMAC key.
    const k = await crypto.subtle.importKey('raw', key.length ? key : new Uint8Array(NH), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return new Uint8Array(await crypto.subtle.sign('HMAC', k, data));
  }

  function extract(salt, ikm) {
    return hmac(salt, ikm);
  }

  async function expand(prk, info, len) {
    if (len > 255 * NH) throw new Error('HKDF output too long');
    const out = new Uint8Array(len);
    let t = new Uint8Array(0);
    for (let i = 1, at = 0; at < len; i++) {
      t = await hmac(prk, concat(t, info, new Uint8Array([i])));
      out.set(t.subarray(0, Math.min(NH, len - at)), at);
      at += NH;
    }
    return out;
  }

  // RFC 9180 §4: LabeledExtract and LabeledExpand.
  const HPKE_V1 = te.encode('HPKE-v1');
  const KEM_SUITE_ID = concat(te.encode('KEM'), i2osp(KEM_ID, 2));
  const HPKE_SUITE_ID = concat(te.encode('HPKE'), i2osp(KEM_ID, 2), i2osp(KDF_ID, 2), i2osp(AEAD_ID, 2));

  function labeledExtract(suiteId, salt, label, ikm) {
    return extract(salt, concat(HPKE_V1, suiteId, te.encode(label), ikm));
  }

  function labeledExpand(suiteId, prk, label, info, len) {
    return expand(prk, concat(i2osp(len, 2), HPKE_V1, suiteId, te.encode(label), info), len);
  }

  // RFC 9180 §4.1: ExtractAndExpand of DHKEM.
  async function extractAndExpand(dh, kemContext) {
    const eaePrk = await labeledExtract(KEM_SUITE_ID, new Uint8Array(0), 'eae_prk', dh);
    return labeledExpand(KEM_SUITE_ID, eaePrk, 'shared_secret', kemContext, NSECRET);
  }

  async function importPublic(pk) {
    if (!(pk instanceof Uint8Array) || pk.length !== 32) throw new Error('not an X25519 public key');
    return crypto.subtle.importKey('raw', pk, { name: 'X25519' }, true, []);
  }

  async function importPrivate(sk) {
    if (!(sk instanceof Uint8Array) || sk.length !== 32) throw new Error('not an X25519 private key');
    return crypto.subtle.importKey('pkcs8', concat(PKCS8_X25519_PREFIX, sk), { name: 'X25519' }, false, ['deriveBits']);
  }

  // DH(skE, pkR); an all-zero result (pkR of low order) is refused (RFC 9180 §7.1.4).
  async function dh(privateKey, pkR) {
    const bits = new Uint8Array(await crypto.subtle.deriveBits({ name: 'X25519', public: await importPublic(pkR) }, privateKey, 256));
    if (bits.every(function (b) { return b === 0; })) throw new Error('not an X25519 public key');
    return bits;
  }

  // RFC 9180 §5.1: KeySchedule for mode_base (no PSK).
  async function keySchedule(sharedSecret, info) {
    const pskIdHash = await labeledExtract(HPKE_SUITE_ID, new Uint8Array(0), 'psk_id_hash', new Uint8Array(0));
    const infoHash = await labeledExtract(HPKE_SUITE_ID, new Uint8Array(0), 'info_hash', info);
    const context = concat(new Uint8Array([MODE_BASE]), pskIdHash, infoHash);
    const secret = await labeledExtract(HPKE_SUITE_ID, sharedSecret, 'secret', new Uint8Array(0));
    const key = await labeledExpand(HPKE_SUITE_ID, secret, 'key', context, NK);
    const baseNonce = await labeledExpand(HPKE_SUITE_ID, secret, 'base_nonce', context, NN);
    return { key: key, baseNonce: baseNonce };
  }

  // RFC 9180 §5.2: the nonce of message `seq` is base_nonce XOR I2OSP(seq, Nn).
  function nonceFor(baseNonce, seq) {
    const s = i2osp(seq, NN);
    const out = new Uint8Array(NN);
    for (let i = 0; i < NN; i++) out[i] = baseNonce[i] ^ s[i];
    return out;
  }

  // SetupBaseS with a given ephemeral key, then Seal of message `seq` (0 for single-shot).
  async function sealWith(ephemeralPrivate, enc, pkR, plaintext, aad, info, seq) {
    const dhBytes = await dh(ephemeralPrivate, pkR);
    const sharedSecret = await extractAndExpand(dhBytes, concat(enc, pkR));
    dhBytes.fill(0);
    const ks = await keySchedule(sharedSecret, info);
    const nonce = nonceFor(ks.baseNonce, seq || 0);
    const key = await crypto.subtle.importKey('raw', ks.key, 'AES-GCM', false, ['encrypt']);
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad, tagLength: 128 }, key, plaintext));
    return { enc: enc, ciphertext: ct, sharedSecret: sharedSecret, key: ks.key, baseNonce: ks.baseNonce, nonce: nonce };
  }

  // Test hook (vectors only; an ephemeral key must never repeat): raw HPKE SealBase of
  // `plaintext` (no padding) with the given ephemeral key pair, as message `seq` (default 0).
  // Returns raw bytes: {enc, ciphertext, sharedSecret, key, baseNonce, nonce}.
  async function _sealWithEphemeral(skEBytes, pkEBytes, pkRBytes, plaintext, aad, info, seq) {
    return sealWith(await importPrivate(skEBytes), pkEBytes, pkRBytes, plaintext, aad, info, seq);
  }

  // Seals `valueBytes` to the request's public key (base64url) with `aadBytes` (the UTF-8 bytes
  // of the request's context): pads it, makes a fresh ephemeral key and returns the wire fields
  // {enc, ciphertext} in base64url.
  async function seal(publicKeyB64u, valueBytes, aadBytes, maxValueBytes) {
    const pkR = unb64u(publicKeyB64u);
    if (pkR.length !== 32) throw new Error('not an X25519 public key');
    if (!(valueBytes instanceof Uint8Array)) throw new Error('the value must be bytes');
    if (!(valueBytes.length <= maxValueBytes) || valueBytes.length > 0xffffffff - 4) {
      throw new Error('the value is larger than the request allows (' + maxValueBytes + ' bytes)');
    }
    const eph = await crypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']);
    const enc = new Uint8Array(await crypto.subtle.exportKey('raw', eph.publicKey));
    const padded = pad(valueBytes);
    try {
      const out = await sealWith(eph.privateKey, enc, pkR, padded, aadBytes, INFO, 0);
      out.sharedSecret.fill(0);
      out.key.fill(0);
      return { enc: b64u(out.enc), ciphertext: b64u(out.ciphertext) };
    } finally {
      padded.fill(0);
    }
  }

  const api = {
    INFO: INFO, KEM_ID: KEM_ID, KDF_ID: KDF_ID, AEAD_ID: AEAD_ID,
    b64u: b64u, unb64u: unb64u, bucketLen: bucketLen, pad: pad,
    seal: seal, _sealWithEphemeral: _sealWithEphemeral,
  };
  if (typeof window !== 'undefined') window.AirlockRequest = api;
  globalThis.AirlockRequest = api;
})();
