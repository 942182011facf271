"""The one place where exceptions become HTTP responses: ``{"error": code, "detail": ...}``."""

from __future__ import annotations

import logging
import math

from aiohttp import web

from replay.errors import ReplayError, TooManyRequests
from replay.web.keys import SERVICE

log = logging.getLogger(__name__)
ERROR_CODE = web.ResponseKey("error_code", str)  # for the rejection counter, without parsing the body back

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "rate_limited"}


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    response = web.json_response({"error": code, "detail": detail}, status=status, headers=headers)
    response[ERROR_CODE] = code
    return response


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ReplayError as exc:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))} if isinstance(exc, TooManyRequests) else {}
        if exc.status == 503:
            headers.setdefault("Retry-After", "5")
        response = error_response(exc.status, exc.code, exc.detail, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason,
                                  {k: v for k, v in exc.headers.items() if k in ("Allow", "Location")})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal_error", "the server failed; the error is logged")
    _count_rejection(request, response)
    return response


def _count_rejection(request: web.Request, response: web.Response) -> None:
    # Every error answer passes here, so /metrics sees each one by status and code.
    service = request.app.get(SERVICE)
    if service is not None:
        service.metrics.inc("replay_rejections_total", status=str(response.status),
                            code=response.get(ERROR_CODE, "unknown"))
