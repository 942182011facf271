"""One decoder of rrweb events for both enforcement and audit.

The walker reads events the way the replayer applies them (full snapshot, then mutations in the
order removes, adds, texts, attributes; input events by node id), keeps the ``SessionMirror``
current, and for every place a value can leak decides whether the policy requires it masked.
It hands each value to a ``Sink``: the enforcer returns a masked value, the auditor records what
it saw and returns it unchanged. Sharing the walker means the audit inspects exactly what
enforcement would have masked, with the same node context.

Unknown ancestry. The mirror is per process; a batch whose session started on another receiver
references node ids this process never saw. Those values are treated as if under a mask
selector when the policy has any mask_text_selectors or masks inputs (the default), input events
on unknown nodes are always masked, attributes get the name rules (``selector@attr`` rules count
as matching), and everything gets PII detection. The mirror recovers at rrweb's next full
snapshot. Route a session's batches to one receiver (sticky on session id) to avoid this.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Protocol

import msgspec

from replay import native_parts
from replay.privacy import detectors as _detectors
from replay.privacy import mirror as _mirror
from replay.privacy.detectors import may_contain_pii, url_may_contain_pii
from replay.privacy.mirror import BLOCKED, PASSWORD, Node, SessionMirror
from replay.privacy.policy import MaskingPolicy
from replay.privacy.selectors import SelectorInputs, parse_all
from replay.privacy.urls import name_parts

# rrweb enums (rrweb-snapshot NodeType, rrweb EventType / IncrementalSource).
DOCUMENT, DOCTYPE, ELEMENT, TEXT, CDATA, COMMENT = range(6)
FULL_SNAPSHOT, INCREMENTAL, META, CUSTOM, PLUGIN = 2, 3, 4, 5, 6
MUTATION, INPUT, LOG = 0, 5, 11

BUTTON_TYPES = frozenset({"submit", "button", "reset", "image"})
FIELD_TAGS = frozenset({"input", "textarea", "select"})
URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "rr_src", "poster", "cite", "background",
                            "xlink:href", "ping"})
# Never masked nor scanned: replay needs them (layout, CSS, structure) and they hold no user data.
STRUCTURAL = frozenset({
    "class", "id", "style", "_csstext", "type", "name", "for", "role", "tabindex", "rel", "as", "media",
    "sizes", "srcset", "width", "height", "viewbox", "d", "points", "transform", "fill", "stroke", "xmlns",
    "xmlns:xlink", "lang", "dir", "charset", "crossorigin", "integrity", "checked", "selected", "disabled",
    "readonly", "required", "multiple", "autocomplete", "contenteditable", "draggable", "hidden", "open",
    "data-rr-is-password", "http-equiv", "target", "method", "enctype", "loading", "decoding",
})

# Elements that change how their descendants' text is treated (see Walker._enter).
_CONTEXT_TAGS = frozenset({"textarea", "option", "style", "script"})

# The C loop of Walker._walk (_native_walk.c), built by `pip install` where a C compiler is; the
# Python loop below does the same where it is not (``replay serve`` says so at startup).
_native_walk = native_parts.load("replay.privacy._native_walk")
if _native_walk is not None:
    _native_walk.configure(Node, _mirror._EMPTY, STRUCTURAL, URL_ATTRIBUTES, _CONTEXT_TAGS, FIELD_TAGS)
native_walk = _native_walk.walk if _native_walk is not None else None
native_add_round = _native_walk.add_round if _native_walk is not None else None
native_walk_packed = _native_walk.walk_packed if _native_walk is not None else None
native_walk_packed_adds = _native_walk.walk_packed_adds if _native_walk is not None else None
_mirror.use_native_forget(_native_walk.forget_subtrees if _native_walk is not None else None)


@dataclass(frozen=True, slots=True)
class PackedAdds:
    """A mutation's adds left packed (``cut_adds``), in the decoded event's ``data["adds"]``:
    Walker.event walks them in C and puts their masked bytes there (a ``msgspec.Raw``)."""

    adds: bytes
    spans: bytes  # where their containers start and end


def cut_adds(event: bytes | msgspec.Raw, spans: bytes | None = None) -> tuple[bytes, PackedAdds] | None:
    """A packed mutation event's adds cut out: (the event with ``data.adds`` nil, the adds), or None
    (no adds, or the C walk is not built). ``spans``: the event's, from the packer, or None."""
    if native_walk_packed_adds is None:
        return None
    cut = _native_walk.cut_adds(event, spans)
    return None if cut is None else (cut[0], PackedAdds(cut[1], cut[2]))


