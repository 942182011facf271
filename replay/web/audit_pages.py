"""The privacy auditor's pages: one session's audit, and a project's recent sessions audited.

- ``/projects/{p}/sessions/{s}/audit``: verdict, every form field (masked or not) and every
  finding. Read like the player page (sign-in, or a share link for that session).
- ``/projects/{p}/audit``: the newest sessions (the session list's filters apply; at most
  ``MAX_SESSIONS``, each walked in full on the server) audited and summarised. Signed in only.

Findings come from recordings, which are untrusted: templates autoescape and show them as text;
excerpts are already masked by the audit, so a page never repeats a secret.
"""

from __future__ import annotations

from aiohttp import web

from replay.errors import BadRequest, NotFound
from replay.privacy.audit import summarize_project
from replay.privacy.policy_edit import effective
from replay.web.api import path_ids, session_query
from replay.web.auth import signed_in
from replay.web.keys import SERVICE
from replay.web.pages import render
from replay.web.privacy_api import AUDITS_AT_ONCE, audit_stored_session
from replay.web.ui import (FILTERS, _ui_page, _viewer, list_url, require_signed_in, session_page_grant,
                           signin_redirect)

DEFAULT_SESSIONS = 20
MAX_SESSIONS = 100


def player_url(project_id: str, session_id: str) -> str:
    return f"/projects/{project_id}/sessions/{session_id}"


@_ui_page
async def session_audit_page(request: web.Request) -> web.StreamResponse:
    project_id, session_id, grant = await session_page_grant(request)
    if grant is None:
        return signin_redirect(request)
    service = request.app[SERVICE]
    summary = await service.session_summary(project_id, session_id)
    project = await service.catalog.project(project_id)
    if summary is None or project is None:
        raise NotFound(f"no session {session_id} in this project", code="no_such_session")
    policy = effective(project.policy)
    audit = await audit_stored_session(service, project_id, session_id, policy, request.app[AUDITS_AT_ONCE])
    found = await signed_in(request) if grant.via == "ui" else None
    return render("audit.html", viewer=_viewer(request, found) if found else None, summary=summary,
                  audit=audit, policy=policy, player_url=player_url(project_id, session_id),
                  project_audit_url=f"/projects/{project_id}/audit" if found else None,
                  start_ts=summary.start_ts)


@_ui_page
async def project_audit_page(request: web.Request) -> web.StreamResponse:
    project_id, _ = path_ids(request)
    found = await require_signed_in(request, project_id)
    service = request.app[SERVICE]
    params = {k: request.query[k] for k in (*FILTERS, "limit") if request.query.get(k)}
    error = None
    limit = request.query.get("limit") or str(DEFAULT_SESSIONS)
    try:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_SESSIONS:
            raise BadRequest(f"1 to at most {MAX_SESSIONS} sessions are audited on this page; "
                             "`replay audit` audits any number", code="invalid_limit")
        q = session_query({**request.query, "limit": limit})
    except BadRequest as exc:
        error, params = exc.detail, {}
        q = session_query({"limit": str(DEFAULT_SESSIONS)})
    sessions, total = await service.catalog.sessions(project_id, q)
    project = found.project
    policy = effective(project.policy)
    gate = request.app[AUDITS_AT_ONCE]
    rows = []
    for s in sessions:
        rows.append((s, await audit_stored_session(service, project_id, s.session_id, policy, gate)))
    return render("project_audit.html", viewer=_viewer(request, found), error=error, params=params,
                  rows=rows, total=total, summary=summarize_project(a for _, a in rows), policy=policy,
                  list_url=list_url(project_id, {}), limit=q.limit, max_sessions=MAX_SESSIONS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/projects/{project}/audit", project_audit_page)
    app.router.add_get("/projects/{project}/sessions/{session}/audit", session_audit_page)
