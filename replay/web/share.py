"""Share links: ``POST .../sessions/{s}/share`` mints one (API key only); ``GET /share/{token}`` opens it.

Opening a link sets a cookie scoped to that one session and sends the browser to the player page;
the player and the events/summary API accept the cookie (or ``?share=``) through
``authorize_session_read``. The link itself is only as secret as the URL: it reads one session,
nothing else, until it expires.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from replay.errors import BadRequest, NotFound, Unauthorized
from replay.share_links import (DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN, InvalidShareLink, ShareGrant, sign_share,
                                verify_share)
from replay.web.api import bounded_int, path_ids
from replay.web.auth import SHARE_PARAM, require_project, share_cookie_name
from replay.web.keys import SERVICE

PLAYER_PATH = "/projects/{project}/sessions/{session}"  # the UI's player page, when the UI serves it


def _int_param(values: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    return bounded_int(values.get(name), name, default, lo, hi)


async def _options(request: web.Request) -> dict[str, Any]:
    """``expires_in`` and ``t`` from a JSON body, a form, or the query string (in that order)."""
    values: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise BadRequest("the body must be a JSON object", code="invalid_body") from None
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object", code="invalid_body")
            values.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            values.update((await request.post()).items())
    return values


def _public_base(request: web.Request) -> str:
    configured = request.app[SERVICE].settings.public_url.rstrip("/")
    return configured or f"{request.scheme}://{request.host}"


async def create_share(request: web.Request) -> web.Response:
    project_id, session_id = path_ids(request)
    assert session_id is not None
    await require_project(request, project_id)  # an API key only: a share link cannot mint links
    service = request.app[SERVICE]
    values = await _options(request)
    expires_in = _int_param(values, "expires_in", DEFAULT_EXPIRES_IN, 1, MAX_EXPIRES_IN)
    t_ms = _int_param(values, "t", None, 0, 10**12)
    if not await service.session_exists(project_id, session_id):
        raise NotFound(f"no session {session_id} in this project", code="no_such_session")
    # Rounded up: a link is never valid for less than it says.
    grant = ShareGrant(project_id, session_id, math.ceil(time.time() + (expires_in or 0)), t_ms)
    token = sign_share(service.share_secret, grant)
    path = f"/share/{token}"
    return web.json_response({"url": _public_base(request) + path, "path": path, "token": token,
                              "project_id": project_id, "session_id": session_id,
                              "expires_at": grant.expires_at, "t": t_ms}, status=201)


def _player_served(app: web.Application) -> bool:
    return any(getattr(r, "canonical", None) == PLAYER_PATH for r in app.router.resources())


async def open_share(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    try:
        grant = verify_share(request.app[SERVICE].share_secret, token)
    except InvalidShareLink as exc:
        raise Unauthorized(str(exc), code="invalid_share_link") from None
    p, s = grant.project_id, grant.session_id
    if _player_served(request.app):
        location = PLAYER_PATH.format(project=p, session=s) + (f"?t={grant.t_ms}" if grant.t_ms is not None else "")
        response: web.StreamResponse = web.HTTPSeeOther(location)
    else:
        # No player page in this build: say where the JSON is (the share token works there too).
        api = f"/api/projects/{p}/sessions/{s}"
        response = web.json_response({"project_id": p, "session_id": s, "expires_at": grant.expires_at,
                                      "t": grant.t_ms, "summary": f"{api}?{SHARE_PARAM}={token}",
                                      "events": f"{api}/events?{SHARE_PARAM}={token}"})
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in this URL: never pass it on
    response.set_cookie(share_cookie_name(p, s), token, max_age=max(1, grant.expires_at - int(time.time())),
                        path="/", httponly=True, samesite="Lax", secure=request.secure)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/projects/{project}/sessions/{session}/share", create_share)
    app.router.add_get("/share/{token}", open_share)
