"""Fixtures of the compaction tests: S3 as a separate process (so it can be frozen), and helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import boto3
import pytest

from harness import IN_CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoProcess:
    """moto's S3 server in its own process on 127.0.0.1: SIGSTOP makes the store hang, as a real outage does."""

    proc: subprocess.Popen
    endpoint: str

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def bucket(self) -> str:
        name = f"cmp-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def moto_process():
    try:
        import moto.server  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("moto[server] is not installed")
        pytest.skip("moto[server] is not installed")
    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(var, value)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start")
            time.sleep(0.05)
    yield MotoProcess(proc, f"http://127.0.0.1:{port}")
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
