"""PII detectors: real PII is found, look-alikes (timestamps, Luhn-invalid numbers, ids) are not."""

from __future__ import annotations

import pytest

from replay.privacy.detectors import excerpt, find_pii, iban_ok, is_masked, luhn_ok, mask_pii, mask_text

POSITIVE = [
    ("write to jane.doe+news@example.co.uk today", "email", "jane.doe+news@example.co.uk"),
    ("card 4242 4242 4242 4242 exp 12/30", "payment_card", "4242 4242 4242 4242"),
    ("4111-1111-1111-1111", "payment_card", "4111-1111-1111-1111"),
    ("amex 378282246310005.", "payment_card", "378282246310005"),
    ("card 4242 4242 4242 4242 123", "payment_card", "4242 4242 4242 4242"),  # card then CVV
    ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
    ("call +1 (555) 123-4567", "phone", "+1 (555) 123-4567"),
    ("office (555) 123-4567", "phone", "(555) 123-4567"),
    ("fax 555.123.4567", "phone", "555.123.4567"),
    ("IBAN DE89 3704 0044 0532 0130 00", "iban", "DE89 3704 0044 0532 0130 00"),
    ("GB82WEST12345698765432", "iban", "GB82WEST12345698765432"),
    ("SSN 123-45-6789", "ssn", "123-45-6789"),
    ("key=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "token", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("aws AKIAIOSFODNN7EXAMPLE", "token", "AKIAIOSFODNN7EXAMPLE"),
    (
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "token",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("session x9Kp2LmQ7vRt4ZsW8nYb3HcJ6fGd1AeU", "token", "x9Kp2LmQ7vRt4ZsW8nYb3HcJ6fGd1AeU"),
]

NEGATIVE = [
    "4242 4242 4242 4241",  # Luhn-invalid
    "1700000000000",  # a millisecond timestamp
    "2024-01-15T10:30:00.123Z",
    "Jan 15, 2024 10:30",
    "order 12345678 shipped",
    "12345678901234567890",
    "version 1.2.3 build 20240115",
    "192.168.100.200",
    "DE89 3704 0044 0532 0130 01",  # mod-97 fails
    "000-12-3456",  # not an issued SSN
    "logo@2x.png",
    "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0",  # hex digest (commit sha)
    "my-very-long-kebab-case-component-name-v2-final",
    "Price $1,299.99 incl. 19% VAT",
    "width 1024 height 768",
    "Page 3 of 12",
]


@pytest.mark.parametrize("text,kind,found", POSITIVE, ids=[p[1] + ":" + p[2][:12] for p in POSITIVE])
def test_detector_finds_pii(text: str, kind: str, found: str) -> None:
    findings = find_pii(text)
    assert [(f.kind, text[f.span[0]:f.span[1]]) for f in findings] == [(kind, found)]


@pytest.mark.parametrize("text", NEGATIVE)
def test_detector_ignores_look_alikes(text: str) -> None:
    assert find_pii(text) == []


def test_enabled_detectors_limit_the_kinds() -> None:
    text = "jane@example.com +44 20 7946 0958"
    assert [f.kind for f in find_pii(text, frozenset({"phone"}))] == ["phone"]


def test_mask_pii_keeps_rrweb_form_and_the_rest_of_the_text() -> None:
    masked, findings = mask_pii("Contact jane@example.com or +44 20 7946 0958.")
    assert masked == "Contact **************** or *** ** **** ****."
    assert [f.kind for f in findings] == ["email", "phone"]
    assert mask_text(" a b\tc ") == " * *\t* "


def test_checksums() -> None:
    assert luhn_ok("4242424242424242") and not luhn_ok("4242424242424241")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


@pytest.mark.parametrize("text,kind,found", POSITIVE, ids=[p[1] + ":" + p[2][:12] for p in POSITIVE])
def test_excerpt_never_repeats_the_secret(text: str, kind: str, found: str) -> None:
    shown = excerpt(kind, found)
    assert found not in shown
    assert shown and shown != found
    # At most a few characters of the secret survive (e.g. a card's last four).
    assert sum(c.isalnum() for c in shown) <= 12


def test_excerpt_forms() -> None:
    assert excerpt("email", "jane.doe@example.com") == "j*******@e******.com"
    assert excerpt("payment_card", "4242 4242 4242 4242") == "**** **** **** 4242"
    assert excerpt("ssn", "123-45-6789") == "***-**-****"
    assert excerpt("token", "sk_live_4eC39HqLyjWDarjtT1zdp7dc").startswith("sk_l")


def test_is_masked() -> None:
    assert is_masked("") and is_masked("*** **\n*") and is_masked(None)
    assert not is_masked("** a") and not is_masked("secret")
