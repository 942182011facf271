#!/usr/bin/env python3
"""CPU of one spool flush at many concurrent sessions: building the batch object and cataloguing it.

    .venv/bin/python bench/flush_cost.py [--sessions 1000] [--uploads 5] [--repeat 5] [--tree DIR]

A flush turns one sealed spool segment into one batch object (a block per session) and one
catalog transaction (block rows, batch ids, a summary merge per session). bench/concurrency.py's
load (1,000 sessions posting the rrweb-player demo recording every 2 s) seals ~5 uploads per
session per flush; this builds the same segments from the same uploads and times, in this
process, ``writer._build`` and ``SqliteCatalog._commit_object`` (thread CPU), for flushes after
the first (the sessions already exist in the catalog, as under steady load). The garbage
collector is tuned as `replay serve` tunes it. Both steps run on worker threads in the server
and hold the GIL for their Python parts, so this CPU is what every upload in flight waits behind
while a flush runs. ``--tree DIR`` imports replay from another checkout (before/after).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

_tree = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv else str(Path(__file__).resolve().parents[1])
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, _tree)
from benchlib import FIXTURE, Recording, cut_batches, machine  # noqa: E402

import orjson  # noqa: E402

from replay import codec, writer  # noqa: E402
from replay.catalog.sqlite import SqliteCatalog  # noqa: E402
from replay.catalog.summary import summarize  # noqa: E402
from replay.spool import SpooledBatch  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--sessions", type=int, default=1000)
p.add_argument("--uploads", type=int, default=5, help="uploads per session per flush (2 s each)")
p.add_argument("--repeat", type=int, default=5, help="flushes measured (after one that creates the sessions)")
p.add_argument("--tree", help="import replay from this checkout instead of this one")
args = p.parse_args()

rec = Recording("rrweb-player-demo", orjson.loads(FIXTURE.read_bytes()), [])
rec.windows = ["w"] * len(rec.events)
uploads = cut_batches(rec)


def segment(flush: int) -> list[SpooledBatch]:
    out = []
    for s in range(args.sessions):
        for j in range(args.uploads):
            window, events = uploads[(s + flush * args.uploads + j) % len(uploads)]
            out.append(SpooledBatch("p1", f"s{s}", window, f"b{flush}-{j}", None, len(events),
                                    codec.pack_items(window, events), summarize(events), {"url": "https://app.test/"},
                                    30, 0))
    return out


async def main() -> None:
    catalog = SqliteCatalog(Path(tempfile.mkdtemp()) / "catalog.sqlite3")
    await catalog.open()
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 10, 100)
    build_ms, commit_ms = [], []
    for flush in range(args.repeat + 1):
        batches = segment(flush)
        t = time.thread_time()
        payload, footer, deltas = writer._build(batches, "bench", 1_000 + flush)
        built = time.thread_time() - t
        t = time.thread_time()
        catalog._commit_object(f"flush-{flush}", footer, len(payload), deltas)
        committed = time.thread_time() - t
        if flush:  # the first flush creates the sessions; steady state merges into them
            build_ms.append(built * 1000)
            commit_ms.append(committed * 1000)
    print(f"machine: {machine()}; replay from {_tree}")
    print(f"{args.sessions} sessions x {args.uploads} uploads per flush, {args.repeat} flushes")
    print(f"  build   median {statistics.median(build_ms):6.1f} ms CPU  (runs {' '.join(f'{v:.0f}' for v in build_ms)})")
    print(f"  commit  median {statistics.median(commit_ms):6.1f} ms CPU  (runs {' '.join(f'{v:.0f}' for v in commit_ms)})")
    total = statistics.median(b + c for b, c in zip(build_ms, commit_ms))
    print(f"  flush   median {total:6.1f} ms CPU, {total / args.sessions * 1000:.0f} us per session")


asyncio.run(main())
