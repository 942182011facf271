"""Compaction: an idle session's blocks become ONE session object.

Hot blocks are zstd-3 frames written as fast as a flush allows. Once a session has been idle for
a while, its blocks are rewritten into one object: the events in exactly the order playback gives
them (each batch once), cut into frames of about ``FRAME_BYTES`` of msgpack, each compressed at
``SESSION_LEVEL`` with long-distance matching. The first frame starts with the session's first
full snapshot, so playback starts after one small range GET, and the whole session is a few range
GETs of one object. The layout is codec's (``kind="session"``), so the reader needs nothing new.

Crash safety comes from the order of the steps; a crash between any two leaves a correct state:

1. put the session object. A crash after it leaves an *orphan* no catalog row points at. Its
   footer names the blocks it replaces and it holds all their events, so ``replay reindex`` may
   prefer it (or, once the session is compacted again, the newer object holding all it holds);
   the live catalog ignores it, and an orphan sweep (hourly in the service, every run of
   ``replay compact``) deletes orphans older than ``orphan_grace``. A compactor never swaps in
   an object older than half that, so a sweep cannot delete an object about to be used.
2. swap the session's block rows for the object's in one catalog transaction, only if the
   session's blocks are still those read at the start (blocks that arrived meanwhile leave the
   old rows in place; the new object is deleted and the session waits for the next pass).
3. delete batch objects no block references any more, ``grace`` seconds after the swap so that
   readers in flight can finish. A crash before it leaves objects the catalog records as
   garbage; the next pass deletes them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import msgpack
import zstandard

from replay import codec
from replay.catalog.records import BlockRow, SessionSummary
from replay.catalog.sqlite import SqliteCatalog
from replay.playback import labelled_items
from replay.storage import BlobStore

log = logging.getLogger(__name__)

# Chosen by measurement (bench/compaction_levels.py; figures in README). On the recorded corpus,
# level 19 stores 0.35x of gzip-6 against 0.38x at 16 and 0.44x at 9, for ~2.5x and ~40x the CPU
# (~1.1-1.4 MB/s of msgpack per core): paid once per session, off the ingest path, at low priority,
# while the bytes are kept for the whole retention period.
SESSION_LEVEL = 19
# Frames of ~4 MiB of msgpack: 7% larger than one frame for the whole session (0.377x vs 0.352x),
# but the reader decodes a whole frame before its first event (~0.1 s for 4 MiB here, twice that for
# 8 MiB; msgpack and the garbage collector hold the GIL meanwhile, so the event loop waits too), and
# a decoded frame is ~6x its msgpack size (25 MiB for 4 MiB).
FRAME_BYTES = 4 * 1024 * 1024
MAX_WINDOW_LOG = 27  # the largest window zstd decoders accept without being told to
ORPHAN_GRACE = 3600.0  # seconds an unreferenced session object may be a compaction in progress
_RETENTION = re.compile(r"^(\d+)d/")


class Counters(Protocol):
    def inc(self, name: str, by: float = 1, **labels: str) -> None: ...


def session_object_key(retention_days: int, project_id: str, session_id: str, created_ms: int, node: str,
                       rand: str) -> str:
    """``{retention}d/sessions/{project}/{session}/{unix_ms}-{node}-{rand}``: retention first, like batches,
    and one prefix per session, so that all objects a session ever had can be listed."""
    return f"{session_prefix(retention_days, project_id, session_id)}{created_ms}-{node}-{rand}"


def session_prefix(retention_days: int, project_id: str, session_id: str) -> str:
    return f"{retention_days}d/sessions/{quote(project_id, safe='-_.')}/{quote(session_id, safe='-_.')}/"


def is_session_object(key: str) -> bool:
    return key.split("/")[1:2] == ["sessions"]


def created_ms_of(key: str) -> int | None:
    """The creation time a session object's key carries (None for keys not laid out by us)."""
    head = key.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def retention_of(keys: list[str], default: int) -> int:
    """The shortest retention among the objects a session lives in: compaction never extends it."""
    found = [int(m.group(1)) for m in map(_RETENTION.match, keys) if m]
    return min(found) if found else default


