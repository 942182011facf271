"""posthog-js, unchanged, records to Replay once ``api_host`` points at it.

Real Chromium, real posthog-js (the vendored builds), the real Replay server in-process
(``ThreadedReplay``), one per module. The recorded site is a separate tiny aiohttp server on
127.0.0.1 (another port: another origin, as in production); it serves its own pages and, for the
``/decide``-era 1.251.0, that release's ``array.full.js`` or ``array.js`` (Replay serves only its pinned
1.449.2 build, so 1.251.0's ``array.js`` gets its recorder bundle from there). The pages have a text, a
password and an email field, a button and a link to a second page.

The beacon and retry tests put a pass-through proxy (``Wiretap``) between the browser and Replay:
Playwright sees neither keep-alive fetches nor beacons sent as a page unloads.

What is checked comes from Replay's own read API, its blob store and its player page: the
session's events hold the click and both pages' Meta hrefs, input values are asterisks, no typed
text reaches the store, and the player rebuilds the first page with masked fields.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

import pytest
import requests
from aiohttp import ClientSession, web

from harness import ThreadedReplay, serve_app, start_test_server, stored_events_text
from replay.ingest.posthog_wire import parse_snapshot_request
from signin import sign_in_page

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
POSTHOG_1_251 = ROOT / "tests" / "fixtures" / "vendor" / "posthog-js-1.251.0" / "dist"
# Where posthog-js loaded as array.js (no recorder inside) fetches its recorder: Replay's /static/.
RECORDER_URL = {"lazy-1.449.2": "/static/1.449.2/lazy-recorder.js", "lazy-1.251.0": "/static/recorder.js?v=1.251.0"}
META, FULL_SNAPSHOT, INCREMENTAL = 4, 2, 3
SOURCE_MOUSE, SOURCE_INPUT, CLICK = 2, 5, 2
IFRAME = ".replayer-wrapper iframe"

TYPED_NAME, TYPED_PASSWORD, TYPED_EMAIL = "ZebraQuokka", "HunterSecretPw", "alice.mailbox@example.org"
# Any of these in stored data means typed text leaked (the pages contain none of them).
SECRETS = ("Zebra", "Quokka", "Hunter", "SecretPw", "mailbox", "LateTyping")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{heading}</h1>
{body}
<script src="{script}"></script>
<script>
posthog.init({token}, {{
  api_host: {api},
  opt_out_useragent_filter: true,  // headless Chromium counts as a bot otherwise
  autocapture: false,
  disable_surveys: true,
  request_queue_config: {{flush_interval_ms: {flush}}},
}});
</script>
</body></html>
"""
FIRST_BODY = """<p>Fill in the order form.</p>
<form onsubmit="return false">
  <label>Name <input id="name" type="text"></label>
  <label>Password <input id="password" type="password"></label>
  <label>Email <input id="email" type="email"></label>
</form>
<button id="buy" onclick="document.getElementById('status').textContent = 'order placed'">Buy</button>
<p id="status">not ordered yet</p>
<a id="next" href="two">Go to the second page</a>"""
SECOND_BODY = """<p id="thanks">Thank you, this is the second page.</p>"""


# -- servers -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    server = start_test_server(tmp_path_factory.mktemp("posthog") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def project(replay):
    return replay.create_project("posthog")


@dataclass
class Hit:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int


class Wiretap:
    """A pass-through HTTP proxy in front of Replay that notes every request and Replay's answer.

    Playwright does not see keep-alive fetches or beacons sent while a page unloads, so what
    posthog-js sent is read here, on the wire. Requests and responses pass unchanged (but for
    hop-by-hop headers); Replay's own code answers every one of them.
    """

    HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.session: ClientSession | None = None

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if self.session is None:
            self.session = ClientSession(auto_decompress=False)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP}
        async with self.session.request(request.method, self.upstream + request.path_qs, data=body,
                                        headers=headers, allow_redirects=False) as up:
            answer = await up.read()
            response = web.Response(status=up.status, body=answer,
                                    headers={k: v for k, v in up.headers.items() if k.lower() not in self.HOP})
        with self.lock:
            self.hits.append(Hit(request.method, request.path, parse_qs(request.query_string),
                                 {k.lower(): v for k, v in request.headers.items()}, body, up.status))
        return response

    def posts(self, path: str = "/s/") -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.method == "POST" and h.path == path]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self.forward)

        async def close(_app: web.Application) -> None:
            if self.session is not None:
                await self.session.close()

        app.on_cleanup.append(close)
        return app


