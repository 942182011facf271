"""Server-side enforcement over real rrweb recordings: no secret survives, the replay keeps its shape."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from replay.privacy import MaskingPolicy, MirrorCache, SessionMirror, audit_session, enforce_events, render_text
from replay.privacy.enforce import mirror_attributes

# Every test here runs with the C loop of the masking walk and with the Python loop.
pytestmark = pytest.mark.usefixtures("each_walk_loop")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "privacy"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))
POLICY = MaskingPolicy()
# data-* values are scanned for PII by default but not masked wholesale (replay fidelity); this
# fixture also holds a plain name in a data-* attribute, which only the opt-in rule can catch.
POLICIES = {"data_attrs": MaskingPolicy(mask_attributes=POLICY.mask_attributes + ("data-*",))}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def enforce(events: list[Any], policy: MaskingPolicy = POLICY, mirror: SessionMirror | None = None) -> list[Any]:
    return enforce_events(policy, mirror or SessionMirror(mirror_attributes(policy)), events)


def node_ids(node: Any) -> list[int]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n["id"])
        stack.extend(n.get("childNodes") or [])
    return out


def shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What the replay's structure depends on: event types, node ids, mutation targets, input ids."""
    out = []
    for e in events:
        d = e["data"]
        s: tuple[Any, ...] = (e["type"], e["timestamp"], d.get("source"))
        if e["type"] == 2:
            s += (tuple(node_ids(d["node"])),)
        elif e["type"] == 3 and d["source"] == 0:
            s += (
                tuple(r["id"] for r in d["removes"]),
                tuple(tuple(node_ids(a["node"])) for a in d["adds"]),
                tuple(t["id"] for t in d["texts"]),
                tuple((a["id"], tuple(a["attributes"])) for a in d["attributes"]),
            )
        elif e["type"] == 3 and d["source"] == 5:
            s += (d["id"], d["isChecked"])
        elif e["type"] == 3:
            s += (json.dumps(d, sort_keys=True),)  # mouse, scroll...: untouched
        out.append(s)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_enforcement_removes_every_secret_and_keeps_the_replay_structure(name: str) -> None:
    fixture = load(name)
    original = fixture["events"]
    enforced = enforce(copy.deepcopy(original), POLICIES.get(name, POLICY))
    serialized = json.dumps(enforced)
    for secret in fixture["secrets"]:
        assert secret not in serialized
    audit = audit_session(enforced)
    assert audit.verdict == "clean", render_text(audit)
    assert shape(enforced) == shape(original)


def test_default_policy_masks_pii_in_data_attributes_and_keeps_the_rest() -> None:
    fixture = load("data_attrs")
    serialized = json.dumps(enforce(copy.deepcopy(fixture["events"])))
    assert "jane.datasecret@example.com" not in serialized
    assert "ghp_16C7e42F292c6912E7710c838347Ae178B4a" not in serialized
    assert "Jane Datasecret" in serialized  # not PII to any detector: kept unless data-* is opted in


def test_enforcement_works_in_place_and_touches_only_what_leaks() -> None:
    events = load("well_masked")["events"]
    before = copy.deepcopy(events)
    assert enforce(events) is events
    changed = [i for i, (a, b) in enumerate(zip(before, events, strict=True)) if a != b]
    # On a careful site only Input events change: rrweb's per-character masks (and the
    # checkbox's default "on") become the fixed-length mask. Snapshot and mutations are untouched.
    assert changed and {events[i]["type"] for i in changed} == {3}
    assert {events[i]["data"]["source"] for i in changed} == {5}
    assert {events[i]["data"]["text"] for i in changed} == {"********"}


def test_masked_text_keeps_rrweb_form() -> None:
    events = enforce(load("text_pii")["events"])
    snapshot = json.dumps(events[3])
    assert "Contact *************************** or *** ** **** ****" in snapshot
    assert "IBAN **** **** **** **** **** **" in snapshot


