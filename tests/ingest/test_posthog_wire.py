"""posthog-js ``/s/`` bodies become Batches of plain rrweb events.

The fixtures are real request bodies captured from posthog-js in Chromium
(tests/fixtures/posthog/README.md); each label also has the raw events rrweb emitted before
posthog-js compressed them, so "decoding gives back exactly what rrweb emitted" is checked
against the real encoder, not against our reading of it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qsl, quote

import orjson
import pytest

from harness import IN_CI
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.errors import BadRequest, PayloadTooLarge, ReplayError, UnsupportedMediaType
from replay.ingest.posthog_wire import (
    SnapshotUpload,
    decode_snapshot_body,
    inflate_compressed_event,
    parse_snapshot_request,
    snapshot_uploads,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "posthog"
VENDORED = REPO / "player_assets" / "vendor" / "posthog-js-1.449.2" / "dist"
LABELS = ["v1.449.2-gzip", "v1.449.2-base64", "v1.449.2-json", "v1.375.0-gzip", "v1.60.0-legacy"]
TOKEN = "phc_fixture_token_0123456789"
MiB = 1 << 20
LIMIT = 64 * MiB


def captured(label: str, folder: Path = FIXTURES) -> list[tuple[bytes, dict]]:
    bodies = sorted(folder.glob(f"{label}-*.body"))
    assert bodies, f"no captured bodies for {label} in {folder}"
    return [(b.read_bytes(), json.loads(b.with_name(b.name[: -len(".body")] + ".request.json").read_text()))
            for b in bodies]


def raw_events(label: str, folder: Path = FIXTURES) -> list[dict]:
    return json.loads((folder / f"{label}.raw-events.json").read_text())


def parse(body: bytes, request: dict, **kw) -> list[SnapshotUpload]:
    return parse_snapshot_request(body, max_bytes=kw.pop("max_bytes", LIMIT), query=dict(parse_qsl(request["query"])),
                                  content_type=request["headers"].get("Content-Type"), **kw)


def decode(body: bytes, request: dict):
    return decode_snapshot_body(body, max_bytes=LIMIT, query=dict(parse_qsl(request["query"])),
                                content_type=request["headers"].get("Content-Type"))


def posthog_gzip_field(value) -> str:
    """What posthog-js puts in a ``cv: "2024-10"`` field: gzip of the JSON, one char per byte."""
    return gzip.compress(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()).decode("latin-1")


def snapshot_event(rr_events, *, uuid="01900000-0000-7000-8000-000000000001", session="s-1", window="w-1", **props):
    properties = {"$snapshot_data": rr_events, "$session_id": session, "$window_id": window, "token": TOKEN,
                  "distinct_id": "user-1", **props}
    event = {"event": "$snapshot", "properties": properties}
    if uuid is not None:
        event["uuid"] = uuid
    return event


FULL = {"type": 2, "timestamp": 1_700_000_000_100,
        "data": {"node": {"type": 0, "id": 1, "childNodes": [{"type": 3, "id": 2, "textContent": "ünï ✓ 😀 \"q\""}]},
                 "initialOffset": {"top": 0, "left": 0}}}
MUTATION = {"type": 3, "timestamp": 1_700_000_000_200,
            "data": {"source": 0, "texts": [{"id": 2, "value": "é"}], "attributes": [{"id": 1, "attributes": {"a": "b"}}],
                     "removes": [], "adds": [{"parentId": 1, "nextId": None, "node": {"type": 3, "id": 3, "textContent": "x"}}]}}
STYLE = {"type": 3, "timestamp": 1_700_000_000_300, "data": {"source": 8, "id": 5, "adds": [{"rule": ".y{}", "index": 0}]}}


def compressed(event: dict) -> dict:
    out = json.loads(json.dumps(event))
    out["cv"] = "2024-10"
    if out["type"] == 2:
        out["data"] = posthog_gzip_field(out["data"])
    else:
        for field in ("texts", "attributes", "removes", "adds"):
            if field in out["data"]:
                out["data"][field] = posthog_gzip_field(out["data"][field])
    return out


# --- real captures ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
def test_captured_bodies_decode_to_exactly_what_rrweb_emitted(label):
    events = [e for body, req in captured(label) for up in parse(body, req) for e in up.batch.events]
    assert events == raw_events(label)
    assert not any("cv" in e for e in events)
    orjson.dumps(events)  # storable as is


@pytest.mark.parametrize("label", ["v1.449.2-gzip", "v1.449.2-base64", "v1.449.2-json", "v1.375.0-gzip"])
def test_captured_cv_events_are_inflated_to_plain_rrweb(label):
    sent = [rr for body, req in captured(label) for ev in decode(body, req) for rr in ev["properties"]["$snapshot_data"]]
    packed = [rr for rr in sent if rr.get("cv") == "2024-10"]
    kinds = {(rr["type"], rr["data"]["source"] if rr["type"] == 3 else None) for rr in packed}
    assert kinds == {(2, None), (3, 0), (3, 8)}  # full snapshot, mutation, stylesheet rule all exercised
    raw = raw_events(label)
    for rr in packed:
        plain = inflate_compressed_event(rr, max_bytes=MiB)
        assert "cv" not in plain and plain in raw
        if plain["type"] == 2:
            assert isinstance(plain["data"]["node"], dict)


def test_gzip_without_compression_parameter_is_recognised_by_its_magic_bytes():
    for body, req in captured("v1.449.2-gzip"):
        assert req["query"] == "" and body[:2] == b"\x1f\x8b" and req["headers"]["Content-Type"] == "text/plain"
        [upload] = parse_snapshot_request(body, max_bytes=LIMIT)  # no query, no content type
        assert upload.token == TOKEN and upload.batch.events


def test_gzip_with_the_old_compression_parameter():
    for body, req in captured("v1.375.0-gzip"):
        assert dict(parse_qsl(req["query"]))["compression"] == "gzip-js"
        [upload] = parse(body, req)
        assert upload.batch.meta["lib_version"] == "1.375.0"


def test_base64_form_bodies():
    for body, req in captured("v1.449.2-base64") + captured("v1.449.2-json")[2:]:  # json's -03 is its beacon
        assert body.startswith(b"data=") and "compression=base64" in req["query"]
        assert req["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
        assert parse(body, req)[0].batch.events
        assert parse_snapshot_request(body, max_bytes=LIMIT)[0].batch.events  # sniffed without the hints


def test_plain_json_bodies():
    for body, req in captured("v1.449.2-json")[:2]:
        assert body.startswith(b'[{"uuid"') and req["headers"]["Content-Type"] == "application/json"
        assert parse(body, req)[0].batch.events


def test_batch_fields_come_from_the_snapshot_event():
    body, req = captured("v1.449.2-gzip")[0]
    [event] = decode(body, req)
    [upload] = parse(body, req)
    props = event["properties"]
    batch = upload.batch
    assert upload.token == props["token"] == TOKEN
    assert batch.project_id == "" and upload.batch_for("p-7").project_id == "p-7"
    assert (batch.session_id, batch.window_id, batch.distinct_id) == (props["$session_id"], props["$window_id"],
                                                                       props["distinct_id"])
    assert batch.batch_id == event["uuid"]
    assert batch.meta["source"] == "posthog"
    assert batch.meta["lib"] == "web" and batch.meta["lib_version"] == "1.449.2"
    assert batch.meta["snapshot_bytes"] == props["$snapshot_bytes"]
    assert batch.meta["host"] == "127.0.0.1"
    # posthog-js sends no $current_url with $snapshot: the url and viewport come from rrweb's Meta event
    meta_event = next(e for e in batch.events if e["type"] == 4)
    assert batch.meta["url"] == meta_event["data"]["href"]
    assert (batch.meta["viewport_width"], batch.meta["viewport_height"]) == (1280, 720)


def test_legacy_single_event_snapshots_without_uuid_get_stable_content_ids():
    body, req = captured("v1.60.0-legacy")[0]
    events = decode(body, req)
    assert all("uuid" not in e and isinstance(e["properties"]["$snapshot_data"], dict) for e in events)
    separate = parse(body, req, merge=False)
    assert len(separate) == len(events) and all(u.batch.batch_id.startswith("h-") for u in separate)
    assert len({u.batch.batch_id for u in separate}) == len(separate)
    [merged] = parse(body, req)
    assert merged.batch.batch_id.startswith("m-") and len(merged.batch.events) == len(events)
    # a retry re-sends the same events: same ids
    assert [u.batch.batch_id for u in parse(body, req, merge=False)] == [u.batch.batch_id for u in separate]
    assert parse(body, req)[0].batch.batch_id == merged.batch.batch_id
    # an offset that changed between the first send and the retry does not change the id
    retried = [dict(e, offset=e.get("offset", 0) + 1234) for e in events]
    assert snapshot_uploads(retried, max_inflated_bytes=LIMIT)[0].batch.batch_id == merged.batch.batch_id


# --- structure ----------------------------------------------------------------------------------


def test_several_snapshots_of_one_window_merge_in_order_and_other_windows_stay_apart():
    payload = [
        snapshot_event([FULL], uuid="u-1", **{"$snapshot_bytes": 10}),
        {"event": "$pageview", "properties": {"token": TOKEN}},
        snapshot_event([MUTATION], uuid="u-2", window="w-2"),
        snapshot_event([STYLE], uuid="u-3", **{"$snapshot_bytes": 5}),
    ]
    merged = snapshot_uploads(payload, max_inflated_bytes=LIMIT)
    assert [(u.batch.window_id, [e["timestamp"] for e in u.batch.events]) for u in merged] == [
        ("w-1", [FULL["timestamp"], STYLE["timestamp"]]), ("w-2", [MUTATION["timestamp"]])]
    assert merged[0].batch.batch_id.startswith("m-") and merged[1].batch.batch_id == "u-2"
    assert merged[0].batch.meta["snapshot_bytes"] == 15
    assert snapshot_uploads(payload, max_inflated_bytes=LIMIT)[0].batch.batch_id == merged[0].batch.batch_id
    separate = snapshot_uploads(payload, max_inflated_bytes=LIMIT, merge=False)
    assert [u.batch.batch_id for u in separate] == ["u-1", "u-2", "u-3"]


def test_body_shapes_single_event_array_and_batch_object():
    event = snapshot_event([FULL])
    for payload in (event, [event], {"api_key": TOKEN, "batch": [event], "sent_at": "2024-01-01T00:00:00Z"}):
        [upload] = snapshot_uploads(payload, max_inflated_bytes=LIMIT)
        assert upload.batch.events == [FULL]


def test_token_falls_back_to_the_body_and_then_the_query():
    event = snapshot_event([FULL])
    del event["properties"]["token"]
    with pytest.raises(BadRequest) as err:
        snapshot_uploads([event], max_inflated_bytes=LIMIT)
    assert err.value.code == "missing_token"
    assert snapshot_uploads({"api_key": "phc_b", "batch": [event]}, max_inflated_bytes=LIMIT)[0].token == "phc_b"
    assert snapshot_uploads([dict(event, api_key="phc_e")], max_inflated_bytes=LIMIT)[0].token == "phc_e"
    assert snapshot_uploads([event], max_inflated_bytes=LIMIT, query={"token": "phc_q"})[0].token == "phc_q"


def test_requests_without_snapshots_give_no_batches():
    assert snapshot_uploads([{"event": "$pageview", "properties": {}}], max_inflated_bytes=LIMIT) == []
    assert snapshot_uploads([snapshot_event([])], max_inflated_bytes=LIMIT) == []


def test_numeric_distinct_id_becomes_a_string_and_missing_window_falls_back_to_the_session():
    event = snapshot_event([FULL], distinct_id=42)
    del event["properties"]["$window_id"]
    [upload] = snapshot_uploads([event], max_inflated_bytes=LIMIT)
    assert upload.batch.distinct_id == "42" and upload.batch.window_id == upload.batch.session_id == "s-1"


def test_a_uuid_that_would_not_be_a_valid_batch_id_is_replaced_by_a_content_hash():
    [upload] = snapshot_uploads([snapshot_event([FULL], uuid="a b/../c")], max_inflated_bytes=LIMIT)
    assert upload.batch.batch_id.startswith("h-")


@pytest.mark.parametrize(
    "payload, code",
    [
        (42, "invalid_payload"),
        ({"nothing": 1}, "invalid_payload"),
        ({"batch": {"not": "a list"}}, "invalid_payload"),
        (["not an event"], "invalid_payload"),
        ([{"event": "$snapshot"}], "invalid_snapshot"),
        ([snapshot_event([FULL], session=None)], "invalid_snapshot"),
        ([snapshot_event("nope")], "invalid_snapshot"),
        ([snapshot_event(["nope"])], "invalid_snapshot"),
        ([snapshot_event([dict(FULL, cv="2031-01")])], "unsupported_compression_version"),
        ([snapshot_event([dict(FULL, cv="2024-10", data="not gzip")])], "bad_compressed_event"),
        ([snapshot_event([dict(FULL, cv="2024-10", data="\u0100\u0101")])], "bad_compressed_event"),
        ([snapshot_event([dict(FULL, cv="2024-10", data=posthog_gzip_field(FULL["data"])[:-6])])],
         "bad_compressed_event"),
        ([snapshot_event([dict(FULL, cv="2024-10", data=posthog_gzip_field([1, 2]))])], "bad_compressed_event"),
        ([snapshot_event([dict(FULL, cv="2024-10", data=gzip.compress(b"{nope").decode("latin-1"))])],
         "bad_compressed_event"),
    ],
)
def test_malformed_payloads_are_bad_requests(payload, code):
    with pytest.raises(BadRequest) as err:
        snapshot_uploads(payload, max_inflated_bytes=LIMIT)
    assert err.value.code == code and err.value.status == 400 and err.value.detail


# --- cv 2024-10 ---------------------------------------------------------------------------------


def test_compressed_events_inflate_to_the_original():
    payload = [snapshot_event([compressed(FULL), compressed(MUTATION), compressed(STYLE), {"type": 4, "timestamp": 1,
                                                                                         "data": {"href": "u"}}])]
    [upload] = snapshot_uploads(payload, max_inflated_bytes=LIMIT)
    assert upload.batch.events[:3] == [FULL, MUTATION, STYLE]


def test_stylesheet_rule_without_removes_keeps_it_absent():
    event = compressed(STYLE)
    assert "removes" not in event["data"]
    assert inflate_compressed_event(event, max_bytes=MiB) == STYLE


def test_events_without_cv_are_untouched():
    assert inflate_compressed_event(FULL, max_bytes=10) is FULL


def test_compressed_field_bomb_is_refused_quickly():
    bomb = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = b" " * (4 * MiB)
    blob = b"".join(bomb.compress(zeros) for _ in range(64)) + bomb.flush()  # 256 MiB of spaces
    event = dict(FULL, cv="2024-10", data=blob.decode("latin-1"))
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge) as err:
        snapshot_uploads([snapshot_event([event])], max_inflated_bytes=8 * MiB)
    assert err.value.code == "decoded_body_too_large" and time.perf_counter() - started < 2.0


def test_the_inflation_budget_is_shared_by_all_fields_of_a_request():
    big = {"node": {"type": 0, "id": 1, "childNodes": [], "pad": "x" * 600_000}}
    events = [dict(FULL, timestamp=FULL["timestamp"] + i, cv="2024-10", data=posthog_gzip_field(big)) for i in range(3)]
    assert snapshot_uploads([snapshot_event(events[:1])], max_inflated_bytes=MiB)
    with pytest.raises(PayloadTooLarge):
        snapshot_uploads([snapshot_event(events)], max_inflated_bytes=MiB)


# --- body encodings -----------------------------------------------------------------------------


def plain_body() -> bytes:
    return json.dumps([snapshot_event([compressed(FULL)])]).encode()


def test_content_encoding_is_honoured_even_though_posthog_js_never_sets_it():
    for coding, encode in (("gzip", gzip.compress), ("zstd", zstandard.ZstdCompressor().compress)):
        [upload] = parse_snapshot_request(encode(plain_body()), max_bytes=LIMIT, content_encoding=coding)
        assert upload.batch.events == [FULL]
    with pytest.raises(UnsupportedMediaType):
        parse_snapshot_request(plain_body(), max_bytes=LIMIT, content_encoding="br")


def test_base64_form_with_unencoded_plus_signs_and_missing_padding_still_decodes():
    doc = [snapshot_event([compressed(FULL)], note=">>>???")]  # '>' and '?' runs put '+' and '/' in the base64
    b64 = base64.b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    assert "+" in b64
    sloppy = ("data=" + b64).replace("/", "%2F").encode()  # '+' left unencoded: a form decoder makes it ' '
    [upload] = parse_snapshot_request(sloppy, max_bytes=LIMIT, query={"compression": "base64"})
    assert upload.batch.events == [FULL]


def test_form_body_with_urlencoded_json_and_extra_fields():
    body = ("data=" + quote(plain_body().decode()) + "&compression=base64&ver=1.0").encode()
    assert parse_snapshot_request(body, max_bytes=LIMIT)[0].batch.events == [FULL]


@pytest.mark.parametrize(
    "body, query, content_type, error, code",
    [
        (b"", {}, None, BadRequest, "invalid_json"),
        (b"   ", {}, "application/json", BadRequest, "invalid_json"),
        (b"\x00\x01garbage", {}, None, BadRequest, "invalid_json"),
        (b"\x00\x01garbage", {"compression": "gzip-js"}, "text/plain", BadRequest, "bad_gzip"),
        (gzip.compress(b"[1,2,3]" * 100)[:-9], {}, "text/plain", BadRequest, "bad_gzip"),
        (gzip.compress(b"[]") + b"trailing", {}, "text/plain", BadRequest, "bad_gzip"),
        (b"data=%%%", {"compression": "base64"}, None, BadRequest, "bad_base64"),
        (b"data=!!!!", {}, "application/x-www-form-urlencoded", BadRequest, "bad_base64"),
        (b"foo=bar", {"compression": "base64"}, None, BadRequest, "bad_form"),
        (b"data=\xff", {"compression": "base64"}, None, BadRequest, "bad_form"),
        (b"data=" + base64.b64encode(b"not json"), {"compression": "base64"}, None, BadRequest, "invalid_json"),
        (b"[1, 2]", {"compression": "lz64"}, None, UnsupportedMediaType, "unsupported_compression"),
        (b"[NaN]", {}, None, BadRequest, "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, {}, None, BadRequest, "invalid_json"),
    ],
)
def test_bad_bodies_are_refused_with_a_specific_code(body, query, content_type, error, code):
    with pytest.raises(error) as err:
        parse_snapshot_request(body, max_bytes=LIMIT, query=query, content_type=content_type)
    assert err.value.code == code and err.value.detail


def test_body_gzip_bomb_costs_nothing():
    bomb = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = b" " * (4 * MiB)
    blob = b"".join(bomb.compress(zeros) for _ in range(128)) + bomb.flush()  # 512 MiB of spaces
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge):
        parse_snapshot_request(blob, max_bytes=16 * MiB)
    assert time.perf_counter() - started < 2.0


def test_truncated_captured_gzip_body_is_a_clear_bad_request():
    body, req = captured("v1.449.2-gzip")[0]
    with pytest.raises(BadRequest) as err:
        parse(body[: len(body) - 100], req)
    assert err.value.code == "bad_gzip" and "truncated" in err.value.detail


def test_captured_body_over_the_limit_is_payload_too_large():
    body, req = captured("v1.449.2-gzip")[0]
    with pytest.raises(PayloadTooLarge):
        parse(body, req, max_bytes=4096)


def test_lone_surrogate_text_does_not_lose_the_upload():
    body = b'[{"uuid":"u-9","event":"$snapshot","properties":{"token":"t","$session_id":"s","$window_id":"w",' \
           b'"$snapshot_data":[{"type":3,"timestamp":1700000000000,"data":{"source":5,"text":"a\\ud83d"}}]}}]'
    [upload] = parse_snapshot_request(body, max_bytes=LIMIT)
    assert upload.batch.events[0]["data"]["text"] == "a\ufffd"


# --- properties ---------------------------------------------------------------------------------

relaxed = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10) | st.sampled_from(["$snapshot", "2024-10", "token", "$session_id"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["event", "properties", "$snapshot_data", "$session_id", "$window_id", "token", "uuid", "cv",
                         "type", "data", "source", "adds", "texts", "batch", "api_key", "distinct_id"]) | st.text(max_size=5),
        inner, max_size=6),
    max_leaves=40,
)


@relaxed
@given(st.binary(max_size=2048), st.sampled_from([{}, {"compression": "gzip-js"}, {"compression": "base64"}]),
       st.sampled_from([None, "text/plain", "application/x-www-form-urlencoded", "application/json"]))
def test_arbitrary_bodies_never_raise_anything_but_replay_errors(body, query, content_type):
    for data in (body, gzip.compress(body), b"data=" + base64.b64encode(body)):
        try:
            parse_snapshot_request(data, max_bytes=MiB, query=query, content_type=content_type)
        except ReplayError:
            pass


@relaxed
@given(json_values)
def test_arbitrary_payloads_never_raise_anything_but_replay_errors(payload):
    try:
        uploads = snapshot_uploads(payload, max_inflated_bytes=MiB)
    except ReplayError:
        return
    for upload in uploads:
        assert upload.token and upload.batch.session_id and upload.batch.batch_id and upload.batch.events
        orjson.dumps(upload.batch.events)
        orjson.dumps(upload.batch.meta)


@relaxed
@given(st.lists(st.sampled_from([FULL, MUTATION, STYLE]), min_size=1, max_size=5), st.booleans())
def test_compressing_like_posthog_then_parsing_gives_the_events_back(events, use_cv):
    sent = [compressed(e) if use_cv else e for e in events]
    [upload] = snapshot_uploads([snapshot_event(sent)], max_inflated_bytes=LIMIT)
    assert upload.batch.events == events


# --- live: the vendored posthog-js in Chromium, now ---------------------------------------------


@pytest.mark.browser
def test_vendored_posthog_js_uploads_decode_to_what_rrweb_emitted(tmp_path):
    if not (os.environ.get("REPLAY_CHROMIUM") or shutil.which("chromium")):
        if IN_CI:
            pytest.fail("no Chromium under CI")
        pytest.skip("no Chromium: install Debian's chromium or set REPLAY_CHROMIUM")
    if not VENDORED.is_dir():
        pytest.fail(f"vendored posthog-js is missing: {VENDORED}")
    proc = subprocess.run(
        [sys.executable, str(FIXTURES / "capture.py"), "--dist", str(VENDORED), "--mode", "gzip",
         "--out", str(tmp_path), "--label", "live", "--seconds", "2.5"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [e for body, req in captured("live", tmp_path) for up in parse(body, req) for e in up.batch.events]
    raw = raw_events("live", tmp_path)
    assert events and events == raw[: len(events)]
    assert any(e["type"] == 2 for e in events)
