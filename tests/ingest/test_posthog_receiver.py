"""The posthog-js receiver over real HTTP: remote config, flags and decide, the recorder bundles,
``/s/`` with bodies captured from real posthog-js, CORS, analytics endpoints, backpressure and bad input.

The captured bodies (tests/fixtures/posthog/) were sent with the token ``phc_fixture_token_0123456789``;
each is re-addressed to the test project's token in its own encoding (gzip stays gzip, a base64 form
stays a base64 form), and posted with the query string and Content-Type it was captured with.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests

from harness import fetch_events, load_fixture_events

ROOT = Path(__file__).resolve().parents[2]
CAPTURED = ROOT / "tests" / "fixtures" / "posthog"
PINNED = ROOT / "player_assets" / "vendor" / "posthog-js-1.449.2" / "dist"
FIXTURE_TOKEN = b"phc_fixture_token_0123456789"
LABELS = ["v1.449.2-gzip", "v1.449.2-base64", "v1.449.2-json", "v1.375.0-gzip", "v1.60.0-legacy"]
ORIGIN = "https://shop.example"
FORM = "application/x-www-form-urlencoded"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"


# -- captured bodies -----------------------------------------------------------------------------

@dataclass
class Captured:
    name: str
    body: bytes
    query: str
    content_type: str


def captured(label: str) -> list[Captured]:
    out = []
    for path in sorted(CAPTURED.glob(f"{label}-[0-9][0-9].body")):
        meta = json.loads(path.with_name(path.name[:-len(".body")] + ".request.json").read_text())
        out.append(Captured(path.name, path.read_bytes(), meta["query"], meta["headers"]["Content-Type"]))
    return out


def form(doc: bytes) -> bytes:
    """posthog-js's base64 form: data=encodeURIComponent(btoa(utf8(JSON)))."""
    return b"data=" + quote(base64.b64encode(doc).decode(), safe="").encode()


def json_of(body: bytes) -> bytes:
    """The JSON text inside a captured body (gzip, base64 form or plain)."""
    if body[:2] == b"\x1f\x8b":
        return gzip.decompress(body)
    if body.startswith(b"data="):
        return base64.b64decode(unquote(body[5:].decode()))
    return body


def readdressed(c: Captured, token: str) -> bytes:
    """The captured body sent with ``token`` instead of the fixture token, in its own encoding."""
    doc = json_of(c.body).replace(FIXTURE_TOKEN, token.encode())
    if c.body[:2] == b"\x1f\x8b":
        return gzip.compress(doc, mtime=0)
    if c.body.startswith(b"data="):
        return form(doc)
    return doc


def sessions_in(c: Captured) -> set[str]:
    events = json.loads(json_of(c.body))
    events = events if isinstance(events, list) else events.get("batch", [events])
    return {e["properties"]["$session_id"] for e in events if e.get("event") == "$snapshot"}


def post_snapshot(url: str, body: bytes, *, query: str = "", content_type: str = "text/plain",
                  headers: dict | None = None) -> requests.Response:
    return requests.post(f"{url}/s/" + (f"?{query}" if query else ""), data=body,
                         headers={"Content-Type": content_type, **(headers or {})}, timeout=60)


def snapshot_doc(token: str | None, session_id: str = "s-1", events: list | None = None, **props) -> bytes:
    properties = {"$session_id": session_id, "$window_id": "w-1", "distinct_id": "alice",
                  "$snapshot_data": events if events is not None else [
                      {"type": 4, "timestamp": 1_795_000_000_000, "data": {"href": "https://shop.example/", "width": 800, "height": 600}}]}
    if token is not None:
        properties["token"] = token
    properties.update(props)
    return json.dumps([{"event": "$snapshot", "uuid": "01a2-0000-7000-8000-000000000001", "properties": properties}]).encode()


# -- remote config, flags, decide ----------------------------------------------------------------

CONFIG_JS = re.compile(r"window\._POSTHOG_REMOTE_CONFIG\[(\"[^\"]*\")\]=\{config:(\{.*\}),siteApps:\[\]\};")


