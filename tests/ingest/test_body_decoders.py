"""Bounded body decoders: they round-trip what real encoders produce, refuse bombs and garbage
with a ReplayError, and never raise anything else whatever the bytes."""

from __future__ import annotations

import functools
import gzip
import math
import time
import zlib

import msgpack
import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.errors import BadRequest, PayloadTooLarge, ReplayError, UnsupportedMediaType
from replay.ingest.body import (
    MAX_JSON_DEPTH,
    decode_content,
    inflate_deflate,
    inflate_gzip,
    inflate_zstd,
    json_depth_exceeds,
    parse_json,
    parse_msgpack,
)

MiB = 1 << 20
DOC = orjson.dumps([{"type": 3, "timestamp": 1700000000000 + i, "data": {"source": 1, "x": i, "t": "ünï ✓"}}
                    for i in range(500)])


@functools.lru_cache(maxsize=None)
def gzip_bomb(decoded: int) -> bytes:
    """One gzip member that inflates to ``decoded`` zero bytes (about 1000:1)."""
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = b"\0" * (4 * MiB)
    return b"".join(z.compress(zeros) for _ in range(decoded // len(zeros))) + z.flush()


@functools.lru_cache(maxsize=None)
def zstd_bomb(decoded: int) -> bytes:
    c = zstandard.ZstdCompressor(level=1).compressobj()
    zeros = b"\0" * (4 * MiB)
    return b"".join(c.compress(zeros) for _ in range(decoded // len(zeros))) + c.flush()


# --- gzip -----------------------------------------------------------------------------------------


def test_gzip_round_trips_and_accepts_concatenated_members():
    assert inflate_gzip(gzip.compress(DOC), 10 * MiB) == DOC
    assert inflate_gzip(gzip.compress(DOC[:100]) + gzip.compress(DOC[100:]), 10 * MiB) == DOC


def test_gzip_of_up_to_64_members_is_accepted_and_more_is_refused():
    member = gzip.compress(b"[1]", mtime=0)
    assert inflate_gzip(member * 64, 10 * MiB) == b"[1]" * 64
    for n in (65, 80_000):  # 80,000 tiny members used to cost seconds of copying the rest of the body
        with pytest.raises(BadRequest) as err:
            inflate_gzip(member * n, 10 * MiB)
        assert err.value.code == "bad_gzip" and "more than 64 gzip members" in err.value.detail


def test_gzip_output_of_exactly_max_bytes_is_accepted_and_one_more_is_not():
    assert inflate_gzip(gzip.compress(DOC), len(DOC)) == DOC
    with pytest.raises(PayloadTooLarge) as err:
        inflate_gzip(gzip.compress(DOC), len(DOC) - 1)
    assert err.value.code == "decoded_body_too_large" and err.value.status == 413


def test_gzip_bomb_is_refused_quickly_without_inflating_it():
    bomb = gzip_bomb(512 * MiB)  # 512 MiB of zeros in ~0.5 MB
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge):
        inflate_gzip(bomb, 8 * MiB)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda g: g[:-4], "truncated"),
        (lambda g: g[: len(g) // 2], "truncated"),
        (lambda g: g[:10], "truncated"),
        (lambda g: g + b"junk", "trailing"),
        (lambda g: g[:-8] + bytes(8), "corrupt"),  # wrong CRC and length
        (lambda g: g[:20] + bytes([g[20] ^ 0xFF]) + g[21:], "corrupt"),
        (lambda g: b"\x00" + g[1:], "not a gzip"),
    ],
)
def test_damaged_gzip_is_a_bad_request_that_says_what_is_wrong(damage, expected):
    with pytest.raises(BadRequest) as err:
        inflate_gzip(damage(gzip.compress(DOC)), 10 * MiB)
    assert err.value.code == "bad_gzip" and err.value.status == 400
    assert expected in err.value.detail


def test_deflate_accepts_zlib_wrapped_and_raw_streams():
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert inflate_deflate(zlib.compress(DOC), 10 * MiB) == DOC
    assert inflate_deflate(raw.compress(DOC) + raw.flush(), 10 * MiB) == DOC
    with pytest.raises(BadRequest):
        inflate_deflate(zlib.compress(DOC)[:-3], 10 * MiB)


# --- zstd -----------------------------------------------------------------------------------------


def test_zstd_round_trips_one_frame_several_frames_and_skippable_frames():
    c = zstandard.ZstdCompressor(level=3)
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    assert inflate_zstd(c.compress(DOC), 10 * MiB) == DOC
    assert inflate_zstd(c.compress(DOC[:999]) + skippable + c.compress(DOC[999:]), 10 * MiB) == DOC
    streamed = c.compressobj()
    assert inflate_zstd(streamed.compress(DOC) + streamed.flush(), 10 * MiB) == DOC  # no content size


def test_zstd_of_up_to_64_frames_is_accepted_and_more_is_refused():
    frame = zstandard.ZstdCompressor().compress(b"[1]")
    assert inflate_zstd(frame * 64, 10 * MiB) == b"[1]" * 64
    for n in (65, 300_000):
        with pytest.raises(BadRequest) as err:
            inflate_zstd(frame * n, 10 * MiB)
        assert err.value.code == "bad_zstd" and "more than 64 zstd frames" in err.value.detail


def test_zstd_bomb_is_refused_whatever_its_frame_header_claims():
    started = time.perf_counter()
    # streamed (no content size in the header) and one-shot (a header that states the 256 MiB)
    for bomb in (zstd_bomb(512 * MiB), zstandard.ZstdCompressor(level=1).compress(b"\0" * (256 * MiB))):
        with pytest.raises(PayloadTooLarge) as err:
            inflate_zstd(bomb, 8 * MiB)
        assert err.value.code == "decoded_body_too_large"
    assert time.perf_counter() - started < 5.0


def test_zstd_limit_is_exact():
    frame = zstandard.ZstdCompressor().compress(DOC)
    assert inflate_zstd(frame, len(DOC)) == DOC
    with pytest.raises(PayloadTooLarge):
        inflate_zstd(frame, len(DOC) - 1)


@pytest.mark.parametrize("damage", [lambda f: f[:-3], lambda f: f[:6], lambda f: f + b"zz", lambda f: b"", lambda f: b"nope"])
def test_damaged_zstd_is_a_bad_request(damage):
    with pytest.raises(BadRequest) as err:
        inflate_zstd(damage(zstandard.ZstdCompressor().compress(DOC)), 10 * MiB)
    assert err.value.code == "bad_zstd"


def test_zstd_frame_asking_for_a_huge_window_is_refused():
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27, write_content_size=False)
    c = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = c.compress(DOC) + c.flush()
    with pytest.raises(BadRequest):
        inflate_zstd(frame, 1 * MiB)
    assert inflate_zstd(frame, 200 * MiB) == DOC


# --- Content-Encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding, encode",
    [
        (None, lambda b: b),
        ("", lambda b: b),
        ("identity", lambda b: b),
        ("gzip", gzip.compress),
        ("GZip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("deflate", zlib.compress),
        ("zstd, gzip", lambda b: gzip.compress(zstandard.ZstdCompressor().compress(b))),
    ],
)
def test_decode_content_undoes_each_coding(encoding, encode):
    assert decode_content(encode(DOC), encoding, 10 * MiB) == DOC


def test_decode_content_refuses_unknown_codings_and_oversized_identity_bodies():
    with pytest.raises(UnsupportedMediaType) as err:
        decode_content(DOC, "br", 10 * MiB)
    assert err.value.code == "unsupported_encoding" and err.value.status == 415
    with pytest.raises(PayloadTooLarge):
        decode_content(DOC, None, len(DOC) - 1)
    with pytest.raises(PayloadTooLarge):
        decode_content(gzip_bomb(64 * MiB), "gzip", MiB)


# --- JSON -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [b"", b"   ", b"{", b"[1,]", b"NaN", b"[Infinity]", b"[-Infinity]", b"[1e400]", b"[1] x", b"\xef\xbb\xbf[1]",
     b"\xff\xfe", b'"\xed\xa0\x80"', b"{'a': 1}", b"[" * 2000 + b"]" * 2000],
)
def test_invalid_json_is_a_bad_request(text):
    with pytest.raises(BadRequest) as err:
        parse_json(text)
    assert err.value.code == "invalid_json"


