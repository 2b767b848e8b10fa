"""Group commit in front of the spool, and the decision of when a segment is sealed.

Requests `await submit(...)`; one writer thread appends everything waiting and fsyncs once for
the whole group, then every request of the group gets its answer. Segments are sealed when
they reach `segment_max_events`, `segment_max_bytes` or `segment_max_age`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from loader.errors import Unavailable
from loader.settings import Settings
from loader.spool import Backlog, Spool

logger = logging.getLogger(__name__)

_CHECK_INTERVAL = 1.0
"""Seconds between looks at free disk and the sealed backlog (they cost syscalls)."""


class Batcher:
    def __init__(
        self,
        spool: Spool,
        settings: Settings,
        on_seal: Callable[[str], None] = lambda segment_id: None,
    ) -> None:
        self.spool = spool
        self.settings = settings
        self.on_seal = on_seal
        self._pending: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-writer")
        self._refused: Unavailable | None = None
        self._checked_at = 0.0
        self.backlog = Backlog(0, 0, 0.0, 0)
        self.events_accepted = 0

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="spool-writer")

    async def stop(self) -> None:
        """Write what is waiting, seal the open segment, stop the writer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending:
            await self._write_group()
        segment_id = await asyncio.get_running_loop().run_in_executor(
            self._executor, self.spool.seal
        )
        if segment_id:
            self.on_seal(segment_id)
        self._executor.shutdown(wait=True)

    async def submit(self, data: bytes, events: int) -> None:
        """Returns once `data` (whole encoded lines) is fsynced; raises Unavailable on 503."""
        self._admit()
        if self._task is None or self._task.done():
            raise Unavailable("the spool writer is not running (see the server log)")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((data, events, future))
        assert self._wake is not None, "Batcher.start() must run first"
        self._wake.set()
        await future

    def refusal(self) -> Unavailable | None:
        """Why requests are refused right now (fresh check), or None."""
        self._checked_at = time.monotonic()
        self._refused = self._check_capacity()
        return self._refused

    def _admit(self) -> None:
        now = time.monotonic()
        if now - self._checked_at >= _CHECK_INTERVAL:
            self._checked_at = now
            self._refused = self._check_capacity()
        if self._refused is not None:
            raise self._refused

    def _check_capacity(self) -> Unavailable | None:
        self.backlog = self.spool.backlog()
        if self.backlog.bytes > self.settings.backlog_max_bytes:
            return Unavailable(
                f"the spool holds {self.backlog.bytes} bytes waiting to load, over "
                f"backlog_max_bytes={self.settings.backlog_max_bytes}",
                retry_after=10,
            )
        stat = os.statvfs(self.spool.root)
        free = stat.f_bavail * stat.f_frsize
        if free < self.settings.min_free_bytes:
            return Unavailable(
                f"only {free} bytes free on the spool's disk, under "
                f"min_free_bytes={self.settings.min_free_bytes}",
                retry_after=10,
            )
        return None

    async def _run(self) -> None:
        assert self._wake is not None, "Batcher.start() must run first"
        age = self.settings.segment_max_age
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(age, 0.25))
            self._wake.clear()
            if self._pending:
                await self._write_group()
            if self.spool.open_events and time.monotonic() - self.spool.opened_at >= age:
                await self.seal()

    async def _write_group(self) -> None:
        group, self._pending = self._pending, []
        chunks = [data for data, _, _ in group]
        events = sum(count for _, count, _ in group)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.spool.append, chunks, events)
        except Unavailable as exc:
            self._refused, self._checked_at = exc, time.monotonic()
            logger.error("Spool refused %d requests: %s", len(group), exc.reason)
            for _, _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:  # answer 503 and keep writing: the next group may succeed
            logger.exception("Spool writer failed on a group of %d requests", len(group))
            for _, _, future in group:
                if not future.done():
                    future.set_exception(Unavailable(f"spool writer failed: {exc!r}"))
            return
        except BaseException as exc:  # cancelled: the requests must hear about it
            for _, _, future in group:
                if not future.done():
                    future.set_exception(Unavailable(f"spool writer stopped: {exc!r}"))
            raise
        self.events_accepted += events
        for _, _, future in group:
            if not future.done():
                future.set_result(None)
        if (
            self.spool.open_events >= self.settings.segment_max_events
            or self.spool.open_bytes >= self.settings.segment_max_bytes
        ):
            await self.seal()

    async def seal(self) -> None:
        """Seal the open segment now (on the writer thread, in order with appends)."""
        loop = asyncio.get_running_loop()
        segment_id = await loop.run_in_executor(self._executor, self.spool.seal)
        if segment_id:
            self.on_seal(segment_id)
