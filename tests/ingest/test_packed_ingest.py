"""JSON uploads packed straight from the text (ingest/packed.py, ingest/_json_to_msgpack.c), masked
on their packed form where the project masks (privacy.enforce_packed). The packed path must store
what the ordinary path stores, byte for byte, or step aside."""

from __future__ import annotations

import json
import tracemalloc

import msgspec
import orjson
import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from harness import RECORDINGS, fetch_events, load_fixture_events, load_recording, metric, post_batch, \
    require_json_packer
from replay import codec
from replay.catalog.summary import summarize
from replay.ingest import packed as packed_ingest
from replay.ingest.limits import Limits
from test_native_fuzz import documents

PACKED = "replay_batches_packed_total"
FIXTURE = load_fixture_events()
LIMITS = Limits()


@pytest.fixture(autouse=True)
def _packer_built():
    require_json_packer()


def transcode(text: bytes) -> bytes | None:
    return packed_ingest._native.transcode(text, packed_ingest.MAX_DEPTH)


def ordinary(text: bytes) -> bytes:
    return msgspec.msgpack.encode(orjson.loads(text))


# -- the transcoder ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_every_recording_packs_to_the_ordinary_bytes(path):
    text = orjson.dumps(load_recording(path))
    assert transcode(text) == ordinary(text)
    spaced = json.dumps(load_recording(path), indent=1, ensure_ascii=True).encode()  # whitespace, \u escapes
    assert transcode(spaced) == ordinary(spaced)


json_scalars = (st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=40) | st.sampled_from(["", "\u2028", "é", "\U0001f600", "a\"b\\c", "\x00\x1f"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=20) | st.dictionaries(
    st.text(max_size=8), inner, max_size=20), max_leaves=60)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_values, st.booleans())
