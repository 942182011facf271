"""``DELETE /api/projects/{p}/sessions/{s}``: erase one session (API key only, never a share link or cookie).

The catalog rows go at once and a tombstone stays, which reads, flushes of what the spool still
holds, and ``replay reindex`` all honour; batch objects are shared by many sessions and immutable,
so an object is deleted now only when no other session has blocks in it, and otherwise its bytes
go when retention expires it or compaction rewrites it.
"""

from __future__ import annotations

from aiohttp import web

from replay.errors import NotFound
from replay.web.api import path_ids
from replay.web.auth import require_project
from replay.web.keys import SERVICE


async def delete_session(request: web.Request) -> web.Response:
    project_id, session_id = path_ids(request)
    assert session_id is not None
    await require_project(request, project_id)
    if not await request.app[SERVICE].erase_session(project_id, session_id):
        raise NotFound(f"no session {session_id} in this project", code="no_such_session")
    return web.json_response({"status": "erased", "project_id": project_id, "session_id": session_id})


def add_routes(app: web.Application) -> None:
    app.router.add_delete("/api/projects/{project}/sessions/{session}", delete_session)