def test_fixed_length_hides_password_length_and_can_be_turned_off() -> None:
    inputs = lambda evs: [e["data"]["text"] for e in evs if e["type"] == 3 and e["data"].get("source") == 5]  # noqa: E731
    fixed = enforce(load("password_length")["events"])
    assert set(inputs(fixed)) == {"********"}
    lengthy = enforce(load("password_length")["events"], MaskingPolicy(fixed_length_mask=False))
    assert [len(t) for t in inputs(lengthy)] == list(range(1, 12))
    assert set(audit_session(lengthy).counts()) == {"password_length"}


def test_batches_share_the_mirror_and_give_the_same_result_as_one_batch() -> None:
    events = load("password_toggle")["events"]
    whole = enforce(copy.deepcopy(events))
    mirror = SessionMirror()
    chunks = [copy.deepcopy(events[i:i + 5]) for i in range(0, len(events), 5)]
    split = [e for chunk in chunks for e in enforce(chunk, mirror=mirror)]
    assert split == whole


def test_unknown_ancestry_is_masked_conservatively() -> None:
    # A receiver that never saw the full snapshot (the session began on another process).
    events = load("contenteditable")["events"]
    later = copy.deepcopy([e for e in events if e["type"] == 3])
    enforced = enforce(later)
    assert "Secretword" not in json.dumps(enforced)
    texts = [t["value"] for e in enforced if e["data"]["source"] == 0 for t in e["data"]["texts"]]
    assert texts and all(set(v) <= {"*", " ", "\u00a0"} for v in texts)
    # Input events on unknown nodes are masked whatever the policy.
    lenient = MaskingPolicy(mask_all_inputs=False, mask_text_selectors=())
    typed = [copy.deepcopy(e) for e in load("textarea_initial")["events"] if e["type"] == 3]
    assert "quartzRecovery" not in json.dumps(enforce(typed, lenient))


def test_block_selector_replaces_element_with_placeholder_and_drops_its_mutations() -> None:
    policy = MaskingPolicy(block_selectors=["#later", "p#bank"])
    events = enforce(load("text_pii")["events"], policy)
    serialized = json.dumps(events)
    assert "SSN" not in serialized and "DE89" not in serialized

    def find(node: dict[str, Any], ident: str) -> dict[str, Any] | None:
        stack = [node]
        while stack:
            n = stack.pop()
            if n.get("attributes", {}).get("id") == ident:
                return n
            stack.extend(n.get("childNodes") or [])
        return None

    bank = find(events[3]["data"]["node"], "bank")
    assert bank is not None and bank["childNodes"] == [] and set(bank["attributes"]) <= {"id", "class", "rr_width",
                                                                                            "rr_height"}
    later_text_id = 20  # the text node inside p#later, changed by a text mutation
    mutation = next(e["data"] for e in events if e["type"] == 3 and e["data"].get("source") == 0)
    assert all(t["id"] != later_text_id for t in mutation["texts"])
    assert audit_session(events, policy).verdict == "clean"


def test_element_that_starts_matching_a_block_selector_loses_its_children() -> None:
    policy = MaskingPolicy(block_selectors=[".secret"])
    events = copy.deepcopy(load("text_pii")["events"][:4])
    events.append({"type": 3, "timestamp": events[-1]["timestamp"] + 1, "data": {
        "source": 0, "texts": [], "removes": [], "adds": [],
        "attributes": [{"id": 17, "attributes": {"class": "secret"}}]}})  # p#bank
    enforced = enforce(events, policy)
    mutation = enforced[-1]["data"]
    assert mutation["attributes"] == []
    assert mutation["removes"] == [{"parentId": 17, "id": 18}]  # its IBAN text node


