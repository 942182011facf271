"""MaskingPolicy round-trips as JSON, rejects what it cannot enforce, and the selector matcher works."""

from __future__ import annotations

import json

import pytest

from replay.errors import BadRequest
from replay.privacy.mirror import SessionMirror
from replay.privacy.policy import MaskingPolicy
from replay.privacy.selectors import SelectorError, parse, parse_all


def test_policy_round_trips_through_json() -> None:
    policy = MaskingPolicy(mask_all_inputs=False, mask_input_types=["email", "TEL"], block_selectors=["#ads"])
    data = json.loads(json.dumps(policy.to_dict()))
    again = MaskingPolicy.from_dict(data)
    assert again == policy and hash(again) == hash(policy)
    assert again.mask_input_types == ("email", "tel")
    assert MaskingPolicy.from_dict({}) == MaskingPolicy()


@pytest.mark.parametrize(
    "data,detail",
    [
        ({"mask_all_inputs": "yes"}, "mask_all_inputs"),
        ({"mask_input_types": "password"}, "list of strings"),
        ({"mask_input_types": ["passwd"]}, "unknown mask_input_types"),
        ({"pii_detectors": ["email", "dna"]}, "unknown pii_detectors"),
        ({"block_selectors": ["a:hover"]}, "unsupported selector"),
        ({"mask_text_selectors": ["div + p"]}, "unsupported selector"),
        ({"mask_attributes": ["input[type=hidden]@"]}, "mask_attributes"),
        ({"mask_attributes": [""]}, "non-empty"),
        ({"mask_all_input": True}, "unknown policy fields"),
    ],
)
def test_invalid_policies_are_rejected_with_a_reason(data: dict, detail: str) -> None:
    with pytest.raises(BadRequest) as info:
        MaskingPolicy.from_dict(data)
    assert info.value.code == "invalid_policy" and detail in info.value.detail


def test_client_settings_for_remote_config() -> None:
    assert MaskingPolicy().client_settings() == {
        "maskAllInputs": True,
        "maskTextSelector": ".rr-mask, .ph-mask",
        "blockSelector": ".rr-block, .ph-no-capture",
    }
    lenient = MaskingPolicy(mask_all_inputs=False, mask_input_types=["email", "hidden"], mask_text_selectors=[],
                            block_selectors=[])
    assert lenient.client_settings() == {
        "maskAllInputs": False,
        "maskInputOptions": {"email": True, "password": True},  # rrweb has no "hidden" option
        "maskTextSelector": None,
        "blockSelector": None,
    }


def test_attribute_name_rules_honour_keep_list() -> None:
    policy = MaskingPolicy(mask_attributes=MaskingPolicy().mask_attributes + ("data-*",))
    assert policy.attribute_name_masked("data-user-email")
    assert policy.attribute_name_masked("placeholder")
    assert not policy.attribute_name_masked("data-state")
    assert not policy.attribute_name_masked("href")
    assert not MaskingPolicy().attribute_name_masked("data-user-email")  # opt-in: PII detectors scan it


def _tree() -> SessionMirror:
    m = SessionMirror(frozenset({"data-private", "lang"}))
    doc = m.add(1, "#document", None, None)
    html = m.add(2, "html", {"lang": "en-GB"}, doc)
    body = m.add(3, "body", {"class": "page checkout"}, html)
    form = m.add(4, "form", {"id": "pay", "data-private": ""}, body)
    div = m.add(5, "div", {"class": "row"}, form)
    m.add(6, "input", {"type": "text", "name": "card"}, div)
    m.add(7, "#text", None, div)
    return m


@pytest.mark.parametrize(
    "selector,node,expected",
    [
        ("input", 6, True),
        ("INPUT", 6, True),
        ("#pay input", 6, True),
        ("form > input", 6, False),
        ("form > div > input", 6, True),
        ("body.checkout input[name=card]", 6, True),
        (".page.checkout", 3, True),
        (".page.missing", 3, False),
        ("[data-private]", 4, True),
        ("[data-private] *", 6, True),
        ('input[type="text"]', 6, True),
        ("input[name^=ca]", 6, True),
        ("input[name$=rd]", 6, True),
        ("input[name*=ar]", 6, True),
        ("body[class~=checkout]", 3, True),
        ("html[lang|=en]", 2, True),
        ("select, #pay", 4, True),
        ("div", 7, False),  # text nodes never match
        ("#pay > .row", 5, True),
    ],
)
def test_selector_matching(selector: str, node: int, expected: bool) -> None:
    mirror = _tree()
    target = mirror.get(node)
    assert target is not None
    assert parse_all([selector]).matches(target) is expected
    assert parse_all([selector]).matches(target, {}) is expected


@pytest.mark.parametrize("bad", ["", "a:hover", "a + b", "a ~ b", "> a", "a >", "::before", "a[b=", "div#"])
def test_unsupported_selectors_raise(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse(bad)


def test_mirror_forgets_removed_subtrees_and_remembers_passwords() -> None:
    mirror = _tree()
    form = mirror.get(4)
    assert form is not None
    mirror.remove(form)
    assert sorted(mirror.nodes) == [1, 2, 3]
    body = mirror.get(3)
    assert body is not None
    pw = mirror.add(10, "input", {"type": "password", "name": "pw"}, body)
    mirror.remove(pw)
    swapped = mirror.add(11, "input", {"type": "text", "name": "pw"}, body)  # show-password swap
    assert swapped.flags & 1
    toggled = mirror.add(12, "input", {"type": "password", "id": "p2"}, body)
    mirror.set_attribute(toggled, "type", "text")
    assert toggled.flags & 1
