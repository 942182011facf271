"""A project's masking policy, set through ``replay projects policy`` and the API, applies to the next upload."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harness import ROOT, ThreadedReplay, fetch_events, post_batch
from harness import TestProject as Project  # (renamed: pytest would try to collect a Test* class)
from leak_vectors import load
from replay.catalog.sqlite import PROJECT_CACHE_SECONDS
from replay.privacy import MaskingPolicy

DEFAULTS = MaskingPolicy().to_dict()
SECRET_FIXTURE = "textarea_initial"  # typed into a textarea: masked by the default policy only
SECRET = load(SECRET_FIXTURE)["secrets"][0]


def policy_cli(data: Path, project_id: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replay", "projects", "policy", project_id, *args,
                           "--data", str(data)], capture_output=True, text=True, cwd=ROOT, timeout=60)


def policy_url(server: ThreadedReplay, project: Project) -> str:
    return f"{server.url}/api/projects/{project.id}/policy"


def auth(project: Project) -> dict[str, str]:
    return {"Authorization": f"Bearer {project.api_key}"}


def stored_secret(server: ThreadedReplay, project: Project, sid: str) -> bool:
    """Upload the fixture as session ``sid``; whether its secret came back readable."""
    r = post_batch(server.url, project.token, sid, load(SECRET_FIXTURE)["events"], batch_id="b1")
    assert r.status_code == 200, r.text
    return SECRET in json.dumps(fetch_events(server.url, project, sid))


# -- the command line ----------------------------------------------------------------------------

def test_cli_sets_fields_and_prints_the_effective_policy(server, project):
    data = server.settings.data
    out = policy_cli(data, project.id, "--json", "--set", "enforce=false", "--set", "mask_all_inputs=false",
                     "--set", "mask_input_types=password,email", "--set", "mask_text_selectors=.secret,#ssn",
                     "--set", "fixed_length_mask=true", "--set", "strip_query_params=email,token")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    expected = {"enforce": False, "mask_all_inputs": False, "mask_input_types": ["password", "email"],
                "mask_text_selectors": [".secret", "#ssn"], "fixed_length_mask": True,
                "strip_query_params": ["email", "token"]}
    assert doc["overrides"] == expected
    assert doc["policy"] == {**DEFAULTS, **expected}
    assert doc["client_settings"]["maskInputOptions"] == {"password": True, "email": True}
    # The server's API reads what the command stored.
    assert requests.get(policy_url(server, project), headers=auth(project), timeout=10).json() == doc

    shown = policy_cli(data, project.id, "--show")
    assert shown.returncode == 0
    assert any(line.split() == ["enforce", "*", "false"] for line in shown.stdout.splitlines()), shown.stdout
    [detectors] = [line for line in shown.stdout.splitlines() if line.split()[0] == "pii_detectors"]
    assert detectors.endswith(", ".join(DEFAULTS["pii_detectors"])) and "*" not in detectors  # a default


def test_cli_adds_to_and_removes_from_lists_and_resets(server, project):
    data = server.settings.data
    added = json.loads(policy_cli(data, project.id, "--json", "--set", "mask_attributes+=data-*").stdout)
    assert added["policy"]["mask_attributes"] == DEFAULTS["mask_attributes"] + ["data-*"]
    removed = json.loads(policy_cli(data, project.id, "--json", "--set", "strip_query_params-=code,sig").stdout)
    assert removed["policy"]["strip_query_params"] == [p for p in DEFAULTS["strip_query_params"] if p not in ("code", "sig")]
    assert set(removed["overrides"]) == {"mask_attributes", "strip_query_params"}  # the first change is kept
    reset = json.loads(policy_cli(data, project.id, "--json", "--reset").stdout)
    assert reset["overrides"] == {} and reset["policy"] == DEFAULTS


def test_cli_takes_a_policy_file_including_its_own_json_output(server, project, tmp_path):
    data = server.settings.data
    (tmp_path / "p.json").write_text(json.dumps({"enforce": False, "block_selectors": [".card-form"]}))
    out = policy_cli(data, project.id, "--json", "--file", str(tmp_path / "p.json"))
    assert json.loads(out.stdout)["overrides"] == {"enforce": False, "block_selectors": [".card-form"]}
    (tmp_path / "doc.json").write_text(out.stdout)  # what --json printed is accepted back
    again = policy_cli(data, project.id, "--json", "--reset", "--file", str(tmp_path / "doc.json"))
    assert json.loads(again.stdout)["policy"]["block_selectors"] == [".card-form"]


@pytest.mark.parametrize("args, message", [
    (["--set", "mask_input_types=password,bogus"], "unknown mask_input_types ['bogus']"),
    (["--set", "enforce=maybe"], "enforce must be true or false"),
    (["--set", "mask_all_the_things=true"], "unknown policy field 'mask_all_the_things'"),
    (["--set", "mask_text_selectors=div[x"], "invalid policy"),
    (["--set", "enforce"], "KEY=VALUE"),
    (["--file", "/nonexistent/policy.json"], "cannot read"),
])
def test_cli_refuses_an_invalid_policy_with_status_2_and_keeps_the_stored_one(server, project, args, message):
    data = server.settings.data
    assert policy_cli(data, project.id, "--set", "enforce=false").returncode == 0
    out = policy_cli(data, project.id, *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stdout == ""
    stored = requests.get(policy_url(server, project), headers=auth(project), timeout=10).json()
    assert stored["overrides"] == {"enforce": False}


def test_cli_names_an_unknown_project(server):
    out = policy_cli(server.settings.data, "prj-nope", "--show")
    assert out.returncode == 2 and "no project prj-nope" in out.stderr


# -- the API -------------------------------------------------------------------------------------

def test_api_needs_that_projects_key(server, project):
    other = server.create_project("other")
    url = policy_url(server, project)
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.put(url, json={}, headers={"Authorization": "Bearer rpk_wrong"}, timeout=10).status_code == 401
    for method in (requests.get, requests.put):
        r = method(url, json={"enforce": False}, headers=auth(other), timeout=10)
        assert r.status_code == 403 and r.json()["error"] == "wrong_project"
    # An ingest token never reads or writes a policy.
    assert requests.put(url, json={}, headers={"Authorization": f"Bearer {project.token}"}, timeout=10).status_code == 401
    assert requests.get(url, headers=auth(project), timeout=10).json()["overrides"] == {}


@pytest.mark.parametrize("body, detail", [
    ({"mask_input_types": ["nope"]}, "unknown mask_input_types"),
    ({"enforce": "false"}, "enforce must be true or false"),
    ({"mask_al_inputs": False}, "unknown policy fields ['mask_al_inputs']"),
    ({"block_selectors": "div"}, "block_selectors must be a list of strings"),
    ([1, 2], "a policy must be a JSON object"),
    ("{not json", "the body must be a JSON policy object"),
])
def test_api_refuses_an_invalid_policy_with_400_and_keeps_the_stored_one(server, project, body, detail):
    url = policy_url(server, project)
    assert requests.put(url, json={"enforce": False}, headers=auth(project), timeout=10).status_code == 200
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.put(url, data=data, headers={**auth(project), "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_policy" and detail in r.json()["detail"]
    assert requests.get(url, headers=auth(project), timeout=10).json()["overrides"] == {"enforce": False}


def test_api_put_replaces_and_a_get_answer_can_be_put_back(server, project):
    url = policy_url(server, project)
    r = requests.put(url, json={"enforce": False, "mask_input_types": ["Password", " email "]}, headers=auth(project), timeout=10)
    assert r.status_code == 200
    assert r.json()["overrides"] == {"enforce": False, "mask_input_types": ["password", "email"]}
    r = requests.put(url, json={"fixed_length_mask": False}, headers=auth(project), timeout=10)
    assert r.json()["overrides"] == {"fixed_length_mask": False}  # replaced, not merged
    got = requests.get(url, headers=auth(project), timeout=10).json()
    again = requests.put(url, json=got, headers=auth(project), timeout=10).json()
    assert again["policy"] == got["policy"]


# -- a change applies to the next upload ----------------------------------------------------------

def test_a_policy_put_over_the_api_applies_to_the_next_upload(server, project):
    url = policy_url(server, project)
    assert not stored_secret(server, project, "before")  # the default policy masks it
    assert requests.put(url, json={"enforce": False}, headers=auth(project), timeout=10).status_code == 200
    assert stored_secret(server, project, "off")
    assert requests.put(url, json={}, headers=auth(project), timeout=10).status_code == 200
    assert not stored_secret(server, project, "on-again")
    server.flush()  # and the same through the stored blocks
    assert not stored_secret(server, project, "before") and stored_secret(server, project, "off")


def test_a_policy_set_from_the_cli_reaches_the_running_server(server, project):
    assert not stored_secret(server, project, "cached")  # the server has the project (and policy) cached now
    assert policy_cli(server.settings.data, project.id, "--set", "enforce=false").returncode == 0
    changed = time.monotonic()
    n = 0
    while not stored_secret(server, project, f"try-{n}"):
        n += 1
        assert time.monotonic() - changed < PROJECT_CACHE_SECONDS + 5, "the change never reached the server"
        time.sleep(0.2)
