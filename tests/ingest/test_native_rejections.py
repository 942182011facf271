"""Bad uploads each get a 4xx JSON error, and what was stored before plays back unchanged."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
import requests

from harness import fetch_events, load_fixture_events, post_batch

FIXTURE = load_fixture_events()


def body(token, **over):
    doc = {"token": token, "session_id": "s1", "window_id": "w1", "batch_id": "b1", "events": FIXTURE[:3]}
    doc.update(over)
    return json.dumps(doc).encode()


def gzip_bomb(decoded_bytes: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    out = [z.compress(chunk) for _ in range(decoded_bytes >> 20)]
    out.append(z.flush())
    return b"".join(out)


CASES = {
    "malformed_json": (lambda t: b'{"token": "' + t.encode() + b'", "events": [', {}, 400),
    "truncated_gzip": (lambda t: gzip.compress(body(t))[:-20], {"Content-Encoding": "gzip"}, 400),
    "gzip_bomb": (lambda t: gzip_bomb(200 << 20), {"Content-Encoding": "gzip"}, 413),
    "oversized_body": (lambda t: b" " * (26 << 20), {}, 413),
    "session_id_with_slash": (lambda t: body(t, session_id="../../etc"), {}, 400),
    "session_id_too_long": (lambda t: body(t, session_id="a" * 71), {}, 400),
    "window_id_missing": (lambda t: body(t, window_id=None), {}, 400),
    "unknown_token": (lambda t: body("rpi_nope"), {}, 401),
    "missing_token": (lambda t: body(None), {}, 401),
    "event_without_type": (lambda t: body(t, events=[{"timestamp": 1700000000000, "data": {}}]), {}, 400),
    "event_type_string": (lambda t: body(t, events=[{"type": "2", "timestamp": 1700000000000, "data": {}}]), {}, 400),
    "timestamp_in_seconds": (lambda t: body(t, events=[{"type": 3, "timestamp": 1700000000, "data": {}}]), {}, 400),
    "event_without_data": (lambda t: body(t, events=[{"type": 3, "timestamp": 1700000000000}]), {}, 400),
    "events_not_a_list": (lambda t: body(t, events={"type": 3}), {}, 400),
    "empty_body": (lambda t: b"", {}, 400),
    "wrong_content_type": (lambda t: body(t), {"Content-Type": "image/png"}, 415),
    "unknown_encoding": (lambda t: body(t), {"Content-Encoding": "br"}, 415),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_upload_gets_a_4xx_and_stored_data_is_intact(server, project, case):
    assert post_batch(server.url, project.token, "kept", FIXTURE, batch_id="k").status_code == 200
    server.flush()
    make, headers, status = CASES[case]
    r = requests.post(f"{server.url}/v1/recordings", data=make(project.token),
                      headers={"Content-Type": "application/json", **headers}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()
    assert isinstance(err["error"], str) and err["error"] and isinstance(err["detail"], str) and err["detail"]
    assert requests.get(f"{server.url}/healthz").status_code == 200
    server.flush()
    assert fetch_events(server.url, project, "kept") == sorted(FIXTURE, key=lambda e: e["timestamp"])
    sessions = requests.get(f"{server.url}/api/projects/{project.id}/sessions",
                            headers={"Authorization": f"Bearer {project.api_key}"}).json()["sessions"]
    assert [s["session_id"] for s in sessions] == ["kept"]


def test_too_many_events_in_one_batch_is_413(make_server):
    server = make_server(max_events=100)
    project = server.create_project()
    events = [{"type": 3, "timestamp": 1700000000000 + i, "data": {"source": 1, "positions": []}} for i in range(101)]
    r = post_batch(server.url, project.token, "s", events, batch_id="b")
    assert r.status_code == 413 and r.json()["error"] == "too_many_events"


@pytest.mark.parametrize("encoding", ["gzip", "zstd", None])
def test_every_content_encoding_is_accepted(server, project, encoding):
    assert post_batch(server.url, project.token, "enc", FIXTURE[:50], batch_id="b", encoding=encoding).status_code == 200
    assert fetch_events(server.url, project, "enc") == sorted(FIXTURE[:50], key=lambda e: e["timestamp"])


def test_msgpack_bodies_are_accepted(server, project):
    import msgpack
    doc = {"token": project.token, "session_id": "mp", "window_id": "w", "batch_id": "b", "events": FIXTURE[:50]}
    r = requests.post(f"{server.url}/v1/recordings", data=msgpack.packb(doc),
                      headers={"Content-Type": "application/msgpack"})
    assert r.status_code == 200, r.text
    assert fetch_events(server.url, project, "mp") == sorted(FIXTURE[:50], key=lambda e: e["timestamp"])


def test_beacon_body_with_token_in_query_string(server, project):
    doc = {"session_id": "beacon", "window_id": "w", "batch_id": "b", "events": FIXTURE[:10]}
    r = requests.post(f"{server.url}/v1/recordings?token={project.token}", data=json.dumps(doc),
                      headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert r.status_code == 200, r.text
    assert len(fetch_events(server.url, project, "beacon")) == 10


def test_preflight_allows_browsers_on_ingest_only(server, project):
    r = requests.options(f"{server.url}/v1/recordings", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,content-encoding"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    rejected = requests.post(f"{server.url}/v1/recordings", data=b"{", headers={"Origin": "https://shop.example"})
    assert rejected.headers.get("Access-Control-Allow-Origin") == "*"  # browsers can read the error
    api = requests.get(f"{server.url}/api/projects/{project.id}/sessions", headers={"Origin": "https://shop.example"})
    assert "Access-Control-Allow-Origin" not in api.headers
