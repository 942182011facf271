#!/usr/bin/env python3
"""Server CPU per upload against server CPU per GET /healthz (aiohttp's own floor), one request at a time.

    .venv/bin/python bench/request_cost.py [--posts 1500]

Posts ~2 s uploads of the rrweb-player demo recording (a small app) one after the other on one
keep-alive connection to a `replay serve` child, 50 sessions round robin, default masking policy.
"""
import argparse
import http.client
import sys
import tempfile
import time
import zlib
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (Server, cpu_user_system, cut_batches, load_recordings, machine,  # noqa: E402
                      py_spy_recording, shifted)

p = argparse.ArgumentParser()
p.add_argument("--posts", type=int, default=1500)
p.add_argument("--py-spy", metavar="FILE", help="profile the server during the posts (py-spy collapsed stacks, see bench/top_frames.py)")
args = p.parse_args()
n = args.posts
rec = next(r for r in load_recordings() if r.name == "rrweb-player-demo")
batches = cut_batches(rec)
delta = int(time.time() * 1000) - 3600_000 - rec.events[0]["timestamp"]
bodies = []
for k in range(n):
    window, events = batches[k % len(batches)]
    raw = orjson.dumps({"session_id": f"s{k % 50}", "window_id": window, "batch_id": f"b{k}",
                        "events": shifted(events, delta + k * 100)})
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    bodies.append(c.compress(raw) + c.flush())

with tempfile.TemporaryDirectory() as tmp, Server(Path(tmp) / "data", ("--rate-limit", "0", "--compact-after", "0")) as s:
    host, port = s.url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port))
    time.sleep(1)
    c0 = s.cpu()
    for _ in range(n):
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    health = (s.cpu() - c0) / n
    with py_spy_recording(s.pid, args.py_spy, "--gil", "-r", "250"):
        c0, t0, (u0, s0) = s.cpu(), time.perf_counter(), cpu_user_system(s.pid)
        for body in bodies:
            conn.request("POST", f"/v1/recordings?token={s.token}", body=body,
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
        wall = (time.perf_counter() - t0) / n
        post = (s.cpu() - c0) / n
        u1, s1 = cpu_user_system(s.pid)
print(f"machine: {machine()}")
print(f"GET /healthz {health * 1e6:.0f} us CPU; POST upload {post * 1e6:.0f} us CPU, {wall * 1e3:.2f} ms wall "
      f"(fsync included; {(u1 - u0) / n * 1e6:.0f} us user, {(s1 - s0) / n * 1e6:.0f} us system); "
      f"RATIO post / healthz {post / health:.1f}x")
