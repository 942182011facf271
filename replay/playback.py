"""Reassembly: a session's events from its blocks (and the spool), merged by timestamp, each batch once.

Blocks are fetched lazily in time order with a few range GETs in flight ahead of the merge, so
the first full snapshot streams out after one block, and memory holds only the blocks that
overlap the current moment, whatever the session's length.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import msgpack

from replay import codec
from replay.catalog.records import BlockRow
from replay.spool import SpooledBatch
from replay.storage import BlobStore

Items = list[list[Any]]  # [[window_id, event], ...]


@dataclass
class _Source:
    first_ts: int
    order: int
    batches: list[list[Any]]  # [[batch_id, count], ...] in stored order
    fetch: Callable[[], Awaitable[Any]]  # the items, or with ``decode`` the stored bytes
    origin: str  # the object (or spooled batch) it comes from; see drop_seen_batches
    task: asyncio.Task | None = None
    # With ``decode``, ``fetch`` only gets the stored bytes (that is what runs ahead) and ``decode``
    # turns them into items when the merge reaches this source: a decoded block is many times its
    # stored size, so decoding ahead would hold several in memory and fight for the CPU.
    decode: Callable[[Any], Awaitable[Items]] | None = None

    def start(self) -> asyncio.Task:
        if self.task is None:
            self.task = asyncio.ensure_future(self.fetch())
        return self.task

    async def items(self) -> Items:
        fetched = await self.start()
        # The caller's list of sources lives until the stream ends, and a finished task keeps its
        # result: without this every block stayed in memory to the last event.
        self.task = None
        return await self.decode(fetched) if self.decode is not None else fetched


def drop_seen_batches(items: Items, batches: list[list[Any]], seen: dict[str, str], origin: str) -> Items:
    """Items of batches first seen in ``origin`` (marking them seen): a batch stored twice plays once.

    A compacted session object stores events in time order, so one batch of a busy tab may form
    several runs, in several blocks, of that one object: every run from the origin that first held
    the batch plays; copies of it in any other object or the spool are dropped.
    """
    kept: Items = []
    pos = 0
    for batch_id, count in batches:
        if seen.setdefault(batch_id, origin) == origin:
            kept.extend(items[pos:pos + count])
        pos += count
    return kept


def _timestamp(item: list[Any]) -> int:
    return item[1]["timestamp"]


async def merged_items(sources: list[_Source], prefetch: int) -> AsyncIterator[list[Any]]:
    pending = deque(sorted(sources, key=lambda s: (s.first_ts, s.order)))
    seen: dict[str, str] = {}
    heap: list[tuple[int, int, int, Items]] = []
    try:
        while pending or heap:
            while pending and (not heap or pending[0].first_ts <= heap[0][0]):
                src = pending.popleft()
                for ahead in list(pending)[:prefetch]:
                    ahead.start()
                items = drop_seen_batches(await src.items(), src.batches, seen, src.origin)
                items.sort(key=_timestamp)  # stable: equal timestamps keep their recorded order
                if items:
                    heapq.heappush(heap, (_timestamp(items[0]), src.order, 0, items))
            ts, order, index, items = heapq.heappop(heap)
            yield items[index]
            if index + 1 < len(items):
                heapq.heappush(heap, (_timestamp(items[index + 1]), order, index + 1, items))
    finally:
        for src in pending:
            if src.task is not None:
                src.task.cancel()


async def session_items(store: BlobStore, blocks: list[BlockRow], spooled: Iterable[SpooledBatch],
                        prefetch: int = 4) -> AsyncIterator[list[Any]]:
    """``[window_id, event]`` pairs of a session in timestamp order, duplicates dropped."""

    def from_store(row: BlockRow) -> Callable[[], Awaitable[bytes]]:
        async def fetch() -> bytes:
            return await store.get(row.object_key, row.offset, row.offset + row.length)
        return fetch

    async def decode(data: bytes) -> Items:
        return await asyncio.to_thread(codec.decompress_block, data)

    def from_spool(b: SpooledBatch) -> Callable[[], Awaitable[Items]]:
        async def fetch() -> Items:
            return msgpack.unpackb(codec.array_header(b.count) + b.items, raw=False, strict_map_key=False)
        return fetch

    sources = [_Source(row.first_ts, i, row.batches, from_store(row), row.object_key, decode=decode)
               for i, row in enumerate(blocks)]
    for b in spooled:
        sources.append(_Source(b.stats.first_ts or 0, len(sources), [[b.batch_id, b.count]], from_spool(b),
                               f"spool:{len(sources)}"))
    async for item in merged_items(sources, prefetch):
        yield item


async def labelled_items(store: BlobStore, blocks: list[BlockRow], prefetch: int = 4) -> AsyncIterator[tuple[str, list[Any]]]:
    """``(batch_id, [window_id, event])`` of stored blocks in exactly the order ``session_items`` plays
    them, duplicates dropped the same way: what compaction rewrites."""

    def from_store(row: BlockRow) -> Callable[[], Awaitable[bytes]]:
        async def fetch() -> bytes:
            return await store.get(row.object_key, row.offset, row.offset + row.length)
        return fetch

    def labelled(row: BlockRow) -> Callable[[bytes], Awaitable[Items]]:
        async def decode(data: bytes) -> Items:
            items = await asyncio.to_thread(codec.decompress_block, data)
            pos = 0
            for batch_id, count in row.batches:
                for item in items[pos:pos + count]:
                    item.append(batch_id)  # [window_id, event, batch_id]: the merge only reads item[1]
                pos += count
            return items
        return decode

    sources = [_Source(row.first_ts, i, row.batches, from_store(row), row.object_key, decode=labelled(row))
               for i, row in enumerate(blocks)]
    async for window_id, event, batch_id in merged_items(sources, prefetch):
        yield batch_id, [window_id, event]
