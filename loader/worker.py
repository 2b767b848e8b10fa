"""The loader process: owns DuckDB and drains the spool, apart from the HTTP process.

Loading is CPU work in Python (parsing, flattening, Arrow building); in the HTTP process it would
take the GIL from request handling, so it runs in a process of its own (or, with
`loader_in_thread`, a thread). The two talk over a duplex pipe; the spool is the hand-off:

    loader -> http: ("ready", sources, created_default) once opened, ("sources", sources) after a
                    change, ("seal", n) to ask for the open segment to be sealed (flush),
                    ("loaded", report) after every load (for /metrics)
    http -> loader: ("wake",) after a seal, ("sealed", n) to answer ("seal", n), ("stop",)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from loader.errors import LoaderError, TransientError
from loader.pipeline import Pipeline
from loader.settings import Settings
from loader.sources import Source

logger = logging.getLogger(__name__)

_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SEAL_TIMEOUT = 30.0


class LoaderGone(LoaderError):
    """The loader process ended before it was ready."""


# -- the loader's side -------------------------------------------------------------------------


class Link:
    """The loader's end of the pipe; `send` is safe from any thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self._seals: dict[int, threading.Event] = {}
        self._next = 0

    def send(self, *message: Any) -> None:
        with self._send_lock:
            self.conn.send(message)

    def seal_open(self) -> None:
        """Ask the HTTP process to seal its open segment; returns once it has."""
        with self._send_lock:
            self._next += 1
            number, done = self._next, threading.Event()
            self._seals[number] = done
            self.conn.send(("seal", number))
        if not done.wait(_SEAL_TIMEOUT):
            logger.warning("The HTTP process did not seal its segment in %.0f s", _SEAL_TIMEOUT)
        self._seals.pop(number, None)

    def sealed(self, number: int) -> None:
        done = self._seals.get(number)
        if done is not None:
            done.set()


def serve(pipeline: Pipeline, conn: Connection) -> None:
    """The loader's loop: open, say ready, then drain on every wake-up until told to stop."""
    link = Link(conn)
    pipeline.serving = True
    pipeline.seal_open = link.seal_open
    pipeline.on_sources = lambda sources: link.send("sources", sources)
    pipeline.on_loaded = lambda report: link.send("loaded", report)
    link.send("ready", list(pipeline.sources.values()), pipeline.created_default)
    failures = 0
    stopping = False
    while True:
        wait = pipeline.settings.segment_max_age
        try:
            pipeline.drain()
            failures = 0
        except Exception as exc:  # the loop outlives any load: the spool keeps the events
            wait = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
            failures += 1
            if isinstance(exc, TransientError):
                logger.warning("Load failed, retrying in %.1f s (nothing is lost): %s", wait, exc)
            else:
                logger.exception(
                    "Load failed unexpectedly, retrying in %.1f s (nothing is lost; please "
                    "report this)",
                    wait,
                )
        if stopping:
            return
        stopping = _listen(conn, link, wait)


def _listen(conn: Connection, link: Link, wait: float) -> bool:
    """Hear the HTTP process for up to `wait` seconds (less if woken); True means stop."""
    deadline = time.monotonic() + wait
    while conn.poll(max(0.0, deadline - time.monotonic())):
        try:
            message = conn.recv()
        except EOFError:  # the HTTP process is gone: load what is sealed, then end
            return True
        if message[0] == "stop":
            return True
        if message[0] == "sealed":
            link.sealed(message[1])
        elif message[0] == "wake":
            return False
    return False


def run(settings: Settings, conn: Connection, admin: Callable[[Pipeline], Any] | None) -> None:
    """The loader process's main: `admin(pipeline)` starts the admin endpoint, if given."""
    if multiprocessing.parent_process() is not None:
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s [loader]: %(message)s",
        )
    pipeline = Pipeline(settings)
    stop_admin: Callable[[], None] | None = None
    try:
        pipeline.open(create_default=True)
        if admin is not None:
            stop_admin = admin(pipeline)
        serve(pipeline, conn)
    except Exception as exc:
        logger.exception("The loader stopped")
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        if stop_admin is not None:
            stop_admin()
        pipeline.close()
        conn.close()


