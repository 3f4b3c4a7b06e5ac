// Real headless Chromium against `airlock serve`: the share pages, the WebCrypto format against
// the Rust vectors, and interop with the `airlock` CLI in both directions.
// Env: AIRLOCK_BASE (server URL), AIRLOCK_BIN (the airlock binary), AIRLOCK_CONFIG,
// AIRLOCK_VECTORS (crates/share/tests/vectors.json), AIRLOCK_WORK (a scratch directory).
import { chromium } from 'playwright-core';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const base = process.env.AIRLOCK_BASE;
const bin = process.env.AIRLOCK_BIN;
const work = process.env.AIRLOCK_WORK;
const vectors = JSON.parse(readFileSync(process.env.AIRLOCK_VECTORS, 'utf8')).vectors;
const failures = [];
const passed = [];

function check(name, cond, detail) {
  if (cond) passed.push(name);
  else failures.push(name + (detail ? ': ' + detail : ''));
}

function cli(args, input) {
  return spawnSync(bin, args, { input: input || '', encoding: 'utf8', env: process.env, timeout: 60000 });
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();

  // 1. Headers of the create page; the WebCrypto code reproduces every vector byte for byte.
  const resp = await page.goto(base + '/share');
  const h = resp.headers();
  check('t17_page_headers', h['content-security-policy'].includes("script-src 'self'") &&
    h['content-security-policy'].includes("frame-ancestors 'none'") && h['referrer-policy'] === 'no-referrer' &&
    h['cache-control'] === 'no-store' && h['x-content-type-options'] === 'nosniff' && h['x-robots-tag'].includes('noindex'),
    JSON.stringify(h));
  const vres = await page.evaluate(async (vectors) => {
    const S = window.AirlockShare;
    const hex = (s) => new Uint8Array(s.match(/../g).map((x) => parseInt(x, 16)));
    const out = [];
    for (const v of vectors) {
      const key = S.unb64u(v.key);
      const d = await S.derive(key, v.id, v.passphrase);
      const limits = { expiresAt: v.expires_at, views: v.views, passphrase: v.passphrase !== null };
      const plain = new TextDecoder().decode(await S.open(S.unb64u(v.ciphertext), d, v.id, limits));
      const sealed = S.b64u(await S.seal(new TextEncoder().encode(v.plaintext), d, v.id, limits, hex(v.nonce_hex)));
      const proofHash = S.b64u(await S.sha256(d.proof));
      let tamperFails = false;
      try { await S.open(S.unb64u(v.ciphertext), d, v.id, { ...limits, expiresAt: limits.expiresAt + 1 }); } catch (e) { tamperFails = true; }
      out.push({ name: v.name, ok: plain === v.plaintext && sealed === v.ciphertext && S.b64u(d.proof) === v.proof && proofHash === v.proof_hash && tamperFails });
    }
    return out;
  }, vectors);
  for (const r of vres) check('t17_vector_webcrypto: ' + r.name, r.ok);

  // 2. The generator: 24 characters, each class present, only the alphabet.
  const gen = await page.evaluate(() => {
    const S = window.AirlockShare;
    const all = S.CLASSES.join('');
    let bad = [];
    for (let i = 0; i < 300; i++) {
      const p = S.generatePassword(24);
      const ok = p.length === 24 && S.CLASSES.every((c) => [...p].some((ch) => c.includes(ch))) && [...p].every((ch) => all.includes(ch));
      if (!ok) bad.push(p);
    }
    return bad;
  });
  check('t17_generator_meets_class_rules', gen.length === 0, gen.join(' '));
  await page.click('#generate');
  const generated = await page.inputValue('#secret');
  check('t17_generator_button_fills_24_chars', generated.length === 24 && /[A-Z]/.test(generated) && /[a-z]/.test(generated) && /[0-9]/.test(generated) && /[^A-Za-z0-9]/.test(generated), generated);
  const counter = await page.textContent('#counter');
  check('t17_live_counter', /24 characters · \d+ bytes left/.test(counter), counter);

  // 3. Create in the browser, open with the CLI; a second open is refused.
  const secret1 = 'browser→cli secret ✓ ' + Date.now();
  await page.fill('#secret', secret1);
  await page.selectOption('#expires', '300');
  await page.click('#create');
  await page.waitForSelector('#result:not([hidden])');
  const link1 = await page.inputValue('#link');
  const resultText = await page.textContent('#result');
  check('t17_result_page', resultText.includes('Your secure link is ready') && resultText.includes('One-time view') &&
    resultText.includes('End-to-end encrypted') && resultText.includes('Expires in 5 minutes'), resultText);
  check('t17_link_shape', new RegExp('^' + base + '/s/[A-Za-z0-9_-]{22}#[A-Za-z0-9_-]{43}$').test(link1), link1);
  const o1 = cli(['open'], link1 + '\n');
  check('t17_browser_to_cli', o1.status === 0 && o1.stdout === secret1 + '\n', JSON.stringify(o1));
  const o2 = cli(['open'], link1 + '\n');
  check('t17_cli_second_open_refused', o2.status === 1 && o2.stderr.includes('already opened or has expired'), JSON.stringify(o2));
  // A link given as an argument is refused before anything is sent (argv is readable in /proc).
  const o3 = cli(['open', link1]);
  check('t17_cli_refuses_a_link_in_argv', o3.status === 2 && o3.stderr.includes('visible to other users') && o3.stdout === '', JSON.stringify(o3));

  // 4. Create with the CLI, open in the browser: nothing fetched before Reveal, fragment gone after.
  const secret2 = 'cli→browser secret ' + Date.now();
  const s = cli(['share', '--server', base, '--expires', '1h'], secret2 + '\n');
  const link2 = s.stdout.trim();
  check('t17_cli_share', s.status === 0 && link2.startsWith(base + '/s/'), JSON.stringify(s));
  const p2 = await context.newPage();
  const requests = [];
  p2.on('request', (r) => requests.push(r.method() + ' ' + new URL(r.url()).pathname));
  await p2.goto(link2);
  await p2.waitForTimeout(300);
  check('t17_open_page_fetches_nothing_before_reveal', !requests.some((r) => r.includes('/v1/')), requests.join(', '));
  await p2.click('#reveal');
  await p2.waitForSelector('#shown:not([hidden])');
  check('t17_cli_to_browser', (await p2.inputValue('#secret')) === secret2);
  check('t17_fragment_gone_after_reveal', !p2.url().includes('#') && (await p2.evaluate(() => location.hash)) === '', p2.url());
  const p3 = await context.newPage();
  await p3.goto(link2);
  await p3.click('#reveal');
  await p3.waitForSelector('#error:not([hidden])');
  const e3 = await p3.textContent('#error');
  check('t17_second_browser_open_says_already_opened', e3.includes('already opened or has expired'), e3);

  // 5. Passphrase: CLI share with one, browser open with a wrong one (burns nothing), then right.
  writeFileSync(join(work, 'pass.txt'), 'tr0ub4dor & 3\n', { mode: 0o600 });
  const secret3 = 'passphrase-protected ' + Date.now();
  const sp = cli(['share', '--server', base, '--passphrase-file', join(work, 'pass.txt')], secret3);
  const link3 = sp.stdout.trim();
  check('t17_cli_share_with_passphrase', sp.status === 0 && link3.endsWith('.p'), JSON.stringify(sp));
  const p4 = await context.newPage();
  await p4.goto(link3);
  check('t17_passphrase_field_shown', await p4.isVisible('#passphrase'));
  await p4.fill('#passphrase', 'wrong');
  await p4.click('#reveal');
  await p4.waitForSelector('#error:not([hidden])');
  check('t17_wrong_passphrase_message', (await p4.textContent('#error')).includes('passphrase is wrong'));
  await p4.fill('#passphrase', 'tr0ub4dor & 3');
  await p4.click('#reveal');
  await p4.waitForSelector('#shown:not([hidden])');
  check('t17_right_passphrase_after_wrong_one', (await p4.inputValue('#secret')) === secret3);

  // 6. Browser create with a passphrase and two views, CLI open twice.
  const p5 = await context.newPage();
  await p5.goto(base + '/share');
  await p5.fill('#secret', 'two views');
  await p5.fill('#views', '2');
  await p5.fill('#passphrase', 'pw-✓');
  await p5.click('#create');
  await p5.waitForSelector('#result:not([hidden])');
  const link5 = await p5.inputValue('#link');
  writeFileSync(join(work, 'pass5.txt'), 'pw-✓\n');
  const a = cli(['open', '--passphrase-file', join(work, 'pass5.txt')], link5);
  const b = cli(['open', '--passphrase-file', join(work, 'pass5.txt')], link5);
  const c = cli(['open', '--passphrase-file', join(work, 'pass5.txt')], link5);
  check('t17_two_views_then_gone', a.stdout === 'two views\n' && b.stdout === 'two views\n' && c.status === 1, JSON.stringify([a, b, c]));
} finally {
  await browser.close();
}

for (const p of passed) console.log('ok   ' + p);
for (const f of failures) console.log('FAIL ' + f);
console.log(`${passed.length} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
