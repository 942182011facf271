"""Signing in to the support UI the way a browser does: load the form, post it with its CSRF token."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

import requests

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no csrf_token field on the page"
    return m.group(1)


def sign_in_session(url: str, api_key: str) -> requests.Session:
    """A requests session holding the UI's cookie session (headers as a same-origin form post)."""
    s = requests.Session()
    page = s.get(f"{url}/signin", timeout=10)
    assert page.status_code == 200
    r = s.post(f"{url}/signin", data={"csrf_token": form_token(page.text), "api_key": api_key},
               headers={"Origin": url}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    return s


def sign_in_page(page, url: str, api_key: str) -> None:
    """Sign a Playwright page's context in through the real form."""
    page.goto(f"{url}/signin")
    page.fill("#api_key", api_key)
    page.click(".signin button[type=submit]")
    page.wait_for_url(re.compile(r".*/projects/.*/sessions.*"))


@contextmanager
def signed_in_page(browser: Any, url: str, api_key: str, **context_options: Any) -> Iterator[Any]:
    """A page in a fresh browser context signed in with ``api_key``; ``page.errors`` collects page errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
    try:
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        sign_in_page(page, url, api_key)
        yield page
    finally:
        context.close()
