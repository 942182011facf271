"""Liveness and readiness probes."""

from __future__ import annotations

from aiohttp import web

from replay.web.keys import SERVICE


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    checks: dict[str, str] = {}
    for name, probe in (("blob_store", service.store.check), ("catalog", service.catalog.check)):
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:  # a probe reports, it does not fail the request
            checks[name] = f"error: {exc}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "not_ready", "checks": checks},
                             status=200 if ready else 503)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
