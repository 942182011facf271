"""Reassembly: a session's events from its blocks (and the spool), merged by timestamp, each batch once.

Blocks are fetched lazily in time order with a few range GETs in flight ahead of the merge, so
the first full snapshot streams out after one block, and memory holds only the blocks that
overlap the current moment, whatever the session's length.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator

import msgpack
import orjson

from replay import codec
from replay.catalog.records import BlockRow
from replay.spool import SpooledBatch
from replay.storage import BlobStore

Items = list[list[Any]]  # [[window_id, event], ...]


def event_json(event: Any) -> bytes:
    """One stored event as JSON text, however deeply it nests."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError:
        # orjson stops at 255 levels of nesting; ingest accepts 1,024 (a DOM ~130 elements deep
        # is past 255 in rrweb's serialization). Such events are rare: build them without recursion.
        return _json_without_recursion(event)


class _Text(bytes):
    """JSON text already made, on the stack of _json_without_recursion (stored values are never bytes)."""


def _json_without_recursion(value: Any) -> bytes:
    out: list[bytes] = []
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, _Text):
            out.append(v)
        elif isinstance(v, list):
            stack.append(_Text(b"]"))
            for i in range(len(v) - 1, -1, -1):
                stack.append(v[i])
                if i:
                    stack.append(_Text(b","))
            out.append(b"[")
        elif isinstance(v, dict):
            stack.append(_Text(b"}"))
            entries = list(v.items())
            for i in range(len(entries) - 1, -1, -1):
                key, item = entries[i]
                if not isinstance(key, str):
                    raise TypeError(f"event key {key!r} is not a string")
                stack.append(item)
                stack.append(_Text(orjson.dumps(key) + b":"))
                if i:
                    stack.append(_Text(b","))
            out.append(b"{")
        else:
            out.append(orjson.dumps(v))
    return b"".join(out)


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
    # Blocks stored in play order (compacted sessions) stream: items decode as the merge takes them.
    time_ordered: bool = False

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

    async def ordered(self, seen: dict[str, str]) -> Iterator[list[Any]]:
        """This source's items in timestamp order, each batch from the origin that first held it."""
        if self.time_ordered:
            fetched = await self.start()
            self.task = None
            return _streamed(fetched, self.batches, seen, self.origin)
        items = drop_seen_batches(await self.items(), self.batches, seen, self.origin)
        items.sort(key=_timestamp)  # stable: equal timestamps keep their recorded order
        return iter(items)


def _streamed(data: bytes, batches: list[list[Any]], seen: dict[str, str], origin: str) -> Iterator[list[Any]]:
    # Deduplication is decided as each run is reached, with the same rule as drop_seen_batches.
    _count, unpacker = codec.stream_block(data)
    for batch_id, count in batches:
        if seen.setdefault(batch_id, origin) == origin:
            for _ in range(count):
                yield unpacker.unpack()
        else:
            for _ in range(count):
                unpacker.skip()


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
    tie = itertools.count()  # keeps equal timestamps of one source in their stored order
    heap: list[tuple[int, int, int, list[Any], Iterator[list[Any]]]] = []

    def push(order: int, rest: Iterator[list[Any]]) -> None:
        item = next(rest, None)
        if item is not None:
            heapq.heappush(heap, (_timestamp(item), order, next(tie), item, rest))

    try:
        while pending or heap:
            while pending and (not heap or pending[0].first_ts <= heap[0][0]):
                src = pending.popleft()
                for ahead in list(pending)[:prefetch]:
                    ahead.start()
                push(src.order, await src.ordered(seen))
            _ts, order, _tie, item, rest = heapq.heappop(heap)
            yield item
            push(order, rest)
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

    sources = [_Source(row.first_ts, i, row.batches, from_store(row), row.object_key, decode=decode,
                       time_ordered=row.time_ordered)
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