def test_any_json_value_packs_to_the_ordinary_bytes_or_is_declined(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    out = transcode(text)
    if out is not None:
        assert out == ordinary(text)
    elif any(not -2**63 <= v < 2**64 for v in _ints(value)):
        pass  # outside int64/uint64: orjson reads a float, the transcoder steps aside
    else:
        pytest.fail(f"declined a plain JSON value: {text[:200]!r}")


def _ints(value):
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _ints(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _ints(v)


json_alphabet = st.sampled_from(list('{}[],:"\\/ \t\n\r0123456789-+.eEtrufalsn') + ["u00e9", "ud83d", "ude00", "\xe9",
                                                                                     "\ud800", "\x01", "\ufeff"])


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(json_alphabet, max_size=60).map("".join))
def test_any_text_packs_as_orjson_reads_it_or_is_declined(chars):
    text = chars.encode("utf-8", "surrogatepass")  # lone surrogates too: invalid UTF-8 input
    out = transcode(text)
    if out is None:
        return  # the ordinary path decides (and gives the error)
    assert out == ordinary(text)  # accepted: orjson accepts it too, with the same value


@pytest.mark.parametrize("text", [
    b'{"a":1,"a":2}',                     # orjson keeps the last value at the first key's place
    b'["\\ud800"]', b'["\\udc00x"]',      # lone surrogate escapes become U+FFFD on the ordinary path
    b'[18446744073709551616]', b'[-9223372036854775809]',  # over 64 bits: orjson reads a float
    b'[1e999]', b'[-1e400]',              # overflows a double
    b'\xef\xbb\xbf[]', b'[] x', b'[1,]', b'{"a" 1}', b'[01]', b'[1.]', b'[.5]', b'[+1]', b'["\xff"]',
    b'["\xed\xa0\x80"]', b'["\xc0\xaf"]', b'["a\nb"]', b'[NaN]', b'[Infinity]', b'', b'[',
    b'[' * 300 + b']' * 300,              # deeper than the transcoder goes (the ordinary path allows it)
    b'{' + b','.join(b'"k%d":0' % i for i in range(65)) + b"}",  # more keys than it compares (64)
])
def test_declines_what_it_cannot_pack_exactly(text):
    assert transcode(text) is None


def test_edges_of_the_formats_pack_exactly():
    for text in [b'[0,-0,-0.0,127,128,255,256,65535,65536,4294967295,4294967296,18446744073709551615,'
                 b'-32,-33,-128,-129,-32768,-32769,-2147483648,-2147483649,-9223372036854775808,'
                 b'1.5e-320,1E2,0.1,1e308,5e-324]',
                 json.dumps(["x" * n for n in (31, 32, 255, 256, 65535, 65536)]).encode(),
                 json.dumps([list(range(n)) for n in (15, 16, 65535, 65536)]).encode(),
                 json.dumps({f"k{i}": i for i in range(17)}).encode(),
                 b'["\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\\\/\\b\\f\\r\\u0000", "' + "é😀".encode() * 40 + b'"]']:
        assert transcode(text) == ordinary(text), text[:80]


# -- the transcoder's cut: envelope, events and their heads in the same pass ----------------------

def read_whole(text: bytes):
    """What the cut must match: the whole upload packed, read by msgspec, each event read for its head."""
    whole = transcode(text)
    if whole is None:
        return None
    try:
        wire = msgspec.msgpack.decode(whole, type=packed_ingest._Envelope)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    events = None if wire.events is None else [bytes(e) for e in wire.events]
    packed = None if events is None else packed_ingest.split_events(events)
    return msgspec.structs.astuple(wire)[:-1], events, None if packed is None else packed.fields


def read_cut(text: bytes):
    envelope = packed_ingest.read_envelope(text, LIMITS.max_events)
    if envelope is None:
        return None
    packed = packed_ingest.packed_events(envelope)
    events = None if envelope.events is None else [bytes(e) for e in envelope.events]
    fields = (envelope.token, envelope.session_id, envelope.window_id, envelope.distinct_id, envelope.batch_id)
    return fields, events, None if packed is None else packed.fields


def test_the_cut_and_the_fields_it_reads_are_those_of_decoding_each_event():
    assert packed_ingest._native.DATA_FIELDS == packed_ingest._Data.__struct_fields__
    for path in RECORDINGS:
        events = load_recording(path)
        text = orjson.dumps({"token": "t", "session_id": "s", "window_id": "w", "batch_id": "b", "events": events})
        cut = read_cut(text)
        assert cut == read_whole(text) and cut[2] is not None and len(cut[1]) == len(events)
        assert packed_ingest.read_envelope(text, LIMITS.max_events).heads is not None  # the cut, not the fallback


def _spans_found(text: bytes) -> list[tuple[bytes, bytes]]:
    """(event, spans) for each event the packer gave spans for, checked against the walk's own."""
    from replay.privacy.walk import _native_walk
    envelope = packed_ingest.read_envelope(text, LIMITS.max_events)
    if envelope is None:  # the packer stepped aside (a number outside 64 bits...): nothing to check
        return None
    assert envelope.spans is not None and len(envelope.spans) == len(envelope.events)
    for event, spans in zip(envelope.events, envelope.spans):
        found = _native_walk.spans_of(event)
        assert spans == (found if len(found) >= 32 * 16 else None)  # small events: the walk finds them
    return [(bytes(e), s) for e, s in zip(envelope.events, envelope.spans) if s is not None]


def test_the_packer_finds_where_each_container_of_a_big_event_starts_and_ends():
    """Its spans are what the masking walk would find reading the event (so it need not read it):
    for every recording, and for containers whose headers shrink by two or four bytes."""
    for path in RECORDINGS:
        events = load_recording(path)
        _spans_found(orjson.dumps({"token": "t", "events": events}))
    assert _spans_found(orjson.dumps({"token": "t", "events": load_recording(RECORDINGS[-1])}))
    sizes = [0, 1, 15, 16, 17, 300, 65535, 65536, 70000]
    node = [{"k": list(range(n)), "m": {f"k{i}": {"x": i} for i in range(min(n, 40))}, "s": "é\u00e9" * n}
            for n in sizes]
    event = {"type": 2, "timestamp": 1, "data": {"node": node, "pad": [[i] for i in range(40)]}}
    given = _spans_found(json.dumps({"token": "t", "events": [{"type": 3, "timestamp": 1, "data": {}}, event]},
                                    indent=1).encode())
    assert len(given) == 1 and len(given[0][1]) == 16 * len(packed_spans_of(given[0][0]))


def packed_spans_of(event: bytes) -> list[tuple[int, int]]:
    from replay.privacy.walk import _native_walk
    raw = _native_walk.spans_of(event)
    ints = memoryview(raw).cast("q")
    return list(zip(ints[::2], ints[1::2]))


_span_values = json_scalars | st.lists(json_scalars, max_size=18) | st.dictionaries(st.text(max_size=3), json_scalars,
                                                                                   max_size=18)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_span_values, min_size=32, max_size=36), st.booleans())
