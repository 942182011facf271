"""Session summaries that include what the spool holds but the catalog does not have yet (pure).

The catalog learns about a batch only when a flush stores it (every 10 s by default), while the
events endpoint already plays spooled batches. These functions let the UI and API show a session
that is still recording with its newest numbers, and one that has not been flushed at all.
Active time is approximate until the flush: the catalog's intervals are not kept in summaries,
so the pending batches' active time is added, not merged.
"""

from __future__ import annotations

from typing import Iterable

from replay.catalog.records import SessionSummary
from replay.catalog.sqlite import SessionQuery
from replay.catalog.summary import EventStats
from replay.spool import SpooledBatch


def pending_stats(batches: Iterable[SpooledBatch]) -> EventStats:
    return EventStats.combine(b.stats for b in batches)


def with_pending(summary: SessionSummary | None, project_id: str, session_id: str,
                 batches: list[SpooledBatch]) -> SessionSummary | None:
    """``summary`` (None: the catalog has nothing yet) with ``batches`` (not yet catalogued) folded in."""
    stats = pending_stats(batches)
    if stats.first_ts is None or stats.last_ts is None:
        return summary
    windows = list(dict.fromkeys(b.window_id for b in batches))
    distinct = next((b.distinct_id for b in reversed(batches) if b.distinct_id), None)
    size = sum(len(b.items) for b in batches)
    meta: dict = {}
    for b in batches:
        meta.update(b.meta)
    if summary is None:
        return SessionSummary(
            project_id, session_id, distinct, windows, stats.first_ts, stats.last_ts,
            stats.last_ts - stats.first_ts, stats.active_ms, stats.clicks, stats.keypresses, stats.console_errors,
            stats.urls[0] if stats.urls else meta.get("url"), stats.urls, stats.events, size, 0, meta,
            stats.viewport, max(b.received_ms for b in batches))
    start, end = min(summary.start_ts, stats.first_ts), max(summary.end_ts, stats.last_ts)
    urls = summary.urls + [u for u in stats.urls if u not in summary.urls]
    return SessionSummary(
        project_id, session_id, summary.distinct_id or distinct,
        summary.window_ids + [w for w in windows if w not in summary.window_ids], start, end, end - start,
        summary.active_ms + stats.active_ms, summary.clicks + stats.clicks, summary.keypresses + stats.keypresses,
        summary.console_errors + stats.console_errors, summary.first_url or (urls[0] if urls else None), urls,
        summary.event_count + stats.events, summary.size_bytes + size, summary.stored_bytes,
        {**summary.meta, **meta}, summary.viewport or stats.viewport,
        max(summary.updated_ms, max(b.received_ms for b in batches)))


def matches(s: SessionSummary, q: SessionQuery) -> bool:
    """The catalog's session filters (see SqliteCatalog.sessions), applied to one summary."""
    if q.distinct_id and s.distinct_id != q.distinct_id:
        return False
    if q.since_ms is not None and s.end_ts < q.since_ms:
        return False
    if q.until_ms is not None and s.start_ts > q.until_ms:
        return False
    if q.url_contains and not any(q.url_contains.lower() in u.lower() for u in s.urls):
        return False
    if q.min_duration_ms and s.duration_ms < q.min_duration_ms:
        return False
    if q.has_errors is not None and (s.console_errors > 0) != q.has_errors:
        return False
    return True