def test_json_nesting_limit_is_1024_and_strings_do_not_count():
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(BadRequest, match="nested"):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert parse_json(b'["' + b"[{" * 5000 + b'\\"\\\\"]') == ["[{" * 5000 + '"\\']


def test_a_gzipped_nesting_bomb_cannot_crash_the_parser():
    # orjson < 3.9.15 recursed without limit and segfaulted on this (CVE-2024-27454)
    deep = inflate_gzip(gzip.compress(b"[" * 3_000_000), 8 * MiB)
    with pytest.raises(BadRequest):
        parse_json(deep, max_values=10**9)  # past the value ceiling, so the depth limit is what answers


def test_depth_check_agrees_with_a_straightforward_count():
    for doc in (b'{"a": [1, {"b": "]]]"}], "c": "\\"[["}', b"[[[]],[[[[]]]]]", b'"[[[["', b"{}"):
        depth = best = 0
        in_str = escaped = False
        for ch in doc.decode():
            if in_str:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch in "[{":
                depth += 1
                best = max(best, depth)
            elif ch in "]}":
                depth -= 1
        for limit in range(0, 7):
            assert json_depth_exceeds(doc, limit) == (best > limit), (doc, limit)


def test_lone_surrogate_escapes_become_replacement_characters_instead_of_failing_the_upload():
    assert parse_json(b'["a\\ud800b", {"k\\udfff": "\\ud83d\\ude00"}]') == ["a\ufffdb", {"k\ufffd": "\U0001F600"}]
    assert orjson.dumps(parse_json(b'"\\udc00"'))  # storable


