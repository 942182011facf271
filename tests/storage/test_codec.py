"""Stored events: codec.pack_items writes exactly what msgpack-python writes, and every event ingest
accepts (up to 1,024 levels of nesting) is stored and read back as JSON."""

from __future__ import annotations

import gzip
import json

import msgpack
import orjson
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import RECORDINGS, load_fixture_events, load_recording, start_test_server
from replay import codec
from replay.playback import _json_without_recursion, event_json


def reference_items(window_id: str, events: list) -> bytes:
    """What pack_items stored before msgspec: msgpack-python's array, less its header."""
    packed = msgpack.packb([[window_id, e] for e in events], use_bin_type=True)
    return packed[len(codec.array_header(len(events))):]


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=60,
)


def test_recorded_events_pack_to_the_bytes_msgpack_writes():
    for path in RECORDINGS:
        events = load_recording(path)
        assert events, path.name
        assert codec.pack_items("window-1", events) == reference_items("window-1", events), path.name


@settings(max_examples=400, deadline=None)
@given(st.lists(JSON_VALUES, min_size=1, max_size=8), st.text(max_size=40))
def test_any_json_value_packs_to_the_bytes_msgpack_writes(events, window_id):
    assert codec.pack_items(window_id, events) == reference_items(window_id, events)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_integers_past_64_bits_are_refused_as_msgpack_refuses_them(value):
    with pytest.raises(OverflowError):
        codec.pack_items("w", [{"data": value}])
    with pytest.raises(OverflowError):
        reference_items("w", [{"data": value}])


def test_an_event_nested_past_pythons_recursion_limit_still_packs():
    # msgspec refuses ~1,000 levels (Python's recursion limit); JSON bodies may nest 1,024.
    event = {"type": 5, "timestamp": 1, "data": {"payload": nested(1015)}}
    assert codec.pack_items("w", [event]) == reference_items("w", [event])


def test_an_upload_nested_1015_deep_is_stored_and_reads_back(tmp_path):
    replay = start_test_server(tmp_path)
    try:
        project = replay.create_project()
        first = load_fixture_events()[:3]
        deep = '{"type": 5, "timestamp": %d, "data": {"tag": "deep", "payload": %s1%s}}' % (
            first[-1]["timestamp"] + 1, "[" * 1015, "]" * 1015)
        body = '{"token": "%s", "session_id": "deep-1", "window_id": "w1", "batch_id": "b1", "events": [%s, %s]}' % (
            project.token, ", ".join(json.dumps(e) for e in first), deep)
        r = requests.post(f"{replay.url}/v1/recordings", data=gzip.compress(body.encode()),
                          headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=30)
        assert r.status_code == 200, r.text
        replay.flush()
        got = requests.get(f"{replay.url}/api/projects/{project.id}/sessions/deep-1/events",
                           headers={"Authorization": f"Bearer {project.api_key}"}, timeout=60)
        assert got.status_code == 200
        stored = orjson.loads(got.content)  # the stdlib parser stops near 1,000 levels; browsers do not
        assert stored[:3] == first
        value = stored[3]["data"]["payload"]
        for _ in range(1015):  # == on this value would itself pass Python's recursion limit
            assert isinstance(value, list) and len(value) == 1
            value = value[0]
        assert value == 1
    finally:
        replay.stop()


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_events_too_deep_for_orjson_get_the_json_orjson_would_write(value):
    assert _json_without_recursion(value) == orjson.dumps(value)
    deep = {"data": value}
    for _ in range(300):  # past orjson's 255 levels
        deep = {"child": [deep]}
    text = event_json(deep)
    for _ in range(300):
        assert text.startswith(b'{"child":[') and text.endswith(b"]}")
        text = text[len(b'{"child":['):-2]
    assert text == orjson.dumps({"data": value})
