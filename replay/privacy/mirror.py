"""Per-session (per window) mirror of the recorded DOM: node id -> tag, a few attributes, parent.

rrweb events refer to nodes by id only ("text of node 17 is now X", "input 15 has value Y").
Deciding whether X or Y must be masked needs to know what node 17 is and where it sits, so the
mirror is built from each full snapshot and kept current by mutations. It keeps only what masking
and auditing decide on: structural attributes and those named by the policy's selectors, never
values (so the mirror itself holds no secrets).

The mirror is per process. When a session's chunks reach several receivers, a receiver that did
not see the full snapshot meets node ids it does not know; the transform treats them as
"unknown ancestry" and masks conservatively (see ``enforce.py``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

# Attributes every mirror keeps: what selectors most often test, and what identifies a form field.
STRUCTURAL_ATTRIBUTES = frozenset(
    {"id", "class", "type", "name", "autocomplete", "contenteditable", "role", "data-rr-is-password"}
)
_EMPTY: dict[str, str] = {}

PASSWORD = 1  # this element is or ever was a password input: its values stay masked for good
BLOCKED = 2  # this element matched a block selector: it and its subtree are not recorded

# SessionMirror._detach's loop in C (``_native_walk.forget_subtrees``), set by walk.py with the rest
# of the C walk (``use_native_walk``): a removed subtree is every node under it, and pages replace
# whole sections of their content at a time.
_forget_subtrees: Callable[[dict[int, Node], dict[int, Node | None], list[Node]], None] | None = None


def use_native_forget(forget: Callable[[dict[int, Node], dict[int, Node | None], list[Node]], None] | None) -> None:
    global _forget_subtrees
    _forget_subtrees = forget


class Node:
    """One mirrored node. ``tag`` is the lower-case tag name, or ``#text``/``#document``/... .

    The C walk (``_native_walk.c``) makes Nodes by filling these six slots itself, without calling
    ``__init__``: keep ``__init__`` plain assignments, or change ``new_node`` there too.
    """

    __slots__ = ("id", "tag", "attrs", "parent", "children", "flags")

    def __init__(self, node_id: int, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.id = node_id
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        # Child ids, not nodes: links run child -> parent only, so a dropped mirror is freed by
        # reference counting at once instead of waiting for a full garbage collection, and an
        # int-keyed dict is not even tracked by the collector (a server holds millions of nodes).
        self.children: dict[int, None] | None = None
        self.flags = 0

    def ancestors(self) -> Iterator[Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def input_type(self) -> str:
        return (self.attrs.get("type") or "text").lower() if self.tag == "input" else self.tag

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<Node {self.id} {self.tag} {self.attrs}>"


class SessionMirror:
    """The DOM of one recording window as far as masking needs it.

    ``keep_attributes`` adds to ``STRUCTURAL_ATTRIBUTES`` (pass the attribute names the policy's
    selectors test; ``walk.rules_for(policy).selector_attributes``).
    """

    def __init__(self, keep_attributes: frozenset[str] = frozenset()) -> None:
        self.keep = STRUCTURAL_ATTRIBUTES | keep_attributes
        self.nodes: dict[int, Node] = {}
        # Text, comment and doctype nodes: id -> parent. About half of a page's nodes; masking only
        # ever needs their parent, and a dict entry is far lighter than a Node for memory and for
        # the garbage collector, whose pauses grow with the number of objects a server holds.
        self.leaves: dict[int, Node | None] = {}
        # The last full snapshot's nodes as rows kept in C (``_native_walk.MirrorTable``, filled by
        # the packed walk), a Node made for a row only when asked for: most of a snapshot's nodes
        # are never asked about, and a Node each cost as much as reading the snapshot. None when
        # the snapshot was walked in Python. The dicts above win: an id enters them only after its
        # row is killed (``add``, ``add_leaf``), so the two never both hold an id.
        self.table: Any = None
        # "name:pw" / "id:pw" of inputs that were ever passwords: a show-password widget that swaps
        # the element for a new type=text input keeps the name, and the new input stays masked.
        self.password_keys: set[str] = set()
        # Whether any element of this mirror was marked BLOCKED (since the last full snapshot):
        # without one, no node is under a blocked element and the walker need not ask.
        self.has_blocked = False
        self.full_snapshots = 0
        self.touched = time.monotonic()
        # The walker's memos (element -> inherited context, selector results), kept from batch to
        # batch: an upload's mutations mostly touch the same few parents, whose contexts took a
        # walk to the root and a selector match per ancestor to work out. They hold while no kept
        # attribute changes (``forget_memos``) and nodes are not re-described (a moved or re-added
        # node is a new Node object, so its old entries are simply never asked for again).
        self.contexts: dict[Node, Any] = {}
        self.matches: dict[Any, bool] = {}
        self._memo_owner: object = None

    def reset(self) -> None:
        """A full snapshot re-describes the whole page; password history survives it."""
        self.nodes.clear()
        self.leaves.clear()
        self.table = None
        self.has_blocked = False
        self.forget_memos()
        self.full_snapshots += 1

    def memos(self, owner: object) -> tuple[dict[Node, Any], dict[Any, bool]]:
        """The memos for ``owner`` (the compiled rules they were computed under)."""
        # Entries of removed nodes linger until the next reset: bound them by the live tree's size.
        size = len(self.nodes) + (len(self.table) if self.table is not None else 0)
        if owner is not self._memo_owner or len(self.contexts) + len(self.matches) > 4 * size + 1024:
            self.forget_memos()
            self._memo_owner = owner
        return self.contexts, self.matches

    def forget_memos(self) -> None:
        """Cleared in place: a walker holding them sees the reset."""
        self.contexts.clear()
        self.matches.clear()

    def get(self, node_id: object) -> Node | None:
        if not isinstance(node_id, int):
            return None
        node = self.nodes.get(node_id)
        if node is None and self.table is not None:
            node = self.table.node(node_id)
        return node

    def children_of(self, node: Node) -> list[int]:
        """The ids of ``node``'s mirrored children (elements and leaves), in no particular order."""
        ids = list(node.children or ())
        if self.table is not None:
            ids += self.table.children(node)
        return ids

    def everything(self) -> tuple[dict[int, Node], dict[int, Node | None]]:
        """Every mirrored node and leaf, as ``nodes`` and ``leaves`` would hold them without the table
        (a Node made for every row: for tests and debugging, not for the hot path)."""
        if self.table is None:
            return dict(self.nodes), dict(self.leaves)
        nodes, leaves = self.table.everything()
        return nodes | self.nodes, leaves | self.leaves

    def add(self, node_id: int, tag: str, attrs: dict[str, object] | None, parent: Node | None) -> Node:
        # Runs once per recorded node (tens of thousands per full snapshot): kept lean on purpose.
        kept = _EMPTY
        if attrs:
            names = self.keep.intersection(attrs)
            if names:
                kept = {k: v for k in names if isinstance(v := attrs[k], str)} or _EMPTY
        node = Node(node_id, tag, kept, parent)
        nodes = self.nodes
        old = nodes.get(node_id)
        if old is not None:  # rrweb re-adds an id when a node moves
            _unlink(old.parent, node_id)
            self._detach(old)
        elif self.table is not None:  # the id becomes the dicts' (a row, if any, is killed)
            old, made = self.table.take(node_id)
            if old is not None:
                self._detach(old, made)
        nodes[node_id] = node
        _link(parent, node_id)
        if tag == "input":
            self._note_password(node, None)
        return node

    def add_leaf(self, node_id: int, parent: Node | None) -> None:
        """A text, comment or doctype node: only its parent is kept."""
        leaves = self.leaves
        if node_id in leaves:  # moved: forget the old place
            _unlink(leaves[node_id], node_id)
        elif self.table is not None:
            self.table.take_leaf(node_id)
        leaves[node_id] = parent
        _link(parent, node_id)

    def leaf_parent(self, node_id: object) -> tuple[bool, Node | None]:
        """(whether ``node_id`` is a known leaf, its parent)."""
        if isinstance(node_id, int):
            if node_id in self.leaves:
                return True, self.leaves[node_id]
            if self.table is not None:
                return self.table.leaf(node_id)
        return False, None

    def remove_leaf(self, node_id: int) -> None:
        if node_id in self.leaves:
            _unlink(self.leaves.pop(node_id), node_id)
        elif self.table is not None:
            self.table.remove_leaf(node_id)

    def set_attribute(self, node: Node, name: str, value: str | None) -> bool:
        """Record an attribute change; False when the mirror does not keep ``name`` (nothing changed)."""
        if name not in self.keep:
            return False
        old_type = node.attrs.get("type") if name == "type" else None
        if node.attrs is _EMPTY:
            node.attrs = {}
        if value is None:
            node.attrs.pop(name, None)
        else:
            node.attrs[name] = value
        if node.tag == "input":
            self._note_password(node, old_type)
        return True

    def remove(self, node: Node) -> None:
        """Forget ``node`` and its subtree (iteratively: recorded DOMs can be deep)."""
        if self.nodes.get(node.id) is node:
            _unlink(node.parent, node.id)
        self._detach(node)

    def _detach(self, node: Node, made: list[Node] | None = None) -> None:
        """Forget ``node``'s subtree (``made``: the Nodes made for the rows under it, when its
        rows were killed already)."""
        nodes = self.nodes
        if nodes.get(node.id) is node:
            del nodes[node.id]
        leaves = self.leaves
        stack = [node]
        if made is None and self.table is not None:  # its rows, and the Nodes made for rows under it
            made = self.table.detach(node)
        if made:
            stack += made
        if _forget_subtrees is not None:
            _forget_subtrees(nodes, leaves, stack)
            return
        while stack:
            n = stack.pop()
            for child_id in n.children or ():
                child = nodes.get(child_id)
                if child is not None and child.parent is n:  # not an id since re-added elsewhere
                    del nodes[child_id]
                    if child.children:
                        stack.append(child)
                # both: a client may give one id to an element and to a text node
                if leaves.get(child_id) is n:
                    del leaves[child_id]

    def _note_password(self, node: Node, old_type: str | None) -> None:
        attrs = node.attrs
        is_pw = (
            (attrs.get("type") or "").lower() == "password"
            or (old_type or "").lower() == "password"
            or "data-rr-is-password" in attrs
            or any(f"{k}:{attrs[k]}" in self.password_keys for k in ("id", "name") if k in attrs)
        )
        if is_pw:
            node.flags |= PASSWORD
        if node.flags & PASSWORD:
            self.password_keys.update(f"{k}:{attrs[k]}" for k in ("id", "name") if attrs.get(k))


