"""The C loop of Walker._walk (replay/privacy/_native_walk.c) against the Python loop it replaces.

Both must leave every event and every mirror exactly alike: on the real recordings, on every
privacy fixture, under policies that reach each of the C loop's shortcuts, and on malformed trees
(where both must also fail alike). Its PII prefilter must agree with detectors.py's, and that
one must never hide a finding from the full pattern.
"""

from __future__ import annotations

import copy
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import RECORDINGS, load_recording, require_native_walk
from replay.privacy import MaskingPolicy, SessionMirror, audit_session, enforce_events
from replay.privacy import detectors, walk
from replay.privacy.enforce import mirror_attributes
from replay.privacy.mirror import Node

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

POLICIES = {
    "default": MaskingPolicy(),
    # every kind of selector the C loop rules elements out by: tag, id, class, and selectors it
    # cannot rule out at all (attribute-only), plus masked data-* names and a glob
    "selectors": MaskingPolicy(
        mask_text_selectors=(".rr-mask", "#intro", "nav a", "p"),
        block_selectors=(".rr-block", "[data-private]", "footer"),
        mask_attributes=MaskingPolicy().mask_attributes + ("data-*", "div[role=button]@aria-label"),
    ),
    "lenient": MaskingPolicy(mask_all_inputs=False, mask_text_selectors=(), block_selectors=(),
                             mask_option_text=False),
}


@pytest.fixture(autouse=True)
def _native_loop_restored():
    yield
    walk.use_native_walk(True)


def mirror_state(mirror: SessionMirror) -> tuple[Any, ...]:
    """What a mirror holds, whether as Nodes or as a packed walk's rows (every row made a Node)."""
    every_node, every_leaf = mirror.everything()
    nodes = {i: (n.tag, n.attrs, n.parent.id if n.parent else None, frozenset(mirror.children_of(n)), n.flags)
             for i, n in every_node.items()}
    leaves = {i: p.id if p is not None else None for i, p in every_leaf.items()}
    return nodes, leaves, mirror.password_keys, mirror.full_snapshots


def enforce_with(native: bool, policy: MaskingPolicy, events: list[Any], batch: int = 7) -> tuple[Any, ...]:
    """Enforce in batches of ``batch`` events through one mirror; the events and the mirror after."""
    assert walk.use_native_walk(native) is native
    events = copy.deepcopy(events)
    mirror = SessionMirror(mirror_attributes(policy))
    for i in range(0, len(events), batch):
        enforce_events(policy, mirror, events[i:i + batch])
    return events, mirror_state(mirror)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_both_loops_mask_a_recording_alike(path: Path, policy: str) -> None:
    require_native_walk()
    events = load_recording(path)
    native = enforce_with(True, POLICIES[policy], events)
    python = enforce_with(False, POLICIES[policy], events)
    assert native[0] == python[0]
    assert native[1] == python[1]
    assert native[1][0], "the mirror was built"


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_both_loops_audit_a_recording_alike(path: Path) -> None:
    require_native_walk()
    events = load_recording(path)
    reports = []
    for native in (True, False):
        walk.use_native_walk(native)
        reports.append(audit_session(copy.deepcopy(events)).to_dict())
    assert reports[0] == reports[1]


def test_the_shortcuts_are_taken_on_a_real_recording() -> None:
    """The C loop hands back to Python only what it cannot prove unchanged: a small minority."""
    require_native_walk()
    calls = {"_element": 0, "_leaf_text": 0, "_attribute": 0}
    originals = {name: getattr(walk.Walker, name) for name in calls}

    def counting(name):
        def call(self, *args):
            calls[name] += 1
            return originals[name](self, *args)
        return call

    events = load_recording(FIXTURES / "rrweb-player-events.json")
    snapshot = next(e for e in events if e["type"] == 2)
    nodes = sum(1 for _ in iter_nodes(snapshot["data"]["node"]))
    try:
        for name in calls:
            setattr(walk.Walker, name, counting(name))
        enforce_with(True, POLICIES["default"], [snapshot])
    finally:
        for name, fn in originals.items():
            setattr(walk.Walker, name, fn)
    assert 0 < sum(calls.values()) < nodes / 5, (calls, nodes)


