"""Property-based fuzzing of the posthog-js receiver over HTTP: any ``/s/`` body, in any of the
encodings posthog-js uses, gets a 2xx or a 4xx, never a 5xx (the wire parser alone is fuzzed in
test_posthog_wire.py)."""

from __future__ import annotations

import base64
import gzip
import json

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_native_fuzz import event_like, json_like, live  # noqa: F401  (live: the module's server fixture)

properties = st.fixed_dictionaries({}, optional={
    "token": st.just("VALID") | json_like, "$session_id": st.just("s-1") | json_like,
    "$window_id": st.just("w") | json_like, "distinct_id": json_like, "$current_url": json_like,
    "$snapshot_data": st.lists(event_like, max_size=4) | json_like, "$snapshot_bytes": json_like,
    "$lib": json_like, "$lib_version": json_like})
events = st.lists(st.fixed_dictionaries({"event": st.just("$snapshot") | json_like}, optional={
    "properties": properties | json_like, "uuid": json_like, "timestamp": json_like}), max_size=3)
documents = events | st.fixed_dictionaries({"batch": events}, optional={"api_key": json_like}) | json_like


def with_token(value, token):
    if isinstance(value, dict):
        return {k: token if v == "VALID" else with_token(v, token) for k, v in value.items()}
    return [with_token(v, token) for v in value] if isinstance(value, list) else value


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents, st.sampled_from(["text", "gzip-js", "base64-form", "json-form"]),
       st.sampled_from(["", "ver=1.449.2", "compression=gzip-js", "compression=base64"]))
def test_any_snapshot_request_gets_a_2xx_or_4xx_never_a_5xx(live, doc, wire, query):  # noqa: F811
    server, project = live
    try:
        raw = json.dumps(with_token(doc, project.token)).encode()
    except (OverflowError, ValueError):
        return
    content_type, body = "text/plain", raw
    if wire == "gzip-js":
        body, query = gzip.compress(raw), "compression=gzip-js"
    elif wire.endswith("-form"):
        content_type = "application/x-www-form-urlencoded"
        body = b"data=" + (base64.b64encode(raw) if wire == "base64-form" else raw)
    r = requests.post(f"{server.url}/s/" + (f"?{query}" if query else ""), data=body,
                      headers={"Content-Type": content_type}, timeout=30)
    assert r.status_code < 500, (r.status_code, r.text)
    assert isinstance(r.json(), dict)
