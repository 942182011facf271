"""Records the catalog hands out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    ingest_token: str
    retention_days: int
    policy: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0


@dataclass(frozen=True)
class ApiKey:
    id: str
    project_id: str
    name: str
    prefix: str  # first characters, so operators can tell keys apart; the rest is stored hashed
    created_ms: int
    revoked_ms: int | None = None


@dataclass
class SessionSummary:
    project_id: str
    session_id: str
    distinct_id: str | None
    window_ids: list[str]
    start_ts: int
    end_ts: int
    duration_ms: int
    active_ms: int
    clicks: int
    keypresses: int
    console_errors: int
    first_url: str | None
    urls: list[str]
    event_count: int
    size_bytes: int
    stored_bytes: int
    meta: dict[str, Any]
    viewport: list[int] | None
    updated_ms: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BlockRow:
    """Where one block of a session lives, and which batches it holds."""

    object_key: str
    offset: int
    length: int
    first_ts: int
    last_ts: int
    event_count: int
    batches: list[list[Any]]
    # Compacted (session) objects store events in play order, so the reader can stream them
    # without decoding or sorting the whole block first.
    time_ordered: bool = False