def test_masked_attributes_and_masked_text_are_masked_without_python() -> None:
    """Titles (masked by name under the default policy) and text under a mask selector: no Python step."""
    require_native_walk()
    policy = MaskingPolicy(mask_text_selectors=(".secret",))
    rows = [{"type": 2, "id": 10 + 3 * i, "tagName": "span",
             "attributes": {"class": "secret" if i % 2 else "plain", "title": f"Jane Doe {i}", "aria-label": "** *"},
             "childNodes": [{"type": 3, "id": 11 + 3 * i, "textContent": f"Account of Jane {i}"}]}
            for i in range(40)]
    snapshot = {"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": [
        {"type": 2, "id": 2, "tagName": "body", "attributes": {}, "childNodes": rows}]}}}
    enforce_with(True, policy, [snapshot])  # the rules learn which names they mask (Rules._name_masked)
    calls = []
    original = walk.Walker._attribute, walk.Walker._leaf_text
    try:
        walk.Walker._attribute = lambda self, *a: calls.append(a) or original[0](self, *a)
        walk.Walker._leaf_text = lambda self, *a: calls.append(a) or original[1](self, *a)
        native = enforce_with(True, policy, [snapshot])
    finally:
        walk.Walker._attribute, walk.Walker._leaf_text = original
    # Only the .secret elements' own attributes go through Python (their _element step runs there).
    assert calls and all(isinstance(a[0], Node) and a[0].attrs.get("class") == "secret" for a in calls), calls
    assert native == enforce_with(False, policy, [snapshot])
    body = native[0][0]["data"]["node"]["childNodes"][0]["childNodes"]
    assert body[0]["attributes"]["title"] == "**** *** *" and body[0]["attributes"]["aria-label"] == "** *"
    assert body[1]["childNodes"][0]["textContent"] == "******* ** **** *"
    assert body[0]["childNodes"][0]["textContent"] == "Account of Jane 0"  # not under .secret


_WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())


@settings(max_examples=1000, deadline=None)
@given(text=st.text(alphabet=st.one_of(st.sampled_from(_WHITESPACE + "*"), st.characters())))
def test_the_c_text_mask_is_the_enforcers(text: str) -> None:
    require_native_walk()
    from replay.privacy import _native_walk

    expected = text if detectors.is_masked(text) else detectors.mask_text(text)
    got = _native_walk.masked_text(text)
    assert got == expected and (got is text) == (expected is text)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_both_loops_mask_adds_under_every_element_of_a_page_alike(policy: str) -> None:
    """A mutation adding text and a titled element under each element of a real page: every
    parent's context worked out from the memo, the chain above it, or the page's root."""
    require_native_walk()
    events = load_recording(FIXTURES / "rrweb-player-events.json")
    snapshot = next(e for e in events if e["type"] == 2)
    elements = [n["id"] for n in iter_nodes(snapshot["data"]["node"]) if n.get("type") == 2]
    adds = []
    for i, parent in enumerate(reversed(elements)):  # deepest first: long chains, few memo hits
        adds.append({"parentId": parent, "nextId": None,
                     "node": {"type": 3, "id": 900_000 + 2 * i, "textContent": f"Jane Doe jane{i}@example.com"}})
        adds.append({"parentId": parent, "nextId": None,
                     "node": {"type": 2, "id": 900_001 + 2 * i, "tagName": "span",
                              "attributes": {"title": "Account 4242 4242 4242 4242", "class": "rr-mask"},
                              "childNodes": []}})
    mutation = {"type": 3, "timestamp": snapshot["timestamp"] + 1,
                "data": {"source": 0, "removes": [], "texts": [], "attributes": [], "adds": adds}}
    assert len(elements) > 20
    assert enforce_with(True, POLICIES[policy], [snapshot, mutation], batch=1) == \
        enforce_with(False, POLICIES[policy], [snapshot, mutation], batch=1)


def iter_nodes(node: dict[str, Any]):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.get("childNodes") or [])


# -- malformed trees -------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 8), st.floats(allow_nan=False, width=16),
                     st.sampled_from(["", "div", "INPUT", "textarea", "option", "select", "script", "a", "Input",
                                      "#text", "jane@example.com", "4242 4242 4242 4242", "rr-block", "rr-mask",
                                      "https://x.test/?token=abc", "password", "true", "false"]))
_attr_names = st.sampled_from(["class", "id", "type", "value", "href", "title", "style", "data-x", "Title", "HREF",
                               "contenteditable", "selected", "rr_src", "placeholder", "name", "src"])
_attributes = st.one_of(_scalars, st.lists(_scalars, max_size=2),
                        st.dictionaries(_attr_names, _scalars, max_size=5))


