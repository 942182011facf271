"""Rebuilding the session and block index from the blob footers alone (``replay reindex``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from replay import codec
from replay.catalog.sqlite import BatchDelta, SessionDelta, SqliteCatalog
from replay.catalog.summary import EventStats, summarize
from replay.storage import BlobStore


async def read_footer(store: BlobStore, key: str, size: int) -> codec.Footer:
    trailer = await store.get(key, size - codec.TRAILER.size, size)
    length = codec.footer_length(trailer)
    start = size - codec.TRAILER.size - length
    if start < 0:
        raise codec.CorruptObject(f"{key}: footer longer than the object")
    return codec.parse_footer(await store.get(key, start, size - codec.TRAILER.size))


@dataclass
class RebuildReport:
    objects: int = 0
    blocks: int = 0
    sessions: int = 0
    skipped: int = 0  # objects that are not ours or do not decode


async def _deltas(store: BlobStore, key: str, footer: codec.Footer, keep: list[codec.BlockEntry]) -> list[SessionDelta]:
    deltas = []
    for entry in keep:
        data = await store.get(key, entry.offset, entry.offset + entry.length)
        items, sizes = await asyncio.to_thread(codec.sized_items, data)
        batches = _batch_deltas(entry, items, sizes)
        # Combined per batch, as a flush combines them (not one summary of the whole block).
        deltas.append(SessionDelta(entry.project_id, entry.session_id, EventStats.combine(b.stats for b in batches),
                                   entry.distinct_id, entry.window_ids, entry.meta, entry.length, batches))
    return deltas


def _batch_deltas(entry: codec.BlockEntry, items: list, sizes: list[int]) -> list[BatchDelta]:
    deltas, pos = [], 0
    for batch_id, count in entry.batches:
        deltas.append(BatchDelta(str(batch_id), summarize(event for _w, event in items[pos:pos + count]),
                                 sum(sizes[pos:pos + count])))
        pos += count
    return deltas


def superseded_session_objects(footers: list[tuple[str, int, codec.Footer]]) -> set[str]:
    """Session objects whose every batch a newer session object of the same session holds too.

    A compaction that crashes before its swap leaves such an object; when the session is compacted
    again, the newer object holds everything the old one does, so a rebuild keeps only the newer.
    """
    by_session: dict[tuple[str, str], list[tuple[int, str, set[str]]]] = {}
    for key, _size, f in footers:
        sessions = {(b.project_id, b.session_id) for b in f.blocks}
        if f.kind == "session" and len(sessions) == 1:
            ids = {str(bid) for b in f.blocks for bid, _n in b.batches}
            by_session.setdefault(sessions.pop(), []).append((f.created_ms, key, ids))
    out = set()
    for objects in by_session.values():
        objects.sort()
        for i, (_c, key, ids) in enumerate(objects):
            if any(ids <= newer for _c2, _k2, newer in objects[i + 1:]):
                out.add(key)
    return out


async def rebuild_index(store: BlobStore, catalog: SqliteCatalog,
                        progress: Callable[[str], None] | None = None) -> RebuildReport:
    """Forget the derived index and rebuild it from every object's footer.

    Session objects (from compaction) name the blocks they replace; those blocks are skipped, so
    a rebuild prefers the compacted copy, and a batch object whose blocks are all replaced is left out
    (recorded as garbage, for compaction to delete).
    """
    report = RebuildReport()
    footers: list[tuple[str, int, codec.Footer]] = []
    async for info in store.list(""):
        try:
            footers.append((info.key, info.size, await read_footer(store, info.key, info.size)))
        except (codec.CorruptObject, KeyError):
            report.skipped += 1
    replaced = {(k, o) for _key, _size, f in footers if f.kind == "session" for k, o in f.replaces}
    superseded = superseded_session_objects(footers)
    replaced |= {(key, b.offset) for key, _size, f in footers if key in superseded for b in f.blocks}
    garbage = []
    await catalog.clear_index()
    sessions = set()
    for key, size, footer in sorted(footers, key=lambda x: x[2].created_ms):
        keep = [b for b in footer.blocks if (key, b.offset) not in replaced]
        if not keep:
            garbage.append(key)
            continue
        deltas = await _deltas(store, key, footer, keep)
        footer = codec.Footer(footer.kind, footer.node, footer.created_ms, keep, footer.replaces)
        await catalog.commit_object(key, footer, size, deltas)
        report.objects += 1
        report.blocks += len(keep)
        sessions.update((b.project_id, b.session_id) for b in keep)
        if progress:
            progress(key)
    await catalog.mark_garbage(garbage)
    report.sessions = len(sessions)
    return report