@pytest.fixture(scope="module")
def tap(replay):
    wiretap = Wiretap(replay.url)
    with serve_app(wiretap.app()) as url:
        wiretap.url = url
        yield wiretap


@pytest.fixture(scope="module")
def site(replay, project, tap):
    """The recorded site: /{api}/{variant}/{flush_ms}/one and /two, loading posthog-js as the variant
    says; posthog-js's api_host is Replay itself (api "direct") or Replay behind the wiretap ("tap")."""
    holder: dict[str, str] = {}
    scripts = {
        "full-1.449.2": lambda: f"{replay.url}/static/array.full.js",
        "lazy-1.449.2": lambda: f"{replay.url}/static/array.js",  # the recorder comes from Replay's /static/
        "full-1.251.0": lambda: f"{holder['url']}/vendor/posthog-js-1.251.0/array.full.js",
        "lazy-1.251.0": lambda: f"{holder['url']}/vendor/posthog-js-1.251.0/array.js",
    }

    async def page(request: web.Request) -> web.Response:
        variant, which = request.match_info["variant"], request.match_info["page"]
        if variant not in scripts:
            raise web.HTTPNotFound()
        html = PAGE.format(
            title=f"page {which}", heading="Order form" if which == "one" else "Second page",
            body=FIRST_BODY if which == "one" else SECOND_BODY, script=scripts[variant](),
            token=json.dumps(project.token), api=json.dumps(tap.url if request.match_info["api"] == "tap" else replay.url),
            flush=int(request.match_info["flush"]))
        return web.Response(text=html, content_type="text/html")

    async def posthog_1_251(request: web.Request) -> web.FileResponse:
        return web.FileResponse(POSTHOG_1_251 / request.match_info["name"], headers={"Content-Type": "application/javascript"})

    app = web.Application()
    app.router.add_get("/{api:direct|tap}/{variant}/{flush:\\d+}/{page:one|two}", page)
    app.router.add_get("/vendor/posthog-js-1.251.0/{name:array(?:\\.full)?\\.js}", posthog_1_251)
    with serve_app(app) as url:
        holder["url"] = url
        yield url


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    yield context
    context.close()


# -- helpers -------------------------------------------------------------------------------------

def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def events_of(replay: ThreadedReplay, project, session_id: str) -> list[dict]:
    """The session's events from Replay's read API (spool included); [] while it is unknown."""
    r = requests.get(f"{replay.url}/api/projects/{project.id}/sessions/{session_id}/events",
                     headers={"Authorization": f"Bearer {project.api_key}"}, timeout=30)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return r.json()


def metas(events: list[dict]) -> list[str]:
    return [e["data"]["href"] for e in events if e["type"] == META]


def of_kind(events: list[dict], source: int) -> list[dict]:
    return [e for e in events if e["type"] == INCREMENTAL and e["data"].get("source") == source]


def clicks(events: list[dict]) -> list[dict]:
    return [e for e in of_kind(events, SOURCE_MOUSE) if e["data"].get("type") == CLICK]


def http_count(replay: ThreadedReplay, status: int, route: str = "/s/") -> int:
    return int(replay.service.metrics.value("replay_http_requests_total", method="POST", route=route,
                                            status=str(status)))