def use_native_walk(enabled: bool) -> bool:
    """Run Walker._walk's loop and the PII prefilter in C (when built) or in Python; True: C runs."""
    global native_walk, native_add_round, native_walk_packed, native_walk_packed_adds
    native_walk = _native_walk.walk if enabled and _native_walk is not None else None
    native_add_round = _native_walk.add_round if native_walk is not None else None
    native_walk_packed = _native_walk.walk_packed if native_walk is not None else None
    native_walk_packed_adds = _native_walk.walk_packed_adds if native_walk is not None else None
    _mirror.use_native_forget(_native_walk.forget_subtrees if native_walk is not None else None)
    _detectors.use_native_prefilter(native_walk is not None)
    return native_walk is not None

# Where a value sits, as passed to Sink.input_value.
FORM_VALUE, FORM_INPUT_EVENT, FORM_TEXT, FORM_EDITABLE = "value", "input", "textarea", "editable"


@dataclass(frozen=True, slots=True)
class Ctx:
    """What the ancestors of a node imply for its text: inherited down the tree."""

    blocked: bool = False
    mask_text: bool = False
    owner: Node | None = None  # the textarea / option / contenteditable root the text belongs to
    kind: str | None = None  # "textarea" | "option" | "editable" | "skip" (style/script) | "unknown"


ROOT = Ctx()


class Rules:
    """A policy compiled for matching (selectors parsed once; cached per policy)."""

    def __init__(self, policy: MaskingPolicy) -> None:
        self.policy = policy
        self.block = parse_all(policy.block_selectors)
        self.mask_text = parse_all(policy.mask_text_selectors)
        by_attr: dict[str, list[str]] = {}
        for rule in policy.mask_attributes:
            selector, at, name = rule.rpartition("@")
            if at:
                by_attr.setdefault(name.lower(), []).append(selector)
        self.attr_selectors = {k: parse_all(v) for k, v in by_attr.items()}
        self.inputs = SelectorInputs([self.block, self.mask_text, *self.attr_selectors.values()])
        globs = [fnmatch.translate(r) for r in policy.mask_attributes if "@" not in r and "*" in r]
        self._name_exact = frozenset(r for r in policy.mask_attributes if "@" not in r and "*" not in r)
        self._name_glob = re.compile("|".join(globs)) if globs else None
        self._keep = frozenset(policy.keep_attributes)
        self._name_cache: dict[str, bool] = {}
        # What the enforcer made of values under this policy (links and texts repeat on every page
        # of a site); see enforce._memoized.
        self.scrubbed_urls: dict[str, object] = {}
        self.pii_masked: dict[str, object] = {}
        self.detectors = frozenset(policy.pii_detectors)
        self.strip = frozenset(policy.strip_query_params)
        self.mask_editable = policy.masks_input_type("contenteditable")
        self.unknown_text_masked = bool(self.mask_text) or policy.mask_all_inputs

    @cached_property
    def selector_attributes(self) -> frozenset[str]:
        """Attribute names the selectors test: the mirror must keep them."""
        names = self.block.attribute_names() | self.mask_text.attribute_names()
        for selectors in self.attr_selectors.values():
            names |= selectors.attribute_names()
        return frozenset(names)

    def masks_value(self, node: Node | None, memo: dict[Any, bool] | None = None) -> bool:
        """Whether the value of this input/textarea/select must be masked (unknown node: yes)."""
        if node is None or node.flags & PASSWORD:
            return True
        kind = node.input_type()
        if node.tag == "input" and kind in BUTTON_TYPES:
            return False
        if self.policy.masks_input_type(kind):
            return True
        selectors = self.attr_selectors.get("value")
        return selectors is not None and selectors.matches(node, memo)

    def select_masked(self, option: Node | None) -> bool:
        select = _select_of(option)
        return self.masks_value(select) if select is not None else self.policy.masks_input_type("select")

    def option_masked(self, option: Node | None) -> bool:
        return self.policy.mask_option_text and self.select_masked(option)

    def attribute_masked(self, node: Node | None, name: str, memo: dict[Any, bool] | None = None) -> bool:
        if self._name_masked(name):
            return True
        selectors = self.attr_selectors.get(name)
        if not selectors or name in self._keep:
            return False
        return node is None or selectors.matches(node, memo)

    def _name_masked(self, name: str) -> bool:
        """``policy.attribute_name_masked``, compiled and cached (it runs for every attribute)."""
        cached = self._name_cache.get(name)
        if cached is None:
            cached = name not in self._keep and (
                name in self._name_exact or (self._name_glob is not None and self._name_glob.match(name) is not None)
            )
            if len(self._name_cache) > 4096:  # attribute names come from pages: keep the cache bounded
                self._name_cache.clear()
            self._name_cache[name] = cached
        return cached

    def sensitive_param(self, name: str) -> bool:
        return not self.strip.isdisjoint(name_parts(name))