# -- the HTTP process's side ---------------------------------------------------------------


class LoaderHandle:
    """The HTTP process's view of the loader: start it, hear about sources, seal, stop."""

    def __init__(
        self,
        settings: Settings,
        on_sources: Callable[[list[Source]], None],
        seal: Callable[[], Any],
        admin: Callable[[Pipeline], Any] | None = None,
        on_loaded: Callable[[dict[str, Any]], None] = lambda report: None,
    ) -> None:
        self.settings = settings
        self.on_sources = on_sources
        self.on_loaded = on_loaded
        self.seal = seal
        self.admin = admin
        self.created_default: Source | None = None
        self._conn: Connection | None = None
        self._worker: multiprocessing.process.BaseProcess | threading.Thread | None = None
        self._ready: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._stopping = False

    @property
    def alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    async def start(self) -> None:
        """Start the loader and wait until it has opened the warehouse and loaded leftovers."""
        self._loop = asyncio.get_running_loop()
        ours, theirs = multiprocessing.Pipe(duplex=True)
        args = (self.settings, theirs, self.admin)
        if self.settings.loader_in_thread:
            self._worker = threading.Thread(target=run, args=args, name="loader", daemon=True)
        else:
            context = multiprocessing.get_context("spawn")
            self._worker = context.Process(target=run, args=args, name="loader", daemon=True)
        self._worker.start()
        if isinstance(self._worker, multiprocessing.process.BaseProcess) and self._worker.pid:
            # Loading is CPU-heavy and can wait (the spool holds the events); a request waits
            # for its 200. On a machine with few cores the loader must not take the CPU from
            # the HTTP process, so it runs at niceness 10: it still gets every idle cycle, and
            # a backlog that grows too long turns into 503s (backlog_max_bytes). Set right after
            # the spawn, long before the child opens DuckDB and starts threads (which inherit it).
            with contextlib.suppress(OSError):  # gone already, or not allowed: run as it is
                os.setpriority(os.PRIO_PROCESS, self._worker.pid, 10)
        self._conn = ours
        self._ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._receive)
        try:
            await self._ready
        except BaseException:
            await self.stop()
            raise
        if not self.settings.loader_in_thread:
            theirs.close()

    def wake(self) -> None:
        self._send("wake")

    async def stop(self) -> None:
        """Tell the loader to load what is sealed and end; wait for it."""
        self._stopping = True
        self._send("stop")
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join)
            self._worker = None
        if self._conn is not None and self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None

    def _send(self, *message: Any) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(message)

    def _receive(self) -> None:
        assert self._conn is not None and self._ready is not None, "started"
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            assert self._loop is not None and self._conn is not None, "started"
            self._loop.remove_reader(self._conn.fileno())
            if not self._ready.done():
                self._ready.set_exception(
                    LoaderGone(
                        f"The loader stopped while opening {self.settings.database}; "
                        "see its log above."
                    )
                )
            elif self._stopping:
                logger.info("The loader finished")
            else:
                logger.error("The loader process ended; events stay in the spool until restart")
            return
        kind = message[0]
        if kind == "ready":
            self.on_sources(message[1])
            self.created_default = message[2]
            if not self._ready.done():
                self._ready.set_result(None)
        elif kind == "sources":
            self.on_sources(message[1])
        elif kind == "loaded":
            self.on_loaded(message[1])
        elif kind == "seal":
            task = asyncio.ensure_future(self._seal_and_answer(message[1]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "failed" and not self._ready.done():
            self._ready.set_exception(LoaderGone(f"The loader could not start: {message[1]}"))

    async def _seal_and_answer(self, number: int) -> None:
        try:
            await self.seal()
        finally:
            self._send("sealed", number)
