"""Masking packed events (privacy.enforce_packed, the C walk over msgpack full snapshots) against
masking decoded events (enforce_events): every stored byte, every summary field and every mirror
must come out alike, on real recordings, under every test policy, on malformed trees, and on the
nodes the C walk hands back to Python."""

from __future__ import annotations

import copy
import dataclasses
from array import array
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import RECORDINGS, load_recording, require_native_walk
from replay.catalog.summary import summarize
from replay.ingest.packed import split_events
from replay.privacy import MaskingPolicy, SessionMirror, enforce_events, walk
from replay.privacy.enforce import Enforcer, enforce_packed, mirror_attributes
from replay.privacy.mirror import STRUCTURAL_ATTRIBUTES
from test_native_walk import POLICIES, _scalars, _trees, mirror_state

pack = msgspec.msgpack.encode


@pytest.fixture(autouse=True)
def _native():
    require_native_walk()
    yield
    walk.use_native_walk(True)


def ordinary(policy, events, batch=7):
    # Fresh objects, as an upload is parsed: a test's events may share dicts (deepcopy keeps that),
    # and masking one copy in place would change the other.
    events = msgspec.msgpack.decode(pack(events))
    mirror = SessionMirror(mirror_attributes(policy))
    for i in range(0, len(events), batch):
        enforce_events(policy, mirror, events[i:i + batch])
    return [pack(e) for e in events], summarize(events), mirror_state(mirror)


def packed(policy, events, batch=7):
    mirror = SessionMirror(mirror_attributes(policy))
    out, fields = [], []
    for i in range(0, len(events), batch):
        part = split_events([pack(e) for e in events[i:i + batch]])  # as ingest reads an upload's events
        assert part is not None
        enforce_packed(policy, mirror, part.events, part.fields)
        out += [bytes(p) for p in part.events]
        fields += part.fields
    return out, summarize(fields), mirror_state(mirror)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_packed_events_are_masked_as_decoded_ones(path, policy):
    events = load_recording(path)
    expected = ordinary(POLICIES[policy], events)
    got = packed(POLICIES[policy], events)
    assert got[0] == expected[0]  # the stored bytes
    assert got[1] == expected[1]  # the session summary, URLs scrubbed as they are
    assert got[2] == expected[2]  # the mirror the next upload is masked with
    assert got[2][0], "the mirror was built"


def test_masking_changes_the_recordings_it_should():
    # The comparison above would pass if neither path masked anything.
    events = load_recording(RECORDINGS[-1])
    assert packed(POLICIES["default"], events)[0] != [pack(e) for e in events]


def walked(policy, snapshot: dict[str, Any]) -> tuple[bytes, int, SessionMirror]:
    rules = walk.rules_for(policy)
    mirror = SessionMirror(mirror_attributes(policy))
    walker = walk.Walker(rules, mirror, Enforcer(rules))
    out, delegated = walk.native_walk_packed(walker, pack(snapshot), walker._walk_packed_subtree)
    return out, delegated, mirror


def test_most_of_a_real_page_is_walked_without_python():
    events = load_recording(RECORDINGS[0])
    snapshot = next(e for e in events if e["type"] == 2)
    _, delegated, mirror = walked(POLICIES["default"], snapshot)
    every_node, every_leaf = mirror.everything()
    nodes = len(every_node) + len(every_leaf)
    assert 0 < delegated < nodes / 10, (delegated, nodes)
    # and what the C walk mirrored is rows, not Nodes: Nodes are made for the few asked about
    assert len(mirror.table) > nodes * 0.9 and len(mirror.nodes) + len(mirror.leaves) < nodes / 10


def test_an_attribute_masked_by_name_is_masked_without_python():
    snapshot = {"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": [
        {"type": 2, "id": 2, "tagName": "DIV", "attributes": {"title": "Jane's  notes", "class": "x"},
         "childNodes": [{"type": 3, "id": 3, "textContent": "plain text"}]}]}}}
    out, delegated, mirror = walked(POLICIES["default"], snapshot)
    assert delegated == 0
    node = msgspec.msgpack.decode(out)["data"]["node"]["childNodes"][0]
    assert node["attributes"] == {"title": "******  *****", "class": "x"}
    assert mirror.get(2).tag == "div" and mirror.get(2).attrs == {"class": "x"}
    assert mirror.leaf_parent(3) == (True, mirror.get(2))


