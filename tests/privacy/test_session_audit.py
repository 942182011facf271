"""Auditing a stream of events on a worker thread: the same report as auditing the list, errors surface."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from leak_vectors import load
from replay.errors import BadRequest, StoreError
from replay.privacy import MaskingPolicy, audit_session
from replay.privacy.policy_edit import edit, parse_setting, policy_object
from replay.session_audit import CHUNK, audit_items

POLICY = MaskingPolicy()


def long_session() -> list[list]:
    """A leaky recording followed by many mouse moves, in two windows: several chunks long."""
    events = load("radio_checkbox")["events"] + load("well_masked")["events"]
    t = events[-1]["timestamp"]
    moves = [{"type": 3, "timestamp": t + i, "data": {"source": 1, "positions": [{"x": i, "y": i, "id": 1, "timeOffset": 0}]}}
             for i in range(3 * CHUNK)]
    return [["w1", e] for e in events[:17] + moves] + [["w2", e] for e in events[17:]]


async def stream(items, fail_after: int | None = None):
    for n, item in enumerate(items):
        if fail_after is not None and n == fail_after:
            raise StoreError("the store went away")
        if n % 500 == 0:
            await asyncio.sleep(0)
        yield item


def test_streamed_audit_equals_the_audit_of_the_whole_list():
    items = long_session()
    streamed = asyncio.run(audit_items(stream(items), POLICY, session_id="s"))
    whole = audit_session(items, POLICY, session_id="s")
    assert streamed.to_dict() == whole.to_dict()
    assert streamed.events == len(items) and streamed.windows == 2 and streamed.verdict == "leaked"


def test_a_read_error_surfaces_and_the_walk_ends():
    before = threading.active_count()
    with pytest.raises(StoreError, match="went away"):
        asyncio.run(audit_items(stream(long_session(), fail_after=2 * CHUNK + 5), POLICY))
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before  # no walker thread left waiting for events


# -- editing a stored policy (pure) ------------------------------------------------------------------

def test_settings_are_typed_by_field():
    assert parse_setting("enforce=off") == ("enforce", "=", False)
    assert parse_setting(" fixed_length_mask = YES") == ("fixed_length_mask", "=", True)
    assert parse_setting("mask_input_types=password, email,") == ("mask_input_types", "=", ["password", "email"])
    assert parse_setting("mask_attributes=") == ("mask_attributes", "=", [])
    assert parse_setting("mask_attributes+=data-*") == ("mask_attributes", "+=", ["data-*"])
    with pytest.raises(BadRequest, match="use enforce=true or enforce=false"):
        parse_setting("enforce+=true")


def test_edits_keep_only_what_a_project_sets():
    assert edit({}, ["mask_attributes+=data-*"]) == {"mask_attributes": list(POLICY.mask_attributes) + ["data-*"]}
    assert edit({"enforce": False}, ["pii_detectors-=phone"]) == {
        "enforce": False, "pii_detectors": [d for d in POLICY.pii_detectors if d != "phone"]}
    assert edit({"enforce": False}, [], reset=True) == {}
    assert edit({"enforce": False}, [], replace={"mask_input_types": ["EMAIL"]}) == {"mask_input_types": ["email"]}
    document = {"project_id": "p", "policy": POLICY.to_dict(), "overrides": {}, "client_settings": {}}
    assert policy_object(document) == POLICY.to_dict()
    with pytest.raises(BadRequest, match="unknown policy fields"):
        edit({}, [], replace={"policy": {}, "extra": 1})
