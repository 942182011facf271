"""CSRF protection for every state-changing route except ingest.

A browser attaches cookies to cross-site requests by itself, but never an ``Authorization``
header. So a POST/PUT/PATCH/DELETE passes when it carries a Bearer key (the handler checks it),
or comes from one of our own pages: a valid CSRF token (``X-CSRF-Token`` header or ``csrf_token``
form field, matching the ``replay_csrf`` cookie) or a same-origin ``Origin`` / ``Sec-Fetch-Site``
header. Anything else is 403 before the handler runs. Ingest routes (those that allow CORS) are
exempt: they carry their own ingest token and change nothing a visitor owns.

Pages that post forms put ``csrf_token(request)`` in a hidden ``csrf_token`` field; the
middleware sets the cookie on that page's response.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlparse

from aiohttp import web

from replay.errors import Forbidden
from replay.web.cors import CORS_ROUTES
from replay.web.keys import SERVICE

COOKIE = "replay_csrf"
HEADER = "X-CSRF-Token"
FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
EXEMPT = web.AppKey("csrf_exempt", set)
_NEW_NONCE = web.RequestKey("csrf_new_nonce", str)
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _sign(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, b"csrf:" + nonce.encode(), hashlib.sha256).hexdigest()[:32]


def csrf_token(request: web.Request) -> str:
    """The token a page embeds in its forms (the matching cookie is set on the response)."""
    nonce = request.cookies.get(COOKIE) or request.get(_NEW_NONCE)
    if not nonce or len(nonce) != 32 or not nonce.isalnum():
        nonce = request[_NEW_NONCE] = secrets.token_hex(16)
    return f"{nonce}.{_sign(request.app[SERVICE].share_secret, nonce)}"


def csrf_exempt(app: web.Application, path: str) -> None:
    """Exempt a state-changing route that is not CORS-enabled ingest (use sparingly)."""
    app.setdefault(EXEMPT, set()).add(path)  # type: ignore[union-attr]


def _valid_token(request: web.Request, token: str | None) -> bool:
    nonce = request.cookies.get(COOKIE)
    if not token or not nonce or "." not in token:
        return False
    given_nonce, sig = token.split(".", 1)
    return hmac.compare_digest(given_nonce, nonce) and \
        hmac.compare_digest(sig, _sign(request.app[SERVICE].share_secret, nonce))


def _same_origin(request: web.Request) -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return False
    public = request.app[SERVICE].settings.public_url
    netloc = urlparse(origin).netloc
    return netloc == request.host or bool(public) and netloc == urlparse(public).netloc


def _exempt(request: web.Request) -> bool:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None:  # unmatched: the router answers 404/405 itself
        return True
    canonical = resource.canonical
    return canonical in request.app.get(CORS_ROUTES, {}) or canonical in request.app.get(EXEMPT, set())


async def _has_token(request: web.Request) -> bool:
    if _valid_token(request, request.headers.get(HEADER)):
        return True
    if request.content_type in _FORMS:
        form = await request.post()  # cached by aiohttp: the handler reads it again for free
        value = form.get(FIELD)
        return isinstance(value, str) and _valid_token(request, value)
    return False


@web.middleware
async def csrf_middleware(request: web.Request, handler) -> web.StreamResponse:
    if request.method not in SAFE_METHODS and not _exempt(request):
        scheme = request.headers.get("Authorization", "").partition(" ")[0].lower()
        if scheme != "bearer" and not _same_origin(request) and not await _has_token(request):
            raise Forbidden("a state-changing request needs an API key (Bearer), a CSRF token, "
                            "or to come from this site's own pages", code="csrf_failed")
    response = await handler(request)
    nonce = request.get(_NEW_NONCE)
    if nonce:
        response.set_cookie(COOKIE, nonce, path="/", httponly=True, samesite="Strict", secure=request.secure)
    return response