def test_links_and_texts_the_enforcer_remembers_are_masked_without_python():
    # A policy of its own: its Rules (and their memos) are not shared with other tests.
    default = MaskingPolicy()
    policy = dataclasses.replace(default, strip_query_params=(*default.strip_query_params, "memo-test"))
    links = ["/docs?page=2", "/login?token=Zq8sEcret", "mailto:jane.doe@example.com"]
    texts = ["Write to jane.doe@example.com today", "Build 12345678 passed", "Order 4111 1111 1111 1111"]
    children = [{"type": 2, "id": 10 + i, "tagName": "a", "attributes": {"href": href, "class": "link"},
                 "childNodes": [{"type": 3, "id": 20 + i, "textContent": f"link {i}"}]} for i, href in enumerate(links)]
    children += [{"type": 3, "id": 30 + i, "textContent": text} for i, text in enumerate(texts)]
    children.append({"type": 5, "id": 40, "textContent": " contact jane.doe@example.com "})
    snapshot = {"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": [
        {"type": 2, "id": 2, "tagName": "body", "attributes": {}, "childNodes": children}]}}}
    expected = ordinary(policy, [snapshot])[0][0]
    walk.rules_for(policy).scrubbed_urls.clear()
    walk.rules_for(policy).pii_masked.clear()
    cold, cold_delegated, cold_mirror = walked(policy, snapshot)
    warm, warm_delegated, warm_mirror = walked(policy, snapshot)
    assert cold == warm == expected
    assert mirror_state(cold_mirror) == mirror_state(warm_mirror)
    assert cold_delegated == len(links) + len(texts) + 1  # each went to Python once, and the memo learnt it
    assert warm_delegated == 0
    body = msgspec.msgpack.decode(warm)["data"]["node"]["childNodes"][0]["childNodes"]
    hrefs = [c["attributes"]["href"] for c in body[:len(links)]]
    assert hrefs[0] == links[0] and "Zq8sEcret" not in hrefs[1] and "jane" not in hrefs[2]
    assert "jane" not in body[len(links)]["textContent"] and "jane" not in body[-1]["textContent"]


def test_a_snapshot_without_a_tree_changes_nothing():
    for event in ({"type": 2, "timestamp": 1, "data": {}}, {"type": 2, "timestamp": 1, "data": {"node": [1]}},
                  {"type": 2, "timestamp": 1}):
        rules = walk.rules_for(POLICIES["default"])
        mirror = SessionMirror(mirror_attributes(POLICIES["default"]))
        walker = walk.Walker(rules, mirror, Enforcer(rules))
        data = pack(event)
        assert walker.packed_full_snapshot(data) is data
        assert mirror.full_snapshots == 0  # not reset: Walker.event would not reset it either


@pytest.mark.parametrize("data", [b"", b"\x81\xa4data", b"\x92\x01", b"\xc1", b"\x81\xa4data\x80\x00",
                                  b"\x81\xa4data\x81\xa4node\x81\xa2id\xdb\xff\xff\xff\xff",
                                  # headers read inline: str 8 and uint 8/16 cut short
                                  *(b"\x81\xa4data\x81\xa4node\x81\xa2id" + cut
                                    for cut in (b"\xd9", b"\xd9\x05ab", b"\xcd\x01", b"\xcc"))])
def test_malformed_bytes_raise_before_anything_changes(data):
    rules = walk.rules_for(POLICIES["default"])
    mirror = SessionMirror(mirror_attributes(POLICIES["default"]))
    mirror.add(7, "div", None, None)
    walker = walk.Walker(rules, mirror, Enforcer(rules))
    with pytest.raises(ValueError):
        walker.packed_full_snapshot(data)
    assert list(mirror.nodes) == [7] and mirror.full_snapshots == 0


def test_more_attribute_names_than_the_name_table_holds():
    # The C walk keeps str objects for attribute names in a table it empties when full, possibly
    # in the middle of an element; thousands of distinct names cross that point many times.
    children = [{"type": 2, "id": 10 + i, "tagName": f"x-tag-{i % 700}",
                 "attributes": {f"data-k{i}-{j}": "v" for j in range(5)} | {"class": f"c{i}"}, "childNodes": []}
                for i in range(800)]
    events = [{"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": children}}}]
    assert packed(POLICIES["default"], events) == ordinary(POLICIES["default"], events)


# -- generated trees -----------------------------------------------------------------------------

_odd_scalars = st.one_of(_scalars, st.sampled_from([
    "Ünïcode tëxt", "ÄBC-DEF", "jäne@example.com", "x" * 40, "é" * 7 + "1234567", "https://é.test/?q=1",
    "data-" + "n" * 40, "DIV", "TextArea", "OPTION", "Script", "rr-mask", "ph-no-capture",
    "mailto:jane@example.com", "/path/4242424242424242", "  "]))
_names = st.one_of(st.sampled_from(["class", "id", "type", "value", "href", "title", "style", "data-x", "Title",
                                    "HREF", "contenteditable", "selected", "rr_src", "placeholder", "name", "src",
                                    "aria-label", "role", "data-private", "ÄRIA", "x" * 40, "autocomplete"]),
                   st.text(max_size=6))


