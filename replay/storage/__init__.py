"""Blob stores: immutable objects addressed by key, read by byte range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int


class BlobStore(Protocol):
    """What every store offers; all calls are async and never block the event loop."""

    url: str

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically: readers see all of it or nothing."""

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the object (to its end when ``end`` is None)."""

    async def size(self, key: str) -> int:
        """The object's size in bytes."""

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    async def check(self) -> None:
        """Raise ``StoreError`` unless the store is reachable (readiness probe)."""

    async def close(self) -> None:
        """Release threads and connections."""


def open_store(url: str, *, endpoint_url: str = "", region: str = "", path_style: bool = False) -> BlobStore:
    """Open the store a URL names: ``file:///path`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from replay.storage.file import FileBlobStore

        return FileBlobStore(unquote(parsed.path))
    if parsed.scheme == "s3":
        from replay.storage.s3 import S3BlobStore

        return S3BlobStore(
            bucket=parsed.netloc,
            prefix=parsed.path.lstrip("/"),
            endpoint_url=endpoint_url or None,
            region=region or None,
            path_style=path_style,
        )
    raise ValueError(f"unsupported blob store URL {url!r}: use file:///path or s3://bucket/prefix")
