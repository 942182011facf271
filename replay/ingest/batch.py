"""The unit of ingest: one client upload for one session window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PackedEvents:
    """A batch's events each packed as msgpack (ingest/packed.py), never decoded whole.

    ``fields`` holds what checks and ``summarize`` read of each event. Masking replaces entries of
    both lists in place (``privacy.enforce_packed``), as it changes decoded events in place.
    """

    events: list[Any]  # msgspec.Raw or bytes: anything bytes.join takes
    fields: list[dict[str, Any]]
    # Per event, the spans of its containers the packer found (or None): see enforce_packed.
    spans: Sequence[bytes | None] | None = None


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
    # Set instead of ``events`` for JSON uploads packed without being decoded (ingest/packed.py).
    packed: PackedEvents | None = None
