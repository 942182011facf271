"""player_assets/capture.js in real Chromium, against a stand-in collector.

A tiny aiohttp server on 127.0.0.1 serves the test pages, capture.js and the vendored rrweb bundle,
and also plays the remote peer of the snippet: ``RecordingsCollector`` answers
``POST /v1/recordings`` the way the wire in docs/capture.md says the Replay server does (CORS, gzip,
token in the body or in ``?token=`` for text/plain beacons) and records every post. It is a test double
of the browser's peer only; the code under test is capture.js. The pages are served from
``http://127.0.0.1:PORT`` and the snippet posts to ``http://localhost:PORT``, so uploads are
cross-origin as in production.

The last test runs the snippet against the real Replay server instead (tests/conftest.py's ``server``).

rrweb is the vendored player_assets/vendor/rrweb-2.2.2; Chromium is the session ``browser`` fixture of
tests/browser/conftest.py. Under CI=true a missing browser or asset fails.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
from aiohttp import web

from harness import IN_CI, fetch_events

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CAPTURE_JS = ROOT / "player_assets" / "capture.js"
RRWEB_UMD = ROOT / "player_assets/vendor/rrweb-2.2.2/dist/rrweb.umd.min.cjs"
ID_RE = re.compile(r"^[A-Za-z0-9-]{1,70}$")
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Content-Encoding", "Access-Control-Expose-Headers": "Retry-After",
        "Access-Control-Max-Age": "600"}
META, FULL_SNAPSHOT, INCREMENTAL, PLUGIN = 4, 2, 3, 6
INPUT = 5


def _missing(what: str):
    if IN_CI:
        pytest.fail(f"{what} is missing (CI=true: nothing skips)")
    pytest.skip(f"{what} is missing")


class RecordingsCollector:
    """Stand-in for the Replay server's ``/v1/recordings``: records posts; can answer 503 or 400 on cue."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[dict] = []
        self.fail_with_503: list[str | None] = []  # one entry per post to refuse: its Retry-After (or None)
        self.reject_with_400 = 0

    def reset(self) -> None:
        with self.lock:
            self.posts.clear()
            self.fail_with_503.clear()
            self.reject_with_400 = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=CORS)
        raw = await request.read()
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "gzip":  # the runner does not inflate bodies itself: this sees the wire
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
        body = json.loads(text)
        content_type = request.headers.get("Content-Type", "")
        post = {
            "via": "beacon" if content_type.startswith("text/plain") else "fetch",
            "encoding": encoding, "bytes_on_wire": request.content_length, "text": text, "time": time.monotonic(),
            "token": request.query.get("token") or body.get("token"), "body_token": body.get("token"),
            "batch_id": body.get("batch_id"), "session_id": body.get("session_id"),
            "window_id": body.get("window_id"), "distinct_id": body.get("distinct_id"), "events": body.get("events"),
        }
        well_formed = (all(isinstance(post[k], str) and ID_RE.match(post[k]) for k in ("batch_id", "session_id", "window_id"))
                       and isinstance(post["events"], list) and (post["distinct_id"] is None or isinstance(post["distinct_id"], str)))
        with self.lock:
            if not well_formed:
                post["status"] = 400
            elif self.fail_with_503:
                retry_after = self.fail_with_503.pop(0)
                post["status"], post["retry_after"] = 503, retry_after
            elif self.reject_with_400:
                self.reject_with_400 -= 1
                post["status"] = 400
            else:
                post["status"] = 200
            self.posts.append(post)
        headers = dict(CORS)
        if post.get("retry_after") is not None:
            headers["Retry-After"] = post["retry_after"]
        return web.json_response({"ok": post["status"] == 200}, status=post["status"], headers=headers)

    def of(self, token: str, status: int | None = 200) -> list[dict]:
        with self.lock:
            return [p for p in self.posts if p["token"] == token and (status is None or p["status"] == status)]

    def events(self, token: str) -> list[dict]:
        return [e for p in self.of(token) for e in p["events"]]

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.05)
        with self.lock:
            seen = [(p["token"][-12:], p["via"], p["status"], len(p["text"]), len(p["events"] or ())) for p in self.posts]
        raise AssertionError(f"timed out waiting for {what}; posts (token, via, status, chars, events): {seen}")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{name}</title>
