#!/usr/bin/env python3
"""Concurrency: server memory and latency with 1,000 sessions each posting every 2 s.

    python bench/concurrency.py [--sessions 1000] [--seconds 90] [--baseline-sessions 10] [--mix app|corpus] [--repeat 3]

A load process (aiohttp client, one keep-alive connection per session) runs ``--sessions`` sessions
against a `replay serve` child process. Each session starts at a random moment of the first 2 s
and then posts one ~2 s batch of its recording every 2 s: 1,000 sessions are 500 uploads a second.
Latency is measured from the moment a post was DUE (not when the client got round to sending it),
so a client that falls behind shows as latency instead of hiding it; the send-to-response time is
reported next to it. Before it, the same measurement with ``--baseline-sessions`` on a fresh server
gives the baseline the ratios are taken against.

--mix app (default): the rrweb-player demo recording (a small app: ~2 KB of events a second).
--mix corpus: every recording in bench/corpus/ (documentation sites: full snapshots of 0.3-1 MB at
each page view, tens of KB a second per session) -- far more bytes per session.

On a shared or virtual machine one run's p99 is at the mercy of a slow spell (the same code
has measured 65 and 355 ms in consecutive runs): ``--repeat N`` measures N fresh servers (with
``--before-tree``, before and after alternate) and the verdict takes the median p99.

Target: 1,000 concurrent sessions on one receiver process, p99 < 100 ms, no errors.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (REPO, RssSampler, Server, cpu_user_system, cut_batches, load_recordings, machine,  # noqa: E402
                      machine_steal_seconds, percentile, py_spy_recording, shifted, status_kb,
                      tree_launcher)

PERIOD = 2.0


def raise_fd_limit() -> int:
    """Two sockets per session (client and server side) plus the usual files: lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- the load process ------------------------------------------------------------------------------

def build_bodies(mix: str, sessions: int, posts: int, seed: int = 1) -> list[list[tuple[bytes, int]]]:
    recs = load_recordings()
    if mix == "app":
        recs = [r for r in recs if r.name == "rrweb-player-demo"]
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for s in range(sessions):
        rec = recs[s % len(recs)]
        batches = cut_batches(rec)
        first = rng.randrange(len(batches))  # sessions are at different points of their recording
        delta = now - 3600_000 + s * 1000 - rec.events[0]["timestamp"]
        bodies = []
        for k in range(posts):
            window, events = batches[(first + k) % len(batches)]
            lap = (first + k) // len(batches)  # a replayed recording moves on in time
            raw = orjson.dumps({"session_id": f"conc-{s}", "window_id": f"{window[:50]}-{lap}",
                                "batch_id": f"conc-{s}-{k}", "events": shifted(events, delta + lap * rec.duration_ms)})
            c = zlib.compressobj(6, zlib.DEFLATED, 31)
            bodies.append((c.compress(raw) + c.flush(), len(raw)))
        out.append(bodies)
    return out


