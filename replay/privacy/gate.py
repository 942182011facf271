"""The ingest side of privacy: each batch passes its project's policy before the spool sees it.

State lives here, per process: a parsed policy per project and a node mirror per window. Batches
of one window are enforced one at a time, in arrival order (the mirror depends on it); large
decoded batches run on a worker thread so one big full snapshot does not stall every other upload
(packed ones run inline: their walks are C holding the GIL, a thread would not let others run).
"""

from __future__ import annotations

import asyncio
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
                    # Inline: the packed path is mostly C walks that hold the GIL throughout, so on a
                    # thread it stalled the other uploads nearly as much, and added the hops (the
                    # same server CPU, a lower p99 in five pairs of five: bench/RESULTS.md, 13th pass).
                    enforce_packed(policy, mirror, packed.events, packed.fields, packed.spans)
                elif len(batch.events) > INLINE_EVENTS or any(e.get("type") == 2 for e in batch.events):
                    # The decoded walk runs Python rules between its C loops: on a thread, the
                    # event loop gets the GIL back every switch interval meanwhile.
                    await asyncio.to_thread(enforce_events, policy, mirror, batch.events)
                else:
                    enforce_events(policy, mirror, batch.events)
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(key, None)
