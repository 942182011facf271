#!/usr/bin/env python3
"""What one callgrind run spent beyond another, per function and per shared object.

    python bench/callgrind_diff.py LOADED IDLE [--per 256] [--inclusive] [--top 40]

For `bench/server_instructions.py --keep FILE` (FILE and FILE.idle): the server's start and stop
cost the same in both runs, so the difference is the uploads' own. ``--per N`` divides by the
uploads. Exclusive counts unless ``--inclusive`` (a C function with everything it calls: e.g.
`zlib_Decompress_decompress`, `ZstdCompressor_compress`, `transcode_upload`, `walk_packed`).
"""
from __future__ import annotations

import argparse
import collections
import re
import subprocess

LINE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[(.*)\])?$")


def costs(path: str, inclusive: bool) -> dict[tuple[str, str], int]:
    """(function, shared object) -> instructions, from `callgrind_annotate` over the whole file."""
    flags = ["--threshold=100"] + (["--inclusive=yes"] if inclusive else [])
    out = subprocess.run(["callgrind_annotate", *flags, path], capture_output=True, text=True, check=True).stdout
    table: dict[tuple[str, str], int] = collections.Counter()
    started = False
    for line in out.splitlines():
        if "file:function" in line:
            started = True
            continue
        m = LINE.match(line) if started else None
        if m:
            fn = re.sub(r"^.*?:(?=[^:/]+$)", "", m.group(2))  # drop the source path, keep the function
            obj = (m.group(3) or "?").rsplit("/", 1)[-1]
            table[(fn, obj)] += int(m.group(1).replace(",", ""))
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("loaded")
    p.add_argument("idle")
    p.add_argument("--per", type=float, default=1.0, help="divide by this (e.g. the uploads)")
    p.add_argument("--inclusive", action="store_true")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    a, b = costs(args.loaded, args.inclusive), costs(args.idle, args.inclusive)
    diff = {k: a.get(k, 0) - b.get(k, 0) for k in a.keys() | b.keys()}
    total = sum(diff.values()) if not args.inclusive else None
    unit = "instructions" if args.per == 1 else f"instructions per {args.per:g}"
    if total is not None:
        print(f"total difference: {total / args.per:,.0f} {unit}")
        by_obj: dict[str, int] = collections.Counter()
        for (_fn, obj), n in diff.items():
            by_obj[obj] += n
        print("by shared object:")
        for obj, n in sorted(by_obj.items(), key=lambda kv: -kv[1])[:15]:
            print(f"  {n / args.per:>14,.0f}  {100 * n / total:5.1f}%  {obj}")
    print("by function:" if not args.inclusive else "by function, inclusive:")
    for (fn, obj), n in sorted(diff.items(), key=lambda kv: -kv[1])[:args.top]:
        share = f"{100 * n / total:5.1f}%" if total else ""
        print(f"  {n / args.per:>14,.0f}  {share}  {fn}  [{obj}]")


if __name__ == "__main__":
    main()
