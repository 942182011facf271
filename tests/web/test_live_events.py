"""``GET .../events?from=<ms>``: what a live player polls for, across stored blocks and the spool."""

from __future__ import annotations

import requests

from harness import fetch_events, post_batch


def mouse(ts: int, x: int) -> dict:
    return {"type": 3, "timestamp": ts, "data": {"source": 1, "positions": [{"x": x, "y": 1, "id": 1, "timeOffset": 0}]}}


def test_from_returns_the_events_at_or_after_it_from_blocks_and_spool_in_order(server, project):
    base = 1_700_000_000_000
    batches = [[mouse(base + i * 1000 + j, i * 10 + j) for j in range(5)] for i in range(6)]
    for i, events in enumerate(batches):
        assert post_batch(server.url, project.token, "live", events, batch_id=f"b{i}").status_code == 200
        if i in (1, 3):
            server.flush()  # b0-b1 and b2-b3 in two batch objects; b4-b5 still spooled
    everything = fetch_events(server.url, project, "live")
    assert len(everything) == 30
    url = f"{server.url}/api/projects/{project.id}/sessions/live/events"
    key = {"Authorization": f"Bearer {project.api_key}"}
    for cut in (base, base + 1002, base + 2000, base + 3004, base + 4001, base + 5004, base + 5005):
        got = requests.get(url, params={"from": cut}, headers=key).json()
        assert got == [e for e in everything if e["timestamp"] >= cut], cut
    # A batch sent again (a retry) is not played twice, in the tail either.
    assert post_batch(server.url, project.token, "live", batches[5], batch_id="b5").status_code == 200
    server.flush()
    assert requests.get(url, params={"from": base + 5000}, headers=key).json() == batches[5]
    assert requests.get(url, params={"from": "soon"}, headers=key).status_code == 400
