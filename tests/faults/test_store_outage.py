"""The blob store unreachable for 60 s under load: ingest keeps answering 200 from the spool, and once
the store is back every acknowledged event is stored and readable. The store sits behind a TCP proxy
the test switches off and on, so objects stored before the outage survive it (as they would)."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest
import requests

from harness import load_fixture_events, metric, post_batch
from load import LoadGenerator, key
from tcp_proxy import TcpProxy

OUTAGE_SECONDS = 60


@pytest.fixture
def proxied_s3(s3_endpoint):
    host, port = s3_endpoint.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port)).start()
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield proxy, bucket, s3_endpoint
    proxy.stop()


def s3_server(make_server, proxy, bucket, **over):
    return make_server(blob_url=f"s3://{bucket}/replay", s3_endpoint_url=proxy.url, s3_region="us-east-1",
                       s3_path_style=True, rate_limit=0.0, **over)


def read_all(server, project, sessions):
    h = {"Authorization": f"Bearer {project.api_key}"}
    out = {}
    for sid in sessions:
        r = requests.get(f"{server.url}/api/projects/{project.id}/sessions/{sid}/events", headers=h, timeout=60)
        assert r.status_code == 200, r.text
        out[sid] = r.json()
    return out


def test_sixty_second_store_outage_under_load_loses_no_acknowledged_event(make_server, proxied_s3):
    proxy, bucket, _ = proxied_s3
    server = s3_server(make_server, proxy, bucket, flush_interval=1.0)
    project = server.create_project()
    load = LoadGenerator(server.url, project.token, sessions=6, rate=15.0).start()
    time.sleep(4)
    assert requests.get(f"{server.url}/readyz").status_code == 200
    flushed_before = metric(server, "replay_flush_seconds_count")
    assert flushed_before >= 1  # objects were stored before the outage

    proxy.set_mode("down")
    outage_started = time.monotonic()
    time.sleep(3)
    r = requests.get(f"{server.url}/readyz")
    assert r.status_code == 503 and r.json()["checks"]["blob_store"].startswith("error")
    depth_during = []
    while time.monotonic() - outage_started < OUTAGE_SECONDS:
        depth_during.append(metric(server, "replay_spool_batches"))
        time.sleep(5)
    acked_during_outage = load.statuses[200]
    proxy.set_mode("pass")
    time.sleep(4)
    load.stop()

    # Ingest never refused anything, the spool absorbed the outage, flushes failed and were retried.
    assert dict(load.statuses) == {200: load.statuses[200]} and load.failures == 0
    assert acked_during_outage >= 0.9 * 15 * (OUTAGE_SECONDS + 4)
    assert depth_during[-1] > depth_during[0] > 0
    assert metric(server, "replay_store_errors_total") >= 1
    server.flush()
    assert metric(server, "replay_spool_batches") == 0
    assert requests.get(f"{server.url}/readyz").status_code == 200

    stored = read_all(server, project, load.acked)
    for sid, events in load.acked.items():
        assert sorted(map(key, stored[sid])) == sorted(map(key, events)), sid
    assert sum(len(v) for v in stored.values()) == load.acked_events > 15_000


def test_a_flush_cut_off_mid_upload_leaves_no_row_pointing_at_a_partial_object(make_server, proxied_s3):
    proxy, bucket, direct = proxied_s3
    server = s3_server(make_server, proxy, bucket)
    project = server.create_project()
    first = LoadGenerator(server.url, project.token, sessions=3, rate=200.0, max_batches=30).start()
    first._thread.join(30)
    server.flush()  # a first object, stored whole
    second = LoadGenerator(server.url, project.token, sessions=3, rate=200.0, max_batches=60, pad=200,
                           first_seq=30)
    second.start()._thread.join(30)
    before = metric(server, "replay_store_errors_total")
    proxy.set_mode("cut_upload", cut_after=20_000)  # the PUT's headers and the start of its ~200 KB body get through
    with pytest.raises(Exception):
        server.flush()
    assert metric(server, "replay_store_errors_total") == before + 1

    async def rows():
        catalog = server.service.catalog
        return [b for sid in ("load-0", "load-1", "load-2") for b in await catalog.blocks(project.id, sid)]

    s3 = boto3.client("s3", endpoint_url=direct, region_name="us-east-1")
    stored = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert len(stored) == 1  # the cut upload left nothing behind in the store
    from replay import codec
    for row in server.call(rows()):
        body = s3.get_object(Bucket=bucket, Key="replay/" + row.object_key,
                             Range=f"bytes={row.offset}-{row.offset + row.length - 1}")["Body"].read()
        assert len(codec.decompress_block(body)) == row.event_count
    # Readers still get everything: the stored object, plus what the spool keeps.
    proxy.set_mode("pass")
    server.flush()
    stored_events = read_all(server, project, ("load-0", "load-1", "load-2"))
    for sid in ("load-0", "load-1", "load-2"):
        acked = sorted(map(key, first.acked[sid] + second.acked[sid]))
        assert sorted(map(key, stored_events[sid])) == acked, sid  # every acknowledged event, each once


def test_a_failed_flush_waits_for_the_interval_not_for_the_next_upload(make_server, proxied_s3):
    # Bytes a failed (or running) flush still holds must not count towards the next early flush:
    # otherwise every upload acknowledged during an outage starts another flush at once.
    proxy, bucket, _ = proxied_s3
    server = s3_server(make_server, proxy, bucket, flush_interval=3600.0, flush_bytes=20_000)
    project = server.create_project()
    events = load_fixture_events()
    small = [e for e in events if len(json.dumps(e)) < 300][:10]
    proxy.set_mode("down")
    assert post_batch(server.url, project.token, "big", events, batch_id="big").status_code == 200
    deadline = time.monotonic() + 30
    while metric(server, "replay_store_errors_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server, "replay_store_errors_total") == 1  # the early flush, past flush_bytes, failed
    for i, event in enumerate(small):  # far below flush_bytes, all of them together
        assert post_batch(server.url, project.token, "small", [event], batch_id=f"s{i}").status_code == 200
        time.sleep(0.2)
    assert metric(server, "replay_store_errors_total") == 1  # no flush since: the next is due at the interval
    assert server.service.spool.unsealed_bytes < 20_000 <= server.service.spool.buffered_bytes

    proxy.set_mode("pass")
    server.flush()
    assert server.service.spool.buffered_bytes == 0
    stored = read_all(server, project, ["big", "small"])
    assert len(stored["big"]) == len(events) and len(stored["small"]) == len(small)