def test_the_packers_spans_hold_for_any_event(values, spaced):
    event = {"type": 2, "timestamp": 1, "data": {"node": [{"v": v} for v in values]}}
    text = json.dumps({"token": "t", "events": [event, event]}, indent=1 if spaced else None).encode()
    found = _spans_found(text)
    assume(found is not None)
    assert len(found) == 2


small_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["type", "events", "data", "x"]), inner, max_size=3), max_leaves=6)
event_keys = st.sampled_from(["type", "timestamp", "data", "delay", "events", ""]) | st.text(max_size=4)
data_keys = st.sampled_from([*packed_ingest._Data.__struct_fields__, "node", "adds", "events", "id"]) | st.text(max_size=4)
data_like = st.dictionaries(data_keys, small_values, max_size=8)
usual_event = st.fixed_dictionaries({"type": st.integers(0, 6), "timestamp": st.integers(0, 2**40),
                                     "data": data_like | st.none()}, optional={"delay": small_values, "x": small_values})
odd_event = (st.fixed_dictionaries({"type": small_values, "timestamp": json_scalars, "data": small_values})
             | st.dictionaries(event_keys, small_values | data_like, max_size=6) | small_values)
# One odd event sends a whole upload to the ordinary path: most uploads have none.
events_like = st.lists(usual_event, max_size=6) | st.lists(usual_event | odd_event, max_size=4)
envelope_like = (st.fixed_dictionaries({"events": events_like}, optional={
    "token": st.text(max_size=4), "window_id": small_values, "heads": small_values, "x": events_like})
    | st.dictionaries(st.sampled_from(["token", "events", "heads"]) | st.text(max_size=4), small_values, max_size=4))


@pytest.mark.parametrize("odd", [
    {"type": 3, "timestamp": 1.5, "data": {}}, {"type": 3, "timestamp": True, "data": {}},
    {"type": 3, "timestamp": "1", "data": {}}, {"type": 3, "data": {}}, {"timestamp": 1, "data": {}},
    {"type": 3, "timestamp": 1}, {"type": 3, "timestamp": 1, "data": [1]}, {"type": 3, "timestamp": 1, "data": "x"},
    {"type": 3, "timestamp": 1, "data": None}, {"type": 3, "timestamp": 2**64 - 1, "data": {}},
    {"type": 3, "timestamp": -1, "data": {"source": 2, "tag": "t", "node": {"type": 9}, "events": []}},
    {"type": [1], "timestamp": 1, "data": {"payload": {"a": [1, {"b": None}]}, "x": 1}, "delay": 3},
    [1, 2], 7, None, "event",
])
def test_an_odd_event_is_read_as_decoding_it_reads_it(odd):
    usual = {"type": 3, "timestamp": 1_700_000_000_000, "data": {"source": 1, "positions": []}}
    text = orjson.dumps({"token": "t", "events": [usual, odd, usual]})
    assert read_cut(text) == read_whole(text)


