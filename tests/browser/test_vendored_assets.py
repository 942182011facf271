"""The vendored rrweb-player replays a real recording in real Chromium.

The assets are served the way the app must serve them: `.cjs` as JavaScript
with `nosniff`, under a strict CSP, so a wrong MIME type or a CSP the player
cannot live with fails here first.
"""
import json
from pathlib import Path

import pytest
from aiohttp import web

from harness import serve_app

REPO = Path(__file__).resolve().parents[2]
VENDOR = REPO / "player_assets" / "vendor"
FIXTURES = REPO / "tests" / "fixtures"
EVENTS = FIXTURES / "rrweb-player-events.json"
PLAYER = "rrweb-player-2.1.7/dist"

CONTENT_TYPES = {
    ".cjs": "application/javascript",
    ".js": "application/javascript",
    ".css": "text/css",
    ".json": "application/json",
}
# rrweb-player and the replayed document both apply inline styles, so
# style-src needs 'unsafe-inline'; scripts stay 'self' only.
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:"
)
PAGE = f"""<!doctype html>
<meta charset="utf-8">
<link rel="stylesheet" href="/vendor/{PLAYER}/style.css">
<script src="/vendor/{PLAYER}/rrweb-player.umd.min.cjs"></script>
<div id="target"></div>
"""


def static_from(root: Path):
    async def handler(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["path"]).resolve()
        content_type = CONTENT_TYPES.get(path.suffix)
        if not (path.is_relative_to(root) and path.is_file() and content_type):
            raise web.HTTPNotFound()
        return web.FileResponse(
            path, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"}
        )

    return handler


async def page_handler(request: web.Request) -> web.Response:
    return web.Response(
        text=PAGE, content_type="text/html",
        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
    )


@pytest.fixture(scope="module")
def asset_server():
    app = web.Application()
    app.router.add_get("/", page_handler)
    app.router.add_get("/vendor/{path:.+}", static_from(VENDOR.resolve()))
    app.router.add_get("/fixtures/{path:.+}", static_from(FIXTURES.resolve()))
    with serve_app(app) as base:
        yield base


def test_cjs_bundles_are_served_as_javascript_with_nosniff(page, asset_server):
    response = page.request.get(f"{asset_server}/vendor/{PLAYER}/rrweb-player.umd.min.cjs")
    assert response.ok
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_rrweb_player_replays_the_recording_to_its_last_event(page, asset_server):
    blocked, errors = [], []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(asset_server + "/")

    total = page.evaluate(
        """async () => {
            const events = await (await fetch('/fixtures/rrweb-player-events.json')).json();
            const player = new rrwebPlayer.Player({
                target: document.getElementById('target'),
                props: {events, autoPlay: false},
            });
            const total = player.getMetaData().totalTime;
            // Events exactly at totalTime are skipped unless we seek past the end.
            player.goto(total + 1);
            return total;
        }"""
    )
    events = json.loads(EVENTS.read_text())
    assert total == events[-1]["timestamp"] - events[0]["timestamp"]

    # The full snapshot's code editor, and the counter that only the very last
    # event (a text mutation at totalTime) sets to 10.
    page.wait_for_function(
        """() => {
            const doc = document.querySelector('.replayer-wrapper iframe')?.contentDocument;
            const text = doc?.body?.innerText || '';
            return text.includes('componentDidMount') && text.includes('Time 10');
        }""",
        timeout=10_000,
    )
    sandbox = page.get_attribute(".replayer-wrapper iframe", "sandbox")
    assert "allow-scripts" not in (sandbox or "").split()
    assert errors == []
    # The CSP may only have stopped the replayed page reaching its own site
    # (its images and fonts), never the player itself.
    assert all("https://demoit.app/" in message for message in blocked), blocked
