// The connect page: show who asks for which account, check the owner's code, then go to the
// provider. The agent's name and the handle's description are set only as text.
(function () {
  'use strict';
  const $ = function (id) { return document.getElementById(id); };
  const id = location.pathname.replace(/^\/connect\//, '').replace(/\/$/, '');

  function showError(msg) {
    $('error').textContent = msg;
    $('error').hidden = false;
  }

  async function api(method, path, body) {
    const r = await fetch(path, {
      method: method,
      headers: body ? { 'Content-Type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
      cache: 'no-store',
      // The verification answer sets the cookie that binds this link to this browser.
      credentials: 'same-origin',
      referrerPolicy: 'no-referrer',
    });
    let out = null;
    try { out = await r.json(); } catch (e) { out = null; }
    if (!r.ok || !out || out.ok !== true) {
      const err = new Error(out && out.error ? out.error.message : 'request failed');
      err.code = out && out.error ? out.error.code : 'http-' + r.status;
      throw err;
    }
    return out;
  }

  async function load() {
    try {
      const v = (await api('GET', '/v1/connect/' + encodeURIComponent(id))).connect;
      $('agent').textContent = v.agent;
      $('handle').textContent = v.handle;
      $('description').textContent = v.description || '—';
      $('provider').textContent = v.provider;
      $('scopes').textContent = (v.scopes || []).join(' ') || '(the provider\u2019s default)';
      $('destinations').textContent = (v.destinations || []).join(', ');
      $('owner').textContent = v.owner;
      $('expires').textContent = v.expires_at;
      $('ask').hidden = false;
    } catch (e) {
      showError(e.code === 'connect-unavailable' ? 'This link was already used, has expired, or never existed.' : 'The link could not be loaded (' + e.code + ').');
    }
  }

  $('go').addEventListener('click', async function () {
    $('error').hidden = true;
    $('go').disabled = true;
    try {
      const r = await api('POST', '/v1/connect/' + encodeURIComponent(id) + '/verify', { code: $('code').value });
      location.assign(r.authorize_url);
    } catch (e) {
      $('go').disabled = false;
      if (e.code === 'owner-not-allowed') showError('That code is not right.');
      else if (e.code === 'connect-unavailable') showError('This link can no longer be used (expired, used, or too many wrong codes).');
      else showError('The provider could not be reached (' + e.code + ').');
    }
  });

  load();
})();