def _lower_priority() -> None:
    """Make this worker thread yield the CPU to ingest (Linux applies niceness per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def compress_frame(raw: bytes, level: int) -> bytes:
    """One zstd frame with long-distance matching and a window covering the whole frame."""
    window_log = max(zstandard.WINDOWLOG_MIN, min(MAX_WINDOW_LOG, (max(len(raw), 1) - 1).bit_length()))
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=len(raw), enable_ldm=True, window_log=window_log)
    return zstandard.ZstdCompressor(compression_params=params).compress(raw)


@dataclass
class _Frame:
    """Events gathered for one block of the session object, in playback order."""

    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    runs: list[list[Any]] = field(default_factory=list)  # [[batch_id, count], ...] in stored order
    windows: set[str] = field(default_factory=set)
    first_ts: int = 0
    last_ts: int = 0

    def add(self, batch_id: str, item: list[Any]) -> None:
        packed = msgpack.packb(item, use_bin_type=True)
        ts = item[1]["timestamp"]
        if not self.parts:
            self.first_ts = ts
        self.last_ts = ts
        self.parts.append(packed)
        self.size += len(packed)
        self.windows.add(item[0])
        if self.runs and self.runs[-1][0] == batch_id:
            self.runs[-1][1] += 1
        else:
            self.runs.append([batch_id, 1])


def _seal(frame: _Frame, level: int, project_id: str, session_id: str,
          summary: SessionSummary | None) -> tuple[codec.BlockEntry, bytes]:
    data = compress_frame(b"".join([codec.array_header(len(frame.parts)), *frame.parts]), level)
    order = {w: i for i, w in enumerate(summary.window_ids if summary else [])}
    windows = sorted(frame.windows, key=lambda w: (order.get(w, len(order)), w))
    entry = codec.BlockEntry(project_id, session_id, 0, 0, len(frame.parts), frame.first_ts, frame.last_ts,
                             frame.runs, windows, summary.distinct_id if summary else None,
                             dict(summary.meta) if summary else {})
    return entry, data


async def build_session_object(store: BlobStore, rows: list[BlockRow], summary: SessionSummary | None, *,
                               project_id: str, session_id: str, node: str, created_ms: int,
                               level: int = SESSION_LEVEL, frame_bytes: int = FRAME_BYTES,
                               executor: Executor | None = None) -> tuple[bytes, codec.Footer]:
    """The session object replacing ``rows``: what the reader plays from them, re-framed and recompressed.

    Streams: only the frame being filled and the source blocks that overlap it are in memory.
    Frames are compressed on ``executor`` (zstd releases the GIL, so the loop keeps serving).
    """
    loop = asyncio.get_running_loop()
    blocks: list[tuple[codec.BlockEntry, bytes]] = []
    frame = _Frame()
    n = 0
    async for batch_id, item in labelled_items(store, rows):
        frame.add(batch_id, item)
        n += 1
        if frame.size >= frame_bytes:
            blocks.append(await loop.run_in_executor(executor, _seal, frame, level, project_id, session_id, summary))
            frame = _Frame()
        elif n % 2000 == 0:
            await asyncio.sleep(0)  # a long run of small events must not hold the loop
    if frame.parts:
        blocks.append(await loop.run_in_executor(executor, _seal, frame, level, project_id, session_id, summary))
    return codec.assemble_object(blocks, kind="session", node=node, created_ms=created_ms,
                                 replaces=[[r.object_key, r.offset] for r in rows])


@dataclass
class CompactionResult:
    project_id: str
    session_id: str
    outcome: str  # "compacted", "refused" (blocks changed meanwhile), "already" (one session object), "empty"
    key: str | None = None
    blocks_before: int = 0
    objects_before: int = 0
    bytes_before: int = 0  # stored block bytes replaced
    blocks_after: int = 0
    bytes_after: int = 0  # stored block bytes of the session object
    events: int = 0
    freed: list[str] = field(default_factory=list)  # objects no block references any more


@dataclass
class PassReport:
    results: list[CompactionResult] = field(default_factory=list)
    failed: int = 0
    deleted: int = 0  # unreferenced batch (or replaced session) objects deleted
    orphans_deleted: int = 0

    @property
    def compacted(self) -> list[CompactionResult]:
        return [r for r in self.results if r.outcome == "compacted"]


class Compactor:
    def __init__(self, store: BlobStore, catalog: SqliteCatalog, node: str, *, level: int = SESSION_LEVEL,
                 frame_bytes: int = FRAME_BYTES, grace: float = 300.0, orphan_grace: float = ORPHAN_GRACE,
                 default_retention: int = 30, metrics: Counters | None = None):
        self.store = store
        self.catalog = catalog
        self.node = node
        self.level = level
        self.frame_bytes = frame_bytes
        self.grace = grace
        self.orphan_grace = orphan_grace
        self.default_retention = default_retention
        self.metrics = metrics
        # One worker: compaction uses at most one core, at low priority, whatever the backlog.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compact", initializer=_lower_priority)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _inc(self, name: str, by: float = 1) -> None:
        if self.metrics is not None:
            self.metrics.inc(name, by)

    async def run_pass(self, idle_seconds: float, *, project_id: str | None = None, session_id: str | None = None,
                       skip: set[tuple[str, str]] | frozenset = frozenset(), limit: int = 100,
                       sweep_orphans: bool = False) -> PassReport:
        """Compact sessions idle for ``idle_seconds`` (by the time their last block was catalogued),
        except those in ``skip`` (still in a spool); then delete what is due. Raises StoreError."""
        report = PassReport()
        idle_before = int((time.time() - idle_seconds) * 1000)
        candidates = await self.catalog.compaction_candidates(idle_before, project_id, session_id, limit)
        for p, s in candidates:
            if (p, s) in skip:
                continue
            try:
                result = await self.compact_session(p, s)
            except (KeyError, codec.CorruptObject) as exc:
                # A block the catalog lists cannot be read: leave the session as it is, for a person to see.
                log.error("compaction of %s/%s skipped, a block does not read: %r", p, s, exc)
                self._inc("replay_compaction_errors_total")
                report.failed += 1
                continue
            report.results.append(result)
        report.deleted = await self.delete_garbage()
        if sweep_orphans:
            retentions = {p.retention_days for p in await self.catalog.projects()} | {self.default_retention}
            report.orphans_deleted = await self.delete_orphans([f"{r}d/sessions/" for r in sorted(retentions)])
        return report

    async def compact_session(self, project_id: str, session_id: str) -> CompactionResult:
        """Rewrite one session's blocks into one session object and swap it in (see the module doc)."""
        rows = await self.catalog.blocks(project_id, session_id)
        result = CompactionResult(project_id, session_id, "empty")
        if not rows:
            return result
        keys = list(dict.fromkeys(r.object_key for r in rows))
        result.blocks_before, result.objects_before = len(rows), len(keys)
        result.bytes_before = sum(r.length for r in rows)
        if len(keys) == 1 and is_session_object(keys[0]):
            result.outcome = "already"
            return result
        log.debug("compacting %s/%s: %d blocks in %d objects", project_id, session_id, len(rows), len(keys))
        retention = retention_of(keys, self.default_retention)
        started = time.monotonic()
        created_ms = int(time.time() * 1000)
        key = session_object_key(retention, project_id, session_id, created_ms, self.node, secrets.token_hex(4))
        summary = await self.catalog.session(project_id, session_id)
        payload, footer = await build_session_object(
            self.store, rows, summary, project_id=project_id, session_id=session_id, node=self.node,
            created_ms=created_ms, level=self.level, frame_bytes=self.frame_bytes, executor=self._executor)
        await self.store.put(key, payload)
        result.key = key
        result.blocks_after = len(footer.blocks)
        result.bytes_after = sum(b.length for b in footer.blocks)
        result.events = sum(b.event_count for b in footer.blocks)

        freed = None
        if self.orphan_grace <= 0 or time.time() * 1000 - created_ms < self.orphan_grace * 500:
            freed = await self.catalog.swap_session_blocks(project_id, session_id, key, footer, len(payload),
                                                           [[r.object_key, r.offset] for r in rows])
        if freed is None:
            # Blocks arrived meanwhile (or this took so long an orphan sweep may count the object as
            # abandoned): the old rows stay, and the object we wrote must not linger.
            await self.store.delete(key)
            result.outcome = "refused"
            self._inc("replay_compaction_refused_total")
            log.info("compaction of %s/%s refused: its blocks changed meanwhile", project_id, session_id)
            return result
        result.outcome, result.freed = "compacted", freed
        self._inc("replay_compactions_total")
        self._inc("replay_compaction_events_total", result.events)
        self._inc("replay_compaction_bytes_before_total", result.bytes_before)
        self._inc("replay_compaction_bytes_after_total", result.bytes_after)
        log.info("compacted %s/%s: %d blocks in %d objects, %d -> %d bytes, %d events, %.2f s",
                 project_id, session_id, result.blocks_before, result.objects_before, result.bytes_before,
                 result.bytes_after, result.events, time.monotonic() - started)
        return result

    async def delete_garbage(self) -> int:
        """Delete objects no block has referenced for ``grace`` seconds; returns how many."""
        due = await self.catalog.garbage_due(int((time.time() - self.grace) * 1000))
        deleted: list[str] = []
        try:
            for key in due:
                await self.store.delete(key)
                deleted.append(key)
        finally:
            if deleted:
                await self.catalog.forget_objects(deleted)
                self._inc("replay_compaction_objects_deleted_total", len(deleted))
        return len(deleted)

    async def delete_orphans(self, prefixes: list[str]) -> int:
        """Delete session objects under ``prefixes`` that no catalog row knows and that are older than
        ``orphan_grace`` (left by a compaction that crashed before its swap)."""
        cutoff = (time.time() - self.orphan_grace) * 1000
        old = []
        for prefix in prefixes:
            async for info in self.store.list(prefix):
                created = created_ms_of(info.key)
                if created is not None and created <= cutoff and is_session_object(info.key):
                    old.append(info.key)
        if not old:
            return 0
        known = await self.catalog.known_objects(old)
        orphans = [k for k in old if k not in known]
        for key in orphans:
            await self.store.delete(key)
        if orphans:
            log.info("deleted %d orphan session objects", len(orphans))
            self._inc("replay_compaction_orphans_deleted_total", len(orphans))
        return len(orphans)
