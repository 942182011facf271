"""The privacy audit over HTTP: the session audit API's read rules, and the auditor's pages.

Recorded strings are untrusted and end up in the audit (field names, ids, CSS paths, excerpts):
the pages must show them as text, and never repeat a secret.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import requests

from harness import post_batch
from leak_vectors import load
from signin import sign_in_session

HOSTILE_NAME = '"><img src=x onerror="alert(1)">'
HOSTILE_EMAIL = "mallory.hostile@example.com"


def hostile_recording(ts: int = 1_700_000_000_000) -> list[dict]:
    """A form whose field name is markup and whose value is an e-mail address, typed unmasked."""
    field = {"type": 2, "tagName": "input", "id": 5, "childNodes": [],
             "attributes": {"name": HOSTILE_NAME, "type": "email", "value": HOSTILE_EMAIL}}
    body = {"type": 2, "tagName": "body", "id": 4, "attributes": {}, "childNodes": [field]}
    html = {"type": 2, "tagName": "html", "id": 3, "attributes": {}, "childNodes": [
        {"type": 2, "tagName": "head", "id": 6, "attributes": {}, "childNodes": []}, body]}
    doc = {"type": 0, "id": 1, "childNodes": [{"type": 1, "name": "html", "publicId": "", "systemId": "", "id": 2}, html]}
    return [{"type": 4, "timestamp": ts, "data": {"href": "https://shop.example/", "width": 800, "height": 600}},
            {"type": 2, "timestamp": ts + 1, "data": {"node": doc, "initialOffset": {"top": 0, "left": 0}}},
            {"type": 3, "timestamp": ts + 500, "data": {"source": 5, "id": 5, "text": HOSTILE_EMAIL, "isChecked": False}}]


class Page(HTMLParser):
    """Tables (by class) as rows of cell texts, the links, and no markup that came from a recording."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        assert tag != "img", f"an <img> element made it into the page: {attrs}"
        assert not (tag == "script" and not a.get("src") and a.get("type") != "application/json"), "inline script"
        if tag == "table":
            self._table = a.get("class", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, cls: str) -> list[list[str]]:
        """Body rows (the header row dropped) of the table with class ``cls``."""
        return next(rows[1:] for c, rows in self.tables.items() if cls in c.split())


@pytest.fixture
def audited(make_server):
    """A project storing recordings as received: a hostile one, a leaky fixture, a careful one."""
    server = make_server()
    project = server.create_project("audit")
    r = requests.put(f"{server.url}/api/projects/{project.id}/policy", json={"enforce": False},
                     headers={"Authorization": f"Bearer {project.api_key}"}, timeout=10)
    assert r.status_code == 200
    for sid, events in (("hostile", hostile_recording()), ("hidden", load("hidden_input")["events"]),
                        ("careful", load("well_masked")["events"])):
        assert post_batch(server.url, project.token, sid, events, batch_id="b1",
                          distinct_id=f"{sid}@users").status_code == 200
    server.flush()
    return server, project


# -- the API ---------------------------------------------------------------------------------------

