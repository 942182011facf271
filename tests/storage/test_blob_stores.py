"""One suite, both stores: the file store and the S3 store against moto's S3 server on loopback."""

from __future__ import annotations

import asyncio
import uuid

import boto3
import pytest

from replay.errors import StoreError
from replay.storage import open_store
from replay.storage.file import FileBlobStore


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        yield FileBlobStore(tmp_path / "blobs")
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"replay-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield open_store(f"s3://{bucket}/prefix", endpoint_url=endpoint, region="us-east-1", path_style=True)


def run(coro):
    return asyncio.run(coro)


async def listed(store, prefix=""):
    return [(b.key, b.size) async for b in store.list(prefix)]


def test_put_then_get_returns_the_bytes(store):
    run(store.put("30d/batches/a", b"hello world"))
    assert run(store.get("30d/batches/a")) == b"hello world"
    assert run(store.size("30d/batches/a")) == 11


def test_objects_larger_than_a_sync_piece_and_empty_ones_round_trip(store):
    # The file store writes and syncs objects 1 MiB at a time: the pieces must join up exactly.
    data = uuid.uuid4().bytes * (170_000)  # 2.6 MiB, not a multiple of the piece size
    run(store.put("k/big", data))
    run(store.put("k/empty", b""))
    assert run(store.get("k/big")) == data and run(store.size("k/big")) == len(data)
    assert run(store.get("k/big", 1024 * 1024 - 3, 1024 * 1024 + 5)) == data[1024 * 1024 - 3:1024 * 1024 + 5]
    assert run(store.get("k/empty")) == b""


def test_ranged_get_returns_exactly_the_range(store):
    data = bytes(range(256)) * 10
    run(store.put("k/obj", data))
    assert run(store.get("k/obj", 10, 20)) == data[10:20]
    assert run(store.get("k/obj", 2550)) == data[2550:]
    assert run(store.get("k/obj", 0, 1)) == data[:1]


def test_list_filters_by_prefix_in_key_order(store):
    for key in ["30d/batches/b", "30d/batches/a", "7d/batches/c", "30d/sessions/x"]:
        run(store.put(key, key.encode()))
    assert run(listed(store, "30d/batches/")) == [("30d/batches/a", 13), ("30d/batches/b", 13)]
    assert [k for k, _ in run(listed(store))] == sorted(["30d/batches/a", "30d/batches/b", "30d/sessions/x", "7d/batches/c"])


def test_delete_removes_and_tolerates_missing_keys(store):
    run(store.put("gone", b"x"))
    run(store.delete("gone"))
    run(store.delete("never-was"))
    assert run(listed(store)) == []
    with pytest.raises(KeyError):
        run(store.get("gone"))


def test_store_reports_itself_reachable(store):
    run(store.check())


def test_s3_store_unreachable_raises_store_error(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # Nothing listens on port 9 of loopback: every call must fail as StoreError, not hang or crash.
    store = open_store("s3://nobucket", endpoint_url="http://127.0.0.1:9", region="us-east-1", path_style=True)
    with pytest.raises(StoreError):
        run(store.put("a", b"b"))
    with pytest.raises(StoreError):
        run(store.check())


def test_file_store_refuses_keys_that_escape_its_root(tmp_path):
    store = FileBlobStore(tmp_path / "blobs")
    for key in ["../escape", "a/../../b", "/abs", "a//b", ""]:
        with pytest.raises(ValueError):
            run(store.put(key, b"x"))
    assert not (tmp_path / "escape").exists()
