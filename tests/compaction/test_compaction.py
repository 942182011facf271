"""Compaction through the real server: every session plays the same before and after, the catalog
and the store end up pointing at one session object, and nothing a reader may still need goes."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import boto3
import pytest
import requests

from harness import ROOT, fetch_events, load_fixture_events, post_batch
from replay.catalog.rebuild import read_footer, rebuild_index
from replay.compaction import is_session_object
from replay.playback import session_items

FIXTURE = load_fixture_events()


def chunks(events, n):
    size = -(-len(events) // n)
    return [events[i:i + size] for i in range(0, len(events), size)]


def canonical(events):
    """Order-free form, for comparing with what was sent: ties between tabs may play in either order,
    and masking may have changed recorded text (so only time and type are compared)."""
    return sorted((e["timestamp"], e["type"]) for e in events)


def long_recording(copies):
    """The real recording played ``copies`` times back to back: a longer session of real events."""
    span = FIXTURE[-1]["timestamp"] - FIXTURE[0]["timestamp"] + 1000
    return [{**e, "timestamp": e["timestamp"] + k * span} for k in range(copies) for e in FIXTURE]


def ok(response):
    assert response.status_code == 200, response.text
    return response


def store_keys(server):
    async def keys():
        return [b.key async for b in server.service.store.list("")]
    return sorted(server.call(keys()))


def block_keys(server, project_id, session_id):
    return {r.object_key for r in server.call(server.service.catalog.blocks(project_id, session_id))}


def summaries(server, project):
    r = requests.get(f"{server.url}/api/projects/{project.id}/sessions", headers={"Authorization": f"Bearer {project.api_key}"})
    r.raise_for_status()
    return {s["session_id"]: {k: v for k, v in s.items() if k != "updated_ms"} for s in r.json()["sessions"]}


def compacted(report):
    return sorted(r.session_id for r in report.compacted)


@pytest.fixture(params=["file", "s3"])
def receivers(request, make_server, tmp_path):
    """Two receivers with their own spools sharing one blob store and one catalog (nodes behind a balancer)."""
    shared = {"catalog_url": f"sqlite:///{tmp_path / 'catalog.sqlite3'}", "compact_grace": 0.0}
    if request.param == "file":
        shared["blob_url"] = (tmp_path / "blobs").as_uri()
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"cmp-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        shared.update(blob_url=f"s3://{bucket}/replay", s3_endpoint_url=endpoint, s3_region="us-east-1",
                      s3_path_style=True)
    return make_server(node_id="a", **shared), make_server(node_id="b", **shared)


def test_a_spool_holding_two_copies_of_a_batch_stores_it_once(make_server):
    # Before ingest held a batch from its duplicate check until it was on disk, two copies accepted
    # at once went into one spool segment. Such a spool (recovered after an upgrade) must store,
    # count and play each batch once: the reader drops copies only across objects.
    from replay import codec
    from replay.catalog.summary import summarize
    from replay.spool import SpooledBatch

    server = make_server()
    project = server.create_project()
    first, second = FIXTURE[:60], FIXTURE[60:120]

    def record(batch_id, events):
        return SpooledBatch(project.id, "copied", "w1", batch_id, None, len(events), codec.pack_items("w1", events),
                            summarize(events), {}, 30, int(time.time() * 1000))

    async def spool(records):
        await server.service.spool.submit(records)

    server.call(spool([record("b1", first), record("b1", first), record("b2", second)]))
    server.flush()
    [key] = block_keys(server, project.id, "copied")
    footer = server.call(read_footer(server.service.store, key, server.call(server.service.store.size(key))))
    assert [block.batches for block in footer.blocks] == [[["b1", 60], ["b2", 60]]]
    assert canonical(fetch_events(server.url, project, "copied")) == canonical(FIXTURE[:120])
    assert summaries(server, project)["copied"]["event_count"] == 120


def test_compaction_keeps_every_event_of_two_tabs_and_a_batch_stored_twice(receivers):
    a, b = receivers
    project = a.create_project()
    # Two tabs recording at the same time: in time order their batches interleave event by event.
    tab0, tab1 = chunks(FIXTURE[0::2], 4), chunks(FIXTURE[1::2], 4)
    others = chunks(FIXTURE[:120], 4)
    batches = {}
    for i in range(4):
        for tab, part in ((0, tab0[i]), (1, tab1[i])):
            batches[f"b{tab}{i}"] = part
            ok(post_batch(a.url, project.token, "s", part, batch_id=f"b{tab}{i}", window_id=f"tab-{tab}",
                          distinct_id="ann"))
        if i == 1:
            # The same upload also reached the other receiver (a retry after a lost answer) before either
            # flushed, so both store it: a real duplicate in two objects.
            ok(post_batch(b.url, project.token, "s", tab1[1], batch_id="b11", window_id="tab-1", distinct_id="ann"))
        ok(post_batch(a.url, project.token, "t", others[i], batch_id=f"t{i}"))
        a.flush()
    b.flush()
    assert len(block_keys(a, project.id, "s")) == 5
    before = {sid: fetch_events(a.url, project, sid) for sid in ("s", "t")}
    assert canonical(before["s"]) == canonical(FIXTURE)
    summary_before = summaries(a, project)
    # b11 is stored twice (two objects) but counts once: its events, and the click among them.
    assert summary_before["s"]["event_count"] == len(FIXTURE)
    assert summary_before["s"]["clicks"] == sum(1 for e in FIXTURE if e["type"] == 3 and e["data"].get("source") == 2
                                                and e["data"].get("type") == 2)
    # A reindex from the footers alone gives the same summaries: the copy counts once there too.
    a.call(rebuild_index(a.service.store, a.service.catalog))
    assert summaries(a, project) == summary_before

    report = a.call(a.service.compact(0))
    assert compacted(report) == ["s", "t"]

    for server in (a, b):
        for sid in ("s", "t"):
            assert fetch_events(server.url, project, sid) == before[sid]
    [key] = block_keys(a, project.id, "s")
    assert is_session_object(key)
    # Each batch once, with all its events, so the reader's dedup keeps working on the new object.
    footer = a.call(read_footer(a.service.store, key, a.call(a.service.store.size(key))))
    counts = Counter()
    for block in footer.blocks:
        for batch_id, n in block.batches:
            counts[batch_id] += n
    assert counts == {bid: len(part) for bid, part in batches.items()}
    assert max(len(block.batches) for block in footer.blocks) > len(batches)  # batches split in runs by time
    # Only the two session objects are left: every batch object was unreferenced (grace 0).
    assert [is_session_object(k) for k in store_keys(a)] == [True, True]
    after = summaries(a, project)
    for sid in ("s", "t"):
        assert after[sid]["stored_bytes"] < summary_before[sid]["stored_bytes"]
        assert {**after[sid], "stored_bytes": 0} == {**summary_before[sid], "stored_bytes": 0}
    assert a.service.metrics.counters[("replay_compactions_total", ())] == 2


def test_batch_object_shared_with_an_uncompacted_session_is_kept(make_server):
    server = make_server(compact_grace=0.0)
    project = server.create_project()
    ok(post_batch(server.url, project.token, "a", FIXTURE[:100], batch_id="a1"))
    ok(post_batch(server.url, project.token, "b", FIXTURE[:80], batch_id="b1"))
    server.flush()
    [shared] = store_keys(server)
    ok(post_batch(server.url, project.token, "a", FIXTURE[100:], batch_id="a2"))
    server.flush()
    [only_a] = set(store_keys(server)) - {shared}
    before_a, before_b = fetch_events(server.url, project, "a"), fetch_events(server.url, project, "b")
    assert canonical(before_a) == canonical(FIXTURE) and canonical(before_b) == canonical(FIXTURE[:80])

    report = server.call(server.service.compact(0, project_id=project.id, session_id="a"))
    assert compacted(report) == ["a"]
    keys = store_keys(server)
    assert shared in keys and only_a not in keys
    assert fetch_events(server.url, project, "a") == before_a
    assert fetch_events(server.url, project, "b") == before_b

    assert compacted(server.call(server.service.compact(0))) == ["b"]
    assert shared not in store_keys(server)
    assert all(is_session_object(k) for k in store_keys(server))
    assert fetch_events(server.url, project, "b") == before_b


def test_replaced_objects_stay_for_readers_in_flight_until_the_grace_period_ends(make_server, tmp_path):
    data = tmp_path / "d"
    server = make_server(data=data, compact_grace=3600.0)
    project = server.create_project()
    for i, part in enumerate(chunks(FIXTURE, 3)):
        ok(post_batch(server.url, project.token, "s", part, batch_id=f"b{i}"))
        server.flush()
    old_rows = server.call(server.service.catalog.blocks(project.id, "s"))
    before = fetch_events(server.url, project, "s")

    assert compacted(server.call(server.service.compact(0))) == ["s"]
    assert len(store_keys(server)) == 4  # three batch objects kept for the grace period, one session object

    async def read_old():  # a playback that looked the blocks up before the swap
        return [e async for _w, e in session_items(server.service.store, old_rows, [])]
    assert server.call(read_old()) == before
    server.stop()

    idle = subprocess.run([sys.executable, "-m", "replay", "compact", "--data", str(data), "--idle", "3600"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert idle.returncode == 0, idle.stderr
    assert "compacted 0 sessions" in idle.stdout and "deleted 0 replaced" in idle.stdout
    done = subprocess.run([sys.executable, "-m", "replay", "compact", "--data", str(data), "--compact-grace", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deleted 3 replaced objects" in done.stdout
    again = make_server(data=data)
    assert [is_session_object(k) for k in store_keys(again)] == [True]
    assert fetch_events(again.url, project, "s") == before


class _Started(logging.Handler):
    """Set once the compactor has read a session's block list (its debug line says so)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.event = threading.Event()

    def emit(self, record):
        if record.getMessage().startswith("compacting "):
            self.event.set()