@lru_cache(maxsize=256)
def rules_for(policy: MaskingPolicy) -> Rules:
    return Rules(policy)


def _select_of(option: Node | None) -> Node | None:
    node = option.parent if option is not None else None
    for _ in range(2):  # option's parent is the select, or an optgroup inside it
        if node is None:
            return None
        if node.tag == "select":
            return node
        node = node.parent
    return None


class Sink(Protocol):
    """Receives every value the walker meets; returns the value to keep (same object: unchanged)."""

    drops_blocked: bool
    # True: text() and attribute() with must_mask=True return detectors.mask_text(value) (value
    # itself when already masked) and record nothing, so the C loop may mask such values itself.
    mask_is_mask_text: bool = False

    def field(self, node: Node) -> None: ...

    def input_value(self, node: Node | None, value: str, must_mask: bool, form: str) -> str: ...

    def text(self, parent: Node | None, value: str, must_mask: bool) -> str: ...

    def attribute(self, node: Node | None, name: str, value: str, must_mask: bool) -> str: ...

    def url(self, node: Node | None, where: str, value: str) -> str: ...

    def free_text(self, where: str, value: str) -> str: ...

    def blocked(self, node: Node, serialized: dict[str, Any] | None) -> None: ...

    def option_selected(self, option: Node) -> bool: ...