def _node(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": st.one_of(st.integers(1, 40), _scalars), "type": st.one_of(st.integers(0, 6), _scalars)},
        optional={"tagName": _scalars, "attributes": _attributes, "textContent": _scalars,
                  "childNodes": st.one_of(children, _scalars)},
    )


_trees = st.recursive(_node(st.just([])), lambda kids: _node(st.lists(st.one_of(kids, _scalars), max_size=4)),
                      max_leaves=30)


def _run(native: bool, policy: MaskingPolicy, tree: dict[str, Any],
         more_adds: list[Any] = ()) -> tuple[Any, ...]:  # type: ignore[assignment]
    walk.use_native_walk(native)
    tree = copy.deepcopy(tree)
    mirror = SessionMirror(mirror_attributes(policy))
    event = {"type": 2, "timestamp": 1, "data": {"node": tree}}
    adds = {"type": 3, "timestamp": 2, "data": {"source": 0, "removes": [], "texts": [], "attributes": [],
                                                 "adds": [{"parentId": 1, "node": copy.deepcopy(tree)},
                                                          *copy.deepcopy(list(more_adds))]}}
    try:
        enforce_events(policy, mirror, [event, adds])
    except Exception as e:  # both loops must fail alike
        return ("raised", type(e).__name__)
    return event, adds, mirror_state(mirror)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees, policy=st.sampled_from(sorted(POLICIES)))
def test_both_loops_agree_on_malformed_trees(tree: dict[str, Any], policy: str) -> None:
    require_native_walk()
    assert _run(True, POLICIES[policy], tree) == _run(False, POLICIES[policy], tree)


# Adds under any node of the page (or none it knows), in any order: a parent added later in the
# same mutation defers its children (Walker._add_round's loop, in C).
# Now and then no add at all (no object, or no node object): both loops drop it.
_adds = st.lists(st.one_of(st.fixed_dictionaries({"parentId": st.one_of(st.integers(0, 45), _scalars), "node": _trees}),
                           st.fixed_dictionaries({"parentId": st.integers(0, 45)}, optional={"node": _scalars}),
                           _scalars), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees, more_adds=_adds, policy=st.sampled_from(sorted(POLICIES)))
def test_both_loops_agree_on_adds_anywhere(tree: dict[str, Any], more_adds: list[Any], policy: str) -> None:
    require_native_walk()
    assert _run(True, POLICIES[policy], tree, more_adds) == _run(False, POLICIES[policy], tree, more_adds)


def test_the_c_loop_makes_nodes_as_node_init_does() -> None:
    """It fills Node's slots itself instead of calling __init__: the two must give the same Node."""
    require_native_walk()
    from replay.privacy import _native_walk
    from replay.privacy.mirror import Node

    assert _native_walk.fills_node_slots()
    mirror = SessionMirror()
    root = {"id": 1, "type": 0, "childNodes": [{"id": 2, "type": 2, "tagName": "DIV", "attributes": {"class": "a"}}]}
    enforce_events(MaskingPolicy(), mirror, [{"type": 2, "timestamp": 1, "data": {"node": root}}])
    made = mirror.nodes[2]
    expected = Node(2, "div", {"class": "a"}, mirror.nodes[1])
    assert type(made) is Node
    assert {k: getattr(made, k) for k in Node.__slots__} == {k: getattr(expected, k) for k in Node.__slots__}


def test_a_very_deep_tree_is_walked_without_recursion() -> None:
    require_native_walk()
    depth = 200_000
    root: dict[str, Any] = {"id": 1, "type": 0, "childNodes": []}
    node = root
    for i in range(2, depth + 2):
        child = {"id": i, "type": 2, "tagName": "div", "attributes": {}, "childNodes": []}
        node["childNodes"].append(child)
        node = child
    node["childNodes"].append({"id": depth + 2, "type": 3, "textContent": "call +44 20 7946 0958"})
    mirror = SessionMirror()
    enforce_events(MaskingPolicy(), mirror, [{"type": 2, "timestamp": 1, "data": {"node": root}}])
    assert len(mirror.nodes) == depth + 1 and len(mirror.leaves) == 1
    assert node["childNodes"][0]["textContent"] == "call *** ** **** ****"


