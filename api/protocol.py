"""uvicorn's httptools protocol with the bounds it lacks: request heads over 64 KB are refused
with a 400, and a head that does not arrive within `head_timeout` seconds closes the
connection, so slow or huge headers cannot hold memory or connections."""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers; what is over it gets `Request size too large`."""
HEAD_TIMEOUT = 30.0


class HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = self._raw_head = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._raw_head = True, 0, 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        in_head = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse()
            else:
                self._invalid()
            return
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no websockets here
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        if self._in_head:  # a head is still incomplete at the end of this chunk
            if self._head_timer is None:
                # Armed only now: most heads arrive whole in the chunk that begins them, and
                # then no timer is made and cancelled for each request.
                self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_too_slow)
            if in_head:
                self._raw_head += len(data)
                if self._raw_head > MAX_HEAD_BYTES:  # a head still incomplete past the limit
                    self._refuse()

    def _invalid(self) -> None:
        self.send_400_response("Invalid HTTP request received.")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge

    def _refuse(self) -> None:
        if not self.transport.is_closing():
            self.send_400_response(
                f"Request size too large: the request line and headers are over "
                f"{MAX_HEAD_BYTES // 1024} KB"
            )

    def _head_too_slow(self) -> None:
        if self._in_head and not self.transport.is_closing():
            self.transport.close()
