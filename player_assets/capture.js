/*! Replay capture.js: records the page with rrweb and streams it to a Replay server.
 * Plain ES2017, no build step, no dependency but rrweb, which must be loaded first
 * (/static/vendor/rrweb-2.2.2/dist/rrweb.umd.min.cjs defines the global `rrweb`). Docs: docs/capture.md.
 *
 * API (window.Replay)
 *   init({host, token, maskAllInputs = true, maskTextSelector, blockSelector, recordConsole = false,
 *         flushIntervalMs = 2000, maxBatchBytes = 1e6, sessionIdleMs = 30 min, distinctId,
 *         maxQueueBytes = 20e6, retryBaseMs = 1000, retryCapMs = 30000})
 *   identify(distinctId)   (<= 200 chars) kept in localStorage, sent with every batch cut after the call
 *   getSessionId()         the current session id (sessionStorage: one per tab, new after sessionIdleMs idle)
 *   flush() -> Promise     cuts a batch now; resolves once every batch cut so far got a 2xx or a final 4xx
 *   stop()  -> Promise     stops recording, then flush()
 *
 * Wire
 *   POST {host}/v1/recordings   Content-Type: application/json, plus Content-Encoding: gzip when the
 *   browser has CompressionStream and the body is over 1 KB. Body:
 *   {"token", "session_id", "window_id", "distinct_id" (string or null), "batch_id", "events": [rrweb events]}
 *   Ids are [A-Za-z0-9-]{1,70}. A batch id is fixed when the batch is cut, so a retry repeats it.
 *   One batch in flight at a time, in order. Network error, 408, 429, 5xx: retry with full-jitter backoff
 *   (retryBaseMs doubling up to retryCapMs) or after Retry-After. 2xx: done. Other 4xx: dropped, console.warn.
 *   Queue over maxQueueBytes: the oldest waiting batch is dropped, console.warn.
 *   On page hide (visibilitychange to hidden, pagehide) the buffer and the waiting batches go out through
 *   navigator.sendBeacon(host + "/v1/recordings?token=...", Blob(json, text/plain)), split into beacons of
 *   at most 60 KB (a split batch's parts get ids "<batch_id>-0", "<batch_id>-1", ...). Browsers allow all
 *   unload requests together about 64 KB, so a refused beacon is halved and tried again; when even a
 *   small one is refused, it is tried once with fetch(keepalive). What is not known to be sent (the batch
 *   in flight, refused beacons) stays queued and is also written to sessionStorage; the next page of the
 *   same tab and origin sends it again with the same batch ids, and the server keeps one copy.
 */
