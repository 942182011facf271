"""Ingest limits: what one upload may cost us."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 25 * 1024 * 1024  # as sent (compressed)
    max_decoded_bytes: int = 100 * 1024 * 1024  # after Content-Encoding, enforced while inflating
    max_events: int = 20_000  # per batch
    body_timeout: float = 30.0  # seconds to receive the whole body
    max_id_length: int = 70
    max_distinct_id_length: int = 200
