#!/usr/bin/env python3
"""Compressed sizes of the recorded corpus (bench/corpus/, made by make_corpus.py).

For each session (one site's rrweb events, in order, with the window id of each
event from <site>.windows.json):

  raw       compact JSON of the event array (what make_corpus wrote)
  gzip-6    gzip level 6 of the whole session JSON (the usual baseline)
  snappy    raw snappy (cramjam) of the whole session JSON
  zstd3/blk zstd level 3, one frame per ~10 s block of msgpack [[window_id, event], ...]
            (the hot path: what a flush writes)
  ldm-L     whole session as one msgpack [[window_id, event], ...], zstd level L with
            long-distance matching, window_log 27 (what compaction writes)
  dict3/blk zstd level 3 per block with a dictionary trained on the OTHER sessions'
            blocks (leave-one-out, so a session never sees its own data); the
            dictionary itself is not counted (it would be shared by many sessions)

Ratios are compressed bytes / gzip-6 bytes (lower is better). A second table splits
the raw bytes by rrweb event type, and a third gives single-core throughput.

Usage:
  python bench/corpus_sizes.py [--corpus bench/corpus] [--block-seconds 10] [--dict-size 112640]
                               [--json bench/out/corpus_sizes.json]
"""
from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import cramjam
import msgpack
import orjson
import zstandard

REPO = Path(__file__).resolve().parent.parent
LDM_LEVELS = (3, 9, 19)

EVENT_TYPES = {0: "DomContentLoaded", 1: "Load", 2: "FullSnapshot", 3: "Incremental", 4: "Meta",
               5: "Custom", 6: "Plugin"}
INCREMENTAL_SOURCES = {0: "Mutation", 1: "MouseMove", 2: "MouseInteraction", 3: "Scroll",
                       4: "ViewportResize", 5: "Input", 6: "TouchMove", 7: "MediaInteraction",
                       8: "StyleSheetRule", 9: "CanvasMutation", 10: "Font", 11: "Log", 12: "Drag",
                       13: "StyleDeclaration", 14: "Selection", 15: "AdoptedStyleSheet",
                       16: "CustomElement"}


def load_sessions(corpus: Path) -> list[dict]:
    manifest = corpus / "MANIFEST.json"
    if manifest.exists():
        entries = orjson.loads(manifest.read_bytes())["sessions"]
        files = [(e["site"], corpus / e["file"]) for e in entries]
    else:
        files = [(p.stem, p) for p in sorted(corpus.glob("*.json"))
                 if not p.name.endswith(".windows.json") and p.name != "MANIFEST.json"]
    sessions = []
    for name, path in files:
        events = orjson.loads(path.read_bytes())
        wpath = path.with_name(path.stem + ".windows.json")
        if wpath.exists():
            wids = [w for w, n in orjson.loads(wpath.read_bytes()) for _ in range(n)]
        else:
            wids = ["window"] * len(events)
        assert len(wids) == len(events), f"{wpath}: {len(wids)} window ids for {len(events)} events"
        sessions.append({"name": name, "events": events, "wids": wids})
    return sessions


def blocks_of(session: dict, block_ms: int) -> list[bytes]:
    """~block_ms of events per block, each msgpack [[window_id, event], ...]."""
    out, cur, t0 = [], [], None
    for wid, ev in zip(session["wids"], session["events"]):
        ts = ev.get("timestamp", 0)
        if cur and ts - t0 >= block_ms:
            out.append(msgpack.packb(cur))
            cur = []
        if not cur:
            t0 = ts
        cur.append([wid, ev])
    if cur:
        out.append(msgpack.packb(cur))
    return out


def ldm_compressor(level: int) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(level, enable_ldm=True, window_log=27)
    return zstandard.ZstdCompressor(compression_params=params)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure(sessions: list[dict], block_ms: int, dict_size: int) -> tuple[list[dict], dict]:
    for s in sessions:
        s["raw"] = orjson.dumps(s["events"])
        s["blocks"] = blocks_of(s, block_ms)
        s["whole"] = msgpack.packb([[w, e] for w, e in zip(s["wids"], s["events"])])

    rows, secs = [], {}

    def add_time(key, dt):
        secs[key] = secs.get(key, 0.0) + dt

    z3 = zstandard.ZstdCompressor(level=3)
    ldm = {lv: ldm_compressor(lv) for lv in LDM_LEVELS}
    for s in sessions:
        raw = s["raw"]
        r = {"session": s["name"], "events": len(s["events"]), "blocks": len(s["blocks"]),
             "raw": len(raw), "msgpack": len(s["whole"])}
        out, dt = timed(lambda: gzip.compress(raw, compresslevel=6, mtime=0))
        r["gzip6"] = len(out); add_time("gzip6", dt)
        out, dt = timed(lambda: bytes(cramjam.snappy.compress_raw(raw)))
        r["snappy"] = len(out); add_time("snappy", dt)
        out, dt = timed(lambda: [z3.compress(b) for b in s["blocks"]])
        r["zstd3_block"] = sum(map(len, out)); add_time("zstd3_block", dt)
        for lv in LDM_LEVELS:
            out, dt = timed(lambda: ldm[lv].compress(s["whole"]))
            r[f"ldm{lv}"] = len(out); add_time(f"ldm{lv}", dt)
        rows.append(r)

    # per-block dictionaries, leave-one-out
    for s, r in zip(sessions, rows):
        samples = [b for o in sessions if o is not s for b in o["blocks"]]
        try:
            d, dt = timed(lambda: zstandard.train_dictionary(dict_size, samples, threads=-1))
            add_time("dict_train", dt)
            cctx = zstandard.ZstdCompressor(level=3, dict_data=d)
            out, dt = timed(lambda: [cctx.compress(b) for b in s["blocks"]])
            r["dict3_block"] = sum(map(len, out)); add_time("dict3_block", dt)
            r["dict_bytes"] = len(d.as_bytes())
        except zstandard.ZstdError as exc:
            print(f"# {s['name']}: dictionary training failed ({exc})", file=sys.stderr)
            r["dict3_block"] = None
    return rows, secs


