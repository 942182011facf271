"""A visitor recorded through capture.js on /demo, then found in the session list and replayed.

Real Chromium fills a real form (text, email, password, textarea, select), clicks a button that
changes the page, and follows a link to a second page; the real server stores it. What was typed
must show only as asterisks in the replay and must be in no stored blob.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import fetch_events, stored_events_text
from signin import sign_in_page

pytestmark = pytest.mark.browser

IFRAME = ".replayer-wrapper iframe"
TYPED = {"#name": "Zebrafish Quokka", "#email": "quokka.wonder@example.org", "#password": "HunterSecretPass",
         "#message": "Tardigrade notes about Wombats"}


def clicks(events):
    return sum(1 for e in events if e["type"] == 3 and e["data"].get("source") == 2 and e["data"].get("type") == 2)


def pages(events):
    return [e for e in events if e["type"] == 4]


def test_a_demo_visit_is_listed_replayed_masked_and_never_stored_in_clear(browser, make_server):
    server = make_server()
    project = server.create_project("default")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        response = page.goto(f"{server.url}/demo")
        assert "connect-src 'self'" in response.headers["content-security-policy"]
        assert "You are being recorded" in page.inner_text(".recording-banner")
        session_id = page.evaluate("() => window.Replay.getSessionId()")
        assert page.get_attribute("#player-link", "href") == f"/projects/{project.id}/sessions/{session_id}"

        for selector, value in TYPED.items():
            page.fill(selector, value)
        page.select_option("#plan", "team")
        page.click("#add-item")
        page.wait_for_selector("#items li")
        page.click("#log-error")
        page.click("#next-page")
        page.wait_for_selector("#page2-text")
        # capture.js is at the end of <body>: it can still be loading when the page's text is there
        page.wait_for_function("() => window.Replay !== undefined")
        assert page.evaluate("() => window.Replay.getSessionId()") == session_id
        page.evaluate("() => window.Replay.flush()")

        # Page one's tail went out by sendBeacon on page hide: wait until the server has it all.
        deadline = time.monotonic() + 20
        while True:
            events = fetch_events(server.url, project, session_id)
            if (len(pages(events)), clicks(events)) == (2, 3) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(pages(events)) == 2 and clicks(events) == 3
        server.flush()

        # Nothing typed reached the disk: every block of every stored object, decompressed.
        with ThreadPoolExecutor(1) as pool:  # it runs its own event loop; Playwright's is this thread's
            stored = pool.submit(stored_events_text, server.settings.data / "blobs").result()
        assert session_id in stored
        for value in TYPED.values():
            assert value not in stored and json.dumps(value)[1:-1] not in stored

        # The session list shows it with its clicks, pages and console error.
        sign_in_page(page, server.url, project.api_key)
        row = page.locator("table.indexed tr", has_text=session_id)
        cells = row.locator("td").all_inner_texts()
        assert cells[4:6] == ["3", "2"] and cells[7] == "1", cells
        assert cells[6] == f"{server.url}/demo"

        # The player, paused just before the second page: the click's mutation, masked fields.
        start = events[0]["timestamp"]
        before_page2 = pages(events)[1]["timestamp"] - start - 20
        page.goto(f"{server.url}/projects/{project.id}/sessions/{session_id}?t={before_page2}")
        page.wait_for_function("() => window.__replay && window.__replay.done && window.__replay.startedAt !== null",
                               timeout=30_000)
        page.wait_for_function(f"""() => (document.querySelector('{IFRAME}')?.contentDocument?.body?.innerText || '')
                                   .includes('Item 1 added by a click')""", timeout=10_000)
        replayed = page.evaluate(f"""() => {{
            const doc = document.querySelector('{IFRAME}').contentDocument;
            const values = {{}};
            for (const sel of {json.dumps(list(TYPED))}) values[sel] = doc.querySelector(sel).value;
            return {{values, html: doc.documentElement.outerHTML}};
        }}""")
        for selector, value in replayed["values"].items():
            assert value and set(value) == {"*"}, (selector, value)
        for value in TYPED.values():
            assert value not in replayed["html"]

        # The timeline's second page view seeks to the second page.
        page_views = page.locator("#timeline li.page button")
        assert page_views.count() == 2
        page_views.nth(1).click()
        page.wait_for_function(f"""() => (document.querySelector('{IFRAME}')?.contentDocument?.body?.innerText || '')
                                   .includes('Second page of the demo')""", timeout=10_000)
        assert "Console error" in page.inner_text("#timeline")
        assert errors == []
    finally:
        context.close()
