"""Real servers for tests: Replay in a background thread or a subprocess, and moto's S3 on loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Coroutine, TypeVar

import requests
import zstandard
from aiohttp import web

from replay import codec
from replay.config import Settings
from replay.service import Service
from replay.storage import BlobStore
from replay.web.app import start_server

# In CI a missing browser, tarball, S3 server or compiled part is a failure, never a skip.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_native_walk() -> None:
    """The masking walk's C loop must be built in CI (the install builds it); elsewhere tests of it skip."""
    from replay.privacy import walk

    _require_built("replay.privacy._native_walk", walk.use_native_walk(True))


def require_json_packer() -> None:
    """The JSON-to-msgpack packer must be built in CI; elsewhere tests of it skip."""
    from replay.ingest import packed

    _require_built("replay.ingest._json_to_msgpack", packed.BUILT)


def _require_built(module: str, built: bool) -> None:
    import pytest

    if built:
        return
    if IN_CI:
        pytest.fail(f"{module} is not built (it needs a C compiler and Python's headers)")
    pytest.skip(f"{module} is not built")

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


@contextmanager
def serve_app(app: web.Application) -> Iterator[str]:
    """Any aiohttp app (a test site, a wiretap) on 127.0.0.1:<free port> in its own thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    base: list[str] = []

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base.append("http://127.0.0.1:%d" % runner.addresses[0][1])

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield base[0]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class TestProject:
    id: str
    token: str
    api_key: str


class ThreadedReplay:
    """``replay serve`` in-process on its own event loop thread, on 127.0.0.1 and a free port."""

    def __init__(self, settings: Settings, store: BlobStore | None = None):
        self.settings = settings
        self._store = store
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.service: Service | None = None
        self.url = ""

    def start(self) -> "ThreadedReplay":
        self._thread.start()

        async def boot():
            self.service = Service(self.settings, store=self._store)
            await self.service.start()
            self._runner, port = await start_server(self.service, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{port}"

        self.call(boot())
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def flush(self) -> int:
        return self.call(self.service.flush())

    def create_project(self, name: str = "test", retention_days: int = 30) -> TestProject:
        project, key = self.call(self.service.catalog.create_project(name, retention_days))
        return TestProject(project.id, project.ingest_token, key)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown():
            await self._runner.cleanup()
            await self.service.stop()

        try:
            self.call(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


class ReplayProcess:
    """``python -m replay serve`` as a child process (for SIGKILL and SIGTERM tests)."""

    def __init__(self, data: Path, *extra: str, env: dict[str, str] | None = None):
        self.data = data
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.output: list[str] = []

    def start(self, timeout: float = 30) -> "ReplayProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "replay", "serve", "--data", str(self.data), "--host", "127.0.0.1",
             "--port", "0", *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("replay serve exited:\n" + "".join(self.output))
            self.output.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise RuntimeError("replay serve did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def printed(self, pattern: str) -> str:
        """The first group of ``pattern`` in the first line of output it matches (the startup banner)."""
        for line in self.output:
            m = re.search(pattern, line)
            if m:
                return m.group(1)
        raise AssertionError(f"{pattern} not in output:\n{''.join(self.output)}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def start_test_server(data: Path, store: BlobStore | None = None, **overrides: Any) -> ThreadedReplay:
    """A Replay server for tests on ``data``: flushes only when a test asks (or tests the timer)."""
    overrides.setdefault("flush_interval", 3600.0)
    overrides.setdefault("node_id", "test")
    from replay.config import settings_from
    return ThreadedReplay(settings_from(environ={}, data=data, **overrides), store=store).start()


def mutated(rng: random.Random, data: bytes, tokens: list[bytes]) -> bytes:
    """``data`` with one to five edits, for the fuzz scripts: ``tokens`` inserted, bytes deleted or replaced."""
    s = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        op, pos = rng.random(), rng.randrange(len(s) + 1)
        if op < 0.4:
            s[pos:pos] = rng.choice(tokens)
        elif op < 0.7 and s:
            del s[pos:pos + rng.randrange(1, 8)]
        elif s:
            s[min(pos, len(s) - 1)] = rng.randrange(256)
    return bytes(s)


def load_fixture_events(name: str = "rrweb-player-events.json") -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name).read_text())


# Every real recording committed: the rrweb-player demo and the 14 browser-made privacy fixtures.
RECORDINGS = [FIXTURES / "rrweb-player-events.json", *sorted((FIXTURES / "privacy").glob("*.json"))]


def load_recording(path: Path) -> list[dict[str, Any]]:
    """The events of a recording file (a bare array, or the privacy fixtures' ``{"events": [...]}``)."""
    data = json.loads(path.read_text())
    return data["events"] if isinstance(data, dict) else data


def post_batch(url: str, token: str, session_id: str, events: list[dict], *, batch_id: str,
               window_id: str = "w1", distinct_id: str | None = None, encoding: str | None = "gzip",
               timeout: float = 30) -> requests.Response:
    """Upload one batch through the native API, as capture.js would."""
    body = json.dumps({"token": token, "session_id": session_id, "window_id": window_id, "batch_id": batch_id,
                       "distinct_id": distinct_id, "events": events}).encode()
    headers = {"Content-Type": "application/json"}
    if encoding == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif encoding == "zstd":
        body, headers["Content-Encoding"] = zstandard.ZstdCompressor().compress(body), "zstd"
    return requests.post(f"{url}/v1/recordings", data=body, headers=headers, timeout=timeout)


def fetch_events(url: str, project: TestProject, session_id: str) -> list[dict]:
    r = requests.get(f"{url}/api/projects/{project.id}/sessions/{session_id}/events",
                     headers={"Authorization": f"Bearer {project.api_key}"}, timeout=60)
    r.raise_for_status()
    return r.json()


def metric(server: ThreadedReplay, name: str) -> float:
    """A counter's value from the server's /metrics (the first series of it), 0 when absent."""
    for line in requests.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def stored_events_text(store_root: Path) -> str:
    """Every event in every block of every object under a file store, as one JSON text (for leak checks)."""
    from replay.catalog.rebuild import read_footer

    async def collect() -> list:
        from replay.storage.file import FileBlobStore

        store = FileBlobStore(store_root)
        out = []
        async for info in store.list(""):
            footer = await read_footer(store, info.key, info.size)
            for b in footer.blocks:
                out.extend(codec.decompress_block(await store.get(info.key, b.offset, b.offset + b.length)))
        return out

    return json.dumps(asyncio.run(collect()))
