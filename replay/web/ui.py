"""The support UI: sign-in with an API key, the session list, the player page.

Pages are rendered on the server (replay/web/pages.py); the player's behaviour lives in
player_assets/player.js, which reads the JSON API with the same cookie session.
"""

from __future__ import annotations

import time
from typing import Any
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from replay.catalog.sqlite import SessionQuery
from replay.errors import BadRequest, Forbidden, NotFound, Unauthorized
from replay.pending import matches
from replay.web.api import path_ids, session_query
from replay.web.auth import SIGNED_OUT, SignedIn, authorize_session_read, share_token, signed_in
from replay.web.keys import SERVICE
from replay.web.pages import render
from replay.web.ui_session import (CSRF_FIELD, SESSION_COOKIE, SESSION_SECONDS, SIGNIN_CSRF_COOKIE, SignedOut,
                                   csrf_matches, csrf_token, new_session, new_signin_csrf, sign_session)

MAX_FORM_BYTES = 16 * 1024
LIVE_WITHIN_MS = 30 * 60 * 1000  # a session with events this recent may still be recording: the player polls
FILTERS = ("distinct_id", "url", "since", "until", "min_duration", "has_errors")


@dataclass(frozen=True)
class Column:
    label: str
    sort: str | None  # a key of replay.catalog.sqlite.SORTABLE, or None when not sortable


COLUMNS = (Column("User", "user"), Column("Start", "start"), Column("Duration", "duration"),
           Column("Active", "active"), Column("Clicks", "clicks"), Column("Pages", None),
           Column("First URL", None), Column("Errors", "errors"))


# -- helpers (pure) ------------------------------------------------------------------------------

def safe_next(value: str | None) -> str | None:
    """A local path to go back to after sign-in; anything that could leave this origin is dropped."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(ord(c) < 0x20 or c == "\\" for c in value):
        return None
    return value


def list_url(project_id: str, params: dict[str, str], **changes: str | int | None) -> str:
    """The session list URL with ``params`` (filters, sort...) and ``changes`` applied."""
    merged = {**params, **{k: v for k, v in changes.items()}}
    query = urlencode({k: str(v) for k, v in merged.items() if v not in (None, "")})
    return f"/projects/{project_id}/sessions" + (f"?{query}" if query else "")


def sort_links(project_id: str, params: dict[str, str], q: SessionQuery) -> dict[str, tuple[str, str]]:
    """For each sortable column: its URL (the same column again flips the order) and an arrow."""
    links = {}
    for col in COLUMNS:
        if col.sort is None:
            continue
        current = q.sort == col.sort
        order = ("asc" if q.descending else "desc") if current else "desc"
        arrow = ("▼" if q.descending else "▲") if current else ""
        links[col.sort] = (list_url(project_id, params, sort=col.sort, order=order, offset=None), arrow)
    return links


def see_other(location: str) -> web.Response:
    """A 303 that can carry cookies (raised HTTPExceptions are not meant to)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def cookie_options(request: web.Request) -> dict:
    secure = request.secure or request.app[SERVICE].settings.public_url.startswith("https://")
    return {"httponly": True, "samesite": "Strict", "secure": secure, "path": "/"}


def signin_redirect(request: web.Request) -> web.StreamResponse:
    """Send a reader without a session to the sign-in page, and back here afterwards."""
    if request.method == "GET" and request.headers.get("Sec-Fetch-Site") == "cross-site":
        # A link followed from another site (mail, chat) arrives without SameSite=Strict cookies even
        # when signed in; reloading from our own page sends them.
        return render("bounce.html", url=request.path_qs)
    return see_other("/signin?" + urlencode({"next": request.path_qs}))


async def require_signed_in(request: web.Request, project_id: str | None = None) -> SignedIn:
    found = await signed_in(request)
    if found is None or (project_id is not None and found.project.id != project_id):
        raise _Redirect(signin_redirect(request))
    return found


class _Redirect(Exception):
    def __init__(self, response: web.StreamResponse):
        self.response = response