@pytest.mark.parametrize("when", ["snapshot", "attribute change"])
def test_changes_inside_a_blocked_element_are_dropped(when: str) -> None:
    """Whether blocked in the snapshot or by a later class change, what happens inside the element
    (attributes, removes, texts, adds) is not recorded; outside it, it is."""
    policy = MaskingPolicy(block_selectors=[".secret"])

    def div(i: int, kids: list[Any] = (), cls: str = "c") -> dict[str, Any]:
        return {"type": 2, "id": i, "tagName": "div", "attributes": {"class": cls}, "childNodes": list(kids)}

    text = {"type": 3, "id": 5, "textContent": "Quartzsecret"}
    blocked = div(3, [div(4, [text]), div(6)], cls="secret" if when == "snapshot" else "c")
    page = {"type": 0, "id": 1, "childNodes": [div(2, [blocked, div(7)])]}
    events: list[Any] = [{"type": 2, "timestamp": 1, "data": {"node": page}}]
    if when == "attribute change":
        events.append(_mutation(2, attributes=[{"id": 3, "attributes": {"class": "secret"}}]))
    events.append(_mutation(3, attributes=[{"id": 4, "attributes": {"data-x": "Quartzsecret"}},
                                           {"id": 7, "attributes": {"data-x": "shown"}}],
                            removes=[{"parentId": 3, "id": 6}, {"parentId": 2, "id": 7}],
                            texts=[{"id": 5, "value": "Quartzsecret"}],
                            adds=[{"parentId": 4, "nextId": None, "node": div(8)},
                                  {"parentId": 2, "nextId": None, "node": div(9)}]))
    last = enforce(events, policy)[-1]["data"]
    assert last["attributes"] == [{"id": 7, "attributes": {"data-x": "shown"}}]
    assert last["removes"] == [{"parentId": 2, "id": 7}]
    assert last["texts"] == [] and [a["node"]["id"] for a in last["adds"]] == [9]
    assert "Quartzsecret" not in json.dumps(last)


def _input_page(attrs: dict[str, str]) -> list[dict[str, Any]]:
    node = {"type": 0, "id": 1, "childNodes": [{"type": 2, "id": 2, "tagName": "html", "attributes": {},
             "childNodes": [{"type": 2, "id": 3, "tagName": "body", "attributes": {}, "childNodes": [
                 {"type": 2, "id": 4, "tagName": "input", "attributes": attrs, "childNodes": []}]}]}]}
    return [{"type": 4, "timestamp": 1, "data": {"href": "https://shop.test/", "width": 1, "height": 1}},
            {"type": 2, "timestamp": 2, "data": {"node": node, "initialOffset": {"left": 0, "top": 0}}}]


def _mutation(ts: int, **data: Any) -> dict[str, Any]:
    return {"type": 3, "timestamp": ts, "data": {"source": 0, "texts": [], "attributes": [], "removes": [],
                                                  "adds": [], **data}}


def test_password_toggled_to_text_stays_masked_even_when_text_inputs_are_not() -> None:
    policy = MaskingPolicy(mask_all_inputs=False)
    events = _input_page({"type": "password", "name": "pw"}) + [
        _mutation(3, attributes=[{"id": 4, "attributes": {"type": "text"}}]),
        {"type": 3, "timestamp": 4, "data": {"source": 5, "id": 4, "text": "Hunter2Secret", "isChecked": False}},
        _mutation(5, attributes=[{"id": 4, "attributes": {"value": "Hunter2Secret"}}]),
    ]
    enforced = enforce(events, policy)
    assert "Hunter2" not in json.dumps(enforced)
    # A plain text input under the same policy is not masked (the policy allows it).
    plain = _input_page({"type": "text", "name": "q"}) + [
        {"type": 3, "timestamp": 4, "data": {"source": 5, "id": 4, "text": "shoes", "isChecked": False}}]
    assert enforce(plain, policy)[-1]["data"]["text"] == "shoes"


