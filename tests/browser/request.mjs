// Real headless Chromium against `airlock serve`: the intake page of a request for a secret
// (crates/server/web/request.html + request.js + request-format.js). tests/request_browser.rs runs
// it and makes the assertions on what this prints.
//
// Env:
//   AIRLOCK_BASE    the server's URL (every request of the page must stay on it)
//   AIRLOCK_MODE    `submit`: open AIRLOCK_LINK, read what the page shows, type AIRLOCK_CANARY,
//                   click "Encrypt and send" and wait for the done section.
//                   `refused`: open each link of AIRLOCK_LINKS (a JSON list of {name, url}),
//                   wait for the error, and try to send anyway.
//   AIRLOCK_LINK, AIRLOCK_CANARY, AIRLOCK_LINKS as above.
//
// Prints `ok NAME` / `FAIL NAME: detail` for the checks made here, `N passed, M failed`, and one
// line `RESULT {json}`: {shown, pages, traffic: [{type: "request"|"response", ...}], console,
// page_errors} with every request's URL (as sent: without the fragment), method, headers and
// body, and every response's URL, status, headers and body text.
import { chromium } from 'playwright-core';

const base = process.env.AIRLOCK_BASE;
const mode = process.env.AIRLOCK_MODE;
const failures = [];
const passed = [];

function check(name, cond, detail) {
  if (cond) passed.push(name);
  else failures.push(name + (detail ? ': ' + detail : ''));
}

const traffic = [];
const pending = [];
const consoleLines = [];
const pageErrors = [];

// A browser never sends a URL's fragment; Playwright may report a navigation's URL with it.
function split(url) {
  const i = url.indexOf('#');
  return i < 0 ? { url, fragment: null } : { url: url.slice(0, i), fragment: url.slice(i + 1) };
}

// `p`, or a rejection after `ms`: a body the page never reads may never be available.
function within(p, ms) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('not available after ' + ms + ' ms')), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

// Every request and response of the context. A header set or body that cannot be read is
// recorded as `*_error`, which the Rust side refuses: what was not seen was not checked.
function record(context) {
  context.on('request', (req) => {
    pending.push((async () => {
      const { url, fragment } = split(req.url());
      const t = { type: 'request', url, fragment, method: req.method(), resource: req.resourceType(), headers: req.headers(), body: req.postData() };
      try { t.headers = await within(req.allHeaders(), 5000); } catch (e) { t.headers_error = String(e); }
      traffic.push(t);
    })());
  });
  context.on('response', (resp) => {
    pending.push((async () => {
      const { url, fragment } = split(resp.url());
      const t = { type: 'response', url, fragment, status: resp.status(), headers: resp.headers(), body: null };
      try { t.headers = await within(resp.allHeaders(), 5000); } catch (e) { t.headers_error = String(e); }
      try { t.body = await within(resp.text(), 5000); } catch (e) { t.body_error = String(e); }
      traffic.push(t);
    })());
  });
  context.on('requestfailed', (req) => {
    traffic.push({ type: 'failed', url: split(req.url()).url, error: req.failure() && req.failure().errorText });
  });
}

function watch(page) {
  page.on('console', (m) => consoleLines.push(m.type() + ': ' + m.text()));
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('dialog', (d) => { pageErrors.push('dialog: ' + d.message()); d.dismiss(); });
}

async function texts(page) {
  return page.evaluate(() => {
    const out = {};
    for (const dd of document.querySelectorAll('#ask dd')) out[dd.id] = dd.textContent;
    return out;
  });
}

async function visible(page) {
  return page.evaluate(() => {
    const shown = (id) => { const e = document.getElementById(id); return !!e && !e.hidden && e.offsetParent !== null; };
    return {
      ask: shown('ask'), done: shown('done'), error: shown('error'), loading: shown('loading'),
      error_text: document.getElementById('error').textContent,
      done_text: document.getElementById('done-text').textContent,
      secret: document.getElementById('secret').value,
      submit_disabled: document.getElementById('submit').disabled,
      location: location.href,
      pwned: window.__pwned === undefined ? null : window.__pwned,
      imgs: document.querySelectorAll('img').length,
    };
  });
}