def type_breakdown(sessions: list[dict]) -> list[dict]:
    out = []
    for s in sessions:
        by: dict[str, int] = {}
        counts: dict[str, int] = {}
        for ev in s["events"]:
            t = ev.get("type")
            key = EVENT_TYPES.get(t, str(t))
            if t == 3:
                key = INCREMENTAL_SOURCES.get(ev["data"].get("source"), f"src{ev['data'].get('source')}")
            n = len(orjson.dumps(ev))
            by[key] = by.get(key, 0) + n
            counts[key] = counts.get(key, 0) + 1
        # what the full snapshots cost after compaction-grade compression, vs the rest
        c = ldm_compressor(19)
        snaps = msgpack.packb([[w, e] for w, e in zip(s["wids"], s["events"]) if e.get("type") in (2, 4)])
        rest = msgpack.packb([[w, e] for w, e in zip(s["wids"], s["events"]) if e.get("type") not in (2, 4)])
        out.append({"session": s["name"], "raw_by_type": by, "count_by_type": counts,
                    "ldm19_snapshots_meta": len(c.compress(snaps)), "ldm19_incremental": len(c.compress(rest))})
    return out


def fmt_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=REPO / "bench" / "corpus")
    ap.add_argument("--block-seconds", type=float, default=10.0)
    ap.add_argument("--dict-size", type=int, default=112640, help="trained dictionary size (zstd CLI default)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)

    sessions = load_sessions(args.corpus)
    if not sessions:
        print(f"no sessions in {args.corpus}; run bench/make_corpus.py first", file=sys.stderr)
        return 2
    rows, secs = measure(sessions, int(args.block_seconds * 1000), args.dict_size)
    total = {"session": "TOTAL"}
    for k in rows[0]:
        if k != "session":
            vals = [r.get(k) for r in rows]
            total[k] = None if any(v is None for v in vals) else sum(vals)
    methods = ["snappy", "zstd3_block", *(f"ldm{lv}" for lv in LDM_LEVELS), "dict3_block"]

    def ratio(r, k):
        return "n/a" if r.get(k) is None else f"{r[k] / r['gzip6']:.3f}"

    print(f"# corpus: {args.corpus}  blocks: {args.block_seconds:g} s  dictionary: {args.dict_size} B, "
          f"leave-one-out\n")
    print("Sizes (bytes) and ratios vs gzip-6 (lower is better)\n")
    headers = ["session", "events", "blocks", "raw", "gzip-6", "raw/gz6", "snappy", "zstd3/blk",
               *(f"ldm-{lv}" for lv in LDM_LEVELS), "dict3/blk"]
    table = []
    for r in rows + [total]:
        table.append([r["session"], r["events"], r["blocks"], r["raw"], r["gzip6"],
                      f"{r['raw'] / r['gzip6']:.1f}x", *(ratio(r, k) for k in methods)])
    print(fmt_table(headers, table))
    print("\nAbsolute compressed bytes\n")
    print(fmt_table(["session", "gzip-6", *methods],
                    [[r["session"], r["gzip6"], *(r.get(k) if r.get(k) is not None else "n/a" for k in methods)]
                     for r in rows + [total]]))

    print("\nRaw JSON bytes by event type (share of the session's raw bytes; count)\n")
    breakdown = type_breakdown(sessions)
    keys = sorted({k for b in breakdown for k in b["raw_by_type"]},
                  key=lambda k: -sum(b["raw_by_type"].get(k, 0) for b in breakdown))
    tb = []
    for b in breakdown:
        tot = sum(b["raw_by_type"].values())
        tb.append([b["session"], *(f"{100 * b['raw_by_type'].get(k, 0) / tot:.1f}% ({b['count_by_type'].get(k, 0)})"
                                   for k in keys)])
    print(fmt_table(["session", *keys], tb))
    print("\nAfter ldm-19: full snapshots + meta vs incremental events, compressed separately\n")
    print(fmt_table(["session", "snapshots+meta", "incremental", "snapshot share"],
                    [[b["session"], b["ldm19_snapshots_meta"], b["ldm19_incremental"],
                      f"{100 * b['ldm19_snapshots_meta'] / (b['ldm19_snapshots_meta'] + b['ldm19_incremental']):.1f}%"]
                     for b in breakdown]))

    total_raw = sum(r["raw"] for r in rows)
    print("\nThroughput (MB of raw JSON per second, one core; dictionary training excluded)\n")
    print(fmt_table(["method", "seconds", "MB/s"],
                    [[k, f"{v:.2f}", f"{total_raw / 1e6 / v:.1f}"] for k, v in secs.items() if k != "dict_train"]
                    + [["dict_train (all folds)", f"{secs.get('dict_train', 0):.2f}", "-"]]))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps({"rows": rows + [total], "seconds": secs, "breakdown": breakdown},
                                           option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
