// The approval page: with the approver's token, fetch the held call and show it, then approve or
// deny it. Every value of the call is agent-controlled: it is only ever set as text.
(function () {
  'use strict';
  const $ = function (id) { return document.getElementById(id); };
  const id = location.pathname.replace(/^\/approve\//, '').replace(/\/$/, '');

  function showError(msg) {
    $('error').textContent = msg;
    $('error').hidden = false;
  }

  function token() {
    return $('token').value.trim();
  }

  async function api(method, path) {
    const r = await fetch(path, {
      method: method,
      headers: { 'Authorization': 'Bearer ' + token() },
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok || !body || body.ok !== true) {
      const code = body && body.error ? body.error.code : 'http-' + r.status;
      const message = body && body.error ? body.error.message : 'request failed';
      const err = new Error(message);
      err.code = code;
      throw err;
    }
    return body.approval;
  }

  // The server sends `shown`: the same texts with every invisible or bidirectional character
  // written as \u{...}, so what is displayed is what will run.
  function render(a) {
    const s = a.shown || {};
    const parents = s.parent_chain || a.parent_chain;
    $('status').textContent = a.status;
    $('agent').textContent = s.agent ?? a.agent;
    $('parents').textContent = parents.length ? parents.join(' ← ') : '(none)';
    $('tool').textContent = s.tool ?? a.tool;
    $('handle').textContent = s.handle ?? a.handle;
    $('reason').textContent = s.reason ?? a.reason;
    $('expires').textContent = a.expires_at;
    $('approver').textContent = a.approver || '—';
    $('arguments').textContent = s.arguments ?? JSON.stringify(a.arguments, null, 2);
    const open = a.status === 'pending' && a.current_policy;
    $('approve').disabled = !open;
    $('deny').disabled = !open;
    $('call').hidden = false;
    $('login').hidden = true;
  }

  function explain(e) {
    if (e.code === 'unauthenticated') return 'That is not a valid approver token.';
    if (e.code === 'not-found') return 'There is no such approval.';
    if (e.code === 'conflict') return 'This approval was already decided, used, has expired, or the policy changed.';
    return 'Failed: ' + e.message;
  }

  if (!/^[0-9a-f]{32}$/.test(id)) {
    $('load').disabled = true;
    showError('This approval link is incomplete or damaged.');
  }

  $('load').addEventListener('click', async function () {
    $('error').hidden = true;
    try {
      render(await api('GET', '/v1/approvals/' + id));
    } catch (e) {
      showError(explain(e));
    }
  });

  async function decide(verb) {
    $('error').hidden = true;
    $('approve').disabled = true;
    $('deny').disabled = true;
    try {
      const a = await api('POST', '/v1/approvals/' + id + '/' + verb);
      render(a);
      $('done').textContent = verb === 'approve' ? 'Approved. The agent can now repeat this exact call once.' : 'Denied. The call will not run.';
      $('done').hidden = false;
    } catch (e) {
      showError(explain(e));
    }
  }
  $('approve').addEventListener('click', function () { decide('approve'); });
  $('deny').addEventListener('click', function () { decide('deny'); });
})();
