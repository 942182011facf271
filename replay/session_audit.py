"""Auditing stored sessions: playback's ``[window_id, event]`` stream into ``audit_session``, and
the report shapes the CLI, the API and the UI share.

The audit reads events exactly as playback returns them (merged across blocks and windows, each
batch once), so "leaked" means "a player would show it". The walk runs on a worker thread fed by
a small queue while the blocks are still being read: an hour-long session is hundreds of
thousands of events, which would cost hundreds of MB held at once, and walking them on the
event loop would stall every other request of a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterable, Iterable, Iterator
from typing import Any

from replay.privacy.audit import SessionAudit, audit_session, summarize_project
from replay.privacy.policy import MaskingPolicy

CHUNK = 1000  # events handed to the walker at a time
QUEUED_CHUNKS = 4  # how far reading may run ahead of the walk
_END = object()


class _Aborted(Exception):
    """The reader failed or was cancelled: the walk stops without a result."""


async def audit_items(items: AsyncIterable[Any], policy: MaskingPolicy, *,
                      session_id: str | None = None) -> SessionAudit:
    """Audit a session's ``[window_id, event]`` pairs (or bare events) as they arrive."""
    chunks: queue.Queue[Any] = queue.Queue(maxsize=QUEUED_CHUNKS)
    aborted = threading.Event()
    walked = threading.Event()

    def pairs() -> Iterator[Any]:
        while True:
            try:
                got = chunks.get(timeout=0.1)
            except queue.Empty:
                if aborted.is_set():
                    raise _Aborted() from None
                continue
            if got is _END:
                return
            yield from got

    def walk() -> SessionAudit:
        try:
            return audit_session(pairs(), policy, session_id=session_id)
        finally:
            walked.set()

    def put_blocking(item: Any) -> None:
        while not walked.is_set():  # a walk that ended early (it failed) takes nothing more
            with contextlib.suppress(queue.Full):
                chunks.put(item, timeout=0.1)
                return

    async def put(item: Any) -> None:
        try:
            chunks.put_nowait(item)
        except queue.Full:
            await asyncio.to_thread(put_blocking, item)

    walker = asyncio.ensure_future(asyncio.to_thread(walk))
    try:
        buf: list[Any] = []
        async for item in items:
            buf.append(item)
            if len(buf) >= CHUNK:
                if walker.done():  # the walk failed: stop reading; its error is raised below
                    aclose = getattr(items, "aclose", None)
                    if aclose is not None:
                        await aclose()
                    break
                await put(buf)
                buf = []
        await put(buf)
        await put(_END)
    except BaseException:
        aborted.set()  # the thread notices within 0.1 s and ends; nobody waits for it
        walker.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise
    return await walker


def project_report(project_id: str, policy: MaskingPolicy, audits: Iterable[SessionAudit],
                   errors: Iterable[dict[str, str]] = ()) -> dict[str, Any]:
    """One JSON document for a set of audited sessions (``replay audit --json``)."""
    audits = list(audits)
    return {
        "project": project_id,
        "policy": policy.to_dict(),
        "verdict": verdict(audits),
        "sessions": [a.to_dict() for a in audits],
        "summary": summarize_project(audits).to_dict(),
        "findings": flat_findings(audits),
        "errors": list(errors),
    }


def verdict(audits: Iterable[SessionAudit]) -> str:
    return "leaked" if any(a.verdict == "leaked" for a in audits) else "clean"


def flat_findings(audits: Iterable[SessionAudit]) -> list[dict[str, Any]]:
    """Every finding of every session, each naming its session (for grep, jq and CI logs)."""
    return [{"session_id": a.session_id, **f} for a in audits for f in a.to_dict()["findings"]]
