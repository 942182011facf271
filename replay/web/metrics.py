"""``GET /metrics`` (Prometheus text format) and the per-request access log / request counter."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from replay.metrics import CONTENT_TYPE
from replay.web.keys import SERVICE

access_log = logging.getLogger("replay.access")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


def _route(request: web.Request) -> str:
    # The route's pattern, not the path: bounded label values, and no ids or tokens in logs.
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def access_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Count every answer, and log one line per request (fields, never the query string: it may hold tokens)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        service = request.app[SERVICE]
        route = _route(request)
        service.metrics.inc("replay_http_requests_total", method=request.method, route=route, status=str(status))
        if service.settings.log_format == "json":
            access_log.info("%s %s %d", request.method, route, status, extra={"access": {
                "method": request.method, "route": route, "path": request.path[:200] if route == "unmatched" else route,
                "status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "remote": request.remote, "bytes_in": request.content_length or 0,
            }})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
