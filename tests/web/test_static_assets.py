"""/static/: an allow-list of types with explicit Content-Types, nothing outside player_assets/."""

from __future__ import annotations

import http.client
from urllib.parse import urlparse

import pytest
import requests

from replay.web.static import resolve_asset


def raw_get(url: str, path: str) -> int:
    """GET a path exactly as written (requests would normalise ``..`` away)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.parametrize("path, content_type, cache", [
    ("/static/vendor/rrweb-2.2.2/dist/rrweb.umd.min.cjs", "application/javascript", "immutable"),
    ("/static/vendor/rrweb-player-2.1.7/dist/rrweb-player.umd.min.cjs", "application/javascript", "immutable"),
    ("/static/vendor/rrweb-player-2.1.7/dist/style.css", "text/css", "immutable"),
    ("/static/capture.js", "application/javascript", "no-cache"),
    ("/static/player.js", "application/javascript", "no-cache"),
    ("/static/ui.css", "text/css", "no-cache"),
])
def test_assets_are_served_with_their_type_nosniff_and_cache_policy(server, path, content_type, cache):
    r = requests.get(server.url + path)
    assert r.status_code == 200 and len(r.content) > 100
    assert r.headers["Content-Type"].split(";")[0] == content_type
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert cache in r.headers["Cache-Control"]
    again = requests.get(server.url + path, headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", [
    "/static/vendor/rrweb-2.2.2/LICENSE",  # no allowed extension
    "/static/../replay/cli.py",
    "/static/%2e%2e/replay/cli.py",
    "/static/vendor/../../replay/web/ui.py",
    "/static/..%2fpyproject.toml",
    "/static/.hidden.js",
    "/static/vendor/",
    "/static/nope.js",
])
def test_anything_else_is_not_found(server, path):
    assert raw_get(server.url, path) in (403, 404)


def test_a_symlink_out_of_the_root_is_not_an_asset(tmp_path):
    root = tmp_path / "assets"
    root.mkdir()
    (root / "ok.js").write_text("1")
    (tmp_path / "secret.js").write_text("2")
    (root / "escape.js").symlink_to(tmp_path / "secret.js")
    assert resolve_asset(root.resolve(), "ok.js") == (root / "ok.js").resolve()
    assert resolve_asset(root.resolve(), "escape.js") is None
    assert resolve_asset(root.resolve(), "../secret.js") is None
