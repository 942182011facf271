#!/usr/bin/env python3
"""A/A check of ingest_throughput.py's ratio: the C floor against itself, read both ways.

    REPLAY_BENCH_CORPUS=bench/out/corpus-snapshot .venv/bin/python bench/floor_estimators.py [--rounds 6] [--slices 6]

The ratio's numerator is one pass of the server; its denominator, the floor. Here both sides are
the floor over the same bodies, so an unbiased way of reading them must give 1.00:

- sliced (ingest_throughput.py since the fourteenth pass): the bodies in ``--slices`` strided
  slices; each slice of side A (the floor) is followed by a slice of side B (the "server") over
  other bodies (so B does not find A's input in the cache), and the ratio is CPU(A) / CPU(B) summed;
- fastest floor (before it): the floor best of 3 passes before and 3 after, the faster counting,
  against one pass of side B in between.

Prints each round's two readings and their medians and ranges.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load_recordings, machine  # noqa: E402
from ingest_throughput import build_sessions, c_floor, floor_pass  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--rounds", type=int, default=6)
p.add_argument("--slices", type=int, default=6)
p.add_argument("--variants", type=int, default=24, help="as ingest_throughput.py (default 24)")
args = p.parse_args()

sessions = build_sessions(load_recordings(), args.variants)
bodies = [b for s in sessions for b, _, _ in s]
del sessions
n = args.slices
print(f"machine: {machine()}; {len(bodies)} uploads, {n} slices, {args.rounds} rounds")
sliced, fastest = [], []
for _ in range(args.rounds):
    before = c_floor(bodies, gc_on=False)
    a = b = 0.0
    for k in range(n):
        a += floor_pass(bodies[k::n])
        b += floor_pass(bodies[(k + n // 2) % n::n])
    one = c_floor(bodies, gc_on=False, repeats=1)
    after = c_floor(bodies, gc_on=False)
    sliced.append(a / b)
    fastest.append(min(before, after) / one)
    print(f"  sliced {sliced[-1]:.2f}   fastest floor against one pass {fastest[-1]:.2f}", flush=True)
for name, xs in (("sliced", sliced), ("fastest floor", fastest)):
    print(f"{name}: median {statistics.median(xs):.2f}, range {min(xs):.2f}-{max(xs):.2f} (unbiased: 1.00)")
