"""A compaction killed halfway loses nothing: `replay compact` runs as a real process and is SIGKILLed
at a real point of its work, held there by the outside world rather than by a hook in our code.

- between the put and the catalog swap: the test holds SQLite's write lock, so the compactor has
  stored its session object and waits for the catalog when it dies;
- between the swap and the deletes: the S3 server (moto, its own process) is frozen with SIGSTOP,
  so the compactor has swapped the catalog rows and hangs deleting the replaced objects.

After each crash, every session exports the same events (``replay export``), later runs finish
the job, and ``replay reindex`` still yields the same sessions and events.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import ROOT, load_fixture_events, post_batch
from replay.compaction import Compactor, is_session_object
from replay.config import settings_from
from replay.service import Service

FIXTURE = load_fixture_events()


def chunks(events, n):
    size = -(-len(events) // n)
    return [events[i:i + size] for i in range(0, len(events), size)]


def replay_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "replay", *args], capture_output=True, text=True, cwd=ROOT,
                         timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def exports(store_args: list[str], project_id: str, sessions: list[str]) -> dict[str, list]:
    return {sid: json.loads(replay_cli("export", *store_args, "--project", project_id, "--session", sid).stdout)
            for sid in sessions}


def catalog_rows(data: Path, sql: str, *args) -> list[tuple]:
    db = sqlite3.connect(data / "catalog.sqlite3", timeout=5)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def block_keys(data: Path, session_id: str) -> set[str]:
    return {r[0] for r in catalog_rows(data, "SELECT object_key FROM blocks WHERE session_id=?", session_id)}


def summaries(data: Path) -> list[tuple]:
    cols = "session_id, distinct_id, window_ids, start_ts, end_ts, event_count, size_bytes, clicks, keypresses, first_url"
    return catalog_rows(data, f"SELECT {cols} FROM sessions ORDER BY session_id")


class CatalogWriteLock:
    """Another connection's write transaction: catalog writers wait (SQLite busy timeout), readers go on."""

    def __init__(self, data: Path):
        self.db = sqlite3.connect(data / "catalog.sqlite3", isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.db is not None:
            self.db.execute("ROLLBACK")
            self.db.close()
            self.db = None


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def record_sessions(server) -> str:
    """Session s in four batch objects over two tabs; t shares the first object with s."""
    project = server.create_project()
    for i, part in enumerate(chunks(FIXTURE, 4)):
        assert post_batch(server.url, project.token, "s", part, batch_id=f"s{i}", window_id=f"tab-{i % 2}").status_code == 200
        if i == 0:
            assert post_batch(server.url, project.token, "t", FIXTURE[:40], batch_id="t0").status_code == 200
        server.flush()
    return project.id


@contextmanager
def compactor_held_at_swap(data: Path, store_args: list[str], project_id: str
                           ) -> Iterator[tuple[CatalogWriteLock, subprocess.Popen]]:
    """`replay compact` of session s while the catalog is write-locked (it stops before its swap).

    Yields the lock and the process; on the way out the lock is released and the process killed.
    """
    lock = CatalogWriteLock(data)
    proc = subprocess.Popen([sys.executable, "-m", "replay", "compact", "--data", str(data), *store_args,
                             "--project", project_id, "--session", "s", "--idle", "0", "--compact-grace", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        yield lock, proc
    finally:
        lock.release()
        if proc.poll() is None:
            proc.kill()


def session_files(data: Path) -> list[Path]:
    """Stored session objects (a put in flight is a dot-file until its rename makes it whole)."""
    return sorted(p for p in (data / "blobs").rglob("*")
                  if p.is_file() and "sessions" in p.parts and not p.name.startswith("."))


@pytest.mark.parametrize("then", ["reindex", "compact"])
def test_kill_between_put_and_catalog_swap_loses_nothing(make_server, tmp_path, then):
    data = tmp_path / "d"
    server = make_server(data=data)
    project_id = record_sessions(server)
    server.stop()
    store_args = ["--data", str(data)]
    before = exports(store_args, project_id, ["s", "t"])
    old_blocks = block_keys(data, "s")
    summary = summaries(data)

    with compactor_held_at_swap(data, [], project_id) as (_lock, proc):
        [orphan] = wait_for(lambda: session_files(data), what="the session object")
        proc.kill()
        proc.wait(10)

    # The catalog never saw the new object: every session plays from its old blocks, unchanged.
    assert block_keys(data, "s") == old_blocks
    assert exports(store_args, project_id, ["s", "t"]) == before

    if then == "reindex":
        # A rebuild prefers the orphan: it holds every event of the blocks it replaces.
        replay_cli("reindex", *store_args)
        assert block_keys(data, "s") == {orphan.relative_to(data / "blobs").as_posix()}
        assert exports(store_args, project_id, ["s", "t"]) == before
        assert summaries(data) == summary
        # Batch objects only s used are garbage now; the next run deletes them and nothing changes.
        out = replay_cli("compact", *store_args, "--idle", "0", "--compact-grace", "0", "--project", project_id,
                         "--session", "s")
        assert "deleted 3 replaced objects" in out.stdout
    else:
        # The next run compacts again with a new object; the orphan is too young to be known abandoned.
        replay_cli("compact", *store_args, "--idle", "0", "--compact-grace", "0", "--project", project_id,
                   "--session", "s")
        [key] = block_keys(data, "s")
        assert is_session_object(key) and key != orphan.relative_to(data / "blobs").as_posix()
        assert orphan.exists()
        assert exports(store_args, project_id, ["s", "t"]) == before
        # Reindex with both on disk: the newer object holds every batch of the orphan, so it wins.
        replay_cli("reindex", *store_args)
        assert block_keys(data, "s") == {key}
        assert exports(store_args, project_id, ["s", "t"]) == before
        assert summaries(data) == summary
        # Once past the grace period an orphan is deleted (here: a compactor told it is over).
        assert asyncio.run(_sweep_orphans(data)) == 1 or not orphan.exists()
        assert not orphan.exists()
    assert exports(store_args, project_id, ["s", "t"]) == before
    assert len(session_files(data)) == 1


async def _sweep_orphans(data: Path) -> int:
    service = Service(settings_from(environ={}, data=data))
    await service.catalog.open()
    try:
        compactor = Compactor(service.store, service.catalog, "test", orphan_grace=0, grace=0)
        report = await compactor.run_pass(10 ** 9, sweep_orphans=True)
        return report.orphans_deleted + report.deleted
    finally:
        await service.catalog.close()
        await service.store.close()


def test_kill_between_catalog_swap_and_deletes_on_s3_loses_nothing(make_server, tmp_path, moto_process):
    data = tmp_path / "d"
    bucket = moto_process.bucket()
    s3 = {"blob_url": f"s3://{bucket}/replay", "s3_endpoint_url": moto_process.endpoint, "s3_region": "us-east-1",
          "s3_path_style": True}
    store_args = ["--blob-url", s3["blob_url"], "--s3-endpoint-url", moto_process.endpoint,
                  "--s3-region", "us-east-1", "--s3-path-style"]
    server = make_server(data=data, **s3)
    project_id = record_sessions(server)
    server.stop()
    args = ["--data", str(data), *store_args]
    before = exports(args, project_id, ["s", "t"])
    batch_objects = {k for k in moto_process.keys(bucket)}
    shared = {k for k, in catalog_rows(data, "SELECT object_key FROM blocks WHERE session_id='t'")}
    summary = summaries(data)

    try:
        with compactor_held_at_swap(data, store_args, project_id) as (lock, proc):
            wait_for(lambda: any("/sessions/" in k for k in moto_process.keys(bucket)), what="the session object")
            moto_process.freeze()  # the store stops answering: the deletes after the swap will hang
            lock.release()
            wait_for(lambda: all(is_session_object(k) for k in block_keys(data, "s")), what="the catalog swap")
            proc.kill()
            proc.wait(10)
    finally:
        moto_process.thaw()

    # Swapped, not cleaned up: s plays from its session object, the replaced objects are recorded as garbage.
    [key] = block_keys(data, "s")
    garbage = {k for k, in catalog_rows(data, "SELECT key FROM garbage")}
    assert garbage == {k.removeprefix("replay/") for k in batch_objects} - shared
    assert exports(args, project_id, ["s", "t"]) == before
    assert summaries(data) == summary

    # The next run deletes them (here the compactor has no session left to compact).
    out = replay_cli("compact", *args, "--idle", "0", "--compact-grace", "0", "--project", project_id,
                     "--session", "s")
    assert "compacted 0 sessions" in out.stdout
    keys = {k.removeprefix("replay/") for k in moto_process.keys(bucket)}
    assert keys == shared | {key}
    assert catalog_rows(data, "SELECT key FROM garbage") == []
    assert exports(args, project_id, ["s", "t"]) == before

    replay_cli("reindex", *args)
    assert block_keys(data, "s") == {key}
    assert exports(args, project_id, ["s", "t"]) == before
    assert summaries(data) == summary
