"""Reading a request body within bounds: Content-Length, chunked, and gzip without bombs."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from loader.errors import InvalidJSON, RequestRejected, RequestTooLarge
from loader.settings import MAX_REQUEST_BYTES

DRAIN_LIMIT = 4 * MAX_REQUEST_BYTES
"""How much of an oversized body we read and discard so the client receives our 400 rather
than a connection reset (which SDKs retry forever). Past this, the connection is dropped."""


async def read_body(
    receive: Receive,
    *,
    declared: str | None,
    gzipped: bool,
    limit: int = MAX_REQUEST_BYTES,
    timeout: float = 30.0,
) -> bytes:
    """The decoded body, at most `limit` bytes, within `timeout` seconds; raises
    RequestTooLarge, InvalidJSON, or RequestRejected for a body that trickles in too slowly
    (a slow client must not hold a connection and its buffer for ever), and ClientDisconnect
    when the client leaves before its body is whole.

    `declared` is the Content-Length header, `gzipped` whether Content-Encoding is gzip.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _read(receive, declared, gzipped, limit)
    except TimeoutError:
        raise RequestRejected(
            f"Request timeout: the body did not arrive within {timeout:g} s"
        ) from None


async def _read(receive: Receive, declared: str | None, gzipped: bool, limit: int) -> bytes:
    body = _Body(receive)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await body.drain()
        raise RequestTooLarge(f"the body is {declared} bytes; the limit is {limit} bytes")
    if not gzipped:  # the usual request: its whole body in one message
        message = await receive()
        whole: bytes = message.get("body", b"")
        complete = message["type"] == "http.request" and not message.get("more_body", False)
        if complete and len(whole) <= limit:
            return whole
        body.first = message  # the loop below reads the rest and applies the limit
    inflater = zlib.decompressobj(wbits=31) if gzipped else None  # 31: gzip header
    parts: list[bytes] = []
    size = raw = 0
    async for chunk in body.chunks():
        raw += len(chunk)
        if inflater is not None:
            chunk = _inflate(inflater, chunk, limit - size + 1)
        size += len(chunk)
        if size > limit or raw > limit + (1 << 20):
            await body.drain()
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


class _Body:
    """A request body's chunks as they arrive, after `first` (a message already received);
    `complete` once the last one has come. ClientDisconnect if the client leaves first."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.first: Message | None = None
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            message, self.first = self.first or await self.receive(), None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            if message["type"] == "http.request":
                self.complete = not message.get("more_body", False)
                if chunk := message.get("body", b""):
                    yield chunk

    async def drain(self) -> None:
        """Read and discard the rest, up to DRAIN_LIMIT bytes."""
        drained = 0
        with contextlib.suppress(ClientDisconnect):  # gone: nobody to answer either way
            async for chunk in self.chunks():
                drained += len(chunk)
                if drained > DRAIN_LIMIT:
                    break
