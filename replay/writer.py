"""BatchObjectWriter: one sealed spool segment becomes one batch object (per retention period).

Order matters for durability: the object is put first, then catalogued in one transaction, and
only then may the spool forget the segment. A crash anywhere in between repeats the work with the
same key on restart, and the catalog ignores an object it already holds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from replay import codec
from replay.catalog.sqlite import SessionDelta, SqliteCatalog
from replay.catalog.summary import EventStats
from replay.spool import Segment, SpooledBatch
from replay.storage import BlobStore


@dataclass
class WrittenObject:
    key: str
    size: int
    blocks: int
    events: int


def batch_object_key(retention_days: int, created_ms: int, node: str, rand: str) -> str:
    """``{retention}d/batches/{yyyy-mm-dd}/{hh}/{unix_ms}-{node}-{rand}``: retention first, for lifecycle rules."""
    t = time.gmtime(created_ms / 1000)
    return f"{retention_days}d/batches/{time.strftime('%Y-%m-%d', t)}/{t.tm_hour:02d}/{created_ms}-{node}-{rand}"


def _build(batches: list[SpooledBatch], node: str, created_ms: int) -> tuple[bytes, codec.Footer, list[SessionDelta]]:
    by_session: dict[tuple[str, str], list[SpooledBatch]] = {}
    for b in batches:
        by_session.setdefault((b.project_id, b.session_id), []).append(b)
    blocks = []
    for (project_id, session_id), group in by_session.items():
        stats = EventStats.combine(b.stats for b in group)
        windows = list(dict.fromkeys(b.window_id for b in group))
        distinct = next((b.distinct_id for b in reversed(group) if b.distinct_id), None)
        meta: dict = {}
        for b in group:
            meta.update(b.meta)
        count = sum(b.count for b in group)
        data = codec.compress_block([b.items for b in group], count)
        entry = codec.BlockEntry(project_id, session_id, 0, 0, count, stats.first_ts or 0, stats.last_ts or 0,
                                 [[b.batch_id, b.count] for b in group], windows, distinct, meta)
        blocks.append((entry, data, stats, group))
    payload, footer = codec.assemble_object([(e, d) for e, d, _, _ in blocks], kind="batch", node=node,
                                            created_ms=created_ms)
    deltas = [SessionDelta(e.project_id, e.session_id, stats, e.distinct_id, e.window_ids, e.meta, e.length, group)
              for e, _d, stats, group in blocks]
    return payload, footer, deltas


def _first_copies(batches: list[SpooledBatch]) -> list[SpooledBatch]:
    """Each batch once: the reader drops copies only across objects, and a session's stats would count them.

    Ingest no longer spools a batch twice, but a spool written before it held a batch from its
    duplicate check until it was on disk may hold two copies accepted at once.
    """
    seen: set[tuple[str, str, str]] = set()
    firsts = []
    for b in batches:
        key = (b.project_id, b.session_id, b.batch_id)
        if key not in seen:
            seen.add(key)
            firsts.append(b)
    return firsts


class BatchObjectWriter:
    def __init__(self, store: BlobStore, catalog: SqliteCatalog, node: str):
        self.store = store
        self.catalog = catalog
        self.node = node

    async def write(self, segment: Segment) -> list[WrittenObject]:
        """Store and catalogue every batch of ``segment``; raises StoreError if the store fails."""
        by_retention: dict[int, list[SpooledBatch]] = {}
        for b in _first_copies(segment.batches):
            by_retention.setdefault(b.retention_days, []).append(b)
        written = []
        for retention, batches in sorted(by_retention.items()):
            # Key derived from the segment, so a retried flush rewrites the same object.
            key = batch_object_key(retention, segment.created_ms, self.node, segment.token)
            payload, footer, deltas = await asyncio.to_thread(_build, batches, self.node, segment.created_ms)
            await self.store.put(key, payload)
            await self.catalog.commit_object(key, footer, len(payload), deltas)
            written.append(WrittenObject(key, len(payload), len(footer.blocks), sum(b.count for b in batches)))
        return written
