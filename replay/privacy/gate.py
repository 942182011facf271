"""The ingest side of privacy: each batch passes its project's policy before the spool sees it.

State lives here, per process: a parsed policy per project and a node mirror per window. Batches
of one window are enforced one at a time, in arrival order (the mirror depends on it); large
batches run on a worker thread so one big full snapshot does not stall every other upload.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from replay.catalog.records import Project
from replay.ingest.batch import Batch
from replay.privacy.enforce import enforce_events, enforce_packed, mirror_attributes
from replay.privacy.mirror import MirrorCache
from replay.privacy.policy import MaskingPolicy
from replay.privacy.enforce import scrub_url
from replay.privacy.walk import rules_for

INLINE_EVENTS = 200  # below this, a thread hop costs more than the work


class PolicyGate:
    def __init__(self, mirrors: MirrorCache | None = None):
        self.mirrors = mirrors or MirrorCache()
        self._policies: dict[str, tuple[dict[str, Any], MaskingPolicy]] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    def policy(self, project: Project) -> MaskingPolicy:
        """The project's parsed policy (cached until the stored policy changes)."""
        cached = self._policies.get(project.id)
        if cached is None or cached[0] != project.policy:
            cached = (project.policy, MaskingPolicy.from_dict(project.policy))
            self._policies[project.id] = cached
        return cached[1]

    async def enforce(self, project: Project, batch: Batch) -> None:
        """Mask ``batch.events`` or ``batch.packed`` (in place) as the project's policy says."""
        policy = self.policy(project)
        if not policy.enforce:
            return
        url = batch.meta.get("url")
        if isinstance(url, str):
            batch.meta["url"] = scrub_url(rules_for(policy), url)
        key = (project.id, batch.session_id, batch.window_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                mirror = self.mirrors.get(key, mirror_attributes(policy))
                packed = batch.packed
                if packed is not None:
                    work = functools.partial(enforce_packed, policy, mirror, packed.events, packed.fields, packed.spans)
                    heads = packed.fields
                else:
                    work = functools.partial(enforce_events, policy, mirror, batch.events)
                    heads = batch.events
                if len(heads) > INLINE_EVENTS or any(e.get("type") == 2 for e in heads):
                    await asyncio.to_thread(work)
                else:
                    work()
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(key, None)
