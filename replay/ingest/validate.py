"""Checks on what clients send: ids and rrweb event shape."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from replay.errors import BadRequest, PayloadTooLarge
from replay.ingest.limits import Limits

_ID = re.compile(r"[A-Za-z0-9-]+")
_BATCH_ID = re.compile(r"[A-Za-z0-9_.:-]+")
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01: anything earlier is seconds, not milliseconds, or garbage
FUTURE_SLACK_MS = 7 * 24 * 3600 * 1000  # client clocks are wrong, but not by more than this
EVENT_TYPES = range(0, 7)  # DomContentLoaded .. Plugin


def check_id(value: Any, what: str, limits: Limits) -> str:
    """A session or window id: letters, digits and ``-``, at most ``max_id_length`` characters."""
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} is required and must be a string", code=f"invalid_{what}")
    if len(value) > limits.max_id_length or not _ID.fullmatch(value):
        raise BadRequest(f"{what} must be 1-{limits.max_id_length} letters, digits or '-'", code=f"invalid_{what}")
    return value


def check_batch_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or not _BATCH_ID.fullmatch(value):
        raise BadRequest("batch_id must be 1-128 letters, digits or '-_.:'", code="invalid_batch_id")
    return value


def check_distinct_id(value: Any, limits: Limits) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > limits.max_distinct_id_length:
        raise BadRequest(f"distinct_id must be a string of at most {limits.max_distinct_id_length} characters",
                         code="invalid_distinct_id")
    return value


def check_event_list(events: Any, limits: Limits) -> None:
    """An array of 1 to ``max_events`` events, before any event is looked at."""
    if not isinstance(events, list):
        raise BadRequest("events must be an array of rrweb events", code="invalid_events")
    if not events:
        raise BadRequest("events is empty", code="invalid_events")
    if len(events) > limits.max_events:
        raise PayloadTooLarge(f"{len(events)} events in one batch; the limit is {limits.max_events}",
                              code="too_many_events")


def check_events(events: Any, limits: Limits, now_ms: int | None = None) -> list[dict[str, Any]]:
    """rrweb-shaped events: an integer ``type``, a millisecond ``timestamp`` and ``data``."""
    check_event_list(events, limits)
    latest = (now_ms if now_ms is not None else int(time.time() * 1000)) + FUTURE_SLACK_MS
    for i, ev in enumerate(events):
        if type(ev) is not dict:
            raise BadRequest(f"events[{i}] is not an object", code="invalid_event")
        etype, ts = ev.get("type"), ev.get("timestamp")
        if type(etype) is not int or etype not in EVENT_TYPES:
            raise BadRequest(f"events[{i}].type must be an rrweb event type (0-6)", code="invalid_event")
        if type(ts) is float:
            if not math.isfinite(ts):
                raise BadRequest(f"events[{i}].timestamp is not a number", code="invalid_timestamp")
            ts = ev["timestamp"] = int(ts)
        if type(ts) is not int or not MIN_TIMESTAMP_MS <= ts <= latest:
            raise BadRequest(f"events[{i}].timestamp must be a Unix time in milliseconds, not {ts!r}",
                             code="invalid_timestamp")
        if "data" not in ev:
            raise BadRequest(f"events[{i}] has no data", code="invalid_event")
    return events
