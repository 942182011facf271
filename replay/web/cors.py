"""CORS only where browsers need it: the ingest routes. Everything else stays same-origin."""

from __future__ import annotations

from enum import Enum

from aiohttp import web


class CorsMode(Enum):
    ANY_ORIGIN = "any"  # native API: no cookies, so "*" is safe
    MIRROR_WITH_CREDENTIALS = "mirror"  # posthog-js sends with credentials, which "*" does not allow


CORS_ROUTES = web.AppKey("cors_routes", dict)
ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization, X-Requested-With"


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)  # the middleware adds the headers


def allow_cors(app: web.Application, path: str, mode: CorsMode) -> None:
    """Make an (already added) route reachable from other origins, preflight included."""
    if CORS_ROUTES not in app:
        app[CORS_ROUTES] = {}
    app[CORS_ROUTES][path] = mode
    app.router.add_route("OPTIONS", path, _preflight)


def _mode(request: web.Request) -> CorsMode | None:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None:
        return None
    return request.app.get(CORS_ROUTES, {}).get(resource.canonical)


def _headers(request: web.Request, mode: CorsMode) -> dict[str, str]:
    origin = request.headers.get("Origin")
    # Clients back off on 429/503 by Retry-After, which cross-origin scripts may only read if exposed.
    if mode is CorsMode.ANY_ORIGIN:
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After"}
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin",
            "Access-Control-Expose-Headers": "Retry-After"}


@web.middleware
async def cors_middleware(request: web.Request, handler) -> web.StreamResponse:
    mode = _mode(request)
    if mode is None:
        return await handler(request)
    if request.method == "OPTIONS":
        return web.Response(status=204, headers={
            **_headers(request, mode),
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers") or ALLOWED_HEADERS,
            "Access-Control-Max-Age": "86400",
        })
    response = await handler(request)
    response.headers.update(_headers(request, mode))
    return response
