"""Privacy fixtures against a real browser: recordings are real, and enforced ones still replay.

The committed fixtures under tests/fixtures/privacy/ were recorded by make_fixtures.py; the first
test re-records two of them with today's Chromium to prove the leak (and the careful page's
cleanliness) still come out of real rrweb. The second replays every fixture, as received and as
enforced, in rrweb's own Replayer: the enforced one must build the same DOM, warn no more than the
original, and show none of the secrets, not even in input values.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from replay.privacy import MaskingPolicy, SessionMirror, audit_session, enforce_events, render_text

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "privacy"
BUNDLE = ROOT / "player_assets" / "vendor" / "rrweb-2.2.2" / "dist" / "rrweb.umd.min.cjs"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))

REPLAY = """(events) => {
  const root = document.getElementById('root');
  const replayer = new rrweb.Replayer(events, {root, showWarning: true, mouseTail: false});
  replayer.pause(events[events.length - 1].timestamp - events[0].timestamp + 1);
  const doc = replayer.iframe.contentDocument;
  const fields = [...doc.querySelectorAll('input, textarea, select')];
  return {
    html: doc.documentElement.outerHTML,
    values: fields.map((el) => el.value),
    elements: [...doc.querySelectorAll('*')].map((el) => el.tagName + '#' + (el.id || '')),
  };
}"""


def _make_fixtures() -> Any:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fresh_recordings_leak_like_the_committed_fixtures(browser: Any, tmp_path: Path) -> None:
    written = _make_fixtures().record_vectors(browser, ["radio_checkbox", "well_masked"], tmp_path)
    fresh = {p.stem: json.loads(p.read_text()) for p in written}
    leaky = audit_session(fresh["radio_checkbox"]["events"])
    assert set(leaky.counts()) == {"unmasked_input"}, render_text(leaky)
    assert audit_session(fresh["well_masked"]["events"]).verdict == "clean"


def _replay(page: Any, events: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text) if m.type in ("warning", "error") else None)
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.set_content('<div id="root"></div>')
    page.add_script_tag(path=str(BUNDLE))
    return page.evaluate(REPLAY, events), messages


@pytest.mark.parametrize("name", NAMES)
def test_enforced_recording_replays_with_the_same_dom_and_no_secret(browser: Any, name: str) -> None:
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    original = fixture["events"]
    # data-* is masked wholesale only on opt-in (PII in it is masked by default): see test_enforce.py
    policy = MaskingPolicy(mask_attributes=MaskingPolicy().mask_attributes + ("data-*",)) \
        if name == "data_attrs" else MaskingPolicy()
    enforced = enforce_events(policy, SessionMirror(), copy.deepcopy(original))

    results = []
    for events in (original, enforced):
        page = browser.new_page()
        try:
            results.append(_replay(page, events))
        finally:
            page.close()
    (before, before_msgs), (after, after_msgs) = results

    assert after["elements"] == before["elements"]
    assert not [m for m in after_msgs if m.startswith("pageerror")]
    assert len(after_msgs) <= len(before_msgs), after_msgs
    shown = after["html"] + json.dumps(after["values"])
    for secret in fixture["secrets"]:
        assert secret not in shown
    if name not in ("password_length", "well_masked"):  # the only two whose secrets never reach the DOM
        # The check above means something only if the unenforced replay does show a secret.
        leaked = before["html"] + json.dumps(before["values"])
        assert any(secret in leaked for secret in fixture["secrets"])