<script src="/static/vendor/rrweb-2.2.2/dist/rrweb.umd.min.cjs"></script>
<script src="{assets}/static/capture.js"></script>
<script>Replay.init(Object.assign({{host: {host}, token: {token}}}, {cfg}));</script>
</head><body>
<h1>page {name}</h1>
<form><input id="name" name="name"> <input id="card" type="text"> <input id="pw" type="password">
<textarea id="notes"></textarea></form>
<p class="secret-text">Account number 99887766</p>
<div class="blocked">blocked-content-xyz</div>
<div id="log"></div>
<a id="next" href="{next}">next page</a>
</body></html>"""


class Site:
    def __init__(self, collector: RecordingsCollector) -> None:
        self.collector = collector
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:  # another origin than the pages': uploads are cross-origin
        return f"http://localhost:{self.port}"

    def url(self, name: str, token: str, replay: str = "", **cfg) -> str:
        """A test page; with ``replay`` (a Replay server's URL) it loads capture.js from there and records to it."""
        query = {"token": token, "cfg": json.dumps(cfg), "replay": replay}
        return f"{self.origin}/page/{name}?" + urllib.parse.urlencode(query)

    async def page(self, request: web.Request) -> web.Response:
        name, token = request.match_info["name"], request.query["token"]
        cfg, replay = request.query.get("cfg", "{}"), request.query.get("replay", "")
        js = lambda v: json.dumps(v).replace("</", "<\\/")  # noqa: E731
        next_url = "/page/two?" + urllib.parse.urlencode({"token": token, "cfg": cfg, "replay": replay})
        html = PAGE.format(name=name, host=js(replay or self.host), token=js(token), cfg=js(json.loads(cfg)),
                           assets=replay, next=next_url.replace("&", "&amp;"))
        return web.Response(text=html, content_type="text/html")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/page/{name}", self.page)
        app.router.add_get("/static/capture.js", lambda r: web.FileResponse(CAPTURE_JS, headers={"Content-Type": "text/javascript"}))
        app.router.add_get("/static/vendor/rrweb-2.2.2/dist/rrweb.umd.min.cjs",
                           lambda r: web.FileResponse(RRWEB_UMD, headers={"Content-Type": "text/javascript"}))
        app.router.add_route("POST", "/v1/recordings", self.collector.handle)
        app.router.add_route("OPTIONS", "/v1/recordings", self.collector.handle)
        return app


@pytest.fixture(scope="module")
def site():
    if not RRWEB_UMD.is_file():
        _missing(f"rrweb bundle {RRWEB_UMD}")
    collector = RecordingsCollector()
    s = Site(collector)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict = {}

    async def start():
        runner = web.AppRunner(s.app(), auto_decompress=False)
        await runner.setup()
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        s.port = tcp._server.sockets[0].getsockname()[1]
        holder["runner"] = runner

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "test server did not start"
    yield s
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def context(browser, site):  # `browser`: the session Chromium of tests/browser/conftest.py
    site.collector.reset()
    ctx = browser.new_context()
    yield ctx
    ctx.close()


@pytest.fixture
def token(request) -> str:  # one token per test: a late beacon from another test is never counted
    return "tok-" + re.sub(r"[^A-Za-z0-9]", "-", request.node.name)[:60]


def flush(page) -> None:
    """Replay.flush(), bounded: it resolves only once the collector took everything."""
    page.evaluate("Promise.race([Replay.flush(), new Promise((_, no) => setTimeout(() => no(new Error('flush timed out')), 20000))])")


def test_typed_values_never_reach_the_server_and_masking_is_on_by_default(context, site, token):
    page = context.new_page()
    page.goto(site.url("one", token, maskTextSelector=".secret-text", blockSelector=".blocked"))
    page.type("#name", "hunter2secret")
    page.type("#card", "4111111111111111")
    page.type("#pw", "pa55word")
    page.type("#notes", "dear diary")
    flush(page)
    posts = site.collector.of(token)
    raw = "".join(p["text"] for p in posts)
    for secret in ("hunter2secret", "4111111111111111", "pa55word", "dear diary", "99887766", "blocked-content-xyz"):
        assert secret not in raw
    inputs = [e["data"]["text"] for e in site.collector.events(token) if e["type"] == INCREMENTAL and e["data"]["source"] == INPUT]
    assert inputs and all(set(t) <= {"*"} for t in inputs)
    assert "page one" in raw  # ordinary text is recorded
    assert not [e for e in site.collector.events(token) if e["type"] == PLUGIN]  # console off by default
    assert all(p["token"] == p["body_token"] == token and p["via"] == "fetch" for p in posts)


def test_batches_arrive_in_order_with_unique_ids_and_big_ones_gzipped(context, site, token):
    page = context.new_page()
    page.goto(site.url("one", token, flushIntervalMs=150))
    for i in range(6):
        page.type("#name", f"x{i}")
        page.wait_for_timeout(200)
    flush(page)
    posts = site.collector.of(token, status=None)
    assert all(p["status"] == 200 for p in posts)
    assert len(posts) >= 4
    ids = [p["batch_id"] for p in posts]
    assert len(set(ids)) == len(ids)
    events = [e for p in posts for e in p["events"]]
    assert [e["type"] for e in events if e["type"] not in (0, 1)][:2] == [META, FULL_SNAPSHOT]  # 0, 1: DOM ready, load
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert posts[0]["encoding"] == "gzip" and posts[0]["bytes_on_wire"] < len(posts[0]["text"])
    assert len({(p["session_id"], p["window_id"]) for p in posts}) == 1
    assert all(p["distinct_id"] is None for p in posts)


def test_a_503_is_retried_with_the_same_batch_id_honouring_retry_after_and_order_is_kept(context, site, token):
    site.collector.fail_with_503.extend(["1", None])  # first refusal says Retry-After: 1, the second says nothing
    page = context.new_page()
    page.goto(site.url("one", token, flushIntervalMs=100))
    for i in range(5):
        page.type("#name", f"y{i}")
        page.wait_for_timeout(150)
    flush(page)
    posts = site.collector.of(token, status=None)
    assert [p["status"] for p in posts[:3]] == [503, 503, 200]
    assert posts[0]["batch_id"] == posts[1]["batch_id"] == posts[2]["batch_id"]
    assert posts[1]["time"] - posts[0]["time"] >= 0.9  # Retry-After: 1 was honoured
    accepted = [p["batch_id"] for p in posts if p["status"] == 200]
    assert len(accepted) == len(set(accepted)) >= 3
    stamps = [e["timestamp"] for p in posts if p["status"] == 200 for e in p["events"]]
    assert stamps == sorted(stamps)  # nothing overtook the refused batch


def test_a_4xx_drops_the_batch_with_a_warning_and_the_queue_goes_on(context, site, token):
    site.collector.reject_with_400 = 1
    page = context.new_page()
    warnings = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    page.goto(site.url("one", token, flushIntervalMs=100))
    page.type("#name", "abc")
    flush(page)
    posts = site.collector.of(token, status=None)
    assert posts[0]["status"] == 400 and all(p["status"] == 200 for p in posts[1:]) and len(posts) >= 2
    assert posts[0]["batch_id"] not in [p["batch_id"] for p in posts[1:]]  # not retried
    assert any("rejected with HTTP 400" in w for w in warnings)


def test_session_survives_navigation_window_stays_and_a_copied_tab_is_another_window(context, site, token):
    page = context.new_page()
    page.goto(site.url("one", token, flushIntervalMs=200))
    page.evaluate("Replay.identify('user-42')")
    page.type("#name", "a")
    session = page.evaluate("Replay.getSessionId()")
    assert ID_RE.match(session)
    page.click("#next")
    page.wait_for_url("**/page/two**")
    assert page.evaluate("Replay.getSessionId()") == session
    page.type("#name", "b")
    flush(page)
    posts = site.collector.of(token)
    pages = {p["session_id"] + "|" + p["window_id"]: p for p in posts}
    assert len(pages) == 1 and posts[0]["session_id"] == session
    hrefs = [e["data"]["href"] for e in site.collector.events(token) if e["type"] == META]
    assert any("/page/one" in h for h in hrefs) and any("/page/two" in h for h in hrefs)
    assert posts[-1]["distinct_id"] == "user-42"
    # window.open copies sessionStorage into the new tab, like "duplicate tab": same session, new window.
    with context.expect_page() as opened:
        page.evaluate("url => window.open(url)", page.url)
    twin = opened.value
    twin.wait_for_load_state()
    twin.type("#name", "c")
    flush(twin)
    twin_posts = [p for p in site.collector.of(token) if p["window_id"] != posts[0]["window_id"]]
    assert twin_posts and {p["session_id"] for p in twin_posts} == {session}


def test_a_new_session_starts_after_the_idle_timeout_with_a_full_snapshot(context, site, token):
    page = context.new_page()
    page.goto(site.url("one", token, flushIntervalMs=200, sessionIdleMs=1500))
    page.type("#name", "a")
    first = page.evaluate("Replay.getSessionId()")
    page.wait_for_timeout(2000)
    page.type("#name", "b")
    second = page.evaluate("Replay.getSessionId()")
    assert second != first and ID_RE.match(second)
    flush(page)
    new = [e for p in site.collector.of(token) if p["session_id"] == second for e in p["events"]]
    assert [e["type"] for e in new[:2]] == [META, FULL_SNAPSHOT]
    assert any(e["type"] == INCREMENTAL and e["data"]["source"] == INPUT for e in new)


ADD_BLOCKS = """async n => { for (let i = 0; i < n; i++) {
  await new Promise(r => setTimeout(r, 0));  // one task, one mutation event
  const d = document.createElement('div'); d.textContent = 'tail-block-' + i + ' ' + 'z'.repeat(1000);
  document.getElementById('log').appendChild(d); } }"""


def _block_counts(collector, token) -> dict[int, int]:
    counts: dict[int, int] = {}
    for p in collector.of(token):
        for m in re.findall(r"tail-block-(\d+)", p["text"]):
            counts[int(m)] = counts.get(int(m), 0) + 1
    return counts


@pytest.mark.parametrize("leave", ["navigate-away", "close"])
def test_page_hide_beacons_the_buffer_and_the_waiting_batches(context, site, token, leave):
    site.collector.fail_with_503.append("30")  # the first batch (the full snapshot) waits 30 s for its retry
    page = context.new_page()
    page.goto(site.url("one", token, flushIntervalMs=600000))  # nothing leaves on a timer
    refused = site.collector.wait_for(lambda: site.collector.of(token, status=503), what="the refused snapshot")[0]
    page.type("#name", "secret-tail")
    page.evaluate(ADD_BLOCKS, 40)  # ~45 KB: with the snapshot, within the browsers' 64 KB budget for unload requests
    assert site.collector.of(token) == []
    if leave == "close":
        page.close(run_before_unload=True)
    else:
        page.goto("about:blank")
    site.collector.wait_for(lambda: _block_counts(site.collector, token) == {i: 1 for i in range(40)}, what="the tail")
    posts = site.collector.of(token)
    assert all(p["via"] == "beacon" and len(p["text"].encode()) <= 60000 for p in posts)
    assert refused["batch_id"] in [p["batch_id"] for p in posts]  # the waiting batch went whole, with its own id
    assert len({p["batch_id"] for p in posts}) == len(posts)
    assert "secret-tail" not in "".join(p["text"] for p in posts)
    assert any(e["type"] == INCREMENTAL and e["data"]["source"] == INPUT for p in posts for e in p["events"])


def test_what_the_beacons_cannot_carry_is_sent_by_the_next_page_of_the_tab(context, site, token):
    page = context.new_page()
    page.goto(site.url("one", token, flushIntervalMs=600000))
    site.collector.wait_for(lambda: site.collector.of(token), what="the full snapshot")  # sent at once
    page.evaluate(ADD_BLOCKS, 150)  # ~160 KB: more than a page may send while it unloads
    page.click("#next")
    page.wait_for_url("**/page/two**")
    site.collector.wait_for(lambda: len(_block_counts(site.collector, token)) == 150, what="all blocks")
    page.evaluate("Replay.flush()")
    assert _block_counts(site.collector, token) == {i: 1 for i in range(150)}  # each exactly once
    posts = site.collector.of(token)
    beacons = [p for p in posts if p["via"] == "beacon"]
    assert beacons and all(len(p["text"].encode()) <= 60000 for p in beacons)
    resent = [p for p in posts if p["via"] == "fetch" and "tail-block-" in p["text"]]
    assert resent and {p["window_id"] for p in resent} == {posts[0]["window_id"]}
    assert len({p["batch_id"] for p in posts}) == len(posts)


def test_console_plugin_records_console_error_when_enabled(context, site, token):
    page = context.new_page()
    page.goto(site.url("one", token, recordConsole=True))
    page.evaluate("console.error('boom-123', {code: 7})")
    flush(page)
    logs = [e["data"] for e in site.collector.events(token) if e["type"] == PLUGIN]
    errors = [d["payload"] for d in logs if d["plugin"] == "rrweb/console@1" and d["payload"]["level"] == "error"]
    assert errors and errors[0]["payload"] == ['"boom-123"', '{"code":7}']
    assert isinstance(errors[0]["trace"], list)


def test_the_real_replay_server_keeps_what_the_snippet_sends(context, site, server, project):
    """capture.js from the server's /static/, recording to it: uploads, console log and a beacon are stored.

    rrweb comes from the test site: the server's /static/ answers .cjs as application/octet-stream with
    nosniff, which Chromium refuses to execute (aiohttp's FileResponse has its own MimeTypes table).
    """
    page = context.new_page()
    page.goto(site.url("one", project.token, replay=server.url, flushIntervalMs=300, recordConsole=True))
    page.type("#name", "hunter2secret")
    page.evaluate("console.error('boom-real')")
    flush(page)
    session = page.evaluate("Replay.getSessionId()")
    page.evaluate(ADD_BLOCKS, 5)
    page.goto("about:blank")  # the last blocks leave by beacon, as text/plain with ?token=

    seen: list[str] = [""]

    def stored():
        server.flush()
        seen[0] = text = json.dumps(fetch_events(server.url, project, session))
        return text if "tail-block-4" in text else None

    try:
        text = site.collector.wait_for(stored, timeout=40, what="the stored session")
    except AssertionError:  # say what did arrive (the collector above sees none of this test's posts)
        events = json.loads(seen[0] or "[]")
        blocks = sorted(set(re.findall(r"tail-block-\d+", seen[0])))
        answered = [line for line in requests.get(f"{server.url}/metrics", timeout=10).text.splitlines()
                    if line.startswith(("replay_rejections_total", "replay_http_requests_total"))]
        added = [str(a.get("node"))[:160] for e in events if e["type"] == INCREMENTAL and e["data"].get("source") == 0
                 for a in e["data"].get("adds") or ()]
        raise AssertionError(f"{len(events)} events stored, types {sorted({e['type'] for e in events})}, "
                             f"blocks {blocks}; nodes added {added}; the server answered {answered}") from None
    assert "hunter2secret" not in text and "boom-real" in text
    events = json.loads(text)
    assert {e["type"] for e in events} >= {META, FULL_SNAPSHOT, INCREMENTAL, PLUGIN}
