"""The embedded catalog on SQLite: one connection, owned by one thread, so the loop never blocks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar
from urllib.parse import unquote, urlparse

import orjson

from replay.catalog.records import ApiKey, BlockRow, Project, SessionSummary
from replay.catalog.summary import EventStats
from replay.codec import Footer

T = TypeVar("T")
PROJECT_CACHE_SECONDS = 2.0  # ingest reuses a project row (and its policy) this long; then reads it again

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, ingest_token TEXT NOT NULL UNIQUE,
    retention_days INTEGER NOT NULL, policy TEXT NOT NULL DEFAULT '{}', created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES projects(id), name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, created_ms INTEGER NOT NULL, revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL, created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    project_id TEXT NOT NULL, session_id TEXT NOT NULL, distinct_id TEXT, window_ids TEXT NOT NULL,
    start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
    active_ms INTEGER NOT NULL, clicks INTEGER NOT NULL, keypresses INTEGER NOT NULL,
    console_errors INTEGER NOT NULL, first_url TEXT, event_count INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL, stored_bytes INTEGER NOT NULL, stats TEXT NOT NULL,
    meta TEXT NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (project_id, session_id)
);
CREATE INDEX IF NOT EXISTS sessions_by_start ON sessions (project_id, start_ts DESC);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (project_id, distinct_id, start_ts DESC);
CREATE TABLE IF NOT EXISTS blocks (
    project_id TEXT NOT NULL, session_id TEXT NOT NULL, object_key TEXT NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    event_count INTEGER NOT NULL, batches TEXT NOT NULL,
    PRIMARY KEY (object_key, offset)
);
CREATE INDEX IF NOT EXISTS blocks_by_session ON blocks (project_id, session_id, first_ts);
CREATE INDEX IF NOT EXISTS objects_by_kind ON objects (kind);
CREATE TABLE IF NOT EXISTS garbage (
    key TEXT PRIMARY KEY, since_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    project_id TEXT NOT NULL, session_id TEXT NOT NULL, batch_id TEXT NOT NULL,
    PRIMARY KEY (project_id, session_id, batch_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erased_sessions (
    project_id TEXT NOT NULL, session_id TEXT NOT NULL, erased_ms INTEGER NOT NULL,
    PRIMARY KEY (project_id, session_id)
) WITHOUT ROWID;
"""

SORTABLE = {"start": "start_ts", "duration": "duration_ms", "active": "active_ms", "clicks": "clicks",
            "errors": "console_errors", "events": "event_count", "user": "distinct_id", "end": "end_ts"}


def hash_secret(secret: str) -> str:
    """Keys are random and long, so one SHA-256 is enough (no password-style stretching needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class BatchDelta:
    """One batch of a block: what it adds to its session's summary, unless the session holds it already."""

    batch_id: str
    stats: EventStats
    size_bytes: int


class BatchPart(Protocol):
    """What a delta needs of a batch: a ``BatchDelta``, or a flush's ``SpooledBatch`` as it is."""

    @property
    def batch_id(self) -> str: ...

    @property
    def stats(self) -> EventStats: ...

    @property
    def size_bytes(self) -> int: ...


@dataclass
class SessionDelta:
    """What one stored block adds to a session's summary: its ``batches`` (``stats`` is theirs combined)."""

    project_id: str
    session_id: str
    stats: EventStats
    distinct_id: str | None
    window_ids: list[str]
    meta: dict[str, Any]
    stored_bytes: int
    batches: Sequence[BatchPart]

    @property
    def size_bytes(self) -> int:
        return sum(b.size_bytes for b in self.batches)

    def without(self, known: set[tuple[str, str, str]]) -> "SessionDelta":
        """This block's additions less the batches in ``known`` (already stored, by another receiver)."""
        new = [b for b in self.batches if (self.project_id, self.session_id, b.batch_id) not in known]
        return replace(self, stats=EventStats.combine(b.stats for b in new), batches=new)


@dataclass
class SessionQuery:
    distinct_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    url_contains: str | None = None
    min_duration_ms: int | None = None
    has_errors: bool | None = None
    sort: str = "start"
    descending: bool = True
    limit: int = 50
    offset: int = 0


