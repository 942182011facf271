"""Service: the parts wired together, and the two paths through them (accept, flush)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator

from replay import codec
from replay.catalog import Project, SessionSummary, SqliteCatalog, open_catalog
from replay.catalog.summary import summarize
from replay.compaction import Compactor, PassReport
from replay.config import Settings
from replay.errors import BadRequest, StoreError
from replay.ingest.batch import Batch
from replay.ingest.limits import Limits
from replay.ingest.rate_limit import RateLimiter
from replay.metrics import Metrics
from replay.pending import with_pending
from replay.playback import session_items
from replay.privacy.gate import PolicyGate
from replay.server_secret import load_or_create_secret
from replay.spool import Spool, SpooledBatch
from replay.storage import BlobStore, open_store
from replay.writer import BatchObjectWriter

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, *, store: BlobStore | None = None, catalog: SqliteCatalog | None = None):
        self.settings = settings
        self.store = store or open_store(settings.blob, endpoint_url=settings.s3_endpoint_url,
                                         region=settings.s3_region, path_style=settings.s3_path_style)
        self.catalog = catalog or open_catalog(settings.catalog)
        self.spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes)
        self.writer = BatchObjectWriter(self.store, self.catalog, settings.node)
        self.limits = Limits(max_events=settings.max_events, body_timeout=settings.body_timeout)
        self.metrics = Metrics()
        self.metrics.gauge("replay_spool_batches", "batches held in the spool (acknowledged, not yet flushed)",
                           lambda: self.spool.depth)
        self.metrics.gauge("replay_spool_disk_bytes", "bytes of spool log on disk", lambda: self.spool.disk_bytes)
        self.metrics.gauge("replay_spool_buffered_bytes", "packed event bytes waiting for a flush",
                           lambda: self.spool.buffered_bytes)
        self.metrics.gauge("replay_spool_sealed_segments", "sealed spool segments waiting for the store",
                           lambda: len(self.spool.sealed()))
        self.privacy = PolicyGate()
        self.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.share_secret = b""  # loaded by start(): signs share links and CSRF tokens
        self._flush_lock = asyncio.Lock()
        self._flush_wanted = asyncio.Event()
        self._accepting: dict[tuple[str, str, str], asyncio.Event] = {}  # batches between check and spool
        self._flusher: asyncio.Task | None = None
        self._stopping = False
        self.compactor = Compactor(self.store, self.catalog, settings.node, grace=settings.compact_grace,
                                   default_retention=settings.retention_days, metrics=self.metrics)
        self._compacting: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, background: bool = True) -> None:
        self.share_secret = load_or_create_secret(self.settings.data, self.settings.secret)
        await self.catalog.open()
        recovered = self.spool.open()
        if recovered:
            log.info("spool: recovered %d acknowledged batches", recovered)
        if background:
            self._flusher = asyncio.create_task(self._flush_loop(), name="flusher")
            if self.settings.compact_after > 0:
                self._compacting = asyncio.create_task(self._compact_loop(), name="compactor")

    async def stop(self) -> None:
        """Flush everything acknowledged, then close (SIGTERM ends here)."""
        self._stopping = True
        if self._compacting is not None:
            # Safe at any point: an object put but not swapped in is an orphan a later pass deletes.
            self._compacting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compacting
        self.compactor.close()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        try:
            await self.flush()
        except StoreError as exc:
            log.error("final flush failed, the spool keeps the data for the next start: %s", exc)
        self.spool.close()
        await self.catalog.close()
        await self.store.close()

    async def ensure_default_project(self) -> tuple[Project, str | None]:
        """The first project, created (with its API key returned) when there is none."""
        projects = await self.catalog.projects()
        if projects:
            return projects[0], None
        return await self.catalog.create_project("default", self.settings.retention_days)

    # -- ingest ----------------------------------------------------------------------------------

    async def accept(self, project: Project, batches: list[Batch]) -> int:
        """Make ``batches`` durable; returns how many events were new. A 200 may follow at once."""
        keys = list(dict.fromkeys((project.id, b.session_id, b.batch_id) for b in batches))
        # A copy of a batch still on its way to the spool (a beacon sent on page hide while the
        # fetch of that batch is in flight, a client retrying after its own timeout) waits for
        # it: both would pass the duplicate check, land in one batch object and play twice.
        # Nothing is claimed while waiting, so two requests cannot wait for each other.
        while in_flight := [self._accepting[k] for k in keys if k in self._accepting]:
            await in_flight[0].wait()
        for key in keys:
            self._accepting[key] = asyncio.Event()
        written = None
        try:
            records = await self._records(project, batches)
            written = self.spool.submit(records)
        finally:
            # The claims end when the batches are on disk (or failed), not when the request does: a
            # client that times out closes its connection, aiohttp cancels the handler, and the
            # retry it sends at once must find the write under way, not make a second one.
            if written is None:
                self._release(keys, None)
            else:
                written.add_done_callback(lambda done: self._release(keys, done))
        # Shielded: cancelling the request must not cancel the spool's future (the write goes on).
        await asyncio.shield(written)
        events = sum(r.count for r in records)
        self.metrics.inc("replay_events_ingested_total", events)
        self.metrics.inc("replay_bytes_ingested_total", sum(len(r.items) for r in records))
        # Counted on the active segment only: what a flush in progress (or a failing store) still
        # holds must not ask for another flush at once. A flush costs per session it touches, so
        # a second one sealing the second's worth of uploads that came in meanwhile cost nearly
        # as much as the first (bench/concurrency.py: two flushes every ~5 s at 1,000 sessions).
        if self.spool.unsealed_bytes >= self.settings.flush_bytes:
            self._flush_wanted.set()
        return events

    def _release(self, keys: list[tuple[str, str, str]], written: asyncio.Future | None) -> None:
        for key in keys:
            self._accepting.pop(key).set()
        if written is not None and not written.cancelled():
            written.exception()  # retrieved here too: a request that went away never awaits it

    async def _records(self, project: Project, batches: list[Batch]) -> list[SpooledBatch]:
        """Spool records of the batches not stored yet, masked and packed."""
        records = []
        kept: set[tuple[str, str]] = set()
        for batch in batches:
            if self.catalog.is_erased(project.id, batch.session_id):
                # Erasure wins over a browser still recording that session: acknowledged, never kept.
                self.metrics.inc("replay_erased_batches_dropped_total")
                continue
            key = (project.id, batch.session_id, batch.batch_id)
            if (batch.session_id, batch.batch_id) in kept or self.spool.has_batch(*key) or \
                    await self.catalog.has_batch(*key):
                self.metrics.inc("replay_duplicate_batches_total")
                continue
            kept.add((batch.session_id, batch.batch_id))
            # The policy applies before anything reaches disk (DESIGN: invariants).
            await self.privacy.enforce(project, batch)
            if batch.packed is not None:  # never decoded whole (ingest/packed.py)
                items = codec.join_packed_items(batch.window_id, batch.packed.events)
                count, stats = len(batch.packed.events), summarize(batch.packed.fields)
                self.metrics.inc("replay_batches_packed_total")
            else:
                try:
                    items = codec.pack_items(batch.window_id, batch.events)
                except (ValueError, OverflowError, TypeError) as exc:
                    # Packing stops at 1,024 levels of nesting and at integers over 64 bits: not a 500.
                    raise BadRequest(f"events cannot be stored: {exc}", code="invalid_events") from None
                count, stats = len(batch.events), summarize(batch.events)
            records.append(SpooledBatch(
                project.id, batch.session_id, batch.window_id, batch.batch_id, batch.distinct_id,
                count, items, stats, batch.meta, project.retention_days, int(time.time() * 1000)))
        return records

    # -- flush -----------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Seal the spool and write every sealed segment; returns objects written. Raises StoreError."""
        async with self._flush_lock:
            await self.spool.seal()
            written = 0
            for segment in self.spool.sealed():
                started = time.perf_counter()
                try:
                    objects = await self.writer.write(segment)
                except StoreError:
                    self.metrics.inc("replay_store_errors_total", op="flush")
                    raise
                self.spool.release(segment)
                self.metrics.observe_flush(time.perf_counter() - started)
                written += len(objects)
            return written

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.flush_interval):
                    await self._flush_wanted.wait()
            try:
                await self.flush()
            except StoreError as exc:
                # The spool keeps everything acknowledged; the next round tries again.
                log.warning("flush failed, the spool holds %d batches: %s", self.spool.depth, exc)
            except Exception:
                log.exception("flush failed")
            # Uploads acknowledged while this flush waited to seal asked for it again; only what
            # came in since the seal counts.
            if self.spool.unsealed_bytes < self.settings.flush_bytes:
                self._flush_wanted.clear()

    # -- compaction ------------------------------------------------------------------------------

    async def compact(self, idle_seconds: float, *, project_id: str | None = None, session_id: str | None = None,
                      sweep_orphans: bool = False) -> PassReport:
        """Compact idle sessions that have nothing in the spool (their next flush would only add blocks)."""
        return await self.compactor.run_pass(idle_seconds, project_id=project_id, session_id=session_id,
                                             skip=set(self.spool.spooled_sessions()), sweep_orphans=sweep_orphans)

    async def _compact_loop(self) -> None:
        interval = min(60.0, max(0.2, self.settings.compact_after / 4))
        last_orphan_sweep = time.monotonic()
        backlog = False
        while True:
            if not backlog:
                await asyncio.sleep(interval)
            # Orphans (objects of crashed compactions) need a listing of the store: rarely.
            sweep = time.monotonic() - last_orphan_sweep > self.compactor.orphan_grace
            backlog = False
            try:
                report = await self.compact(self.settings.compact_after, sweep_orphans=sweep)
                if sweep:
                    last_orphan_sweep = time.monotonic()
                backlog = bool(report.compacted) and len(report.results) + report.failed >= 100
            except StoreError as exc:
                self.metrics.inc("replay_store_errors_total", op="compact")
                log.warning("compaction pass failed, the next one retries: %s", exc)
            except Exception:
                log.exception("compaction pass failed")

    # -- reading ---------------------------------------------------------------------------------

    async def session_events(self, project_id: str, session_id: str,
                             from_ts: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """A session's events in timestamp order: stored blocks and the spool, each batch once;
        with ``from_ts``, only events at or after it (a live player's poll)."""
        async for _window, event in self.session_window_events(project_id, session_id, from_ts):
            yield event

    async def session_window_events(self, project_id: str, session_id: str,
                                    from_ts: int | None = None) -> AsyncIterator[list[Any]]:
        """``session_events`` as ``[window_id, event]`` pairs (the audit keeps windows apart)."""
        if self.catalog.is_erased(project_id, session_id):
            return
        # The spool first: a flush that commits and releases a batch between the two reads then
        # leaves it in the catalog's answer; the other way round it could be in neither.
        spooled = self.spool.session_batches(project_id, session_id)
        blocks = await self.catalog.blocks(project_id, session_id)
        if from_ts is not None:
            blocks = [b for b in blocks if b.last_ts >= from_ts]
            spooled = [b for b in spooled if b.stats.last_ts is None or b.stats.last_ts >= from_ts]
        async for item in session_items(self.store, blocks, spooled):
            if from_ts is None or item[1]["timestamp"] >= from_ts:
                yield item

    async def session_summary(self, project_id: str, session_id: str) -> SessionSummary | None:
        """The catalog's summary with the batches it has not seen yet (still in the spool) folded in."""
        if self.catalog.is_erased(project_id, session_id):
            return None
        spooled = self.spool.session_batches(project_id, session_id)
        summary = await self.catalog.session(project_id, session_id)
        pending = [b for b in spooled if not await self.catalog.has_batch(project_id, session_id, b.batch_id)]
        return with_pending(summary, project_id, session_id, pending)

    async def pending_sessions(self, project_id: str) -> list[SessionSummary]:
        """Sessions of a project that only the spool knows of yet (not flushed once), newest first."""
        found = []
        for pid, sid in self.spool.spooled_sessions():
            if pid != project_id or self.catalog.is_erased(pid, sid) or await self.catalog.session(pid, sid):
                continue
            summary = with_pending(None, pid, sid, self.spool.session_batches(pid, sid))
            if summary is not None:
                found.append(summary)
        return sorted(found, key=lambda s: s.start_ts, reverse=True)

    async def session_exists(self, project_id: str, session_id: str) -> bool:
        if self.catalog.is_erased(project_id, session_id):
            return False
        return bool(self.spool.session_batches(project_id, session_id)) or \
            await self.catalog.session(project_id, session_id) is not None

    async def erase_session(self, project_id: str, session_id: str) -> bool:
        """Erase a session: its index rows go and a tombstone stays (honoured by reads, flushes and
        reindex); objects left holding no live block are deleted now, shared ones expire with
        retention or compaction. Returns False when there was nothing to erase."""
        if not await self.session_exists(project_id, session_id):
            return False  # no tombstone for an id never seen: it would silently drop a future session
        orphans = await self.catalog.erase_session(project_id, session_id)
        for key in orphans:
            try:
                await self.store.delete(key)
            except StoreError as exc:
                self.metrics.inc("replay_store_errors_total", op="delete")
                log.warning("erasure: %s stays until retention removes it: %s", key, exc)
                continue
            await self.catalog.forget_object(key)
        self.metrics.inc("replay_erased_sessions_total")
        return True
