"""Server-side enforcement of a masking policy: one streaming transform over a window's events.

At ingest, per batch and before the spool::

    mirror = mirrors.get((batch.project_id, batch.session_id, batch.window_id),
                         mirror_attributes(policy))
    batch.events = enforce_events(policy, mirror, batch.events)

Events are changed IN PLACE and the same list is returned: ingest owns the freshly decoded
events, and copying every mouse move to mask a handful of values would double the hot path's
allocations. Only what can carry user data is walked (full snapshots, mutations, input events,
meta/custom/plugin payloads); mouse, scroll and other events are not touched.

What is enforced (the gaps of client-side rrweb masking included):
- input/textarea/select values (snapshot ``value`` attributes, ``Input`` events, textarea text,
  contenteditable text), hidden/radio/checkbox values, ``<option>`` text/value/``selected``;
  an input that ever was a password (type changed, or a show-password widget swapped the
  element for one with the same name/id) stays masked;
- ``fixed_length_mask``: input values become ``********`` so keystrokes do not count characters;
- text under ``mask_text_selectors``; attributes by ``mask_attributes``;
- ``block_selectors``: the element keeps its id and ``class``, loses other attributes and its
  children, gets ``rr_width``/``rr_height`` when its size is known from its attributes (rrweb's
  blocked form; the client measures real boxes, the server cannot), and later mutations inside
  it are dropped;
- PII detectors over every remaining text, attribute, URL and custom/plugin string;
- sensitive query/fragment parameters in page URLs (Meta ``href``), link/resource URLs and
  payload URLs.

The replay keeps its structure: node ids, event count and types, layout-relevant attributes
(class, id, style, sizes) and every mouse/scroll/input event stay. Masked text keeps its length
and whitespace (rrweb's form) so line breaks and widths barely move.
For node ids this process has not seen (another receiver got the full snapshot), see ``walk.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Callable

import msgspec

from replay.privacy.detectors import is_masked, mask_pii, mask_spans, mask_text, url_host_end
from replay.privacy.mirror import Node, SessionMirror
from replay.privacy.policy import MaskingPolicy
from replay.privacy.urls import decoded, split_url
from replay.privacy.walk import (CUSTOM, FORM_EDITABLE, FULL_SNAPSHOT, INCREMENTAL, INPUT, LOG, META, MUTATION,
                                 PLUGIN, Rules, Walker, cut_adds, rules_for)

FIXED_MASK = "********"
_SIZE = re.compile(r"(?:^|;)\s*(width|height)\s*:\s*([0-9.]+(?:px|em|rem|%|vh|vw))", re.I)


def mirror_attributes(policy: MaskingPolicy) -> frozenset[str]:
    """Attribute names a mirror must keep for this policy's selectors (pass to MirrorCache.get)."""
    return rules_for(policy).selector_attributes


def enforce_events(policy: MaskingPolicy, mirror: SessionMirror, events: list[Any]) -> list[Any]:
    """Apply ``policy`` to one window's events in order (in place); returns ``events``.

    ``mirror`` must be the same object for every batch of the window, in arrival order.
    With ``policy.enforce`` false the events are returned untouched.
    """
    if not policy.enforce:
        return events
    walker = _enforcing_walker(policy, mirror)
    for ev in events:
        walker.event(ev)
    return events


def _enforcing_walker(policy: MaskingPolicy, mirror: SessionMirror) -> Walker:
    rules = rules_for(policy)
    if not rules.selector_attributes <= mirror.keep:
        mirror.keep = mirror.keep | rules.selector_attributes
    return Walker(rules, mirror, Enforcer(rules))


def enforce_packed(policy: MaskingPolicy, mirror: SessionMirror, events: list[Any], fields: list[Any],
                   spans: Sequence[bytes | None] | None = None) -> list[Any]:
    """``enforce_events`` for events packed one by one (msgpack, as ``ingest/packed.py`` reads them).

    In place, as ``enforce_events``: ``events[i]`` becomes the masked event's bytes, and
    ``fields[i]`` (what ``summarize`` reads of it) the masked event when it was decoded. Full
    snapshots are masked on their packed form (the C walk: no Python object per node); other events
    the walker reads are decoded, masked and packed again (a mutation's adds excepted: walked
    packed); the rest (mouse, scroll...) stay as they came. ``spans[i]``, when given, is where
    ``events[i]``'s containers start and end as the packer wrote them (``PackedEvents.spans``).
    Returns ``events``.
    """
    if not policy.enforce:
        return events
    walker = _enforcing_walker(policy, mirror)
    for i, head in enumerate(fields):
        kind, data = head["type"], head["data"]
        where = spans[i] if spans else None
        if kind == FULL_SNAPSHOT and (masked := walker.packed_full_snapshot(events[i], where)) is not None:
            events[i] = masked  # only data.node changes: the fields summarize reads stay as they are
        elif data is not None and (data.get("source") in _READ_SOURCES if kind == INCREMENTAL else kind in _READ_TYPES):
            # A mutation's adds (most of its bytes) stay packed: the C walk reads them (cut_adds).
            cut = cut_adds(events[i], where) if kind == INCREMENTAL and data.get("source") == MUTATION else None
            if cut is not None:
                decoded = msgspec.msgpack.decode(cut[0])
                decoded["data"]["adds"] = cut[1]
            else:
                decoded = msgspec.msgpack.decode(events[i])
            walker.event(decoded)
            events[i] = msgspec.msgpack.encode(decoded)
            fields[i] = decoded
    return events