def _known_batches(db: sqlite3.Connection, keys: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """Those of ``(project_id, session_id, batch_id)`` the catalog holds (a primary-key lookup each)."""
    return {k for k in keys if db.execute(
        "SELECT 1 FROM batches WHERE project_id=? AND session_id=? AND batch_id=?", k).fetchone()}


class SqliteCatalog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        self._db: sqlite3.Connection | None = None
        # A second, read-only connection used on the event loop itself, for the one lookup every
        # upload makes (has_batch): a primary-key read takes microseconds, a hop to the catalog
        # thread and back costs ~100 us of CPU. WAL lets it read while the thread writes.
        self._reader: sqlite3.Connection | None = None
        # token -> (project, when read): ingest looks its project up per request. Entries expire so a
        # policy changed by another process (the CLI, another receiver) applies here within seconds.
        self._token_cache: dict[str, tuple[Project, float]] = {}
        self._erased: set[tuple[str, str]] = set()  # tombstones, all in memory: erasures are rare
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file we opened

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- lifecycle -------------------------------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._erased = {(r[0], r[1]) for r in db.execute("SELECT project_id, session_id FROM erased_sessions")}
        st = self.path.stat()
        self._identity = (st.st_dev, st.st_ino)
        self._db = db
        reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        reader.execute("PRAGMA query_only=ON")
        reader.execute("PRAGMA busy_timeout=5000")
        self._reader = reader

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "catalog not open"
        return self._db

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.db)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    def _check(self) -> None:
        self.db.execute("SELECT count(*) FROM projects").fetchone()
        # A database file deleted or replaced under us still answers, but every write would be lost.
        st = self.path.stat()
        if (st.st_dev, st.st_ino) != self._identity:
            raise sqlite3.OperationalError(f"{self.path} was replaced or removed since it was opened")

    async def check(self) -> None:
        await self._run(self._check)

    # -- projects and keys -----------------------------------------------------------------------

    @staticmethod
    def _project(row: sqlite3.Row) -> Project:
        return Project(row["id"], row["name"], row["ingest_token"], row["retention_days"],
                       json.loads(row["policy"]), row["created_ms"])

    def _create_project(self, name: str, retention_days: int) -> tuple[Project, str]:
        now = int(time.time() * 1000)
        project = Project(f"prj-{secrets.token_hex(6)}", name, f"rpi_{secrets.token_urlsafe(24)}",
                          retention_days, {}, now)

        def tx(db: sqlite3.Connection) -> str:
            db.execute("INSERT INTO projects VALUES (?,?,?,?,?,?)",
                       (project.id, name, project.ingest_token, retention_days, "{}", now))
            return self._insert_key(db, project.id, "default")[1]

        return project, self._tx(tx)

    async def create_project(self, name: str, retention_days: int = 30) -> tuple[Project, str]:
        """A new project and its first secret API key (the only time the key is seen in clear)."""
        return await self._run(self._create_project, name, retention_days)

    async def projects(self) -> list[Project]:
        rows = await self._run(lambda: self.db.execute("SELECT * FROM projects ORDER BY created_ms").fetchall())
        return [self._project(r) for r in rows]

    async def project(self, project_id: str) -> Project | None:
        row = await self._run(lambda: self.db.execute("SELECT * FROM projects WHERE id=?", (project_id,)).fetchone())
        return self._project(row) if row else None

    async def project_by_token(self, token: str) -> Project | None:
        cached = self._token_cache.get(token)
        if cached is not None:
            if time.monotonic() - cached[1] < PROJECT_CACHE_SECONDS:
                return cached[0]
            # One upload reads the row again; the ones arriving meanwhile keep the row they had
            # (every upload in flight read it at once when it expired).
            self._token_cache[token] = (cached[0], time.monotonic())
        row = await self._run(lambda: self.db.execute("SELECT * FROM projects WHERE ingest_token=?", (token,)).fetchone())
        if row is None:
            self._token_cache.pop(token, None)
            return None
        project = self._project(row)
        self._token_cache[token] = (project, time.monotonic())
        return project

    async def set_policy(self, project_id: str, policy: dict[str, Any]) -> None:
        def tx(db: sqlite3.Connection) -> None:
            if db.execute("UPDATE projects SET policy=? WHERE id=?", (json.dumps(policy), project_id)).rowcount != 1:
                raise KeyError(project_id)

        await self._run(self._tx, tx)
        self._token_cache.clear()

    @staticmethod
    def _insert_key(db: sqlite3.Connection, project_id: str, name: str) -> tuple[ApiKey, str]:
        secret = f"rpk_{secrets.token_urlsafe(32)}"
        key = ApiKey(f"key-{secrets.token_hex(6)}", project_id, name, secret[:10], int(time.time() * 1000))
        db.execute("INSERT INTO api_keys VALUES (?,?,?,?,?,?,NULL)",
                   (key.id, project_id, name, hash_secret(secret), key.prefix, key.created_ms))
        return key, secret

    async def create_key(self, project_id: str, name: str = "") -> tuple[ApiKey, str]:
        return await self._run(self._tx, lambda db: self._insert_key(db, project_id, name))

    async def keys(self, project_id: str) -> list[ApiKey]:
        rows = await self._run(lambda: self.db.execute(
            "SELECT * FROM api_keys WHERE project_id=? ORDER BY created_ms", (project_id,)).fetchall())
        return [ApiKey(r["id"], r["project_id"], r["name"], r["prefix"], r["created_ms"], r["revoked_ms"]) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        now = int(time.time() * 1000)
        n = await self._run(lambda: self.db.execute(
            "UPDATE api_keys SET revoked_ms=? WHERE id=? AND revoked_ms IS NULL", (now, key_id)).rowcount)
        return n == 1

    async def project_for_key(self, secret: str) -> Project | None:
        """The project a live API key belongs to, or None."""
        row = await self._run(lambda: self.db.execute(
            "SELECT p.* FROM api_keys k JOIN projects p ON p.id = k.project_id "
            "WHERE k.key_hash=? AND k.revoked_ms IS NULL", (hash_secret(secret),)).fetchone())
        return self._project(row) if row else None

    async def live_key(self, secret: str) -> ApiKey | None:
        """The live API key a secret is (its id names it in UI sign-in cookies), or None."""
        row = await self._run(lambda: self.db.execute(
            "SELECT * FROM api_keys WHERE key_hash=? AND revoked_ms IS NULL", (hash_secret(secret),)).fetchone())
        return ApiKey(row["id"], row["project_id"], row["name"], row["prefix"], row["created_ms"]) if row else None

    # -- the index -------------------------------------------------------------------------------

    def _commit_object(self, key: str, footer: Footer, size: int, deltas: list[SessionDelta]) -> bool:
        def tx(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM objects WHERE key=?", (key,)).fetchone():
                return False  # already catalogued: a retried flush or a second reindex
            # Erased sessions never come back: not from a flush of what the spool still held, nor from reindex.
            erased = {(r[0], r[1]) for r in db.execute("SELECT project_id, session_id FROM erased_sessions")} \
                if self._erased else set()
            if erased:
                footer.blocks[:] = [b for b in footer.blocks if (b.project_id, b.session_id) not in erased]
                deltas[:] = [d for d in deltas if (d.project_id, d.session_id) not in erased]
            db.execute("INSERT INTO objects VALUES (?,?,?,?)", (key, footer.kind, size, footer.created_ms))
            db.executemany(
                "INSERT INTO blocks VALUES (?,?,?,?,?,?,?,?,?)",
                [(b.project_id, b.session_id, key, b.offset, b.length, b.first_ts, b.last_ts, b.event_count,
                  orjson.dumps(b.batches).decode()) for b in footer.blocks])
            ids = list(dict.fromkeys((b.project_id, b.session_id, str(bid)) for b in footer.blocks
                                     for bid, _n in b.batches))
            db.execute("SAVEPOINT batch_ids")
            if db.executemany("INSERT OR IGNORE INTO batches VALUES (?,?,?)", ids).rowcount < len(ids):
                # Some batch is stored already (a copy another receiver kept): it plays once, as the
                # reader drops the copy, and must count once. Rare, so only then are ids looked up.
                db.execute("ROLLBACK TO batch_ids")
                known = _known_batches(db, ids)
                db.executemany("INSERT OR IGNORE INTO batches VALUES (?,?,?)", ids)
                deltas[:] = [d.without(known) for d in deltas]
            db.execute("RELEASE batch_ids")
            for delta in deltas:
                self._merge_session(db, delta)
            return True

        return self._tx(tx)

    async def commit_object(self, key: str, footer: Footer, size: int, deltas: list[SessionDelta]) -> bool:
        """Index a stored object's blocks and fold them into session summaries, in one transaction.

        Returns False (and changes nothing) when the object is already indexed.
        """
        return await self._run(self._commit_object, key, footer, size, deltas)

    @staticmethod
    def _merge_session(db: sqlite3.Connection, d: SessionDelta) -> None:
        row = db.execute("SELECT * FROM sessions WHERE project_id=? AND session_id=?",
                         (d.project_id, d.session_id)).fetchone()
        stats, windows, meta = d.stats, list(d.window_ids), dict(d.meta)
        distinct, size, stored = d.distinct_id, d.size_bytes, d.stored_bytes
        if row is not None:
            # orjson: this runs once per session per flush, and the stdlib codec was a third of it.
            stats = EventStats.from_dict(orjson.loads(row["stats"])).merge(stats)
            known = orjson.loads(row["window_ids"])
            windows = known + [w for w in windows if w not in known]
            meta = {**orjson.loads(row["meta"]), **meta}
            distinct = distinct or row["distinct_id"]
            size += row["size_bytes"]
            stored += row["stored_bytes"]
        if stats.first_ts is None or stats.last_ts is None:
            return
        db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (d.project_id, d.session_id, distinct, orjson.dumps(windows).decode(), stats.first_ts, stats.last_ts,
             stats.last_ts - stats.first_ts, stats.active_ms, stats.clicks, stats.keypresses,
             stats.console_errors, stats.urls[0] if stats.urls else meta.get("url"), stats.events, size, stored,
             orjson.dumps(stats.to_dict()).decode(), orjson.dumps(meta).decode(), int(time.time() * 1000)))

    async def has_batch(self, project_id: str, session_id: str, batch_id: str) -> bool:
        """Whether this batch is already stored (read on the calling thread: see ``_reader``)."""
        assert self._reader is not None, "catalog not open"
        row = self._reader.execute(
            "SELECT 1 FROM batches WHERE project_id=? AND session_id=? AND batch_id=?",
            (project_id, session_id, batch_id)).fetchone()
        return row is not None

    async def blocks(self, project_id: str, session_id: str) -> list[BlockRow]:
        """A session's blocks by first timestamp (ties in storage order)."""
        rows = await self._run(lambda: self.db.execute(
            "SELECT b.*, o.kind FROM blocks b LEFT JOIN objects o ON o.key = b.object_key "
            "WHERE b.project_id=? AND b.session_id=? ORDER BY b.first_ts, b.object_key, b.offset",
            (project_id, session_id)).fetchall())
        return [BlockRow(r["object_key"], r["offset"], r["length"], r["first_ts"], r["last_ts"],
                         r["event_count"], json.loads(r["batches"]), r["kind"] == "session") for r in rows]

    @staticmethod
    def _summary(r: sqlite3.Row) -> SessionSummary:
        stats = json.loads(r["stats"])
        return SessionSummary(
            r["project_id"], r["session_id"], r["distinct_id"], json.loads(r["window_ids"]), r["start_ts"],
            r["end_ts"], r["duration_ms"], r["active_ms"], r["clicks"], r["keypresses"], r["console_errors"],
            r["first_url"], stats.get("urls", []), r["event_count"], r["size_bytes"], r["stored_bytes"],
            json.loads(r["meta"]), stats.get("viewport"), r["updated_ms"])

    async def session(self, project_id: str, session_id: str) -> SessionSummary | None:
        row = await self._run(lambda: self.db.execute(
            "SELECT * FROM sessions WHERE project_id=? AND session_id=?", (project_id, session_id)).fetchone())
        return self._summary(row) if row else None

    async def sessions(self, project_id: str, q: SessionQuery) -> tuple[list[SessionSummary], int]:
        """One page of a project's sessions matching ``q``, and how many match in all."""
        where, args = ["project_id=?"], [project_id]
        if q.distinct_id:
            where.append("distinct_id=?"); args.append(q.distinct_id)
        if q.since_ms is not None:
            where.append("end_ts>=?"); args.append(q.since_ms)
        if q.until_ms is not None:
            where.append("start_ts<=?"); args.append(q.until_ms)
        if q.url_contains:
            where.append("instr(lower(json_extract(stats, '$.urls')), lower(?)) > 0")
            args.append(q.url_contains)
        if q.min_duration_ms:
            where.append("duration_ms>=?"); args.append(q.min_duration_ms)
        if q.has_errors is not None:
            where.append("console_errors>0" if q.has_errors else "console_errors=0")
        order = SORTABLE.get(q.sort, "start_ts")
        direction = "DESC" if q.descending else "ASC"
        sql_where = " AND ".join(where)

        def query() -> tuple[list[sqlite3.Row], int]:
            rows = self.db.execute(
                f"SELECT * FROM sessions WHERE {sql_where} ORDER BY {order} {direction}, session_id LIMIT ? OFFSET ?",
                (*args, q.limit, q.offset)).fetchall()
            total = self.db.execute(f"SELECT count(*) FROM sessions WHERE {sql_where}", args).fetchone()[0]
            return rows, total

        rows, total = await self._run(query)
        return [self._summary(r) for r in rows], total

    # -- compaction ------------------------------------------------------------------------------

    async def compaction_candidates(self, idle_before_ms: int, project_id: str | None = None,
                                    session_id: str | None = None, limit: int = 100) -> list[tuple[str, str]]:
        """Sessions with blocks still in batch objects, last catalogued at or before ``idle_before_ms``."""
        where, args = ["o.kind='batch'", "s.updated_ms<=?"], [idle_before_ms]
        if project_id is not None:
            where.append("b.project_id=?"); args.append(project_id)
        if session_id is not None:
            where.append("b.session_id=?"); args.append(session_id)
        rows = await self._run(lambda: self.db.execute(
            "SELECT b.project_id, b.session_id, max(s.updated_ms) AS u FROM objects o "
            "JOIN blocks b ON b.object_key=o.key "
            "JOIN sessions s ON s.project_id=b.project_id AND s.session_id=b.session_id "
            f"WHERE {' AND '.join(where)} GROUP BY b.project_id, b.session_id ORDER BY u LIMIT ?",
            (*args, limit)).fetchall())
        return [(r[0], r[1]) for r in rows]

    def _swap_session_blocks(self, project_id: str, session_id: str, key: str, footer: Footer, size: int,
                             replaced: list[list[Any]]) -> list[str] | None:
        def tx(db: sqlite3.Connection) -> list[str] | None:
            current = {(r[0], r[1]) for r in db.execute(
                "SELECT object_key, offset FROM blocks WHERE project_id=? AND session_id=?", (project_id, session_id))}
            if current != {(k, o) for k, o in replaced}:
                return None  # blocks arrived (or went) meanwhile: the caller's object is stale
            db.execute("INSERT INTO objects VALUES (?,?,?,?)", (key, footer.kind, size, footer.created_ms))
            db.execute("DELETE FROM blocks WHERE project_id=? AND session_id=?", (project_id, session_id))
            db.executemany(
                "INSERT INTO blocks VALUES (?,?,?,?,?,?,?,?,?)",
                [(b.project_id, b.session_id, key, b.offset, b.length, b.first_ts, b.last_ts, b.event_count,
                  json.dumps(b.batches)) for b in footer.blocks])
            db.execute("UPDATE sessions SET stored_bytes=? WHERE project_id=? AND session_id=?",
                       (sum(b.length for b in footer.blocks), project_id, session_id))
            freed = sorted(k for k in {k for k, _o in replaced}
                           if not db.execute("SELECT 1 FROM blocks WHERE object_key=? LIMIT 1", (k,)).fetchone())
            now = int(time.time() * 1000)
            db.executemany("INSERT OR IGNORE INTO garbage VALUES (?,?)", [(k, now) for k in freed])
            return freed

        return self._tx(tx)

    async def swap_session_blocks(self, project_id: str, session_id: str, key: str, footer: Footer, size: int,
                                  replaced: list[list[Any]]) -> list[str] | None:
        """Point a session at its compacted object ``key``, in one transaction.

        ``replaced`` is the session's ``[[object_key, offset], ...]`` as read before compacting; if
        the session's blocks differ now, nothing changes and None is returned. Otherwise returns
        the object keys no block references any more, recorded as garbage (see ``garbage_due``).
        The summary stays as it is but for ``stored_bytes``.
        """
        return await self._run(self._swap_session_blocks, project_id, session_id, key, footer, size, replaced)

    async def mark_garbage(self, keys: list[str]) -> None:
        """Record objects no block references (``replay reindex`` finds them replaced)."""
        now = int(time.time() * 1000)
        await self._run(lambda: self.db.executemany("INSERT OR IGNORE INTO garbage VALUES (?,?)",
                                                    [(k, now) for k in keys]))

    async def garbage_due(self, before_ms: int, limit: int = 1000) -> list[str]:
        """Garbage recorded at or before ``before_ms`` that still no block references."""
        rows = await self._run(lambda: self.db.execute(
            "SELECT key FROM garbage g WHERE since_ms<=? AND NOT EXISTS "
            "(SELECT 1 FROM blocks b WHERE b.object_key=g.key) ORDER BY since_ms LIMIT ?",
            (before_ms, limit)).fetchall())
        return [r[0] for r in rows]

    async def forget_objects(self, keys: list[str]) -> None:
        """Drop deleted objects from the catalog (those no block references; others stay)."""
        def tx(db: sqlite3.Connection) -> None:
            for k in keys:
                if not db.execute("SELECT 1 FROM blocks WHERE object_key=? LIMIT 1", (k,)).fetchone():
                    db.execute("DELETE FROM objects WHERE key=?", (k,))
                    db.execute("DELETE FROM garbage WHERE key=?", (k,))

        await self._run(self._tx, tx)

    async def known_objects(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` the catalog holds."""
        def query() -> set[str]:
            found: set[str] = set()
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                found.update(r[0] for r in self.db.execute(
                    f"SELECT key FROM objects WHERE key IN ({','.join('?' * len(part))})", part))
            return found

        return await self._run(query)

    def is_erased(self, project_id: str, session_id: str) -> bool:
        """Whether the session was erased (a tombstone exists); answered from memory."""
        return (project_id, session_id) in self._erased

    def _erase_session(self, project_id: str, session_id: str) -> list[str]:
        def tx(db: sqlite3.Connection) -> list[str]:
            keys = [r[0] for r in db.execute("SELECT DISTINCT object_key FROM blocks WHERE project_id=? AND session_id=?",
                                            (project_id, session_id))]
            for table in ("blocks", "batches", "sessions"):
                db.execute(f"DELETE FROM {table} WHERE project_id=? AND session_id=?", (project_id, session_id))
            db.execute("INSERT OR IGNORE INTO erased_sessions VALUES (?,?,?)",
                       (project_id, session_id, int(time.time() * 1000)))
            return [k for k in keys if not db.execute("SELECT 1 FROM blocks WHERE object_key=? LIMIT 1", (k,)).fetchone()]

        orphans = self._tx(tx)
        self._erased.add((project_id, session_id))
        return orphans

    async def erase_session(self, project_id: str, session_id: str) -> list[str]:
        """Drop a session's summary, blocks and batch ids and keep a tombstone, in one transaction.

        Returns the keys of objects no block references any more (the caller deletes them).
        """
        return await self._run(self._erase_session, project_id, session_id)

    async def forget_object(self, key: str) -> None:
        """Drop the row of a deleted object, unless blocks point into it again."""
        await self._run(self._tx, lambda db: db.execute(
            "DELETE FROM objects WHERE key=? AND NOT EXISTS (SELECT 1 FROM blocks WHERE object_key=?)", (key, key)))

    async def object_keys(self) -> set[str]:
        rows = await self._run(lambda: self.db.execute("SELECT key FROM objects").fetchall())
        return {r[0] for r in rows}

    async def clear_index(self) -> None:
        """Forget the derived index (sessions, blocks, batches, objects); projects and keys stay."""
        def tx(db: sqlite3.Connection) -> None:
            for table in ("blocks", "batches", "sessions", "objects", "garbage"):
                db.execute(f"DELETE FROM {table}")

        await self._run(self._tx, tx)


def open_catalog(url: str) -> SqliteCatalog:
    """The catalog a URL names: ``sqlite:///path``."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return SqliteCatalog(unquote(parsed.path))
    raise ValueError(f"unsupported catalog URL {url!r}: use sqlite:///path")