def test_batches_arriving_during_compaction_are_not_lost(make_server):
    server = make_server(compact_grace=0.0)
    project = server.create_project()
    events = long_recording(8)  # ~1 MB of msgpack: level-19 compression takes a second or more
    for i, part in enumerate(chunks(events, 8)):
        ok(post_batch(server.url, project.token, "s", part, batch_id=f"b{i}"))
        server.flush()
    late = [{**e, "timestamp": e["timestamp"] + 10 ** 7} for e in FIXTURE[:50]]
    started = _Started()
    logger = logging.getLogger("replay.compaction")
    level = logger.level
    logger.addHandler(started)
    logger.setLevel(logging.DEBUG)
    try:
        running = asyncio.run_coroutine_threadsafe(server.service.compactor.compact_session(project.id, "s"),
                                                   server.loop)
        assert started.event.wait(60)
        ok(post_batch(server.url, project.token, "s", late, batch_id="late"))
        server.flush()  # a new block lands while the compactor compresses
        result = running.result(300)
    finally:
        logger.removeHandler(started)
        logger.setLevel(level)

    assert result.outcome == "refused"
    assert not any(is_session_object(k) for k in store_keys(server))  # its object did not linger
    expected = fetch_events(server.url, project, "s")
    assert canonical(expected) == canonical(events + late)

    assert compacted(server.call(server.service.compact(0))) == ["s"]
    assert fetch_events(server.url, project, "s") == expected
    assert [is_session_object(k) for k in store_keys(server)] == [True]


