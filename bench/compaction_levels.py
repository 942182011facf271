#!/usr/bin/env python3
"""What compaction buys, and how to frame it: sizes vs gzip-6 for zstd levels and frame sizes.

For each real recording (bench/corpus/, else the test fixture) and one long session made of all
of them back to back (distinct content, no artificial repetition):

  gzip-6      gzip level 6 of the session's JSON array (the baseline; ratios are bytes / this)
  hot         what flushes store: one zstd-3 frame per 10 s of msgpack [[window_id, event], ...]
  L<n>        the session object compaction writes: the msgpack items in playback order, one
              frame per ``--frames`` MiB (``whole`` = one frame), zstd level n with long-distance
              matching and a window covering the frame (replay.compaction.compress_frame)
  noldm       the same at level 19 without long-distance matching (whole session in one frame)

CPU seconds are process time of compressing the long session (one core; zstd is single-threaded
here). ``first`` is the CPU time to decompress and unpack the first frame (garbage collector
off): what playback waits for, after one range GET, before the first event can be sent.

Usage:
  python bench/compaction_levels.py [--levels 3,9,19] [--frames 1,2,4,8,16,whole] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import sys
import time
from pathlib import Path

import msgpack
import orjson
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import Recording, load_recordings, machine, shifted  # noqa: E402
from replay import codec  # noqa: E402
from replay.compaction import compress_frame  # noqa: E402

MIB = 1024 * 1024


def long_session(recs: list[Recording]) -> Recording:
    """All recordings one after another, 5 s apart, as one session."""
    events: list[dict] = []
    windows: list[str] = []
    t = recs[0].events[0]["timestamp"]
    for rec in recs:
        events += shifted(rec.events, t - rec.events[0]["timestamp"])
        windows += rec.windows
        t = events[-1]["timestamp"] + 5000
    return Recording("all-back-to-back", events, windows)


def packed_items(rec: Recording) -> list[bytes]:
    return [msgpack.packb([w, e], use_bin_type=True) for w, e in zip(rec.windows, rec.events)]


def frames(items: list[bytes], frame_bytes: float, first_bytes: float | None = None) -> list[list[bytes]]:
    """Cut like compaction does: close a frame once it holds ``frame_bytes`` of items (the first
    frame once it holds ``first_bytes``)."""
    out: list[list[bytes]] = [[]]
    size = 0
    for it in items:
        out[-1].append(it)
        size += len(it)
        if size >= (first_bytes if first_bytes and len(out) == 1 else frame_bytes):
            out.append([])
            size = 0
    return [f for f in out if f]


def hot_size(rec: Recording, items: list[bytes]) -> int:
    """zstd-3 per 10 s of recording, as flushes write it."""
    total, block, start = 0, [], None
    for e, it in zip(rec.events, items):
        if start is not None and e["timestamp"] - start >= 10_000:
            total += len(codec.compress_block(block, len(block)))
            block, start = [], None
        start = e["timestamp"] if start is None else start
        block.append(it)
    if block:
        total += len(codec.compress_block(block, len(block)))
    return total


def compressed(items: list[bytes], level: int, frame_bytes: float, ldm: bool = True,
               first_bytes: float | None = None) -> tuple[int, float, float, int]:
    """(bytes, CPU seconds, CPU seconds to decode the first frame, frames)."""
    cuts = frames(items, frame_bytes, first_bytes)
    cpu = time.process_time()
    datas = []
    for f in cuts:
        raw = codec.array_header(len(f)) + b"".join(f)
        if ldm:
            datas.append(compress_frame(raw, level))
        else:
            datas.append(zstandard.ZstdCompressor(level=level).compress(raw))
    cpu = time.process_time() - cpu
    gc.collect()
    gc.disable()  # a collection landing in the decode would swamp the figure (it can triple it)
    t = time.process_time()
    codec.decompress_block(datas[0])
    first = time.process_time() - t
    gc.enable()
    return sum(map(len, datas)), cpu, first, len(cuts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="3,9,19")
    ap.add_argument("--frames", default="1,2,4,8,16,whole", help="frame sizes in MiB, or 'whole'")
    ap.add_argument("--first", type=float, default=1.0, help="also try this first-frame size (MiB) before 8 MiB frames")
    ap.add_argument("--corpus", type=Path, help="recordings to use (default bench/corpus)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.corpus:
        benchlib.CORPUS = args.corpus
    levels = [int(x) for x in args.levels.split(",")]
    frame_sizes: list[tuple[float, float | None]] = [
        (float("inf") if f == "whole" else float(f) * MIB, None) for f in args.frames.split(",")]
    if args.first:
        frame_sizes.append((8 * MIB, args.first * MIB))

    recs = load_recordings()
    sessions = recs + [long_session(recs)]
    print(f"# compaction sizes, {machine()}, zstandard {zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION})")
    results: dict = {"machine": machine(), "sessions": []}

    print("\n## whole session, one frame, ratio to gzip-6 (lower is better)\n")
    print("| session | events | JSON MB | msgpack MB | gzip-6 | hot zstd-3/10 s | " +
          " | ".join(f"L{lv} LDM" for lv in levels) + " | L19 no LDM |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * (len(levels) + 1))
    long_items: list[bytes] = []
    for rec in sessions:
        js = orjson.dumps(rec.events)
        gz = len(gzip.compress(js, 6))
        items = packed_items(rec)
        raw = sum(map(len, items))
        hot = hot_size(rec, items)
        row = {"session": rec.name, "events": len(rec.events), "json": len(js), "msgpack": raw, "gzip6": gz,
               "hot": hot, "whole": {}}
        cells = []
        for lv in levels:
            size, cpu, _first, _n = compressed(items, lv, float("inf"))
            row["whole"][lv] = {"bytes": size, "cpu_s": cpu}
            cells.append(f"{size / gz:.3f}")
        nold, _c, _f, _n = compressed(items, 19, float("inf"), ldm=False)
        row["whole_nold19"] = nold
        results["sessions"].append(row)
        print(f"| {rec.name} | {len(rec.events)} | {len(js) / 1e6:.2f} | {raw / 1e6:.2f} | {gz / 1e6:.3f} MB | "
              f"{hot / gz:.3f} | " + " | ".join(cells) + f" | {nold / gz:.3f} |")
        if rec is sessions[-1]:
            long_items, long_gz, long_raw = items, gz, raw

    print(f"\n## {sessions[-1].name}: frames of N MiB of msgpack (ratio to gzip-6; CPU s to compress; "
          "ms to decode the first frame)\n")
    print("| frame | frames | " + " | ".join(f"L{lv} ratio | L{lv} CPU s | L{lv} first ms" for lv in levels) + " |")
    print("|---|---:|" + "---:|---:|---:|" * len(levels))
    results["frames"] = []
    for fb, first_bytes in frame_sizes:
        cells, n = [], 0
        entry = {"frame_mib": None if fb == float("inf") else fb / MIB,
                 "first_mib": first_bytes / MIB if first_bytes else None, "levels": {}}
        for lv in levels:
            size, cpu, first, n = compressed(long_items, lv, fb, first_bytes=first_bytes)
            entry["levels"][lv] = {"bytes": size, "cpu_s": cpu, "first_s": first}
            cells.append(f"{size / long_gz:.3f} | {cpu:.2f} | {first * 1000:.0f}")
        entry["frames"] = n
        results["frames"].append(entry)
        label = "whole" if fb == float("inf") else f"{fb / MIB:g} MiB"
        if first_bytes:
            label = f"{first_bytes / MIB:g} MiB, then {label}"
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")
    print(f"\n(long session: {long_raw / 1e6:.1f} MB msgpack, gzip-6 {long_gz / 1e6:.2f} MB; "
          f"throughput = MB msgpack / CPU s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
