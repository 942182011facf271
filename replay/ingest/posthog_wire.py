"""posthog-js session-recording uploads (``POST /s/``) -> ``Batch`` records. Pure: no aiohttp, no I/O.

What posthog-js sends (see docs/posthog-wire.md for sources and versions):

* **Body encodings** — gzip (``compression=gzip-js`` in the query up to 1.398.1, no parameter since
  1.398.2, so gzip is recognised by its ``1f 8b`` magic bytes; ``Content-Type: text/plain``);
  a form ``data=<urlencoded base64 of the JSON>`` (``compression=base64``, also what ``sendBeacon``
  falls back to); or plain JSON (``application/json``). posthog-js never sets
  ``Content-Encoding``, but other senders may, so it is honoured too.
* **Shape** — a JSON array of captured events (the request queue batches them), a single event
  object (unbatched sends) or ``{"api_key", "batch": [...]}``. Recording events are
  ``{"event": "$snapshot", "uuid", "properties": {"$snapshot_data", "$session_id", "$window_id",
  "token", "distinct_id", "$snapshot_bytes", "$lib", "$lib_version", ...}}``; ``$snapshot_data``
  is an array of rrweb events (a single rrweb event before ~1.70, and then without ``uuid``).
* **``cv: "2024-10"``** — since ~1.170 some rrweb events have fields replaced by a string holding
  ``gzip(JSON.stringify(value))`` as one character per byte (latin-1): FullSnapshot ``data``;
  Mutation ``texts``/``attributes``/``removes``/``adds``; StyleSheetRule ``adds``/``removes``.
  They are inflated back here (bounded) and the marker dropped, so stored events are plain rrweb.

Idempotency: a retry re-sends the same events (same ``uuid``), so ``batch_id`` is the event
``uuid``, or a hash of the content when there is none; merged groups get a hash of their members.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from replay.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from replay.ingest.batch import Batch
from replay.ingest.body import GZIP_MAGIC, decode_content, inflate_gzip, parse_json

SNAPSHOT_EVENT = "$snapshot"
COMPRESSION_VERSION = "2024-10"

# rrweb enums
FULL_SNAPSHOT, INCREMENTAL_SNAPSHOT, META = 2, 3, 4
SOURCE_MUTATION, SOURCE_STYLESHEET_RULE = 0, 8
_COMPRESSED_FIELDS = {SOURCE_MUTATION: ("texts", "attributes", "removes", "adds"), SOURCE_STYLESHEET_RULE: ("adds", "removes")}

# $snapshot properties worth keeping with the batch, and their names in Batch.meta
META_PROPERTIES = {
    "$current_url": "url",
    "$snapshot_host": "host",
    "$host": "host",
    "$lib": "lib",
    "$lib_version": "lib_version",
    "$browser": "browser",
    "$browser_version": "browser_version",
    "$os": "os",
    "$os_version": "os_version",
    "$device_type": "device_type",
    "$viewport_width": "viewport_width",
    "$viewport_height": "viewport_height",
    "$screen_width": "screen_width",
    "$screen_height": "screen_height",
    "$referrer": "referrer",
    "$snapshot_source": "snapshot_source",
    "$snapshot_bytes": "snapshot_bytes",
}
_MAX_META_STRING = 2048
_CLEAN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass
class SnapshotUpload:
    """One batch of a posthog upload, with the project token it was sent with.

    ``batch.project_id`` is ``""``: the receiver resolves ``token`` to a project and sets it.
    """

    token: str
    batch: Batch

    def batch_for(self, project_id: str) -> Batch:
        """The batch, attributed to the project the receiver resolved ``token`` to."""
        return dataclasses.replace(self.batch, project_id=project_id)


class _Budget:
    """Bytes we may still materialise for this request (decoded body + inflated fields)."""

    def __init__(self, max_bytes: int):
        self.remaining = max_bytes
        self.max_bytes = max_bytes

    def spend(self, n: int) -> None:
        self.remaining -= n
        if self.remaining < 0:
            raise PayloadTooLarge(f"the upload decodes to more than {self.max_bytes} bytes",
                                  code="decoded_body_too_large")


# --- body -> JSON payload -----------------------------------------------------------------------


def _b64decode(text: str) -> bytes:
    # btoa() output. Base64 has no spaces, so a space is an unencoded '+' that form decoding
    # turned into ' '; also tolerate line breaks and lost padding.
    compact = text.strip().replace(" ", "+").replace("\n", "").replace("\r", "")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the form field 'data' is neither JSON nor valid base64", code="bad_base64") from None


def _form_data(body: bytes) -> bytes:
    try:
        text = body.decode("ascii")
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=False, encoding="utf-8",
                           errors="strict", max_num_fields=32)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"malformed form body: {exc}", code="bad_form") from None
    values = [v for k, v in fields if k == "data"]
    if not values:
        raise BadRequest("form body has no 'data' field", code="bad_form")
    value = values[0].strip()
    if value[:1] in ("[", "{"):  # very old clients: data=<urlencoded JSON>
        return value.encode("utf-8", "surrogatepass")
    return _b64decode(value)


def _looks_like_text_body(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"[", b"{") or data.lstrip().startswith(b"data=")


def _decode(body: bytes, max_bytes: int, query: Mapping[str, str], content_type: str | None,
            content_encoding: str | None) -> tuple[Any, int]:
    compression = (query.get("compression") or "").strip().lower()
    if compression in ("lz64", "lz-string"):
        raise UnsupportedMediaType("lz64 compression is not supported; the server only advertises gzip-js and base64",
                                   code="unsupported_compression")
    data = decode_content(body, content_encoding, max_bytes)
    if data.startswith(GZIP_MAGIC):
        data = inflate_gzip(data, max_bytes)
    elif compression in ("gzip-js", "gzip") and not _looks_like_text_body(data):
        # posthog-js drops the parameter when it falls back to an uncompressed body, so this body
        # claims gzip and is neither gzip nor text: most likely gzip with a damaged header.
        raise BadRequest("compression=gzip-js but the body is not a gzip stream (no 1f 8b magic bytes)",
                         code="bad_gzip")
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    stripped = data.lstrip()
    if (mime == _FORM_TYPE or compression == "base64" or stripped.startswith(b"data=")) \
            and stripped[:1] not in (b"[", b"{"):
        data = _form_data(stripped)
        if data.startswith(GZIP_MAGIC):
            data = inflate_gzip(data, max_bytes)
    if not data.strip():
        raise BadRequest("empty body", code="invalid_json")
    return parse_json(data), len(data)


def decode_snapshot_body(
    body: bytes,
    *,
    max_bytes: int,
    query: Mapping[str, str] | None = None,
    content_type: str | None = None,
    content_encoding: str | None = None,
) -> Any:
    """Decode the raw body of a posthog-js ``/s/`` request to its JSON value (bounded by ``max_bytes``).

    Handles, in this order: ``Content-Encoding``; a gzip body (by magic bytes, with or without
    ``compression=gzip-js``); a form body (``data=`` base64, or urlencoded JSON); plain JSON.
    """
    return _decode(body, max_bytes, query or {}, content_type, content_encoding)[0]


# --- cv 2024-10 ---------------------------------------------------------------------------------


def _inflate_field(value: str, budget: _Budget, where: str) -> Any:
    try:
        raw = value.encode("latin-1")  # one character per byte (fflate strFromU8(..., true))
    except UnicodeEncodeError:
        raise BadRequest(f"{where}: a compressed field must hold one character per byte",
                         code="bad_compressed_event") from None
    try:
        inflated = inflate_gzip(raw, max(budget.remaining, 0))
        budget.spend(len(inflated))
        return parse_json(inflated)
    except PayloadTooLarge:
        raise PayloadTooLarge(f"the upload decodes to more than {budget.max_bytes} bytes (at {where})",
                              code="decoded_body_too_large") from None
    except BadRequest as exc:
        raise BadRequest(f"{where}: {exc.detail}", code="bad_compressed_event") from None


def inflate_compressed_event(event: dict[str, Any], *, max_bytes: int, where: str = "event") -> dict[str, Any]:
    """Return ``event`` as plain rrweb: ``cv: "2024-10"`` fields inflated (at most ``max_bytes`` in all), marker dropped.

    Events without ``cv`` are returned unchanged (the same object).
    """
    return _decompress_event(event, _Budget(max_bytes), where)


def _decompress_event(event: dict[str, Any], budget: _Budget, where: str) -> dict[str, Any]:
    if "cv" not in event:
        return event
    cv = event["cv"]
    if cv != COMPRESSION_VERSION:
        raise BadRequest(f"{where}: unknown compression version cv={cv!r}", code="unsupported_compression_version")
    out = {k: v for k, v in event.items() if k != "cv"}
    etype, data = out.get("type"), out.get("data")
    if etype == FULL_SNAPSHOT and isinstance(data, str):
        inflated = _inflate_field(data, budget, f"{where}.data")
        if not isinstance(inflated, dict):
            raise BadRequest(f"{where}.data: a full snapshot must inflate to an object", code="bad_compressed_event")
        out["data"] = inflated
    elif etype == INCREMENTAL_SNAPSHOT and isinstance(data, dict):
        fields = _COMPRESSED_FIELDS.get(data.get("source"), ())
        if any(isinstance(data.get(f), str) for f in fields):
            data = dict(data)
            for f in fields:
                if isinstance(data.get(f), str):
                    inflated = _inflate_field(data[f], budget, f"{where}.data.{f}")
                    if not isinstance(inflated, list):
                        raise BadRequest(f"{where}.data.{f}: must inflate to an array", code="bad_compressed_event")
                    data[f] = inflated
            out["data"] = data
    return out


# --- payload -> batches -------------------------------------------------------------------------


def _payload_events(payload: Any) -> tuple[list[Any], str | None]:
    if isinstance(payload, list):
        return payload, None
    if isinstance(payload, dict):
        top_token = payload.get("api_key") or payload.get("token")
        top_token = top_token if isinstance(top_token, str) and top_token else None
        if "batch" in payload:
            batch = payload["batch"]
            if not isinstance(batch, list):
                raise BadRequest("'batch' must be an array of events", code="invalid_payload")
            return batch, top_token
        if "event" in payload:
            return [payload], top_token
    raise BadRequest("the body must be an event, an array of events or {batch: [...]}", code="invalid_payload")


def _meta_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:_MAX_META_STRING]
    return None


def _content_id(session_id: str, window_id: str, snapshot_data: Any) -> str:
    try:
        blob = orjson.dumps([session_id, window_id, snapshot_data], option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        blob = json.dumps([session_id, window_id, snapshot_data], sort_keys=True).encode("utf-8", "surrogatepass")
    return "h-" + hashlib.sha256(blob).hexdigest()[:32]


@dataclass
class _Part:
    token: str
    session_id: str
    window_id: str
    distinct_id: str | None
    batch_id: str
    events: list[dict[str, Any]]
    meta: dict[str, Any]


def _parse_snapshot(index: int, event: dict[str, Any], fallback_token: str | None, budget: _Budget) -> _Part:
    where = f"[{index}]"
    props = event.get("properties")
    if not isinstance(props, dict):
        raise BadRequest(f"$snapshot event {where} has no properties object", code="invalid_snapshot")
    token = props.get("token") or event.get("api_key") or event.get("token") or fallback_token
    if not isinstance(token, str) or not token:
        raise BadRequest(f"$snapshot event {where} carries no project token (properties.token)", code="missing_token")
    session_id = props.get("$session_id")
    if not isinstance(session_id, str) or not session_id:
        raise BadRequest(f"$snapshot event {where} has no $session_id", code="invalid_snapshot")
    window_id = props.get("$window_id")
    if not isinstance(window_id, str) or not window_id:
        window_id = session_id
    distinct_id = props.get("distinct_id", event.get("distinct_id"))
    if isinstance(distinct_id, (int, float)) and not isinstance(distinct_id, bool):
        distinct_id = str(distinct_id)
    if not isinstance(distinct_id, str) or not distinct_id:
        distinct_id = None

    snapshot_data = props.get("$snapshot_data")
    if isinstance(snapshot_data, dict):  # posthog-js < ~1.70: one rrweb event per $snapshot
        raw_events = [snapshot_data]
    elif isinstance(snapshot_data, list):
        raw_events = snapshot_data
    else:
        raise BadRequest(f"$snapshot event {where} has no $snapshot_data array", code="invalid_snapshot")

    uuid = event.get("uuid")
    if isinstance(uuid, str) and _CLEAN_ID.fullmatch(uuid):
        batch_id = uuid
    else:
        batch_id = _content_id(session_id, window_id, snapshot_data)

    events: list[dict[str, Any]] = []
    for i, rr in enumerate(raw_events):
        if not isinstance(rr, dict):
            raise BadRequest(f"$snapshot event {where}: $snapshot_data[{i}] is not an object", code="invalid_snapshot")
        events.append(_decompress_event(rr, budget, f"{where}.properties.$snapshot_data[{i}]"))

    meta: dict[str, Any] = {"source": "posthog"}
    for prop, key in META_PROPERTIES.items():
        if prop in props and key not in meta:
            value = _meta_value(props[prop])
            if value is not None:
                meta[key] = value
    for rr in events:
        if rr.get("type") == META and isinstance(rr.get("data"), dict):
            d = rr["data"]
            if isinstance(d.get("href"), str):
                meta.setdefault("url", d["href"][:_MAX_META_STRING])
            for src, key in (("width", "viewport_width"), ("height", "viewport_height")):
                if isinstance(d.get(src), int) and not isinstance(d.get(src), bool):
                    meta.setdefault(key, d[src])
            break
    return _Part(token, session_id, window_id, distinct_id, batch_id, events, meta)


def _merge(parts: list[_Part]) -> _Part:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    meta = dict(first.meta)
    total_bytes = 0
    for p in parts:
        for k, v in p.meta.items():
            meta.setdefault(k, v)
        size = p.meta.get("snapshot_bytes")
        total_bytes += size if isinstance(size, int) and not isinstance(size, bool) else 0
    if total_bytes:
        meta["snapshot_bytes"] = total_bytes
    distinct_id = next((p.distinct_id for p in reversed(parts) if p.distinct_id), None)
    batch_id = "m-" + hashlib.sha256("\n".join(p.batch_id for p in parts).encode()).hexdigest()[:32]
    events = [e for p in parts for e in p.events]
    return _Part(first.token, first.session_id, first.window_id, distinct_id, batch_id, events, meta)


def snapshot_uploads(
    payload: Any,
    *,
    max_inflated_bytes: int,
    query: Mapping[str, str] | None = None,
    merge: bool = True,
) -> list[SnapshotUpload]:
    """Turn a decoded posthog payload into batches: one per ``$snapshot`` event, or with ``merge``
    one per (token, session, window) in request order. Other events are ignored; ``$snapshot``
    events with no rrweb events produce nothing.

    ``cv`` fields are inflated within ``max_inflated_bytes`` for the whole payload. The token
    comes from ``properties.token``, else the event's or the body's ``api_key``/``token``, else
    ``?token=``/``?api_key=`` in ``query``.
    """
    events, top_token = _payload_events(payload)
    query = query or {}
    fallback = top_token or query.get("token") or query.get("api_key") or None
    budget = _Budget(max_inflated_bytes)
    parts: list[_Part] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise BadRequest(f"event [{index}] is not an object", code="invalid_payload")
        if event.get("event") != SNAPSHOT_EVENT:
            continue
        part = _parse_snapshot(index, event, fallback, budget)
        if part.events:
            parts.append(part)

    if merge:
        groups: dict[tuple[str, str, str], list[_Part]] = {}
        for part in parts:
            groups.setdefault((part.token, part.session_id, part.window_id), []).append(part)
        parts = [_merge(group) for group in groups.values()]

    return [
        SnapshotUpload(
            token=p.token,
            batch=Batch(
                project_id="",
                session_id=p.session_id,
                window_id=p.window_id,
                batch_id=p.batch_id,
                events=p.events,
                distinct_id=p.distinct_id,
                meta=p.meta,
            ),
        )
        for p in parts
    ]


def parse_snapshot_request(
    body: bytes,
    *,
    max_bytes: int,
    query: Mapping[str, str] | None = None,
    content_type: str | None = None,
    content_encoding: str | None = None,
    merge: bool = True,
) -> list[SnapshotUpload]:
    """The whole ``POST /s/`` decode: raw body -> batches. ``max_bytes`` bounds everything materialised:
    the decoded body plus all inflated ``cv`` fields. Raises only ``ReplayError`` subclasses."""
    payload, decoded_len = _decode(body, max_bytes, query or {}, content_type, content_encoding)
    return snapshot_uploads(payload, max_inflated_bytes=max(max_bytes - decoded_len, 0), query=query, merge=merge)


__all__ = [
    "SnapshotUpload",
    "decode_snapshot_body",
    "inflate_compressed_event",
    "parse_snapshot_request",
    "snapshot_uploads",
]
