// The intake page of a request for a secret (docs/request-format.md): open the request with the
// proof from the fragment, show the exact context (the same bytes are the ciphertext's
// associated data), encrypt the value to the request's key in this browser, submit.
(function () {
  'use strict';
  const S = window.AirlockShare;
  const R = window.AirlockRequest;
  const $ = function (id) { return document.getElementById(id); };
  const te = new TextEncoder();
  const id = location.pathname.replace(/^\/r\//, '').replace(/\/$/, '');
  const proof = location.hash.replace(/^#/, '');
  let opened = null;

  function showError(msg) {
    $('error').textContent = msg;
    $('error').hidden = false;
  }

  function dropProof() {
    history.replaceState(null, '', location.pathname);
  }

  async function post(path, body) {
    const r = await fetch('/v1/requests/' + encodeURIComponent(id) + path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
    const v = await r.json().catch(function () { return {}; });
    if (!r.ok) {
      const e = new Error((v.error && v.error.message) || ('HTTP ' + r.status));
      e.code = v.error && v.error.code;
      throw e;
    }
    return v;
  }

  function describeBinding(ctx) {
    const b = ctx.binding || {};
    if (ctx.kind === 'http') {
      const inj = b.inject || {};
      const where = inj.type === 'header' ? ('header ' + inj.name + ': ' + inj.format)
        : inj.type === 'query' ? ('query parameter ' + inj.param)
        : inj.type === 'basic' ? ('basic authentication as ' + inj.username) : '?';
      return (b.methods || []).join(', ') + ' ' + b.destination + ' (sent in the ' + where + '), and nowhere else';
    }
    if (ctx.kind === 'postgres' || ctx.kind === 'mysql') {
      return 'the database your connection URL names, ' + (b.scope === 'read_write' ? 'read and write' : 'read only');
    }
    return 'nothing: a plain secret, kept by airlock';
  }

  function describeFormat(f) {
    const parts = [];
    if (f.prefix) parts.push('starts with ' + f.prefix);
    if (f.min_length) parts.push('at least ' + f.min_length + ' characters');
    if (f.max_length) parts.push('at most ' + f.max_length + ' characters');
    if (f.pattern) parts.push('matches ' + f.pattern);
    return parts.length ? parts.join('; ') : 'any';
  }

  function counter() {
    if (!opened) return;
    const n = te.encode($('secret').value).length;
    $('counter').textContent = n + ' / ' + opened.ctx.max_value_bytes + ' bytes';
    $('submit').disabled = n === 0 || n > opened.ctx.max_value_bytes;
  }

  async function load() {
    if (!/^[A-Za-z0-9_-]{22}$/.test(id) || !/^[A-Za-z0-9_-]{43}$/.test(proof)) {
      $('loading').hidden = true;
      showError('This link is incomplete or damaged. Ask the sender for the whole link.');
      return;
    }
    try {
      const v = await post('/open', { proof: proof });
      // What is shown is parsed from the exact bytes the ciphertext will be bound to.
      const ctx = JSON.parse(v.context);
      if (ctx.request_id !== id) throw new Error('the request does not match its link');
      opened = { context: v.context, ctx: ctx, publicKey: v.public_key };
      $('from-agent').textContent = ctx.from_agent;
      $('description').textContent = ctx.description;
      $('handle').textContent = ctx.handle;
      $('kind').textContent = ctx.kind;
      $('binding').textContent = describeBinding(ctx);
      $('grant').textContent = (ctx.grant || []).join(', ') + ', by ' + ctx.from_agent + ' only';
      $('format').textContent = describeFormat(ctx.format || {});
      $('expires').textContent = new Date(ctx.expires_at * 1000).toISOString();
      $('loading').hidden = true;
      $('intro').hidden = false;
      $('ask').hidden = false;
      counter();
    } catch (e) {
      $('loading').hidden = true;
      dropProof();
      if (e.code === 'request-unavailable') showError('This link was already used, has expired, or never existed.');
      else if (e.code === 'rate-limited') showError('Too many attempts; wait a minute and reload.');
      else showError('The request could not be loaded: ' + e.message);
    }
  }

  $('secret').addEventListener('input', counter);
  $('generate').addEventListener('click', function () {
    $('secret').value = S.generatePassword(24);
    counter();
  });
  $('submit').addEventListener('click', async function () {
    if (!opened) return;
    $('error').hidden = true;
    $('submit').disabled = true;
    try {
      const value = te.encode($('secret').value);
      const sealed = await R.seal(opened.publicKey, value, te.encode(opened.context), opened.ctx.max_value_bytes);
      const v = await post('/submit', { proof: proof, enc: sealed.enc, ciphertext: sealed.ciphertext });
      dropProof();
      $('secret').value = '';
      opened = null;
      $('ask').hidden = true;
      $('done').hidden = false;
      $('done-text').textContent = v.status === 'approved'
        ? 'Sent. The secret is stored and the agent may now use it as described. This link is used.'
        : 'Sent. The secret is stored; an operator decides whether the agent may use it. This link is used.';
    } catch (e) {
      if (e.code === 'value-rejected') showError('The value does not match the expected format. Nothing was stored; correct it and send again.');
      else if (e.code === 'request-unavailable') { dropProof(); showError('This link was already used or has expired.'); }
      else if (e.code === 'rate-limited') showError('Too many attempts; wait a minute and try again.');
      else showError('The secret could not be sent: ' + e.message);
      $('submit').disabled = false;
    }
  });
  load();
})();
