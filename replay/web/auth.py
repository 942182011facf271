"""Who may read: an API key (Bearer header or the UI's cookie session). Ingest tokens never read."""

from __future__ import annotations

from aiohttp import web

from replay.catalog import Project
from replay.errors import Forbidden, Unauthorized
from replay.web.keys import SERVICE


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def authenticated_project(request: web.Request) -> Project:
    """The project whose API key the request carries; 401 without a valid key."""
    secret = bearer_token(request)
    if not secret:
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
