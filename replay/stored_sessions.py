"""Sessions as a command-line tool beside a running server sees them (``replay export``, ``replay audit``).

The server holds acknowledged batches in its spool until the next flush; a tool reads the spool
directory once (read-only, torn tails skipped) and the catalog and blob store as they are, and
plays both through ``playback.session_items`` like the events endpoint does: a batch that is in
both (flushed, spool not truncated yet) plays once. Erased sessions are not there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from replay.catalog.sqlite import SessionQuery
from replay.pending import matches, with_pending
from replay.playback import session_items
from replay.service import Service
from replay.spool import SpooledBatch, read_spool_dir

PAGE = 500


class StoredSessions:
    def __init__(self, service: Service):
        self.service = service
        self._spooled: dict[tuple[str, str], list[SpooledBatch]] = {}
        for b in read_spool_dir(service.settings.spool_dir):
            self._spooled.setdefault((b.project_id, b.session_id), []).append(b)

    def spooled(self, project_id: str, session_id: str) -> list[SpooledBatch]:
        return self._spooled.get((project_id, session_id), [])

    async def exists(self, project_id: str, session_id: str) -> bool:
        catalog = self.service.catalog
        if catalog.is_erased(project_id, session_id):
            return False
        return bool(self.spooled(project_id, session_id)) or await catalog.session(project_id, session_id) is not None

    async def items(self, project_id: str, session_id: str) -> AsyncIterator[list[Any]]:
        """The session's ``[window_id, event]`` pairs in timestamp order, each batch once."""
        if self.service.catalog.is_erased(project_id, session_id):
            return
        blocks = await self.service.catalog.blocks(project_id, session_id)
        async for item in session_items(self.service.store, blocks, self.spooled(project_id, session_id)):
            yield item

    async def session_ids(self, project_id: str, since_ms: int | None = None) -> list[str]:
        """The project's sessions with events at or after ``since_ms``: catalogued ones oldest first,
        then those only the spool holds yet."""
        catalog = self.service.catalog
        q = SessionQuery(since_ms=since_ms, sort="start", descending=False, limit=PAGE)
        found: list[str] = []
        while True:
            page, total = await catalog.sessions(project_id, q)
            found += [s.session_id for s in page]
            q.offset += len(page)
            if not page or q.offset >= total:
                break
        known = set(found)
        pending = []
        for (pid, sid), batches in self._spooled.items():
            if pid != project_id or sid in known or catalog.is_erased(pid, sid):
                continue
            summary = with_pending(None, pid, sid, batches)
            if summary is not None and matches(summary, q):
                pending.append(summary)
        return found + [s.session_id for s in sorted(pending, key=lambda s: s.start_ts)]
