#!/usr/bin/env python3
"""What the garbage collector costs orjson.loads in a server-like process (the reason for
replay/cli.py's _tune_gc). Parses every ~2 s upload of the recordings 3 times per setting.

    .venv/bin/python bench/gc_decode.py
"""
import gc
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cut_batches, load_recordings, machine  # noqa: E402

import boto3  # noqa: E402,F401  what `replay serve` has loaded: the heap every full collection walks
import replay.cli  # noqa: E402,F401
import replay.service  # noqa: E402,F401
import replay.web.app  # noqa: E402,F401

bodies = [orjson.dumps({"events": events}) for r in load_recordings() for _w, events in cut_batches(r)]
mb = sum(map(len, bodies)) / 1e6
print(f"machine: {machine()}; {len(gc.get_objects())} tracked objects after imports; {mb:.1f} MB of uploads")


def parse_all(label: str) -> float:
    t = time.process_time()
    for _ in range(3):
        for b in bodies:
            obj = orjson.loads(b)
            del obj
    rate = 3 * mb / (time.process_time() - t)
    print(f"  {label:32s} {rate:6.1f} MB/CPU-s")
    return rate


base = parse_all("gc default")
gc.disable()
off = parse_all("gc disabled")
gc.enable()
gc.freeze()
frozen = parse_all("gc.freeze()")
gc.set_threshold(5_000, 10, 10)
tuned = parse_all("gc.freeze() + threshold 5,000")
gc.set_threshold(50_000, 10, 10)
high = parse_all("gc.freeze() + threshold 50,000")
print(f"RATIO vs gc default: disabled {off / base:.2f}x, freeze {frozen / base:.2f}x, "
      f"freeze + threshold 5,000 (what replay serve does) {tuned / base:.2f}x, "
      f"freeze + threshold 50,000 {high / base:.2f}x")
