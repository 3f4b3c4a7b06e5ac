// The create page: count, generate, encrypt in the browser, show the link.
(function () {
  'use strict';
  const S = window.AirlockShare;
  const $ = function (id) { return document.getElementById(id); };
  const maxBytes = parseInt(document.body.dataset.maxBytes, 10);
  const maxViews = parseInt(document.body.dataset.maxViews, 10);
  const te = new TextEncoder();
  $('views').max = String(maxViews);

  function update() {
    const text = $('secret').value;
    const bytes = te.encode(text).length;
    const chars = Array.from(text).length;
    const left = maxBytes - bytes;
    $('counter').textContent = chars + ' characters · ' + (left >= 0 ? left + ' bytes left' : (-left) + ' bytes over the limit');
    $('counter').className = left < 0 ? 'over' : '';
    $('create').disabled = bytes === 0 || left < 0;
  }

  function human(seconds) {
    if (seconds % 86400 === 0) return (seconds / 86400) + (seconds === 86400 ? ' day' : ' days');
    if (seconds % 3600 === 0) return (seconds / 3600) + (seconds === 3600 ? ' hour' : ' hours');
    return Math.round(seconds / 60) + ' minutes';
  }

  function showError(msg) {
    $('error').textContent = msg;
    $('error').hidden = false;
  }

  $('secret').addEventListener('input', update);
  $('generate').addEventListener('click', function () {
    $('secret').value = S.generatePassword(24);
    update();
  });
  $('create').addEventListener('click', async function () {
    $('error').hidden = true;
    const expiresIn = parseInt($('expires').value, 10);
    const views = parseInt($('views').value, 10);
    if (!(views >= 1 && views <= maxViews)) return showError('Views must be between 1 and ' + maxViews + '.');
    $('create').disabled = true;
    try {
      const r = await S.create($('secret').value, { expiresIn: expiresIn, views: views, passphrase: $('passphrase').value });
      $('secret').value = '';
      $('passphrase').value = '';
      $('link').value = r.link;
      $('fact-expiry').textContent = 'Expires in ' + human(expiresIn) + ' (' + new Date(r.expiresAt * 1000).toLocaleString() + ').';
      $('fact-views').textContent = views === 1 ? 'One-time view: the first person to open it destroys it.' : 'Can be viewed ' + views + ' times, then it is destroyed.';
      $('fact-pass').hidden = !r.link.endsWith('.p');
      $('form').hidden = true;
      $('result').hidden = false;
    } catch (e) {
      showError('The link could not be created: ' + e.message);
    } finally {
      update();
    }
  });
  $('copy').addEventListener('click', async function () {
    $('link').select();
    try { await navigator.clipboard.writeText($('link').value); $('copy').textContent = 'Copied'; } catch (e) { document.execCommand('copy'); }
  });
  $('another').addEventListener('click', function () {
    $('link').value = '';
    $('result').hidden = true;
    $('form').hidden = false;
  });
  update();
})();
