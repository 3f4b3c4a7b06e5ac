// airlock one-time link format v1 in WebCrypto (docs/share-format.md). Mirrors crates/share.
// Classic script: defines window.AirlockShare. No third-party code.
(function () {
  'use strict';
  const VERSION = 'airlock-share-v1';
  const PBKDF2_ITERATIONS = 600000;
  const te = new TextEncoder();

  function b64u(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function unb64u(text) {
    if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('not base64url');
    let s = text.replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) s += '=';
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function concat(a, b) {
    const out = new Uint8Array(a.length + b.length);
    out.set(a, 0);
    out.set(b, a.length);
    return out;
  }

  function randomBytes(n) {
    return crypto.getRandomValues(new Uint8Array(n));
  }

  function validId(id) {
    return typeof id === 'string' && /^[A-Za-z0-9_-]{22}$/.test(id) && unb64u(id).length === 16;
  }

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

  function aad(id, limits) {
    return te.encode(VERSION + '\n' + id + '\n' + limits.expiresAt + '\n' + limits.views + '\n' + (limits.passphrase ? 'p' : '-'));
  }

  async function derive(keyBytes, id, passphrase) {
    let ikm = keyBytes;
    if (passphrase !== null && passphrase !== undefined) {
      const pk = await crypto.subtle.importKey('raw', te.encode(passphrase), 'PBKDF2', false, ['deriveBits']);
      const w = await crypto.subtle.deriveBits(
        { name: 'PBKDF2', hash: 'SHA-256', salt: te.encode(VERSION + ' passphrase ' + id), iterations: PBKDF2_ITERATIONS },
        pk, 256);
      ikm = concat(keyBytes, new Uint8Array(w));
    }
    const hk = await crypto.subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
    const salt = te.encode(VERSION + ' ' + id);
    const enc = await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: salt, info: te.encode(VERSION + ' encryption key') }, hk, 256);
    const proof = await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: salt, info: te.encode(VERSION + ' consume proof') }, hk, 256);
    return { enc: new Uint8Array(enc), proof: new Uint8Array(proof) };
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  }

  async function seal(plain, derived, id, limits, nonce) {
    const padded = new Uint8Array(bucketLen(plain.length));
    new DataView(padded.buffer).setUint32(0, plain.length, false);
    padded.set(plain, 4);
    const iv = nonce || randomBytes(12);
    const key = await crypto.subtle.importKey('raw', derived.enc, 'AES-GCM', false, ['encrypt']);
    const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv: iv, additionalData: aad(id, limits), tagLength: 128 }, key, padded);
    return concat(iv, new Uint8Array(ct));
  }

  async function open(blob, derived, id, limits) {
    if (blob.length < 28) throw new Error('malformed ciphertext');
    const key = await crypto.subtle.importKey('raw', derived.enc, 'AES-GCM', false, ['decrypt']);
    const plain = new Uint8Array(await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: blob.slice(0, 12), additionalData: aad(id, limits), tagLength: 128 }, key, blob.slice(12)));
    const n = new DataView(plain.buffer).getUint32(0, false);
    if (n > plain.length - 4) throw new Error('malformed padding');
    for (let i = 4 + n; i < plain.length; i++) if (plain[i] !== 0) throw new Error('malformed padding');
    return plain.slice(4, 4 + n);
  }

  // Fragment: "{key}" or "{key}.p" (a passphrase is needed).
  function parseFragment(hash) {
    let f = (hash || '').replace(/^#/, '');
    let passphrase = false;
    if (f.endsWith('.p')) {
      passphrase = true;
      f = f.slice(0, -2);
    }
    const key = unb64u(f);
    if (key.length !== 32) throw new Error('the key is not 32 bytes');
    return { key: key, passphrase: passphrase };
  }

  // Creates a share on this server; returns {link, id, expiresAt, views}.
  async function create(text, opts) {
    const plain = te.encode(text);
    const id = b64u(randomBytes(16));
    const key = randomBytes(32);
    const pass = opts.passphrase ? opts.passphrase : null;
    const limits = { expiresAt: Math.floor(Date.now() / 1000) + opts.expiresIn, views: opts.views, passphrase: pass !== null };
    const d = await derive(key, id, pass);
    const blob = await seal(plain, d, id, limits);
    const resp = await fetch('/v1/shares', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ id: id, ciphertext: b64u(blob), proof_hash: b64u(await sha256(d.proof)), expires_at: limits.expiresAt, views: limits.views }),
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    const body = await resp.json();
    if (!resp.ok || !body.ok) throw new Error((body.error && body.error.message) || ('HTTP ' + resp.status));
    const link = location.origin + '/s/' + id + '#' + b64u(key) + (limits.passphrase ? '.p' : '');
    return { link: link, id: id, expiresAt: limits.expiresAt, views: limits.views };
  }

  // Burns one view and decrypts. Throws an Error whose code is the server's error code.
  async function consume(id, key, passphrase, hasPassphrase) {
    const d = await derive(key, id, hasPassphrase ? passphrase : null);
    // One attempt id for this reveal: if the answer is lost (the connection or the server died
    // after the view was burned), the same request is sent again and answered again.
    const attempt = b64u(crypto.getRandomValues(new Uint8Array(16)));
    const request = () => fetch('/v1/shares/' + encodeURIComponent(id) + '/consume', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ proof: b64u(d.proof), attempt: attempt }),
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    let resp = null;
    for (let tries = 0; resp === null; tries++) {
      try {
        resp = await request();
      } catch (e) {
        if (tries >= 4) throw e;
        await new Promise((r) => setTimeout(r, 500 * (tries + 1)));
      }
    }
    const body = await resp.json();
    if (!resp.ok || !body.ok) {
      const e = new Error((body.error && body.error.message) || ('HTTP ' + resp.status));
      e.code = body.error && body.error.code;
      throw e;
    }
    const limits = { expiresAt: body.expires_at, views: body.views, passphrase: !!hasPassphrase };
    const plain = await open(unb64u(body.ciphertext), d, id, limits);
    return new TextDecoder('utf-8', { fatal: false }).decode(plain);
  }

  const CLASSES = [
    'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
    'abcdefghijklmnopqrstuvwxyz',
    '0123456789',
    '!#$%&()*+,-./:;<=>?@[]^_{|}~',
  ];

  // One unbiased index below n: rejection sampling over random bytes.
  function uniform(n) {
    const limit = 256 - (256 % n);
    for (;;) {
      const b = crypto.getRandomValues(new Uint8Array(1))[0];
      if (b < limit) return b % n;
    }
  }

  // A password of `len` characters with at least one of each class, uniform over such passwords
  // (whole candidates lacking a class are rejected and drawn again).
  function generatePassword(len) {
    len = len || 24;
    const all = CLASSES.join('');
    for (;;) {
      let p = '';
      for (let i = 0; i < len; i++) p += all[uniform(all.length)];
      if (CLASSES.every(function (c) { return p.split('').some(function (ch) { return c.indexOf(ch) >= 0; }); })) return p;
    }
  }

  window.AirlockShare = {
    VERSION: VERSION, b64u: b64u, unb64u: unb64u, bucketLen: bucketLen, aad: aad, derive: derive, sha256: sha256,
    seal: seal, open: open, parseFragment: parseFragment, create: create, consume: consume, validId: validId,
    generatePassword: generatePassword, CLASSES: CLASSES,
  };
})();