def start_recording(context, site: str, variant: str, flush_ms: int, api: str = "direct"):
    """Open the first page and wait until posthog-js records; returns the page, its session id and
    every request the page makes that Playwright sees (not the beacons sent while it unloads)."""
    page = context.new_page()
    seen: list = []
    page.on("request", lambda request: seen.append(request))
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(f"{site}/{api}/{variant}/{flush_ms}/one")
    page.wait_for_function("() => window.posthog && window.posthog.__loaded && posthog.sessionRecordingStarted()",
                           timeout=15_000)
    return page, page.evaluate("posthog.get_session_id()"), seen


def interact(page) -> None:
    """posthog-js uploads nothing until the visitor interacts with the page: move and click on nothing."""
    page.mouse.move(40, 40)
    page.mouse.click(600, 760)


def stored_text(replay: ThreadedReplay) -> str:
    """Every stored event as text, once the spool is flushed (read in a thread: Playwright owns this loop)."""
    replay.flush()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(stored_events_text, replay.settings.data / "blobs").result()


def decode(hit: Hit) -> list:
    """The batches of a /s/ request body, decoded as Replay decodes them."""
    return parse_snapshot_request(hit.body, max_bytes=1 << 26, query={k: v[0] for k, v in hit.query.items()},
                                  content_type=hit.headers.get("content-type"))


def uploaded_events(hits: list[Hit]) -> list[dict]:
    """The rrweb events in the bodies of the given /s/ requests."""
    return [e for h in hits for u in decode(h) for e in u.batch.events]


