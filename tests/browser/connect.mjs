// Real headless Chromium connecting an OAuth account: airlock's connect page shows who asks for
// which account, refuses a wrong owner code, takes the right one, and sends the browser to the
// provider (oidc-provider's own login and consent pages, over HTTPS with a test CA), which
// redirects back to airlock's callback.
// Env: AIRLOCK_CONNECT_LINK (the link connect_account returned), AIRLOCK_OWNER_CODE (the code
// delivered to the owner).
import { chromium } from 'playwright-core';

const link = process.env.AIRLOCK_CONNECT_LINK;
const code = process.env.AIRLOCK_OWNER_CODE;
const failures = [];
const passed = [];

function check(name, cond, detail) {
  if (cond) passed.push(name);
  else failures.push(name + (detail ? ': ' + detail : ''));
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  // The provider's certificate is signed by the test's own CA.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(link);
  await page.waitForSelector('#ask:not([hidden])');
  check('page_names_the_agent', (await page.textContent('#agent')) === 'bot');
  check('page_names_the_handle', (await page.textContent('#handle')) === 'ACME');
  check('page_names_the_scopes', (await page.textContent('#scopes')) === 'api:read');
  check('page_names_the_owner', (await page.textContent('#owner')) === 'owner@example.com');

  await page.fill('#code', 'WRONGCOD');
  await page.click('#go');
  await page.waitForSelector('#error:not([hidden])');
  check('wrong_code_is_refused', (await page.textContent('#error')).includes('not right'));

  await page.fill('#code', code);
  await Promise.all([page.waitForURL((u) => !u.href.startsWith(link)), page.click('#go')]);
  check('sent_to_the_provider', !page.url().startsWith(link.split('/connect/')[0]), page.url());

  // The provider's login page, then its consent page.
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', 'owner-1');
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  await page.waitForSelector('button[type=submit]');
  await Promise.all([page.waitForURL(/\/oauth\/callback/), page.click('button[type=submit]')]);
  check('connected', (await page.textContent('#outcome')) === 'Account connected', await page.textContent('body'));

  // The link is spent: opening it again shows nothing to continue.
  const again = await context.newPage();
  await again.goto(link);
  await again.waitForSelector('#error:not([hidden])');
  check('link_is_single_use', (await again.textContent('#error')).includes('already used'));
} finally {
  await browser.close();
}

for (const p of passed) console.log('ok   ' + p);
for (const f of failures) console.log('FAIL ' + f);
console.log(`${passed.length} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