def _element(children):
    return st.fixed_dictionaries(
        {"id": st.one_of(st.integers(1, 60), st.integers(1, 60), _odd_scalars), "type": st.sampled_from([0, 2, 2, 2, 3, 5]),
         "tagName": st.one_of(st.sampled_from(["div", "p", "a", "input", "span", "option", "select", "footer", "nav"]),
                              _odd_scalars),
         "attributes": st.one_of(st.dictionaries(_names, _odd_scalars, max_size=5), _odd_scalars)},
        optional={"textContent": _odd_scalars, "childNodes": st.one_of(children, _odd_scalars), "rootId": st.just(1)},
    )


_pages = st.recursive(_element(st.just([])), lambda kids: _element(st.lists(st.one_of(kids, _odd_scalars), max_size=5)),
                      max_leaves=40)


def _snapshot_and_mutation(tree: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": 4, "timestamp": 1, "data": {"href": "https://x.test/?token=abc&q=1", "width": 10, "height": 10}},
        {"type": 2, "timestamp": 2, "data": {"node": tree, "initialOffset": {"left": 0, "top": 0}}},
        {"type": 3, "timestamp": 3, "data": {"source": 0, "removes": [], "attributes": [],
                                             "texts": [{"id": 3, "value": "jane@example.com"}],
                                             "adds": [{"parentId": 1, "node": copy.deepcopy(tree)}]}},
        {"type": 3, "timestamp": 4, "data": {"source": 5, "id": 2, "text": "secret", "isChecked": False}},
        {"type": 3, "timestamp": 5, "data": {"source": 1, "positions": [{"x": 1, "y": 2, "id": 2, "timeOffset": 0}]}},
    ]


def _outcome(run, policy, events):
    try:
        return run(policy, events, batch=len(events))
    except Exception as e:  # both paths must fail alike
        return ("raised", type(e).__name__)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees, policy=st.sampled_from(sorted(POLICIES)))
def test_malformed_trees_are_masked_alike(tree, policy):
    events = _snapshot_and_mutation(tree)
    assert _outcome(packed, POLICIES[policy], events) == _outcome(ordinary, POLICIES[policy], events)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_pages, policy=st.sampled_from(sorted(POLICIES)))
def test_generated_pages_are_masked_alike(tree, policy):
    events = _snapshot_and_mutation(tree)
    assert _outcome(packed, POLICIES[policy], events) == _outcome(ordinary, POLICIES[policy], events)
    # The mirror as the snapshot alone leaves it (the mutation re-adds every node of the tree).
    assert _outcome(packed, POLICIES[policy], events[:2]) == _outcome(ordinary, POLICIES[policy], events[:2])


def test_the_mirror_keeps_what_the_selectors_need():
    # A policy whose selectors test an attribute the mirror does not keep by default.
    policy = POLICIES["selectors"]
    assert "data-private" not in STRUCTURAL_ATTRIBUTES
    tree = {"type": 0, "id": 1, "childNodes": [
        {"type": 2, "id": 2, "tagName": "div", "attributes": {"data-private": "1"},
         "childNodes": [{"type": 3, "id": 3, "textContent": "hidden"}]}]}
    events = _snapshot_and_mutation(tree)
    got = packed(policy, events)
    assert got == ordinary(policy, events)
    nodes = got[2][0]
    assert nodes[2][1] == {"data-private": "1"}, "the mirror keeps the attribute [data-private] tests"


def test_every_attribute_of_every_kind_of_element_is_masked_alike():
    """Each name the rules single out, on each kind of element, with each kind of value: the
    combinations a generated page meets only by chance."""
    tags = ["div", "button", "li", "a", "img", "option", "input", "textarea", "select", "form", "SPAN", "x-é"]
    names = ["value", "href", "src", "title", "alt", "placeholder", "aria-label", "data-x", "data-state", "class",
             "id", "style", "type", "name", "label", "rr_src", "selected", "action", "xlink:href", "onclick", "VALUE",
             "Title", "contenteditable", "data-private", "srcset"]
    values = ["plain", "", "jane@example.com", "4242 4242 4242 4242", "https://x.test/a?token=abc",
              "https://jane@x.test/", "/path/only", "ünïcode 1234567", "hidden", "true", "false"]
    children, i = [], 10
    for tag in tags:
        for name in names:
            for value in values:
                children.append({"type": 2, "id": i, "tagName": tag, "attributes": {name: value, "class": "c"},
                                 "childNodes": [{"type": 3, "id": i + 1, "textContent": "text"}]})
                i += 2
    # Once at the top (new ids: the C walk's own decisions) and once more inside a <select> (Python's).
    in_select = [{**c, "id": c["id"] + i, "childNodes": [{**c["childNodes"][0], "id": c["id"] + i + 1}]}
                 for c in children]
    events = [{"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": [
        *children, {"type": 2, "id": 2, "tagName": "select", "attributes": {}, "childNodes": in_select}]}}}]
    for policy in POLICIES.values():
        assert packed(policy, events) == ordinary(policy, events)
    _, delegated, mirror = walked(POLICIES["default"], events[0])
    assert delegated < len(children)  # most top-level elements were the C walk's


