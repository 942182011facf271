"""The HTTP API as an OpenAPI 3 document, served at ``/openapi.json``.

Hand-written next to the routes it describes; tests/web/test_openapi_conformance.py runs
schemathesis against a live server with it, so a route that drifts from this document fails there.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

ID = {"type": "string", "pattern": "^[A-Za-z0-9-]{1,70}$"}
ERROR = {"$ref": "#/components/schemas/Error"}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "malformed request", 401: "no, unknown or revoked credentials", 403: "credentials of another "
            "project or session, or a failed CSRF check", 404: "no such session", 405: "method not allowed",
            408: "the body did not arrive in time", 413: "body or batch too large",
            415: "unsupported Content-Type or Content-Encoding", 429: "rate limited (see Retry-After)",
            503: "the spool cannot keep the data now; retry (see Retry-After)"}
    return {str(s): _err(text[s]) for s in statuses}


PROJECT = {"name": "project", "in": "path", "required": True, "schema": ID}
SESSION = {"name": "session", "in": "path", "required": True, "schema": ID}
SHARE = {"name": "share", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "a share-link token for exactly this session, instead of an API key"}
READ_SECURITY = [{"apiKey": []}, {"shareLink": []}]

EVENT = {"type": "object", "required": ["type", "timestamp", "data"], "properties": {
    "type": {"type": "integer", "minimum": 0, "maximum": 6},
    "timestamp": {"type": "integer", "description": "Unix time in milliseconds"},
    "data": {}}}

BATCH = {"type": "object", "required": ["session_id", "window_id", "batch_id", "events"], "properties": {
    "token": {"type": "string", "description": "the project's ingest token (or ?token=)"},
    "session_id": ID, "window_id": ID,
    "distinct_id": {"type": ["string", "number", "null"], "description": "the user, at most 200 characters"},
    "batch_id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
    "events": {"type": "array", "minItems": 1, "maxItems": 20000, "items": EVENT}}}

SUMMARY = {"type": "object", "required": ["project_id", "session_id", "start_ts", "end_ts", "event_count"],
           "properties": {
               "project_id": {"type": "string"}, "session_id": {"type": "string"},
               "distinct_id": {"type": ["string", "null"]},
               "window_ids": {"type": "array", "items": {"type": "string"}},
               "start_ts": {"type": "integer"}, "end_ts": {"type": "integer"},
               "duration_ms": {"type": "integer"}, "active_ms": {"type": "integer"},
               "clicks": {"type": "integer"}, "keypresses": {"type": "integer"},
               "console_errors": {"type": "integer"}, "first_url": {"type": ["string", "null"]},
               "urls": {"type": "array", "items": {"type": "string"}},
               "event_count": {"type": "integer"}, "size_bytes": {"type": "integer"},
               "stored_bytes": {"type": "integer"}, "meta": {"type": "object"},
               "viewport": {"type": ["array", "null"], "items": {"type": "integer"}},
               "updated_ms": {"type": "integer"}}}

PROBE = {"type": "object", "required": ["status"], "properties": {
    "status": {"type": "string"}, "checks": {"type": "object", "additionalProperties": {"type": "string"}}}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Replay", "version": "1", "description":
             "Session-recording ingest (rrweb), the read API, share links, erasure, and probes. "
             "Every error is {\"error\": code, \"detail\": text}."},
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "a project's secret API key (rpk_...)"},
            "shareLink": {"type": "apiKey", "in": "query", "name": "share",
                          "description": "a signed share-link token; reads one session until it expires"},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error", "detail"], "properties": {
                "error": {"type": "string"}, "detail": {"type": "string"}}},
            "Batch": BATCH, "Event": EVENT, "SessionSummary": SUMMARY,
        },
    },
    "paths": {
        "/v1/recordings": {
            "post": {
                "summary": "Upload one batch of rrweb events (native API); 200 once fsynced to the spool",
                "security": [],
                "parameters": [
                    {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "Content-Encoding", "in": "header", "required": False,
                     "schema": {"type": "string", "enum": ["gzip", "zstd", "identity"]}},
                ],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Batch"}},
                    "text/plain": {"schema": {"type": "string"}},
                    "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
                }},
                "responses": {
                    "200": {"description": "kept", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["status", "accepted_events"], "properties": {
                            "status": {"const": "ok"}, "accepted_events": {"type": "integer", "minimum": 0}}}}}},
                    **_errors(400, 401, 408, 413, 415, 429, 503),
                },
            },
            "options": {"summary": "CORS preflight", "security": [],
                        "responses": {"204": {"description": "allowed from any origin"}}},
        },
        "/api/projects/{project}/sessions": {
            "get": {
                "summary": "List a project's sessions, newest first",
                "security": [{"apiKey": []}],
                "parameters": [PROJECT] + [
                    {"name": n, "in": "query", "required": False, "schema": s} for n, s in (
                        ("distinct_id", {"type": "string"}), ("since", {"type": "string"}),
                        ("until", {"type": "string"}), ("url", {"type": "string"}),
                        ("min_duration", {"type": "integer", "minimum": 0}),
                        ("has_errors", {"type": "string", "enum": ["true", "false", "1", "0"]}),
                        ("sort", {"type": "string", "enum": ["start", "duration", "active", "clicks", "errors",
                                                             "events", "user", "end"]}),
                        ("order", {"type": "string", "enum": ["asc", "desc"]}),
                        ("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                        ("offset", {"type": "integer", "minimum": 0}))],
                "responses": {
                    "200": {"description": "one page", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["sessions", "total", "next_offset"], "properties": {
                            "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionSummary"}},
                            "total": {"type": "integer"}, "next_offset": {"type": ["integer", "null"]}}}}}},
                    **_errors(400, 401, 403),
                },
            },
        },
        "/api/projects/{project}/sessions/{session}": {
            "get": {
                "summary": "One session's summary",
                "security": READ_SECURITY,
                "parameters": [PROJECT, SESSION, SHARE],
                "responses": {"200": {"description": "the summary", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SessionSummary"}}}}, **_errors(400, 401, 403, 404)},
            },
            "delete": {
                "summary": "Erase a session (API key only): index rows now, a tombstone honoured everywhere",
                "security": [{"apiKey": []}],
                "parameters": [PROJECT, SESSION],
                "responses": {"200": {"description": "erased", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status"], "properties": {
                        "status": {"const": "erased"}, "project_id": {"type": "string"},
                        "session_id": {"type": "string"}}}}}}, **_errors(400, 401, 403, 404)},
            },
        },
        "/api/projects/{project}/sessions/{session}/events": {
            "get": {
                "summary": "The session's rrweb events as one JSON array, in timestamp order",
                "security": READ_SECURITY,
                "parameters": [PROJECT, SESSION, SHARE, {
                    "name": "from", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                    "description": "only events at or after this time (ms since the epoch): a live player's poll"}],
                "responses": {"200": {"description": "events", "content": {"application/json": {"schema": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Event"}}}}},
                    **_errors(400, 401, 403, 404)},
            },
        },
        "/api/projects/{project}/sessions/{session}/share": {
            "post": {
                "summary": "Mint a signed, expiring, read-only share link for this one session",
                "security": [{"apiKey": []}],
                "parameters": [PROJECT, SESSION,
                               {"name": "expires_in", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 7776000}},
                               {"name": "t", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 0}}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "expires_in": {"type": "integer", "minimum": 1, "maximum": 7776000},
                        "t": {"type": "integer", "minimum": 0}}}}}},
                "responses": {"201": {"description": "the link", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["url", "path", "token", "expires_at"], "properties": {
                        "url": {"type": "string"}, "path": {"type": "string"}, "token": {"type": "string"},
                        "project_id": {"type": "string"}, "session_id": {"type": "string"},
                        "expires_at": {"type": "integer"}, "t": {"type": ["integer", "null"]}}}}}},
                    **_errors(400, 401, 403, 404)},
            },
        },
        "/share/{token}": {
            "get": {
                "summary": "Open a share link: sets a cookie for that session and redirects to its player",
                "security": [],
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "no player page in this build: where the session's JSON is",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "303": {"description": "to the player page"},
                    **_errors(401),
                },
            },
        },
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {
            "200": {"description": "alive", "content": {"application/json": {"schema": PROBE}}}}}},
        "/readyz": {"get": {"summary": "Readiness: blob store and catalog reachable", "security": [], "responses": {
            "200": {"description": "ready", "content": {"application/json": {"schema": PROBE}}},
            "503": {"description": "a dependency is down", "content": {"application/json": {"schema": PROBE}}}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {
            "200": {"description": "text format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    },
}

# Other parts add their routes' descriptions here (e.g. the posthog receiver's /s/), keyed by path.
EXTRA_PATHS = web.AppKey("openapi_extra_paths", dict)


def document(app: web.Application) -> dict[str, Any]:
    doc = copy.deepcopy(DOCUMENT)
    doc["paths"].update(copy.deepcopy(app.get(EXTRA_PATHS, {})))
    return doc


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi)