def test_an_upload_of_more_events_than_a_batch_may_hold_is_packed_but_not_cut():
    text = orjson.dumps({"token": "t", "events": [{"type": 3, "timestamp": i, "data": {}} for i in range(4)]})
    assert packed_ingest._native.transcode_upload(text, packed_ingest.MAX_DEPTH, 3) == transcode(text)
    assert isinstance(packed_ingest._native.transcode_upload(text, packed_ingest.MAX_DEPTH, 4), tuple)
    assert read_cut(text) == read_whole(text)  # not cut: the events are read one by one, as before


def test_a_million_tiny_events_cost_the_cut_no_memory():
    # ~200 bytes of marks per event would be 200 MB here; ingest refuses the batch (413) anyway.
    text = orjson.dumps({"token": "t", "events": [0] * 1_000_000})
    tracemalloc.start()
    try:
        out = packed_ingest._native.transcode_upload(text, packed_ingest.MAX_DEPTH, LIMITS.max_events)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out == transcode(text)
    assert peak < 8 * len(text), peak  # 4.5x: the packed copy, containers, 20,000 marks; uncapped 115x


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(envelope_like | st.lists(envelope_like, max_size=2), st.booleans())
def test_any_upload_is_cut_as_decoding_each_event_reads_it(doc, spaced):
    text = json.dumps(doc, indent=1 if spaced else None).encode()
    assert read_cut(text) == read_whole(text)


# -- packed events: the ordinary path's items and summary ----------------------------------------

def packed_upload(events, window_id="tab-1"):
    envelope = packed_ingest.read_envelope(orjson.dumps({"token": "t", "window_id": window_id, "events": events}),
                                           LIMITS.max_events)
    assert envelope is not None and envelope.window_id == window_id and envelope.token == "t"
    return packed_ingest.read_events(envelope, LIMITS)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_packed_events_are_the_ordinary_items_and_summary(path):
    events = load_recording(path)
    packed = packed_upload(events)
    assert packed is not None
    assert codec.join_packed_items("tab-1", packed.events) == codec.pack_items("tab-1", events)
    assert len(packed.events) == len(events)
    assert summarize(packed.fields) == summarize(events)


def test_events_the_ordinary_path_rewrites_are_left_to_it():
    # A float timestamp is stored as an int by the ordinary path: only it may write that event.
    events = [{"type": 3, "timestamp": 1_700_000_000_000.5, "data": {"source": 1}}]
    assert packed_upload(events) is None
    odd = [{"type": 3, "timestamp": 1_700_000_000_000, "data": [1, 2]}]  # data not an object
    assert packed_upload(odd) is None


# -- over HTTP -------------------------------------------------------------------------------------

def unmask(server, project) -> None:
    server.call(server.service.catalog.set_policy(project.id, {"enforce": False}))


def test_an_unmasked_project_stores_its_uploads_as_sent_without_decoding_them(server, project):
    unmask(server, project)
    before = metric(server, PACKED)
    assert post_batch(server.url, project.token, "as-sent", FIXTURE, batch_id="b1").json()["accepted_events"] == 272
    assert metric(server, PACKED) == before + 1
    assert fetch_events(server.url, project, "as-sent") == sorted(FIXTURE, key=lambda e: e["timestamp"])
    server.flush()
    assert fetch_events(server.url, project, "as-sent") == sorted(FIXTURE, key=lambda e: e["timestamp"])
    summary = requests.get(f"{server.url}/api/projects/{project.id}/sessions/as-sent",
                           headers={"Authorization": f"Bearer {project.api_key}"}, timeout=30).json()
    stats = summarize(FIXTURE)
    assert (summary["event_count"], summary["start_ts"], summary["end_ts"], summary["clicks"], summary["keypresses"],
            summary["urls"], summary["active_ms"], summary["viewport"]) == \
        (272, stats.first_ts, stats.last_ts, stats.clicks, stats.keypresses, stats.urls, stats.active_ms, stats.viewport)
    # A retry is still a duplicate: the packed path keeps idempotency.
    assert post_batch(server.url, project.token, "as-sent", FIXTURE, batch_id="b1").json()["accepted_events"] == 0