def test_selector_classes_anywhere_in_the_class_attribute_are_masked_alike():
    """The C walk rules an element out of the selectors by one scan of its class attribute for any
    of the block and mask selectors' class names: a name as a whole class, among others, at either
    end, inside a longer class (no match, but the scan may only say "maybe"), in other cases."""
    classes = ["rr-mask", "rr-block", "ph-mask", "ph-no-capture", "a rr-mask", "rr-block b", "x ph-mask y",
               "a\tph-no-capture", "xrr-maskx", "rr-mas", "RR-MASK", "rr", "", "plain", "ünï rr-block",
               "ünï plain", "rr-maskrr-block"]
    children = [{"type": 2, "id": 10 + 2 * i, "tagName": "div", "attributes": {"class": cls},
                 "childNodes": [{"type": 3, "id": 11 + 2 * i, "textContent": f"secret words {i}"}]}
                for i, cls in enumerate(classes)]
    events = [{"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": children}}}]
    for policy in POLICIES.values():
        assert packed(policy, events) == ordinary(policy, events)
    masked = msgspec.msgpack.decode(packed(POLICIES["default"], events)[0][0])["data"]["node"]["childNodes"]
    kept = {c["attributes"].get("class"): "secret" in str(c) for c in masked}
    assert kept["a rr-mask"] is False and kept["rr-block b"] is False and kept["a\tph-no-capture"] is False
    assert kept["xrr-maskx"] is True and kept["plain"] is True


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_ids_given_twice_in_a_snapshot_are_mirrored_alike(policy):
    """rrweb never repeats an id in a snapshot, but a client may: the second node replaces the
    first in the mirror (its subtree detached), as SessionMirror.add and add_leaf do."""
    def el(i, kids=(), tag="div"):
        return {"type": 2, "id": i, "tagName": tag, "attributes": {"class": "c"}, "childNodes": list(kids)}

    def text(i):
        return {"type": 3, "id": i, "textContent": "words"}

    tree = {"type": 0, "id": 1, "childNodes": [
        el(2, [el(3, [text(4)]), text(5)]),
        el(6, [el(3, [text(7)], tag="span")]),  # element 3 again, elsewhere
        el(8, [text(5), text(4)]),  # leaves 5 and 4 again, under another parent
        el(9, [el(7)]),  # a leaf's id as an element
        el(10, [text(9)]),  # an element's id as a leaf
        el(2, [text(11)], tag="p"),  # an element with children, again
    ]}
    events = [{"type": 2, "timestamp": 1, "data": {"node": tree}}]
    assert packed(POLICIES[policy], events) == ordinary(POLICIES[policy], events)
    # Removing a parent forgets only what is still its own: element 9 is not leaf 9 of element 10.
    removes = [{"parentId": 1, "id": 10}, {"parentId": 1, "id": 8}, {"parentId": 1, "id": 6}]
    events.append({"type": 3, "timestamp": 2, "data": {"source": 0, "removes": removes, "adds": [], "texts": [],
                                                       "attributes": []}})
    got = packed(POLICIES[policy], events, batch=1)
    assert got == ordinary(POLICIES[policy], events, batch=1)
    assert 9 in got[2][0] and 9 not in got[2][1]


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("again", ["leaf", "element", "thrice"])
def test_ids_python_mirrored_are_met_again_by_the_c_walk_alike(policy, again):
    """The C walk hands a form field to Python, which mirrors its subtree; an id of it given again
    later must reach Python too (the dicts claim their ids in the table), as must an id given a
    third time after Python took it from a row."""
    def el(i, kids=(), tag="div"):
        return {"type": 2, "id": i, "tagName": tag, "attributes": {"class": "c"}, "childNodes": list(kids)}

    field = el(12, [el(14, [{"type": 3, "id": 13, "textContent": "words"}], tag="option")], tag="select")
    later = {"leaf": [el(15, [{"type": 3, "id": 13, "textContent": "words"}])],
             "element": [el(15, [el(14)])],
             "thrice": [el(16), el(16, tag="input"), el(16, [el(18)])]}[again]
    events = [{"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": [field, *later]}}}]
    assert packed(POLICIES[policy], events) == ordinary(POLICIES[policy], events)


