"""A small CSS selector matcher over the session mirror.

Supported: type and universal selectors, ``#id``, ``.class``, ``[attr]`` and ``[attr OP value]``
with ``= ~= |= ^= $= *=`` (quoted or bare values), descendant and child (``>``) combinators, and
comma lists. That covers what masking and blocking selectors are written with in practice
(``.private``, ``[data-private]``, ``form#pay input``). Anything else (pseudo-classes, ``+``, ``~``)
is rejected at policy validation rather than silently never matching.

Why not cssselect: it compiles to XPath and needs an lxml tree; the mirror is a dict of small node
objects that changes with every mutation, so matching right-to-left over parent links is both
simpler and cheaper than maintaining an lxml document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class SelectorError(ValueError):
    """A selector this matcher does not support or cannot parse."""


class MatchNode(Protocol):
    """What matching needs of a node (``mirror.Node`` has it); read-only, hence properties."""

    @property
    def tag(self) -> str: ...

    @property
    def attrs(self) -> Mapping[str, str]: ...

    @property
    def parent(self) -> MatchNode | None: ...


@dataclass(frozen=True, slots=True)
class Compound:
    tag: str | None
    ids: tuple[str, ...]
    classes: tuple[str, ...]
    attrs: tuple[tuple[str, str, str], ...]  # (name, op, value); op "" means presence

    def matches(self, node: MatchNode) -> bool:
        tag = node.tag
        if tag.startswith("#"):  # text, document and other non-element nodes
            return False
        if self.tag is not None and tag != self.tag:
            return False
        attrs = node.attrs
        for ident in self.ids:
            if attrs.get("id") != ident:
                return False
        if self.classes:
            have = attrs.get("class")
            if not have:
                return False
            names = have.split()
            if any(c not in names for c in self.classes):
                return False
        for name, op, want in self.attrs:
            got = attrs.get(name)
            if got is None or not _attr_ok(op, got, want):
                return False
        return True


def _attr_ok(op: str, got: str, want: str) -> bool:
    if op == "":
        return True
    if op == "=":
        return got == want
    if op == "~=":
        return want in got.split()
    if op == "|=":
        return got == want or got.startswith(want + "-")
    if op == "^=":
        return bool(want) and got.startswith(want)
    if op == "$=":
        return bool(want) and got.endswith(want)
    return bool(want) and want in got  # "*="


@dataclass(frozen=True, slots=True)
class Selector:
    """One complex selector: ``compounds[i]`` is joined to ``compounds[i-1]`` by ``combinators[i]``."""

    source: str
    compounds: tuple[Compound, ...]
    combinators: tuple[str, ...]  # combinators[0] is unused ("")

    def matches(self, node: MatchNode, memo: dict[Any, bool] | None = None) -> bool:
        """Right-to-left match. ``memo`` (valid while the tree does not change) makes descendant
        combinators linear over a whole tree walk instead of O(nodes x depth)."""
        return self._match(node, len(self.compounds) - 1, memo)

    def _match(self, node: MatchNode, i: int, memo: dict[Any, bool] | None) -> bool:
        if not self.compounds[i].matches(node):
            return False
        if i == 0:
            return True
        parent = node.parent
        if parent is None:
            return False
        if self.combinators[i] == ">":
            return self._match(parent, i - 1, memo)
        return self._at_or_above(parent, i - 1, memo)

    def _at_or_above(self, node: MatchNode, i: int, memo: dict[Any, bool] | None) -> bool:
        """Whether ``node`` or one of its ancestors matches the selector prefix ending at ``i``.

        Iterative (recorded DOMs can be thousands deep); recursion only goes one compound left.
        """
        chain: list[MatchNode] = []
        n: MatchNode | None = node
        result = False
        while n is not None:
            if memo is not None:
                known = memo.get((id(self), i, n))
                if known is not None:
                    result = known
                    break
            chain.append(n)
            if self._match(n, i, memo):
                result = True
                break
            n = n.parent
        if memo is not None:
            # Every node on the chain below a match sees it; without a match none of them does.
            for c in chain:
                memo[(id(self), i, c)] = result
        return result

    def attribute_names(self) -> set[str]:
        return {name for c in self.compounds for name, _, _ in c.attrs}


_IDENT = r"-?[_a-zA-Z\u00a0-\uffff][-_a-zA-Z0-9\u00a0-\uffff]*"
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s*>\s*|\s*,\s*|\s+)
  | (?P<tag>{_IDENT}|\*)
  | \#(?P<id>-?[-_a-zA-Z0-9\u00a0-\uffff]+)
  | \.(?P<cls>{_IDENT})
  | \[\s*(?P<attr>[-_a-zA-Z0-9:\u00a0-\uffff]+)\s*
      (?:(?P<op>[~|^$*]?=)\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[-_a-zA-Z0-9\u00a0-\uffff]+))\s*)?\]
    """,
    re.VERBOSE,
)


