#!/usr/bin/env python3
"""CPU per ingest stage, in one process, over real ~2 s uploads: where a post's time goes without HTTP.

    .venv/bin/python bench/stage_cost.py [--recording rrweb-player-demo] [--repeat 5] [--tree DIR]

Runs the stages `POST /v1/recordings` runs, in order, on each upload of the chosen recordings
(all of the corpus by default): gunzip, `parse_json`, `check_events`, privacy enforcement with the
default policy (one mirror per window, batches in order), `codec.pack_items`, `summarize`, the
spool record. Prints microseconds of CPU per upload for each stage and each stage's share, with
the garbage collector tuned as `replay serve` tunes it. The baseline is the C floor of the same
bodies (gunzip + `orjson.loads` + `msgpack.packb` + zstd-3), so the last line is the in-process
ratio the ingest target is about. ``--tree DIR`` measures the replay package of another checkout
(``git worktree add DIR <commit>``): run it for the code before a change and after, back to back.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import zlib
from pathlib import Path

import msgpack
import orjson
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cut_batches, load_recordings, machine, put_tree_first  # noqa: E402

put_tree_first()

from replay import codec  # noqa: E402
from replay.catalog.summary import summarize  # noqa: E402
from replay.ingest.body import decode_content, parse_json  # noqa: E402
from replay.ingest.limits import Limits  # noqa: E402
from replay.ingest.validate import check_events  # noqa: E402
from replay.privacy.enforce import enforce_events, mirror_attributes  # noqa: E402
from replay.privacy.mirror import MirrorCache  # noqa: E402
from replay.privacy.policy import MaskingPolicy  # noqa: E402
from replay.spool import SpooledBatch  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--recording", action="append", help="only these recordings (default: all)")
p.add_argument("--repeat", type=int, default=5, help="passes over the uploads; the best pass counts")
p.add_argument("--tree", help="import replay from this checkout instead of this one")
args = p.parse_args()

recs = [r for r in load_recordings() if not args.recording or r.name in args.recording]
bodies: list[tuple[str, bytes]] = []
for rec in recs:
    for i, (window, events) in enumerate(cut_batches(rec)):
        raw = orjson.dumps({"session_id": f"s-{rec.name}", "window_id": window, "batch_id": f"b{i}",
                            "events": events})
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        bodies.append((window, c.compress(raw) + c.flush()))
raw_mb = sum(len(zlib.decompress(b, 47)) for _, b in bodies) / 1e6
limits = Limits()
policy = MaskingPolicy()
STAGES = ("gunzip", "parse_json", "check_events", "enforce", "pack_items", "summarize", "spool record", "free")

from replay.cli import _tune_gc  # noqa: E402

_tune_gc()  # the garbage collector as `replay serve` tunes it (was a stale copy of older thresholds)


def one_pass() -> dict[str, float]:
    spent = dict.fromkeys(STAGES, 0.0)
    mirrors = MirrorCache()
    clock = time.process_time
    for window, body in bodies:
        t0 = clock()
        data = decode_content(body, "gzip", limits.max_decoded_bytes)
        t1 = clock()
        payload = parse_json(data)
        t2 = clock()
        events = check_events(payload["events"], limits, now_ms=int(time.time() * 1000))
        t3 = clock()
        enforce_events(policy, mirrors.get(("p", payload["session_id"], window), mirror_attributes(policy)), events)
        t4 = clock()
        items = codec.pack_items(window, events)
        t5 = clock()
        stats = summarize(events)
        t6 = clock()
        SpooledBatch("p", payload["session_id"], window, payload["batch_id"], None, len(events), items, stats,
                     {}, 30, 0).to_record()
        t7 = clock()
        # Freeing the decoded upload is work too (the floor pays it as well); left to the next
        # iteration's assignments it used to be counted in parse_json and check_events.
        del payload, events, items, data
        t8 = clock()
        for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t8 - t7)):
            spent[stage] += dt
    return spent


def floor_pass() -> float:
    z = zstandard.ZstdCompressor(level=3)
    gc.disable()
    t0 = time.process_time()
    for _, body in bodies:
        z.compress(msgpack.packb(orjson.loads(zlib.decompress(body, 47))["events"]))
    gc.enable()
    return time.process_time() - t0


# Stage passes and floor passes alternate: this machine's speed moves by 2x within a minute, and
# measuring all of one before all of the other made the ratio follow it.
passes, floors = [], []
for _ in range(args.repeat):
    passes.append(one_pass())
    floors.append(floor_pass())
best = min(passes, key=lambda s: sum(s.values()))
floor = min(floors)
total = sum(best.values())
n = len(bodies)
import replay  # noqa: E402

print(f"machine: {machine()}; replay from {Path(replay.__file__).parent.parent}")
print(f"{n} uploads from {', '.join(r.name for r in recs)}; {raw_mb:.1f} MB raw JSON; best of {args.repeat}")
for stage in STAGES:
    print(f"  {stage:<13} {best[stage] / n * 1e6:8.0f} us/upload  {best[stage] / total:6.1%}  "
          f"{raw_mb / best[stage] if best[stage] else float('inf'):8.1f} MB/CPU-s")
print(f"  {'all stages':<13} {total / n * 1e6:8.0f} us/upload          {raw_mb / total:8.1f} MB/CPU-s")
print(f"  {'C floor':<13} {floor / n * 1e6:8.0f} us/upload          {raw_mb / floor:8.1f} MB/CPU-s")
print(f"RATIO stages / C floor (MB per CPU-s): {floor / total:.2f}; without enforce: {floor / (total - best['enforce']):.2f}")