def test_the_native_loop_keeps_no_references() -> None:
    """Every reference the C loop takes is given back: the tree's objects end as they started."""
    require_native_walk()
    events = load_recording(FIXTURES / "rrweb-player-events.json")
    start = next(i for i, e in enumerate(events) if e["type"] == 2)
    events = events[start:]  # the full snapshot and every mutation after it (add_round's loop too)
    enforce_events(MaskingPolicy(), SessionMirror(), events)  # masked once: later walks change nothing
    roots = [events[0]["data"]["node"]] + [a["node"] for e in events if e["type"] == 3
                                           for a in e["data"].get("adds") or []]
    assert len(roots) > 50
    watched = [n for root in roots for n in iter_nodes(root)]
    watched += [v for n in watched for v in (n.get("attributes") or {}).values() if isinstance(v, str)]
    gc.collect()
    before = [sys.getrefcount(o) for o in watched]
    for _ in range(3):
        mirror = SessionMirror()
        enforce_events(MaskingPolicy(), mirror, events)
        del mirror
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before


# -- the prefilter ---------------------------------------------------------------------------------

_pieces = st.one_of(
    st.text(alphabet="0123456789 ().-_+@:/?#=&%abcdefXYZAKIJeyJ\u0663\u00b2\u00e9\u4e00\n", max_size=40),
    st.sampled_from([*detectors._TOKEN_PREFIXES, "http://127.0.0.1:8080/", "https://user:pw@host/", "DE89",
                     "4242 4242 4242 4242", "+44 20 7946 0958", "123-45-6789", "jane@example.com",
                     "x9Kp2LmQ7vRt4ZsW8nYb3HcJ6fGd1AeU", "defining-and-instantiating-structs",
                     "GB82WEST12345698765432", "eyJhbGciOiJIUzI1NiJ9", "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                     "a" * 31, "a1" * 16, "1" * 7, "1.2.3.4", "\u0663" * 7]),
)
_texts = st.lists(_pieces, max_size=6).map("".join)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_texts)
def test_the_prefilter_never_hides_a_finding(each_walk_loop: str, text: str) -> None:
    assert detectors.find_pii(text) == detectors._scan(detectors._PATTERN, text, None)


@settings(max_examples=2000, deadline=None)
@given(text=_texts)
def test_the_c_prefilter_is_the_python_prefilter(text: str) -> None:
    require_native_walk()
    from replay.privacy import _native_walk

    native = (_native_walk.may_contain_pii(text), _native_walk.url_may_contain_pii(text),
              detectors._BY_CANDIDATE[_native_walk.candidate(text)])
    walk.use_native_walk(False)
    assert native == (detectors.may_contain_pii(text), detectors.url_may_contain_pii(text),
                      detectors._python_candidate_pattern(text))


def test_the_prefilter_passes_every_kind_of_pii(each_walk_loop: str) -> None:
    from test_detectors import POSITIVE

    for text, _, found in POSITIVE:
        assert detectors.may_contain_pii(found) and detectors.may_contain_pii(text), text


def test_a_url_host_is_not_taken_for_pii_but_its_user_is(each_walk_loop: str) -> None:
    assert not detectors.url_may_contain_pii("http://127.0.0.1:35079/std/index.html")
    assert detectors.url_may_contain_pii("http://127.0.0.1:35079/call/+44-20-7946-0958")
    assert detectors.url_may_contain_pii("https://jane@example.com/")


def test_a_server_without_its_c_parts_says_so_and_masks_the_same(tmp_path) -> None:
    """REPLAY_NATIVE=0 (or an install without a compiler): the Python twins, the same stored events."""
    require_native_walk()
    from harness import ReplayProcess, TestProject, fetch_events, post_batch

    fixture = json.loads((FIXTURES / "privacy" / "text_pii.json").read_text())
    proc = ReplayProcess(tmp_path / "data", "--flush-interval", "0.2", env={"REPLAY_NATIVE": "0"}).start()
    try:
        assert "run in Python" in "".join(proc.output)
        project = TestProject(proc.printed(r"project (\S+) "), proc.printed(r"ingest token: (\S+)"),
                              proc.printed(r"API key \(shown once, keep it\): (\S+)"))
        r = post_batch(proc.url, project.token, "pure-python", fixture["events"], batch_id="b1")
        assert r.status_code == 200, r.text
        stored: list[Any] = []
        for _ in range(100):
            stored = fetch_events(proc.url, project, "pure-python")
            if len(stored) == len(fixture["events"]):
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
    expected = copy.deepcopy(fixture["events"])
    enforce_events(MaskingPolicy(), SessionMirror(mirror_attributes(MaskingPolicy())), expected)  # the C loop
    assert stored == expected
    assert not any(secret in json.dumps(stored) for secret in fixture["secrets"])
