"""Exceptions that carry their HTTP meaning; ``replay.web.errors`` maps them to responses."""

from __future__ import annotations


class ReplayError(Exception):
    """Base for errors a client caused or must know about: ``{"error": code, "detail": ...}``."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(ReplayError):
    status, code = 400, "bad_request"


class Unauthorized(ReplayError):
    status, code = 401, "unauthorized"


class Forbidden(ReplayError):
    status, code = 403, "forbidden"


class NotFound(ReplayError):
    status, code = 404, "not_found"


class RequestTimeout(ReplayError):
    status, code = 408, "request_timeout"


class PayloadTooLarge(ReplayError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ReplayError):
    status, code = 415, "unsupported_media_type"


class TooManyRequests(ReplayError):
    status, code = 429, "rate_limited"

    def __init__(self, detail: str, *, retry_after: float, code: str | None = None):
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class Unavailable(ReplayError):
    """The service cannot keep the data right now (spool full, disk full): the client must retry."""

    status, code = 503, "unavailable"


class StoreError(Exception):
    """A blob store operation failed (unreachable, refused); never shown to ingest clients as-is."""