def test_batches_after_compaction_join_the_next_one(make_server):
    server = make_server(compact_grace=0.0)
    project = server.create_project()
    ok(post_batch(server.url, project.token, "s", FIXTURE[:150], batch_id="b1", window_id="w1"))
    server.flush()
    assert compacted(server.call(server.service.compact(0))) == ["s"]
    ok(post_batch(server.url, project.token, "s", FIXTURE[150:], batch_id="b2", window_id="w2"))
    server.flush()
    assert len(block_keys(server, project.id, "s")) == 2  # the session object and a new batch object
    before = fetch_events(server.url, project, "s")
    assert canonical(before) == canonical(FIXTURE)

    assert compacted(server.call(server.service.compact(0))) == ["s"]
    assert fetch_events(server.url, project, "s") == before
    [key] = store_keys(server)  # the first session object went too
    assert block_keys(server, project.id, "s") == {key}


def test_reindex_after_compaction_gives_the_same_sessions_and_events(make_server, tmp_path):
    data = tmp_path / "d"
    server = make_server(data=data, compact_grace=3600.0)  # the replaced objects are still there at reindex
    project = server.create_project()
    for i, part in enumerate(chunks(FIXTURE, 4)):
        ok(post_batch(server.url, project.token, "s", part, batch_id=f"s{i}", window_id=f"tab-{i % 2}", distinct_id="ann"))
        ok(post_batch(server.url, project.token, "t", part[:20], batch_id=f"t{i}"))
        server.flush()
    ok(post_batch(server.url, project.token, "u", FIXTURE[:30], batch_id="u"))
    server.flush()
    assert compacted(server.call(server.service.compact(0, project_id=project.id, session_id="s"))) == ["s"]
    sessions = summaries(server, project)
    events = {sid: fetch_events(server.url, project, sid) for sid in sessions}
    server.stop()

    out = subprocess.run([sys.executable, "-m", "replay", "reindex", "--data", str(data)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    again = make_server(data=data, compact_grace=0.0)
    assert summaries(again, project) == sessions
    assert {sid: fetch_events(again.url, project, sid) for sid in sessions} == events
    assert len({k for k in block_keys(again, project.id, "s")}) == 1

    # The batch objects were shared with t, so none is garbage yet; compacting t and u frees them all.
    assert compacted(again.call(again.service.compact(0))) == ["t", "u"]
    assert all(is_session_object(k) for k in store_keys(again))
    assert {sid: fetch_events(again.url, project, sid) for sid in sessions} == events


def test_background_compactor_takes_idle_sessions_and_leaves_spooled_ones(make_server):
    server = make_server(compact_after=0.5, compact_grace=0.0)
    project = server.create_project()
    ok(post_batch(server.url, project.token, "idle", FIXTURE[:100], batch_id="i1"))
    ok(post_batch(server.url, project.token, "busy", FIXTURE[:60], batch_id="k1"))
    server.flush()
    ok(post_batch(server.url, project.token, "busy", FIXTURE[60:120], batch_id="k2"))  # stays in the spool

    def only_session_objects(sid):
        keys = block_keys(server, project.id, sid)
        return bool(keys) and all(is_session_object(k) for k in keys)

    deadline = time.monotonic() + 30
    while not only_session_objects("idle") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert only_session_objects("idle")
    time.sleep(1.0)  # a few more passes: "busy" is idle in the catalog but has a batch in the spool
    assert not only_session_objects("busy")
    busy = fetch_events(server.url, project, "busy")
    assert canonical(busy) == canonical(FIXTURE[:120])

    server.flush()
    deadline = time.monotonic() + 30
    while not only_session_objects("busy") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert only_session_objects("busy")
    assert fetch_events(server.url, project, "busy") == busy
    assert canonical(fetch_events(server.url, project, "idle")) == canonical(FIXTURE[:100])
    assert not any(not is_session_object(k) for k in store_keys(server))


def test_compact_after_zero_never_compacts_in_the_background(make_server):
    server = make_server(compact_after=0.0, compact_grace=0.0)
    project = server.create_project()
    ok(post_batch(server.url, project.token, "s", FIXTURE[:50], batch_id="b"))
    server.flush()
    time.sleep(0.5)
    assert not any(is_session_object(k) for k in store_keys(server))
    assert server.service.metrics.counters[("replay_compactions_total", ())] == 0
