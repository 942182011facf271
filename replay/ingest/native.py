"""The native ingest API: ``POST /v1/recordings``.

Body (JSON or msgpack; ``Content-Encoding`` gzip, zstd or none)::

    {"token": "<ingest token>", "session_id": "...", "window_id": "...", "distinct_id": "...",
     "batch_id": "<idempotency key>", "events": [<rrweb event>, ...]}

``sendBeacon`` bodies arrive as ``text/plain`` JSON, with the token in the query string.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from replay.errors import BadRequest, Unauthorized, UnsupportedMediaType
from replay.ingest.batch import Batch
from replay.ingest.body import decode_content, parse_json, parse_msgpack
from replay.ingest.packed import NativeEnvelope, read_envelope, read_events
from replay.ingest.upload import read_upload
from replay.ingest.validate import check_batch_id, check_distinct_id, check_events, check_id
from replay.web.cors import CorsMode, allow_cors
from replay.web.keys import SERVICE

JSON_TYPES = {"application/json", "text/plain", "application/octet-stream", ""}
MSGPACK_TYPES = {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
ZSTD_MAGIC, GZIP_MAGIC = b"\x28\xb5\x2f\xfd", b"\x1f\x8b"


def _sniffed_encoding(body: bytes, declared: str | None) -> str | None:
    # sendBeacon cannot set Content-Encoding, so a compressed beacon is recognised by its magic bytes.
    if declared:
        return declared
    if body.startswith(GZIP_MAGIC):
        return "gzip"
    if body.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


async def post_recordings(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    limits = service.limits
    raw = await read_upload(request, limits)
    body = decode_content(raw, _sniffed_encoding(raw, request.headers.get("Content-Encoding")),
                          limits.max_decoded_bytes)
    ctype = request.content_type.lower() if request.headers.get("Content-Type") else ""
    if ctype in MSGPACK_TYPES:
        payload: Any = parse_msgpack(body, limits.max_decoded_bytes)
    elif ctype in JSON_TYPES:
        payload = read_envelope(body, limits.max_events) or parse_json(body)
    else:
        raise UnsupportedMediaType(f"Content-Type {ctype!r}: send application/json or application/msgpack",
                                   code="unsupported_content_type")
    if not isinstance(payload, (dict, NativeEnvelope)):
        raise BadRequest("the body must be an object with token, session_id, window_id, batch_id and events",
                         code="invalid_body")
    token = payload.get("token") or request.query.get("token")
    if not isinstance(token, str) or not token:
        raise Unauthorized("an ingest token is required (body 'token' or ?token=)", code="missing_token")
    project = await service.catalog.project_by_token(token)
    if project is None:
        raise Unauthorized("unknown ingest token", code="invalid_token")
    service.rate_limiter.check(token)
    session_id = check_id(payload.get("session_id"), "session_id", limits)
    window_id = check_id(payload.get("window_id"), "window_id", limits)
    batch_id = check_batch_id(payload.get("batch_id"))
    distinct_id = check_distinct_id(payload.get("distinct_id"), limits)
    packed = None
    if isinstance(payload, NativeEnvelope):  # its events left packed (ingest/packed.py)
        packed = read_events(payload, limits)
        if packed is None:  # events the ordinary path must look at
            payload = parse_json(body)
    events = [] if packed is not None else check_events(payload.get("events"), limits)
    batch = Batch(project.id, session_id, window_id, batch_id, events, distinct_id, packed=packed)
    accepted = await service.accept(project, [batch])
    # orjson: the stdlib encoder is a visible share of a small upload's CPU.
    return web.Response(body=orjson.dumps({"status": "ok", "accepted_events": accepted}),
                        content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/recordings", post_recordings)
    allow_cors(app, "/v1/recordings", CorsMode.ANY_ORIGIN)