def test_url_parameters_are_stripped_in_meta_links_and_custom_events() -> None:
    events = [
        {"type": 4, "timestamp": 1, "data": {"href": "https://app.test/cb#access_token=abcDEF123&state=x",
                                              "width": 1, "height": 1}},
        {"type": 5, "timestamp": 2, "data": {"tag": "$pageview", "payload": {
            "href": "https://app.test/r?token=zzTop99&page=2", "title": "mail jane@example.com"}}},
        {"type": 6, "timestamp": 3, "data": {"plugin": "rrweb/console@1", "payload": {
            "level": "log", "payload": ['"user jane@example.com logged in"']}}},
    ]
    assert set(audit_session(events).counts()) == {"sensitive_url_param", "email"}
    enforced = enforce(events)
    assert enforced[0]["data"]["href"] == "https://app.test/cb#access_token=********&state=x"
    assert enforced[1]["data"]["payload"]["href"] == "https://app.test/r?token=********&page=2"
    assert "jane@" not in json.dumps(enforced)
    assert audit_session(enforced).verdict == "clean"


def test_links_in_snapshots_and_added_nodes_lose_their_secrets() -> None:
    def link(node_id: int, name: str, value: str) -> dict[str, Any]:
        return {"type": 2, "id": node_id, "tagName": "a", "attributes": {name: value, "class": "nav"},
                "childNodes": [{"type": 3, "id": node_id + 1, "textContent": "next"}]}

    secret = "https://app.test/r?token=zzTop99&page=2"
    events = [
        {"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": [
            {"type": 2, "id": 2, "tagName": "div", "attributes": {}, "childNodes": [link(3, "href", secret)]}]}}},
        {"type": 3, "timestamp": 2, "data": {"source": 0, "texts": [], "attributes": [], "removes": [], "adds": [
            {"parentId": 2, "nextId": None, "node": link(10, "href", secret)},
            {"parentId": 2, "nextId": None, "node": link(12, "HREF", secret)},
            {"parentId": 2, "nextId": None, "node": {"type": 2, "id": 14, "tagName": "img", "childNodes": [],
                                                     "attributes": {"src": "/u/jane@example.com/avatar.png"}}},
        ]}},
    ]
    enforced = json.dumps(enforce(events))
    assert "zzTop99" not in enforced and "jane@" not in enforced
    assert enforced.count("token=********&page=2") == 3


def test_enforce_false_stores_events_as_received() -> None:
    events = load("text_pii")["events"]
    before = copy.deepcopy(events)
    assert enforce(events, MaskingPolicy(enforce=False)) == before


def test_deep_dom_does_not_hit_recursion_limits() -> None:
    depth = 5000
    leaf: dict[str, Any] = {"type": 3, "id": depth + 10, "textContent": "mail jane@example.com"}
    node = leaf
    for i in range(depth, 2, -1):
        node = {"type": 2, "id": i, "tagName": "div", "attributes": {}, "childNodes": [node]}
    root = {"type": 0, "id": 1, "childNodes": [node]}
    events = [{"type": 2, "timestamp": 1, "data": {"node": root, "initialOffset": {"left": 0, "top": 0}}},
              _mutation(2, texts=[{"id": depth + 10, "value": "call +44 20 7946 0958"}])]
    policy = MaskingPolicy(mask_text_selectors=["section div"])
    enforced = enforce(events, policy)
    assert leaf["textContent"] == "mail ****************"
    assert enforced[1]["data"]["texts"][0]["value"] == "call *** ** **** ****"


def test_mirror_cache_bounds_windows_and_forgets_idle_ones() -> None:
    cache = MirrorCache(max_windows=2, idle_seconds=60)
    a = cache.get(("p", "s", "w1"))
    assert cache.get(("p", "s", "w1")) is a
    cache.get(("p", "s", "w2"))
    cache.get(("p", "s", "w3"))
    assert len(cache) == 2 and cache.get(("p", "s", "w1")) is not a


