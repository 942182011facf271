"""Signing in to the support UI with an API key: cookie session, CSRF, sign-out, project scoping."""

from __future__ import annotations

import pytest
import requests

from harness import load_fixture_events, post_batch
from signin import form_token, sign_in_session

FIXTURE = load_fixture_events()


@pytest.fixture
def world(make_server):
    server = make_server()
    a, b = server.create_project("a"), server.create_project("b")
    assert post_batch(server.url, a.token, "a1", FIXTURE[:80], batch_id="1", distinct_id="ann").status_code == 200
    assert post_batch(server.url, b.token, "b1", FIXTURE[80:], batch_id="1", distinct_id="bob").status_code == 200
    server.flush()
    return server, a, b


def reads(session: requests.Session, url: str, project_id: str, session_id: str) -> list[int]:
    base = f"{url}/api/projects/{project_id}/sessions"
    return [session.get(u, timeout=10).status_code for u in (base, f"{base}/{session_id}", f"{base}/{session_id}/events")]


def post_form(session: requests.Session, url: str, path: str, data: dict) -> requests.Response:
    # Origin as a browser sends it from our own page, so only our handler's own CSRF check decides.
    return session.post(url + path, data=data, headers={"Origin": url}, allow_redirects=False, timeout=10)


def test_without_signing_in_pages_redirect_to_sign_in_and_the_api_gives_nothing(world):
    server, a, _b = world
    anonymous = requests.Session()
    for path in (f"/projects/{a.id}/sessions", f"/projects/{a.id}/sessions/a1", "/"):
        r = anonymous.get(server.url + path, allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"].startswith("/signin"), (path, r.status_code)
        assert "ann" not in r.text
    assert reads(anonymous, server.url, a.id, "a1") == [401, 401, 401]


def test_a_wrong_key_does_not_sign_in(world):
    server, a, b = world
    s = requests.Session()
    for wrong in ("rpk_not-a-key", a.token, b.api_key[:-2] + "xx", ""):
        token = form_token(s.get(f"{server.url}/signin").text)
        r = post_form(s, server.url, "/signin", {"csrf_token": token, "api_key": wrong})
        assert r.status_code == 401 and "Unknown or revoked API key" in r.text
        assert "replay_session" not in s.cookies
    assert reads(s, server.url, a.id, "a1") == [401, 401, 401]


def test_sign_in_sets_a_strict_http_only_cookie_that_reads_only_its_own_project(world):
    server, a, b = world
    s = requests.Session()
    token = form_token(s.get(f"{server.url}/signin").text)
    r = post_form(s, server.url, "/signin", {"csrf_token": token, "api_key": a.api_key})
    assert r.status_code == 303 and r.headers["Location"] == f"/projects/{a.id}/sessions"
    cookie = r.headers["Set-Cookie"]
    assert "replay_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test below
    assert reads(s, server.url, a.id, "a1") == [200, 200, 200]
    assert s.get(f"{server.url}/api/projects/{a.id}/sessions/a1/events").json() == \
        requests.get(f"{server.url}/api/projects/{a.id}/sessions/a1/events",
                     headers={"Authorization": f"Bearer {a.api_key}"}).json()
    assert reads(s, server.url, b.id, "b1") == [403, 403, 403]
    page = s.get(f"{server.url}/projects/{a.id}/sessions")
    assert page.status_code == 200 and "ann" in page.text and "bob" not in page.text
    # Another project's pages send the reader to sign in with that project's key.
    r = s.get(f"{server.url}/projects/{b.id}/sessions", allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].startswith("/signin")


def test_sign_in_needs_its_csrf_token(world):
    server, a, _b = world
    s = requests.Session()
    token = form_token(s.get(f"{server.url}/signin").text)
    for data in ({"api_key": a.api_key}, {"api_key": a.api_key, "csrf_token": token + "x"},
                 {"api_key": a.api_key, "csrf_token": ""}):
        r = post_form(s, server.url, "/signin", data)
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed", data
        assert "replay_session" not in s.cookies
    # A token from another browser's form does not match this browser's cookie.
    other = requests.Session()
    other_token = form_token(other.get(f"{server.url}/signin").text)
    assert post_form(s, server.url, "/signin", {"api_key": a.api_key, "csrf_token": other_token}).status_code == 403
    assert post_form(s, server.url, "/signin", {"api_key": a.api_key, "csrf_token": token}).status_code == 303


def test_sign_out_needs_the_page_token_and_ends_the_session_even_for_a_copied_cookie(world):
    server, a, _b = world
    s = sign_in_session(server.url, a.api_key)
    copied = dict(s.cookies)
    page = s.get(f"{server.url}/projects/{a.id}/sessions").text
    assert post_form(s, server.url, "/signout", {}).status_code == 403
    assert post_form(s, server.url, "/signout", {"csrf_token": "forged"}).status_code == 403
    assert reads(s, server.url, a.id, "a1") == [200, 200, 200]
    r = post_form(s, server.url, "/signout", {"csrf_token": form_token(page)})
    assert r.status_code == 303 and r.headers["Location"] == "/signin"
    assert reads(s, server.url, a.id, "a1") == [401, 401, 401]
    replayed = requests.Session()
    replayed.cookies.update(copied)
    assert reads(replayed, server.url, a.id, "a1") == [401, 401, 401]


def test_revoking_the_key_ends_its_ui_sessions(world):
    server, a, _b = world
    key, secret = server.call(server.service.catalog.create_key(a.id, "support"))
    s = sign_in_session(server.url, secret)
    assert reads(s, server.url, a.id, "a1") == [200, 200, 200]
    assert server.call(server.service.catalog.revoke_key(key.id))
    assert reads(s, server.url, a.id, "a1") == [401, 401, 401]


def test_a_forged_or_tampered_cookie_is_not_a_session(world):
    server, a, _b = world
    s = sign_in_session(server.url, a.api_key)
    value = s.cookies["replay_session"]
    body, sig = value.split(".")
    # Flip the signature's FIRST character: the last base64 character carries padding bits, and
    # changing only those can leave the decoded signature as it was.
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    for bad in (f"{body}.{flipped}", body, f"{body}x.{sig}", "x" * 3000):
        forged = requests.Session()
        forged.cookies.set("replay_session", bad)
        assert reads(forged, server.url, a.id, "a1") == [401, 401, 401], bad


def test_sign_in_goes_back_only_to_local_paths(world):
    server, a, _b = world
    for next_path, expected in ((f"/projects/{a.id}/sessions/a1", f"/projects/{a.id}/sessions/a1"),
                                ("//evil.example/x", f"/projects/{a.id}/sessions"),
                                ("https://evil.example/", f"/projects/{a.id}/sessions"),
                                ("/\\evil.example", f"/projects/{a.id}/sessions")):
        s = requests.Session()
        token = form_token(s.get(f"{server.url}/signin", params={"next": next_path}).text)
        r = post_form(s, server.url, "/signin", {"csrf_token": token, "api_key": a.api_key, "next": next_path})
        assert r.status_code == 303 and r.headers["Location"] == expected, next_path
    # A wrong key keeps the way back on the form it shows again.
    s = requests.Session()
    token = form_token(s.get(f"{server.url}/signin").text)
    r = post_form(s, server.url, "/signin", {"csrf_token": token, "api_key": "wrong", "next": f"/projects/{a.id}/sessions/a1"})
    assert r.status_code == 401 and f'name="next" value="/projects/{a.id}/sessions/a1"' in r.text


def test_a_link_followed_from_another_site_reloads_itself_to_get_the_strict_cookie(world):
    server, a, _b = world
    s = sign_in_session(server.url, a.api_key)
    # What a browser sends when a link in a mail or chat is followed: Sec-Fetch-Site cross-site, and
    # (SameSite=Strict) no cookie. The page reloads itself from our origin, which does send it.
    r = requests.get(f"{server.url}/projects/{a.id}/sessions/a1?t=5", headers={"Sec-Fetch-Site": "cross-site"},
                     allow_redirects=False)
    assert r.status_code == 200 and f'content="0;url=/projects/{a.id}/sessions/a1?t=5"' in r.text
    assert "ann" not in r.text
    assert s.get(f"{server.url}/projects/{a.id}/sessions/a1?t=5", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_the_cookie_is_secure_when_the_public_url_is_https(make_server):
    server = make_server(public_url="https://replay.example.com")
    a = server.create_project()
    form = requests.get(f"{server.url}/signin")
    assert "Secure" in form.headers["Set-Cookie"]
    # A client only sends Secure cookies over https; this test talks plain http, so it sends it itself.
    r = requests.post(f"{server.url}/signin", data={"csrf_token": form_token(form.text), "api_key": a.api_key},
                      cookies={"replay_signin_csrf": form.cookies["replay_signin_csrf"]},
                      headers={"Origin": server.url}, allow_redirects=False)
    assert r.status_code == 303 and "Secure" in r.headers["Set-Cookie"]
