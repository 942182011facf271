#!/usr/bin/env python3
"""Ingest throughput: raw MB and events per SERVER CPU second, against the C floor for the same bytes.

    python bench/ingest_throughput.py [--seconds 20] [--concurrency 32] [--variants 24] [--slices 6]

1. Cuts real recordings (bench/corpus/*.json, else the test fixture) into ~2 s uploads; every
   session is a copy shifted in time, so no two bodies are alike. Bodies are gzip'd JSON, as
   capture.js and posthog-js send them, with the token in the query string.
2. The C floor: the same bodies through gunzip (zlib-ng, what the server inflates with since the
   seventh pass, so a faster library on one side does not flatter the ratio) -> orjson.loads -> msgpack.packb(events) ->
   zstd-3, in this process, timed in CPU seconds. No HTTP, no per-event Python work: what the
   server would cost if it were only its C libraries. Timed with the garbage collector off
   (decoding allocates millions of containers; each gen-0 collection walks the young ones), the
   stricter baseline; with it on too, for reference.
3. `replay serve` as a child process; a load generator in ANOTHER child process (aiohttp client,
   ``--concurrency`` sessions in flight, each posting its batches back to back, at most
   ``--seconds`` in all). The server's CPU time is read from /proc before and after, and again once
   the spool has flushed, so the figure includes the batch objects' zstd, the catalog and the fsyncs.
4. Interleaved: the load runs in ``--slices`` slices of equal upload counts, and before each the
   floor runs over every ``slices``-th body (one pass; over the run, every body once). The
   machine's speed moves by half within a minute (floor readings of 34-66 MB/CPU-s on one day):
   a floor timed before the load and a server timed after it compared two spells, and the best of
   several floor passes against one server pass compared the fastest spell with a typical one.
   Slices put both sides in the same spells, one pass each.

Ratio reported: server raw MB per CPU second / floor raw MB per CPU second, the floor in the same
slices. Target >= 0.5. Printed beside it, the ratio before the fourteenth pass: the floor best of 3
passes before the load and 3 after it, the faster counting.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import msgpack
import orjson
import zstandard
from zlib_ng import zlib_ng

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (REPO, Server, cut_batches, load_recordings, machine, percentile, py_spy_recording,  # noqa: E402
                      shifted, tree_launcher)

DAY_MS = 24 * 3600 * 1000
BEFORE_LAUNCHER = str(Path(__file__).resolve().parent / "serve_default_gc.py")
STOPPING_LAUNCHER = str(Path(__file__).resolve().parent / "serve_stopping_early.py")


# -- bodies ----------------------------------------------------------------------------------------

def build_sessions(recs: list, variants: int) -> list[list[tuple[bytes, int, int]]]:
    """``variants`` copies of every recording as sessions: [(gzip body, raw bytes, events), ...] each."""
    now = int(time.time() * 1000)
    sessions = []
    for v in range(variants):
        for r, rec in enumerate(recs):
            # Each copy starts at a different recent moment, as if recorded by another visitor.
            delta = now - DAY_MS + (v * len(recs) + r) * 97_000 - rec.events[0]["timestamp"]
            sid = f"bench-{v}-{r}-{rec.name}"
            bodies = []
            for i, (window, events) in enumerate(cut_batches(rec)):
                raw = orjson.dumps({"session_id": sid, "window_id": window, "batch_id": f"{sid}-{i}",
                                    "distinct_id": f"user{v}@example.com", "events": shifted(events, delta)})
                bodies.append((zlib_gzip(raw), len(raw), len(events)))
            sessions.append(bodies)
    return sessions


def zlib_gzip(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


# -- the floor -------------------------------------------------------------------------------------

def floor_pass(bodies: list[bytes], gc_on: bool = False, cctx: zstandard.ZstdCompressor | None = None) -> float:
    """CPU seconds of one pass of the floor: gunzip, parse, msgpack and zstd-3 every body."""
    cctx = cctx or zstandard.ZstdCompressor(level=3)
    gc.collect()
    if not gc_on:
        gc.disable()
    try:
        t0 = time.process_time()
        for body in bodies:
            obj = orjson.loads(zlib_ng.decompress(body, 31))
            cctx.compress(msgpack.packb(obj["events"], use_bin_type=True))
            del obj
        return time.process_time() - t0
    finally:
        gc.enable()


def c_floor(bodies: list[bytes], gc_on: bool, repeats: int = 3) -> float:
    """CPU seconds of the floor over every body, best of ``repeats`` passes."""
    cctx = zstandard.ZstdCompressor(level=3)
    return min(floor_pass(bodies, gc_on, cctx) for _ in range(repeats))


# -- the load generator (runs in its own process) --------------------------------------------------

async def generate(bodies_file: Path, url: str, token: str, seconds: float, concurrency: int) -> dict:
    """Post the sessions' bodies, ``concurrency`` sessions at a time, in slices the parent asks for.

    Each line on stdin ``GO n`` posts the next ``n`` uploads (the sessions in flight carry on where
    the last slice left them) and answers whether the load is done; ``END`` answers the totals. Between slices
    nothing is posted, so the parent can run a slice of the floor on a quiet machine.
    """
    import aiohttp

    sessions = msgpack.unpackb(bodies_file.read_bytes())
    queue: asyncio.Queue = asyncio.Queue()
    for s in sessions:
        queue.put_nowait(s)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = {"raw": 0, "events": 0, "wire": 0}
    cursors: list = [None] * concurrency  # each worker's session, part posted
    target = f"{url}/v1/recordings?token={token}"
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    deadline = 0.0
    loop = asyncio.get_running_loop()

    async def session_worker(http: aiohttp.ClientSession, slot: int, budget: list[int]) -> None:
        while budget[0] > 0 and time.monotonic() < deadline:
            if cursors[slot] is None:
                if queue.empty():
                    return
                cursors[slot] = iter(queue.get_nowait())
            item = next(cursors[slot], None)
            if item is None:
                cursors[slot] = None
                continue
            body, raw, events = item
            budget[0] -= 1
            t0 = time.perf_counter()
            async with http.post(target, data=body, headers=headers) as resp:
                await resp.read()
            latencies.append(time.perf_counter() - t0)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 200:
                sent["raw"] += raw
                sent["events"] += events
                sent["wire"] += len(body)

    print("READY", flush=True)
    wall = 0.0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        while (line := (await loop.run_in_executor(None, sys.stdin.readline)).split()) and line[0] == "GO":
            started = time.monotonic()
            deadline = started + seconds - wall  # the cap counts the slices' time, not the floor's between them
            budget = [int(line[1])]
            await asyncio.gather(*(session_worker(http, slot, budget) for slot in range(concurrency)))
            wall += time.monotonic() - started
            done = wall >= seconds or (queue.empty() and all(c is None for c in cursors))
            print(json.dumps({"done": done}), flush=True)
    return {"wall": wall, "latencies": latencies, "statuses": statuses, **sent}


async def create_project(data: Path, policy: dict) -> None:
    """The project `replay serve` will find first, with ``policy`` (no API sets policies yet)."""
    from replay.config import settings_from
    from replay.service import Service

    service = Service(settings_from(data=str(data)))
    await service.start(background=False)
    try:
        project, _key = await service.ensure_default_project()
        await service.catalog.set_policy(project.id, policy)
    finally:
        await service.stop()


# -- the run ---------------------------------------------------------------------------------------

def run_once(bodies_file: Path, bodies: list[bytes], raw_sizes: list[int], args: argparse.Namespace, tmp: Path,
             launcher: str = "") -> dict:
    """One server under load, its uploads in ``args.slices`` slices with a slice of the floor before each.

    The machine's speed moves by half within a minute, so a floor measured before the load and a
    server measured after it compare two spells. Interleaved, the floor's slices and the server's
    fall in the same spells: the ratio of their sums is what the code costs, not when it ran. The
    older figures are kept beside it: the floor before and after the load, best of 3 passes each.
    """
    raw_total = sum(raw_sizes)
    floor_gc = c_floor(bodies, gc_on=True)
    floor_nogc = c_floor(bodies, gc_on=False)
    if args.privacy == "off":
        asyncio.run(create_project(tmp, {"enforce": False}))
    server = Server(tmp, ("--flush-interval", str(args.flush_interval), "--rate-limit", "0"), launcher=launcher)
    per_slice = -(-len(bodies) // args.slices)  # uploads the server gets per slice
    floor_cpu = floor_raw = 0.0
    with server:
        load = subprocess.Popen([sys.executable, __file__, "--generate", str(bodies_file), server.url,
                                 server.token, str(args.seconds), str(args.concurrency)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert load.stdout.readline().strip() == "READY"
        with py_spy_recording(server.pid, args.py_spy, "-r", "200", "--nonblocking"):
            cpu0 = server.cpu()
            in_slices = 0.0
            done = False
            for k in range(args.slices):
                # Every k-th body: each slice of the floor is a sample of the whole corpus, and over
                # the run the floor reads every body once.
                floor_cpu += floor_pass(bodies[k::args.slices])
                floor_raw += sum(raw_sizes[k::args.slices])
                if done:
                    continue
                before = server.cpu()
                load.stdin.write(f"GO {per_slice}\n")
                load.stdin.flush()
                done = json.loads(load.stdout.readline())["done"]
                in_slices += server.cpu() - before
            load.stdin.write("END\n")
            load.stdin.flush()
            result = json.loads(load.stdout.readline())
            load.wait()
            cpu1 = server.cpu()
        # The tail of the load may still be in the spool: wait for the flush that stores it.
        deadline = time.monotonic() + args.flush_interval + 60
        while server.spooled_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        cpu2 = server.cpu()
    # The floor again once the server is gone: the faster of the two (the stricter) counts in the
    # older figure.
    floor_after = c_floor(bodies, gc_on=False)
    lat = result.pop("latencies")
    return {
        "floor_gc_on": raw_total / 1e6 / floor_gc,
        "floor_gc_off": raw_total / 1e6 / min(floor_nogc, floor_after),
        "floor_before": raw_total / 1e6 / floor_nogc, "floor_after": raw_total / 1e6 / floor_after,
        "floor_sliced": floor_raw / 1e6 / floor_cpu,
        "mb": result["raw"] / 1e6, "events": result["events"], "requests": len(lat),
        "statuses": result["statuses"], "wire_mb": result["wire"] / 1e6, "wall": result["wall"],
        "cpu_slices": in_slices, "cpu_ingest": cpu1 - cpu0, "cpu_total": cpu2 - cpu0,
        "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
    }


def report(r: dict, args: argparse.Namespace) -> str:
    ingest = r["mb"] / r["cpu_ingest"]
    total = r["mb"] / r["cpu_total"]
    r["ratio"] = total / r["floor_sliced"]
    r["ratio_fastest_floor"] = total / r["floor_gc_off"]
    return "\n".join([
        f"load: {r['requests']} requests {r['statuses']}, {r['mb']:.1f} MB raw JSON "
        f"({r['wire_mb']:.1f} MB gzip'd), {r['events']} events in {r['wall']:.1f} s wall, {args.slices} slices",
        f"  C floor (gunzip (zlib-ng)+orjson+msgpack+zstd-3, gc off): {r['floor_sliced']:.1f} MB/CPU-s in slices "
        f"between the server's; before the load {r['floor_before']:.1f}, after it {r['floor_after']:.1f} "
        f"(best of 3 each); {r['floor_gc_on']:.1f} with gc on",
        f"  server, requests only: {ingest:.1f} MB/CPU-s, {r['events'] / r['cpu_ingest']:.0f} events/CPU-s "
        f"({r['cpu_ingest']:.2f} CPU-s, {r['cpu_slices']:.2f} of them within the slices)",
        f"  server, incl. flush:   {total:.1f} MB/CPU-s, {r['events'] / r['cpu_total']:.0f} events/CPU-s "
        f"({r['cpu_total']:.2f} CPU-s)",
        f"  latency: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms (closed loop, {args.concurrency} in flight)",
        f"  ratio server (incl. flush) / C floor in the same slices: {r['ratio']:.2f}   "
        f"(vs the fastest floor before/after: {r['ratio_fastest_floor']:.2f}; vs the gc-on floor: "
        f"{total / r['floor_gc_on']:.2f})",
    ])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        _, _, path, url, token, seconds, concurrency = sys.argv
        result = asyncio.run(generate(Path(path), url, token, float(seconds), int(concurrency)))
        print(json.dumps(result), flush=True)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20, help="load duration cap (default 20)")
    p.add_argument("--concurrency", type=int, default=32, help="sessions posting at once (default 32)")
    p.add_argument("--variants", type=int, default=24, help="time-shifted copies of each recording (default 24)")
    p.add_argument("--flush-interval", type=float, default=10)
    p.add_argument("--py-spy", metavar="FILE", help="profile the server under load (py-spy collapsed stacks, see bench/top_frames.py)")
    p.add_argument("--privacy", choices=("on", "off"), default="on",
                   help="off: the project's policy is {enforce: false}, to see what masking costs")
    p.add_argument("--before-after", action="store_true",
                   help="each run also measures a server with default GC settings (bench/serve_default_gc.py)")
    p.add_argument("--before-tree", metavar="DIR",
                   help="with --before-after: BEFORE is `replay serve` from this checkout (git worktree) instead of "
                        "default GC settings")
    p.add_argument("--repeat", type=int, default=3, help="paired floor+server runs; the median ratio counts")
    p.add_argument("--slices", type=int, default=6,
                   help="the load in this many slices, a slice of the floor before each (default 6)")
    p.add_argument("--stop-after", choices=("respond", "accept", "records"),
                   help="ceilings: the server answers 200 after reading the body (respond) or just before "
                        "Service.accept (accept: decoded, parsed, checked), or once the spool records are made (records: "
                        "masked and packed, nothing written); bench/serve_stopping_early.py")
    args = p.parse_args()
    recs = load_recordings()
    sessions = build_sessions(recs, args.variants)
    bodies = [b for s in sessions for b, _, _ in s]
    raw_sizes = [r for s in sessions for _, r, _ in s]
    raw_total = sum(raw_sizes)
    privacy = "privacy" in (REPO / "replay" / "service.py").read_text() and args.privacy == "on"
    print(f"machine: {machine()}; orjson {orjson.__version__}")
    print(f"bodies: {len(bodies)} uploads of {len(sessions)} sessions ({args.variants} time-shifted copies of "
          f"{', '.join(r.name for r in recs)}), {raw_total / 1e6:.1f} MB raw JSON; concurrency {args.concurrency}; "
          f"privacy enforcement: {'on (default policy)' if privacy else 'off'}")
    ratios, fastest = [], []
    before_name = f"code in {args.before_tree}" if args.before_tree else "default GC"
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        bodies_file = Path(tmp) / "bodies.msgpack"
        bodies_file.write_bytes(msgpack.packb(sessions))
        del sessions
        before, cpu_pairs = [], []  # (before, after) server CPU-s incl. flush, per pair
        for i in range(args.repeat):
            if args.before_after:
                launcher = tree_launcher(args.before_tree) if args.before_tree else BEFORE_LAUNCHER
                r = run_once(bodies_file, bodies, raw_sizes, args, Path(tmp) / f"before{i}", launcher)
                print(f"run {i + 1}/{args.repeat} BEFORE ({before_name}): " + report(r, args), flush=True)
                before.append(r["ratio"])
                cpu_before = r["cpu_total"]
            launcher = f"{STOPPING_LAUNCHER} {args.stop_after}" if args.stop_after else ""
            r = run_once(bodies_file, bodies, raw_sizes, args, Path(tmp) / f"data{i}", launcher)
            print(f"run {i + 1}/{args.repeat}: " + report(r, args), flush=True)
            ratios.append(r["ratio"])
            fastest.append(r["ratio_fastest_floor"])
            if args.before_after:
                cpu_pairs.append((cpu_before, r["cpu_total"]))

    def median(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"median {xs[len(xs) // 2]:.2f} of {len(xs)} runs ({', '.join(f'{x:.2f}' for x in xs)})"

    if before:
        print(f"RATIO BEFORE ({before_name}) ingest / C floor: {median(before)}")
        # The same uploads, so the CPU each pair took compares directly; a pair whose BEFORE run fell in
        # one of the machine's fast spells shows as an outlier here rather than moving a median ratio.
        shares = [after / b for b, after in cpu_pairs]
        print(f"SERVER CPU after / before, per pair: {', '.join(f'{x:.2f}' for x in shares)} "
              f"(median {sorted(shares)[len(shares) // 2]:.2f})")
    print(f"ratio vs the fastest floor before/after the load (the figure before the 14th pass): {median(fastest)}")
    print(f"RATIO ingest / C floor (in the same slices): {median(ratios)}   target >= 0.50")


if __name__ == "__main__":
    main()