def post_both_ways(server, project, session, events):
    """The recording's ~2 s uploads as JSON (packed) to ``session``-json and as msgpack (the
    ordinary path: decoded, masked, packed) to ``session``-msgpack; the events stored each way."""
    for i in range(0, len(events), 20):
        part = events[i:i + 20]
        for kind in ("json", "msgpack"):
            body = {"token": project.token, "session_id": f"{session}-{kind}", "window_id": "w", "batch_id": f"b{i}",
                    "events": part}
            data, ctype = (orjson.dumps(body), "application/json") if kind == "json" else \
                (msgspec.msgpack.encode(body), "application/msgpack")
            r = requests.post(f"{server.url}/v1/recordings", data=data, headers={"Content-Type": ctype}, timeout=30)
            assert r.status_code == 200, r.text
    return fetch_events(server.url, project, f"{session}-json"), fetch_events(server.url, project, f"{session}-msgpack")


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_a_masking_project_stores_packed_uploads_as_the_ordinary_path_masks_them(server, project, path):
    events = load_recording(path)
    before = metric(server, PACKED)
    packed, decoded = post_both_ways(server, project, "rec", events)
    assert metric(server, PACKED) == before + (len(events) + 19) // 20  # the JSON uploads, and only them
    assert packed == decoded
    server.flush()
    assert fetch_events(server.url, project, "rec-json") == decoded


def test_a_masking_project_beside_an_unmasked_one(server, project):
    events = load_recording(RECORDINGS[-1])
    masked = server.create_project("masked")
    unmask(server, project)
    packed, decoded = post_both_ways(server, masked, "beside", events)
    assert packed == decoded != sorted(events, key=lambda e: e["timestamp"])  # the policy changed something
    raw, _ = post_both_ways(server, project, "raw", events)
    assert raw == sorted(events, key=lambda e: e["timestamp"])


def test_masking_turned_back_on_applies_to_the_next_upload(server, project):
    events = load_recording(RECORDINGS[-1])
    unmask(server, project)
    post_batch(server.url, project.token, "raw", events, batch_id="b1")
    server.call(server.service.catalog.set_policy(project.id, {}))
    before = metric(server, PACKED)
    post_batch(server.url, project.token, "masked", events, batch_id="b1")
    assert metric(server, PACKED) == before + 1
    assert fetch_events(server.url, project, "masked") != fetch_events(server.url, project, "raw")


@pytest.mark.parametrize("events, code", [
    ([{"type": 9, "timestamp": 1_700_000_000_000, "data": {}}], "invalid_event"),
    ([{"type": 3, "timestamp": 12, "data": {}}], "invalid_timestamp"),
    ([{"type": 3, "timestamp": 1_700_000_000_000}], "invalid_event"),
    ([], "invalid_events"),
    ({"type": 3}, "invalid_events"),
    ([{"type": 3, "timestamp": 1_700_000_000_000, "data": {}}] * 20_001, "too_many_events"),  # not cut: refused
])
def test_bad_events_get_the_same_error_either_way(server, project, events, code):
    # JSON is packed (for a masking project and an unmasked one); msgpack takes the ordinary path.
    plain = server.create_project("plain")
    unmask(server, plain)
    answers = []
    for target, kind in ((project, "json"), (plain, "json"), (project, "msgpack")):
        body = {"token": target.token, "session_id": "bad", "window_id": "w", "batch_id": "b1", "events": events}
        data, ctype = (orjson.dumps(body), "application/json") if kind == "json" else \
            (msgspec.msgpack.encode(body), "application/msgpack")
        r = requests.post(f"{server.url}/v1/recordings", data=data, headers={"Content-Type": ctype}, timeout=30)
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] in (400, 413) and answers[0][1]["error"] == code


