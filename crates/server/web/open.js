// The open page: nothing is fetched until Reveal; then consume, decrypt, and drop the key from
// the address bar.
(function () {
  'use strict';
  const S = window.AirlockShare;
  const $ = function (id) { return document.getElementById(id); };
  const id = location.pathname.replace(/^\/s\//, '').replace(/\/$/, '');
  let frag = null;

  function showError(msg) {
    $('error').textContent = msg;
    $('error').hidden = false;
  }

  function dropKey() {
    history.replaceState(null, '', location.pathname);
  }

  try {
    if (!S.validId(id)) throw new Error('bad id');
    frag = S.parseFragment(location.hash);
  } catch (e) {
    $('reveal').disabled = true;
    showError('This link is incomplete or damaged. Ask the sender for the whole link.');
  }
  if (frag && frag.passphrase) $('pass-row').hidden = false;

  $('reveal').addEventListener('click', async function () {
    if (!frag) return;
    $('error').hidden = true;
    $('reveal').disabled = true;
    try {
      const text = await S.consume(id, frag.key, $('passphrase').value, frag.passphrase);
      dropKey();
      frag = null;
      $('secret').value = text;
      $('intro').hidden = true;
      $('shown').hidden = false;
    } catch (e) {
      if (e.code === 'share-unavailable') {
        if (frag.passphrase) {
          showError('This link was already opened or has expired, or the passphrase is wrong.');
          $('reveal').disabled = false;
          return;
        }
        dropKey();
        showError('This link was already opened or has expired.');
      } else if (e.code === 'rate-limited') {
        showError('Too many attempts; wait a minute and try again.');
        $('reveal').disabled = false;
      } else {
        showError('The secret could not be revealed: ' + e.message);
      }
    }
  });
  $('copy').addEventListener('click', async function () {
    $('secret').select();
    try { await navigator.clipboard.writeText($('secret').value); $('copy').textContent = 'Copied'; } catch (e) { document.execCommand('copy'); }
  });
})();