def _link(parent: Node | None, child_id: int) -> None:
    if parent is not None:
        if parent.children is None:
            parent.children = {child_id: None}
        else:
            parent.children[child_id] = None


def _unlink(parent: Node | None, child_id: int) -> None:
    if parent is not None and parent.children is not None:
        parent.children.pop(child_id, None)


class MirrorCache:
    """Mirrors of recently active windows, least recently used first out.

    Key it by ``(project_id, session_id, window_id)``: rrweb node ids are per window. A window idle
    for ``idle_seconds`` is dropped (its next batch starts with unknown ancestry until rrweb's next
    full snapshot), and at most ``max_windows`` are kept, bounding memory on busy receivers.
    """

    def __init__(self, max_windows: int = 2000, idle_seconds: float = 1800.0) -> None:
        self.max_windows = max_windows
        self.idle_seconds = idle_seconds
        self._mirrors: OrderedDict[Hashable, SessionMirror] = OrderedDict()

    def get(self, key: Hashable, keep_attributes: frozenset[str] = frozenset()) -> SessionMirror:
        now = time.monotonic()
        mirror = self._mirrors.pop(key, None)
        if mirror is None or now - mirror.touched > self.idle_seconds or not keep_attributes <= mirror.keep:
            mirror = SessionMirror(keep_attributes)
        mirror.touched = now
        self._mirrors[key] = mirror
        while len(self._mirrors) > self.max_windows:
            self._mirrors.popitem(last=False)
        self._expire(now)
        return mirror

    def discard(self, key: Hashable) -> None:
        self._mirrors.pop(key, None)

    def __len__(self) -> int:
        return len(self._mirrors)

    def _expire(self, now: float) -> None:
        while self._mirrors:
            key, oldest = next(iter(self._mirrors.items()))
            if now - oldest.touched <= self.idle_seconds:
                break
            del self._mirrors[key]
