"""The 14 real-browser privacy fixtures (tests/fixtures/privacy/) and what each one leaks.

Shared by the unit tests of the audit (tests/privacy/test_audit.py), the end-to-end audit and
enforcement tests, and the browser replay of enforced sessions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "privacy"

# What each recording leaks under the default (strict) policy; exact sets, so a miss or a new
# false alarm both fail.
EXPECTED: dict[str, set[str]] = {
    "hidden_input": {"unmasked_input"},
    "placeholder_email": {"email", "unmasked_attribute"},
    "title_aria": {"unmasked_attribute"},
    "option_card": {"payment_card", "unmasked_text"},
    "radio_checkbox": {"unmasked_input"},
    "textarea_initial": {"unmasked_input"},
    "contenteditable": {"unmasked_input"},
    "password_toggle": {"unmasked_input", "password_length"},
    "password_length": {"password_length"},
    "password_unmasked_config": {"unmasked_input"},
    "text_pii": {"email", "phone", "iban", "ssn", "token"},
    "data_attrs": {"email", "token"},  # data-* is scanned for PII, not masked wholesale by default
    "url_query": {"email", "sensitive_url_param"},
}
CLEAN = "well_masked"  # a careful site's recording: must audit clean

# Policy settings (``replay projects policy --set``) beyond the defaults under which enforcement
# removes every secret of a fixture: data_attrs also holds a plain name in a data-* attribute,
# which only the opt-in "data-*" rule masks (PII detectors catch its e-mail and token by default).
ENFORCING_SETTINGS: dict[str, list[str]] = {"data_attrs": ["mask_attributes+=data-*"]}


def load(name: str) -> dict[str, Any]:
    """``{"name", "description", "secrets": [...], "events": [...]}``."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def session_id(name: str) -> str:
    """A session id for a fixture (ids allow letters, digits and '-')."""
    return name.replace("_", "-")
