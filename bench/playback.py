#!/usr/bin/env python3
"""Playback: time to first byte, time to the first full snapshot, and server memory while streaming,
for sessions of 1, 10 and 60 minutes, hot (one block per 10 s flush) and compacted.

    python bench/playback.py [--minutes 1,10,60] [--repeat 3] [--no-compacted]

Sessions are synthetic but made of real events: the recordings (bench/corpus/, else the test
fixture) stitched end to end, each shifted to start 2 s after the previous one ended, as if the
visitor kept browsing. Every recording starts with Meta + FullSnapshot and takes another one at
each navigation, as rrweb does, so full snapshots recur all through a long session. All lengths
share the same first minute, so their first full snapshot is the same event.

Build: an in-process Service ingests each session in ~2 s uploads (the privacy policy applies, as at
ingest), flushing after every 10 s of recorded time, so a 60-minute session is 360 hot blocks in 360
batch objects. A copy of that data directory is compacted with replay/compaction.py.

Measure: a FRESH `replay serve` child per reading (VmHWM is a process-lifetime peak), an HTTP GET of
/api/projects/P/sessions/S/events; the client parses the streamed array incrementally. Server memory
is sampled from /proc/<pid>/status every 5 ms; growth = peak VmRSS while streaming - VmRSS before.

Targets: first full snapshot (60 min) / (1 min) <= 1.5; memory growth does not rise with length.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import FULL_SNAPSHOT, Recording, RssSampler, Server, cut_batches, load_recordings, machine, status_kb  # noqa: E402

FLUSH_EVERY_MS = 10_000  # --flush-interval's default: one block per session per 10 s


# -- building sessions -----------------------------------------------------------------------------

def stitch(recs: list[Recording], minutes: float, start_ms: int) -> Recording:
    """Recordings end to end (2 s apart) until ``minutes`` of session; every copy is a new tab."""
    events: list[dict[str, Any]] = []
    windows: list[str] = []
    end = start_ms + int(minutes * 60_000)
    t, k = start_ms, 0
    while t < end:
        rec = recs[k % len(recs)]
        delta = t - rec.events[0]["timestamp"]
        for ev, w in zip(rec.events, rec.windows):
            ts = ev["timestamp"] + delta
            if ts > end:
                break
            events.append({**ev, "timestamp": ts})
            windows.append(f"{w[:60]}-{k}")
        t = events[-1]["timestamp"] + 2_000
        k += 1
    return Recording(f"stitched-{minutes:g}m", events, windows)


async def ingest(data: Path, rec: Recording, session_id: str) -> tuple[str, str]:
    """Ingest ``rec`` through Service.accept with a flush per 10 s of recording; returns (project, API key)."""
    from replay.config import settings_from
    from replay.ingest.batch import Batch
    from replay.service import Service

    service = Service(settings_from(data=str(data), compact_after=0, rate_limit=0))
    await service.start(background=False)
    try:
        project, key = await service.ensure_default_project()
        batches = cut_batches(rec)
        window_start = batches[0][1][0]["timestamp"]
        for i, (window, events) in enumerate(batches):
            if events[0]["timestamp"] - window_start >= FLUSH_EVERY_MS:
                await service.flush()
                window_start = events[0]["timestamp"]
            # A private copy: privacy enforcement rewrites events in place.
            events = orjson.loads(orjson.dumps(events))
            await service.accept(project, [Batch(project.id, session_id, window, f"b{i}", events, "bench@example.com")])
        await service.flush()
    finally:
        await service.stop()
    return project.id, key


async def compact(data: Path, project_id: str, session_id: str) -> str:
    from replay.config import settings_from
    from replay.service import Service

    service = Service(settings_from(data=str(data), compact_after=0, rate_limit=0))
    await service.start(background=False)
    try:
        result = await service.compactor.compact_session(project_id, session_id)
    finally:
        await service.stop()
    return f"{result.outcome}: {result.blocks_before} blocks -> {result.blocks_after}, " \
           f"{result.bytes_before / 1e6:.1f} MB -> {result.bytes_after / 1e6:.1f} MB"


# -- reading ---------------------------------------------------------------------------------------

_SKIP = re.compile(rb'[^"\[\]{}]*')
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


class ArrayScanner:
    """Finds complete top-level elements of a JSON array as its bytes arrive (strings skipped in C)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.depth = 0
        self.start = -1

    def feed(self, chunk: bytes) -> list[bytes]:
        self.buf += chunk
        found = []
        buf, pos, n = self.buf, self.pos, len(self.buf)
        while True:
            pos = _SKIP.match(buf, pos).end()
            if pos >= n:
                break
            c = buf[pos]
            if c == 0x22:  # a string: only whole ones count
                m = _STRING.match(buf, pos)
                if m is None:
                    break
                pos = m.end()
                continue
            if c in b"[{":
                self.depth += 1
                if self.depth == 2:
                    self.start = pos
            else:
                self.depth -= 1
                if self.depth == 1:
                    found.append(bytes(buf[self.start:pos + 1]))
            pos += 1
        self.pos = pos
        return found


