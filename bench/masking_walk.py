#!/usr/bin/env python3
"""Masking per upload with the C loop of the walk against the Python loop, in one process.

    .venv/bin/python bench/masking_walk.py [--repeat 7] [--recording rust-std]
    valgrind --tool=callgrind .venv/bin/python bench/masking_walk.py --only native --recording rust-std


Every upload of the recordings (~2 s batches, one mirror per window, in order, default policy) is
enforced with ``walk.use_native_walk(True)`` and with ``use_native_walk(False)`` (which also puts
the PII prefilter back in Python), alternating, on fresh copies of the decoded events. Prints CPU
per upload for full snapshots and for the rest, the best pass of each, and their ratio; and checks
that both loops left every event alike (the tests check the mirrors too).

``--only native|python|none`` makes one pass of one loop and prints nothing: under callgrind, the
instructions of ``--only native`` minus those of ``--only none`` (the same pass, decoding and
encoding the uploads, without masking them) are what masking costs, a count that does not move
with the machine's speed. For the code
before a change, run the same from its checkout (``git worktree add DIR <commit>``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cut_batches, load_recordings, machine, put_tree_first  # noqa: E402

put_tree_first()

from replay.cli import _tune_gc  # noqa: E402
from replay.privacy import walk  # noqa: E402
from replay.privacy.enforce import enforce_events, mirror_attributes  # noqa: E402
from replay.privacy.mirror import MirrorCache  # noqa: E402
from replay.privacy.policy import MaskingPolicy  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--recording", action="append", help="only these recordings (default: all)")
p.add_argument("--repeat", type=int, default=7, help="passes per loop; the best counts")
p.add_argument("--only", choices=("native", "python", "none"), help="one pass of one loop, no report (for callgrind)")
p.add_argument("--tree", help="import replay from this checkout (code from before the C loop: --only python)")
args = p.parse_args()


def use_native_walk(native: bool) -> bool:
    switch = getattr(walk, "use_native_walk", None)  # absent before the C loop existed
    return switch(native) if switch is not None else False


if args.only not in ("python", "none") and not use_native_walk(True):
    sys.exit("replay.privacy._native_walk is not built: run ./scripts/setup with a C compiler present")
recs = [r for r in load_recordings() if not args.recording or r.name in args.recording]
uploads = [(rec.name, window, orjson.dumps(events)) for rec in recs for window, events in cut_batches(rec)]
policy = MaskingPolicy()
_tune_gc()  # the garbage collector as `replay serve` tunes it


def one_pass(native: bool, enforce: bool = True) -> tuple[float, float, list[bytes]]:
    """CPU seconds in full-snapshot uploads and in the others, and the enforced uploads."""
    use_native_walk(native)
    mirrors = MirrorCache()
    snapshots = rest = 0.0
    out = []
    clock = time.process_time
    for name, window, raw in uploads:
        events = orjson.loads(raw)
        has_snapshot = any(e["type"] == 2 for e in events)
        t0 = clock()
        if enforce:
            enforce_events(policy, mirrors.get(("p", name, window), mirror_attributes(policy)), events)
        dt = clock() - t0
        if has_snapshot:
            snapshots += dt
        else:
            rest += dt
        out.append(orjson.dumps(events))
    return snapshots, rest, out


if args.only:
    one_pass(args.only == "native", enforce=args.only != "none")
    sys.exit(0)

runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
results: dict[bool, list[bytes]] = {}
for _ in range(args.repeat):
    for native in (False, True):
        snapshots, rest, out = one_pass(native)
        runs[native].append((snapshots, rest))
        results[native] = out
use_native_walk(True)

n_snap = sum(1 for _, _, raw in uploads if any(e["type"] == 2 for e in orjson.loads(raw)))
n_rest = len(uploads) - n_snap
print(f"machine: {machine()}")
print(f"{len(uploads)} uploads ({n_snap} with a full snapshot) from {', '.join(r.name for r in recs)}; "
      f"best of {args.repeat} alternating passes")
best = {native: min(runs[native], key=sum) for native in runs}
for label, i, n in (("full-snapshot uploads", 0, n_snap), ("other uploads", 1, n_rest)):
    py, c = best[False][i], best[True][i]
    print(f"  {label:<22} python {py / max(n, 1) * 1e6:8.0f} us   C {c / max(n, 1) * 1e6:8.0f} us   "
          f"x{py / c if c else float('inf'):.2f}")
py, c = sum(best[False]), sum(best[True])
print(f"  {'all uploads':<22} python {py / len(uploads) * 1e6:8.0f} us   C {c / len(uploads) * 1e6:8.0f} us   "
      f"x{py / c:.2f}")
same = results[True] == results[False]
print(f"both loops left every event alike: {same}")
sys.exit(0 if same else 1)
