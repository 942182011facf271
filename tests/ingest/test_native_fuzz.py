"""Property-based fuzzing of the native ingest path (body.py's decoders are fuzzed in test_body_decoders.py):
any input gives a result or a ReplayError, never another exception, and never a 5xx over HTTP."""

from __future__ import annotations

import gzip
import json
import re
import string

import msgpack
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.errors import ReplayError
from replay.ingest.limits import Limits
from replay.ingest.validate import check_batch_id, check_distinct_id, check_events, check_id
from replay.ingest.value_budget import check_json_value_budget, json_values_upper_bound
from replay.share_links import InvalidShareLink, ShareGrant, sign_share, verify_share

LIMITS = Limits(max_events=50)
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=80)
json_like = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=10), inner, max_size=5), max_leaves=30)
event_like = st.fixed_dictionaries({}, optional={"type": json_like | st.integers(-2, 9),
                                                 "timestamp": json_like | st.integers(0, 2 * 10**12),
                                                 "data": json_like})
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def only_replay_errors(fn, *args):
    try:
        return fn(*args)
    except ReplayError as exc:
        assert 400 <= exc.status < 500 and exc.code and exc.detail
        return None


@FUZZ
@given(json_like)
def test_id_checks_return_a_safe_id_or_a_replay_error(value):
    session = only_replay_errors(check_id, value, "session_id", LIMITS)
    if session is not None:  # safe in a path, a key, a file name: letters, digits, '-'
        assert re.fullmatch(r"[A-Za-z0-9-]{1,70}", session)
    batch = only_replay_errors(check_batch_id, value)
    if batch is not None:
        assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", batch)
    distinct = only_replay_errors(check_distinct_id, value, LIMITS)
    assert distinct is None or isinstance(distinct, str) and len(distinct) <= 200


@FUZZ
@given(st.lists(event_like, max_size=8) | json_like)
def test_event_checks_return_valid_events_or_a_replay_error(events):
    out = only_replay_errors(check_events, events, LIMITS)
    if out is not None:
        for ev in out:
            assert type(ev["type"]) is int and 0 <= ev["type"] <= 6 and type(ev["timestamp"]) is int and "data" in ev


@FUZZ
@given(st.binary(max_size=3000), st.integers(1, 2000))
def test_value_budget_never_underestimates(data, budget):
    try:
        check_json_value_budget(data, budget)
    except ReplayError as exc:
        assert exc.status == 413 and json_values_upper_bound(data) > budget
    else:
        assert len(data) <= budget or json_values_upper_bound(data) <= budget


@FUZZ
@given(st.text(alphabet=string.ascii_letters + string.digits + "-_.=", max_size=300))
def test_arbitrary_share_tokens_are_refused_cleanly(token):
    with pytest.raises(InvalidShareLink):
        verify_share(b"k" * 32, token)


@FUZZ
@given(st.binary(min_size=1, max_size=200), st.integers(0, 200))
def test_any_change_to_a_share_token_voids_it(noise, position):
    token = sign_share(b"k" * 32, ShareGrant("prj-1", "s-1", 4_000_000_000, 5))
    raw = bytearray(token.encode())
    pos = position % len(raw)
    raw[pos:pos + 1] = noise[:1] if noise[:1] != raw[pos:pos + 1] else b"!"
    try:
        grant = verify_share(b"k" * 32, raw.decode("latin-1"))
    except InvalidShareLink:
        return
    # Only a change base64 cannot see (padding bits of the last character) may still verify, unchanged.
    assert grant == ShareGrant("prj-1", "s-1", 4_000_000_000, 5)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from harness import ThreadedReplay
    from replay.config import settings_from

    server = ThreadedReplay(settings_from(environ={}, data=tmp_path_factory.mktemp("fuzz"), flush_interval=3600.0,
                                          rate_limit=0.0, max_events=50)).start()
    yield server, server.create_project()
    server.stop()


documents = st.fixed_dictionaries({}, optional={
    "token": st.just("VALID") | json_like, "session_id": st.just("s-1") | json_like,
    "window_id": st.just("w") | json_like, "batch_id": st.just("b") | json_like,
    "distinct_id": json_like, "events": st.lists(event_like, max_size=5) | json_like})


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents, st.sampled_from(["json", "msgpack", "gzip-json"]))
def test_any_document_over_http_gets_a_2xx_or_4xx_never_a_5xx(live, doc, wire):
    server, project = live
    if doc.get("token") == "VALID":
        doc["token"] = project.token
    headers = {"Content-Type": "application/msgpack" if wire == "msgpack" else "application/json"}
    try:
        body = msgpack.packb(doc) if wire == "msgpack" else json.dumps(doc).encode()
    except (OverflowError, ValueError):
        return  # not representable on this wire (e.g. NaN in strict JSON is still sent; 2**70 in msgpack is not)
    if wire == "gzip-json":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    r = requests.post(f"{server.url}/v1/recordings", data=body, headers=headers, timeout=30)
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
    assert isinstance(r.json(), dict)