def _ui_page(handler):
    """UI pages answer a missing sign-in with the sign-in page, not with a JSON 401."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Redirect as r:
            return r.response
    return wrapped


# -- sign-in -------------------------------------------------------------------------------------

def _signin_page(request: web.Request, next_path: str | None, *, error: str | None = None,
                 status: int = 200) -> web.Response:
    token = new_signin_csrf()
    response = render("signin.html", status=status, error=error, csrf=token, csrf_field=CSRF_FIELD,
                      next=safe_next(next_path) or "", viewer=None)
    response.set_cookie(SIGNIN_CSRF_COOKIE, token, max_age=3600, **cookie_options(request))
    return response


async def signin_form(request: web.Request) -> web.StreamResponse:
    found = await signed_in(request)
    if found is not None:
        return see_other(safe_next(request.query.get("next")) or f"/projects/{found.project.id}/sessions")
    return _signin_page(request, request.query.get("next"))


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise BadRequest("form too large", code="form_too_large")
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def signin(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    if not csrf_matches(request.cookies.get(SIGNIN_CSRF_COOKIE), form.get(CSRF_FIELD)):
        raise Forbidden("the sign-in form expired or did not come from this site; reload it", code="csrf_failed")
    service = request.app[SERVICE]
    key = await service.catalog.live_key(form.get("api_key", "").strip()) if form.get("api_key", "").strip() else None
    if key is None:
        return _signin_page(request, form.get("next"), error="Unknown or revoked API key.", status=401)
    session = new_session(key.project_id, key.id)
    response = see_other(safe_next(form.get("next")) or f"/projects/{key.project_id}/sessions")
    response.set_cookie(SESSION_COOKIE, sign_session(service.share_secret, session), max_age=SESSION_SECONDS,
                        **cookie_options(request))
    response.del_cookie(SIGNIN_CSRF_COOKIE, path="/")
    return response


async def signout(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    found = await signed_in(request)
    if found is not None:
        if not csrf_matches(csrf_token(request.app[SERVICE].share_secret, found.session), form.get(CSRF_FIELD)):
            raise Forbidden("sign-out needs the form's CSRF token", code="csrf_failed")
        request.app[SIGNED_OUT].add(found.session)
    response = see_other("/signin")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def home(request: web.Request) -> web.StreamResponse:
    found = await signed_in(request)
    return see_other(f"/projects/{found.project.id}/sessions" if found else "/signin")


# -- session list --------------------------------------------------------------------------------

def _viewer(request: web.Request, found: SignedIn) -> dict:
    return {"project_id": found.project.id, "project_name": found.project.name,
            "csrf": csrf_token(request.app[SERVICE].share_secret, found.session), "csrf_field": CSRF_FIELD}


@_ui_page
async def sessions_page(request: web.Request) -> web.StreamResponse:
    project_id, _ = path_ids(request)
    found = await require_signed_in(request, project_id)
    service = request.app[SERVICE]
    params = {k: request.query[k] for k in (*FILTERS, "sort", "order", "limit") if request.query.get(k)}
    error = None
    try:
        q = session_query(request.query)
    except BadRequest as exc:  # a filter typed wrong: say so on the page, list without filters
        error, q = exc.detail, SessionQuery()
        params = {}
    sessions, total = await service.catalog.sessions(project_id, q)
    recording = [s for s in await service.pending_sessions(project_id) if matches(s, q)] if q.offset == 0 else []
    prev_offset = max(0, q.offset - q.limit) if q.offset > 0 else None
    next_offset = q.offset + len(sessions) if q.offset + len(sessions) < total else None
    return render(
        "sessions.html", viewer=_viewer(request, found), error=error, sessions=sessions, recording=recording,
        total=total, q=q, params=params, columns=COLUMNS, sorts=sort_links(project_id, params, q),
        reset_url=list_url(project_id, {}),
        prev_url=None if prev_offset is None else list_url(project_id, params, offset=prev_offset or None),
        next_url=None if next_offset is None else list_url(project_id, params, offset=next_offset),
        first=q.offset + 1 if sessions else 0, last=q.offset + len(sessions))


# -- player --------------------------------------------------------------------------------------

async def session_page_grant(request: web.Request) -> tuple[str, str, Any]:
    """Project, session and read grant for a page showing the session in its path.

    The grant is None for a reader with no credentials at all: such pages send them to sign in.
    A bad share link raises instead, so it says what is wrong with it.
    """
    project_id, session_id = path_ids(request)
    assert session_id is not None
    try:
        return project_id, session_id, await authorize_session_read(request, project_id, session_id)
    except (Unauthorized, Forbidden):
        if share_token(request, project_id, session_id):
            raise
        return project_id, session_id, None


@_ui_page
async def player_page(request: web.Request) -> web.StreamResponse:
    project_id, session_id, grant = await session_page_grant(request)
    if grant is None:
        return signin_redirect(request)
    service = request.app[SERVICE]
    summary = await service.session_summary(project_id, session_id)
    if summary is None:
        raise NotFound(f"no session {session_id} in this project", code="no_such_session")
    found = await signed_in(request) if grant.via == "ui" else None
    now = int(time.time() * 1000)
    start_at = request.query.get("t", "")
    config = {
        "project": project_id, "session": session_id,
        "eventsUrl": f"/api/projects/{project_id}/sessions/{session_id}/events",
        "summaryUrl": f"/api/projects/{project_id}/sessions/{session_id}",
        "startAt": int(start_at) if start_at.isdigit() else None,
        "live": now - summary.end_ts < LIVE_WITHIN_MS,
    }
    return render("player.html", viewer=_viewer(request, found) if found else None, summary=summary,
                  config=config, list_url=list_url(project_id, {}) if found else None)


def add_routes(app: web.Application) -> None:
    app[SIGNED_OUT] = SignedOut()
    app.router.add_get("/", home)
    app.router.add_get("/signin", signin_form)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/projects/{project}/sessions", sessions_page)
    app.router.add_get("/projects/{project}/sessions/{session}", player_page)
