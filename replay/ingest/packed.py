"""Native JSON uploads packed straight from their text, their events never decoded whole.

``_json_to_msgpack.c`` writes the bytes msgspec would write for orjson's parse of the whole body,
and cuts them as it goes: the envelope (its events left out), each event's bytes, and each event's
"head" (the few fields checks and summaries read, copied out). msgspec reads the envelope and the
heads; the events stay packed. Masking then works on the packed events (``privacy/enforce.py``:
full snapshots in C on their msgpack, the few other events the walker reads decoded one by one),
and the stored items are the packed events joined. Decoding every event into Python objects,
packing and freeing them cost 2.3x what this does without masking (bench/RESULTS.md, seventh
pass); with masking see the eighth pass.

Everything here answers None when it cannot be sure (the C part not built, JSON it declines, an
event whose fields do not have the usual types): the caller then takes the ordinary path, which
stores the very same bytes or gives the error. So the two paths can only differ in speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from replay import native_parts
from replay.ingest.batch import PackedEvents
from replay.ingest.limits import Limits
from replay.ingest.validate import check_event_list, check_events
from replay.ingest.value_budget import check_json_value_budget

_native = native_parts.load("replay.ingest._json_to_msgpack")
BUILT = _native is not None
# The transcoder's own nesting bound; deeper (rare) uploads take the ordinary path, which allows 1,024.
MAX_DEPTH = 256


class _Envelope(msgspec.Struct):
    """``POST /v1/recordings``'s fields as msgspec reads them from the packed body."""

    token: Any = None
    session_id: Any = None
    window_id: Any = None
    distinct_id: Any = None
    batch_id: Any = None
    # Each event's bytes, when the transcoder did not cut them itself (see read_envelope). Absent
    # (None), or not an array (a ValidationError), and the ordinary path gives its error.
    events: list[msgspec.Raw] | None = None


@dataclass(slots=True)
class NativeEnvelope:
    """An upload read by ``read_envelope``: its fields, its events left packed."""

    token: Any
    session_id: Any
    window_id: Any
    distinct_id: Any
    batch_id: Any
    events: list[msgspec.Raw] | list[bytes] | None
    # The transcoder's heads of the events (msgpack: per event a map of the fields _EventHead reads),
    # or None: then each event is read for them (split_events).
    heads: bytes | None = None
    # Per event, where its containers start and end as the transcoder wrote them (bytes; None for
    # a small event; made when asked): the masking walk's, so that it need not find them again.
    spans: Sequence[bytes | None] | None = None

    def get(self, name: str) -> Any:  # read like the decoded dict of the ordinary path
        return getattr(self, name)


class _Data(msgspec.Struct):
    """The fields of an event's ``data`` that checks and summaries read (summary.summarize)."""

    source: Any = msgspec.UNSET
    type: Any = msgspec.UNSET
    href: Any = msgspec.UNSET
    width: Any = msgspec.UNSET
    height: Any = msgspec.UNSET
    plugin: Any = msgspec.UNSET
    payload: Any = msgspec.UNSET
    tag: Any = msgspec.UNSET


class _EventHead(msgspec.Struct):
    # An int timestamp only: the ordinary path rewrites a float one as an int before storing it.
    type: Any
    timestamp: int
    data: _Data | None


_envelope = msgspec.msgpack.Decoder(_Envelope)
_head = msgspec.msgpack.Decoder(_EventHead)
_DATA_FIELDS = _Data.__struct_fields__


def read_envelope(body: bytes, max_events: int) -> NativeEnvelope | None:
    """The upload packed whole and its fields read, the events left packed (cut by the packer when
    there are at most ``max_events``); None when the ordinary path must parse it. Raises what
    ``parse_json`` raises for a body over the value budget."""
    if _native is None:
        return None
    check_json_value_budget(body)
    out = _native.transcode_upload(body, MAX_DEPTH, max_events)
    if out is None:
        return None
    if isinstance(out, tuple):  # an object with an events array: cut by the transcoder
        packed, events, heads, spans = out
    else:
        packed, events, heads, spans = out, None, None, None
    try:
        wire = _envelope.decode(packed)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # not an object: the ordinary path says what is wrong
    return NativeEnvelope(wire.token, wire.session_id, wire.window_id, wire.distinct_id, wire.batch_id,
                          wire.events if events is None else events, heads, spans)


def read_events(envelope: NativeEnvelope, limits: Limits) -> PackedEvents | None:
    """The envelope's events, each left packed, checked as ``check_events`` checks decoded ones;
    None when the ordinary path must decide. Raises its errors for events it refuses."""
    if envelope.events is not None:
        # Too many events (the packer did not cut them) or none: refused before any is read.
        check_event_list(envelope.events, limits)
    packed = packed_events(envelope)
    if packed is not None:
        check_events(packed.fields, limits)  # the very checks of the ordinary path, on the fields they read
    return packed


def packed_events(envelope: NativeEnvelope) -> PackedEvents | None:
    """The envelope's events with the fields checks and summaries read of each (unchecked); None
    when one is not an object with the usual fields."""
    if envelope.events is None:
        return None
    if envelope.heads is None:
        return split_events(envelope.events)
    # The transcoder's own bytes: per event a map of only type, timestamp and data (only the _Data
    # fields), so read untyped they are already the dicts _fields makes. What _EventHead would
    # refuse is checked here: a field missing, a timestamp not an int, data neither map nor nil,
    # an event that is not a map (copied whole, so not a dict).
    heads = msgspec.msgpack.decode(envelope.heads)
    for head in heads:
        if type(head) is not dict or len(head) != 3 or type(head["timestamp"]) is not int \
                or (head["data"] is not None and type(head["data"]) is not dict):
            return None
    return PackedEvents(events=envelope.events, fields=heads, spans=envelope.spans)


def split_events(events: list[Any]) -> PackedEvents | None:
    """Packed events (msgspec.Raw or bytes) with the fields checks and summaries read of each; None
    when one is not an object with the usual fields (the ordinary path says what is wrong)."""
    try:
        heads = [_head.decode(event) for event in events]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return PackedEvents(events=events, fields=[_fields(head) for head in heads])


def _fields(head: _EventHead) -> dict[str, Any]:
    data = head.data
    if data is not None:
        data = {name: value for name in _DATA_FIELDS if (value := getattr(data, name)) is not msgspec.UNSET}
    return {"type": head.type, "timestamp": head.timestamp, "data": data}
