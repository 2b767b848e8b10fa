"""Reading a request body within bounds: Content-Length, chunked, and gzip without bombs."""

from __future__ import annotations

import asyncio
import zlib

from starlette.requests import Request

from loader.errors import InvalidJSON, RequestRejected, RequestTooLarge
from loader.settings import MAX_REQUEST_BYTES

DRAIN_LIMIT = 4 * MAX_REQUEST_BYTES
"""How much of an oversized body we read and discard so the client receives our 400 rather
than a connection reset (which SDKs retry forever). Past this, the connection is dropped."""


async def read_body(
    request: Request, limit: int = MAX_REQUEST_BYTES, timeout: float = 30.0
) -> bytes:
    """The decoded body, at most `limit` bytes, within `timeout` seconds; raises
    RequestTooLarge, InvalidJSON, or RequestRejected for a body that trickles in too slowly
    (a slow client must not hold a connection and its buffer for ever)."""
    try:
        async with asyncio.timeout(timeout):
            return await _read(request, limit)
    except TimeoutError:
        raise RequestRejected(
            f"Request timeout: the body did not arrive within {timeout:g} s"
        ) from None


async def _read(request: Request, limit: int) -> bytes:
    gzipped = request.headers.get("content-encoding", "").strip().lower() == "gzip"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _drain(request)
        raise RequestTooLarge(f"the body is {declared} bytes; the limit is {limit} bytes")

    inflater = zlib.decompressobj(wbits=31) if gzipped else None  # 31: gzip header
    parts: list[bytes] = []
    size = raw = 0
    async for chunk in request.stream():
        raw += len(chunk)
        if inflater is not None:
            chunk = _inflate(inflater, chunk, limit - size + 1)
        size += len(chunk)
        if size > limit or raw > limit + (1 << 20):
            await _drain(request)
            detail = " after gzip decoding" if gzipped else ""
            raise RequestTooLarge(f"the body is over the limit of {limit} bytes{detail}")
        parts.append(chunk)
    if inflater is not None and raw and not inflater.eof:
        raise InvalidJSON("the gzip body is truncated")
    return b"".join(parts)


def _inflate(inflater: zlib._Decompress, chunk: bytes, room: int) -> bytes:
    """Inflate at most `room` bytes: a gzip bomb is refused without being inflated whole."""
    try:
        out = inflater.decompress(chunk, room)
    except zlib.error as exc:
        raise InvalidJSON(f"the body is not valid gzip ({exc})") from None
    if inflater.unconsumed_tail:
        # More output is waiting than there is room for: the body is over the limit.
        return out + b"\0"
    return out


async def _drain(request: Request) -> None:
    drained = 0
    try:
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > DRAIN_LIMIT:
                break
    except Exception:
        return
