"""The privacy part of the JSON API: a project's masking policy, and a session's audit.

- ``GET /api/projects/{p}/policy``: ``{"project_id", "policy" (effective), "overrides" (what the
  project set), "client_settings" (rrweb options for browsers)}``; the project's API key.
- ``PUT /api/projects/{p}/policy``: a JSON policy object (or a GET answer) replaces the project's
  settings (fields left out follow the defaults); 400 ``invalid_policy`` says what is wrong, and
  nothing is stored then. Uploads after the answer are enforced with the new policy.
- ``GET /api/projects/{p}/sessions/{s}/audit``: the session's audit (``SessionAudit.to_dict()``)
  against the project's current policy; read like the events (API key, UI sign-in, share link).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from replay.errors import BadRequest, NotFound
from replay.privacy.audit import SessionAudit
from replay.privacy.policy import MaskingPolicy
from replay.privacy.policy_edit import edit, effective, policy_document
from replay.service import Service
from replay.session_audit import audit_items
from replay.web.api import path_ids
from replay.web.auth import authorize_session_read, require_project
from replay.web.keys import SERVICE
from replay.web.openapi import EXTRA_PATHS, ID, _errors

MAX_POLICY_BYTES = 64 * 1024
# Audits walk every event on a worker thread: at most this many at once per process (2 cores).
AUDITS_AT_ONCE = web.AppKey("audits_at_once", asyncio.Semaphore)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def get_policy(request: web.Request) -> web.Response:
    project_id, _ = path_ids(request)
    project = await require_project(request, project_id)
    try:
        return _json(policy_document(project.id, project.policy))
    except BadRequest as exc:  # stored by a version whose fields differ: say so, do not 500
        raise BadRequest(f"the stored policy is invalid: {exc.detail}", code="invalid_policy") from None


async def put_policy(request: web.Request) -> web.Response:
    project_id, _ = path_ids(request)
    project = await require_project(request, project_id)
    body = await request.content.read(MAX_POLICY_BYTES + 1)
    if len(body) > MAX_POLICY_BYTES:
        raise BadRequest(f"a policy is at most {MAX_POLICY_BYTES} bytes", code="invalid_policy")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body must be a JSON policy object: {exc}", code="invalid_policy") from None
    overrides = edit(None, replace=document)
    service: Service = request.app[SERVICE]
    await service.catalog.set_policy(project.id, overrides)  # also drops this process's cached projects
    return _json(policy_document(project.id, overrides))


async def audit_stored_session(service: Service, project_id: str, session_id: str,
                               policy: MaskingPolicy, gate: asyncio.Semaphore) -> SessionAudit:
    """Audit one session as the events endpoint would play it (stored blocks and the spool)."""
    async with gate:
        return await audit_items(service.session_window_events(project_id, session_id), policy,
                                 session_id=session_id)


async def session_audit(request: web.Request) -> web.Response:
    project_id, session_id = path_ids(request)
    assert session_id is not None
    await authorize_session_read(request, project_id, session_id)
    service: Service = request.app[SERVICE]
    if not await service.session_exists(project_id, session_id):
        raise NotFound(f"no session {session_id} in this project", code="no_such_session")
    project = await service.catalog.project(project_id)
    if project is None:
        raise NotFound(f"no project {project_id}", code="no_such_project")
    audit = await audit_stored_session(service, project_id, session_id, effective(project.policy),
                                       request.app[AUDITS_AT_ONCE])
    return _json({"project_id": project_id, **audit.to_dict()})


# -- OpenAPI ---------------------------------------------------------------------------------------

_LIST = {"type": "array", "items": {"type": "string"}}
POLICY_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "enforce": {"type": "boolean"}, "mask_all_inputs": {"type": "boolean"}, "mask_input_types": _LIST,
    "mask_option_text": {"type": "boolean"}, "mask_text_selectors": _LIST, "block_selectors": _LIST,
    "mask_attributes": _LIST, "keep_attributes": _LIST, "pii_detectors": _LIST, "strip_query_params": _LIST,
    "fixed_length_mask": {"type": "boolean"}}}
POLICY_DOCUMENT = {"type": "object", "required": ["project_id", "policy", "overrides", "client_settings"],
                   "properties": {"project_id": {"type": "string"}, "policy": POLICY_SCHEMA,
                                  "overrides": {"type": "object"}, "client_settings": {"type": "object"}}}
AUDIT_SCHEMA = {"type": "object", "required": ["session_id", "verdict", "fields", "findings", "counts"], "properties": {
    "project_id": {"type": "string"}, "session_id": {"type": "string"},
    "verdict": {"type": "string", "enum": ["clean", "leaked"]},
    "events": {"type": "integer"}, "windows": {"type": "integer"},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    "fields": {"type": "array", "items": {"type": "object"}},
    "findings": {"type": "array", "items": {"type": "object", "required": ["kind", "severity", "where", "excerpt"]}}}}
_PARAMS = [{"name": "project", "in": "path", "required": True, "schema": ID}]
OPENAPI_PATHS = {
    "/api/projects/{project}/policy": {
        "get": {"summary": "The project's masking policy (effective, overrides, client settings)",
                "security": [{"apiKey": []}], "parameters": _PARAMS,
                "responses": {"200": {"description": "the policy", "content": {"application/json": {
                    "schema": POLICY_DOCUMENT}}}, **_errors(400, 401, 403)}},
        "put": {"summary": "Replace the project's masking policy settings (fields left out follow the defaults)",
                "security": [{"apiKey": []}], "parameters": _PARAMS,
                "requestBody": {"required": True, "content": {"application/json": {"schema": POLICY_SCHEMA}}},
                "responses": {"200": {"description": "stored; the next upload is enforced with it",
                                      "content": {"application/json": {"schema": POLICY_DOCUMENT}}},
                              **_errors(400, 401, 403)}},
    },
    "/api/projects/{project}/sessions/{session}/audit": {
        "get": {"summary": "The session's privacy audit: every form field, every leak (excerpts masked)",
                "security": [{"apiKey": []}, {"shareLink": []}],
                "parameters": _PARAMS + [
                    {"name": "session", "in": "path", "required": True, "schema": ID},
                    {"name": "share", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the audit", "content": {"application/json": {
                    "schema": AUDIT_SCHEMA}}}, **_errors(400, 401, 403, 404)}},
    },
}


def add_routes(app: web.Application) -> None:
    app[AUDITS_AT_ONCE] = asyncio.Semaphore(2)
    app.setdefault(EXTRA_PATHS, {}).update(OPENAPI_PATHS)  # type: ignore[union-attr]
    app.router.add_get("/api/projects/{project}/policy", get_policy)
    app.router.add_put("/api/projects/{project}/policy", put_policy)
    app.router.add_get("/api/projects/{project}/sessions/{session}/audit", session_audit)