// Never hang the Rust test: past two minutes, report and stop.
setTimeout(() => {
  console.log('FAIL watchdog: the browser checks did not finish in 120 s');
  process.exit(2);
}, 120000).unref();

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const result = { mode, shown: null, pages: [] };
try {
  const context = await browser.newContext();
  record(context);

  if (mode === 'submit') {
    const link = process.env.AIRLOCK_LINK;
    const canary = process.env.AIRLOCK_CANARY;
    const page = await context.newPage();
    watch(page);
    const resp = await page.goto(link);
    check('page_loads', resp && resp.status() === 200, resp && String(resp.status()));
    await page.waitForSelector('#ask:not([hidden])', { timeout: 15000 });
    result.shown = await texts(page);
    const before = await visible(page);
    result.pages.push({ name: 'opened', ...before });
    check('request_shown_without_error', before.ask && !before.error && !before.loading, JSON.stringify(before));
    check('description_is_inert_text', before.imgs === 0 && before.pwned === null, JSON.stringify(before));
    check('nothing_to_send_yet', before.submit_disabled === true);

    await page.fill('#secret', canary);
    const counter = await page.textContent('#counter');
    check('counter_counts_bytes', counter.startsWith(Buffer.byteLength(canary) + ' / '), counter);
    check('send_enabled_with_a_value', !(await page.isDisabled('#submit')));
    await page.click('#submit');
    await page.waitForSelector('#done:not([hidden])', { timeout: 15000 });
    const after = await visible(page);
    result.pages.push({ name: 'sent', ...after });
    check('done_shown', after.done && !after.ask && !after.error, JSON.stringify(after));
    check('done_says_stored_and_usable', after.done_text.includes('stored') && after.done_text.includes('may now use it'), after.done_text);
    check('value_cleared_from_the_page', after.secret === '' && !(await page.content()).includes(canary));
    check('proof_dropped_from_the_address_bar', !after.location.includes('#'), after.location);
    const stored = await page.evaluate(() => JSON.stringify({ l: { ...localStorage }, s: { ...sessionStorage }, c: document.cookie }));
    check('nothing_kept_in_browser_storage', !stored.includes(canary) && stored === JSON.stringify({ l: {}, s: {}, c: '' }), stored);
  } else if (mode === 'refused') {
    for (const l of JSON.parse(process.env.AIRLOCK_LINKS)) {
      const page = await context.newPage();
      watch(page);
      await page.goto(l.url);
      await page.waitForSelector('#error:not([hidden])', { timeout: 15000 });
      // Give a late load a moment to (wrongly) show the form.
      await page.waitForTimeout(300);
      const v = await visible(page);
      check(l.name + ': form_not_shown', !v.ask && !v.done && !v.loading, JSON.stringify(v));
      // The hidden button does nothing: request.js has nothing opened to send.
      await page.evaluate(() => {
        document.getElementById('secret').value = 'sk_live_typed_into_a_refused_page_00';
        document.getElementById('submit').click();
      });
      await page.waitForTimeout(300);
      result.pages.push({ name: l.name, ...v, after_click: await visible(page) });
      await page.close();
    }
  } else {
    throw new Error('AIRLOCK_MODE must be submit or refused, not ' + mode);
  }
  // Responses recorded while others were awaited are awaited too.
  for (let n = 0; n !== pending.length;) { n = pending.length; await Promise.all(pending); }
  await context.close();
} catch (e) {
  failures.push('exception: ' + (e && e.stack || e));
} finally {
  await browser.close();
}

result.traffic = traffic;
result.console = consoleLines;
result.page_errors = pageErrors;
result.offsite = traffic.filter((t) => !t.url.startsWith(base + '/')).map((t) => t.url);
check('no_request_leaves_the_server', result.offsite.length === 0, result.offsite.join(' '));
check('no_page_errors', pageErrors.length === 0, pageErrors.join(' | '));
for (const p of passed) console.log('ok   ' + p);
for (const f of failures) console.log('FAIL ' + f);
console.log(`${passed.length} passed, ${failures.length} failed`);
// Exit once the long line is written: process.exit() alone can cut it short on a pipe.
process.stdout.write('RESULT ' + JSON.stringify(result) + '\n', () => process.exit(failures.length ? 1 : 0));
