"""Pipeline: wires settings, spool, batcher, warehouse and sources together.

`open()` = migrate + connect + recover the spool and load its leftovers; the serving process
then `start()`s the batcher and the loader thread, which drains sealed segments. CLI commands run
through `command()`, here or via the admin endpoint of a running server: one implementation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, NamedTuple

import duckdb

from loader import commands, microbatch, sources, warehouse
from loader.batcher import Batcher
from loader.errors import TerminalError, TransientError
from loader.settings import Settings
from loader.spool import Spool

logger = logging.getLogger(__name__)

_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Stats(NamedTuple):
    last_load: float | None
    events_loaded: int
    duplicates: int
    discards: int
    loads: int
    last_error: str | None


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.registry = sources.Registry()
        self.batcher = Batcher(self.spool, settings, on_seal=lambda _: self.wake.set())
        self.wake = threading.Event()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._writer: warehouse.DuckDBWriter | None = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.created_default: sources.Source | None = None
        self.stats = Stats(None, 0, 0, 0, 0, None)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        assert self._con is not None, "Pipeline.open() must run first"
        return self._con

    def open(self, create_default: bool = False) -> None:
        """Migrate, connect, make sure every namespace exists, seal what a crash left open."""
        warehouse.migrate(self.settings.database)
        self._con = warehouse.connect(self.settings.database)
        self._writer = warehouse.DuckDBWriter(self._con)
        if create_default and not sources.all_sources(self.con):
            self.created_default = sources.add(self.con, sources.DEFAULT_SOURCE)
        for source in sources.all_sources(self.con):
            warehouse.ensure_namespace(self.con, source.namespace)
        self.refresh_sources()
        for recovered in self.spool.recover():
            logger.info("Sealed spool segment %s left open by a crash", recovered.segment_id)

    async def start(self) -> None:
        """Open (in a thread: migrations take a moment), load leftovers, then accept events."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.open, True)
        await asyncio.to_thread(self.drain)
        await self.batcher.start()
        self._stopping = False
        self._thread = threading.Thread(target=self._run_loader, name="loader", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Seal what the batcher holds, load everything sealed, close the warehouse."""
        await self.batcher.stop()
        self._stopping = True
        self.wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def refresh_sources(self) -> None:
        self.registry.replace(sources.all_sources(self.con.cursor()))

    def command(self, name: str, args: dict[str, Any]) -> Any:
        """Run one named command (loader/commands.py) on a cursor of the owned connection."""
        run = commands.COMMANDS.get(name)
        if run is None:
            raise commands.UnknownCommand(name)
        with self._lock:
            return run(self, args)

    def health(self) -> dict[str, Any]:
        return {
            "reachable": self._con is not None,
            "loader_running": self._thread is not None and self._thread.is_alive(),
            "last_error": self.stats.last_error,
        }

    # -- loading ---------------------------------------------------------------------------

    def seal_open(self) -> None:
        """Seal the open segment now (from any thread), so `flush` loads everything."""
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.batcher.seal(), self._loop).result(timeout=60)

    def drain(self) -> int:
        """Load every sealed segment, oldest first, in micro-batches; returns events loaded."""
        with self._load_lock:
            loaded = 0
            group: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
            size = 0
            for segment_id in self.spool.sealed():
                events = self._read(segment_id)
                if events is None:
                    continue
                group.append((segment_id, events))
                size += len(events)
                if size >= self.settings.load_max_events:
                    loaded += self._load(group)
                    group, size = [], 0
            if group:
                loaded += self._load(group)
            return loaded

    def _read(self, segment_id: str) -> list[tuple[str, dict[str, Any]]] | None:
        assert self._writer is not None, "Pipeline.open() must run first"
        if self._writer.loaded(segment_id):
            # A crash between COMMIT and the delete: the rows are in, finish the hand-off.
            logger.info("Segment %s was loaded before a restart; removing it", segment_id)
            self.spool.complete(segment_id)
            return None
        try:
            return microbatch.read_segment(segment_id, self.spool.path(segment_id).read_bytes())
        except TerminalError as exc:
            self.spool.fail(segment_id, str(exc))
            return None

    def _load(self, group: list[tuple[str, list[tuple[str, dict[str, Any]]]]]) -> int:
        """One transaction for the group; on a data error, each segment alone finds the bad one."""
        try:
            return self._load_once(group)
        except TerminalError as exc:
            if len(group) == 1:
                self.spool.fail(group[0][0], str(exc))
                return 0
            return sum(self._load([member]) for member in group)

    def _load_once(self, group: list[tuple[str, list[tuple[str, dict[str, Any]]]]]) -> int:
        assert self._writer is not None, "Pipeline.open() must run first"
        started = time.perf_counter()
        namespaces = {s.name: s.namespace for s in self.registry.by_name.values()}
        events = [pair for _, members in group for pair in members]
        try:
            batch = microbatch.build(self._writer, events, namespaces)
            for namespace in {t.namespace for t in batch.tables} | set(batch.discards):
                warehouse.ensure_namespace(self.con, namespace)
            result = self._writer.write(batch, [(sid, len(members)) for sid, members in group])
        except duckdb.Error as exc:
            raise warehouse.classify(exc)(f"Loading segments {group[0][0]}..: {exc}") from exc
        for segment_id, _ in group:
            self.spool.complete(segment_id)
        loaded = result.events - result.duplicates
        self.stats = self.stats._replace(
            last_load=time.time(),
            events_loaded=self.stats.events_loaded + loaded,
            duplicates=self.stats.duplicates + result.duplicates,
            discards=self.stats.discards + result.discards,
            loads=self.stats.loads + 1,
            last_error=None,
        )
        logger.info(
            "Loaded %d segments: %d events (%d duplicates skipped), %d tables, %d new columns, "
            "%d discards in %.0f ms",
            len(group),
            loaded,
            result.duplicates,
            len(result.rows),
            result.new_columns,
            result.discards,
            (time.perf_counter() - started) * 1000,
        )
        return loaded

    def _run_loader(self) -> None:
        failures = 0
        while True:
            stopping = self._stopping
            try:
                self.drain()
                failures = 0
            except TransientError as exc:
                delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                failures += 1
                self.stats = self.stats._replace(last_error=str(exc))
                logger.warning("Load failed, retrying in %.1f s (nothing is lost): %s", delay, exc)
                if stopping:
                    return
                time.sleep(delay)
                continue
            if stopping:
                return
            self.wake.wait(timeout=self.settings.segment_max_age)
            self.wake.clear()
