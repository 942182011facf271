/* The /demo page: records itself with capture.js into the default project and links to its replay.
 * Served with script-src 'self', so it is a file and reads its settings from <body data-*>. */
(function () {
  'use strict';
  const body = document.body;
  // The demo shows the console panel too, so it records console calls (capture.js's default is off).
  window.Replay.init({host: window.location.origin, token: body.dataset.token, recordConsole: true});

  const link = document.getElementById('player-link');
  const sessionId = window.Replay.getSessionId();
  if (link && sessionId) {
    link.href = '/projects/' + encodeURIComponent(body.dataset.project) + '/sessions/' + encodeURIComponent(sessionId);
    link.target = '_blank'; // keep this tab recording while the player follows it live
    link.rel = 'noopener';
    link.addEventListener('click', function () { window.Replay.flush(); });
  }

  const items = document.getElementById('items');
  let count = 0;
  const on = (id, event, fn) => { const el = document.getElementById(id); if (el) el.addEventListener(event, fn); };
  on('add-item', 'click', function () {
    const li = document.createElement('li');
    li.textContent = 'Item ' + (++count) + ' added by a click';
    items.appendChild(li);
  });
  on('log-error', 'click', function () { console.error('Demo error: the button says something went wrong'); });
  // Nothing is ever submitted: typed values must not end up in a URL (URLs are recorded unmasked).
  on('signup', 'submit', function (e) { e.preventDefault(); });
  on('save', 'click', function () { document.getElementById('saved').hidden = false; });
})();