def test_many_kept_values_of_one_length_are_mirrored_as_written():
    """The C walk shares one str per short kept value through a small table keyed by the value's
    bytes: thousands of distinct classes of one length must each reach the mirror as written."""
    children = [{"type": 2, "id": 10 + i, "tagName": "div",
                 "attributes": {"class": f"c{i:05d}", "role": f"r{i % 7}", "id": "é" * (i % 3)}}
                for i in range(3000)]
    events = [{"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": children}}}]
    got = packed(POLICIES["default"], events)
    assert got == ordinary(POLICIES["default"], events)
    nodes = got[2][0]
    assert all(nodes[10 + i][1]["class"] == f"c{i:05d}" for i in range(3000))


# -- mutations after a packed snapshot (its mirror is rows in C, Nodes made when asked for) ---------

_ids = st.integers(1, 40)
_small_pages = st.recursive(_element(st.just([])), lambda kids: _element(st.lists(kids, max_size=3)), max_leaves=6)
_class_values = st.sampled_from(["rr-block", "rr-mask", "x rr-block", "plain", "ph-no-capture", ""])
_mutation = st.fixed_dictionaries({
    "source": st.just(0),
    "removes": st.lists(st.fixed_dictionaries({"parentId": _ids, "id": _ids}), max_size=4),
    "adds": st.lists(st.one_of(
        st.fixed_dictionaries({"parentId": _ids, "nextId": st.none(), "node": _small_pages}),
        st.fixed_dictionaries({"parentId": st.one_of(_ids, _odd_scalars, st.just(2 ** 64 - 1)),
                               "node": st.one_of(_small_pages, _odd_scalars)}),
        _odd_scalars), max_size=3),
    "texts": st.lists(st.fixed_dictionaries({"id": _ids, "value": st.sampled_from(["jane@example.com", "words"])}),
                      max_size=2),
    "attributes": st.lists(st.fixed_dictionaries({"id": _ids, "attributes": st.dictionaries(
        st.sampled_from(["class", "type", "contenteditable", "data-private", "value", "title"]),
        st.one_of(st.none(), _class_values, st.just("password")), max_size=2)}), max_size=3),
})
_events_after = st.lists(st.one_of(
    _mutation.map(lambda data: {"type": 3, "timestamp": 3, "data": data}),
    st.builds(lambda i: {"type": 3, "timestamp": 4, "data": {"source": 5, "id": i, "text": "Zq8secret",
                                                             "isChecked": False}}, _ids),
), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_pages, after=_events_after, policy=st.sampled_from(sorted(POLICIES)), batch=st.integers(1, 3))
def test_mutations_after_a_packed_snapshot_are_masked_alike(tree, after, policy, batch):
    """Removes, moves, re-added ids, adds under any node, texts and attribute changes (a class that
    blocks among them) after a full snapshot: the packed path's mirror (rows, Nodes made on demand,
    subtrees killed as row ranges) answers as the ordinary path's Nodes do, batch after batch."""
    events = [{"type": 2, "timestamp": 2, "data": {"node": tree}}, *after]
    assert _batched(packed, POLICIES[policy], events, batch) == _batched(ordinary, POLICIES[policy], events, batch)


def _batched(run, policy, events, batch):
    try:
        return run(policy, events, batch=batch)
    except Exception as e:  # both paths must fail alike
        return ("raised", type(e).__name__)


