"""``/demo``: a sample page that records itself with capture.js into the default project.

A new user opens it, types and clicks, and follows the banner's link to watch the replay; the
player reads spooled events, so that works before the first flush. The page carries the default
project's ingest token, which is public and write-only by design.
"""

from __future__ import annotations

from aiohttp import web

from replay.errors import NotFound
from replay.web.keys import SERVICE
from replay.web.pages import DEMO_CSP, render

PAGES = {"": "demo.html", "/page2": "demo_page2.html"}


async def demo_page(request: web.Request) -> web.Response:
    projects = await request.app[SERVICE].catalog.projects()
    if not projects:
        raise NotFound("there is no project yet: start `replay serve` once to create the default one",
                       code="no_project")
    project = projects[0]
    return render(PAGES[request.match_info.get("page", "")], csp=DEMO_CSP, project_id=project.id,
                  token=project.ingest_token)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/demo", demo_page)
    app.router.add_get("/demo{page:/page2}", demo_page)
