"""TEMPORARY shim (integrator) until the posthog helper lands the real bounded decoders."""
from __future__ import annotations
import zlib
from typing import Any
import msgpack, orjson, zstandard
from replay.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


def inflate_gzip(data: bytes, max_bytes: int) -> bytes:
    d = zlib.decompressobj(31)
    try:
        out = d.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(f"bad gzip: {exc}", code="bad_gzip") from None
    if len(out) > max_bytes:
        raise PayloadTooLarge("too large", code="decoded_body_too_large")
    if not d.eof:
        raise BadRequest("truncated gzip", code="bad_gzip")
    return out


def inflate_zstd(data: bytes, max_bytes: int) -> bytes:
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = dobj.decompress(data)
    except zstandard.ZstdError as exc:
        raise BadRequest(f"bad zstd: {exc}", code="bad_zstd") from None
    if len(out) > max_bytes:
        raise PayloadTooLarge("too large", code="decoded_body_too_large")
    return out


def decode_content(data: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    enc = (content_encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return data
    if enc in ("gzip", "x-gzip"):
        return inflate_gzip(data, max_bytes)
    if enc == "zstd":
        return inflate_zstd(data, max_bytes)
    raise UnsupportedMediaType(f"Content-Encoding {enc}", code="unsupported_encoding")


def parse_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}", code="invalid_json") from None


def parse_msgpack(data: bytes, max_bytes: int) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise BadRequest(f"invalid msgpack: {exc}", code="invalid_msgpack") from None
