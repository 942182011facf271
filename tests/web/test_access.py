"""Who may read, share, erase and write: every read and delete endpoint refuses what it must."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time

import pytest
import requests

from harness import ROOT, fetch_events, load_fixture_events, post_batch
from replay.web.cors import CORS_ROUTES

FIXTURE = load_fixture_events()


@pytest.fixture
def world(make_server):
    """Project A with sessions a1, a2 (one batch object) and project B with b1, all flushed."""
    server = make_server()
    a, b = server.create_project("a"), server.create_project("b")
    for project, session, part in ((a, "a1", FIXTURE[:100]), (a, "a2", FIXTURE[100:200]), (b, "b1", FIXTURE[200:])):
        assert post_batch(server.url, project.token, session, part, batch_id="x").status_code == 200
    server.flush()
    return server, a, b


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def endpoints(project_id, session_id):
    base = f"/api/projects/{project_id}/sessions"
    return [("GET", base), ("GET", f"{base}/{session_id}"), ("GET", f"{base}/{session_id}/events"),
            ("DELETE", f"{base}/{session_id}"), ("POST", f"{base}/{session_id}/share")]


def revoked_key(server, project):
    key, secret = server.call(server.service.catalog.create_key(project.id, "to-revoke"))
    # Through the real CLI, against the running server's data directory.
    out = subprocess.run([sys.executable, "-m", "replay", "keys", "revoke", key.id, "--data",
                          str(server.settings.data)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return secret


CREDENTIALS = ["none", "other_project_key", "ingest_token_bearer", "ingest_token_query", "revoked_key", "garbage"]


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_every_read_and_delete_endpoint_refuses_a_wrong_credential(world, credential):
    server, a, b = world
    headers, params = {}, {}
    if credential == "other_project_key":
        headers = auth(b.api_key)
    elif credential == "ingest_token_bearer":
        headers = auth(a.token)
    elif credential == "ingest_token_query":
        params = {"token": a.token}
    elif credential == "revoked_key":
        headers = auth(revoked_key(server, a))
    elif credential == "garbage":
        headers = auth("rpk_" + "x" * 43)
    before = fetch_events(server.url, a, "a1")
    for method, path in endpoints(a.id, "a1"):
        r = requests.request(method, server.url + path, headers=headers, params=params, timeout=10)
        expected = {403} if credential == "other_project_key" else {401}
        if method != "GET" and credential in ("none", "ingest_token_query"):
            expected = {403}  # no Bearer key on a state-changing request: the CSRF check refuses it first
        assert r.status_code in expected, (method, path, r.status_code, r.text)
        assert r.json()["error"] and "Access-Control-Allow-Origin" not in r.headers
    # Nothing was erased or changed by the refused requests.
    assert fetch_events(server.url, a, "a1") == before and len(before) == 100


def test_the_right_key_reads_and_an_ingest_token_only_writes(world):
    server, a, _b = world
    listed = requests.get(f"{server.url}/api/projects/{a.id}/sessions", headers=auth(a.api_key)).json()
    assert sorted(s["session_id"] for s in listed["sessions"]) == ["a1", "a2"]
    assert requests.get(f"{server.url}/api/projects/{a.id}/sessions/a1", headers=auth(a.api_key)).status_code == 200
    # The same token that cannot read can write.
    assert post_batch(server.url, a.token, "a3", FIXTURE[:5], batch_id="y").status_code == 200


def test_a_key_of_another_project_cannot_read_even_a_session_id_its_project_also_has(make_server):
    server = make_server()
    a, b = server.create_project("a"), server.create_project("b")
    post_batch(server.url, a.token, "same", FIXTURE[:10], batch_id="1")
    post_batch(server.url, b.token, "same", FIXTURE[10:30], batch_id="1")
    server.flush()
    assert len(fetch_events(server.url, a, "same")) == 10 and len(fetch_events(server.url, b, "same")) == 20
    r = requests.get(f"{server.url}/api/projects/{a.id}/sessions/same/events", headers=auth(b.api_key))
    assert r.status_code == 403


def mint(server, project, session, **body):
    r = requests.post(f"{server.url}/api/projects/{project.id}/sessions/{session}/share",
                      headers=auth(project.api_key), json=body, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def test_share_link_reads_exactly_one_session_and_nothing_else(world):
    server, a, b = world
    link = mint(server, a, "a1", expires_in=600, t=1234)
    assert link["url"].endswith(link["path"]) and link["path"] == f"/share/{link['token']}" and link["t"] == 1234
    share = {"share": link["token"]}
    events = requests.get(f"{server.url}/api/projects/{a.id}/sessions/a1/events", params=share)
    assert events.status_code == 200 and events.json() == fetch_events(server.url, a, "a1")
    assert requests.get(f"{server.url}/api/projects/{a.id}/sessions/a1", params=share).status_code == 200
    # Not session a2 of the same project, not project B, not the list, not erasure, not minting more links.
    assert requests.get(f"{server.url}/api/projects/{a.id}/sessions/a2/events", params=share).status_code == 403
    assert requests.get(f"{server.url}/api/projects/{b.id}/sessions/b1/events", params=share).status_code == 403
    assert requests.get(f"{server.url}/api/projects/{a.id}/sessions", params=share).status_code == 401
    assert requests.delete(f"{server.url}/api/projects/{a.id}/sessions/a1", params=share).status_code in (401, 403)
    assert requests.post(f"{server.url}/api/projects/{a.id}/sessions/a1/share", params=share).status_code in (401, 403)
    assert len(fetch_events(server.url, a, "a1")) == 100


def test_opening_a_share_link_grants_that_session_by_cookie(world):
    server, a, _b = world
    link = mint(server, a, "a1", expires_in=600)
    browser = requests.Session()
    opened = browser.get(server.url + link["path"], allow_redirects=False)
    assert opened.status_code in (200, 303), opened.text
    if opened.status_code == 303:  # the UI's player page
        assert opened.headers["Location"].startswith(f"/projects/{a.id}/sessions/a1")
    else:  # no player in this build: it says where the JSON is, with the token
        assert requests.get(server.url + opened.json()["events"]).json() == fetch_events(server.url, a, "a1")
    assert opened.headers["Cache-Control"] == "no-store" and opened.headers["Referrer-Policy"] == "no-referrer"
    assert browser.get(f"{server.url}/api/projects/{a.id}/sessions/a1/events").json() == fetch_events(server.url, a, "a1")
    assert browser.get(f"{server.url}/api/projects/{a.id}/sessions/a2/events").status_code == 401


def _tampered(token: str) -> list[str]:
    import base64
    body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    other = base64.urlsafe_b64encode(json.dumps({**payload, "s": "a2"}, separators=(",", ":")).encode()).rstrip(b"=").decode()
    later = base64.urlsafe_b64encode(json.dumps({**payload, "e": payload["e"] + 10**6}, separators=(",", ":")).encode()).rstrip(b"=").decode()
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    return [f"{other}.{sig}", f"{later}.{sig}", f"{body}.{flipped}", body, f"{body}.", "", "x" * 5000, f"{body}.{sig}.{sig}"]


def test_tampered_or_expired_share_links_are_refused(world):
    server, a, _b = world
    link = mint(server, a, "a1", expires_in=600)
    for bad in _tampered(link["token"]):
        for path in (f"/api/projects/{a.id}/sessions/a1/events", f"/api/projects/{a.id}/sessions/a2/events"):
            r = requests.get(server.url + path, params={"share": bad})
            assert r.status_code == 401 and r.json()["error"] in ("invalid_share_link", "missing_api_key"), (bad, r.text)
        if bad:
            assert requests.get(f"{server.url}/share/{bad}", allow_redirects=False).status_code in (401, 404)
    assert requests.get(f"{server.url}/api/projects/{a.id}/sessions/a1/events",
                        params={"share": link["token"]}).status_code == 200
    link = mint(server, a, "a1", expires_in=1)
    assert requests.get(f"{server.url}/api/projects/{a.id}/sessions/a1/events",
                        params={"share": link["token"]}).status_code == 200
    time.sleep(2.1)
    r = requests.get(f"{server.url}/api/projects/{a.id}/sessions/a1/events", params={"share": link["token"]})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert requests.get(server.url + link["path"], allow_redirects=False).status_code == 401


def test_share_link_options_are_validated(world):
    server, a, _b = world
    url = f"{server.url}/api/projects/{a.id}/sessions/a1/share"
    for body in ({"expires_in": 0}, {"expires_in": 10**9}, {"expires_in": "soon"}, {"t": -1}, {"expires_in": True}):
        assert requests.post(url, headers=auth(a.api_key), json=body).status_code == 400, body
    assert requests.post(url, headers=auth(a.api_key), data=b"[1]",
                         params={}, timeout=10).status_code in (201, 400)
    assert requests.post(f"{server.url}/api/projects/{a.id}/sessions/nope/share", headers=auth(a.api_key)).status_code == 404
    assert requests.post(url + "?expires_in=60", headers=auth(a.api_key)).status_code == 201


def test_share_secret_is_kept_0600_in_the_data_dir_and_survives_restart(make_server, tmp_path):
    server = make_server(data=tmp_path / "d")
    project = server.create_project()
    post_batch(server.url, project.token, "s", FIXTURE[:10], batch_id="1")
    link = mint(server, project, "s", expires_in=600)
    secret = tmp_path / "d" / "secret.key"
    assert secret.stat().st_mode & 0o777 == 0o600
    server.stop()
    again = make_server(data=tmp_path / "d")
    r = requests.get(f"{again.url}/api/projects/{project.id}/sessions/s/events", params={"share": link["token"]})
    assert r.status_code == 200 and len(r.json()) == 10
    other = make_server(data=tmp_path / "other")  # another secret: the same token means nothing there
    assert requests.get(f"{other.url}/api/projects/{project.id}/sessions/s/events",
                        params={"share": link["token"]}).status_code == 401


def test_erasure_removes_a_session_for_good_and_leaves_its_neighbours(world):
    server, a, _b = world
    url = f"{server.url}/api/projects/{a.id}/sessions/a1"
    link = mint(server, a, "a1", expires_in=600)
    neighbour = fetch_events(server.url, a, "a2")
    r = requests.delete(url, headers=auth(a.api_key))
    assert r.status_code == 200 and r.json()["status"] == "erased"
    assert requests.get(url, headers=auth(a.api_key)).status_code == 404
    assert requests.get(url + "/events", headers=auth(a.api_key)).status_code == 404
    assert requests.get(url + "/events", params={"share": link["token"]}).status_code == 404
    assert requests.delete(url, headers=auth(a.api_key)).status_code == 404
    listed = requests.get(f"{server.url}/api/projects/{a.id}/sessions", headers=auth(a.api_key)).json()["sessions"]
    assert [s["session_id"] for s in listed] == ["a2"]
    assert fetch_events(server.url, a, "a2") == neighbour and len(neighbour) == 100
    # A browser still recording it (or a retry) is acknowledged but never kept.
    assert post_batch(server.url, a.token, "a1", FIXTURE[200:210], batch_id="late").status_code == 200
    assert requests.get(url + "/events", headers=auth(a.api_key)).status_code == 404
    server.flush()
    assert requests.get(url + "/events", headers=auth(a.api_key)).status_code == 404


def test_erased_session_stays_erased_after_reindex(make_server, tmp_path):
    server = make_server(data=tmp_path / "d")
    a = server.create_project()
    post_batch(server.url, a.token, "gone", FIXTURE[:50], batch_id="1")
    post_batch(server.url, a.token, "kept", FIXTURE[50:90], batch_id="1")
    server.flush()
    post_batch(server.url, a.token, "gone", FIXTURE[90:120], batch_id="2")  # still in the spool when erased
    assert requests.delete(f"{server.url}/api/projects/{a.id}/sessions/gone", headers=auth(a.api_key)).status_code == 200
    server.flush()
    server.stop()
    out = subprocess.run([sys.executable, "-m", "replay", "reindex", "--data", str(tmp_path / "d")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    again = make_server(data=tmp_path / "d")
    assert requests.get(f"{again.url}/api/projects/{a.id}/sessions/gone/events", headers=auth(a.api_key)).status_code == 404
    assert len(fetch_events(again.url, a, "kept")) == 40
    listed = requests.get(f"{again.url}/api/projects/{a.id}/sessions", headers=auth(a.api_key)).json()["sessions"]
    assert [s["session_id"] for s in listed] == ["kept"]


def test_erasure_deletes_objects_that_held_only_that_session(make_server, tmp_path):
    server = make_server(data=tmp_path / "d")
    a = server.create_project()
    post_batch(server.url, a.token, "alone", FIXTURE[:50], batch_id="1")
    server.flush()
    blobs = [p for p in (tmp_path / "d" / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1
    assert requests.delete(f"{server.url}/api/projects/{a.id}/sessions/alone", headers=auth(a.api_key)).status_code == 200
    assert not blobs[0].exists()


def test_ingest_is_rate_limited_per_token_with_retry_after(make_server):
    server = make_server(rate_limit=2.0, rate_burst=3)
    a, b = server.create_project("a"), server.create_project("b")
    codes = [post_batch(server.url, a.token, "s", FIXTURE[:2], batch_id=f"b{i}").status_code for i in range(4)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    r = post_batch(server.url, a.token, "s", FIXTURE[:2], batch_id="b9")
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 2
    assert r.headers.get("Access-Control-Allow-Origin") == "*"  # the browser can read why
    assert post_batch(server.url, b.token, "s", FIXTURE[:2], batch_id="b0").status_code == 200  # others unaffected
    time.sleep(wait)
    assert post_batch(server.url, a.token, "s", FIXTURE[:2], batch_id="b9").status_code == 200
    # Refused batches were not kept; the accepted ones were.
    assert {e["timestamp"] for e in fetch_events(server.url, a, "s")} == {e["timestamp"] for e in FIXTURE[:2]}


def test_rate_limit_zero_disables_it(make_server):
    server = make_server(rate_limit=0, rate_burst=1)
    p = server.create_project()
    assert all(post_batch(server.url, p.token, "s", FIXTURE[:1], batch_id=f"{i}").status_code == 200 for i in range(10))


TRAVERSALS = ["..", "%2e%2e", "%2E%2E%2F%2E%2E", "..%2F..%2Fetc%2Fpasswd", "a%2Fb", "a%5Cb", "%00", "a%00b",
              "x" * 71, "%C3%A9t%C3%A9", "a.b", "~root", "%252e%252e", "<script>", "a%20b"]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_ids_that_try_path_traversal_are_refused_without_touching_the_filesystem(world, tmp_path, bad):
    server, a, _b = world
    before = sorted(p for p in tmp_path.rglob("*"))
    host, port = server.url.removeprefix("http://").split(":")
    for method, path in endpoints(a.id, bad)[1:] + endpoints(bad, "a1"):
        # http.client sends the path byte for byte (requests would resolve the dot segments itself).
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request(method, path, headers=auth(a.api_key))
        r = conn.getresponse()
        body = r.read()
        conn.close()
        assert r.status in (400, 403, 404, 405), (method, path, r.status, body)
        assert r.getheader("Content-Type").startswith("application/json") and json.loads(body)["error"]
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert requests.get(f"{server.url}/healthz").status_code == 200


def test_read_and_delete_endpoints_send_no_cors_headers(world):
    server, a, _b = world
    origin = {"Origin": "https://evil.example", **auth(a.api_key)}
    for method, path in endpoints(a.id, "a2")[:3] + [("GET", "/metrics"), ("GET", "/openapi.json")]:
        r = requests.request(method, server.url + path, headers=origin)
        assert r.status_code == 200 and not any(h.lower().startswith("access-control-") for h in r.headers), path
        pre = requests.options(server.url + path, headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "DELETE"})
        assert "Access-Control-Allow-Origin" not in pre.headers, path


def state_changing_routes(server):
    app = server._runner.app
    ingest = set(app.get(CORS_ROUTES, {}))
    out = []
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method in ("POST", "PUT", "PATCH", "DELETE") and canonical not in ingest:
            out.append((route.method, canonical))
    return out


def test_every_state_changing_route_but_ingest_needs_a_bearer_key_or_csrf_proof(world):
    server, a, _b = world
    routes = state_changing_routes(server)
    assert ("DELETE", "/api/projects/{project}/sessions/{session}") in routes
    for method, pattern in routes:
        path = pattern.replace("{project}", a.id).replace("{session}", "a1").replace("{token}", "t")
        path = path.replace("{tail:.*}", "x")
        for headers in ({}, {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "null"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
            r = requests.request(method, server.url + path, headers=headers, data={"csrf_token": "forged.sig"},
                                 cookies={"replay_csrf": "forged"}, allow_redirects=False)
            assert r.status_code == 403 and r.json()["error"] == "csrf_failed", (method, path, headers, r.text)
    # A Bearer key passes the CSRF check (and the handler then checks the key itself).
    r = requests.delete(f"{server.url}/api/projects/{a.id}/sessions/a1", headers=auth(a.api_key))
    assert r.status_code == 200
    # Ingest stays open to any origin: it is how browsers on customer sites send recordings.
    r = post_batch(server.url, a.token, "x", FIXTURE[:2], batch_id="1")
    assert r.status_code == 200


def test_metrics_count_ingest_rejections_spool_and_flushes(make_server):
    from prometheus_client.parser import text_string_to_metric_families

    server = make_server()
    p = server.create_project()

    def scrape():
        r = requests.get(f"{server.url}/metrics")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
        out = {}
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    assert post_batch(server.url, p.token, "m", FIXTURE[:40], batch_id="1").status_code == 200
    assert post_batch(server.url, p.token, "m", FIXTURE[40:50], batch_id="2").status_code == 200
    assert requests.post(f"{server.url}/v1/recordings", data=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert requests.get(f"{server.url}/api/projects/{p.id}/sessions").status_code == 401
    m = scrape()
    assert m[("replay_events_ingested_total", ())] == 50
    assert m[("replay_bytes_ingested_total", ())] > 0
    assert m[("replay_rejections_total", (("code", "invalid_json"), ("status", "400")))] == 1
    assert m[("replay_rejections_total", (("code", "missing_api_key"), ("status", "401")))] == 1
    assert m[("replay_spool_batches", ())] == 2 and m[("replay_spool_disk_bytes", ())] > 0
    assert m[("replay_flush_seconds_count", ())] == 0
    server.flush()
    m = scrape()
    assert m[("replay_spool_batches", ())] == 0 and m[("replay_spool_disk_bytes", ())] == 0
    assert m[("replay_flush_seconds_count", ())] == 1 and m[("replay_flush_seconds_sum", ())] > 0
    assert m[("replay_http_requests_total", (("method", "POST"), ("route", "/v1/recordings"), ("status", "200")))] == 2


def test_readyz_fails_when_the_catalog_file_is_gone(make_server, tmp_path):
    server = make_server(data=tmp_path / "d")
    assert requests.get(f"{server.url}/readyz").status_code == 200
    db = tmp_path / "d" / "catalog.sqlite3"
    db.rename(tmp_path / "moved.sqlite3")
    try:
        r = requests.get(f"{server.url}/readyz")
        assert r.status_code == 503 and r.json()["checks"]["catalog"].startswith("error")
        assert r.json()["checks"]["blob_store"] == "ok"
    finally:
        (tmp_path / "moved.sqlite3").rename(db)
    assert requests.get(f"{server.url}/readyz").status_code == 200
