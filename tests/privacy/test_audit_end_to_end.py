"""The privacy audit and enforcement end to end, on the 14 recordings made by real rrweb in Chromium.

Each fixture is uploaded over HTTP to a real server; the audit is the real ``replay audit`` command
(a subprocess reading the same data directory) and the real API endpoint.

- Every leak is reported: with enforcement OFF at ingest, each leak vector's session audits as
  leaked with exactly the kinds the fixture holds (tests/leak_vectors.py), exit status 1.
- No false alarms: the careful site's recording audits clean, exit status 0.
- Enforcement removes them: with enforcement ON (the default policy), no secret string is in any
  stored blob and every session audits clean.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import ROOT, ThreadedReplay, post_batch, stored_events_text
from harness import TestProject as Project  # (renamed: pytest would try to collect a Test* class)
from leak_vectors import CLEAN, ENFORCING_SETTINGS, EXPECTED, load, session_id
from replay.config import settings_from

LEAKY = sorted(EXPECTED)
ALL = LEAKY + [CLEAN]


def replay_cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replay", *args, "--data", str(data)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def audit_cli(data: Path, project: Project, *args: str) -> tuple[int, dict[str, Any], str]:
    """``replay audit --json``: exit status, the one JSON document on stdout, stderr."""
    out = replay_cli(data, "audit", "--project", project.id, "--json", *args)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout), out.stderr


def audit_api(server: ThreadedReplay, project: Project, sid: str) -> dict[str, Any]:
    r = requests.get(f"{server.url}/api/projects/{project.id}/sessions/{sid}/audit",
                     headers={"Authorization": f"Bearer {project.api_key}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def put_policy(server: ThreadedReplay, project: Project, policy: dict[str, Any]) -> None:
    r = requests.put(f"{server.url}/api/projects/{project.id}/policy", json=policy,
                     headers={"Authorization": f"Bearer {project.api_key}"}, timeout=10)
    assert r.status_code == 200, r.text


def upload(server: ThreadedReplay, project: Project, name: str, sid: str | None = None) -> None:
    r = post_batch(server.url, project.token, sid or session_id(name), load(name)["events"], batch_id="b1")
    assert r.status_code == 200, r.text


def start(path: Path) -> ThreadedReplay:
    return ThreadedReplay(settings_from(environ={}, data=path, flush_interval=3600.0, node_id="test")).start()


@pytest.fixture(scope="module")
def careless(tmp_path_factory):
    """A server whose project stores recordings as received (enforcement off), every fixture uploaded."""
    data = tmp_path_factory.mktemp("careless") / "data"
    server = start(data)
    project = server.create_project("careless")
    put_policy(server, project, {"enforce": False})
    for name in ALL:
        upload(server, project, name)
    server.flush()
    yield server, project, data
    server.stop()


@pytest.fixture(scope="module")
def enforced(tmp_path_factory):
    """A server enforcing the default policy (data_attrs in a project that also masks data-*)."""
    data = tmp_path_factory.mktemp("enforced") / "data"
    server = start(data)
    default = server.create_project("enforced")
    extra = {}
    for name, settings in ENFORCING_SETTINGS.items():
        extra[name] = server.create_project(name)
        args = [a for s in settings for a in ("--set", s)]
        out = replay_cli(data, "projects", "policy", extra[name].id, *args)
        assert out.returncode == 0, out.stderr
    for name in ALL:
        upload(server, extra.get(name, default), name)
    server.flush()
    yield server, default, extra, data
    server.stop()


# -- every leak is reported ------------------------------------------------------------------------

@pytest.mark.parametrize("name", LEAKY)
def test_audit_command_reports_every_leak_vector_stored_unenforced(careless, name):
    server, project, data = careless
    sid = session_id(name)
    status, report, _ = audit_cli(data, project, "--session", sid)
    assert status == 1
    assert report["verdict"] == "leaked" and report["project"] == project.id
    [session] = report["sessions"]
    assert session["session_id"] == sid and session["verdict"] == "leaked"
    assert {f["kind"] for f in report["findings"]} == EXPECTED[name], report["findings"]
    assert all(f["session_id"] == sid and f["where"] and "excerpt" in f for f in report["findings"])
    for secret in load(name)["secrets"]:
        assert secret not in json.dumps(report)  # a report never repeats a secret

    via_api = audit_api(server, project, sid)
    assert via_api["verdict"] == "leaked"
    assert set(via_api["counts"]) == EXPECTED[name]
    assert via_api["counts"] == session["counts"]


def test_careful_recording_audits_clean_with_exit_status_0(careless):
    server, project, data = careless
    status, report, _ = audit_cli(data, project, "--session", session_id(CLEAN))
    assert status == 0
    assert report["verdict"] == "clean" and report["findings"] == []
    [session] = report["sessions"]
    assert session["verdict"] == "clean" and session["fields"], "the fields are still listed"
    assert audit_api(server, project, session_id(CLEAN))["verdict"] == "clean"


def test_project_audit_prints_one_json_document_and_progress_on_stderr(careless):
    server, project, data = careless
    status, report, stderr = audit_cli(data, project)  # every session of the project
    assert status == 1
    assert sorted(s["session_id"] for s in report["sessions"]) == sorted(session_id(n) for n in ALL)
    summary = report["summary"]
    assert (summary["sessions"], summary["clean"], summary["leaked"]) == (len(ALL), 1, len(LEAKY))
    by_session: dict[str, set[str]] = {}
    for f in report["findings"]:
        by_session.setdefault(f["session_id"], set()).add(f["kind"])
    assert by_session == {session_id(n): kinds for n, kinds in EXPECTED.items()}
    # The progress bar went to stderr (stdout parsed as exactly one document above).
    assert f"{len(ALL)}/{len(ALL)}" in stderr and "session" in stderr


def test_text_report_names_the_leaks_and_the_verdict(careless):
    _, project, data = careless
    out = replay_cli(data, "audit", "--project", project.id, "--session", "hidden-input")
    assert out.returncode == 1, out.stderr
    assert out.stdout.startswith("hidden-input: LEAKED")
    assert 'unmasked_input at html > body > form > input[name="reset_key"] (value)' in out.stdout
    assert "project: 1 sessions, 0 clean, 1 leaked" in out.stdout
    assert out.stdout.rstrip().endswith("verdict: LEAKED")
    assert "resetKey-Q7Zp2wX" not in out.stdout


def test_since_selects_sessions_by_time(careless):
    _, project, data = careless
    status, report, _ = audit_cli(data, project, "--since", "2999-01-01T00:00:00Z")
    assert status == 0 and report["sessions"] == [] and report["summary"]["sessions"] == 0
    status, report, _ = audit_cli(data, project, "--since", "2000-01-01", "--no-progress")
    assert status == 1 and len(report["sessions"]) == len(ALL)


@pytest.mark.parametrize("args, message", [
    (["--project", "prj-nope", "--session", "x"], "no project prj-nope"),
    (["--session", "no-such-session"], "no session no-such-session"),
    (["--since", "yesterday-ish"], "since must be"),
    (["--session", "hidden-input", "--since", "2000-01-01"], "not allowed with"),
])
def test_usage_errors_exit_with_status_2(careless, args, message):
    _, project, data = careless
    if "--project" not in args:
        args = ["--project", project.id, *args]
    out = replay_cli(data, "audit", *args)
    assert out.returncode == 2 and message in out.stderr and out.stdout == ""


def test_audit_reads_sessions_still_in_the_spool(make_server):
    server = make_server()
    project = server.create_project()
    put_policy(server, project, {"enforce": False})
    upload(server, project, "hidden_input", "unflushed")  # acknowledged, not flushed
    status, report, _ = audit_cli(server.settings.data, project, "--session", "unflushed")
    assert status == 1 and {f["kind"] for f in report["findings"]} == EXPECTED["hidden_input"]
    assert audit_api(server, project, "unflushed")["verdict"] == "leaked"


# -- enforcement removes them ----------------------------------------------------------------------

def test_enforced_sessions_keep_no_secret_in_any_stored_blob(enforced):
    _, _, _, data = enforced
    stored = stored_events_text(data / "blobs")
    assert len(json.loads(stored)) == sum(len(load(n)["events"]) for n in ALL)  # every event is there
    for name in ALL:
        for secret in load(name)["secrets"]:
            assert secret not in stored, (name, secret)


def test_enforced_sessions_audit_clean(enforced):
    server, default, extra, data = enforced
    status, report, _ = audit_cli(data, default)
    assert status == 0, report["findings"]
    assert report["verdict"] == "clean" and report["findings"] == []
    expected = sorted(session_id(n) for n in ALL if n not in extra)
    assert sorted(s["session_id"] for s in report["sessions"]) == expected
    for name in ALL:
        project = extra.get(name, default)
        if name in extra:
            status, report, _ = audit_cli(data, project, "--session", session_id(name))
            assert status == 0 and report["findings"] == []
        assert audit_api(server, project, session_id(name))["verdict"] == "clean", name


def test_audit_keeps_the_windows_of_a_session_apart(make_server):
    # Two tabs of one session: node ids are per window, so one shared mirror would mix them up.
    server = make_server()
    project = server.create_project()
    put_policy(server, project, {"enforce": False})
    for window, name in (("tab-1", "hidden_input"), ("tab-2", CLEAN)):
        r = post_batch(server.url, project.token, "two-tabs", load(name)["events"], batch_id=window, window_id=window)
        assert r.status_code == 200, r.text
    server.flush()
    status, report, _ = audit_cli(server.settings.data, project, "--session", "two-tabs")
    via_api = audit_api(server, project, "two-tabs")
    for session in (report["sessions"][0], via_api):
        assert session["windows"] == 2
        assert {f["window_id"] for f in session["findings"]} == {"tab-1"}
        assert set(session["counts"]) == EXPECTED["hidden_input"]
    assert status == 1
