"""Bounded decoding of request bodies: gzip, zstd, deflate, JSON and msgpack.

Every function here is pure (bytes in, value out) and raises only ``replay.errors`` exceptions:
``BadRequest`` for input that is corrupt, truncated or not what it claims to be,
``PayloadTooLarge`` once decoded output passes the caller's ``max_bytes``, and
``UnsupportedMediaType`` for an encoding we do not speak. Decompression never trusts sizes
declared by the input (gzip ISIZE, zstd frame content size): output is produced in bounded
steps and counted, so a bomb costs at most ``max_bytes`` plus one step, never its claimed size.
"""

from __future__ import annotations

import gc
import json
import math
from typing import Any

import msgpack
import orjson
import zstandard
from zlib_ng import zlib_ng as zlib  # zlib's API; inflates our uploads 1.8x faster than the system zlib

from replay import native_parts
from replay.ingest.value_budget import DEFAULT_MAX_JSON_VALUES, check_json_value_budget
from replay.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

_decoded_tree = native_parts.load("replay.ingest._decoded_tree")
_untrack = _decoded_tree.untrack if _decoded_tree is not None else None
UNTRACKS_DECODED = _untrack is not None  # decoded uploads kept out of the garbage collector (C part built)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_JSON_DEPTH = 1024  # what orjson >= 3.9.15 enforces by itself; msgpack's C unpacker stops at 1024 too

TOO_LARGE = "decoded_body_too_large"
# gzip members / zstd frames per body. Clients send one; each further one cost a copy of the rest of
# the body (zlib's unused_data) or a decoder round: 80,000 tiny gzip members in a 1.8 MB body took 3 s
# of the event loop, a 25 MB body of them would have taken minutes.
MAX_MEMBERS = 64

_ZSTD_BLOCK_MAX = 128 * 1024  # a zstd block never decodes to more than this
_ZSTD_MIN_WINDOW = 1 << 20
_ZSTD_MAX_WINDOW = 1 << 27  # zstd's own default limit (windowLog 27)


def _too_large(what: str, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} decodes to more than {max_bytes} bytes", code=TOO_LARGE)


# --- gzip / deflate -----------------------------------------------------------------------------


def _inflate_zlib(data: bytes, max_bytes: int, wbits: int, what: str, code: str) -> bytes:
    parts: list[bytes] = []  # one member (the usual case) is returned as inflated, without a copy
    size = 0
    rest = bytes(data)
    while True:
        d = zlib.decompressobj(wbits)
        try:
            # max_length bounds what zlib may produce from this member: one byte past the budget
            # is enough to know it is over.
            parts.append(d.decompress(rest, max_bytes - size + 1))
        except zlib.error as exc:
            raise BadRequest(f"corrupt {what} data: {exc}", code=code) from None
        size += len(parts[-1])
        if size > max_bytes:
            raise _too_large(what, max_bytes)
        if not d.eof:
            # Below the budget zlib consumed all its input without reaching the end of the stream.
            raise BadRequest(f"truncated {what} stream (it ends before its trailer)", code=code)
        rest = d.unused_data
        if not rest:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if wbits != 31 or not rest.startswith(GZIP_MAGIC):
            raise BadRequest(f"{len(rest)} bytes of trailing garbage after the {what} stream", code=code)
        if len(parts) == MAX_MEMBERS:
            raise BadRequest(f"more than {MAX_MEMBERS} gzip members in one body", code=code)
        # RFC 1952: a gzip file may be several members back to back; they decode to the concatenation.


def inflate_gzip(data: bytes, max_bytes: int) -> bytes:
    """Decode a gzip stream (RFC 1952, one or more members), producing at most ``max_bytes``.

    Raises ``BadRequest`` (code ``bad_gzip``) for a corrupt, truncated or trailing-garbage stream
    and ``PayloadTooLarge`` (code ``decoded_body_too_large``) as soon as output passes ``max_bytes``.
    """
    if not data.startswith(GZIP_MAGIC):
        raise BadRequest("not a gzip stream (no 1f 8b magic bytes)", code="bad_gzip")
    return _inflate_zlib(data, max_bytes, 31, "gzip", "bad_gzip")


