"""Enforced sessions still replay in the player page, in real Chromium, with no secret left in them.

Real-browser leak recordings (tests/fixtures/privacy/) are uploaded over HTTP twice: to a project
that stores them as received and to one enforcing the default policy. Both are opened in the
support UI's player (signed in through the form) at their last moment. The enforced replay must
build the same elements as the one as received, show asterisks where the secret was typed, and
have none of the secrets anywhere in the replayed document; the one as received shows a secret,
so the comparison means something.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from harness import post_batch, start_test_server
from leak_vectors import load, session_id
from signin import signed_in_page

pytestmark = pytest.mark.browser

# Typed text in a textarea, a show-password toggle, a saved-card <select>: values, swapped
# inputs and option text.
NAMES = ["textarea_initial", "password_toggle", "option_card"]

REPLAYED = """() => {
  const doc = document.querySelector('.replayer-wrapper iframe').contentDocument;
  const fields = [...doc.querySelectorAll('input, textarea')];
  return {
    html: doc.documentElement.outerHTML,
    values: fields.map((el) => el.value),
    options: [...doc.querySelectorAll('option')].map((o) => o.textContent),
    elements: [...doc.querySelectorAll('*')].map((el) => el.tagName + '#' + (el.id || '')),
  };
}"""


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    server = start_test_server(tmp_path_factory.mktemp("enforced-replay") / "data")
    as_received, enforced = server.create_project("as-received"), server.create_project("enforced")
    r = requests.put(f"{server.url}/api/projects/{as_received.id}/policy", json={"enforce": False},
                     headers={"Authorization": f"Bearer {as_received.api_key}"}, timeout=10)
    assert r.status_code == 200
    for project in (as_received, enforced):
        for name in NAMES:
            assert post_batch(server.url, project.token, session_id(name), load(name)["events"],
                              batch_id="b1").status_code == 200
    server.flush()
    yield server, as_received, enforced
    server.stop()


def signed_in(browser, server, project):
    return signed_in_page(browser, server.url, project.api_key)


def replay_at_end(browser, server, project, name: str) -> dict[str, Any]:
    """The replayed document at the recording's last moment, as the player page shows it."""
    events = load(name)["events"]
    end = events[-1]["timestamp"] - events[0]["timestamp"] + 1  # rrweb shows the events before t
    with signed_in(browser, server, project) as page:
        page.goto(f"{server.url}/projects/{project.id}/sessions/{session_id(name)}?t={end}")
        page.wait_for_function("() => window.__replay && window.__replay.done", timeout=60_000)
        assert page.evaluate("window.__replay.error") is None
        page.wait_for_function(f"() => window.__replay.startedAt === {end}", timeout=20_000)
        time.sleep(0.5)  # the seek replays the events before t
        page.wait_for_function("() => document.querySelector('.replayer-wrapper iframe')"
                               "?.contentDocument?.body?.children.length > 0", timeout=20_000)
        replayed = page.evaluate(REPLAYED)
        assert page.errors == []
        return replayed


@pytest.mark.parametrize("name", NAMES)
def test_enforced_session_replays_in_the_player_with_asterisks_and_no_secret(browser, replay, name):
    server, as_received, enforced = replay
    secrets = load(name)["secrets"]
    before = replay_at_end(browser, server, as_received, name)
    after = replay_at_end(browser, server, enforced, name)

    assert after["elements"] == before["elements"]  # the page's structure, element by element
    shown = after["html"] + " ".join(after["values"] + after["options"])
    for secret in secrets:
        assert secret not in shown
    leaked = before["html"] + " ".join(before["values"] + before["options"])
    assert any(secret in leaked for secret in secrets), "the recording as received shows a secret"
    # Where a secret was, the enforced replay shows asterisks.
    masked = [v for v in after["values"] + after["options"] if v.strip() and set(v.strip()) <= {"*", " "}]
    assert masked, (after["values"], after["options"])
