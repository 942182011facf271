"""The support UI's sign-in: a signed cookie naming the API key it was opened with, and CSRF tokens.

Why signed and not stored: nothing to keep or share between receivers (they share the server
secret, see replay/server_secret.py), and sessions survive a restart. Why that is still safe:
the cookie carries the key's *id*, and every request checks that key is live, so revoking the
key ends its sessions at once. Signing out clears the cookie and puts its nonce on this
process's deny-list until it would have expired, so a copy of the cookie is dead here too.

Cookie value: ``base64url(payload) "." base64url(HMAC-SHA256(secret, "ui-session:" + payload))``,
payload = compact JSON ``{"p": project, "k": key id, "n": nonce, "e": expiry (unix s)}``.

CSRF: a signed-in page's forms carry ``HMAC(secret, "ui-csrf:" + nonce)`` (synchronizer token bound
to the session; nothing stored). The sign-in form, before any session exists, uses a
double-submit token: a random ``replay_signin_csrf`` cookie that the form must repeat. These come
on top of replay/web/csrf.py's middleware (which already refuses cross-site posts): sign-in and
sign-out always need their token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "replay_session"
SIGNIN_CSRF_COOKIE = "replay_signin_csrf"  # not replay_csrf: replay/web/csrf.py owns that one
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600
MAX_COOKIE_LENGTH = 1024
_SESSION_DOMAIN = b"ui-session:"
_CSRF_DOMAIN = b"ui-csrf:"  # apart from replay/web/csrf.py's "csrf:" signatures


@dataclass(frozen=True)
class UiSession:
    project_id: str
    key_id: str
    nonce: str
    expires_at: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_session(project_id: str, key_id: str, now: float | None = None) -> UiSession:
    issued = int(time.time() if now is None else now)
    return UiSession(project_id, key_id, secrets.token_urlsafe(16), issued + SESSION_SECONDS)


def sign_session(secret: bytes, session: UiSession) -> str:
    payload = json.dumps({"p": session.project_id, "k": session.key_id, "n": session.nonce,
                          "e": session.expires_at}, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(hmac.new(secret, _SESSION_DOMAIN + payload, hashlib.sha256).digest())}"


def verify_session(secret: bytes, value: str | None, now: float | None = None) -> UiSession | None:
    """The session a cookie carries, or None if it is missing, forged, malformed or expired."""
    if not value or len(value) > MAX_COOKIE_LENGTH or value.count(".") != 1:
        return None
    body, sig = value.split(".")
    try:
        payload, given = _unb64(body), _unb64(sig)
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(given, hmac.new(secret, _SESSION_DOMAIN + payload, hashlib.sha256).digest()):
        return None
    try:
        d = json.loads(payload)
        session = UiSession(str(d["p"]), str(d["k"]), str(d["n"]), int(d["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires_at <= (time.time() if now is None else now):
        return None
    return session


def csrf_token(secret: bytes, session: UiSession) -> str:
    return _b64(hmac.new(secret, _CSRF_DOMAIN + session.nonce.encode(), hashlib.sha256).digest())


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected).encode(), str(given).encode())


def new_signin_csrf() -> str:
    return secrets.token_urlsafe(24)


class SignedOut:
    """Nonces of sessions signed out in this process, kept until they would have expired anyway."""

    def __init__(self) -> None:
        self._until: dict[str, int] = {}

    def add(self, session: UiSession) -> None:
        now = int(time.time())
        self._until = {n: e for n, e in self._until.items() if e > now}
        self._until[session.nonce] = session.expires_at

    def __contains__(self, session: UiSession) -> bool:
        return session.nonce in self._until
