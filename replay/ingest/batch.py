"""The unit of ingest: one client upload for one session window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from replay.catalog.summary import EventStats


@dataclass(frozen=True)
class PackedEvents:
    """A batch's events as stored (``codec.pack_items``'s items) and their summary, never decoded."""

    items: bytes
    count: int
    stats: EventStats


@dataclass
class Batch:
    """Validated rrweb events of one session window, as one client upload (or one posthog ``$snapshot``).

    ``batch_id`` is the client's idempotency key: the same (project, session, batch_id) plays once.
    ``meta`` carries session metadata the events themselves do not (``url``, ``lib``,
    ``lib_version``, ``user_agent``...); it is optional and free-form but JSON/msgpack-safe.
    """

    project_id: str
    session_id: str
    window_id: str
    batch_id: str
    events: list[dict[str, Any]]
    distinct_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Set instead of ``events`` for a project that does not mask on the server (ingest/unmasked.py).
    packed: PackedEvents | None = None
