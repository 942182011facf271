#!/usr/bin/env python3
"""A JSON upload packed straight from the text (ingest/packed.py) against the ordinary path, in one process.

    REPLAY_BENCH_CORPUS=bench/out/corpus-snapshot .venv/bin/python bench/packed_ingest.py [--repeat 7] [--masking on|off]
        [--uploads all|with-snapshot|without-snapshot]
    PYTHONHASHSEED=0 valgrind --tool=callgrind .venv/bin/python bench/packed_ingest.py --masking on --only packed --passes 2

Each ~2 s upload of the corpus, as the JSON body `POST /v1/recordings` receives (inflated), goes
through what native ingest runs after gunzip and before the spool, both ways, alternating passes:

- ordinary: `parse_json` (orjson, the tree taken out of the collector's sight), `check_events`,
  with masking `enforce_events` (the default policy, one mirror per window as the server keeps),
  `codec.pack_items`, `summarize`, and freeing the decoded upload;
- packed: `packed.read_envelope` (`_json_to_msgpack.c` packing the body and cutting it into the
  envelope, each event's bytes and their heads; msgspec reading the envelope), `packed.read_events`
  (msgspec reading the heads: the fields checks and summaries need), with masking
  `enforce_packed` (full snapshots walked on their msgpack in C), `codec.join_packed_items`, `summarize`.

``--only ordinary|packed --passes N`` makes N passes of one path and reports nothing: under
callgrind, the instructions with ``--passes 2`` minus those with ``--passes 1`` are one pass's, a
count that does not move with the machine's speed (the timings here do, 1.5x between runs). Set
PYTHONHASHSEED=0 for such counts: with str hashes randomised per process the same code moves ±8 M.

Both must give the same items and summaries (checked). Prints CPU per upload, the best pass of
each, and their ratio; the garbage collector is tuned as `replay serve` tunes it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cut_batches, load_recordings, machine  # noqa: E402

from replay import codec  # noqa: E402
from replay.catalog.summary import summarize  # noqa: E402
from replay.cli import _tune_gc  # noqa: E402
from replay.ingest import packed as packed_ingest  # noqa: E402
from replay.ingest.body import parse_json  # noqa: E402
from replay.ingest.limits import Limits  # noqa: E402
from replay.ingest.validate import check_events  # noqa: E402
from replay.privacy import MaskingPolicy, SessionMirror, enforce_events  # noqa: E402
from replay.privacy.enforce import enforce_packed, mirror_attributes  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--repeat", type=int, default=7, help="passes each way, alternating; the best counts")
p.add_argument("--masking", choices=("on", "off"), default="off", help="the default policy, or enforce=false")
p.add_argument("--uploads", choices=("all", "with-snapshot", "without-snapshot"), default="all",
               help="only the uploads that hold a full snapshot, or only those that do not")
p.add_argument("--only", choices=("ordinary", "packed"), help="passes of one path, no report (for callgrind)")
p.add_argument("--passes", type=int, default=1, help="with --only: how many")
args = p.parse_args()
policy = MaskingPolicy() if args.masking == "on" else MaskingPolicy(enforce=False)
if not packed_ingest.BUILT:
    sys.exit("replay.ingest._json_to_msgpack is not built: run ./scripts/setup with a C compiler present")

limits = Limits()
recs = load_recordings()
bodies = [orjson.dumps({"token": "t", "session_id": f"s-{rec.name}", "window_id": window, "batch_id": f"b{i}",
                        "events": events})
          for rec in recs for i, (window, events) in enumerate(cut_batches(rec))
          if args.uploads == "all" or (args.uploads == "with-snapshot") == any(e["type"] == 2 for e in events)]
raw_mb = sum(len(b) for b in bodies) / 1e6
_tune_gc()


mirrors: dict[str, SessionMirror] = {}  # per window, as PolicyGate keeps them; new for every pass


def mirror(window: str) -> SessionMirror:
    if window not in mirrors:
        mirrors[window] = SessionMirror(mirror_attributes(policy))
    return mirrors[window]


def ordinary(body: bytes) -> tuple[bytes, object]:
    payload = parse_json(body)
    events = check_events(payload["events"], limits)
    enforce_events(policy, mirror(payload["session_id"] + payload["window_id"]), events)
    return codec.pack_items(payload["window_id"], events), summarize(events)


def packed(body: bytes) -> tuple[bytes, object]:
    envelope = packed_ingest.read_envelope(body, limits.max_events)
    out = packed_ingest.read_events(envelope, limits)
    enforce_packed(policy, mirror(envelope.session_id + envelope.window_id), out.events, out.fields, out.spans)
    return codec.join_packed_items(envelope.window_id, out.events), summarize(out.fields)


def one_pass(fn) -> tuple[float, list]:
    mirrors.clear()
    clock = time.process_time
    t0 = clock()
    results = [fn(body) for body in bodies]
    return clock() - t0, results


if args.only:
    for _ in range(args.passes):
        one_pass(ordinary if args.only == "ordinary" else packed)
    sys.exit(0)

best: dict[str, float] = {}
outputs: dict[str, list] = {}
for _ in range(args.repeat):
    for name, fn in (("ordinary", ordinary), ("packed", packed)):
        seconds, results = one_pass(fn)
        best[name] = min(best.get(name, seconds), seconds)
        outputs[name] = results

print(f"machine: {machine()}")
print(f"{len(bodies)} uploads, {raw_mb:.1f} MB raw JSON, from {', '.join(r.name for r in recs)}; "
      f"best of {args.repeat} alternating passes; masking {args.masking}; uploads: {args.uploads}")
for name in ("ordinary", "packed"):
    print(f"  {name:<9} {best[name] / len(bodies) * 1e6:7.0f} us/upload   {raw_mb / best[name]:6.1f} MB/CPU-s")
print(f"  packed uses {best['packed'] / best['ordinary']:.2f}x the CPU of the ordinary path "
      f"({best['ordinary'] / best['packed']:.2f}x faster)")
same = outputs["packed"] == outputs["ordinary"]
print(f"same items and summaries both ways: {same}")
sys.exit(0 if same else 1)