def parse(selector_list: str) -> tuple[Selector, ...]:
    """Parse a comma-separated selector list; raises SelectorError on anything unsupported."""
    text = selector_list.strip()
    if not text:
        raise SelectorError("empty selector")
    selectors: list[Selector] = []
    compounds: list[Compound] = []
    combinators: list[str] = []
    pending = ""  # combinator seen before the next compound
    tag: str | None = None
    ids: list[str] = []
    classes: list[str] = []
    attrs: list[tuple[str, str, str]] = []
    started = False
    start = 0

    def close_compound() -> None:
        nonlocal tag, ids, classes, attrs, started, pending
        if not started:
            raise SelectorError(f"dangling combinator in {selector_list!r}")
        compounds.append(Compound(tag, tuple(ids), tuple(classes), tuple(attrs)))
        combinators.append(pending if len(compounds) > 1 else "")
        tag, ids, classes, attrs, started, pending = None, [], [], [], False, ""

    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SelectorError(f"unsupported selector syntax at {text[pos:pos + 12]!r} in {selector_list!r}")
        pos = m.end()
        kind = m.lastgroup
        if m.group("ws") is not None:
            sep = m.group("ws").strip()
            close_compound()
            if sep == ",":
                selectors.append(Selector(text[start:m.start()].strip(), tuple(compounds), tuple(combinators)))
                compounds, combinators, start = [], [], m.end()
            else:
                pending = sep or " "
            continue
        if m.group("tag") is not None:
            if started:
                raise SelectorError(f"type selector must come first in {selector_list!r}")
            value = m.group("tag")
            tag = None if value == "*" else value.lower()
        elif m.group("id") is not None:
            ids.append(m.group("id"))
        elif m.group("cls") is not None:
            classes.append(m.group("cls"))
        elif m.group("attr") is not None:
            op = m.group("op") or ""
            value = next((v for v in (m.group("dq"), m.group("sq"), m.group("bare")) if v is not None), "")
            attrs.append((m.group("attr").lower(), op, value))
        else:  # pragma: no cover - every alternative is named
            raise SelectorError(f"cannot parse {selector_list!r} ({kind})")
        started = True
    close_compound()
    selectors.append(Selector(text[start:].strip(), tuple(compounds), tuple(combinators)))
    return tuple(selectors)


class SelectorSet:
    """Selectors indexed by their rightmost compound's id, class or tag (a browser's rule hash).

    Most elements share no class or id with any masking/blocking selector, so checking an element
    costs a few dict lookups instead of a full match per selector.
    """

    def __init__(self, selectors: Iterable[Selector] = ()) -> None:
        self.selectors = tuple(selectors)
        self._by_id: dict[str, list[Selector]] = {}
        self._by_class: dict[str, list[Selector]] = {}
        self._by_tag: dict[str, list[Selector]] = {}
        self._rest: list[Selector] = []
        for sel in self.selectors:
            key = sel.compounds[-1]
            if key.ids:
                self._by_id.setdefault(key.ids[0], []).append(sel)
            elif key.classes:
                self._by_class.setdefault(key.classes[0], []).append(sel)
            elif key.tag is not None:
                self._by_tag.setdefault(key.tag, []).append(sel)
            else:
                self._rest.append(sel)
        # What a native caller needs to rule an element out without a call (see _native_walk.c):
        # no selector can match an element whose tag, id and classes miss all three tables.
        self.rule_keys = (bool(self._rest), self._by_tag, self._by_id, self._by_class)

    def __bool__(self) -> bool:
        return bool(self.selectors)

    def matches(self, node: MatchNode, memo: dict[Any, bool] | None = None) -> bool:
        """Whether any selector matches ``node``."""
        for sel in self._rest:
            if sel.matches(node, memo):
                return True
        if self._by_tag:
            for sel in self._by_tag.get(node.tag, ()):
                if sel.matches(node, memo):
                    return True
        attrs = node.attrs
        if self._by_id and "id" in attrs:
            for sel in self._by_id.get(attrs["id"], ()):
                if sel.matches(node, memo):
                    return True
        if self._by_class and "class" in attrs:
            for name in attrs["class"].split():
                for sel in self._by_class.get(name, ()):
                    if sel.matches(node, memo):
                        return True
        return False

    def attribute_names(self) -> set[str]:
        return {name for sel in self.selectors for name in sel.attribute_names()}


def parse_all(selector_lists: Iterable[str]) -> SelectorSet:
    return SelectorSet(s for text in selector_lists for s in parse(text))


class SelectorInputs:
    """What a set of selectors reads of a node's own attributes: the ids, class names and attribute
    tests of all their compounds.

    A change of a node's attribute that no compound can tell apart (a class none of them names, an
    attribute none of them tests) changes no match, of this node or of any node below it (a
    compound reads only its own node), so matches remembered for the tree still hold.
    """

    def __init__(self, sets: Iterable[SelectorSet]) -> None:
        compounds = [c for s in sets for sel in s.selectors for c in sel.compounds]
        self.ids = frozenset(i for c in compounds for i in c.ids)
        self.classes = frozenset(k for c in compounds for k in c.classes)
        tests: dict[str, set[tuple[str, str]]] = {}
        for c in compounds:
            for name, op, want in c.attrs:
                tests.setdefault(name, set()).add((op, want))
        self.tests = {name: tuple(t) for name, t in tests.items()}

    def changed_by(self, name: str, old: str | None, new: str | None) -> bool:
        """Whether setting attribute ``name`` (lower case) from ``old`` to ``new`` may change a match."""
        if old == new:
            return False
        if name == "id" and (old in self.ids or new in self.ids):
            return True
        if name == "class" and self.classes:
            flipped = set((old or "").split()) ^ set((new or "").split())
            if not self.classes.isdisjoint(flipped):
                return True
        for op, want in self.tests.get(name, ()):
            if (old is not None and _attr_ok(op, old, want)) != (new is not None and _attr_ok(op, new, want)):
                return True
        return False