def assert_no_typed_text(text: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"typed text reached storage: {leaked}"


def replayed_first_page(browser, replay: ThreadedReplay, project, session_id: str, at_ms: int) -> dict:
    """Open the player page at ``at_ms`` into the session, signed in; what its replayed iframe shows."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sign_in_page(page, replay.url, project.api_key)
        page.goto(f"{replay.url}/projects/{project.id}/sessions/{session_id}?t={at_ms}")
        page.wait_for_function("() => window.__replay && window.__replay.startedAt !== null", timeout=30_000)
        assert page.evaluate("window.__replay.error") is None
        page.wait_for_function(f"""() => {{
            const doc = document.querySelector('{IFRAME}')?.contentDocument;
            return doc?.getElementById('status')?.textContent === 'order placed';
        }}""", timeout=10_000)
        return page.evaluate(f"""() => {{
            const doc = document.querySelector('{IFRAME}').contentDocument;
            const value = (id) => doc.getElementById(id).value;
            return {{name: value('name'), password: value('password'), email: value('email'),
                     status: doc.getElementById('status').textContent, heading: doc.querySelector('h1').textContent}};
        }}""")
    finally:
        context.close()


# -- tests ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["full-1.449.2", "lazy-1.449.2", "full-1.251.0", "lazy-1.251.0"])
def test_posthog_js_records_a_masked_two_page_session_that_replays(browser, context, replay, project, site, variant):
    decided = http_count(replay, 200, "/decide/")
    page, session_id, seen = start_recording(context, site, variant, 500)
    first_url = page.url
    page.locator("#name").press_sequentially(TYPED_NAME)
    page.locator("#password").press_sequentially(TYPED_PASSWORD)
    page.locator("#email").press_sequentially(TYPED_EMAIL)
    page.click("#buy")
    page.click("#next")
    page.wait_for_url("**/two")
    second_url = page.url
    page.wait_for_function("() => window.posthog && window.posthog.__loaded && posthog.sessionRecordingStarted()",
                           timeout=15_000)
    assert page.evaluate("posthog.get_session_id()") == session_id  # one session across the navigation
    interact(page)

    def recorded() -> list[dict] | None:
        events = events_of(replay, project, session_id)
        hrefs = metas(events)
        done = first_url in hrefs and second_url in hrefs and clicks(events) and len(of_kind(events, SOURCE_INPUT)) >= 3
        return events if done else None

    events = wait_for(recorded, what="both pages, the click and the typing in Replay")
    assert page.errors == []
    page.close()

    inputs = [e["data"] for e in of_kind(events, SOURCE_INPUT) if "text" in e["data"]]
    assert inputs and all(d["text"] and set(d["text"]) == {"*"} for d in inputs), inputs
    assert_no_typed_text(json.dumps(events))
    assert_no_typed_text(stored_text(replay))
    if variant in RECORDER_URL:
        # array.js alone cannot record: the recorder bundle came from Replay's own /static/.
        assert replay.url + RECORDER_URL[variant] in [r.url for r in seen]
    if "1.251.0" in variant:
        assert http_count(replay, 200, "/decide/") > decided, "1.251.0 takes its config from /decide/"

    # The player rebuilds the first page as it was at the click on the link to the second.
    second_meta = next(e["timestamp"] for e in events if e["type"] == META and e["data"]["href"] == second_url)
    leaving = max(e["timestamp"] for e in clicks(events) if e["timestamp"] < second_meta)
    shown = replayed_first_page(browser, replay, project, session_id, leaving - events[0]["timestamp"])
    assert shown["heading"] == "Order form" and shown["status"] == "order placed"
    for field in ("name", "password", "email"):
        assert shown[field] and set(shown[field]) == {"*"}, shown


def test_events_sent_by_beacon_when_the_page_goes_away_are_stored(context, replay, project, site, tap):
    # The longest queue interval posthog-js allows: typing and leaving fit well inside it, so the
    # last keystrokes can only leave the page with the sendBeacon flush on page hide.
    page, session_id, _ = start_recording(context, site, "lazy-1.449.2", 5000, api="tap")
    interact(page)
    wait_for(lambda: FULL_SNAPSHOT in {e["type"] for e in events_of(replay, project, session_id)},
             what="the first upload in Replay")
    assert of_kind(events_of(replay, project, session_id), SOURCE_INPUT) == []
    before = len(tap.posts())

    page.locator("#name").press_sequentially("LateTyping")
    page.goto("about:blank")

    def beacons() -> list[Hit]:
        # sendBeacon requests are the no-cors ones: posthog-js's fetches are cors-mode.
        return [h for h in tap.posts()[before:] if h.headers.get("sec-fetch-mode") == "no-cors"]

    sent = wait_for(beacons, what="a sendBeacon upload to /s/")
    assert all(h.status == 200 for h in sent), [(h.status, h.body[:200]) for h in sent]
    typed = of_kind(uploaded_events(sent), SOURCE_INPUT)
    assert typed, "the beacon carries the last keystrokes"

    stored = of_kind(events_of(replay, project, session_id), SOURCE_INPUT)
    assert {e["timestamp"] for e in typed} <= {e["timestamp"] for e in stored}
    assert_no_typed_text(json.dumps(events_of(replay, project, session_id)))


def test_a_batch_refused_with_503_is_retried_by_posthog_js_and_plays_once(context, replay, project, site, tap):
    spool = replay.service.spool
    limit = spool.max_bytes

    async def set_limit(value: int) -> None:
        spool.max_bytes = value

    before = len(tap.posts())
    replay.call(set_limit(0))  # the real "spool full" path: /s/ answers 503
    try:
        page, session_id, _ = start_recording(context, site, "lazy-1.449.2", 500, api="tap")
        interact(page)
        refused = wait_for(lambda: [h for h in tap.posts()[before:] if h.status == 503], what="a /s/ answered 503")[0]
    finally:
        replay.call(set_limit(limit))
    assert events_of(replay, project, session_id) == []  # nothing of it was kept

    refused_ids = {u.batch.batch_id for u in decode(refused)}
    assert refused_ids

    def retried() -> list[Hit]:
        return [h for h in tap.posts()[before:] if "retry_count" in h.query and h.status == 200
                and refused_ids <= {u.batch.batch_id for u in decode(h)}]

    wait_for(retried, what="posthog-js to send the refused batch again")
    events = wait_for(lambda: events_of(replay, project, session_id), what="the retried batch in Replay")
    page.close()

    texts = [json.dumps(e, sort_keys=True) for e in events]
    assert len(texts) == len(set(texts)), "an event plays twice"
    assert [e["type"] for e in events].count(FULL_SNAPSHOT) == 1
    assert [e["type"] for e in events].count(META) == 1