def test_an_event_only_the_ordinary_path_may_write_is_stored_as_it_writes_it(server, project):
    unmask(server, project)
    before = metric(server, PACKED)
    float_ts = [{"type": 3, "timestamp": 1_700_000_000_000.7, "data": {"source": 1, "positions": []}}]
    assert post_batch(server.url, project.token, "float", float_ts, batch_id="b1").status_code == 200
    assert metric(server, PACKED) == before
    assert fetch_events(server.url, project, "float")[0]["timestamp"] == 1_700_000_000_000


@pytest.fixture(scope="module")
def either_path(tmp_path_factory):
    """A server that packs JSON (a masking and an unmasked project) and one that parses it the
    ordinary way (REPLAY_NATIVE=0: no packer), with the same limits."""
    from harness import ReplayProcess, ThreadedReplay
    from replay.config import settings_from

    server = ThreadedReplay(settings_from(environ={}, data=tmp_path_factory.mktemp("either"), flush_interval=3600.0,
                                          rate_limit=0.0, max_events=50)).start()
    masked, plain = server.create_project("masked"), server.create_project("plain")
    unmask(server, plain)
    ordinary = ReplayProcess(tmp_path_factory.mktemp("ordinary"), "--flush-interval", "3600", "--rate-limit", "0",
                             "--max-events", "50", env={"REPLAY_NATIVE": "0"}).start()
    yield [(server.url, masked.token), (server.url, plain.token),
           (ordinary.url, ordinary.printed(r"ingest token: (\S+)"))]
    ordinary.terminate()
    server.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_any_document_gets_the_same_answer_from_either_path(either_path, doc):
    answers = []
    for url, token in either_path:
        sent = {**doc, "token": token} if doc.get("token") == "VALID" else doc
        r = requests.post(f"{url}/v1/recordings", data=json.dumps(sent).encode(),
                          headers={"Content-Type": "application/json"}, timeout=30)
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 200 or 400 <= answers[0][0] < 500


def test_an_upload_the_packer_declines_is_stored_by_the_ordinary_path(server, project):
    unmask(server, project)
    before = metric(server, PACKED)
    broken = [{"type": 5, "timestamp": 1_700_000_000_000, "data": {"tag": "note", "payload": "a\ud800b"}}]
    assert post_batch(server.url, project.token, "surrogate", broken, batch_id="b1").status_code == 200
    assert metric(server, PACKED) == before  # a lone surrogate escape: the ordinary path makes it U+FFFD
    assert fetch_events(server.url, project, "surrogate")[0]["data"]["payload"] == "a\ufffdb"


def test_without_the_packer_an_unmasked_project_is_stored_the_ordinary_way(tmp_path):
    """REPLAY_NATIVE=0 (or an install without a compiler): no packing, the same stored events."""
    from harness import ReplayProcess, TestProject

    proc = ReplayProcess(tmp_path / "data", "--flush-interval", "0.2", env={"REPLAY_NATIVE": "0"}).start()
    try:
        assert "the JSON-to-msgpack packer" in "".join(proc.output)  # named among the parts run in Python
        project = TestProject(proc.printed(r"project (\S+) "), proc.printed(r"ingest token: (\S+)"),
                              proc.printed(r"API key \(shown once, keep it\): (\S+)"))
        r = requests.put(f"{proc.url}/api/projects/{project.id}/policy", json={"enforce": False},
                         headers={"Authorization": f"Bearer {project.api_key}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert post_batch(proc.url, project.token, "python", FIXTURE, batch_id="b1").status_code == 200
        assert fetch_events(proc.url, project, "python") == sorted(FIXTURE, key=lambda e: e["timestamp"])
        packed = [line for line in requests.get(f"{proc.url}/metrics", timeout=30).text.splitlines()
                  if line.startswith(PACKED)]
        assert packed in ([], [f"{PACKED} 0.0"])
    finally:
        proc.terminate()
