#!/usr/bin/env python3
"""Take the README's screenshots: the player and the session list, on the shipped real recording.

Starts Replay in-process on 127.0.0.1 with a throw-away data directory, posts
tests/fixtures/rrweb-player-events.json as a session, signs in through the form with Debian's
Chromium (Playwright's sync API, never its browser download) and writes docs/player.png and
docs/sessions.png.

    python scripts/screenshot_player.py [--out docs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from harness import ThreadedReplay, load_fixture_events, post_batch  # noqa: E402
from replay.config import settings_from  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--at", type=int, default=47_000, help="moment of the recording to show, in ms")
    args = parser.parse_args()
    chromium = os.environ.get("REPLAY_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        print("no Chromium: install Debian's chromium or set REPLAY_CHROMIUM", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as data:
        server = ThreadedReplay(settings_from(environ={}, data=Path(data), flush_interval=3600.0, node_id="docs")).start()
        try:
            project = server.create_project("shop")
            events = load_fixture_events()
            for i in range(0, len(events), 40):
                r = post_batch(server.url, project.token, "demo-1", events[i:i + 40], batch_id=f"b{i}",
                               distinct_id="alice@example.com")
                r.raise_for_status()
            server.flush()
            args.out.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 860})
                page.goto(f"{server.url}/signin")
                page.fill("#api_key", project.api_key)
                page.click(".signin button[type=submit]")
                page.wait_for_url("**/sessions")
                page.screenshot(path=str(args.out / "sessions.png"), clip={"x": 0, "y": 0, "width": 1400, "height": 330})
                page.goto(f"{server.url}/projects/{project.id}/sessions/demo-1?t={args.at}")
                page.wait_for_function("() => window.__replay && window.__replay.done && window.__replay.startedAt !== null")
                page.wait_for_function("() => window.__replay.metadataLoaded")
                page.wait_for_timeout(800)  # the mouse cursor and timeline highlight settle
                page.screenshot(path=str(args.out / "player.png"))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.out / 'player.png'} and {args.out / 'sessions.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
