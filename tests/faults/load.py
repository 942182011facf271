"""A bounded load generator that remembers exactly which events the server acknowledged."""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import requests

from harness import post_batch

BASE_TS = 1_700_000_000_000


def batch_events(session: int, seq: int, n: int, pad: int = 0) -> list[dict]:
    """n distinct, valid rrweb events; (session, seq, i) is readable back from data and timestamp.
    ``pad`` random hex characters per event make the batch as hard to compress as real content."""
    return [{"type": 3, "timestamp": BASE_TS + seq * 100 + i,
             "data": {"source": 1, "positions": [{"x": session, "y": seq, "id": i, "timeOffset": 0}],
                      **({"pad": secrets.token_hex(pad // 2)} if pad else {})}}
            for i in range(n)]


@dataclass
class LoadGenerator:
    url: str
    token: str
    sessions: int = 4
    events_per_batch: int = 20
    rate: float = 10.0  # batches per second, all sessions together
    max_batches: int = 5000
    pad: int = 0
    first_seq: int = 0  # where batch ids (and timestamps) start, so two generators never share a batch_id
    acked: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    failures: int = 0  # connection errors: unacknowledged, may or may not have been kept
    refused: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))  # 4xx/5xx: must not be kept
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "LoadGenerator":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = self.first_seq
        started = time.monotonic()
        while not self._stop.is_set() and seq < self.first_seq + self.max_batches:
            session = seq % self.sessions
            sid = f"load-{session}"
            events = batch_events(session, seq, self.events_per_batch, self.pad)
            t0 = time.monotonic()
            try:
                r = post_batch(self.url, self.token, sid, events, batch_id=f"b{seq}", timeout=10)
            except requests.RequestException:
                self.failures += 1
            else:
                self.latencies.append(time.monotonic() - t0)
                self.statuses[r.status_code] += 1
                (self.acked if r.status_code == 200 else self.refused)[sid].extend(events)
            seq += 1
            # Paced by the clock, not by responses: a slow server does not slow the offered load.
            delay = started + (seq - self.first_seq) / self.rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    @property
    def acked_events(self) -> int:
        return sum(len(v) for v in self.acked.values())


def key(event: dict) -> tuple:
    p = event["data"]["positions"][0]
    return (event["timestamp"], p["x"], p["y"], p["id"])
