"""The aiohttp application: middlewares, routes, static assets."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

from replay.ingest import native, posthog
from replay.service import Service
from replay.web import api, audit_pages, demo, erasure, health, metrics, openapi, privacy_api, share, static, ui
from replay.web.cors import cors_middleware
from replay.web.csrf import csrf_middleware
from replay.web.errors import error_middleware
from replay.web.metrics import access_middleware
from replay.web.keys import SERVICE

PLAYER_ASSETS = Path(__file__).resolve().parents[2] / "player_assets"
# Chromium refuses scripts served as anything else once nosniff is set.
mimetypes.add_type("application/javascript", ".cjs")
mimetypes.add_type("application/javascript", ".js")


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def build_app(service: Service) -> web.Application:
    # Outermost first: CORS must decorate error responses too, or browsers cannot read them.
    # access_middleware sees the final status of everything; csrf sits inside error_middleware so its 403 is JSON.
    app = web.Application(middlewares=[access_middleware, security_headers, cors_middleware, error_middleware,
                                       csrf_middleware],
                          client_max_size=service.limits.max_body_bytes)
    app[SERVICE] = service
    native.add_routes(app)
    posthog.add_routes(app)  # before static: its /static/<posthog bundle> routes must win
    api.add_routes(app)
    health.add_routes(app)
    share.add_routes(app)
    erasure.add_routes(app)
    privacy_api.add_routes(app)
    metrics.add_routes(app)
    openapi.add_routes(app)
    ui.add_routes(app)
    audit_pages.add_routes(app)
    demo.add_routes(app)
    # Not add_static: it serves .cjs as application/octet-stream, which nosniff makes Chromium refuse.
    static.add_routes(app, PLAYER_ASSETS)
    return app


async def start_server(service: Service, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the bound port (useful with port 0)."""
    app = build_app(service)
    # aiohttp would otherwise inflate gzip bodies itself, before our size caps apply.
    runner = web.AppRunner(app, auto_decompress=False, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound
