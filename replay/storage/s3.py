"""S3-compatible object storage (AWS S3, MinIO, R2, Ceph RGW) through boto3.

boto3 is synchronous, so every call runs on a bounded thread pool: the event loop never waits
on the network. Credentials come from boto3's usual chain (environment, profile, instance role).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from replay.errors import StoreError
from replay.storage import BlobInfo


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, path_style: bool = False, max_workers: int = 16):
        if not bucket:
            raise ValueError("s3:// URL needs a bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        config = Config(
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=max_workers,
        )
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="s3")

    async def _call(self, fn, /, **kwargs) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(**kwargs))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise KeyError(kwargs.get("Key")) from exc
            raise StoreError(f"s3 {fn.__name__}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"s3 {fn.__name__}: {exc}") from exc

    async def put(self, key: str, data: bytes) -> None:
        await self._call(self._client.put_object, Bucket=self.bucket, Key=self.prefix + key, Body=data)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        if start or end is not None:
            if end is not None and end <= start:
                return b""
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        loop = asyncio.get_running_loop()

        def fetch() -> bytes:
            return self._client.get_object(**kwargs)["Body"].read()

        try:
            return await loop.run_in_executor(self._pool, fetch)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(key) from exc
            raise StoreError(f"s3 get {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"s3 get {key}: {exc}") from exc

    async def size(self, key: str) -> int:
        head = await self._call(self._client.head_object, Bucket=self.bucket, Key=self.prefix + key)
        return int(head["ContentLength"])

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        token = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call(self._client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                yield BlobInfo(item["Key"][len(self.prefix):], int(item["Size"]))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=self.prefix + key)

    async def check(self) -> None:
        await self._call(self._client.head_bucket, Bucket=self.bucket)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
