"""Reading an upload's bytes off the wire: capped in size and time, before any decoding."""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader, web

from replay.errors import BadRequest, PayloadTooLarge, RequestTimeout
from replay.ingest.limits import Limits


async def read_upload(request: web.Request, limits: Limits) -> bytes:
    """The raw body; 413 past ``max_body_bytes``, 408 when the client stalls past ``body_timeout``."""
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes is over the {limits.max_body_bytes} byte limit",
                              code="body_too_large")
    content = request.content
    if content.is_eof():
        # The whole body came with the headers (nearly every upload: they are a few KB): it is
        # already buffered, so there is nothing to wait for and no timeout to arm.
        body = content.read_nowait(-1)
    else:
        body = await _read_streamed(content, limits)
    if len(body) > limits.max_body_bytes:
        raise _too_large(limits)
    if not body:
        raise BadRequest("the body is empty", code="empty_body")
    return body


async def _read_streamed(content: StreamReader, limits: Limits) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout):
            async for chunk in content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > limits.max_body_bytes:  # stop reading: do not buffer what will be refused
                    raise _too_large(limits)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {limits.body_timeout:g} s", code="body_timeout") from None
    except ConnectionError as exc:
        raise BadRequest(f"the body was cut short: {exc}", code="incomplete_body") from None
    return b"".join(chunks)


def _too_large(limits: Limits) -> PayloadTooLarge:
    return PayloadTooLarge(f"body is over the {limits.max_body_bytes} byte limit", code="body_too_large")
