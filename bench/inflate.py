#!/usr/bin/env python3
"""Inflating gzip'd uploads: zlib-ng (what ingest/body.py uses) against the system zlib, in one process.

    REPLAY_BENCH_CORPUS=bench/out/corpus-snapshot .venv/bin/python bench/inflate.py [--repeat 7]

Every ~2 s upload of the corpus, gzip'd at level 6 (what browsers' CompressionStream and
posthog-js's gzip send), inflated the way `body._inflate_zlib` inflates it (a decompressobj with a
max_length), with each library, alternating passes; the best pass of each and their ratio. Both
must give the same bytes (checked).
"""
from __future__ import annotations

import argparse
import gzip
import sys
import time
import zlib
from pathlib import Path

import orjson
from zlib_ng import zlib_ng

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cut_batches, load_recordings, machine  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--repeat", type=int, default=7)
args = p.parse_args()
bodies = [gzip.compress(orjson.dumps(events), 6) for rec in load_recordings() for _, events in cut_batches(rec)]
raw_mb = sum(len(zlib.decompress(b, 47)) for b in bodies) / 1e6


def one_pass(lib) -> tuple[float, list[bytes]]:
    t0 = time.process_time()
    out = [lib.decompressobj(31).decompress(b, 100_000_001) for b in bodies]
    return time.process_time() - t0, out


best = {"zlib": float("inf"), "zlib-ng": float("inf")}
results = {}
for _ in range(args.repeat):
    for name, lib in (("zlib", zlib), ("zlib-ng", zlib_ng)):
        seconds, results[name] = one_pass(lib)
        best[name] = min(best[name], seconds)
print(f"machine: {machine()}")
print(f"{len(bodies)} gzip'd uploads, {raw_mb:.1f} MB inflated; best of {args.repeat} alternating passes")
for name, seconds in best.items():
    print(f"  {name:<8} {seconds / len(bodies) * 1e6:6.0f} us/upload  {raw_mb / seconds:6.0f} MB/CPU-s")
print(f"  zlib-ng inflates {best['zlib'] / best['zlib-ng']:.2f}x faster")
same = results["zlib"] == results["zlib-ng"]
print(f"same bytes: {same}")
sys.exit(0 if same else 1)
