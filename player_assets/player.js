/* Replay's player page: progressive, live rrweb-player with a timeline, console log and metadata.
 *
 * Progressive: the events endpoint streams one JSON array; it is read with fetch() and a
 * ReadableStream reader and cut into elements by a small incremental parser, so the player is
 * created as soon as the first Meta + FullSnapshot are in and the rest is added behind it.
 * Live: a session that may still be recording is polled with ?from=<ms> (events at or after it).
 * Each poll asks again for an overlap of OVERLAP_MS, so a batch that arrives late (another tab,
 * a retry) still shows; what the player already has is recognised by its exact JSON text and
 * skipped (a multiset: the server sends each event of a batch once, and each batch once).
 *
 * Safety: recorded content is untrusted. rrweb-player replays into an iframe sandboxed without
 * allow-scripts (never pass UNSAFE_replayCanvas, which adds it), the page's CSP has no inline
 * script, and every recorded string shown here goes through textContent, never innerHTML.
 *
 * For tests: window.__replay = {eventsLoaded, eventsAtFirstFrame, done, liveEventsAdded, polls, totalTime, error}.
 */
(function () {
  'use strict';
  const META = 4, FULL_SNAPSHOT = 2, INCREMENTAL = 3, CUSTOM = 5, PLUGIN = 6;
  const SRC_MUTATION = 0, SRC_MOUSE_INTERACTION = 2, SRC_INPUT = 5, CLICK = 2;
  const CONSOLE_PLUGIN = 'rrweb/console@1';
  const OVERLAP_MS = 60 * 1000;
  const POLL_MS = 3000, POLL_IDLE_MS = 10000, POLL_GIVE_UP_MS = 30 * 60 * 1000;
  const SLICE_MS = 25; // parse at most this long before letting the page paint
  const MAX_ENTRIES = 5000; // per list; a longer session shows its first ones and says so
  const INPUT_MERGE_MS = 2000;

  const config = JSON.parse(document.getElementById('replay-config').textContent);
  const share = new URLSearchParams(window.location.search).get('share');
  const state = window.__replay = {
    eventsLoaded: 0, eventsAtFirstFrame: null, done: false, liveEventsAdded: 0, polls: 0, error: null,
    playerCreated: false, startedAt: null,
  };
  // rrweb adds events in a microtask, so the player's length is read when asked, not when fed.
  Object.defineProperty(state, 'totalTime', {enumerable: true, get: () => (player ? player.getMetaData().totalTime : 0)});
  const el = (id) => document.getElementById(id);
  const status = el('load-status');

  function apiUrl(path, params) {
    const q = new URLSearchParams(params || {});
    if (share) q.set('share', share);
    const s = q.toString();
    return path + (s ? '?' + s : '');
  }

  // -- incremental JSON array parser --------------------------------------------------------------

  /* Feeds text chunks of one JSON array; calls onItem(raw, value) for each complete element. */
  function ArrayParser(onItem) {
    let buf = '', pos = 0, depth = 0, inString = false, escaped = false, start = -1, opened = false;
    this.closed = false;
    this.push = (text) => {
      buf += text;
      for (; pos < buf.length; pos++) {
        const c = buf.charCodeAt(pos);
        if (inString) {
          if (escaped) escaped = false;
          else if (c === 92) escaped = true; // backslash
          else if (c === 34) inString = false; // quote
          continue;
        }
        if (c === 32 || c === 10 || c === 13 || c === 9) continue;
        if (this.closed) throw new Error('data after the end of the array');
        if (!opened) {
          if (c !== 91) throw new Error('the events are not a JSON array');
          opened = true; depth = 1; continue;
        }
        if (depth === 1 && (c === 44 || c === 93)) { // , or ] at the top: an element ends
          if (start >= 0) {
            const raw = buf.slice(start, pos);
            onItem(raw, JSON.parse(raw));
            start = -1;
          }
          if (c === 93) { depth = 0; this.closed = true; }
          continue;
        }
        if (start < 0) start = pos;
        if (c === 34) inString = true;
        else if (c === 91 || c === 123) depth++;
        else if (c === 93 || c === 125) depth--;
      }
      // Drop what is consumed, keep the element in progress.
      const keep = start >= 0 ? start : pos;
      buf = buf.slice(keep); pos -= keep; if (start >= 0) start = 0;
    };
  }

  // -- what the page knows about the recording ----------------------------------------------------

  const events = [];       // everything loaded, in arrival order
  const recent = [];       // {ts, raw} of the newest events, for live dedup
  let pending = [];        // parsed, not yet handed to the player
  let player = null, replayer = null, baseline = null, maxTs = -Infinity;
  let sawMeta = false, sawSnapshot = false, viewport = null;
  let finishedAt = null;
  const nodes = new Map(); // rrweb node id -> short description, for the timeline

  function describeNode(n) {
    if (!n || n.type !== 2 || typeof n.tagName !== 'string') return null;
    const a = n.attributes || {};
    let d = n.tagName;
    if (typeof a.id === 'string' && a.id) d += '#' + a.id;
    else if (typeof a.class === 'string' && a.class.trim()) d += '.' + a.class.trim().split(/\s+/)[0];
    if (n.tagName === 'input' && typeof a.type === 'string') d += '[' + a.type + ']';
    if (/^(a|button|label|li|option|h[1-6]|summary)$/.test(n.tagName)) {
      const text = textOf(n);
      if (text) d += ' “' + text + '”';
    }
    return d.slice(0, 120);
  }
  function textOf(n) {
    for (const c of n.childNodes || []) {
      if (c.type === 3 && typeof c.textContent === 'string' && c.textContent.trim()) return c.textContent.trim().slice(0, 40);
      if (c.type === 2) { const t = textOf(c); if (t) return t; }
    }
    return '';
  }
  function indexNodes(root) {
    const stack = [root];
    while (stack.length) {
      const n = stack.pop();
      if (!n || typeof n !== 'object') continue;
      const d = describeNode(n);
      if (d && typeof n.id === 'number') nodes.set(n.id, d);
      if (Array.isArray(n.childNodes)) for (const c of n.childNodes) stack.push(c);
    }
  }

  // -- timeline and console ----------------------------------------------------------------------

  const timeline = el('timeline'), consoleList = el('console');
  const entries = []; // {t, li} in time order, for highlighting the current one
  let timelineCount = 0, consoleCount = 0, lastInput = null, currentEntry = null, pageEntry = null;

  function clock(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return (h ? h + ':' + String(m).padStart(2, '0') : String(m)) + ':' + String(sec).padStart(2, '0');
  }
  function entry(list, t, kind, label, detail) {
    const li = document.createElement('li');
    li.className = 'entry ' + kind;
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.t = String(t);
    const time = document.createElement('span');
    time.className = 'time'; time.textContent = clock(t);
    const what = document.createElement('span');
    what.className = 'what'; what.textContent = label;
    b.append(time, what);
    if (detail) {
      const more = document.createElement('span');
      more.className = 'detail'; more.textContent = detail;
      b.append(more);
    }
    li.append(b);
    list.append(li);
    return li;
  }
  function consolePayload(payload) {
    if (!Array.isArray(payload)) return '';
    return payload.map((p) => {
      if (typeof p !== 'string') return String(p);
      try { const v = JSON.parse(p); return typeof v === 'string' ? v : p; } catch (e) { return p; }
    }).join(' ').slice(0, 2000);
  }

  function note(e) {
    const t = Math.max(0, e.timestamp - baseline);
    const d = e.data || {};
    let added = null;
    if (e.type === META) {
      added = ['page', 'Page view', typeof d.href === 'string' ? d.href : ''];
    } else if (e.type === FULL_SNAPSHOT) {
      indexNodes(d.node);
      // A page view's entry seeks to its snapshot (just after the Meta), so the page is on screen.
      if (pageEntry) pageEntry.querySelector('button').dataset.t = String(t);
      pageEntry = null;
    } else if (e.type === INCREMENTAL) {
      if (d.source === SRC_MUTATION && Array.isArray(d.adds)) {
        for (const a of d.adds) indexNodes(a && a.node);
      } else if (d.source === SRC_MOUSE_INTERACTION && d.type === CLICK) {
        added = ['click', 'Click', nodes.get(d.id) || ''];
      } else if (d.source === SRC_INPUT) {
        if (lastInput && lastInput.id === d.id && e.timestamp - lastInput.ts < INPUT_MERGE_MS) {
          lastInput.ts = e.timestamp; // one entry per burst of typing in a field
        } else {
          lastInput = {id: d.id, ts: e.timestamp};
          added = ['input', 'Input', nodes.get(d.id) || ''];
        }
      }
    } else if (e.type === CUSTOM) {
      added = ['custom', 'Event: ' + String(d.tag || ''), d.payload === undefined ? '' : JSON.stringify(d.payload).slice(0, 200)];
    } else if (e.type === PLUGIN && d.plugin === CONSOLE_PLUGIN && d.payload) {
      const level = String(d.payload.level || 'log');
      const text = consolePayload(d.payload.payload);
      if (consoleCount++ < MAX_ENTRIES) entry(consoleList, t, 'console-' + level.replace(/[^a-z]/g, ''), level, text);
      if (level === 'error') added = ['error', 'Console error', text];
    }
    if (added && timelineCount++ < MAX_ENTRIES) {
      const li = entry(timeline, t, added[0], added[1], added[2]);
      entries.push({t, li});
      if (e.type === META) pageEntry = li;
    }
  }
  function seekTo(ev) {
    const b = ev.target.closest('button[data-t]');
    if (b && player) player.goto(Number(b.dataset.t) + 1); // +1: rrweb applies the events *before* an offset
  }
  timeline.addEventListener('click', seekTo);
  consoleList.addEventListener('click', seekTo);

  function highlight(current) {
    let lo = 0, hi = entries.length - 1, found = null;
    while (lo <= hi) { // the last entry at or before the current time
      const mid = (lo + hi) >> 1;
      if (entries[mid].t <= current) { found = entries[mid]; lo = mid + 1; } else hi = mid - 1;
    }
    if (found === currentEntry) return;
    if (currentEntry) currentEntry.li.classList.remove('current');
    if (found) found.li.classList.add('current');
    currentEntry = found;
  }

  // -- the player --------------------------------------------------------------------------------

  function playerSize() {
    const stage = el('player');
    const width = Math.max(320, (stage.clientWidth || 800) - 2); // its 1px border
    const ratio = viewport ? viewport[1] / viewport[0] : 9 / 16;
    const height = Math.max(200, Math.min(Math.round(width * ratio), Math.round(window.innerHeight * 0.7)));
    return {width, height};
  }

  function createPlayer(initial) {
    const size = playerSize();
    player = new window.rrwebPlayer.Player({
      target: el('player'),
      props: {
        events: initial, width: size.width, height: size.height,
        autoPlay: config.startAt == null, skipInactive: true, speedOption: [1, 2, 4, 8], showController: true,
        mouseTail: false, UNSAFE_replayCanvas: false,
      },
    });
    replayer = player.getReplayer();
    state.playerCreated = true;
    const firstFrame = () => {
      if (state.eventsAtFirstFrame == null) state.eventsAtFirstFrame = state.eventsLoaded;
    };
    const doc = replayer.iframe && replayer.iframe.contentDocument;
    if (doc && doc.documentElement && doc.documentElement.childNodes.length) firstFrame();
    replayer.on('fullsnapshot-rebuilded', firstFrame);
    replayer.on('finish', () => { finishedAt = replayer.getCurrentTime(); });
    replayer.on('start', () => { finishedAt = null; });
    replayer.on('resume', () => { finishedAt = null; });
    player.addEventListener('ui-update-current-time', (e) => onTime(e.payload));
    window.addEventListener('resize', () => {
      const s = playerSize();
      player.$set({width: s.width, height: s.height});
      player.triggerResize();
    });
  }

  // rrweb's addEvent takes effect in a microtask: seeking right after it would miss those events.
  const afterAdded = (fn) => { Promise.resolve().then(fn); };

  function feed(list) {
    // Hand events to the running player; the meta (total time) is refreshed once per call.
    for (let i = 0; i < list.length - 1; i++) replayer.addEvent(list[i]);
    if (list.length) player.addEvent(list[list.length - 1]);
  }

  function onParsed(raw, e) {
    if (!e || typeof e.timestamp !== 'number') return;
    events.push(e);
    state.eventsLoaded = events.length;
    if (baseline === null) baseline = e.timestamp;
    if (e.timestamp > maxTs) maxTs = e.timestamp;
    recent.push({ts: e.timestamp, raw});
    if (e.type === META) {
      sawMeta = true;
      if (!viewport && e.data && e.data.width > 0 && e.data.height > 0) viewport = [e.data.width, e.data.height];
    }
    if (e.type === FULL_SNAPSHOT && sawMeta) sawSnapshot = true;
    note(e);
    pending.push(e);
  }

  function drain() {
    if (!pending.length) return;
    if (!player) {
      if (!(sawMeta && sawSnapshot)) return; // nothing to show before the first full snapshot
      const initial = pending; pending = [];
      createPlayer(initial);
      return;
    }
    const list = pending; pending = [];
    const stoppedAt = finishedAt;
    feed(list);
    if (stoppedAt != null) {
      // It had played all it had (the stream or a live session was behind): carry on with the new
      // events, skipping straight to them rather than waiting through the idle time before them.
      let first = Infinity;
      for (const e of list) if (e.timestamp < first) first = e.timestamp;
      finishedAt = null;
      afterAdded(() => player.goto(Math.max(stoppedAt, first - baseline - 500), true));
    }
  }

  function pruneRecent() {
    const keepFrom = maxTs - 2 * OVERLAP_MS;
    let i = 0;
    while (i < recent.length && recent[i].ts < keepFrom) i++;
    if (i > 1024 || i === recent.length) recent.splice(0, i);
  }

  // -- moments and links -------------------------------------------------------------------------

  const linkInput = el('moment-link');
  let lastLinkUpdate = 0;
  function momentLink(ms) {
    const q = new URLSearchParams();
    if (share) q.set('share', share);
    q.set('t', String(Math.max(0, Math.floor(ms))));
    return window.location.origin + window.location.pathname + '?' + q.toString();
  }
  function onTime(ms) {
    if (typeof ms !== 'number') return;
    highlight(ms);
    const now = Date.now();
    if (now - lastLinkUpdate > 500) { lastLinkUpdate = now; linkInput.value = momentLink(ms); }
  }
  el('copy-link').addEventListener('click', () => {
    const value = momentLink(replayer ? replayer.getCurrentTime() : 0);
    linkInput.value = value;
    linkInput.select();
    const done = () => { el('copy-link').textContent = 'Copied'; setTimeout(() => { el('copy-link').textContent = 'Copy link to this moment'; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(value).then(done, () => {});
    else { try { document.execCommand('copy'); done(); } catch (e) { /* the link is selected in the field */ } }
  });

  function maybeStartAt() {
    if (config.startAt == null || state.startedAt != null || !player) return;
    if (!state.done && maxTs - baseline < config.startAt) return; // not loaded that far yet
    state.startedAt = config.startAt;
    // Exactly t, as the copied link was: rrweb shows the events before t (one at t is a new page's
    // Meta when t was taken there, and showing it without its snapshot would show nothing).
    afterAdded(() => player.goto(config.startAt, false));
  }

  // -- loading -----------------------------------------------------------------------------------

  const yieldToPage = () => new Promise((resolve) => setTimeout(resolve, 0));

  function fail(message) {
    state.error = message;
    status.textContent = message;
    status.classList.add('error');
  }

  async function load() {
    let res;
    try {
      res = await fetch(apiUrl(config.eventsUrl), {credentials: 'same-origin', headers: {Accept: 'application/json'}});
    } catch (e) { fail('Could not reach the server.'); return; }
    if (res.status === 401) {
      window.location.href = '/signin?next=' + encodeURIComponent(window.location.pathname + window.location.search);
      return;
    }
    if (!res.ok) { fail('The server answered ' + res.status + '.'); return; }
    const parser = new ArrayParser(onParsed);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let sliceStart = performance.now();
    for (;;) {
      let chunk;
      try { chunk = await reader.read(); } catch (e) { fail('The recording stopped arriving after ' + events.length + ' events.'); break; }
      if (chunk.done) break;
      parser.push(decoder.decode(chunk.value, {stream: true}));
      const hadPlayer = !!player;
      drain();
      maybeStartAt();
      status.textContent = 'Loading… ' + events.length + ' events';
      if (!hadPlayer && player) { await yieldToPage(); sliceStart = performance.now(); continue; } // paint the first frame now
      if (performance.now() - sliceStart > SLICE_MS) { await yieldToPage(); sliceStart = performance.now(); }
    }
    parser.push(decoder.decode());
    drain();
    if (!state.error && !parser.closed) fail('The recording was cut short after ' + events.length + ' events.');
    state.done = true;
    maybeStartAt();
    if (!player) {
      if (!state.error) fail(events.length ? 'This session has no full snapshot yet: nothing to replay.' : 'This session has no events.');
    } else if (!state.error) {
      status.textContent = events.length + ' events';
    }
    pruneRecent();
    for (const [list, count] of [[timeline, timelineCount], [consoleList, consoleCount]]) {
      if (count > MAX_ENTRIES) {
        const li = document.createElement('li');
        li.className = 'entry more';
        li.textContent = '… and ' + (count - MAX_ENTRIES) + ' more, not listed';
        list.append(li);
      }
    }
    if (config.live) schedulePoll(POLL_MS);
  }

  // -- live --------------------------------------------------------------------------------------

  let lastNewAt = Date.now();
  function schedulePoll(ms) { setTimeout(poll, ms); }

  async function poll() {
    if (document.hidden) { schedulePoll(POLL_MS); return; }
    const from = Number.isFinite(maxTs) ? maxTs - OVERLAP_MS : 0;
    let text;
    try {
      const res = await fetch(apiUrl(config.eventsUrl, {from: String(from)}), {credentials: 'same-origin'});
      if (res.status === 401 || res.status === 403 || res.status === 404) return; // signed out or erased: stop
      if (!res.ok) throw new Error(String(res.status));
      text = await res.text();
    } catch (e) { schedulePoll(POLL_IDLE_MS); return; }
    state.polls++;
    const have = new Map();
    for (const r of recent) if (r.ts >= from) have.set(r.raw, (have.get(r.raw) || 0) + 1);
    const fresh = [];
    new ArrayParser((raw, e) => {
      const n = have.get(raw) || 0;
      if (n > 0) { have.set(raw, n - 1); return; } // already playing this one
      fresh.push([raw, e]);
    }).push(text);
    if (fresh.length) {
      for (const [raw, e] of fresh) onParsed(raw, e);
      state.liveEventsAdded += fresh.length;
      drain();
      lastNewAt = Date.now();
      el('live-status').hidden = false;
      status.textContent = events.length + ' events';
      pruneRecent();
      refreshMetadata();
    }
    const idle = Date.now() - lastNewAt;
    if (idle > 60000) el('live-status').hidden = true;
    if (idle < POLL_GIVE_UP_MS) schedulePoll(idle < 120000 ? POLL_MS : POLL_IDLE_MS);
  }

  // -- metadata ----------------------------------------------------------------------------------

  function duration(ms) {
    if (typeof ms !== 'number') return '';
    return ms < 60000 ? (ms / 1000).toFixed(1) + 's' : clock(ms);
  }
  function iso(ms) { return typeof ms === 'number' ? new Date(ms).toISOString().replace('.000Z', 'Z') : ''; }

  let metadataTimer = 0;
  function refreshMetadata() {
    clearTimeout(metadataTimer);
    metadataTimer = setTimeout(loadMetadata, 5000);
  }
  async function loadMetadata() {
    let s;
    try {
      const res = await fetch(apiUrl(config.summaryUrl), {credentials: 'same-origin'});
      if (!res.ok) return;
      s = await res.json();
    } catch (e) { return; }
    const rows = [
      ['User', s.distinct_id || 'anonymous'], ['Session', s.session_id], ['Start', iso(s.start_ts)],
      ['End', iso(s.end_ts)], ['Duration', duration(s.duration_ms)], ['Active time', duration(s.active_ms)],
      ['Clicks', s.clicks], ['Key presses', s.keypresses], ['Console errors', s.console_errors],
      ['Viewport', Array.isArray(s.viewport) ? s.viewport.join(' × ') : ''],
      ['Windows', (s.window_ids || []).length + ((s.window_ids || []).length > 1 ? ' (played together)' : '')],
      ['Events', s.event_count],
    ];
    const dl = el('metadata');
    const frag = document.createDocumentFragment();
    const add = (k, v) => {
      const dt = document.createElement('dt'); dt.textContent = k;
      const dd = document.createElement('dd'); dd.textContent = v == null ? '' : String(v);
      frag.append(dt, dd);
      return dd;
    };
    rows.forEach(([k, v]) => add(k, v));
    const urls = add('URLs', '');
    const ul = document.createElement('ul');
    ul.className = 'urls';
    for (const u of s.urls || []) { const li = document.createElement('li'); li.textContent = u; ul.append(li); }
    urls.append(ul);
    dl.replaceChildren(frag);
    state.metadataLoaded = true;
  }

  loadMetadata();
  load().catch((e) => fail('Playback failed: ' + (e && e.message ? e.message : e)));
})();