def test_a_subtree_removed_from_a_packed_snapshot_leaves_what_moved_out_of_it():
    """Row ranges: removing an element forgets the rows under it, but not a node that moved out
    of it before, nor what was added under it since; a leaf re-added elsewhere is no row's."""
    def el(i, kids=(), cls="c"):
        return {"type": 2, "id": i, "tagName": "div", "attributes": {"class": cls}, "childNodes": list(kids)}

    def text(i):
        return {"type": 3, "id": i, "textContent": "words"}

    tree = {"type": 0, "id": 1, "childNodes": [el(2, [el(3, [el(4, [text(5)]), text(6)]), el(7)]), el(8)]}
    mutations = [
        {"adds": [{"parentId": 8, "node": el(4, [text(5)])}]},  # 4 moves out of 3 (rrweb re-adds it)
        {"adds": [{"parentId": 3, "node": el(9, [text(10)])}], "texts": [{"id": 6, "value": "x"}]},
        {"removes": [{"parentId": 1, "id": 2}]},  # 2, 3, 6, 7 and the added 9, 10 go; 4 and 5 stay
        {"texts": [{"id": 5, "value": "jane@example.com"}, {"id": 6, "value": "jane@example.com"}],
         "attributes": [{"id": 8, "attributes": {"class": "rr-block"}}]},  # 8 blocked: its children removed
    ]
    events = [{"type": 2, "timestamp": 1, "data": {"node": tree}}]
    events += [{"type": 3, "timestamp": 2 + i, "data": {"source": 0, "removes": [], "adds": [], "texts": [],
                                                        "attributes": []} | m} for i, m in enumerate(mutations)]
    policy = POLICIES["default"]
    got = packed(policy, events, batch=1)
    assert got == ordinary(policy, events, batch=1)
    nodes, leaves = got[2][0], got[2][1]
    assert sorted(nodes) == [1, 4, 8] and sorted(leaves) == [5]
    assert nodes[4][2] == 8 and nodes[8][3] == frozenset({4})
    last = msgspec.msgpack.decode(got[0][-1])["data"]
    assert last["removes"] == [{"parentId": 8, "id": 4}]  # what the now-blocked element showed
    assert [t["id"] for t in last["texts"]] == [5, 6] and "jane" not in str(last["texts"])


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_what_a_snapshot_re_added_inside_a_subtree_outlives_the_subtree(policy):
    """An id given again inside its own subtree detaches the first node mid-walk: what the walk adds
    under the detached node afterwards stays mirrored, and removing the document later does not
    reach it (SessionMirror._detach follows only children still linked to their parent)."""
    def el(i, kids=()):
        return {"type": 2, "id": i, "tagName": "div", "attributes": {"class": "c"}, "childNodes": list(kids)}

    tree = {"type": 0, "id": 1, "childNodes": [
        el(2, [el(3, [el(2), {"type": 3, "id": 4, "textContent": "words"}, el(5)])]), el(6)]}
    removes = [{"parentId": 0, "id": 1}]
    events = [{"type": 2, "timestamp": 1, "data": {"node": tree}},
              {"type": 3, "timestamp": 2, "data": {"source": 0, "removes": removes, "adds": [], "texts": [],
                                                   "attributes": []}}]
    got = packed(POLICIES[policy], events, batch=1)
    assert got == ordinary(POLICIES[policy], events, batch=1)
    assert sorted(got[2][0]) == [2, 5] and sorted(got[2][1]) == [4]


def test_a_removed_text_of_a_packed_snapshot_is_unknown_afterwards():
    tree = {"type": 0, "id": 1, "childNodes": [{"type": 2, "id": 2, "tagName": "p", "attributes": {},
                                                "childNodes": [{"type": 3, "id": 3, "textContent": "words"}]}]}
    change = {"source": 0, "removes": [], "adds": [], "attributes": [], "texts": [{"id": 3, "value": "plain words"}]}
    events = [{"type": 2, "timestamp": 1, "data": {"node": tree}},
              {"type": 3, "timestamp": 2, "data": change},
              {"type": 3, "timestamp": 3, "data": change | {"removes": [{"parentId": 2, "id": 3}]}}]
    policy = POLICIES["default"]
    got = packed(policy, events, batch=1)
    assert got == ordinary(policy, events, batch=1)
    texts = [msgspec.msgpack.decode(e)["data"]["texts"][0]["value"] for e in got[0][1:]]
    assert texts[0] == "plain words" and texts[1] != "plain words"  # known, then of unknown ancestry: masked


def _script(i, *children, tag="script"):
    return {"type": 2, "id": i, "tagName": tag, "attributes": {"type": "text/javascript"}, "childNodes": list(children)}


def _text(i, value="var x = 1;", kind=3):
    return {"type": kind, "id": i, "textContent": value}


def test_scripts_and_styles_of_plain_text_are_walked_without_python():
    """Their text is code, left alone by the rules (even what looks like an address), so the C walk
    mirrors them itself instead of handing each to Python."""
    children = [_script(10, _text(11, "fetch('/api?token=abc'); // jane.doe@example.com")),
                _script(12), _script(14, _text(15, ".a { color: red }"), tag="STYLE"),
                {"type": 2, "id": 16, "tagName": "p", "attributes": {}, "childNodes": [_text(17, "words")]}]
    snapshot = {"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": children}}}
    out, delegated, mirror = walked(POLICIES["default"], snapshot)
    assert delegated == 0
    assert out == pack(snapshot)  # nothing masked, script text included
    assert [ordinary(POLICIES["default"], [snapshot])[0][0]] == [out]
    assert mirror.leaf_parent(11) == (True, mirror.get(10)) and mirror.get(14).tag == "style"


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("children", [
    [_text(11, "<!-- jane.doe@example.com -->", kind=5)],  # a comment: the rules look at it
    [_text(11), {"type": 2, "id": 12, "tagName": "b", "attributes": {}, "childNodes": []}],  # an element
    [_text(11 + i) for i in range(9)],  # more than the C walk checks
    [_text(11), _text(11, "again")],  # one id twice
    [_text(3)],  # an id the mirror holds already (the text before the script)
    [{"type": 3, "id": True, "textContent": "x"}, {"type": 3, "textContent": "no id"}, "not a node"],
    [{"type": 3.0, "id": 11, "textContent": "x"}, {"type": 3, "id": 2 ** 64 - 1, "textContent": "x"}],
], ids=["comment", "element", "many", "id-twice", "id-held", "odd-ids", "odd-types"])
def test_scripts_the_c_walk_cannot_vouch_for_are_masked_alike(policy, children):
    tree = {"type": 0, "id": 1, "childNodes": [_text(3, "jane.doe@example.com"), _script(10, *children)]}
    block = {"source": 0, "removes": [], "adds": [], "texts": [],
             "attributes": [{"id": 10, "attributes": {"class": "rr-block"}}]}  # what it showed is removed
    events = [{"type": 2, "timestamp": 1, "data": {"node": tree}}, {"type": 3, "timestamp": 2, "data": block}]
    assert packed(POLICIES[policy], events, batch=1) == ordinary(POLICIES[policy], events, batch=1)