(function (w) {
  'use strict';
  if (w.Replay) return;
  const KS = 'replay_session', KW = 'replay_window', KL = 'replay_window_live', KP = 'replay_pending',
    KD = 'replay_distinct_id', BEACON_MAX = 60000, isId = (v) => typeof v === 'string' && /^[A-Za-z0-9-]{1,70}$/.test(v),
    INTERACTIVE = [1, 2, 3, 4, 5, 6, 7, 12], // rrweb IncrementalSource: mouse, scroll, resize, input, touch, media, drag
    DEFAULTS = {maskAllInputs: true, recordConsole: false, flushIntervalMs: 2000, maxBatchBytes: 1e6,
      sessionIdleMs: 30 * 60 * 1000, maxQueueBytes: 20e6, retryBaseMs: 1000, retryCapMs: 30000};
  let cfg = null, recording = false, stopRec = null, timer = 0, sess = null, wid = null, savedAt = 0,
    rolling = false, buf = [], bufBytes = 0, queue = [], queueBytes = 0, inflight = null, pumping = false,
    seq = 0, waiters = [];

  function get(area, k) { try { return w[area].getItem(k); } catch (e) { return null; } }
  function set(area, k, v) {
    try { if (v == null) w[area].removeItem(k); else w[area].setItem(k, v); return true; } catch (e) { return false; }
  }
  function uuid() {
    const c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID(); // secure contexts only
    const b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b); else for (let i = 0; i < 16; i++) b[i] = Math.random() * 256;
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join('');
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join('-');
  }
  function saveSession() { savedAt = Date.now(); set('sessionStorage', KS, JSON.stringify(sess)); }
  function distinctId() { return get('localStorage', KD); }

  function emit(e) {
    const now = Date.now();
    if (e.type === 3 && INTERACTIVE.indexOf(e.data.source) >= 0) { // only user activity keeps a session alive
      if (now - sess.t > cfg.sessionIdleMs && !rolling) {
        cut(); pump(); // what came before belongs to the old session
        sess = {id: uuid(), t: now};
        rolling = true;
        try { w.rrweb.record.takeFullSnapshot(true); } finally { rolling = false; }
        e.timestamp = Math.max(e.timestamp, Date.now()); // keep it after the new session's snapshot
      }
      sess.t = now;
      if (now - savedAt > 1000) saveSession();
    }
    const s = JSON.stringify(e);
    buf.push(s); bufBytes += s.length + 1;
    // Full snapshots (type 2) and other big events go out at once: a beacon on page hide cannot carry them.
    if (e.type === 2 || s.length > 30000 || bufBytes >= cfg.maxBatchBytes || buf.length >= 10000) { cut(); pump(); }
  }

  function cut() {
    if (!buf.length) return;
    enqueue({id: uuid(), s: sess.id, w: wid, d: distinctId(), e: buf, n: bufBytes, q: ++seq});
    buf = []; bufBytes = 0;
  }
  function enqueue(b) {
    queue.push(b); queueBytes += b.n;
    while (queueBytes > cfg.maxQueueBytes && queue.length > 1) {
      const old = queue[0] === inflight ? queue[1] : queue[0];
      console.warn('Replay: upload queue is over ' + cfg.maxQueueBytes + ' bytes; dropped batch ' + old.id);
      remove(old);
    }
  }
  function replace(b, parts) {
    const i = queue.indexOf(b);
    if (i < 0) return;
    queue.splice(i, 1, ...parts);
    queueBytes += parts.reduce((n, p) => n + p.n, -b.n);
    settle();
  }
  function remove(b) { replace(b, []); }
  function settle() { waiters = waiters.filter((x) => queue.some((b) => b.q <= x.q) || (x.r(), false)); }
  function body(b) {
    const head = JSON.stringify({token: cfg.token, session_id: b.s, window_id: b.w, distinct_id: b.d, batch_id: b.id});
    return head.slice(0, -1) + ',"events":[' + b.e.join(',') + ']}';
  }
  function final(status) { return (status >= 200 && status < 300) || (status >= 400 && status < 500 && status !== 408 && status !== 429); }

  async function post(b) {
    let data = body(b);
    const headers = {'Content-Type': 'application/json'};
    if (data.length > 1024 && w.CompressionStream) {
      try {
        data = await new Response(new Blob([data]).stream().pipeThrough(new CompressionStream('gzip'))).blob();
        headers['Content-Encoding'] = 'gzip';
      } catch (e) { /* send it plain */ }
    }
    return fetch(cfg.host + '/v1/recordings', {method: 'POST', headers, body: data});
  }
  async function pump() {
    if (pumping) return;
    pumping = true;
    try {
      while (queue.length) {
        const b = queue[0];
        let res = null;
        inflight = b;
        try { res = await post(b); } catch (e) { /* network error: retry */ }
        inflight = null;
        if (res && final(res.status)) {
          if (res.status >= 400) console.warn('Replay: batch ' + b.id + ' rejected with HTTP ' + res.status + '; dropped');
          remove(b);
          continue;
        }
        b.tries = (b.tries || 0) + 1;
        const ra = res && res.headers.get('Retry-After');
        let ms = ra == null ? NaN : /^\d+$/.test(ra) ? ra * 1000 : Date.parse(ra) - Date.now();
        if (!(ms >= 0)) ms = Math.random() * Math.min(cfg.retryCapMs, cfg.retryBaseMs * 2 ** (b.tries - 1));
        await new Promise((r) => setTimeout(r, Math.min(ms, 600000)));
      }
    } finally { pumping = false; }
  }

  function halves(b) {
    const h = b.e.length >> 1, part = (e, k) => ({id: b.id.length < 68 ? b.id + '-' + k : uuid(), s: b.s, w: b.w,
      d: b.d, e, n: e.reduce((n, s) => n + s.length + 1, 0), q: b.q});
    return [part(b.e.slice(0, h), 0), part(b.e.slice(h), 1)];
  }
  function split(b) { // halves until each part fits a beacon; a single event is never cut
    if (b.e.length < 2 || new Blob([body(b)]).size <= BEACON_MAX) return [b];
    return halves(b).reduce((all, p) => all.concat(split(p)), []);
  }
  function beacon(p, url, st) { // hands p to the browser; returns the parts it refused
    if (st.full) return [p];
    const data = body(p);
    try { if (navigator.sendBeacon(url, new Blob([data], {type: 'text/plain'}))) return []; } catch (e) { /* fetch below */ }
    // Refused: browsers give all unload requests together a budget (64 KB in Chromium); smaller parts may still fit.
    if (p.e.length > 1 && data.length > 8192) return halves(p).reduce((left, h) => left.concat(beacon(h, url, st)), []);
    if (data.length > BEACON_MAX) return [p]; // one event too big for any beacon
    st.full = true;
    fetch(url, {method: 'POST', body: data, keepalive: true, headers: {'Content-Type': 'text/plain'}})
      .then((r) => { if (final(r.status)) remove(p); }, () => {});
    return [p];
  }
  function onHide(ev) {
    if (ev.type === 'pagehide') set('sessionStorage', KL, null);
    else if (document.visibilityState !== 'hidden') { set('sessionStorage', KP, null); return; }
    cut(); saveSession();
    const url = cfg.host + '/v1/recordings?token=' + encodeURIComponent(cfg.token), st = {full: false};
    for (const b of queue.slice()) { // the batch in flight may still land: it stays queued (and persisted) with its id
      if (b !== inflight) replace(b, split(b).reduce((left, p) => left.concat(beacon(p, url, st)), []));
    }
    persist();
  }
  function persist() { // the oldest batches give way if sessionStorage is full
    const parts = queue.map((b) => JSON.stringify([b.id, b.s, b.w, b.d, b.e]));
    const total = parts.length;
    while (parts.length && !set('sessionStorage', KP, '[' + parts.join(',') + ']')) parts.splice(0, Math.ceil(parts.length / 2));
    if (!parts.length) set('sessionStorage', KP, null);
    if (parts.length < total) console.warn('Replay: sessionStorage is full; ' + (total - parts.length) + ' unsent batches lost');
  }
  function onShow() { set('sessionStorage', KL, '1'); set('sessionStorage', KP, null); }

  function consolePlugin() { // rrweb 2.x ships the console plugin separately; use it if loaded, else this small one
    const ext = w.rrweb.getRecordConsolePlugin || (w.rrwebPluginConsoleRecord || {}).getRecordConsolePlugin;
    if (ext) return ext();
    return {name: 'rrweb/console@1', options: {}, observer(cb, win) {
      const con = win.console, undo = [];
      let count = 0, busy = false;
      const str = (v) => {
        let s;
        try { s = v instanceof Error ? JSON.stringify(v.name + ': ' + v.message) : v === undefined ? '"undefined"'
          : v && v.nodeType ? JSON.stringify('<' + String(v.nodeName).toLowerCase() + '>') : JSON.stringify(v); } catch (e) { /* circular */ }
        s = s === undefined ? JSON.stringify(String(v)) : s;
        return s.length > 2000 ? JSON.stringify(s.slice(0, 2000) + '...') : s;
      };
      const send = (level, args) => {
        if (busy || ++count > 1000) return;
        busy = true; // console calls made while recording one are not recorded
        try {
          const trace = String(new Error().stack || '').split('\n').slice(3, 8).map((l) => l.trim().replace(/^at /, ''));
          cb({level, trace, payload: args.map(str)});
        } finally { busy = false; }
      };
      ['debug', 'info', 'log', 'warn', 'error', 'assert', 'trace'].forEach((level) => {
        const orig = con[level];
        if (typeof orig !== 'function') return;
        con[level] = function (...args) {
          orig.apply(this, args);
          if (level !== 'assert') send(level, args); else if (!args[0]) send(level, args.slice(1));
        };
        undo.push(() => { con[level] = orig; });
      });
      const onError = (e) => send('error', [e.message || String(e.error)]);
      const onRejection = (e) => send('error', ['Uncaught (in promise)', e.reason]);
      win.addEventListener('error', onError); win.addEventListener('unhandledrejection', onRejection);
      undo.push(() => { win.removeEventListener('error', onError); win.removeEventListener('unhandledrejection', onRejection); });
      return () => undo.forEach((f) => f());
    }};
  }

  const listeners = [[document, 'visibilitychange', onHide], [w, 'pagehide', onHide], [w, 'pageshow', onShow]];
  function init(options) {
    if (recording) { console.warn('Replay: already recording; init() ignored'); return; }
    if (!options || !options.host || !options.token) throw new Error('Replay.init needs {host, token}');
    if (!w.rrweb || !w.rrweb.record) throw new Error('Replay: load rrweb before capture.js');
    cfg = Object.assign({}, options);
    for (const k in DEFAULTS) if (cfg[k] == null) cfg[k] = DEFAULTS[k];
    cfg.host = String(cfg.host).replace(/\/+$/, '');
    if (cfg.distinctId != null) identify(cfg.distinctId);
    const now = Date.now();
    try { sess = JSON.parse(get('sessionStorage', KS)); } catch (e) { sess = null; }
    if (!sess || !isId(sess.id) || !(now - sess.t <= cfg.sessionIdleMs)) sess = {id: uuid(), t: now};
    sess.t = now; saveSession();
    // The flag is cleared on pagehide, so finding it set means sessionStorage was copied from a live
    // tab (a duplicated tab or window.open): that is another window.
    wid = get('sessionStorage', KW);
    if (!isId(wid) || get('sessionStorage', KL)) wid = uuid();
    set('sessionStorage', KW, wid); set('sessionStorage', KL, '1');
    let pending = [];
    try { pending = JSON.parse(get('sessionStorage', KP)) || []; } catch (e) { /* corrupt: ignore */ }
    set('sessionStorage', KP, null);
    for (const p of pending) {
      if (Array.isArray(p) && isId(p[0]) && Array.isArray(p[4])) {
        enqueue({id: p[0], s: p[1], w: p[2], d: p[3], e: p[4], n: p[4].reduce((n, s) => n + s.length + 1, 0), q: 0});
      }
    }
    listeners.forEach(([t, name, f]) => t.addEventListener(name, f));
    recording = true;
    stopRec = w.rrweb.record({emit, maskAllInputs: cfg.maskAllInputs !== false, maskTextSelector: cfg.maskTextSelector,
      blockSelector: cfg.blockSelector, plugins: cfg.recordConsole ? [consolePlugin()] : []});
    timer = setInterval(() => { cut(); pump(); }, cfg.flushIntervalMs);
    pump();
  }
  function identify(id) {
    if (id == null || id === '' || String(id).length > 200) throw new Error('Replay.identify needs a distinct id of 1-200 chars');
    set('localStorage', KD, String(id));
  }
  function flush() {
    if (!cfg) return Promise.resolve();
    cut(); pump();
    return new Promise((r) => { waiters.push({q: seq, r}); settle(); });
  }
  function stop() {
    if (stopRec) stopRec(); // the page-hide listeners stay: what is still queued goes out on hide
    stopRec = null; recording = false; clearInterval(timer);
    return flush();
  }
  w.Replay = {init, identify, flush, stop, getSessionId: () => (sess ? sess.id : null)};
})(window);
