from __future__ import annotations

import os
import socket

import pytest

from harness import IN_CI, ThreadedReplay, start_test_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def make_server(tmp_path):
    """Start Replay servers on a temporary data directory; all are stopped at the end of the test."""
    started: list[ThreadedReplay] = []

    def make(store=None, **overrides) -> ThreadedReplay:
        data = overrides.pop("data", tmp_path / f"data{len(started)}")
        server = start_test_server(data, store, **overrides)
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def project(server):
    return server.create_project()


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1: a real S3 HTTP endpoint. In CI its absence is a failure."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        if IN_CI:
            pytest.fail("moto[server] is not installed")
        pytest.skip("moto[server] is not installed")
    port = free_port()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    yield f"http://127.0.0.1:{port}"
    srv.stop()


def pytest_collection_modifyitems(items):
    """Browser tests last: Playwright's sync API keeps an event loop running in the main thread
    while its session-scoped browser lives, and tests that call asyncio.run() cannot share it."""
    def in_browser(item) -> bool:
        return item.get_closest_marker("browser") is not None or "/tests/browser/" in str(item.path)

    items.sort(key=in_browser)  # stable: the order within each group is kept