def test_parse_json_accepts_str_too():
    assert parse_json('{"a": "ü"}') == {"a": "ü"}


# --- msgpack --------------------------------------------------------------------------------------


def test_msgpack_round_trips_json_like_values():
    value = {"events": [{"type": 2, "timestamp": 1700000000000, "data": {"x": 1.5, "ok": True, "n": None}}]}
    assert parse_msgpack(msgpack.packb(value), MiB) == value


@pytest.mark.parametrize(
    "data",
    [
        b"", b"\xc1", b"\xc0\xc0", b"\x81\x01\x02", b"\x81\x80\x01", b"\xa2\xff\xfe", b"\xdd\xff\xff\xff\xff",
        msgpack.packb(b"binary"), msgpack.packb(float("nan")), msgpack.packb(float("inf")),
        msgpack.packb(msgpack.ExtType(5, b"x")), b"\xd6\xff\x00\x00\x00\x01", b"\x91" * 5000 + b"\xc0",
    ],
)
def test_msgpack_garbage_and_non_json_values_are_bad_requests(data):
    with pytest.raises(BadRequest) as err:
        parse_msgpack(data, MiB)
    assert err.value.code == "invalid_msgpack"


def test_msgpack_body_over_max_bytes_is_too_large():
    with pytest.raises(PayloadTooLarge):
        parse_msgpack(msgpack.packb(list(range(1000))), 100)


# --- properties -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
relaxed = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@relaxed
@given(json_values)
def test_json_round_trips(value):
    assert parse_json(orjson.dumps(value)) == value


@relaxed
@given(json_values)
def test_msgpack_round_trips(value):
    assert parse_msgpack(msgpack.packb(value), MiB) == value


@relaxed
@given(st.binary(max_size=4096), st.sampled_from(["gzip", "zstd", "deflate", None]))
def test_compression_round_trips(data, coding):
    encode = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress, "deflate": zlib.compress,
              None: lambda b: b}[coding]
    assert decode_content(encode(data), coding, 8192) == data


def _only_replay_errors(fn, *args):
    try:
        fn(*args)
    except ReplayError:
        pass


@relaxed
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_anything_but_replay_errors(data):
    for coding in ("gzip", "zstd", "deflate", "br", None, "gzip, zstd"):
        _only_replay_errors(decode_content, data, coding, 64 * 1024)
    _only_replay_errors(inflate_gzip, data, 64 * 1024)
    _only_replay_errors(inflate_zstd, data, 64 * 1024)
    _only_replay_errors(parse_json, data)
    _only_replay_errors(parse_msgpack, data, 64 * 1024)


@relaxed
@given(st.binary(min_size=1, max_size=512), st.integers(0, 10_000))
def test_corrupted_real_streams_never_raise_anything_but_replay_errors(noise, position):
    for encoded in (gzip.compress(DOC), zstandard.ZstdCompressor().compress(DOC)):
        at = position % len(encoded)
        damaged = encoded[:at] + noise + encoded[at + len(noise):]
        for fn in (inflate_gzip, inflate_zstd):
            try:
                out = fn(damaged, 64 * 1024)
            except ReplayError:
                continue
            assert len(out) <= 64 * 1024


@relaxed
@given(st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"a", b",", b":", b"1"]), max_size=300))
def test_json_parser_errors_are_bad_requests_and_depth_check_never_underestimates(tokens):
    doc = b"".join(tokens)
    try:
        value = parse_json(doc)
    except BadRequest:
        return
    depth, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (list, dict)):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    assert not json_depth_exceeds(doc, depth) and (depth == 0 or json_depth_exceeds(doc, depth - 1))
    assert not any(isinstance(x, float) and not math.isfinite(x) for x in (value if isinstance(value, list) else []))
