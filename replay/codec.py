"""Stored formats: blocks, batch objects and session objects.

A *block* is one zstd frame holding the msgpack array ``[[window_id, event], ...]`` of one
session. An *object* is ``[block][block]...[footer][trailer]``: the footer is a msgpack map that
lists every block (session, byte range, time range, batch ids), so the catalog can be rebuilt from
the objects alone; the trailer is the footer's length and a magic number, read with one ranged GET.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field
from typing import Any

import msgpack
import msgspec
import zstandard

MAGIC = b"RPL1"
TRAILER = struct.Struct("<I4s")
HOT_LEVEL = 3


class CorruptObject(ValueError):
    """An object or block does not decode: never written by us, or damaged."""


@dataclass
class BlockEntry:
    """One block's footer entry; ``batches`` lists ``[batch_id, event_count]`` in stored order."""

    project_id: str
    session_id: str
    offset: int
    length: int
    event_count: int
    first_ts: int
    last_ts: int
    batches: list[list[Any]]
    window_ids: list[str] = field(default_factory=list)
    distinct_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"p": self.project_id, "s": self.session_id, "o": self.offset, "l": self.length,
                "n": self.event_count, "f": self.first_ts, "z": self.last_ts, "b": self.batches,
                "w": self.window_ids, "d": self.distinct_id, "m": self.meta}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "BlockEntry":
        return cls(d["p"], d["s"], d["o"], d["l"], d["n"], d["f"], d["z"], d["b"],
                   d.get("w", []), d.get("d"), d.get("m", {}))


@dataclass
class Footer:
    kind: str  # "batch" (hot flush) or "session" (compacted)
    node: str
    created_ms: int
    blocks: list[BlockEntry]
    replaces: list[list[Any]] = field(default_factory=list)  # [[object_key, offset], ...] for session objects


def array_header(n: int) -> bytes:
    """The msgpack array header for ``n`` items (lets blocks be built by concatenating packed items)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def pack_items(window_id: str, events: list[dict[str, Any]]) -> bytes:
    """Packed ``[window_id, event]`` items without the array header, ready to concatenate."""
    items = [[window_id, e] for e in events]
    try:
        # msgspec writes the very bytes msgpack-python does for JSON-like values, ~2.8x faster
        # (bench/RESULTS.md, fifth pass); the test suite holds the two to byte equality.
        packed = _encode_msgpack(items)
    except RecursionError:
        # msgspec counts nesting against Python's recursion limit (about 1,000 levels less the
        # caller's frames); msgpack-python and our JSON parser allow 1,024. An event nested that
        # deep is packed the slower way rather than refused.
        packed = msgpack.packb(items, use_bin_type=True)
    return packed[len(array_header(len(events))):]


_encode_msgpack = msgspec.msgpack.encode


def join_packed_items(window_id: str, events: list[Any]) -> bytes:
    """``pack_items`` for events already packed one by one (ingest/packed.py): the same bytes."""
    prefix = b"\x92" + _encode_msgpack(window_id)  # [window_id, event]
    return prefix.join([b"", *events])  # one copy: prefix + prefix.join(events) made two


def compress_block(parts: list[bytes], count: int, level: int = HOT_LEVEL) -> bytes:
    """One zstd frame of the msgpack array made of ``count`` packed items in ``parts``."""
    return _compressor(level).compress(b"".join([array_header(count), *parts]))


_compressors = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # A compressor holds a zstd context (about 1 MB at level 3) and is not thread-safe. A flush
    # compresses one block per session: making a context for each cost more than compressing a
    # small session's block, so each thread keeps one per level.
    cache = getattr(_compressors, "by_level", None)
    if cache is None:
        cache = _compressors.by_level = {}
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(level=level)
    return cctx


def decompress_block(data: bytes) -> list[list[Any]]:
    """``[[window_id, event], ...]`` of one block."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
        items = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"block does not decode: {exc}") from exc
    if not isinstance(items, list):
        raise CorruptObject("block is not an array")
    return items


def sized_items(data: bytes) -> tuple[list[list[Any]], list[int]]:
    """A block's ``[window_id, event]`` items and each one's packed size (what ingest counted for it)."""
    count, unpacker = stream_block(data)
    items, sizes = [], []
    pos = unpacker.tell()
    try:
        for _ in range(count):
            items.append(unpacker.unpack())
            sizes.append(unpacker.tell() - pos)
            pos += sizes[-1]
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"block does not decode: {exc}") from exc
    return items, sizes


def stream_block(data: bytes) -> tuple[int, msgpack.Unpacker]:
    """A block's item count and an unpacker positioned at its first item: items decode one by one.

    Decompressing is cheap; turning msgpack into Python objects is not (and holds the GIL), so a
    reader that needs the first event of a big block pays for that event only.
    """
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(raw), 1))
        unpacker.feed(raw)
        return unpacker.read_array_header(), unpacker
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"block does not decode: {exc}") from exc


def assemble_object(blocks: list[tuple[BlockEntry, bytes]], *, kind: str, node: str, created_ms: int,
                    replaces: list[list[Any]] | None = None) -> tuple[bytes, Footer]:
    """Lay compressed blocks end to end, fill in their offsets, and append footer and trailer."""
    out = bytearray()
    entries = []
    for entry, data in blocks:
        entry.offset, entry.length = len(out), len(data)
        out += data
        entries.append(entry)
    footer = Footer(kind, node, created_ms, entries, replaces or [])
    packed = msgpack.packb({"v": 1, "kind": kind, "node": node, "created_ms": created_ms,
                            "blocks": [e.to_wire() for e in entries], "replaces": footer.replaces},
                           use_bin_type=True)
    out += packed + TRAILER.pack(len(packed), MAGIC)
    return bytes(out), footer


def footer_length(trailer: bytes) -> int:
    """Footer size from the object's last ``TRAILER.size`` bytes."""
    if len(trailer) != TRAILER.size:
        raise CorruptObject("object too short for a trailer")
    length, magic = TRAILER.unpack(trailer)
    if magic != MAGIC:
        raise CorruptObject("no Replay trailer (not an object of ours)")
    return length


def parse_footer(data: bytes) -> Footer:
    try:
        d = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return Footer(d["kind"], d["node"], d["created_ms"], [BlockEntry.from_wire(b) for b in d["blocks"]],
                      d.get("replaces", []))
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"footer does not decode: {exc}") from exc
