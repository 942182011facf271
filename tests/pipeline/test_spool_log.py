"""The spool's log format: what one version writes, the next recovers."""

from __future__ import annotations

import os
import time
import zlib

import msgpack

from harness import fetch_events, load_fixture_events, post_batch
from replay import codec
from replay.catalog.summary import summarize
from replay.spool import FRAME, SpooledBatch, _write_all, read_segment

FIXTURE = load_fixture_events()


def old_record(b: SpooledBatch) -> bytes:
    """A log frame as the spool wrote it before events were written apart (one map, "e" in the middle)."""
    body = msgpack.packb({
        "p": b.project_id, "s": b.session_id, "w": b.window_id, "b": b.batch_id, "d": b.distinct_id,
        "n": b.count, "e": b.items, "x": b.stats.to_dict(), "m": b.meta, "r": b.retention_days,
        "t": b.received_ms}, use_bin_type=True)
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def batch(project_id: str, batch_id: str, events: list[dict]) -> SpooledBatch:
    return SpooledBatch(project_id, "s1", "w1", batch_id, "ann", len(events), codec.pack_items("w1", events),
                        summarize(events), {"ua": "x"}, 30, int(time.time() * 1000))


def test_a_record_is_one_msgpack_map_checked_by_zlibs_crc32():
    for events in (FIXTURE[:1], FIXTURE[:3], FIXTURE[:60], FIXTURE):  # bin 8, 16 and 32 headers
        b = batch("p", "b1", events)
        framed = b"".join(b.to_record())
        length, crc = FRAME.unpack_from(framed)
        body = framed[FRAME.size:]
        assert length == len(body) and crc == zlib.crc32(body)
        assert msgpack.unpackb(old_record(b)[FRAME.size:]) == msgpack.unpackb(body)


def test_a_log_written_by_the_previous_format_is_recovered_and_played(make_server, tmp_path):
    data = tmp_path / "data"
    server = make_server(data=data)
    project = server.create_project()
    server.stop()
    # Two records in the old framing, then one in the new: a log an upgrade finds mid-segment.
    parts = FIXTURE[:100], FIXTURE[100:200], FIXTURE[200:]
    segment = data / "spool" / f"{999:012d}-{int(time.time() * 1000)}-abcd1234.wal"
    segment.write_bytes(old_record(batch(project.id, "b0", parts[0])) + old_record(batch(project.id, "b1", parts[1]))
                        + b"".join(batch(project.id, "b2", parts[2]).to_record()))
    assert [b.batch_id for b in read_segment(segment)[0]] == ["b0", "b1", "b2"]
    server = make_server(data=data)
    server.flush()
    assert fetch_events(server.url, project, "s1") == FIXTURE
    # And the log goes on after them: an upload now is kept next to what was recovered.
    assert post_batch(server.url, project.token, "s2", FIXTURE[:5], batch_id="later").status_code == 200
    server.flush()
    assert fetch_events(server.url, project, "s2") == FIXTURE[:5]


def test_write_all_writes_more_parts_than_one_system_call_takes(tmp_path):
    parts = [os.urandom(n % 97) for n in range(5000)]  # empty parts too; IOV_MAX is 1,024 on Linux
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        _write_all(fd, parts[:2500])
        _write_all(fd, parts[2500:])
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(parts)
