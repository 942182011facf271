"""--log-format json: one JSON line per request, with route and status, and never a query string."""

from __future__ import annotations

import json
import time

import requests

from harness import ReplayProcess, load_fixture_events


def test_json_access_log_has_one_line_per_request_and_no_secrets(tmp_path):
    proc = ReplayProcess(tmp_path / "d", "--log-format", "json").start()
    try:
        token = next(line.split("ingest token: ")[1].strip() for line in proc.output if "ingest token: " in line)
        doc = {"session_id": "s", "window_id": "w", "batch_id": "b", "events": load_fixture_events()[:5]}
        assert requests.post(f"{proc.url}/v1/recordings?token={token}", json=doc).status_code == 200
        assert requests.get(f"{proc.url}/api/projects/nope/sessions?share=SECRETSHARE").status_code == 401
        assert requests.get(f"{proc.url}/no/such/page").status_code == 404
        time.sleep(0.5)
    finally:
        assert proc.terminate() == 0
    entries = []
    for line in proc.output:
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    access = [e for e in entries if e.get("logger") == "replay.access"]
    assert [(e["method"], e["route"], e["status"]) for e in access] == [
        ("POST", "/v1/recordings", 200), ("GET", "/api/projects/{project}/sessions", 401), ("GET", "unmatched", 404)]
    assert all(e["duration_ms"] >= 0 and e["level"] == "info" and e["ts"].endswith("Z") for e in access)
    assert access[2]["path"] == "/no/such/page"
    text = "".join(proc.output)
    assert token not in text.split("ingest token: ")[1].split("\n", 1)[1]  # printed once at start, never logged
    assert "SECRETSHARE" not in text