# -- a mutation's adds, walked on their msgpack (cut_adds, walk_packed_adds) ---------------------

def _div(i, kids=(), cls="c", tag="div", **attrs):
    return {"type": 2, "id": i, "tagName": tag, "attributes": {"class": cls, **attrs}, "childNodes": list(kids)}


def _mutated(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    """A page (2 holds 3 under a mask selector, 4 under a block selector, 5 plain), then one
    mutation event per part."""
    page = {"type": 0, "id": 1, "childNodes": [_div(2, [_div(3, cls="rr-mask"), _div(4, cls="rr-block"), _div(5)])]}
    events = [{"type": 2, "timestamp": 1, "data": {"node": page}}]
    return events + [{"type": 3, "timestamp": 2 + i, "data": {"source": 0, "removes": [], "adds": [], "texts": [],
                                                              "attributes": []} | part} for i, part in enumerate(parts)]


@pytest.fixture
def packed_adds(monkeypatch):
    """Each walk_packed_adds call's nodes delegated (None: it declined), the real function running."""
    seen: list[int | None] = []
    real = walk.native_walk_packed_adds

    def spy(*args):
        out = real(*args)
        seen.append(None if out is None else out[1])
        return out

    monkeypatch.setattr(walk, "native_walk_packed_adds", spy)
    return seen


def _data(event: bytes) -> dict[str, Any]:
    return msgspec.msgpack.decode(event)["data"]


def test_added_nodes_are_walked_on_their_msgpack_without_python(packed_adds):
    """Under a snapshot's row, under an added Node, and a child listed before its parent (placed in
    the next round): mirrored as Nodes, nothing handed to Python, bytes as they came."""
    adds = [{"parentId": 21, "nextId": None, "node": _div(22, [{"type": 3, "id": 23, "textContent": "words"}])},
            {"parentId": 5, "nextId": None, "node": _div(20, [_div(21)])},
            {"parentId": 2, "nextId": 5, "node": {"type": 3, "id": 24, "textContent": "more words"}}]
    events = _mutated({"adds": adds})
    got = packed(POLICIES["default"], events, batch=2)
    assert got == ordinary(POLICIES["default"], events, batch=2)
    assert packed_adds == [0]
    assert got[0][1] == pack(events[1])
    nodes, leaves = got[2][0], got[2][1]
    assert nodes[20][2] == 5 and nodes[21][2] == 20 and nodes[22][2] == 21 and leaves == leaves | {23: 22, 24: 2}


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("adds, check", [
    # under a mask selector: text masked (Walker._add_under)
    ([{"parentId": 3, "node": {"type": 3, "id": 30, "textContent": "Secret words"}}],
     lambda d: "Secret" not in str(d["adds"])),
    # under a blocked element: dropped, the array's count with it
    ([{"parentId": 4, "node": _div(30)}, {"parentId": 5, "node": _div(31)}],
     lambda d: [a["node"]["id"] for a in d["adds"]] == [31]),
    # a parent nobody mirrors: unknown ancestry, text masked
    ([{"parentId": 99, "node": {"type": 3, "id": 30, "textContent": "Secret words"}}],
     lambda d: "Secret" not in str(d["adds"])),
    # what the C walk hands to Python from ROOT: an input's value, a detector's match
    ([{"parentId": 5, "node": _div(30, [_div(31, tag="input", value="Hunter2x"),
                                        {"type": 3, "id": 32, "textContent": "jane.doe@example.com"}])}],
     lambda d: "Hunter2x" not in str(d["adds"]) and "jane.doe" not in str(d["adds"])),
    # no adds: dropped; seventeen adds become fifteen (a three-byte array header becomes one byte)
    ([{"parentId": 5, "node": _div(30 + i)} for i in range(15)] + ["no add", {"parentId": 5}],
     lambda d: len(d["adds"]) == 15),
    # ids Python reads its own way: True is 1, 1.0 is no id, 2**64 - 1 no row holds
    ([{"parentId": True, "node": _div(30)}, {"parentId": 1.0, "node": _div(31)}, {"parentId": 2, "node": "x"}],
     lambda d: [a["parentId"] for a in d["adds"]] == [True, 1.0]),
    ([{"parentId": 2 ** 64 - 1, "node": _div(30)}, {"parentId": 5, "node": _div(31)}],
     lambda d: len(d["adds"]) == 2),
    # an id the snapshot gave (a node moved): its row is killed, the Node replaces it
    ([{"parentId": 2, "node": _div(5, [_div(3)])}, {"parentId": 3, "node": {"type": 3, "id": 30, "textContent": "ok"}}],
     lambda d: "ok" in str(d["adds"])),
], ids=["masked-parent", "blocked-parent", "unknown-parent", "python-nodes", "dropped", "odd-parent-ids",
        "huge-parent-id", "moved"])
def test_adds_the_c_walk_cannot_walk_from_root_are_masked_alike(policy, adds, check, packed_adds):
    events = _mutated({"adds": adds}, {"texts": [{"id": 30, "value": "Secret again"}],
                                       "attributes": [{"id": 4, "attributes": {"class": "plain"}}]})
    got = packed(POLICIES[policy], events, batch=1)
    assert got == ordinary(POLICIES[policy], events, batch=1)
    assert packed_adds and (policy != "default" or check(_data(got[0][1])))


def test_every_mutation_with_adds_of_a_real_recording_is_walked_packed(packed_adds):
    events = load_recording(RECORDINGS[-1])
    with_adds = sum(1 for e in events if e["type"] == 3 and e["data"].get("source") == 0 and e["data"].get("adds"))
    got = packed(POLICIES["default"], events)
    assert got == ordinary(POLICIES["default"], events)
    assert with_adds and len(packed_adds) == with_adds and None not in packed_adds


# -- the spans the packer found (PackedEvents.spans), used instead of reading each event again -----

def _read(events: list[dict[str, Any]]):
    from replay.ingest import packed as packed_ingest
    envelope = packed_ingest.read_envelope(orjson.dumps({"token": "t", "events": events}), 10_000)
    return packed_ingest.packed_events(envelope)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_events_walked_with_the_packers_spans_are_masked_alike(policy):
    """Full snapshots and mutations' adds (cut_adds) walked with the spans the packer found."""
    added = [{"parentId": 5, "nextId": None, "node": _div(100 + i, [
        {"type": 3, "id": 200 + i, "textContent": "jane.doe@example.com" if i % 7 == 0 else "words"}])}
        for i in range(40)]
    events = load_recording(RECORDINGS[-1]) + _mutated({"adds": added})
    runs = []
    for use_spans in (True, False):
        part = _read(events)
        assert part.spans and {e["type"] for e, s in zip(events, part.spans) if s is not None} == {2, 3}
        mirror = SessionMirror(mirror_attributes(POLICIES[policy]))
        enforce_packed(POLICIES[policy], mirror, part.events, part.fields, part.spans if use_spans else None)
        runs.append(([bytes(e) for e in part.events], mirror_state(mirror)))
    assert runs[0] == runs[1]
    assert runs[0][0] == ordinary(POLICIES[policy], events, batch=len(events))[0]


def test_spans_that_are_not_the_events_are_refused():
    """Out of order, past the event's end, cut short: refused. One missing: refused where the walk
    needs it, never a different result."""
    snapshot = {"type": 2, "timestamp": 1, "data": {"node": _PAGE_WITH_LINKS}}
    event = pack(snapshot)
    spans = walk._native_walk.spans_of(event)
    rules = walk.rules_for(POLICIES["default"])
    right = ordinary(POLICIES["default"], [snapshot])[0][0]

    def walked_with(given: bytes) -> bytes:
        mirror = SessionMirror(mirror_attributes(POLICIES["default"]))
        walker = walk.Walker(rules, mirror, Enforcer(rules))
        return walk.native_walk_packed(walker, event, walker._walk_packed_subtree, given)[0]

    ints = list(memoryview(spans).cast("q"))
    for bad in (array("q", ints[2:] + ints[:2]).tobytes(), array("q", [ints[0], len(event) + 1] + ints[2:]).tobytes(),
                spans[:-1]):
        with pytest.raises(ValueError):
            walked_with(bad)
    refused = 0
    for i in range(0, len(ints), 2):
        try:
            assert walked_with(array("q", ints[:i] + ints[i + 2:]).tobytes()) == right
        except ValueError:
            refused += 1
    assert refused and walked_with(spans) == right


_PAGE_WITH_LINKS = {"type": 0, "id": 1, "childNodes": [_div(2, [
    {"type": 2, "id": 3, "tagName": "a", "attributes": {"href": "https://x.test/?token=abc"}, "childNodes": []},
    {"type": 3, "id": 4, "textContent": "jane.doe@example.com"}, _div(5, [_div(6)])])]}
