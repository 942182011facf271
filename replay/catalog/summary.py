"""Per-session statistics derived from rrweb events (pure; shared by ingest and reindex)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

# rrweb EventType / IncrementalSource numbers (rrweb/packages/types).
FULL_SNAPSHOT, INCREMENTAL, META, CUSTOM, PLUGIN = 2, 3, 4, 5, 6
SRC_MOUSE_MOVE, SRC_MOUSE_INTERACTION, SRC_SCROLL, SRC_VIEWPORT_RESIZE, SRC_INPUT = 1, 2, 3, 4, 5
SRC_TOUCH_MOVE, SRC_MEDIA, SRC_DRAG = 6, 7, 12
CLICK = 2
ACTIVITY_SOURCES = frozenset({SRC_MOUSE_MOVE, SRC_MOUSE_INTERACTION, SRC_SCROLL, SRC_VIEWPORT_RESIZE,
                              SRC_INPUT, SRC_TOUCH_MOVE, SRC_MEDIA, SRC_DRAG})
ACTIVITY_GAP_MS = 5_000
CONSOLE_PLUGIN = "rrweb/console@1"
URL_TAGS = frozenset({"$pageview", "$url_changed", "url_changed"})


@dataclass
class EventStats:
    """What the catalog keeps about a run of events; ``merge`` combines runs in any order."""

    first_ts: int | None = None
    last_ts: int | None = None
    events: int = 0
    clicks: int = 0
    keypresses: int = 0
    console_errors: int = 0
    full_snapshots: int = 0
    urls: list[str] = field(default_factory=list)
    activity: list[list[int]] = field(default_factory=list)  # [start, end] clusters
    viewport: list[int] | None = None

    def merge(self, other: "EventStats") -> "EventStats":
        return EventStats.combine((self, other))

    @classmethod
    def combine(cls, runs: Iterable["EventStats"]) -> "EventStats":
        """All ``runs`` merged in one pass (a flush folds thousands of batches' stats)."""
        out = cls()
        firsts, lasts, activity = [], [], []
        urls: dict[str, None] = {}
        for s in runs:
            if s.first_ts is not None:
                firsts.append(s.first_ts)
            if s.last_ts is not None:
                lasts.append(s.last_ts)
            out.events += s.events
            out.clicks += s.clicks
            out.keypresses += s.keypresses
            out.console_errors += s.console_errors
            out.full_snapshots += s.full_snapshots
            urls.update(dict.fromkeys(s.urls))
            activity += s.activity
            out.viewport = out.viewport or s.viewport
        out.first_ts = min(firsts) if firsts else None
        out.last_ts = max(lasts) if lasts else None
        out.urls = list(urls)
        out.activity = merge_intervals(activity)
        return out

    @property
    def active_ms(self) -> int:
        return sum(end - start for start, end in self.activity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_ts": self.first_ts, "last_ts": self.last_ts, "events": self.events,
            "clicks": self.clicks, "keypresses": self.keypresses, "console_errors": self.console_errors,
            "full_snapshots": self.full_snapshots, "urls": self.urls, "activity": self.activity,
            "viewport": self.viewport,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EventStats":
        return cls(**{k: d[k] for k in _STAT_FIELDS if k in d})  # missing keys take the defaults


_STAT_FIELDS = tuple(EventStats().to_dict())


def merge_intervals(intervals: Iterable[list[int]]) -> list[list[int]]:
    """Join activity clusters closer than ACTIVITY_GAP_MS."""
    merged: list[list[int]] = []
    for start, end in sorted(intervals):
        if merged and start - merged[-1][1] <= ACTIVITY_GAP_MS:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def summarize(events: Iterable[dict[str, Any]]) -> EventStats:
    """Count what support staff filter on: clicks, key presses, URLs, console errors, active time."""
    s = EventStats()
    first = last = None
    activity: list[list[int]] = []
    for ev in events:
        ts = ev["timestamp"]
        first = ts if first is None or ts < first else first
        last = ts if last is None or ts > last else last
        s.events += 1
        etype = ev["type"]
        data = ev.get("data")
        if etype == INCREMENTAL and isinstance(data, dict):
            source = data.get("source")
            if source in ACTIVITY_SOURCES:
                if activity and 0 <= ts - activity[-1][1] <= ACTIVITY_GAP_MS:
                    activity[-1][1] = ts
                else:
                    activity.append([ts, ts])
                if source == SRC_MOUSE_INTERACTION and data.get("type") == CLICK:
                    s.clicks += 1
                elif source == SRC_INPUT:
                    s.keypresses += 1
        elif etype == META and isinstance(data, dict):
            href = data.get("href")
            if isinstance(href, str) and href and href not in s.urls:
                s.urls.append(href)
            # The first viewport, as merged runs keep it (the session list shows where it started).
            if s.viewport is None and isinstance(data.get("width"), int) and isinstance(data.get("height"), int):
                s.viewport = [data["width"], data["height"]]
        elif etype == FULL_SNAPSHOT:
            s.full_snapshots += 1
        elif etype == PLUGIN and isinstance(data, dict):
            payload = data.get("payload")
            if data.get("plugin") == CONSOLE_PLUGIN and isinstance(payload, dict) and payload.get("level") == "error":
                s.console_errors += 1
        elif etype == CUSTOM and isinstance(data, dict) and data.get("tag") in URL_TAGS:
            payload = data.get("payload")
            href = payload.get("href") or payload.get("url") if isinstance(payload, dict) else None
            if isinstance(href, str) and href and href not in s.urls:
                s.urls.append(href)
    s.first_ts, s.last_ts = first, last
    s.activity = merge_intervals(activity)
    return s
