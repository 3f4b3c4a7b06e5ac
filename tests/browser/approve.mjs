// Real headless Chromium against `airlock serve`: the approval page shows the exact held call
// (as text: an HTML argument stays inert), refuses an agent's token, and approves; the agent's
// repeat of the call then runs once.
// Env: AIRLOCK_BASE (server URL), AIRLOCK_AGENT_TOKEN, AIRLOCK_APPROVER_TOKEN.
import { chromium } from 'playwright-core';

const base = process.env.AIRLOCK_BASE;
const agentToken = process.env.AIRLOCK_AGENT_TOKEN;
const approverToken = process.env.AIRLOCK_APPROVER_TOKEN;
const failures = [];
const passed = [];

function check(name, cond, detail) {
  if (cond) passed.push(name);
  else failures.push(name + (detail ? ': ' + detail : ''));
}

const xss = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
const args = { credential_handle: 'NOTES', query: 'INSERT INTO notes (id, body) VALUES (?, ?)', params: [7, xss] };

async function invoke() {
  const r = await fetch(base + '/v1/invoke', {
    method: 'POST',
    headers: { 'Authorization': 'Bearer ' + agentToken, 'Content-Type': 'application/json' },
    body: JSON.stringify({ tool: 'query_db', arguments: args }),
  });
  return { status: r.status, body: await r.json() };
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const held = await invoke();
  check('held_call_answers_approval_required', held.status === 403 && held.body.error.code === 'approval-required', JSON.stringify(held));
  const url = held.body.error.approval.url;
  const id = held.body.error.approval.id;
  check('approval_url_is_the_page', url === base + '/approve/' + id, url);

  const context = await browser.newContext();
  const page = await context.newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  const resp = await page.goto(url);
  const h = resp.headers();
  check('approval_page_headers', h['content-security-policy'].includes("script-src 'self'") &&
    h['content-security-policy'].includes("frame-ancestors 'none'") && h['referrer-policy'] === 'no-referrer' &&
    h['cache-control'] === 'no-store' && h['x-frame-options'] === 'DENY', JSON.stringify(h));
  const before = await page.textContent('body');
  check('nothing_shown_without_a_token', !before.includes('INSERT') && await page.isHidden('#call'));

  // An agent's token is not an approver's.
  await page.fill('#token', agentToken);
  await page.click('#load');
  await page.waitForSelector('#error:not([hidden])');
  check('agent_token_refused_on_the_page', (await page.textContent('#error')).includes('not a valid approver token') && await page.isHidden('#call'));

  await page.fill('#token', approverToken);
  await page.click('#load');
  await page.waitForSelector('#call:not([hidden])');
  check('shows_agent_tool_handle', (await page.textContent('#agent')) === 'bot' && (await page.textContent('#tool')) === 'query_db' &&
    (await page.textContent('#handle')) === 'NOTES' && (await page.textContent('#status')) === 'pending');
  const shown = JSON.parse(await page.textContent('#arguments'));
  check('shows_the_exact_arguments', shown.query === args.query && shown.params[0] === 7 && shown.params[1] === xss, JSON.stringify(shown));
  const inert = await page.evaluate(() => ({ imgs: document.querySelectorAll('img').length, scripts: document.querySelectorAll('main script').length, pwned: window.__pwned }));
  check('html_argument_is_inert_text', inert.imgs === 0 && inert.scripts === 0 && inert.pwned === undefined && dialogs.length === 0, JSON.stringify(inert));

  await page.click('#approve');
  await page.waitForSelector('#done:not([hidden])');
  check('approved_on_the_page', (await page.textContent('#status')) === 'approved' && (await page.textContent('#approver')) === 'alice');

  const run = await invoke();
  check('agent_retry_runs_after_approval', run.status === 200 && run.body.result.rows_affected === 1, JSON.stringify(run));
  const again = await invoke();
  check('approval_is_single_use', again.status === 403 && again.body.error.code === 'approval-required' && again.body.error.approval.id !== id, JSON.stringify(again));

  // The used approval: shown as used, no buttons.
  const p2 = await context.newPage();
  await p2.goto(url);
  await p2.fill('#token', approverToken);
  await p2.click('#load');
  await p2.waitForSelector('#call:not([hidden])');
  check('used_approval_cannot_be_decided', (await p2.textContent('#status')) === 'used' && await p2.isDisabled('#approve') && await p2.isDisabled('#deny'));

  // A damaged link.
  const p3 = await context.newPage();
  await p3.goto(base + '/approve/not-an-id');
  check('damaged_link_is_refused', await p3.isDisabled('#load') && (await p3.textContent('#error')).includes('damaged'));
} finally {
  await browser.close();
}

for (const p of passed) console.log('ok   ' + p);
for (const f of failures) console.log('FAIL ' + f);
console.log(`${passed.length} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