def read_session(url: str, project: str, session: str, key: str) -> dict[str, float]:
    """GET the event stream; seconds to headers, first body byte, first full snapshot, end; bytes."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    t0 = time.perf_counter()
    conn.request("GET", f"/api/projects/{project}/sessions/{session}/events",
                 headers={"Authorization": f"Bearer {key}"})
    resp = conn.getresponse()
    out = {"headers": time.perf_counter() - t0}
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    scanner: ArrayScanner | None = ArrayScanner()
    size = 0
    while chunk := resp.read1(256 * 1024):
        if not size:
            out["first_byte"] = time.perf_counter() - t0
        size += len(chunk)
        if scanner is not None:
            for element in scanner.feed(chunk):
                if orjson.loads(element).get("type") == FULL_SNAPSHOT:
                    out["first_snapshot"] = time.perf_counter() - t0
                    scanner = None  # found: the rest is only drained
                    break
    out["end"] = time.perf_counter() - t0
    out["bytes"] = size
    conn.close()
    return out


def measure(data: Path, project: str, session: str, key: str) -> dict[str, float]:
    """One reading on a fresh server: timings plus RSS before, peak RSS while streaming, and VmHWM."""
    with Server(data, ("--compact-after", "0", "--flush-interval", "3600")) as server:
        time.sleep(0.5)  # let startup settle before the baseline
        before = status_kb(server.pid, "VmRSS")
        with RssSampler(server.pid) as rss:
            out = read_session(server.url, project, session, key)
        out.update(rss_before_mb=before / 1024, rss_growth_mb=(rss.peak_kb - before) / 1024,
                   hwm_growth_mb=(status_kb(server.pid, "VmHWM") - before) / 1024)
    return out


# -- the run ---------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", default="1,10,60", help="session lengths (default 1,10,60)")
    p.add_argument("--repeat", type=int, default=3, help="readings per session; medians are reported")
    p.add_argument("--no-compacted", action="store_true", help="hot blocks only")
    p.add_argument("--keep", metavar="DIR", help="build into DIR and keep it (reused if it exists)")
    args = p.parse_args()
    lengths = [float(m) for m in args.minutes.split(",")]
    recs = load_recordings()
    compaction = (Path(__file__).resolve().parents[1] / "replay" / "compaction.py").exists() and not args.no_compacted
    print(f"machine: {machine()}")
    print(f"recordings: {', '.join(f'{r.name} ({r.duration_ms / 60000:.1f} min)' for r in recs)}")
    tmp = tempfile.TemporaryDirectory(prefix="replay-playback-")
    root = Path(args.keep) if args.keep else Path(tmp.name)
    start_ms = int(time.time() * 1000) - 3 * 3600_000
    rows = []
    for minutes in lengths:
        rec = stitch(recs, minutes, start_ms)
        snaps = sum(e["type"] == FULL_SNAPSHOT for e in rec.events)
        hot = root / f"hot-{minutes:g}m"
        session = f"play-{minutes:g}m"
        marker = hot / "bench-ids.txt"
        if marker.exists():
            project, key = marker.read_text().split()
        else:
            t = time.perf_counter()
            project, key = asyncio.run(ingest(hot, rec, session))
            marker.write_text(f"{project} {key}")
            print(f"built {minutes:g} min: {len(rec.events)} events, {rec.raw_bytes / 1e6:.1f} MB raw JSON, "
                  f"{snaps} full snapshots, in {time.perf_counter() - t:.0f} s", flush=True)
        modes = [("hot", hot)]
        if compaction:
            cold = root / f"compacted-{minutes:g}m"
            if not cold.exists():
                shutil.copytree(hot, cold)
                print(f"  compacted {minutes:g} min: {asyncio.run(compact(cold, project, session))}", flush=True)
            modes.append(("compacted", cold))
        for mode, data in modes:
            readings = [measure(data, project, session, key) for _ in range(args.repeat)]
            med = {k: statistics.median(r[k] for r in readings) for k in readings[0]}
            rows.append((minutes, mode, med))
            print(f"{minutes:4g} min {mode:9s}: headers {med['headers'] * 1000:6.1f} ms, first byte "
                  f"{med['first_byte'] * 1000:6.1f} ms, first full snapshot {med['first_snapshot'] * 1000:6.1f} ms, "
                  f"all {med['bytes'] / 1e6:6.1f} MB in {med['end']:6.2f} s; server RSS {med['rss_before_mb']:.0f} MB "
                  f"+ {med['rss_growth_mb']:.1f} MB while streaming (VmHWM +{med['hwm_growth_mb']:.1f})", flush=True)
    print("ratios (longest / shortest session, medians of --repeat readings):")
    for mode in ("hot", "compacted"):
        got = sorted((m, r) for m, md, r in rows if md == mode)
        if len(got) < 2:
            continue
        (m0, short), (m1, long) = got[0], got[-1]
        print(f"  {mode:9s}: first full snapshot {m1:g} min / {m0:g} min = "
              f"{long['first_snapshot'] / short['first_snapshot']:.2f} (target <= 1.5); RSS growth "
              + ", ".join(f"{m:g} min {r['rss_growth_mb']:.1f} MB" for m, r in got)
              + f"; growth {m1:g} min / {m0:g} min = {long['rss_growth_mb'] / max(short['rss_growth_mb'], 0.1):.2f}")
    if not compaction:
        print("  compacted: not measured (--no-compacted, or replay/compaction.py absent)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
