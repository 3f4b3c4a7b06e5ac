// Run by tests/intake.rs: node intake_vectors.mjs <path of request-format.js>, with a JSON input
// on stdin. Loads the page's classic script as the browser would, then
//   1. checks that _sealWithEphemeral reproduces the RFC 9180 vector (enc, shared secret, key,
//      base nonce and the ciphertexts of the first encryptions) byte for byte;
//   2. checks airlock's own vector (docs/request-format.md): padding and all;
//   3. checks that seal() refuses a value over the limit and a malformed public key;
//   4. seals `count` random values with seal() to `public_key` and prints one JSON line each:
//      {"value": hex, "enc": b64u, "ciphertext": b64u}, for the Rust side to open.
// Any mismatch throws: the process exits non-zero with the reason on stderr.
import fs from 'node:fs';
import vm from 'node:vm';

vm.runInThisContext(fs.readFileSync(process.argv[2], 'utf8'), { filename: 'request-format.js' });
const R = globalThis.AirlockRequest;
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const te = new TextEncoder();

const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (x) => parseInt(x, 16));
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
function same(what, got, want) {
  if (hex(got) !== want) throw new Error(what + ': got ' + hex(got) + ', want ' + want);
}

// 1. The RFC's vector: message i of one context uses sequence number i.
const v = input.rfc;
for (let i = 0; i < v.encryptions.length; i++) {
  const e = v.encryptions[i];
  const out = await R._sealWithEphemeral(unhex(v.skEm), unhex(v.pkEm), unhex(v.pkRm), unhex(e.pt), unhex(e.aad), unhex(v.info), i);
  same('rfc enc', out.enc, v.enc);
  same('rfc shared_secret', out.sharedSecret, v.shared_secret);
  same('rfc key', out.key, v.key);
  same('rfc base_nonce', out.baseNonce, v.base_nonce);
  same('rfc nonce ' + i, out.nonce, e.nonce);
  same('rfc ct ' + i, out.ciphertext, e.ct);
}
console.log(JSON.stringify({ check: 'rfc', encryptions: v.encryptions.length }));

// 2. airlock's vector: the value padded, INFO, the context as aad.
const a = input.airlock;
const padded = R.pad(te.encode(a.value));
const mine = await R._sealWithEphemeral(unhex(a.skE), unhex(a.pkE), unhex(a.pkR), padded, te.encode(a.aad), R.INFO, 0);
same('airlock enc', mine.enc, a.enc);
same('airlock ciphertext', mine.ciphertext, a.ciphertext);
console.log(JSON.stringify({ check: 'airlock' }));

// 3. Refusals.
async function refuses(what, f) {
  let threw = false;
  try {
    await f();
  } catch (e) {
    threw = true;
  }
  if (!threw) throw new Error('seal accepted ' + what);
}
await refuses('a value over the limit', () => R.seal(input.public_key, new Uint8Array(input.max + 1), new Uint8Array(0), input.max));
await refuses('a 31-byte public key', () => R.seal(R.b64u(new Uint8Array(31).fill(9)), new Uint8Array(1), new Uint8Array(0), input.max));
await refuses('a low-order public key', () => R.seal(R.b64u(new Uint8Array(32)), new Uint8Array(1), new Uint8Array(0), input.max));
await refuses('a public key that is not base64url', () => R.seal('not base64url!', new Uint8Array(1), new Uint8Array(0), input.max));
console.log(JSON.stringify({ check: 'refusals' }));

// 4. Random values (the edges first), sealed to the broker's key.
const aad = te.encode(input.aad);
const edges = [0, 1, 252, 253, input.max];
for (let i = 0; i < input.count; i++) {
  let len;
  if (i < edges.length) len = edges[i];
  else len = crypto.getRandomValues(new Uint32Array(1))[0] % (input.max + 1);
  const value = crypto.getRandomValues(new Uint8Array(len));
  const s = await R.seal(input.public_key, value, aad, input.max);
  console.log(JSON.stringify({ value: hex(value), enc: s.enc, ciphertext: s.ciphertext }));
}
