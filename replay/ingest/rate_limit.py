"""Per-token ingest rate limiting: one token bucket per ingest token, answered with 429 + Retry-After.

Shared by every ingest route (native ``/v1/recordings``, posthog ``/s/``) through
``service.rate_limiter.check(token)``; call it once the token is known to be valid, so a flood of
made-up tokens cannot grow the table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from replay.errors import TooManyRequests


@dataclass
class TokenBucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` requests per second per key with bursts of ``burst``; ``rate <= 0`` disables it."""

    MAX_KEYS = 100_000  # more live tokens than this is not a deployment we size for; oldest are dropped

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may send again (0 when it may now); takes one token when it may."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[key] = TokenBucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def check(self, key: str) -> None:
        """Take one request from ``key``'s bucket or raise 429 saying when to retry."""
        wait = self.retry_after(key)
        if wait > 0:
            raise TooManyRequests(f"this ingest token sends more than {self.rate:g} requests per second; "
                                  f"retry in {wait:.1f} s", retry_after=wait, code="rate_limited")
