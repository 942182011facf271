"""Who may read: an API key (Bearer header or the UI's cookie session). Ingest tokens never read."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from replay.catalog import Project
from replay.errors import Forbidden, Unauthorized
from replay.share_links import InvalidShareLink, ShareGrant, verify_share
from replay.web.keys import SERVICE
from replay.web.ui_session import SESSION_COOKIE, SignedOut, UiSession, verify_session

SHARE_PARAM = "share"  # ?share=<token> on the API and player URLs
SIGNED_OUT = web.AppKey("signed_out", SignedOut)  # set by replay.web.ui.add_routes


@dataclass(frozen=True)
class SignedIn:
    """A UI cookie session and the project it may read."""

    session: UiSession
    project: Project


def share_cookie_name(project_id: str, session_id: str) -> str:
    """One cookie per shared session, so opening a second link does not void the first."""
    return f"replay_share.{project_id}.{session_id}"


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def authenticated_project(request: web.Request) -> Project:
    """The project whose API key the request carries (or the UI's signed-in session, when it sends
    no Authorization header); 401 without either."""
    secret = bearer_token(request)
    if not secret:
        project = None if request.headers.get("Authorization") else await signed_in_project(request)
        if project is not None:
            return project
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'", code="missing_api_key")
    project = await request.app[SERVICE].catalog.project_for_key(secret)
    if project is None:
        raise Unauthorized("unknown or revoked API key", code="invalid_api_key")
    return project


async def require_project(request: web.Request, project_id: str) -> Project:
    """The project named in the path, if the caller's key belongs to it; 403 for another project's key."""
    project = await authenticated_project(request)
    if project.id != project_id:
        raise Forbidden("this key belongs to another project", code="wrong_project")
    return project


@dataclass(frozen=True)
class ReadGrant:
    """Why a request may read one session: ``via`` is "api_key", "ui" or "share" (then ``share`` is set)."""

    project_id: str
    session_id: str
    via: str
    share: ShareGrant | None = None


async def signed_in(request: web.Request) -> SignedIn | None:
    """The UI's signed-in cookie session (see replay/web/ui_session.py), or None.

    The cookie must be ours, unexpired, not signed out here, and name an API key that is still
    live: revoking the key ends its sessions.
    """
    service = request.app[SERVICE]
    session = verify_session(service.share_secret, request.cookies.get(SESSION_COOKIE))
    signed_out = request.app.get(SIGNED_OUT)
    if session is None or (signed_out is not None and session in signed_out):
        return None
    keys = await service.catalog.keys(session.project_id)
    if not any(k.id == session.key_id and k.revoked_ms is None for k in keys):
        return None
    project = await service.catalog.project(session.project_id)
    return SignedIn(session, project) if project is not None else None


async def signed_in_project(request: web.Request) -> Project | None:
    """The project of the UI's signed-in cookie session, or None."""
    found = await signed_in(request)
    return found.project if found is not None else None


def share_token(request: web.Request, project_id: str, session_id: str) -> str | None:
    return request.query.get(SHARE_PARAM) or request.cookies.get(share_cookie_name(project_id, session_id))


async def authorize_session_read(request: web.Request, project_id: str, session_id: str) -> ReadGrant:
    """May this request read session ``session_id`` of ``project_id``? Raises 401/403 unless it may.

    Accepted, in this order: an API key of that project (Bearer header), the UI's signed-in cookie
    for that project, a valid share link for exactly that session (``?share=`` or its cookie).
    An ingest token is none of these, so it never reads.
    """
    if request.headers.get("Authorization"):
        await require_project(request, project_id)
        return ReadGrant(project_id, session_id, "api_key")
    project = await signed_in_project(request)
    if project is not None:
        if project.id != project_id:
            raise Forbidden("you are signed in to another project", code="wrong_project")
        return ReadGrant(project_id, session_id, "ui")
    token = share_token(request, project_id, session_id)
    if token is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>' or open a share link",
                           code="missing_api_key")
    try:
        grant = verify_share(request.app[SERVICE].share_secret, token)
    except InvalidShareLink as exc:
        raise Unauthorized(str(exc), code="invalid_share_link") from None
    if (grant.project_id, grant.session_id) != (project_id, session_id):
        raise Forbidden("this share link is for another session", code="wrong_session")
    return ReadGrant(project_id, session_id, "share", grant)