def test_session_audit_api_reads_like_the_events_endpoint(audited):
    server, project = audited
    url = f"{server.url}/api/projects/{project.id}/sessions/hidden/audit"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": f"Bearer {project.token}"}, timeout=10).status_code == 401
    other = server.create_project("other")
    assert requests.get(url, headers={"Authorization": f"Bearer {other.api_key}"}, timeout=10).status_code == 403
    r = requests.get(url, headers={"Authorization": f"Bearer {project.api_key}"}, timeout=30)
    assert r.status_code == 200 and r.json()["verdict"] == "leaked" and r.json()["project_id"] == project.id
    # A share link for this session reads its audit, and only this session's.
    link = requests.post(f"{server.url}/api/projects/{project.id}/sessions/hidden/share",
                         headers={"Authorization": f"Bearer {project.api_key}"}, timeout=10).json()
    assert requests.get(url, params={"share": link["token"]}, timeout=30).json()["verdict"] == "leaked"
    careful = f"{server.url}/api/projects/{project.id}/sessions/careful/audit"
    assert requests.get(careful, params={"share": link["token"]}, timeout=10).status_code == 403
    missing = f"{server.url}/api/projects/{project.id}/sessions/nope/audit"
    r = requests.get(missing, headers={"Authorization": f"Bearer {project.api_key}"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "no_such_session"


def test_session_audit_api_reports_a_hostile_recording_without_repeating_it(audited):
    server, project = audited
    r = requests.get(f"{server.url}/api/projects/{project.id}/sessions/hostile/audit",
                     headers={"Authorization": f"Bearer {project.api_key}"}, timeout=30)
    audit = r.json()
    assert {f["kind"] for f in audit["findings"]} == {"unmasked_input", "email"}
    [field] = audit["fields"]
    assert (field["tag"], field["type"], field["name"], field["masked"]) == ("input", "email", HOSTILE_NAME, False)
    assert HOSTILE_EMAIL not in r.text


# -- the pages -------------------------------------------------------------------------------------

def test_session_audit_page_shows_verdict_fields_and_findings_as_text(audited):
    server, project = audited
    browser = sign_in_session(server.url, project.api_key)
    r = browser.get(f"{server.url}/projects/{project.id}/sessions/hostile/audit", timeout=30)
    assert r.status_code == 200
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    page = Page(r.text)  # raises on an <img> or inline script from the recording
    assert re.search(r'id="verdict" class="audit-verdict verdict-leaked"', r.text)
    [field] = page.rows("audit-fields")
    assert field[:4] == [f'html > body > input[name="{HOSTILE_NAME}"]', "input", "email", HOSTILE_NAME]
    assert field[6:8] == ["mask", "UNMASKED"]
    findings = page.rows("audit-findings")
    assert {(row[0], row[1], row[2]) for row in findings} == {
        ("high", kind, where) for kind in ("unmasked_input", "email") for where in ("value", "input")}
    assert all(row[3] == field[0] for row in findings)
    assert {row[4] for row in findings if row[1] == "email"} == {"m********@e******.com"}  # masked excerpt
    assert HOSTILE_EMAIL not in r.text
    assert f"/projects/{project.id}/sessions/hostile" in page.links  # back to the player
    assert f"/projects/{project.id}/sessions/hostile?t=500" in page.links  # the typed value, in the player


def test_a_careful_session_audits_clean_on_its_page_with_its_fields_listed(audited):
    server, project = audited
    browser = sign_in_session(server.url, project.api_key)
    r = browser.get(f"{server.url}/projects/{project.id}/sessions/careful/audit", timeout=30)
    page = Page(r.text)
    assert 'class="audit-verdict verdict-clean"' in r.text
    fields = page.rows("audit-fields")
    assert {(row[1], row[2]) for row in fields} == {("input", "text"), ("input", "email"), ("textarea", "textarea"),
                                                    ("input", "checkbox")}
    assert all(row[7] == "masked" for row in fields)
    assert page.rows("audit-findings") == [["Nothing leaked."]]


def test_audit_pages_are_linked_from_the_player_and_the_session_list(audited):
    server, project = audited
    browser = sign_in_session(server.url, project.api_key)
    player = Page(browser.get(f"{server.url}/projects/{project.id}/sessions/hidden", timeout=10).text)
    assert f"/projects/{project.id}/sessions/hidden/audit" in player.links
    listing = Page(browser.get(f"{server.url}/projects/{project.id}/sessions", timeout=10).text)
    for sid in ("hostile", "hidden", "careful"):
        assert f"/projects/{project.id}/sessions/{sid}/audit" in listing.links
    assert f"/projects/{project.id}/audit" in listing.links


def test_project_audit_page_summarises_recent_sessions(audited):
    server, project = audited
    browser = sign_in_session(server.url, project.api_key)
    r = browser.get(f"{server.url}/projects/{project.id}/audit", timeout=60)
    assert r.status_code == 200
    page = Page(r.text)
    verdicts = {row[0].split()[0]: row[2] for row in page.rows("audit-sessions")}
    assert verdicts == {"hostile@users": "leaked", "hidden@users": "leaked", "careful@users": "clean"}
    assert "3 of 3 matching sessions: 1 clean, 2 leaked" in " ".join(r.text.split())
    kinds = {row[0]: row[1:] for row in page.rows("audit-kinds")}
    assert kinds["unmasked_input"][1] == "2" and kinds["email"][1] == "1"  # sessions per kind
    leaking = [row[0] for row in page.rows("audit-leaking-fields")]
    assert 'html > body > form > input[name="reset_key"]' in leaking
    # Filters of the session list apply; the number of sessions audited per page is bounded.
    one = Page(browser.get(f"{server.url}/projects/{project.id}/audit", params={"distinct_id": "careful@users"},
                           timeout=30).text)
    assert [row[2] for row in one.rows("audit-sessions")] == ["clean"]
    too_many = browser.get(f"{server.url}/projects/{project.id}/audit", params={"limit": "5000"}, timeout=60)
    assert too_many.status_code == 200 and "at most 100 sessions are audited on this page; `replay audit` audits any number" in too_many.text


def test_audit_pages_send_readers_without_a_session_to_sign_in(audited):
    server, project = audited
    for path in (f"/projects/{project.id}/sessions/hidden/audit", f"/projects/{project.id}/audit"):
        r = requests.get(server.url + path, allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"].startswith("/signin?next=")
    # Signed in to another project: its sessions' audits are not readable either.
    other = server.create_project("other")
    browser = sign_in_session(server.url, other.api_key)
    r = browser.get(f"{server.url}/projects/{project.id}/sessions/hidden/audit", allow_redirects=False, timeout=10)
    assert r.status_code == 303
    r = browser.get(f"{server.url}/projects/{project.id}/audit", allow_redirects=False, timeout=10)
    assert r.status_code == 303
