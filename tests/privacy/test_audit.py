"""The audit reports every leak vector recorded by real rrweb in Chromium, and nothing on a careful site."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from leak_vectors import EXPECTED  # what each fixture leaks (shared with the end-to-end tests)
from replay.privacy import MaskingPolicy, audit_session, render_text, summarize_project

# Every test here runs with the C loop of the masking walk and with the Python loop.
pytestmark = pytest.mark.usefixtures("each_walk_loop")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "privacy"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_recorded_fixture_has_an_expectation() -> None:
    recorded = {p.stem for p in FIXTURES.glob("*.json")}
    assert recorded == set(EXPECTED) | {"well_masked"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_audit_reports_the_leak_vector(name: str) -> None:
    fixture = load(name)
    audit = audit_session(fixture["events"], session_id=name)
    assert audit.verdict == "leaked"
    assert set(audit.counts()) == EXPECTED[name], render_text(audit)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_audit_report_never_repeats_a_secret(name: str) -> None:
    fixture = load(name)
    audit = audit_session(fixture["events"], session_id=name)
    serialized = json.dumps(audit.to_dict()) + render_text(audit)
    for secret in fixture["secrets"]:
        assert secret not in serialized


def test_well_masked_site_audits_clean() -> None:
    audit = audit_session(load("well_masked")["events"])
    assert audit.verdict == "clean", render_text(audit)
    assert audit.findings == []
    # Fields are still listed for the auditor, each masked.
    assert {(f.tag, f.type) for f in audit.fields} == {
        ("input", "text"), ("input", "email"), ("textarea", "textarea"), ("input", "checkbox")
    }
    assert all(f.masked and f.must_mask and f.values > 0 for f in audit.fields if f.type != "checkbox")


def test_fields_are_listed_with_identity_and_leak_state() -> None:
    audit = audit_session(load("hidden_input")["events"])
    by_name = {f.name: f for f in audit.fields}
    hidden = by_name["reset_key"]
    assert (hidden.tag, hidden.type, hidden.masked, hidden.must_mask) == ("input", "hidden", False, True)
    assert hidden.path == 'html > body > form > input[name="reset_key"]'
    assert by_name["q"].masked
    [finding] = audit.findings
    assert (finding.kind, finding.where, finding.path) == ("unmasked_input", "value", hidden.path)
    assert finding.excerpt.startswith("r") and "Q7Zp2" not in finding.excerpt


def test_password_field_findings_show_no_characters() -> None:
    audit = audit_session(load("password_unmasked_config")["events"])
    [finding] = audit.findings
    assert finding.kind == "unmasked_input" and finding.excerpt == "********"
    assert finding.count == 15  # one per keystroke, reported once


def test_url_findings_name_the_parameter() -> None:
    audit = audit_session(load("url_query")["events"])
    wheres = {(f.kind, f.where) for f in audit.findings}
    assert ("sensitive_url_param", "url:page url (email)") in wheres
    assert ("sensitive_url_param", "url:page url (token)") in wheres
    assert ("sensitive_url_param", "url:href (token)") in wheres


def test_policy_decides_what_must_be_masked() -> None:
    # A project that only masks passwords: typed text is not a finding, PII still is.
    lenient = MaskingPolicy(mask_all_inputs=False, mask_attributes=())
    assert audit_session(load("textarea_initial")["events"], lenient).verdict == "clean"
    assert audit_session(load("title_aria")["events"], lenient).verdict == "clean"
    assert set(audit_session(load("placeholder_email")["events"], lenient).counts()) == {"email"}
    assert set(audit_session(load("password_unmasked_config")["events"], lenient).counts()) == {"unmasked_input"}


def test_audit_reads_window_pairs_with_separate_mirrors() -> None:
    a, b = load("hidden_input")["events"], load("well_masked")["events"]
    audit = audit_session([("w1", e) for e in a] + [("w2", e) for e in b])
    assert audit.windows == 2 and audit.events == len(a) + len(b)
    assert {f.window_id for f in audit.findings} == {"w1"}


def test_audit_does_not_change_events() -> None:
    fixture = load("text_pii")
    before = json.dumps(fixture["events"])
    audit_session(fixture["events"])
    assert json.dumps(fixture["events"]) == before


def test_report_is_json_and_project_summary_aggregates() -> None:
    audits = [audit_session(load(n)["events"], session_id=n) for n in ("hidden_input", "text_pii", "well_masked")]
    for a in audits:
        json.dumps(a.to_dict())
    summary = summarize_project(audits)
    assert (summary.sessions, summary.clean, summary.leaked) == (3, 1, 2)
    assert summary.sessions_by_kind["email"] == 1 and summary.sessions_by_kind["unmasked_input"] == 1
    assert summary.leaking_fields[0]["name"] == "reset_key"
    assert json.loads(json.dumps(summary.to_dict()))["leaked"] == 2
    text = render_text(summary)
    assert "3 sessions, 1 clean, 2 leaked" in text


def test_text_report_is_readable() -> None:
    text = render_text(audit_session(load("radio_checkbox")["events"], session_id="s1"))
    assert text.startswith("s1: LEAKED")
    assert "input#dx-b [radio]: UNMASKED" in text
    assert "unmasked_input at input#share (input)" in text
