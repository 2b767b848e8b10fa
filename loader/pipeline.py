"""Pipeline: the loader's side: the warehouse connection, draining the spool, and commands.

`open()` = migrate + connect + recover the spool; `drain()` loads every sealed segment in
micro-batches. CLI commands run through `command()`, in the loader process (via the admin
endpoint) or in the CLI's own process when no server runs: one implementation either way.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import duckdb

from loader import commands, importer, microbatch, sources, warehouse
from loader.backend import Backend
from loader.errors import TerminalError
from loader.settings import Settings
from loader.spool import Spool

logger = logging.getLogger(__name__)

SegmentEvents = tuple[str, list[tuple[str, dict[str, Any]]]]
"""A sealed segment's id and its (source, event) pairs."""


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.sources: dict[str, sources.Source] = {}
        self.created_default: sources.Source | None = None
        self.seal_open: Callable[[], None] = lambda: None
        """Set by the loader process: asks the HTTP process to seal its open segment."""
        self.on_sources: Callable[[list[sources.Source]], None] = lambda changed: None
        """Set by the loader process: tells the HTTP process that sources changed."""
        self.on_loaded: Callable[[dict[str, Any]], None] = lambda report: None
        """Set by the loader process: reports every load (for /metrics)."""
        self.serving = False
        """True in a running server's loader process: queries are then read-only."""
        self._con: duckdb.DuckDBPyConnection | None = None
        self._writer: Backend | None = None
        self._command_lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        assert self._con is not None, "Pipeline.open() must run first"
        return self._con

    def open(self, create_default: bool = False) -> None:
        """Migrate, connect, make sure every namespace exists, seal what a crash left open."""
        warehouse.migrate(self.settings.database)
        self._con = warehouse.connect(
            self.settings.database, memory_limit=self.settings.duckdb_memory_limit
        )
        self._writer = warehouse.DuckDBWriter(self._con)
        if create_default and not sources.all_sources(self.con):
            self.created_default = sources.add(self.con, sources.DEFAULT_SOURCE)
        for source in sources.all_sources(self.con):
            warehouse.ensure_namespace(self.con, source.namespace)
            self._writer.install_views(source.namespace)  # this version's view definitions
        self.refresh_sources()
        for recovered in self.spool.recover():
            logger.info("Sealed spool segment %s left open by a crash", recovered.segment_id)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def refresh_sources(self) -> None:
        found = sources.all_sources(self.con.cursor())
        self.sources = {source.name: source for source in found}
        self.on_sources(found)

    def command(
        self, name: str, args: dict[str, Any], progress: importer.Progress | None = None
    ) -> Any:
        """Run one named command (loader/commands.py) on a cursor of the owned connection."""
        if name in commands.STREAMING:
            return commands.STREAMING[name](self, args, progress or (lambda state: None))
        run = commands.COMMANDS.get(name)
        if run is None:
            raise commands.UnknownCommand(name)
        with self._command_lock:
            return run(self, args)

    def import_batch(
        self, events: list[tuple[str, dict[str, Any]]], checkpoint: importer.Checkpoint
    ) -> warehouse.LoadResult:
        """Load imported events and move their file's checkpoint, in one transaction.

        Takes the load lock per micro-batch only, so a running server keeps loading its spool
        between an import's batches.
        """
        assert self._writer is not None, "Pipeline.open() must run first"
        namespaces = {name: source.namespace for name, source in self.sources.items()}
        with self._load_lock, warehouse.batch_work(f"Importing {checkpoint.path}"):
            batch = microbatch.build(self._writer, events, namespaces)
            for namespace in {t.namespace for t in batch.tables} | set(batch.discards):
                warehouse.ensure_namespace(self.con, namespace)
            return self._writer.write(batch, checkpoint=checkpoint)

    def segment_loaded(self, segment_id: str) -> bool:
        assert self._writer is not None, "Pipeline.open() must run first"
        return self._writer.loaded(segment_id)

    def checkpoint(self, file_hash: str, source: str) -> importer.Checkpoint | None:
        assert self._writer is not None, "Pipeline.open() must run first"
        return self._writer.checkpoint(file_hash, source)

    def rebuild_identity(self, namespace: str) -> int:
        """Recompute a namespace's identity mappings from its stored rules (§5.2)."""
        assert self._writer is not None, "Pipeline.open() must run first"
        with self._load_lock:
            return self._writer.rebuild_identity(namespace)

    # -- loading ---------------------------------------------------------------------------

    def drain(self) -> int:
        """Load every sealed segment, oldest first, in micro-batches; returns events loaded."""
        with self._load_lock, warehouse.gc_paused():
            loaded = 0
            group: list[SegmentEvents] = []
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

    def _load(self, group: list[SegmentEvents]) -> int:
        """One transaction for the group; on a data error, each segment alone finds the bad one."""
        try:
            return self._load_once(group)
        except TerminalError as exc:
            if len(group) == 1:
                self.spool.fail(group[0][0], str(exc))
                return 0
            return sum(self._load([member]) for member in group)

    def _load_once(self, group: list[SegmentEvents]) -> int:
        assert self._writer is not None, "Pipeline.open() must run first"
        started = time.perf_counter()
        namespaces = {name: source.namespace for name, source in self.sources.items()}
        events = [pair for _, members in group for pair in members]
        with warehouse.batch_work(f"Loading segments {group[0][0]}.."):
            batch = microbatch.build(self._writer, events, namespaces)
            for namespace in {t.namespace for t in batch.tables} | set(batch.discards):
                warehouse.ensure_namespace(self.con, namespace)
            result = self._writer.write(batch, _loaded_per_segment(group, batch.fresh_index))
        for segment_id, _ in group:
            self.spool.complete(segment_id)
        loaded = result.events - result.duplicates
        seconds = time.perf_counter() - started
        self.on_loaded(
            {
                "seconds": seconds,
                "events": loaded,
                "duplicates": result.duplicates,
                "discards": result.discards,
                "merges": result.merges,
                "rows": result.rows,
                "duckdb_memory_bytes": warehouse.memory_bytes(self.con),
            }
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
            seconds * 1000,
        )
        return loaded


def _loaded_per_segment(
    group: list[SegmentEvents], fresh_index: list[int]
) -> list[tuple[str, int]]:
    """(segment id, events it added) for the load markers; duplicates are not counted."""
    bounds, end = [], 0
    for segment_id, members in group:
        bounds.append((segment_id, end, end + len(members)))
        end += len(members)
    fresh = sorted(fresh_index)
    out = []
    for segment_id, start, stop in bounds:
        out.append((segment_id, bisect.bisect_left(fresh, stop) - bisect.bisect_left(fresh, start)))
    return out
