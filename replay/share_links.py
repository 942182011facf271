"""Signed, expiring, read-only share links for ONE session (and optionally a moment in it).

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, "share:" + payload))`` where the
payload is compact JSON ``{"p": project, "s": session, "e": expiry (unix s), "t": ms or null}``.
Nothing is stored server-side, so a link cannot be revoked one by one: keep ``expires_in`` short,
or rotate the server secret to void every link at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

MAX_TOKEN_LENGTH = 1024
MAX_EXPIRES_IN = 90 * 24 * 3600  # links for longer than a quarter are a standing grant, not a share
DEFAULT_EXPIRES_IN = 7 * 24 * 3600
_DOMAIN = b"share:"  # keeps share signatures apart from anything else signed with the same secret


class InvalidShareLink(ValueError):
    """The token is malformed, forged, or expired."""


@dataclass(frozen=True)
class ShareGrant:
    project_id: str
    session_id: str
    expires_at: int  # unix seconds
    t_ms: int | None = None  # where the player starts, ms since the session's first event


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()


def sign_share(secret: bytes, grant: ShareGrant) -> str:
    payload = json.dumps({"p": grant.project_id, "s": grant.session_id, "e": grant.expires_at, "t": grant.t_ms},
                         separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_signature(secret, payload))}"


def verify_share(secret: bytes, token: str, now: float | None = None) -> ShareGrant:
    """The grant a token carries; raises InvalidShareLink unless it is ours, intact and unexpired."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidShareLink("malformed share link")
    body, sig = token.split(".")
    try:
        payload, given = _unb64(body), _unb64(sig)
    except (ValueError, TypeError):
        raise InvalidShareLink("malformed share link") from None
    if not hmac.compare_digest(given, _signature(secret, payload)):
        raise InvalidShareLink("share link signature does not match")
    try:
        d = json.loads(payload)
        grant = ShareGrant(str(d["p"]), str(d["s"]), int(d["e"]), None if d.get("t") is None else int(d["t"]))
    except (ValueError, KeyError, TypeError):
        raise InvalidShareLink("malformed share link") from None
    if grant.expires_at <= (time.time() if now is None else now):
        raise InvalidShareLink("share link has expired")
    return grant
