"""``/static/``: files from player_assets/, an allow-list of types, each with an explicit Content-Type.

aiohttp's own static handler guesses types from the platform's tables and gives ``.cjs``
``application/octet-stream``, which Chromium refuses to run once ``nosniff`` is set. Here an
extension not in the list is a 404, so nothing else under player_assets/ (licences, scripts)
is ever served, and a path that resolves outside the root (``..``, symlinks) is a 404 too.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from aiohttp import web

from replay.errors import NotFound

CONTENT_TYPES: dict[str, str] = {
    ".js": "application/javascript; charset=utf-8",
    ".cjs": "application/javascript; charset=utf-8",
    ".mjs": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
# Vendored bundles live in versioned directories (rrweb-2.2.2/...): a new version is a new URL,
# so browsers may keep them for good. Our own files change in place: revalidate (ETag/Last-Modified).
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
VENDOR_DIR = "vendor"


def resolve_asset(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``root``, or None if it is not a servable asset."""
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
        return None
    if PurePosixPath(relative).suffix.lower() not in CONTENT_TYPES:
        return None
    path = (root / Path(*parts)).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def cache_control(relative: str) -> str:
    return IMMUTABLE if PurePosixPath(relative).parts[:1] == (VENDOR_DIR,) else REVALIDATE


def add_routes(app: web.Application, root: Path, prefix: str = "/static") -> None:
    root = root.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        path = resolve_asset(root, relative)
        if path is None:
            raise NotFound(f"no asset {relative}", code="no_such_asset")
        return web.FileResponse(path, headers={
            "Content-Type": CONTENT_TYPES[path.suffix.lower()],
            "Cache-Control": cache_control(relative),
            "X-Content-Type-Options": "nosniff",
        })

    app.router.add_get(prefix + "/{path:.+}", serve)