# What Walker.event reads (compared with ==, as it compares).
_READ_SOURCES = (MUTATION, INPUT, LOG)
_READ_TYPES = (FULL_SNAPSHOT, META, CUSTOM, PLUGIN)


class Enforcer:
    """Sink that replaces values with their masked form."""

    drops_blocked = True
    # text() and attribute() with must_mask=True are mask_text and nothing else: the C walk masks
    # such values itself (a title or aria-label per element under the default policy).
    mask_is_mask_text = True
    # url() is what rules.scrubbed_urls holds for the value, and text()/attribute() with
    # must_mask=False what rules.pii_masked holds, whenever the memo holds the value (_memoized): the
    # C walk reads them there instead of handing the node to Python.
    memoized_by_value = True

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.detectors = rules.detectors
        self.fixed = rules.policy.fixed_length_mask

    def field(self, node: Node) -> None:
        pass

    def input_value(self, node: Node | None, value: str, must_mask: bool, form: str) -> str:
        if must_mask:
            if form == FORM_EDITABLE:
                return value if is_masked(value) else mask_text(value)  # text layout keeps its shape
            if self.fixed:
                return FIXED_MASK if value != FIXED_MASK else value
            return value if set(value) == {"*"} else "*" * len(value)
        return self._pii(value)

    def text(self, parent: Node | None, value: str, must_mask: bool) -> str:
        if must_mask:
            return value if is_masked(value) else mask_text(value)
        return self._pii(value)

    def attribute(self, node: Node | None, name: str, value: str, must_mask: bool) -> str:
        return self.text(node, value, must_mask)

    def free_text(self, where: str, value: str) -> str:
        return self._pii(value)

    def url(self, node: Node | None, where: str, value: str) -> str:
        return _memoized(self.rules.scrubbed_urls, value, self._scrub_url)

    def blocked(self, node: Node, serialized: dict[str, Any] | None) -> None:
        if serialized is None:
            return
        attrs = serialized.get("attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        placeholder: dict[str, Any] = {}
        for key in ("id", "class"):
            if isinstance(attrs.get(key), str):
                placeholder[key] = attrs[key]
        width, height = attrs.get("rr_width"), attrs.get("rr_height")
        sizes = {k.lower(): v for k, v in _SIZE.findall(attrs.get("style") or "")} if isinstance(
            attrs.get("style"), str) else {}
        width = width or sizes.get("width") or _px(attrs.get("width"))
        height = height or sizes.get("height") or _px(attrs.get("height"))
        if width:
            placeholder["rr_width"] = width
        if height:
            placeholder["rr_height"] = height
        serialized["attributes"] = placeholder
        serialized["childNodes"] = []

    def option_selected(self, option: Node) -> bool:
        return True

    def _pii(self, value: str) -> str:
        return _memoized(self.rules.pii_masked, value, self._pii_masked)

    def _scrub_url(self, value: str) -> str:
        return scrub_url(self.rules, value)

    def _pii_masked(self, value: str) -> str:
        masked, findings = mask_pii(value, self.detectors)
        return masked if findings else value


_UNCHANGED = object()
MEMO_ENTRIES = 4096  # per policy and kind of value
MEMO_VALUE_CHARS = 2048  # longer values are rarely repeated: not kept


def _memoized(memo: dict[str, object], value: str, compute: Callable[[str], str]) -> str:
    """``compute(value)``, remembered per value (a pure function of the value under one policy)."""
    known = memo.get(value)
    if known is not None:
        return value if known is _UNCHANGED else known  # type: ignore[return-value]
    new = compute(value)
    if len(value) <= MEMO_VALUE_CHARS:
        if len(memo) >= MEMO_ENTRIES:
            memo.clear()
        # An unchanged value is returned as the very object it came in as: the walker tests `is`.
        memo[value] = _UNCHANGED if new is value else new
    return new


def scrub_url(rules: Rules, url: str) -> str:
    """Mask sensitive parameter values (fixed ``********``) and PII anywhere in ``url``."""
    if url.startswith("data:"):
        return url  # inline images/fonts: base64 would only produce false token matches
    path_end, params = split_url(url)
    spans: list[tuple[int, int]] = []
    replace: list[tuple[int, int]] = []
    for p in params:
        if p.start == p.end:
            continue
        raw = url[p.start:p.end]
        if is_masked(raw):
            continue
        if rules.sensitive_param(p.name):
            replace.append((p.start, p.end))
        elif mask_pii(decoded(raw), rules.detectors)[1]:
            spans.append((p.start, p.end))  # e.g. jane%40example.com: masked whole, decoded check
    host_end = url_host_end(url)  # the host ends at the first "/?#": never after the path
    _, path_findings = mask_pii(url[host_end:path_end], rules.detectors)
    spans.extend((start + host_end, end + host_end) for start, end in (f.span for f in path_findings))
    if not spans and not replace:
        return url
    out: list[str] = []
    pos = 0
    for start, end, fixed in sorted([(s, e, False) for s, e in spans] + [(s, e, True) for s, e in replace]):
        out.append(url[pos:start])
        out.append(FIXED_MASK if fixed else mask_spans(url[start:end], [(0, end - start)]))
        pos = end
    out.append(url[pos:])
    return "".join(out)


def _px(value: Any) -> str | None:
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
        return f"{value}px".replace(" ", "")
    return None