async def generate(url: str, token: str, sessions: int, seconds: float, mix: str) -> dict:
    import aiohttp

    raise_fd_limit()
    posts = int(seconds / PERIOD) + 1
    bodies = build_bodies(mix, sessions, posts)
    # The load process must not add pauses of its own to what it measures: its bodies (tens of
    # thousands of objects) are frozen out of its garbage collector's walks.
    gc.collect()
    gc.freeze()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu0 = time.process_time()
    target = f"{url}/v1/recordings?token={token}"
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    due_lat: list[float] = []
    due_at: list[float] = []  # when each post was due, from the start of the load
    send_lat: list[float] = []
    statuses: dict[str, int] = {}
    sent = {"raw": 0, "wire": 0}
    t_start = time.monotonic()
    deadline = t_start + seconds
    rng = random.Random(2)

    async def session(http: aiohttp.ClientSession, mine: list[tuple[bytes, int]]) -> None:
        due = t_start + rng.uniform(0, PERIOD)
        for body, raw in mine:
            if due >= deadline:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent_at = time.monotonic()
            try:
                async with http.post(target, data=body, headers=headers) as resp:
                    await resp.read()
                    key = str(resp.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                key = type(exc).__name__
            done = time.monotonic()
            due_lat.append(done - due)
            due_at.append(due - t_start)
            send_lat.append(done - sent_at)
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                sent["raw"] += raw
                sent["wire"] += len(body)
            due += PERIOD

    connector = aiohttp.TCPConnector(limit=sessions + 50, limit_per_host=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        await asyncio.gather(*(session(http, b) for b in bodies))
    return {"wall": time.monotonic() - t_start, "client_cpu": time.process_time() - cpu0, "due": due_lat, "due_at": due_at, "send": send_lat, "statuses": statuses, **sent}


# -- one phase: fresh server, N sessions -----------------------------------------------------------

def phase(sessions: int, seconds: float, mix: str, tmp: Path, py_spy: str | None = None, launcher: str = "") -> dict:
    with Server(tmp, ("--rate-limit", "0"), launcher=launcher) as server:
        load = subprocess.Popen([sys.executable, __file__, "--generate", server.url, server.token, str(sessions),
                                 str(seconds), mix], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert load.stdout.readline().strip() == "READY"
        with py_spy_recording(server.pid, py_spy, "-r", "200", "--gil", "--threads"):
            rss0 = status_kb(server.pid, "VmRSS")
            cpu0, wait0, sys0 = server.cpu(), server.runqueue_wait(), cpu_user_system(server.pid)[1]
            steal0 = machine_steal_seconds()
            with RssSampler(server.pid, interval=0.05) as rss:
                load.stdin.write("GO\n")
                load.stdin.flush()
                result = json.loads(load.stdout.readline())
                load.wait()
                rss_end = status_kb(server.pid, "VmRSS")
            cpu, wait = server.cpu() - cpu0, server.runqueue_wait() - wait0
            steal = machine_steal_seconds() - steal0
            sys1 = cpu_user_system(server.pid)[1]
    due, send, due_at = result.pop("due"), result.pop("send"), result.pop("due_at")
    buckets: dict[int, list[float]] = {}
    for at, lat in zip(due_at, due):
        buckets.setdefault(int(at // 10), []).append(lat)
    return {**result, "requests": len(due), "rss0_mb": rss0 / 1024, "rss_peak_mb": rss.peak_kb / 1024,
            "rss_end_mb": rss_end / 1024, "cpu": cpu, "wait": wait, "cpu_system": sys1 - sys0, "steal": steal,
            "p50": percentile(due, 50) * 1000, "p99": percentile(due, 99) * 1000, "max": max(due) * 1000,
            "send_p50": percentile(send, 50) * 1000, "send_p99": percentile(send, 99) * 1000,
            "p99_by_10s": [percentile(buckets[k], 99) * 1000 for k in sorted(buckets)]}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")  # a short run can take under one clock tick of CPU


def describe(n: int, r: dict) -> str:
    ok = r["statuses"].get("200", 0)
    return (f"{n} sessions: {r['requests']} posts in {r['wall']:.0f} s ({r['requests'] / r['wall']:.0f}/s), "
            f"statuses {r['statuses']}, {r['raw'] / 1e6 / r['wall']:.2f} MB/s raw; "
            f"latency from due p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms max {r['max']:.0f} ms "
            f"(from send p50 {r['send_p50']:.1f} p99 {r['send_p99']:.1f}); server RSS {r['rss0_mb']:.0f} MB idle, "
            f"peak {r['rss_peak_mb']:.0f} MB, end {r['rss_end_mb']:.0f} MB; server CPU {r['cpu'] / r['wall']:.0%} "
            f"of a core ({_ratio(r['cpu_system'], r['cpu']):.0%} of it in the kernel), "
            f"{r['cpu'] / r['requests'] * 1000:.2f} ms per post ({_ratio(r['cpu'], r['client_cpu']):.2f}x the load process's "
            f"CPU for the same posts), runnable-but-waiting for a CPU "
            f"{r['wait'] / r['wall']:.0%} of the time (load process CPU {r['client_cpu'] / r['wall']:.0%}; "
            f"hypervisor steal {r['steal'] / r['wall']:.0%} of a core); "
            f"errors {r['requests'] - ok}; p99 per 10 s of load: "
            f"{' '.join(f'{v:.0f}' for v in r['p99_by_10s'])} ms")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        _, _, url, token, sessions, seconds, mix = sys.argv
        from replay.cli import event_loop_factory

        # The load process runs on the same event loop as replay serve (uvloop where installed).
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            result = runner.run(generate(url, token, int(sessions), float(seconds), mix))
        print(json.dumps(result), flush=True)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=90, help="load duration (default 90)")
    p.add_argument("--baseline-sessions", type=int, default=10)
    p.add_argument("--baseline-seconds", type=float, default=30)
    p.add_argument("--mix", choices=("app", "corpus"), default="app")
    p.add_argument("--py-spy", metavar="FILE", help="profile the server during the measured phase (collapsed stacks)")
    p.add_argument("--repeat", type=int, default=1,
                   help="measured runs, each on a fresh server (the verdict takes their median p99)")
    p.add_argument("--before-tree", metavar="DIR",
                   help="also measure the same load on `replay serve` from this checkout (git worktree): before/after")
    args = p.parse_args()
    limit = raise_fd_limit()
    if limit < 2 * args.sessions + 200:
        sys.exit(f"open-file limit {limit} is too low for {args.sessions} sessions")
    print(f"machine: {machine()}; mix {args.mix}; one post per session every {PERIOD:g} s")
    olds: list[dict] = []
    bigs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="replay-conc-") as tmp:
        base = phase(args.baseline_sessions, args.baseline_seconds, args.mix, Path(tmp) / "base")
        print("baseline  " + describe(args.baseline_sessions, base), flush=True)
        for run in range(args.repeat):
            # Before and after alternate, each on a fresh server, so a slow spell of the machine
            # lands on both sides instead of on one.
            if args.before_tree:
                olds.append(phase(args.sessions, args.seconds, args.mix, Path(tmp) / f"before{run}", None,
                                  tree_launcher(args.before_tree)))
                print(f"BEFORE ({args.before_tree}) " + describe(args.sessions, olds[-1]), flush=True)
            bigs.append(phase(args.sessions, args.seconds, args.mix, Path(tmp) / f"big{run}",
                              args.py_spy if run == 0 else None))
            print("measured  " + describe(args.sessions, bigs[-1]), flush=True)
    big = bigs[0]
    per_session_kb = (big["rss_peak_mb"] - big["rss0_mb"]) * 1024 / args.sessions
    print(f"RATIOS {args.sessions} / {args.baseline_sessions} sessions (first run): p99 {big['p99'] / base['p99']:.2f}x, "
          f"p50 {big['p50'] / base['p50']:.2f}x, peak RSS {big['rss_peak_mb'] / base['rss_peak_mb']:.2f}x "
          f"({per_session_kb:.0f} KB per session over idle)")

    def p99s(runs: list[dict]) -> str:
        return " ".join(f"{r['p99']:.0f}" for r in runs)

    if args.before_tree:
        ratio = statistics.median(b["p99"] / o["p99"] for b, o in zip(bigs, olds))
        cpu = statistics.median((b["cpu"] / b["requests"]) / (o["cpu"] / o["requests"]) for b, o in zip(bigs, olds))
        # The load process does the same work in every run, so server CPU over its CPU cancels out
        # how fast the machine happened to be: the steadier figure for a before/after.
        relative = statistics.median((b["cpu"] / b["client_cpu"]) / (o["cpu"] / o["client_cpu"]) for b, o in zip(bigs, olds))
        print(f"RATIOS after / before, median of {len(bigs)} pairs: p99 {ratio:.2f}x, CPU per post {cpu:.2f}x "
              f"({relative:.2f}x relative to the load process's CPU); "
              f"p99 before {p99s(olds)} ms, after {p99s(bigs)} ms")
    errors = sum(b["requests"] - b["statuses"].get("200", 0) for b in bigs)
    median_p99 = statistics.median(b["p99"] for b in bigs)
    under = sum(b["p99"] < 100 for b in bigs)
    verdict = "MET" if median_p99 < 100 and errors == 0 else "MISSED"
    print(f"target {args.sessions} sessions, p99 < 100 ms, no errors: {verdict} "
          f"(median p99 of {len(bigs)} runs {median_p99:.1f} ms; {under} of {len(bigs)} runs under 100 ms; "
          f"runs {p99s(bigs)} ms; {errors} errors)")

if __name__ == "__main__":
    main()
