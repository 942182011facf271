"""Decoded uploads and mirror nodes are kept out of the cyclic garbage collector's sight.

Both are acyclic by construction and freed by reference counting; the collector walking them was
14% of a loaded server's CPU. These tests hold the three things that make that safe and useful:
the trees really are untracked, they are still freed the moment they are dropped, and the
collector is left as it was found, even when decoding fails.
"""

from __future__ import annotations

import copy
import gc
import tracemalloc

import msgpack
import orjson
import pytest

from harness import IN_CI, load_fixture_events, require_native_walk
from replay.errors import BadRequest
from replay.ingest import body
from replay.ingest.body import parse_json, parse_msgpack
from replay.privacy import MaskingPolicy, SessionMirror, enforce_events

@pytest.fixture(scope="module")
def upload() -> dict:
    if body._untrack is None:
        if IN_CI:
            pytest.fail("replay.ingest._decoded_tree is not built (it needs a C compiler and Python's headers)")
        pytest.skip("replay.ingest._decoded_tree is not built")
    return {"session_id": "s", "window_id": "w", "batch_id": "b", "events": load_fixture_events()}


def containers(value):
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (dict, list)):
            yield v
            stack.extend(v.values() if isinstance(v, dict) else v)


@pytest.mark.parametrize("decode", ["json", "msgpack"])
def test_a_decoded_upload_is_whole_and_out_of_the_collectors_sight(upload, decode) -> None:
    if decode == "json":
        value = parse_json(orjson.dumps(upload))
    else:
        value = parse_msgpack(msgpack.packb(upload), 1 << 30)
    assert value == upload
    found = list(containers(value))
    assert len(found) > 1_000  # a real recording: thousands of dicts and lists
    assert not any(gc.is_tracked(c) for c in found)
    assert gc.isenabled()


def test_a_dropped_upload_is_freed_at_once(upload) -> None:
    data = orjson.dumps(upload)
    parse_json(data)  # warm caches
    tracemalloc.start()
    try:
        value = parse_json(data)
        del value
        after_one, _ = tracemalloc.get_traced_memory()
        for _ in range(20):
            value = parse_json(data)
            del value
        after_many, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak > len(data)  # each tree was really built (bigger than its JSON)...
    assert after_many - after_one < len(data) // 10  # ...and freed when dropped, with no collection


def test_the_collector_is_left_as_it_was_even_when_decoding_fails(upload) -> None:
    with pytest.raises(BadRequest):
        parse_json(b'{"events": [1, 2,')
    assert gc.isenabled()
    gc.disable()
    try:
        parse_json(orjson.dumps(upload))
        assert not gc.isenabled()  # not switched on behind the back of whoever switched it off
    finally:
        gc.enable()


def test_masking_keeps_a_decoded_upload_acyclic(upload) -> None:
    """What masking adds to an untracked tree (placeholders, masked strings) makes no cycle."""
    events = parse_json(orjson.dumps(copy.deepcopy(upload)))["events"]
    enforce_events(MaskingPolicy(block_selectors=("div",)), SessionMirror(), events)
    gc.collect()
    before = len(gc.get_objects())
    del events
    assert gc.collect() == 0  # nothing the collector had to find
    assert len(gc.get_objects()) <= before


def test_mirror_nodes_made_by_the_c_loop_are_out_of_sight(upload) -> None:
    require_native_walk()
    mirror = SessionMirror()
    enforce_events(MaskingPolicy(), mirror, copy.deepcopy(upload["events"]))
    assert len(mirror.nodes) > 100
    assert not any(gc.is_tracked(node) for node in mirror.nodes.values() if node.tag != "#document")