def test_moved_node_keeps_its_new_context_after_its_old_parent_is_removed() -> None:
    # rrweb moves a node by adding it again (same id) under its new parent; removing the old
    # parent afterwards must not forget the moved node, whose text is masked by its new place.
    policy = MaskingPolicy(mask_text_selectors=[".private"])
    node = {"type": 0, "id": 1, "childNodes": [{"type": 2, "id": 2, "tagName": "body", "attributes": {}, "childNodes": [
        {"type": 2, "id": 3, "tagName": "div", "attributes": {"class": "old"}, "childNodes": [
            {"type": 2, "id": 5, "tagName": "span", "attributes": {}, "childNodes": [
                {"type": 3, "id": 6, "textContent": "public"}]}]},
        {"type": 2, "id": 4, "tagName": "div", "attributes": {"class": "private"}, "childNodes": []}]}]}
    moved = {"type": 2, "id": 5, "tagName": "span", "attributes": {}, "childNodes": [
        {"type": 3, "id": 6, "textContent": "public"}]}
    events = [
        {"type": 2, "timestamp": 1, "data": {"node": node, "initialOffset": {"left": 0, "top": 0}}},
        _mutation(2, adds=[{"parentId": 4, "nextId": None, "node": moved}]),
        _mutation(3, removes=[{"parentId": 2, "id": 3}]),
        _mutation(4, texts=[{"id": 6, "value": "Jane Secretname"}]),
    ]
    mirror = SessionMirror(mirror_attributes(policy))
    enforced = enforce(events, policy, mirror)
    assert mirror.get(5) is not None and mirror.get(5).parent is mirror.get(4)
    assert mirror.get(3) is None
    assert enforced[-1]["data"]["texts"][0]["value"] == "**** **********"


def test_removed_element_takes_its_text_nodes_with_it() -> None:
    policy = MaskingPolicy(mask_text_selectors=[".private"])
    node = {"type": 0, "id": 1, "childNodes": [{"type": 2, "id": 2, "tagName": "body", "attributes": {}, "childNodes": [
        {"type": 2, "id": 3, "tagName": "p", "attributes": {"class": "private"}, "childNodes": [
            {"type": 3, "id": 4, "textContent": "hidden"}]}]}]}
    mirror = SessionMirror(mirror_attributes(policy))
    enforce([{"type": 2, "timestamp": 1, "data": {"node": node, "initialOffset": {"left": 0, "top": 0}}}], policy, mirror)
    assert mirror.leaf_parent(4) == (True, mirror.get(3))
    enforce([_mutation(2, removes=[{"parentId": 2, "id": 3}])], policy, mirror)
    assert mirror.leaf_parent(4) == (False, None) and mirror.get(3) is None


def _page_with_private_ancestor_candidate() -> list[dict[str, Any]]:
    node = {"type": 0, "id": 1, "childNodes": [{"type": 2, "id": 2, "tagName": "body", "attributes": {}, "childNodes": [
        {"type": 2, "id": 3, "tagName": "section", "attributes": {"class": "card"}, "childNodes": [
            {"type": 2, "id": 5, "tagName": "p", "attributes": {}, "childNodes": [
                {"type": 3, "id": 6, "textContent": "Order status"}]}]}]}]}
    return [{"type": 2, "timestamp": 1, "data": {"node": node, "initialOffset": {"left": 0, "top": 0}}}]


def test_a_later_batch_sees_an_ancestor_that_became_masked() -> None:
    # Contexts are remembered from batch to batch; a class change in between must not be missed.
    policy = MaskingPolicy(mask_text_selectors=[".private"])
    mirror = SessionMirror(mirror_attributes(policy))
    enforce(_page_with_private_ancestor_candidate(), policy, mirror)
    first = enforce([_mutation(2, texts=[{"id": 6, "value": "Shipped to Jane"}])], policy, mirror)
    assert first[0]["data"]["texts"][0]["value"] == "Shipped to Jane"
    enforce([_mutation(3, attributes=[{"id": 3, "attributes": {"class": "card private"}}])], policy, mirror)
    later = enforce([_mutation(4, texts=[{"id": 6, "value": "Shipped to Jane"}])], policy, mirror)
    assert later[0]["data"]["texts"][0]["value"] == "******* ** ****"
    enforce([_mutation(5, attributes=[{"id": 3, "attributes": {"class": "card"}}])], policy, mirror)
    again = enforce([_mutation(6, texts=[{"id": 6, "value": "Delivered"}])], policy, mirror)
    assert again[0]["data"]["texts"][0]["value"] == "Delivered"