class Walker:
    """Feeds one window's events, in order, through the mirror and a sink (values replaced in place)."""

    def __init__(self, rules: Rules, mirror: SessionMirror, sink: Sink) -> None:
        self.rules = rules
        self.mirror = mirror
        self.sink = sink
        # Both memos live on the mirror (see SessionMirror.memos): they hold while no mirrored
        # node changes its kept attributes or place, so the batches of a window share them.
        self._memo, self._smemo = mirror.memos(rules)
        # None rather than an empty set: tested for every element, and SelectorSet.__bool__ is a call.
        self._mask_selectors = rules.mask_text or None
        self._block_selectors = rules.block or None

    def event(self, ev: Any) -> None:
        if not isinstance(ev, dict):
            return
        data = ev.get("data")
        if not isinstance(data, dict):
            return
        kind = ev.get("type")
        if kind == INCREMENTAL:
            source = data.get("source")
            if source == MUTATION:
                self._mutation(data)
            elif source == INPUT:
                self._input(data)
            elif source == LOG:
                self._free(data, "log")
        elif kind == FULL_SNAPSHOT:
            node = data.get("node")
            if isinstance(node, dict):
                self.mirror.reset()
                self._walk(node, None, ROOT)
        elif kind == META:
            href = data.get("href")
            if isinstance(href, str) and href:
                new = self.sink.url(None, "page url", href)
                if new is not href:
                    data["href"] = new
        elif kind in (CUSTOM, PLUGIN):
            self._free(data, "custom event" if kind == CUSTOM else "plugin event")

    def packed_full_snapshot(self, event: bytes | msgspec.Raw,
                             spans: bytes | None = None) -> bytes | msgspec.Raw | None:
        """``event`` (a full snapshot, packed as msgpack) with the policy applied (``event`` itself when
        nothing changed), the mirror updated as ``event()`` updates it; None when the C walk is not
        built (decode and call ``event``). ``spans``: where its containers start and end, from the
        packer that wrote it (``PackedEvents.spans``), or None."""
        if native_walk_packed is None:
            return None
        masked, _ = native_walk_packed(self, event, self._walk_packed_subtree, spans)
        return masked

    def _walk_packed_subtree(self, packed: bytes, parent: Node | None) -> bytes:
        """The C walk's delegate: a packed node it cannot vouch for, walked here from ROOT."""
        sn = msgspec.msgpack.decode(packed)
        self._walk(sn, parent, ROOT)
        return msgspec.msgpack.encode(sn)

    # --- node context -------------------------------------------------------------------------

    def _enter(self, el: Node, ctx: Ctx) -> Ctx:
        """The context children of element ``el`` inherit."""
        tag = el.tag
        mask_selectors = self._mask_selectors
        matches_mask = not ctx.mask_text and mask_selectors is not None and mask_selectors.matches(el, self._smemo)
        if not matches_mask and not el.flags & BLOCKED and tag not in _CONTEXT_TAGS \
                and "contenteditable" not in el.attrs:
            return ctx  # nearly every element: nothing here changes what its children inherit
        blocked, mask_text, owner, kind = ctx.blocked, ctx.mask_text, ctx.owner, ctx.kind
        if el.flags & BLOCKED:
            blocked = True
        if matches_mask:
            mask_text = True
        if tag == "textarea" or tag == "option":
            owner, kind = el, tag
        elif tag == "style" or tag == "script":
            kind = "skip"
        else:
            editable = el.attrs.get("contenteditable")
            if editable is not None:
                if editable.lower() == "false":
                    owner, kind = None, None
                elif kind != "editable":
                    owner, kind = el, "editable"
        if (blocked, mask_text, owner, kind) == (ctx.blocked, ctx.mask_text, ctx.owner, ctx.kind):
            return ctx
        return Ctx(blocked, mask_text, owner, kind)

    def _ctx_of(self, node: Node | None) -> Ctx:
        """Context of ``node`` itself (its own element rules included), via its mirrored ancestors."""
        if node is None:
            return self._unknown
        memo = self._memo
        chain: list[Node] = []
        n: Node | None = node
        while n is not None and n not in memo:
            chain.append(n)
            n = n.parent
        if n is not None:
            ctx = memo[n]
        else:
            ctx = ROOT if chain[-1].tag == "#document" else self._unknown
        for n in reversed(chain):
            if not n.tag.startswith("#"):
                ctx = self._enter(n, ctx)
            memo[n] = ctx
        return ctx

    def _blocked(self, node: Node) -> bool:
        """Whether ``node`` is blocked or under a blocked element (a mirrored node)."""
        # Only an element marked BLOCKED blocks: most windows have none, and then no context
        # needs working out (after a full snapshot, that is a climb to the root per question).
        return self.mirror.has_blocked and self._ctx_of(node).blocked

    @cached_property
    def _unknown(self) -> Ctx:
        return Ctx(False, self.rules.unknown_text_masked, None, "unknown")

    # --- serialized trees (full snapshots and added nodes) --------------------------------------

    def _walk(self, root: dict[str, Any], parent: Node | None, ctx: Ctx) -> None:
        """Mirror a serialized subtree and pass its values through the sink (pre-order, in place)."""
        if native_walk is not None:
            native_walk(self, root, parent, ctx)
            return
        stack: list[tuple[dict[str, Any], Node | None, Ctx]] = [(root, parent, ctx)]
        mirror = self.mirror
        while stack:
            sn, parent, ctx = stack.pop()
            sid = sn.get("id")
            if not isinstance(sid, int):
                continue
            kind = sn.get("type")
            if kind == ELEMENT:
                attrs = sn.get("attributes")
                if not isinstance(attrs, dict):
                    attrs = {}
                node = mirror.add(sid, str(sn.get("tagName") or "").lower(), attrs, parent)
                child_ctx = self._element(sn, node, attrs, ctx)
                if child_ctx is None:
                    continue
            elif kind == TEXT or kind == COMMENT or kind == CDATA:
                mirror.add_leaf(sid, parent)
                value = sn.get("textContent")
                if isinstance(value, str) and value:
                    new = self._leaf_text(kind, parent, ctx, value)
                    if new is not value:
                        sn["textContent"] = new
                continue
            elif kind == DOCUMENT:
                node = mirror.add(sid, "#document", None, parent)
                child_ctx = ctx
            else:
                mirror.add_leaf(sid, parent)  # doctype
                continue
            children = sn.get("childNodes")
            if isinstance(children, list):
                for child in reversed(children):
                    if isinstance(child, dict):
                        stack.append((child, node, child_ctx))

    # The per-node steps of _walk. The native loop (replay/privacy/_native_walk.c) calls them for
    # every node it cannot prove they would leave unchanged, so both loops share one set of rules.

    def _element(self, sn: dict[str, Any], node: Node, attrs: dict[str, Any], ctx: Ctx) -> Ctx | None:
        """Block rules, context and attributes of a mirrored element; None: skip its children."""
        sink = self.sink
        if self._block_selectors is not None and not ctx.blocked and self._block_selectors.matches(node, self._smemo):
            node.flags |= BLOCKED
            self.mirror.has_blocked = True
            if sink.drops_blocked:
                self._register(sn.get("childNodes"), node)
                sink.blocked(node, sn)
                return None
            sink.blocked(node, sn)
        child_ctx = self._enter(node, ctx)
        if node.tag in FIELD_TAGS or child_ctx.owner is node and child_ctx.kind == "editable":
            sink.field(node)
        self._element_attributes(node, attrs)
        return child_ctx

    def _leaf_text(self, kind: int, parent: Node | None, ctx: Ctx, value: str) -> str:
        """The value to keep for a text, comment or CDATA node's ``textContent``."""
        if kind == TEXT:
            return self._text(parent, ctx, value)
        if ctx.mask_text or may_contain_pii(value):
            # comments: not rendered, but still recorded, so PII and mask selectors apply
            return self.sink.text(parent, value, ctx.mask_text)
        return value

    def _register(self, children: Any, parent: Node) -> None:
        """Mirror a subtree's ids only (content under a blocked element that will be dropped)."""
        stack = [(children, parent)]
        while stack:
            nodes, par = stack.pop()
            if not isinstance(nodes, list):
                continue
            for sn in nodes:
                if isinstance(sn, dict) and isinstance(sn.get("id"), int):
                    n = self.mirror.add(sn["id"], str(sn.get("tagName") or "#node").lower(), None, par)
                    stack.append((sn.get("childNodes"), n))

    def _text(self, parent: Node | None, ctx: Ctx, value: str) -> str:
        kind, sink = ctx.kind, self.sink
        if kind is None or kind == "unknown":  # unknown ancestry: ctx.mask_text is conservative
            # Most page text: nothing to mask and nothing a detector could match, so no sink has
            # anything to do (both sinks act only on must-mask values and detector findings).
            if not ctx.mask_text and not may_contain_pii(value):
                return value
            return sink.text(parent, value, ctx.mask_text)
        if kind == "skip":
            return value
        if kind == "textarea":
            must = self.rules.masks_value(ctx.owner, self._smemo) or ctx.mask_text
            return sink.input_value(ctx.owner, value, must, FORM_TEXT)
        if kind == "editable":
            return sink.input_value(ctx.owner, value, self.rules.mask_editable or ctx.mask_text, FORM_EDITABLE)
        return sink.text(parent, value, ctx.mask_text or self.rules.option_masked(ctx.owner))  # "option"

    def _element_attributes(self, node: Node, attrs: dict[str, Any]) -> None:
        if node.tag == "option" and attrs.get("selected") not in (None, False):
            if self.rules.select_masked(node) and self.sink.option_selected(node):
                del attrs["selected"]
        tag = node.tag
        for name, value in attrs.items():
            # class, style, id...: most attributes of a page, never masked (saves a call each).
            if name in STRUCTURAL or not value or type(value) is not str:
                continue
            new = self._attribute(node, tag, name.lower(), value)
            if new is not value:
                attrs[name] = new

    def _attribute(self, node: Node | None, tag: str, name: str, value: str) -> str:
        sink, rules = self.sink, self.rules
        if name in URL_ATTRIBUTES:
            # Sinks act on parameter values (which need "=") and on detector findings only.
            if "=" not in value and not url_may_contain_pii(value):
                return value
            return sink.url(node, name, value)
        if name in STRUCTURAL or name.startswith("rr_"):
            return value
        if name == "value":
            if node is None or tag == "textarea" or tag == "select":
                return sink.input_value(node, value, rules.masks_value(node, self._smemo), FORM_VALUE)
            if tag == "input":
                if node.input_type() in BUTTON_TYPES:
                    return self._plain_attribute(node, name, value, False)
                return sink.input_value(node, value, rules.masks_value(node, self._smemo), FORM_VALUE)
            if tag == "option":
                return self._plain_attribute(node, name, value, rules.option_masked(node))
        elif name == "label" and tag == "option":
            return self._plain_attribute(node, name, value, rules.option_masked(node))
        return self._plain_attribute(node, name, value, rules.attribute_masked(node, name, self._smemo))

    def _plain_attribute(self, node: Node | None, name: str, value: str, must_mask: bool) -> str:
        if not must_mask and not may_contain_pii(value):
            return value  # nothing for any sink to do (as in _text)
        return self.sink.attribute(node, name, value, must_mask)

    # --- incremental events --------------------------------------------------------------------

    def _mutation(self, data: dict[str, Any]) -> None:
        mirror, sink = self.mirror, self.sink
        removes = data.get("removes")
        if isinstance(removes, list) and removes:
            kept = []
            for item in removes:
                node = mirror.get(item.get("id")) if isinstance(item, dict) else None
                if node is None and isinstance(item, dict):
                    leaf, parent = mirror.leaf_parent(item.get("id"))
                    if leaf:
                        mirror.remove_leaf(item["id"])
                        if sink.drops_blocked and parent is not None and self._blocked(parent):
                            continue
                elif node is not None:
                    if sink.drops_blocked and node.parent is not None and self._blocked(node.parent):
                        mirror.remove(node)
                        continue
                    mirror.remove(node)
                kept.append(item)
            if len(kept) != len(removes):
                data["removes"] = kept
        adds = data.get("adds")
        if isinstance(adds, PackedAdds):  # cut out packed by enforce_packed (cut_adds)
            adds = self._packed_adds(data, adds)
        if isinstance(adds, list) and adds:
            self._adds(data, adds)
        texts = data.get("texts")
        if isinstance(texts, list) and texts:
            self._texts(data, texts)
        attributes = data.get("attributes")
        if isinstance(attributes, list) and attributes:
            self._attribute_mutations(data, attributes)

    def _adds(self, data: dict[str, Any], adds: list[Any]) -> None:
        kept: list[Any] = []
        pending = adds  # a round drops what is no add (not an object with a node object)
        while pending:
            if native_add_round is not None:
                deferred = native_add_round(self, pending, kept)
            else:
                deferred = self._add_round(pending, kept)
            if len(deferred) == len(pending):  # parents this process never saw: unknown ancestry
                for item in deferred:
                    self._walk(item["node"], None, self._unknown)
                    kept.append(item)
                break
            pending = deferred
        if len(kept) != len(adds):
            order = {id(a): i for i, a in enumerate(adds)}
            data["adds"] = sorted(kept, key=lambda a: order[id(a)])

    def _packed_adds(self, data: dict[str, Any], adds: PackedAdds) -> Any:
        """``_adds`` on packed adds, in C (``walk_packed_adds``): None when done (their bytes in
        ``data["adds"]``), else the adds decoded there for ``_adds`` (a parentId only Python reads
        right, or the C walk turned off)."""
        if native_walk_packed_adds is not None:
            done = native_walk_packed_adds(self, adds.adds, self._walk_packed_subtree, self._walk_packed_add,
                                           adds.spans)
            if done is not None:
                data["adds"] = msgspec.Raw(done[0])
                return None
        decoded = data["adds"] = msgspec.msgpack.decode(adds.adds)
        return decoded

    def _walk_packed_add(self, packed: bytes, parent: Node | None, ctx: Ctx | None) -> bytes | None:
        """``walk_packed_adds``' delegate for an add it cannot walk from ROOT: ``_add_under`` (parent
        None: unknown ancestry); the add's bytes, or None when it is dropped."""
        item = msgspec.msgpack.decode(packed)
        kept: list[Any] = []
        if parent is None:
            self._walk(item["node"], None, self._unknown)
            kept.append(item)
        else:
            self._add_under(item, parent, ctx, kept)
        return msgspec.msgpack.encode(item) if kept else None

    def _add_round(self, pending: list[dict[str, Any]], kept: list[Any]) -> list[dict[str, Any]]:
        """The adds whose parent is mirrored, in order (into ``kept``); returns the others (what is
        no add at all goes in neither)."""
        deferred = []
        for item in pending:
            if not isinstance(item, dict) or not isinstance(item.get("node"), dict):
                continue
            parent = self.mirror.get(item.get("parentId"))
            if parent is None:
                deferred.append(item)
                continue
            self._add_under(item, parent, self._ctx_of(parent), kept)
        return deferred

    def _add_under(self, item: dict[str, Any], parent: Node, ctx: Ctx, kept: list[Any]) -> None:
        if ctx.blocked:
            if self.sink.drops_blocked:
                self._register([item["node"]], parent)
                return
            self.sink.blocked(parent, None)
        self._walk(item["node"], parent, ctx)
        kept.append(item)

    def _texts(self, data: dict[str, Any], texts: list[Any]) -> None:
        kept = []
        for item in texts:
            if not isinstance(item, dict):
                continue
            known, parent = self.mirror.leaf_parent(item.get("id"))
            if not known:  # rrweb sends texts for text nodes; an element id is read the same way
                node = self.mirror.get(item.get("id"))
                known, parent = node is not None, node.parent if node is not None else None
            ctx = self._ctx_of(parent) if known else self._unknown
            if ctx.blocked:
                if self.sink.drops_blocked:
                    continue
                self.sink.blocked(_blocked_root(parent), None)
            value = item.get("value")
            if isinstance(value, str) and value:
                new = self._text(parent, ctx, value)
                if new is not value:
                    item["value"] = new
            kept.append(item)
        if len(kept) != len(texts):
            data["texts"] = kept

    def _attribute_mutations(self, data: dict[str, Any], items: list[Any]) -> None:
        mirror, sink, rules = self.mirror, self.sink, self.rules
        kept = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("attributes"), dict):
                continue
            attrs: dict[str, Any] = item["attributes"]
            node = mirror.get(item.get("id"))
            if node is not None:
                if self._blocked(node):
                    if sink.drops_blocked:
                        continue
                    sink.blocked(_blocked_root(node), None)
                changed = rematch = False
                for name, value in attrs.items():
                    if value is None or isinstance(value, str):
                        name = name.lower()
                        old = node.attrs.get(name)
                        if mirror.set_attribute(node, name, value):
                            changed = True
                            rematch = rematch or name == "contenteditable" or rules.inputs.changed_by(name, old, value)
                # Only attributes the mirror keeps (those selectors and form rules test) can change
                # a context or a match; style and most others, the bulk of attribute mutations, cannot.
                # Nor can a class or id no selector names (hover and animation classes): the memos
                # hold, and the parents of the next adds keep their contexts.
                if rematch:
                    mirror.forget_memos()
                if changed:
                    if rules.block and not node.flags & BLOCKED and rules.block.matches(node, self._smemo):
                        self._now_blocked(data, node)
                        if sink.drops_blocked:
                            continue
            tag = node.tag if node is not None else ""
            for name, value in attrs.items():
                if isinstance(value, str) and value:
                    new = self._attribute(node, tag, name.lower(), value)
                    if new is not value:
                        attrs[name] = new
            kept.append(item)
        if len(kept) != len(items):
            data["attributes"] = kept

    def _now_blocked(self, data: dict[str, Any], node: Node) -> None:
        """An attribute change made ``node`` match a block selector: drop what it already shows."""
        node.flags |= BLOCKED
        self.mirror.has_blocked = True
        if not self.sink.drops_blocked:
            self.sink.blocked(node, None)
            return
        removes = data.get("removes")
        if not isinstance(removes, list):
            removes = data["removes"] = []
        # Removes apply before adds/texts/attributes in the replayer, so the subtree is gone first.
        # In id order: the mirror's children come from its dicts and from its rows (SessionMirror.table).
        children = sorted(set(self.mirror.children_of(node)))
        removes.extend({"parentId": node.id, "id": child_id} for child_id in children)

    def _input(self, data: dict[str, Any]) -> None:
        text = data.get("text")
        if not isinstance(text, str) or not text:
            return
        node = self.mirror.get(data.get("id"))
        if node is None:
            must = True
        else:
            ctx = self._ctx_of(node)
            must = ctx.blocked or ctx.mask_text or self.rules.masks_value(node, self._smemo)
        new = self.sink.input_value(node, text, must, FORM_INPUT_EVENT)
        if new is not text:
            data["text"] = new

    # --- custom / plugin payloads -----------------------------------------------------------------

    def _free(self, data: dict[str, Any], where: str) -> None:
        """Every string in a custom/plugin payload: URLs get parameter stripping, all get PII."""
        stack: list[Any] = [data]
        sink = self.sink
        while stack:
            container = stack.pop()
            items = container.items() if isinstance(container, dict) else enumerate(container)
            for key, value in list(items):
                if isinstance(value, str):
                    if not value:
                        continue
                    if _looks_like_url(value):
                        new = sink.url(None, where, value)
                    elif may_contain_pii(value):
                        new = sink.free_text(where, value)
                    else:
                        continue
                    if new is not value:
                        container[key] = new
                elif isinstance(value, (dict, list)):
                    stack.append(value)


def _looks_like_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "/")) and ("?" in value or "#" in value) and "=" in value


def _blocked_root(node: Node | None) -> Node:
    """The blocked element a node sits under (for one finding per blocked element)."""
    assert node is not None
    for n in (node, *node.ancestors()):
        if n.flags & BLOCKED:
            return n
    return node
