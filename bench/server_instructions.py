#!/usr/bin/env python3
"""Instructions per upload through the whole server (HTTP, middlewares, ingest, masking, spool, flush).

    REPLAY_BENCH_CORPUS=bench/out/corpus-snapshot .venv/bin/python bench/server_instructions.py
        [--tree DIR] [--variants 1] [--concurrency 8] [--privacy on|off] [--floor] [--keep FILE]

`replay serve` runs under `valgrind --tool=callgrind` twice: once started and stopped with nothing
posted, once with every ~2 s upload of the corpus (`--variants` time-shifted copies, gzip'd JSON as
`ingest_throughput.py` sends them) posted by this process and flushed on SIGTERM, in one flush (an
early flush by size would fall wherever valgrind's pace puts it, and move the flush's zstd work). The difference,
divided by the uploads, is what one upload costs the server in user-space instructions: a count the
machine's speed does not move (the CPU-second ratios of `ingest_throughput.py` move 1.5x between
runs), covering what `packed_ingest.py` leaves out (aiohttp, the middlewares, the spool, the flush's
zstd and catalog). System calls are not counted. ``--tree DIR`` measures another checkout (before a
change); ``--keep FILE`` keeps the loaded run's callgrind file (and the idle one's as FILE.idle) for
`bench/callgrind_diff.py`.
The server runs with PYTHONHASHSEED=0 so str hashing does not move the count. ``--floor`` also
counts ingest_throughput.py's C floor for the same bodies (two passes minus one, under callgrind).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Server, load_recordings, machine, tree_launcher  # noqa: E402
from ingest_throughput import build_sessions, c_floor, create_project  # noqa: E402

CALLGRIND = ("valgrind", "--tool=callgrind")


async def post_all(url: str, token: str, sessions: list[list[tuple[bytes, int, int]]], concurrency: int) -> dict:
    """Every session's uploads in order, ``concurrency`` sessions at once; counts by status."""
    import aiohttp

    queue = list(reversed(sessions))
    statuses: dict[int, int] = {}
    target = f"{url}/v1/recordings?token={token}"
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}

    async def worker(http: aiohttp.ClientSession) -> None:
        while queue:
            for body, _raw, _events in queue.pop():
                async with http.post(target, data=body, headers=headers) as resp:
                    await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return statuses


def instructions(data: Path, args: argparse.Namespace, sessions: list | None, out: Path) -> tuple[int, dict]:
    """Instructions callgrind counted for one server run (posting ``sessions`` if given)."""
    if args.privacy == "off":
        asyncio.run(create_project(data, {"enforce": False}))
    wrapper = (*CALLGRIND, f"--callgrind-out-file={out}")
    env = {"PYTHONHASHSEED": "0", "REPLAY_FLUSH_BYTES": str(1 << 30)}
    server = Server(data, ("--flush-interval", "3600", "--rate-limit", "0"), env=env,
                    launcher=tree_launcher(args.tree) if args.tree else "", wrapper=wrapper)
    server.start(timeout=900)
    statuses = asyncio.run(post_all(server.url, server.token, sessions, args.concurrency)) if sessions else {}
    server.stop(timeout=1800)
    return callgrind_total(out, "".join(server.output[-20:])), statuses


def callgrind_total(out: Path, context: str = "") -> int:
    """The instruction count a callgrind output file records for the whole run."""
    m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.M)
    if not m:
        raise RuntimeError(f"no callgrind total in {out}\n{context}")
    return int(m.group(1))


def floor_passes(bodies_file: str, passes: int) -> None:
    """ingest_throughput.py's C floor over the bodies, ``passes`` times (run under callgrind)."""
    c_floor(msgpack.unpackb(Path(bodies_file).read_bytes()), gc_on=False, repeats=passes)


def floor_instructions(bodies: list[bytes], tmp: Path) -> int:
    """One pass of the floor in instructions: two passes minus one (the start-up cancels out)."""
    path = tmp / "bodies.msgpack"
    path.write_bytes(msgpack.packb(bodies))
    counts = []
    for passes in (1, 2):
        out = tmp / f"floor{passes}.cg"
        subprocess.run([*CALLGRIND, f"--callgrind-out-file={out}", sys.executable, __file__, "--floor-pass",
                        str(path), str(passes)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": "0"})
        counts.append(callgrind_total(out))
    return counts[1] - counts[0]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--floor-pass":
        floor_passes(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", help="run `replay serve` from this checkout (git worktree) instead of this one")
    p.add_argument("--variants", type=int, default=1, help="time-shifted copies of each recording (default 1)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--privacy", choices=("on", "off"), default="on")
    p.add_argument("--floor", action="store_true", help="also count the C floor of the same bodies (one pass)")
    p.add_argument("--keep", metavar="FILE", help="keep the loaded run's callgrind output here (the idle run's in FILE.idle)")
    args = p.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed (apt-get install -y valgrind)")
    recs = load_recordings()
    sessions = build_sessions(recs, args.variants)
    uploads = sum(len(s) for s in sessions)
    raw = sum(r for s in sessions for _, r, _ in s)
    print(machine())
    print(f"{uploads} uploads of {len(sessions)} sessions, {raw / 1e6:.1f} MB raw JSON; privacy {args.privacy}; "
          f"tree {args.tree or 'this one'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        idle, _ = instructions(Path(tmp) / "idle", args, None, Path(tmp) / "idle.cg")
        loaded, statuses = instructions(Path(tmp) / "loaded", args, sessions, Path(tmp) / "loaded.cg")
        floor = floor_instructions([b for s in sessions for b, _, _ in s], Path(tmp)) if args.floor else 0
        if args.keep:
            shutil.copy(Path(tmp) / "loaded.cg", args.keep)
            shutil.copy(Path(tmp) / "idle.cg", args.keep + ".idle")
    if statuses != {200: uploads}:
        sys.exit(f"not every upload was accepted: {statuses}")
    per = (loaded - idle) / uploads
    print(f"server started and stopped: {idle / 1e6:,.0f} M instructions; with the uploads: {loaded / 1e6:,.0f} M")
    print(f"PER UPLOAD: {per / 1e6:.3f} M instructions ({(loaded - idle) / raw:.0f} per raw JSON byte)")
    if floor:
        print(f"the C floor (gunzip, orjson, msgpack, zstd-3 of the same bodies): {floor / uploads / 1e6:.3f} M per "
              f"upload; floor / server in instructions: {floor / (loaded - idle):.2f} (CPU seconds weigh them "
              "differently: see ingest_throughput.py)")


if __name__ == "__main__":
    main()
