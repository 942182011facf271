"""HTTP -> spool -> flush -> blob -> catalog -> read, with the real rrweb-player recording."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import threading
import time
import uuid

import boto3
import pytest
import requests

from harness import ROOT, ReplayProcess, fetch_events, load_fixture_events, post_batch

FIXTURE = load_fixture_events()


def chunks(events, n):
    size = -(-len(events) // n)
    return [events[i:i + size] for i in range(0, len(events), size)]


def expected_counts(events):
    """Re-derived here from the rrweb spec, not from our summary code."""
    clicks = sum(1 for e in events if e["type"] == 3 and e["data"].get("source") == 2 and e["data"].get("type") == 2)
    inputs = sum(1 for e in events if e["type"] == 3 and e["data"].get("source") == 5)
    urls = list(dict.fromkeys(e["data"]["href"] for e in events if e["type"] == 4))
    stamps = [e["timestamp"] for e in events]
    return clicks, inputs, urls, max(stamps) - min(stamps)


def by_time(events):
    return sorted(events, key=lambda e: e["timestamp"])


@pytest.fixture(params=["file", "s3"])
def any_server(request, make_server):
    if request.param == "file":
        return make_server()
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"rec-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return make_server(blob_url=f"s3://{bucket}/replay", s3_endpoint_url=endpoint, s3_region="us-east-1",
                       s3_path_style=True)


def objects(server):
    async def keys():
        return [b.key async for b in server.service.store.list("")]
    return server.call(keys())


def test_fixture_round_trips_event_for_event_on_both_stores(any_server):
    server = any_server
    project = server.create_project()
    for i, part in enumerate(chunks(FIXTURE, 4)):
        assert post_batch(server.url, project.token, "sess-1", part, batch_id=f"b{i}", distinct_id="alice").status_code == 200
    assert server.flush() == 1
    assert fetch_events(server.url, project, "sess-1") == by_time(FIXTURE)

    clicks, inputs, urls, duration = expected_counts(FIXTURE)
    r = requests.get(f"{server.url}/api/projects/{project.id}/sessions", headers={"Authorization": f"Bearer {project.api_key}"})
    [row] = r.json()["sessions"]
    assert (row["session_id"], row["distinct_id"], row["event_count"]) == ("sess-1", "alice", len(FIXTURE))
    assert (row["clicks"], row["keypresses"], row["duration_ms"]) == (clicks, inputs, duration)
    assert row["urls"] == urls and row["first_url"] == urls[0]
    assert row["window_ids"] == ["w1"]
    assert 0 < row["active_ms"] <= duration
    assert 0 < row["stored_bytes"] < row["size_bytes"]


def test_uploads_past_flush_bytes_are_stored_before_the_interval(make_server):
    server = make_server(flush_interval=3600.0, flush_bytes=20_000)
    project = server.create_project()
    assert post_batch(server.url, project.token, "small", FIXTURE[:1], batch_id="a").status_code == 200
    assert not objects(server)  # under flush_bytes: waits for the (hour-long) interval
    assert post_batch(server.url, project.token, "big", FIXTURE, batch_id="b").status_code == 200
    spool = server.service.spool
    deadline = time.monotonic() + 10
    while spool.buffered_bytes and time.monotonic() < deadline:  # released once stored and catalogued
        time.sleep(0.05)
    assert len(objects(server)) == 1
    # The flush took everything the spool held, and nothing is left to ask for another one.
    assert spool.buffered_bytes == 0 and spool.unsealed_bytes == 0
    assert fetch_events(server.url, project, "big") == by_time(FIXTURE)
    time.sleep(0.3)
    assert len(objects(server)) == 1


def test_key_layout_puts_retention_first(server):
    project = server.create_project(retention_days=7)
    post_batch(server.url, project.token, "s", FIXTURE[:5], batch_id="b")
    server.flush()
    [key] = objects(server)
    parts = key.split("/")
    assert parts[0] == "7d" and parts[1] == "batches"
    assert len(parts[2]) == 10 and parts[3].isdigit() and parts[4].split("-")[1] == "test"


def test_three_concurrent_sessions_in_one_flush_make_one_object(server, project):
    barrier = threading.Barrier(3)
    codes = []

    def upload(n):
        barrier.wait()
        codes.append(post_batch(server.url, project.token, f"sess-{n}", FIXTURE, batch_id="b").status_code)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert codes == [200, 200, 200]
    assert server.flush() == 1
    assert len(objects(server)) == 1
    for n in range(3):
        assert fetch_events(server.url, project, f"sess-{n}") == by_time(FIXTURE)


def test_flush_timer_writes_without_being_asked(make_server):
    server = make_server(flush_interval=0.3)
    project = server.create_project()
    post_batch(server.url, project.token, "timed", FIXTURE[:20], batch_id="b")
    import time
    deadline = time.monotonic() + 15
    while not objects(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(objects(server)) == 1


def test_retried_batch_plays_once(server, project):
    part = FIXTURE[:40]
    for _ in range(2):
        assert post_batch(server.url, project.token, "dup", part, batch_id="same").status_code == 200
    server.flush()
    assert post_batch(server.url, project.token, "dup", part, batch_id="same").status_code == 200
    assert fetch_events(server.url, project, "dup") == by_time(part)
    server.flush()
    assert fetch_events(server.url, project, "dup") == by_time(part)


def test_copies_of_a_batch_posted_at_once_play_once(server, project):
    # A beacon sent on page hide while the fetch of the same batch is still in flight: every copy
    # passed the duplicate check before the first reached the spool, and all of them landed in one
    # batch object (the reader drops copies only across objects): 5 of 8 played after the flush.
    part = FIXTURE[:40]  # holds the full snapshot: masked on a worker thread, the widest window
    statuses: list[int] = []

    def post() -> None:
        statuses.append(post_batch(server.url, project.token, "beacon", part, batch_id="same").status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert fetch_events(server.url, project, "beacon") == by_time(part)
    server.flush()
    assert fetch_events(server.url, project, "beacon") == by_time(part)
    assert server.service.metrics.value("replay_duplicate_batches_total") == 7


def test_a_retry_after_the_client_gave_up_mid_write_plays_once(server, project):
    # A client that times out closes the connection and aiohttp cancels the handler (the runner
    # cancels handlers of closed connections), here while the batch's spool write is under way:
    # that write goes on, and the retry sent at once must find the batch, not store it again.
    from replay.ingest.batch import Batch

    part = [e for e in FIXTURE[:60] if e["type"] != 2]  # no full snapshot: masked inline, then the write
    stored = server.call(server.service.catalog.project_by_token(project.token))

    def batch() -> Batch:
        return Batch(project_id=stored.id, session_id="gave-up", window_id="w1", batch_id="b1",
                     distinct_id=None, events=copy.deepcopy(part))

    async def give_up_then_retry() -> int:
        first = asyncio.ensure_future(server.service.accept(stored, [batch()]))
        await asyncio.sleep(0)  # the first runs until it waits for its fsync
        first.cancel()
        return await server.service.accept(stored, [batch()])

    assert server.call(give_up_then_retry()) == 0
    server.flush()
    assert len(fetch_events(server.url, project, "gave-up")) == len(part)


def test_unflushed_events_are_readable_from_the_spool(server, project):
    post_batch(server.url, project.token, "live", FIXTURE[:30], batch_id="a")
    server.flush()
    post_batch(server.url, project.token, "live", FIXTURE[30:60], batch_id="b")
    assert fetch_events(server.url, project, "live") == by_time(FIXTURE[:60])


def test_windows_merge_by_timestamp(server, project):
    # Each half starts mid-document; with masking on, nodes of unknown ancestry are masked. This
    # test is about merging, so the project stores events as received.
    server.call(server.service.catalog.set_policy(project.id, {"enforce": False}))
    a, b = FIXTURE[:100:2], FIXTURE[1:100:2]
    post_batch(server.url, project.token, "multi", a, batch_id="a", window_id="tab-a")
    server.flush()
    post_batch(server.url, project.token, "multi", b, batch_id="b", window_id="tab-b")
    server.flush()
    assert fetch_events(server.url, project, "multi") == by_time(FIXTURE[:100])


def test_sigkill_after_200_loses_nothing(tmp_path):
    proc = ReplayProcess(tmp_path / "data", "--flush-interval", "3600").start()
    token = proc.printed(r"ingest token: (\S+)")
    assert post_batch(proc.url, token, "killed", FIXTURE, batch_id="b1").status_code == 200
    proc.kill()
    proc = ReplayProcess(tmp_path / "data", "--flush-interval", "3600").start()
    try:
        project_id = proc.printed(r"project (\S+) ")
        out = subprocess.run([sys.executable, "-m", "replay", "export", "--data", str(tmp_path / "data"),
                              "--project", project_id, "--session", "killed"],
                             capture_output=True, check=True, cwd=ROOT).stdout
        assert json.loads(out) == by_time(FIXTURE)
    finally:
        proc.terminate()


def test_sigterm_flushes_the_spool_before_exit(tmp_path):
    proc = ReplayProcess(tmp_path / "data", "--flush-interval", "3600").start()
    token = proc.printed(r"ingest token: (\S+)")
    project_id = proc.printed(r"project (\S+) ")
    assert post_batch(proc.url, token, "graceful", FIXTURE, batch_id="b1").status_code == 200
    assert proc.terminate() == 0
    assert not list((tmp_path / "data" / "spool").glob("*.wal"))
    assert len([p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]) == 1
    out = subprocess.run([sys.executable, "-m", "replay", "export", "--data", str(tmp_path / "data"),
                          "--project", project_id, "--session", "graceful", "-o", str(tmp_path / "out.json")],
                         check=True, cwd=ROOT)
    assert out.returncode == 0
    assert json.loads((tmp_path / "out.json").read_text()) == by_time(FIXTURE)


def test_reindex_restores_every_session_from_footers(make_server, tmp_path):
    server = make_server(data=tmp_path / "d")
    project = server.create_project()
    for n in range(3):
        post_batch(server.url, project.token, f"s{n}", FIXTURE[n * 50:(n + 1) * 50 + 20], batch_id="b1")
        server.flush()
    post_batch(server.url, project.token, "s0", FIXTURE[200:], batch_id="b2")
    server.flush()
    before = requests.get(f"{server.url}/api/projects/{project.id}/sessions",
                          headers={"Authorization": f"Bearer {project.api_key}"}).json()["sessions"]
    server.call(server.service.catalog.clear_index())
    empty = requests.get(f"{server.url}/api/projects/{project.id}/sessions",
                         headers={"Authorization": f"Bearer {project.api_key}"}).json()["sessions"]
    assert empty == []
    server.stop()
    make_server_cli = subprocess.run([sys.executable, "-m", "replay", "reindex", "--data", str(tmp_path / "d")],
                                     capture_output=True, text=True, cwd=ROOT)
    assert make_server_cli.returncode == 0, make_server_cli.stderr
    assert "3 sessions" in make_server_cli.stdout
    again = make_server(data=tmp_path / "d")
    after = requests.get(f"{again.url}/api/projects/{project.id}/sessions",
                         headers={"Authorization": f"Bearer {project.api_key}"}).json()["sessions"]
    strip = lambda rows: sorted(({k: v for k, v in r.items() if k != "updated_ms"} for r in rows), key=lambda r: r["session_id"])
    assert strip(after) == strip(before)
    assert fetch_events(again.url, project, "s0") == by_time(FIXTURE[0:70] + FIXTURE[200:])

