#!/usr/bin/env bash
# Fuzz replay/ingest/_json_to_msgpack.c under AddressSanitizer and UBSan: mutated real recordings
# and uploads (inserted quotes, escapes, brackets, invalid UTF-8, cut anywhere) must be packed to the
# very bytes msgspec writes for orjson's parse, or declined, and cut (transcode_upload) into exactly
# the envelope, events and heads msgspec reads from those bytes, and the spans of each event's
# containers the masking walk would find; never read or write out of bounds.
# PYTHONMALLOC=malloc: every Python bytes object gets its own allocation, so ASan sees a read past its end.
#   scripts/fuzz_json_to_msgpack.sh [SEED] [CASES]     (needs gcc and ./scripts/setup --test first)
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
gcc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -fPIC -shared \
  $(.venv/bin/python -c 'import sysconfig; print("-I" + sysconfig.get_paths()["include"])') \
  replay/ingest/_json_to_msgpack.c -o "$build/_json_to_msgpack$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
  .venv/bin/python - "$build" "${1:-0}" "${2:-30000}" <<'PY'
import random, sys
import msgspec, orjson
build, seed, cases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path[:0] = [build, "tests"]
import _json_to_msgpack
from harness import RECORDINGS, load_recording, mutated
from replay.privacy._native_walk import spans_of  # the walk's own reading of an event's containers

seeds = [orjson.dumps(load_recording(p)) for p in RECORDINGS]
seeds += [orjson.dumps({"token": "t", "window_id": "w", "events": load_recording(p)[i:i + 20]})
          for p in RECORDINGS for i in (0, 40)]
seeds += [orjson.dumps({"token": "t", "events": load_recording(p)}) for p in RECORDINGS]  # big events: spans
tokens = [b'"', b'\\', b'\\u', b'\\ud800', b'\\udc00', b'{', b'}', b'[', b']', b',', b':', b'\xff', b'\xc3',
          b'\xed\xa0\x80', b'\xf4\x90', b'1e999', b'-', b'0', b'.', b'e', b'\x00', b' ']
rng = random.Random(seed)
packed = uploads_cut = 0
FIELDS = ("token", "session_id", "window_id", "distinct_id", "batch_id")


def check(text: bytes, depth: int) -> None:
    global packed, uploads_cut
    out = _json_to_msgpack.transcode(text, depth)
    upload = _json_to_msgpack.transcode_upload(text, depth, rng.choice([0, 2, 20_000]))
    if out is None:
        assert upload is None
        return
    packed += 1
    assert out == msgspec.msgpack.encode(orjson.loads(text)), text[:200]
    if not isinstance(upload, tuple):
        assert upload == out
        return
    uploads_cut += 1
    envelope, events, heads, spans = upload
    whole = msgspec.msgpack.decode(out)
    assert msgspec.msgpack.decode(envelope) == {**whole, "events": None}
    assert events == [msgspec.msgpack.encode(e) for e in whole["events"]]
    for event, given in zip(events, spans, strict=True):  # where each container starts and ends
        found = spans_of(event)
        assert given == (found if len(found) >= 32 * 16 else None)
    for event, head in zip(whole["events"], msgspec.msgpack.decode(heads), strict=True):
        if not isinstance(event, dict):
            assert head == event
            continue
        want = {k: event[k] for k in ("type", "timestamp", "data") if k in event}
        if isinstance(want.get("data"), dict):
            want["data"] = {k: v for k, v in want["data"].items() if k in _json_to_msgpack.DATA_FIELDS}
        assert head == want


for i in range(cases):
    s = rng.choice(seeds)
    if len(s) > 4000 and i % 20:  # now and then a whole upload: events of many containers, their spans
        start = rng.randrange(len(s) - 2000)
        s = s[start:start + rng.randrange(1, 2000)]
    check(mutated(rng, s, tokens), rng.choice([2, 16, 256]))
for text in seeds:
    check(text, 256)
    for cut in range(0, min(len(text), 3000), 7):
        check(text[:cut], 256)
print(f"{cases} mutated inputs and every cut of the recordings: no sanitizer report; {packed} packed, all exact; "
      f"{uploads_cut} uploads cut, all exact")
PY