def test_remote_config_turns_recording_on_with_the_projects_masking(server, project):
    r = requests.get(f"{server.url}/array/{project.token}/config", headers={"Origin": ORIGIN}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    config = r.json()
    assert config["token"] == project.token
    assert config["supportedCompression"] == ["gzip-js", "base64"]
    recording = config["sessionRecording"]
    assert recording["endpoint"] == "/s/"
    assert recording["masking"]["maskAllInputs"] is True  # the default policy
    # Nothing that would make the SDK call an endpoint Replay does not have.
    assert config["hasFeatureFlags"] is False and config["autocapture_opt_out"] is True
    assert config["heatmaps"] is False and config["surveys"] is False and config["siteApps"] == []

    server.call(server.service.catalog.set_policy(project.id, {
        "mask_all_inputs": False, "mask_input_types": ["email"],
        "mask_text_selectors": [".secret"], "block_selectors": [".private"]}))
    masking = requests.get(f"{server.url}/array/{project.token}/config", timeout=10).json()["sessionRecording"]["masking"]
    assert masking["maskAllInputs"] is False
    assert masking["maskTextSelector"] == ".secret" and masking["blockSelector"] == ".private"


def test_config_script_defines_the_config_for_the_token(server, project):
    r = requests.get(f"{server.url}/array/{project.token}/config.js", headers={"Origin": ORIGIN}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/javascript")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    m = CONFIG_JS.search(r.text)
    assert m, r.text[:300]
    assert json.loads(m.group(1)) == project.token
    config = json.loads(m.group(2))
    assert config == requests.get(f"{server.url}/array/{project.token}/config", timeout=10).json()


@pytest.mark.parametrize("path", ["/array/{token}/config", "/array/{token}/config.js"])
def test_config_for_an_unknown_token_is_401(server, project, path):
    r = requests.get(server.url + path.format(token="phc_unknown"), headers={"Origin": ORIGIN}, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"


def identity(token: str) -> bytes:
    return json.dumps({"token": token, "distinct_id": "01a2-anon", "groups": {}, "person_properties": {},
                       "timezone": "UTC"}).encode()


@pytest.mark.parametrize("encoding", ["base64", "gzip", "json"])
def test_flags_with_config_carry_the_recording_config(server, project, encoding):
    doc = identity(project.token)
    body, ctype, query = {
        "base64": (form(doc), FORM, "v=2&config=true&compression=base64"),
        "gzip": (gzip.compress(doc), "text/plain", "v=2&config=true&compression=gzip-js"),
        "json": (doc, "application/json", "v=2&config=true"),
    }[encoding]
    r = requests.post(f"{server.url}/flags/?{query}", data=body, headers={"Content-Type": ctype, "Origin": ORIGIN},
                      timeout=10)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["flags"] == {} and answer["errorsWhileComputingFlags"] is False
    assert answer["sessionRecording"]["endpoint"] == "/s/"
    assert answer["supportedCompression"] == ["gzip-js", "base64"]
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_flags_without_config_answer_no_flags_only(server, project):
    r = requests.post(f"{server.url}/flags/?v=2", data=identity(project.token),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200
    answer = r.json()
    assert answer["flags"] == {} and "sessionRecording" not in answer


def test_decide_answers_config_and_empty_flags_in_both_shapes(server, project):
    # posthog-js 1.60.0's request: ?v=3&ip=1&_=..&ver=, a base64 form body.
    r = requests.post(f"{server.url}/decide/?v=3&ip=1&_=1795736395765&ver=1.60.0", data=form(identity(project.token)),
                      headers={"Content-Type": FORM, "Origin": ORIGIN}, timeout=10)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["sessionRecording"]["endpoint"] == "/s/"
    assert answer["featureFlags"] == {} and answer["featureFlagPayloads"] == {} and answer["flags"] == {}
    assert answer["config"] == {"enable_collect_everything": False}


@pytest.mark.parametrize("path", ["/flags/?v=2&config=true", "/decide/?v=4"])
def test_flags_and_decide_for_an_unknown_token_are_401(server, project, path):
    r = requests.post(server.url + path, data=form(identity("phc_unknown")), headers={"Content-Type": FORM}, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"


# -- recorder bundles ----------------------------------------------------------------------------

@pytest.mark.parametrize("path,file", [
    ("/static/lazy-recorder.js?v=1.375.0", "lazy-recorder.js"),
    ("/static/1.449.2/lazy-recorder.js", "lazy-recorder.js"),
    ("/static/recorder.js?v=1.200.0", "recorder.js"),
    ("/static/recorder-v2.js?v=1.60.0", "recorder.js"),
    ("/static/posthog-recorder.js", "posthog-recorder.js"),
    ("/static/array.js", "array.js"),
    ("/static/array.full.js", "array.full.js"),
])
def test_recorder_bundles_are_the_pinned_build_as_cross_origin_scripts(server, path, file):
    r = requests.get(server.url + path, headers={"Origin": ORIGIN}, timeout=10)
    assert r.status_code == 200
    assert r.content == (PINNED / file).read_bytes()
    assert r.headers["Content-Type"].startswith("application/javascript")
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_a_version_not_vendored_is_404_so_posthog_js_falls_back_to_the_plain_url(server):
    assert requests.get(f"{server.url}/static/1.375.0/lazy-recorder.js", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/static/1.449.2/lazy-recorder.js", timeout=10).headers["Cache-Control"].endswith("immutable")


def test_the_rest_of_static_is_still_served(server):
    for path in ("/static/capture.js", "/static/vendor/posthog-js-1.449.2/dist/array.js"):
        r = requests.get(server.url + path, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"].startswith("application/javascript")


# -- /s/ -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", LABELS)
def test_captured_uploads_store_every_recorded_event_once(server, project, label):
    bodies = captured(label)
    raw = json.loads((CAPTURED / f"{label}.raw-events.json").read_text())
    sessions = set().union(*(sessions_in(c) for c in bodies))
    assert len(sessions) == 1
    session_id = sessions.pop()
    for attempt in range(2):  # the second round is posthog-js retrying every request: nothing doubles
        for c in bodies:
            r = post_snapshot(server.url, readdressed(c, project.token), query=c.query, content_type=c.content_type,
                              headers={"User-Agent": UA, "Origin": ORIGIN})
            assert r.status_code == 200, (c.name, r.text)
            assert r.json() == {"status": "Ok"}
        events = fetch_events(server.url, project, session_id)
        assert [(e["type"], e["timestamp"]) for e in events] == \
            sorted(((e["type"], e["timestamp"]) for e in raw), key=lambda t: t[1]), attempt
    summary = requests.get(f"{server.url}/api/projects/{project.id}/sessions/{session_id}",
                           headers={"Authorization": f"Bearer {project.api_key}"}, timeout=10).json()
    assert summary["meta"]["user_agent"] == UA


def test_requests_racing_with_the_same_batches_in_either_order_all_succeed_and_play_once(server, project):
    # posthog-js puts several sessions' snapshots in one request. Requests holding the same
    # batches in opposite orders, at once, must neither wait for each other forever nor store twice.
    recording = load_fixture_events()
    parts = {"s-a": recording[:40], "s-b": recording[40:90]}
    snapshots = {sid: {"event": "$snapshot", "uuid": f"01a2-0000-7000-8000-00000000000{i}",
                       "properties": {"$session_id": sid, "$window_id": "w-1", "token": project.token,
                                      "$snapshot_data": events}}
                 for i, (sid, events) in enumerate(parts.items())}
    ab = json.dumps([snapshots["s-a"], snapshots["s-b"]]).encode()
    ba = json.dumps([snapshots["s-b"], snapshots["s-a"]]).encode()
    statuses: list[int] = []

    def post(body: bytes) -> None:
        statuses.append(requests.post(f"{server.url}/s/", data=body, headers={"Content-Type": "text/plain"},
                                      timeout=20).status_code)

    threads = [threading.Thread(target=post, args=(ab if i % 2 else ba,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    server.flush()
    for sid, events in parts.items():  # s-b starts mid-document, so masking changes some of its text
        assert [(e["type"], e["timestamp"]) for e in fetch_events(server.url, project, sid)] == \
            sorted(((e["type"], e["timestamp"]) for e in events), key=lambda t: t[1])


def test_uploads_are_masked_before_they_are_stored(server, project):
    # The captured page typed "Zoë ✓" into a text input, masked by the client; the server masks too.
    for c in captured("v1.449.2-gzip"):
        assert post_snapshot(server.url, readdressed(c, project.token), content_type=c.content_type).status_code == 200
    session_id = sessions_in(captured("v1.449.2-gzip")[0]).pop()
    inputs = [e["data"]["text"] for e in fetch_events(server.url, project, session_id)
              if e["type"] == 3 and e["data"].get("source") == 5 and "text" in e["data"]]
    assert inputs and all(set(t) == {"*"} for t in inputs)


def test_preflight_mirrors_the_origin_with_credentials(server):
    r = requests.options(f"{server.url}/s/", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "content-type"}, timeout=10)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "content-type" in r.headers["Access-Control-Allow-Headers"].lower()


def test_uploads_answer_cors_and_beacons_without_origin_are_kept(server, project):
    first, *_ , beacon = captured("v1.449.2-gzip")
    r = post_snapshot(server.url, readdressed(first, project.token), headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN and r.headers["Access-Control-Allow-Credentials"] == "true"
    # A no-cors beacon's answer is never read: it only has to be kept.
    r = post_snapshot(server.url, readdressed(beacon, project.token))
    assert r.status_code == 200
    session_id = sessions_in(beacon).pop()
    stored = {e["timestamp"] for e in fetch_events(server.url, project, session_id)}
    beacon_events = [e for ev in json.loads(json_of(beacon.body)) for e in ev["properties"]["$snapshot_data"]]
    assert {e["timestamp"] for e in beacon_events} <= stored


def test_a_full_spool_answers_503_which_posthog_js_retries(make_server):
    server = make_server(spool_max_bytes=1)
    project = server.create_project()
    c = captured("v1.449.2-gzip")[0]
    r = post_snapshot(server.url, readdressed(c, project.token), headers={"Origin": ORIGIN})
    assert r.status_code == 503  # not 4xx: posthog-js drops a batch on any 4xx
    assert r.json()["error"] == "spool_full"
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert requests.get(f"{server.url}/api/projects/{project.id}/sessions/{sessions_in(c).pop()}/events",
                        headers={"Authorization": f"Bearer {project.api_key}"}, timeout=10).status_code == 404


def test_the_rate_limit_answers_503_not_429(make_server):
    server = make_server(rate_limit=0.01, rate_burst=1)
    project = server.create_project()
    first, second, _ = captured("v1.449.2-gzip")
    assert post_snapshot(server.url, readdressed(first, project.token)).status_code == 200
    r = post_snapshot(server.url, readdressed(second, project.token))
    assert r.status_code == 503
    assert r.json()["error"] == "rate_limited"
    assert "Retry-After" in r.headers


def bomb() -> bytes:
    return gzip.compress(b"[" + b" " * (120 << 20) + b"]", compresslevel=1)


BAD = {
    "corrupt_gzip": (lambda t: b"\x1f\x8b\x08\x00" + b"garbage" * 10, "", "text/plain", 400, "bad_gzip"),
    "not_json": (lambda t: b"this is not json", "", "text/plain", 400, "invalid_json"),
    "bad_base64": (lambda t: b"data=%%%not-base64!!", "compression=base64", FORM, 400, "bad_base64"),
    "no_session_id": (lambda t: snapshot_doc(t, session_id=""), "", "application/json", 400, "invalid_snapshot"),
    "no_token": (lambda t: snapshot_doc(None), "", "application/json", 400, "missing_token"),
    "unknown_token": (lambda t: snapshot_doc("phc_unknown"), "", "application/json", 401, "invalid_token"),
    "session_id_with_slash": (lambda t: snapshot_doc(t, session_id="../etc"), "", "application/json", 400,
                              "invalid_session_id"),
    "not_an_rrweb_event": (lambda t: snapshot_doc(t, events=[{"type": 99, "timestamp": 1_795_000_000_000, "data": {}}]),
                           "", "application/json", 400, "invalid_event"),
    "lz64": (lambda t: b"data=abc", "compression=lz64", FORM, 415, "unsupported_compression"),
    "gzip_bomb": (lambda t: bomb(), "", "text/plain", 413, "decoded_body_too_large"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_uploads_get_a_4xx_json_error(server, project, case):
    make, query, ctype, status, code = BAD[case]
    r = post_snapshot(server.url, make(project.token), query=query, content_type=ctype, headers={"Origin": ORIGIN})
    assert r.status_code == status, r.text
    assert r.json()["error"] == code, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN  # so the browser shows it to the site's developer


def test_an_empty_body_is_400(server):
    r = requests.post(f"{server.url}/s/", data=b"", headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "empty_body"


# -- analytics -----------------------------------------------------------------------------------

def dropped(server) -> float:
    return server.service.metrics.value("replay_analytics_events_dropped_total")


@pytest.mark.parametrize("path", ["/e/", "/i/v0/e/", "/batch/", "/engage/", "/capture/"])
def test_analytics_events_are_acknowledged_and_dropped(server, project, path):
    events = [{"event": "$pageview", "properties": {"token": project.token, "$current_url": "https://shop.example/"}},
              {"event": "$pageleave", "properties": {"token": project.token}}]
    bodies = [
        (gzip.compress(json.dumps({"api_key": project.token, "batch": events, "sent_at": "x"}).encode()), "text/plain", 2),
        (form(json.dumps(events[0]).encode()), FORM, 1),
        (json.dumps(events).encode(), "application/json", 2),
    ]
    for body, ctype, count in bodies:
        before = dropped(server)
        r = requests.post(f"{server.url}{path}?ip=0&_=1&ver=1.449.2", data=body,
                          headers={"Content-Type": ctype, "Origin": ORIGIN}, timeout=10)
        assert r.status_code == 200 and r.json() == {"status": 1}
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert dropped(server) == before + count
    sessions = requests.get(f"{server.url}/api/projects/{project.id}/sessions",
                            headers={"Authorization": f"Bearer {project.api_key}"}, timeout=10).json()
    assert sessions["total"] == 0  # nothing was kept


def test_analytics_garbage_is_still_acknowledged(server):
    r = requests.post(f"{server.url}/e/", data=b"\x1f\x8bnope", headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"status": 1}