def inflate_deflate(data: bytes, max_bytes: int) -> bytes:
    """Decode ``Content-Encoding: deflate``: zlib-wrapped (RFC 1950) or, as some clients send it, raw."""
    raw = not (len(data) >= 2 and (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0)
    return _inflate_zlib(data, max_bytes, -15 if raw else 15, "deflate", "bad_deflate")


# --- zstd ---------------------------------------------------------------------------------------


def _zstd_window_limit(max_bytes: int) -> int:
    # A window larger than the output we accept is never needed; cap the memory a frame header can claim.
    return max(_ZSTD_MIN_WINDOW, min(_ZSTD_MAX_WINDOW, 1 << max(0, max_bytes - 1).bit_length()))


def inflate_zstd(data: bytes, max_bytes: int) -> bytes:
    """Decode a zstd stream (one or more frames, skippable frames allowed), producing at most ``max_bytes``.

    Input is fed in slices small enough that one slice cannot decode to much more than the
    remaining budget (a zstd block decodes to at most 128 KiB), so memory stays bounded whatever
    the frames claim; frame windows above what ``max_bytes`` could need are refused.
    Raises ``BadRequest`` (code ``bad_zstd``) for corrupt, truncated or trailing-garbage input.
    """
    mv = memoryview(data)
    out = bytearray()
    pos = 0
    decompressor = zstandard.ZstdDecompressor(max_window_size=_zstd_window_limit(max_bytes))
    if not data:
        raise BadRequest("empty zstd stream", code="bad_zstd")
    frames = 0
    while pos < len(data):
        if frames == MAX_MEMBERS:
            raise BadRequest(f"more than {MAX_MEMBERS} zstd frames in one body", code="bad_zstd")
        frames += 1
        d = decompressor.decompressobj()
        frame_start = pos
        try:
            while not d.eof and pos < len(data):
                room = max_bytes - len(out)
                step = max(64, 4 * (room // _ZSTD_BLOCK_MAX))
                out += d.decompress(mv[pos:pos + step])
                pos += step
                if len(out) > max_bytes:
                    raise _too_large("zstd", max_bytes)
        except zstandard.ZstdError as exc:
            raise BadRequest(f"corrupt zstd data: {exc}", code="bad_zstd") from None
        if not d.eof:
            raise BadRequest("truncated zstd stream (the last frame is incomplete)", code="bad_zstd")
        unused = d.unused_data
        pos = min(pos, len(data)) - len(unused)
        if pos <= frame_start:  # no progress: cannot happen with a sane decoder, never loop forever
            raise BadRequest("corrupt zstd data", code="bad_zstd")
    return bytes(out)


# --- Content-Encoding ---------------------------------------------------------------------------

_DECODERS = {
    "gzip": inflate_gzip,
    "x-gzip": inflate_gzip,
    "zstd": inflate_zstd,
    "deflate": inflate_deflate,
}


def decode_content(data: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo an HTTP ``Content-Encoding`` (``gzip``, ``x-gzip``, ``zstd``, ``deflate``, ``identity``).

    A list (``"gzip, zstd"``) is undone right to left, as RFC 9110 says it was applied. The result
    is at most ``max_bytes`` long, whatever the encoding; an unknown coding is ``UnsupportedMediaType``
    (code ``unsupported_encoding``).
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > 2:
        raise UnsupportedMediaType("at most two stacked content codings are accepted", code="unsupported_encoding")
    for coding in reversed(codings):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            raise UnsupportedMediaType(
                f"Content-Encoding {coding!r} is not supported: use gzip, zstd or none", code="unsupported_encoding"
            )
        data = decoder(data, max_bytes)
    if len(data) > max_bytes:
        raise _too_large("the body", max_bytes)
    return data


# --- JSON ---------------------------------------------------------------------------------------


def _orjson_limits_depth() -> bool:
    # CVE-2024-27454: orjson.loads before 3.9.15 recurses without a limit and a deep enough
    # document ("[" * 3_000_000, a few KiB gzipped) overflows the C stack and kills the process.
    try:
        parts = tuple(int(p) for p in orjson.__version__.split(".")[:3])
    except ValueError:
        return False
    return parts >= (3, 9, 15)


_ORJSON_SAFE_DEPTH = _orjson_limits_depth()
_BRACKETS_ONLY = bytes(c for c in range(256) if c not in b"[]{}")
_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")


def json_depth_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON document nests arrays/objects more than ``limit`` deep (outside strings).

    Exact for valid JSON; for invalid JSON it is exact up to the first syntax error, which is as
    far as any parser recurses. Linear time, mostly in C (``bytes`` methods), no recursion.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    # Drop string contents: escaped backslashes, then escaped quotes, then every other quoted run.
    outside = b"".join(data.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[0::2])
    seq = outside.translate(None, _BRACKETS_ONLY).translate(_TO_PARENS)
    if seq.count(b"(") <= limit:
        return False
    # Peel innermost pairs a few rounds in C: each round lowers the maximum depth by exactly one.
    rounds = 0
    while seq and rounds < 64 and len(seq) > 4096:
        shorter = seq.replace(b"()", b"")
        if len(shorter) == len(seq):
            break
        seq, rounds = shorter, rounds + 1
    depth, budget = 0, limit - rounds
    if budget < 0:
        return True
    for c in seq:
        if c == 40:  # "("
            depth += 1
            if depth > budget:
                return True
        else:
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows a double")
    return value


def _fix_surrogates(value: Any) -> Any:
    # Replace lone UTF-16 surrogates (which cannot be stored as UTF-8) with U+FFFD, iteratively.
    def clean(s: str) -> str:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")

    def needs(s: str) -> bool:
        return any("\ud800" <= ch <= "\udfff" for ch in s)

    if isinstance(value, str):
        return clean(value) if needs(value) else value
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for i, item in enumerate(node):
                if isinstance(item, str):
                    if needs(item):
                        node[i] = clean(item)
                elif isinstance(item, (list, dict)):
                    stack.append(item)
        elif isinstance(node, dict):
            for key in list(node):
                item = node[key]
                if isinstance(item, str) and needs(item):
                    item = node[key] = clean(item)
                elif isinstance(item, (list, dict)):
                    stack.append(item)
                if needs(key):
                    node[clean(key)] = node.pop(key)
    return value


def parse_json(data: bytes | str, max_values: int = DEFAULT_MAX_JSON_VALUES) -> Any:
    """Parse one JSON document with orjson; ``BadRequest`` (code ``invalid_json``) if it is not one.

    Refused: invalid UTF-8, a byte-order mark, NaN/Infinity (and numbers that overflow to them),
    trailing content, nesting deeper than ``MAX_JSON_DEPTH``. Lone UTF-16 surrogate escapes
    (``"\\ud800"``, which browsers' ``JSON.stringify`` emits for broken text) are accepted and
    become U+FFFD rather than failing the whole upload.
    """
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("invalid JSON: text is not valid Unicode", code="invalid_json") from None
    # Every JSON path (native bodies, posthog bodies, inflated posthog fields) passes the same ceiling.
    check_json_value_budget(data, max_values)
    if not _ORJSON_SAFE_DEPTH and json_depth_exceeds(data):
        raise BadRequest(f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_json")
    try:
        return _decoded_out_of_gc(orjson.loads, data)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "depth" in message or "recursion" in message.lower():
            raise BadRequest(f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_json") from None
        if "surrogate" not in message or "UTF-8" in message:
            raise BadRequest(f"invalid JSON: {message}", code="invalid_json") from None
    # orjson refuses escaped lone surrogates; the stdlib parser accepts them and is depth-safe.
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"invalid JSON: {exc}", code="invalid_json") from None
    return _fix_surrogates(value)


def _decoded_out_of_gc(decode: Any, data: bytes, **options: Any) -> Any:
    """``decode(data)`` with the cyclic collector paused, its tree then taken out of the collector's sight.

    An upload decodes to thousands of dicts and lists; a collection during decoding walks the half-built
    tree, and every collection while the upload is in flight walks it again (with dozens in flight, 14%
    of a server's CPU). A decoded tree holds no cycle and is freed by reference counting when its request
    ends, so the collector has nothing to find in it (see _decoded_tree.c).
    """
    if _untrack is None:
        return decode(data, **options)
    enabled = gc.isenabled()
    gc.disable()
    try:
        value = decode(data, **options)
    finally:
        if enabled:
            gc.enable()
    _untrack(value)
    return value


# --- msgpack ------------------------------------------------------------------------------------


def _ext_hook(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not accepted")


def _check_plain(value: Any) -> None:
    # msgpack can carry what JSON cannot: bytes, timestamps, NaN. Refuse them here so nothing
    # downstream meets a value it cannot store or replay. Depth is already bounded by the unpacker.
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise BadRequest("invalid msgpack: NaN and Infinity are not accepted", code="invalid_msgpack")
        elif not (node is None or isinstance(node, (str, int, bool))):
            raise BadRequest(f"invalid msgpack: values of type {type(node).__name__} are not accepted",
                             code="invalid_msgpack")


def parse_msgpack(data: bytes, max_bytes: int, max_values: int = DEFAULT_MAX_JSON_VALUES) -> Any:
    """Unpack one msgpack document holding only JSON-like values; ``BadRequest`` (``invalid_msgpack``) else.

    Map keys must be strings, strings valid UTF-8, with no extension types, no binary,
    no NaN/Infinity, no trailing bytes, nesting at most 1024 deep. Declared container and string
    lengths are bounded by the input size, so a lying header cannot make us allocate.
    """
    if len(data) > max_bytes:
        raise _too_large("the msgpack body", max_bytes)
    # The same value ceiling as JSON bodies (value_budget.py), counted as containers close: every
    # value but the root sits in one, so a body of millions of tiny values stops early.
    budget = [max_values]

    def count(container: Any) -> Any:
        budget[0] -= len(container) + 1
        if budget[0] < 0:
            raise PayloadTooLarge(f"the body holds more than {max_values} values; send smaller batches",
                                  code="too_many_values")
        return container

    try:
        value = _decoded_out_of_gc(
            msgpack.unpackb,
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_ext_hook,
            list_hook=count,
            object_hook=count,
            max_array_len=max_values,
            max_map_len=max_values,
        )
    except msgpack.ExtraData:
        raise BadRequest("invalid msgpack: extra bytes after the document", code="invalid_msgpack") from None
    except (ValueError, msgpack.exceptions.UnpackException) as exc:  # FormatError, StackError, limits, UTF-8
        if isinstance(exc, msgpack.exceptions.StackError):
            detail = "nested more than 1024 levels deep"
        elif isinstance(exc, msgpack.exceptions.FormatError):
            detail = "not msgpack (reserved type byte)"
        else:
            detail = str(exc) or type(exc).__name__
        raise BadRequest(f"invalid msgpack: {detail}", code="invalid_msgpack") from None
    _check_plain(value)
    return value
