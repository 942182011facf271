"""The JSON read API: session lists and event streams, behind an API key."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from replay.catalog.sqlite import SORTABLE, SessionQuery
from replay.errors import BadRequest, NotFound
from replay.ingest.validate import check_id
from replay.playback import event_json
from replay.web.auth import authorize_session_read, require_project
from replay.web.keys import SERVICE

log = logging.getLogger(__name__)
STREAM_CHUNK = 64 * 1024


def parse_time_ms(value: str | None, name: str) -> int | None:
    """Milliseconds since the epoch, from a number (ms) or an ISO 8601 date/time."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be milliseconds since the epoch or an ISO 8601 time", code=f"invalid_{name}") from None
    if parsed.tzinfo is None:
        from datetime import timezone
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def bounded_int(raw: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer parameter (query string or JSON body) within ``[lo, hi]``; 400 otherwise."""
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise BadRequest(f"{name} must be an integer", code=f"invalid_{name}")
    try:
        n = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", code=f"invalid_{name}") from None
    if not lo <= n <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}", code=f"invalid_{name}")
    return n


def _int(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    return bounded_int(value, name, default, lo, hi)  # type: ignore[return-value]


def session_query(params: Any) -> SessionQuery:
    """A SessionQuery from query-string parameters (shared by the API and the UI)."""
    sort = params.get("sort") or "start"
    if sort not in SORTABLE:
        raise BadRequest(f"sort must be one of {', '.join(SORTABLE)}", code="invalid_sort")
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequest("order must be asc or desc", code="invalid_order")
    errors = params.get("has_errors")
    return SessionQuery(
        distinct_id=params.get("distinct_id") or None,
        since_ms=parse_time_ms(params.get("since"), "since"),
        until_ms=parse_time_ms(params.get("until"), "until"),
        url_contains=params.get("url") or None,
        min_duration_ms=_int(params.get("min_duration"), "min_duration", 0, 0, 10**9) * 1000,
        has_errors=None if errors in (None, "") else errors in ("1", "true", "yes", "on"),
        sort=sort,
        descending=order == "desc",
        limit=_int(params.get("limit"), "limit", 50, 1, 500),
        offset=_int(params.get("offset"), "offset", 0, 0, 10**9),
    )


def path_ids(request: web.Request) -> tuple[str, str | None]:
    limits = request.app[SERVICE].limits
    project_id = check_id(request.match_info["project"], "project", limits)
    session = request.match_info.get("session")
    return project_id, check_id(session, "session_id", limits) if session is not None else None


async def list_sessions(request: web.Request) -> web.Response:
    project_id, _ = path_ids(request)
    await require_project(request, project_id)
    query = session_query(request.query)
    sessions, total = await request.app[SERVICE].catalog.sessions(project_id, query)
    next_offset = query.offset + len(sessions) if query.offset + len(sessions) < total else None
    return web.json_response({"sessions": [s.to_dict() for s in sessions], "total": total,
                              "next_offset": next_offset}, dumps=lambda o: orjson.dumps(o).decode())


async def get_session(request: web.Request) -> web.Response:
    project_id, session_id = path_ids(request)
    assert session_id is not None
    await authorize_session_read(request, project_id, session_id)
    summary = await request.app[SERVICE].session_summary(project_id, session_id)
    if summary is None:
        raise NotFound(f"no session {session_id} in this project", code="no_such_session")
    return web.json_response(summary.to_dict(), dumps=lambda o: orjson.dumps(o).decode())


async def stream_events(request: web.Request, project_id: str, session_id: str,
                        from_ts: int | None = None) -> web.StreamResponse:
    """The session's events as one JSON array, streamed as blocks arrive (``from_ts``: those at or after it)."""
    service = request.app[SERVICE]
    if not await service.session_exists(project_id, session_id):
        raise NotFound(f"no session {session_id} in this project", code="no_such_session")
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-store"})
    await response.prepare(request)
    buf = bytearray(b"[")
    first = True
    try:
        async for event in service.session_events(project_id, session_id, from_ts):
            if not first:
                buf += b","
            first = False
            buf += event_json(event)
            if len(buf) >= STREAM_CHUNK:
                await response.write(bytes(buf))
                buf.clear()
    except Exception:
        # Headers are gone: end the connection mid-array so the client sees a broken body, not a short session.
        log.exception("streaming %s/%s failed", project_id, session_id)
        if request.transport is not None:
            request.transport.close()
        return response
    buf += b"]"
    await response.write(bytes(buf))
    await response.write_eof()
    return response


async def get_events(request: web.Request) -> web.StreamResponse:
    project_id, session_id = path_ids(request)
    assert session_id is not None
    await authorize_session_read(request, project_id, session_id)
    # ?from=<ms>: only events at or after it, for a player following a session still recording.
    return await stream_events(request, project_id, session_id, parse_time_ms(request.query.get("from"), "from"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/projects/{project}/sessions", list_sessions)
    app.router.add_get("/api/projects/{project}/sessions/{session}", get_session)
    app.router.add_get("/api/projects/{project}/sessions/{session}/events", get_events)
