"""The walker's memos (contexts and selector matches kept on the mirror from batch to batch) are a
cache: forgetting them before every event must change nothing. Attribute changes that no selector
can tell apart (a hover class, an id nobody names) keep them; the rest must drop them."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from replay.privacy import MaskingPolicy, SessionMirror, enforce_events
from replay.privacy.enforce import mirror_attributes
from replay.privacy.selectors import SelectorInputs, parse_all

pytestmark = pytest.mark.usefixtures("each_walk_loop")

POLICY = MaskingPolicy(
    mask_text_selectors=(".secret", "#vault p", "[data-private]", "section[data-x^=hid] > p"),
    block_selectors=(".blocked",),
    mask_attributes=(*MaskingPolicy().mask_attributes, ".tip@data-tip"),
)
CLASSES = [None, "a", "a b", "secret", "a secret", "blocked", "tip", "b tip"]
IDS = [None, "vault", "other"]
DATA_X = [None, "hidden", "shown"]
EDITABLE = [None, "true", "false"]
ATTRIBUTE_POOLS = {"class": CLASSES, "id": IDS, "data-x": DATA_X, "data-private": [None, ""],
                   "contenteditable": EDITABLE, "style": [None, "color: red"]}


def page(rng: random.Random) -> tuple[dict[str, Any], list[int], list[int]]:
    """A document of nested sections and paragraphs; returns it, its element ids and text ids."""
    next_id = iter(range(10, 10_000))
    elements: list[int] = []
    texts: list[int] = []

    def element(depth: int) -> dict[str, Any]:
        eid = next(next_id)
        elements.append(eid)
        tag = rng.choice(["section", "div", "p", "span"])
        attrs = {k: v for k in ("class", "id", "data-x") if (v := rng.choice(ATTRIBUTE_POOLS[k])) is not None}
        children: list[dict[str, Any]] = []
        for _ in range(rng.randrange(1, 4)):
            if depth < 4 and rng.random() < 0.6:
                children.append(element(depth + 1))
            else:
                tid = next(next_id)
                texts.append(tid)
                children.append({"type": 3, "id": tid, "textContent": f"Jane Doe number {tid}"})
        return {"type": 2, "id": eid, "tagName": tag, "attributes": attrs, "childNodes": children}

    body = element(0)
    html = {"type": 2, "id": 2, "tagName": "html", "attributes": {}, "childNodes": [body]}
    return {"type": 0, "id": 1, "childNodes": [html]}, elements, texts


def mutation(ts: int, **data: Any) -> dict[str, Any]:
    return {"type": 3, "timestamp": ts, "data": {"source": 0, "texts": [], "attributes": [], "removes": [],
                                                  "adds": [], **data}}


def session(rng: random.Random) -> list[dict[str, Any]]:
    root, elements, texts = page(rng)
    events: list[dict[str, Any]] = [{"type": 2, "timestamp": 1, "data": {"node": root, "initialOffset": {}}}]
    next_id = 20_000
    for ts in range(2, 40):
        roll = rng.random()
        if roll < 0.5:
            name = rng.choice(list(ATTRIBUTE_POOLS))
            events.append(mutation(ts, attributes=[{"id": rng.choice(elements), "attributes": {
                name: rng.choice(ATTRIBUTE_POOLS[name]), "data-tip": "Call Jane Doe"}}]))
        elif roll < 0.8:
            events.append(mutation(ts, texts=[{"id": rng.choice(texts), "value": f"Secret words {ts}"}]))
        else:
            next_id += 2
            added = {"type": 2, "id": next_id, "tagName": "p", "attributes": {"data-tip": "Jane"},
                     "childNodes": [{"type": 3, "id": next_id + 1, "textContent": f"Added text {ts}"}]}
            elements.append(next_id)
            texts.append(next_id + 1)
            events.append(mutation(ts, adds=[{"parentId": rng.choice(elements[:-1]), "nextId": None,
                                              "node": added}]))
    return events


def test_forgetting_the_memos_before_every_event_changes_nothing():
    changed_by_masking = 0
    for seed in range(150):
        events = session(random.Random(seed))
        kept = enforce_events(POLICY, SessionMirror(mirror_attributes(POLICY)), copy.deepcopy(events))
        mirror = SessionMirror(mirror_attributes(POLICY))
        forgotten = []
        for event in copy.deepcopy(events):
            mirror.forget_memos()
            forgotten.extend(enforce_events(POLICY, mirror, [event]))
        assert kept == forgotten, seed
        changed_by_masking += kept != events
    assert changed_by_masking > 100  # the sessions exercise the rules, not only the bookkeeping


@pytest.mark.parametrize("name, old, new, changes", [
    ("class", "a", "a b", False),          # no selector names a or b
    ("class", "a", "a secret", True),
    ("class", "secret a", "a secret", False),  # the same classes
    ("class", None, "blocked", True),
    ("id", "x", "y", False),
    ("id", "x", "vault", True),
    ("data-x", "shown", "hidden", True),   # ^=hid flips
    ("data-x", "hidden", "hide", False),   # both start with "hid"
    ("data-x", None, "shown", False),      # present now, but ^=hid still fails
    ("data-private", None, "", True),      # presence
    ("style", "a", "b", False),
])
def test_an_attribute_change_matters_only_to_selectors_that_can_tell_it(name, old, new, changes):
    inputs = SelectorInputs([parse_all(POLICY.mask_text_selectors), parse_all(POLICY.block_selectors)])
    assert inputs.changed_by(name, old, new) is changes