def test_a_changed_policy_applies_to_the_next_batch_of_a_window() -> None:
    mirror = SessionMirror(mirror_attributes(MaskingPolicy(mask_text_selectors=[".card"])))
    enforce(_page_with_private_ancestor_candidate(), POLICY, mirror)
    before = enforce([_mutation(2, texts=[{"id": 6, "value": "Shipped to Jane"}])], POLICY, mirror)
    assert before[0]["data"]["texts"][0]["value"] == "Shipped to Jane"
    stricter = MaskingPolicy(mask_text_selectors=[".card"])
    after = enforce([_mutation(3, texts=[{"id": 6, "value": "Shipped to Jane"}])], stricter, mirror)
    assert after[0]["data"]["texts"][0]["value"] == "******* ** ****"


def test_remembered_contexts_stay_bounded_by_the_live_page() -> None:
    policy = MaskingPolicy(mask_text_selectors=[".private"])
    mirror = SessionMirror(mirror_attributes(policy))
    enforce(_page_with_private_ancestor_candidate(), policy, mirror)
    for i in range(3000):  # a long single-page session: elements come and go, never a full snapshot
        added = {"type": 2, "id": 100 + i, "tagName": "li", "attributes": {}, "childNodes": [
            {"type": 3, "id": 100_000 + i, "textContent": "row"}]}
        enforce([_mutation(10 + i, adds=[{"parentId": 5, "nextId": None, "node": added}],
                           texts=[{"id": 100_000 + i, "value": "row"}])], policy, mirror)
        enforce([_mutation(10 + i, removes=[{"parentId": 5, "id": 100 + i}])], policy, mirror)
    assert len(mirror.contexts) + len(mirror.matches) <= 4 * len(mirror.nodes) + 1024


def test_remembered_masking_of_repeated_values_gives_what_a_first_look_gives() -> None:
    from replay.privacy import enforce
    from replay.privacy.walk import rules_for

    policy = MaskingPolicy(strip_query_params=("session",))
    sink = enforce.Enforcer(rules_for(policy))
    values = ["https://shop.test/cart?session=abc123&item=9", "mail jane@example.com now", "plain words here",
              "https://shop.test/docs/ch07-03-paths-for-referring-to-an-item.html"]
    first = [(sink.url(None, "href", v), sink.text(None, v, False)) for v in values]
    again = ["".join(list(v)) for v in values]  # equal strings, other objects
    assert all(a is not b for a, b in zip(again, values))
    assert all(v in sink.rules.scrubbed_urls and v in sink.rules.pii_masked for v in values)  # remembered
    second = [(sink.url(None, "href", v), sink.text(None, v, False)) for v in again]
    assert second == first
    assert first[0][0] == "https://shop.test/cart?session=********&item=9"
    assert "jane@example.com" not in first[1][1]
    for v, (url, text) in zip(again, second):  # unchanged values come back as the object passed in
        assert (url is v) == (url == v) and (text is v) == (text == v)


def test_remembered_masking_stays_bounded() -> None:
    from replay.privacy import enforce
    from replay.privacy.walk import rules_for

    rules = rules_for(MaskingPolicy(strip_query_params=("bounded-test",)))
    sink = enforce.Enforcer(rules)
    for i in range(enforce.MEMO_ENTRIES * 2 + 10):
        sink.url(None, "href", f"https://x.test/{i}?a=1")
    long_text = "y" * (enforce.MEMO_VALUE_CHARS + 1) + " jane@example.com"
    assert "jane@example.com" not in sink.text(None, long_text, False)
    sink.text(None, "short jane@example.com", False)
    assert 0 < len(rules.scrubbed_urls) <= enforce.MEMO_ENTRIES
    assert "short jane@example.com" in rules.pii_masked and long_text not in rules.pii_masked
    assert all(len(v) <= enforce.MEMO_VALUE_CHARS for v in rules.pii_masked)
