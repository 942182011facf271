#!/usr/bin/env python3
"""Stored size: bytes kept per raw byte and per recorded minute, Replay's formats against other stores'.

    python bench/stored_size.py [--json FILE]

Over every recording in bench/corpus/ (else the test fixture), one session each:

- raw               the session's events as compact JSON (what the browser sent, decompressed)
- gzip-6 / session  the whole session's JSON in one gzip stream, level 6
- gzip-6 / upload   each ~2 s upload gzip'd on its own, level 6 (Sentry keeps every replay segment
                    as its own compressed blob)
- snappy / block    JSON lines of every 10 s flush, snappy (PostHog's session-recording block codec)
- zstd-3 / block    the same 10 s blocks of JSON, zstd level 3
- Replay hot        what replay/writer.py stores: a real Service ingests the session in ~2 s uploads
                    and flushes every 10 s of recording; sum of the batch objects (blocks + footers)
- Replay compacted  the same data after replay/compaction.py (one session object, footer included)

The project's masking policy is off here ({"enforce": false}) so every format holds the same events.
Target: compacted <= 0.5 x gzip-6 (session).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import tempfile
from pathlib import Path

import cramjam
import orjson
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Recording, cut_batches, load_recordings, machine  # noqa: E402

FLUSH_EVERY_MS = 10_000
FORMATS = ["gzip-6 / session", "gzip-6 / upload", "snappy / block", "zstd-3 / block", "Replay hot", "Replay compacted"]


def flush_windows(batches: list) -> list[list]:
    """Uploads grouped as the spool flushes them: a new block every 10 s of recording."""
    windows: list[list] = []
    start = None
    for window, events in batches:
        if start is None or events[0]["timestamp"] - start >= FLUSH_EVERY_MS:
            windows.append([])
            start = events[0]["timestamp"]
        windows[-1].append((window, events))
    return windows


def baselines(rec: Recording) -> dict[str, int]:
    batches = cut_batches(rec)
    blocks = flush_windows(batches)
    jsonl = [b"\n".join(orjson.dumps([w, e]) for w, evs in block for e in evs) for block in blocks]
    zstd3 = zstandard.ZstdCompressor(level=3)
    return {
        "raw": len(orjson.dumps(rec.events)),
        "gzip-6 / session": len(gzip.compress(orjson.dumps(rec.events), 6)),
        "gzip-6 / upload": sum(len(gzip.compress(orjson.dumps(evs), 6)) for _w, evs in batches),
        "snappy / block": sum(len(cramjam.snappy.compress_raw(b)) for b in jsonl),
        "zstd-3 / block": sum(len(zstd3.compress(b)) for b in jsonl),
    }


async def replay_sizes(data: Path, recs: list[Recording]) -> dict[str, dict[str, int]]:
    """Ingest each recording through a real Service, then compact it; stored bytes of both."""
    from replay.config import settings_from
    from replay.ingest.batch import Batch
    from replay.service import Service

    service = Service(settings_from(data=str(data), compact_after=0, rate_limit=0))
    await service.start(background=False)
    out: dict[str, dict[str, int]] = {}
    try:
        project, _ = await service.ensure_default_project()
        await service.catalog.set_policy(project.id, {"enforce": False})
        project = await service.catalog.project(project.id)

        async def object_bytes(session: str) -> int:
            keys = {row.object_key for row in await service.catalog.blocks(project.id, session)}
            sizes = {info.key: info.size async for info in service.store.list("")}
            return sum(sizes[k] for k in keys)

        for n, rec in enumerate(recs):
            session = f"size-{n}"
            for f, block in enumerate(flush_windows(cut_batches(rec))):
                for i, (window, events) in enumerate(block):
                    await service.accept(project, [Batch(project.id, session, window, f"{f}-{i}",
                                                         orjson.loads(orjson.dumps(events)))])
                await service.flush()
            hot = await object_bytes(session)
            result = await service.compactor.compact_session(project.id, session)
            assert result.outcome == "compacted", result
            out[rec.name] = {"Replay hot": hot, "Replay compacted": await object_bytes(session),
                             "hot blocks": result.blocks_before}
    finally:
        await service.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args()
    recs = load_recordings()
    rows = {r.name: baselines(r) for r in recs}
    with tempfile.TemporaryDirectory(prefix="replay-size-") as tmp:
        for name, sizes in asyncio.run(replay_sizes(Path(tmp), recs)).items():
            rows[name].update(sizes)
    minutes = {r.name: r.duration_ms / 60_000 for r in recs}
    rows["ALL"] = {k: sum(r[k] for r in rows.values()) for k in ["raw", "hot blocks", *FORMATS]}
    minutes["ALL"] = sum(minutes.values())

    print(f"machine: {machine()}")
    print(f"{'session':18s} {'minutes':>7s} {'raw MB':>7s} " + " ".join(f"{f:>17s}" for f in FORMATS))
    for name, r in rows.items():
        print(f"{name:18s} {minutes[name]:7.1f} {r['raw'] / 1e6:7.2f} "
              + " ".join(f"{r[f] / r['raw']:8.3f} {r[f] / r['gzip-6 / session']:5.2f}g6" for f in FORMATS))
    print("(each cell: stored bytes per raw byte, then the multiple of gzip-6 / session)")
    total = rows["ALL"]
    print("per recorded minute (all sessions): " + ", ".join(
        f"{f} {total[f] / minutes['ALL'] / 1e3:.0f} KB" for f in ["raw", *FORMATS]))
    ratio = total["Replay compacted"] / total["gzip-6 / session"]
    print(f"RATIO Replay compacted / gzip-6 (session): {ratio:.2f} (target <= 0.50); "
          f"/ gzip-6 (upload): {total['Replay compacted'] / total['gzip-6 / upload']:.2f}; "
          f"hot / gzip-6 (session): {total['Replay hot'] / total['gzip-6 / session']:.2f}; "
          f"hot / snappy: {total['Replay hot'] / total['snappy / block']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "minutes": minutes}, indent=1))


if __name__ == "__main__":
    main()
