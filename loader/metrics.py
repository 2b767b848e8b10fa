"""Prometheus metrics of a serving process: one registry, fed by the HTTP path and by the
loader's reports (which cross the pipe from the loader process after every load)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from loader.spool import Backlog


class Metrics:
    def __init__(self, backlog: Callable[[], Backlog]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loader_http_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.events_accepted = Counter(
            "loader_events_accepted",
            "Events acknowledged (spooled and fsynced) by source.",
            ["source"],
            registry=self.registry,
        )
        self.load_seconds = Histogram(
            "loader_load_duration_seconds",
            "Time of one micro-batch load transaction.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.events_loaded = Counter(
            "loader_events_loaded", "Events loaded into the warehouse.", registry=self.registry
        )
        self.duplicates = Counter(
            "loader_duplicates_skipped",
            "Events skipped as already loaded (source, messageId).",
            registry=self.registry,
        )
        self.rows = Counter(
            "loader_rows_loaded",
            "Rows inserted, by namespace.table.",
            ["table"],
            registry=self.registry,
        )
        self.discards = Counter(
            "loader_discards", "Values written to rudder_discards.", registry=self.registry
        )
        self.merges = Counter(
            "loader_identity_merges",
            "Identity components absorbed into another.",
            registry=self.registry,
        )
        self.duckdb_memory = Gauge(
            "loader_duckdb_memory_bytes",
            "DuckDB's own memory after the last load (duckdb_memory(); mostly its block cache, "
            "which --duckdb-memory-limit caps).",
            registry=self.registry,
        )
        self.registry.register(_BacklogCollector(backlog))
        # Labelled children by label values: labels() takes a lock and checks its arguments on
        # every call, which the request path does not need to pay each time.
        self._requests: dict[tuple[str, int], Counter] = {}
        self._accepted: dict[str, Counter] = {}

    def request(self, endpoint: str, status: int) -> None:
        """One response; `endpoint` must come from a bounded set (paths, or "other")."""
        child = self._requests.get((endpoint, status))
        if child is None:
            child = self._requests[endpoint, status] = self.requests.labels(endpoint, str(status))
        child.inc()

    def accepted(self, source: str, events: int) -> None:
        """`events` of `source` acknowledged."""
        child = self._accepted.get(source)
        if child is None:
            child = self._accepted[source] = self.events_accepted.labels(source)
        child.inc(events)

    def loaded(self, report: dict[str, Any]) -> None:
        """A load report from the loader (Pipeline.on_loaded)."""
        self.load_seconds.observe(report["seconds"])
        self.events_loaded.inc(report["events"])
        self.duplicates.inc(report["duplicates"])
        self.discards.inc(report["discards"])
        self.merges.inc(report["merges"])
        for table, count in report["rows"].items():
            self.rows.labels(table).inc(count)
        self.duckdb_memory.set(report["duckdb_memory_bytes"])


class _BacklogCollector(Collector):
    """The spool's backlog, read when scraped."""

    def __init__(self, backlog: Callable[[], Backlog]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        backlog = self._backlog()
        yield GaugeMetricFamily(
            "loader_spool_backlog_segments",
            "Sealed segments waiting to load.",
            value=backlog.segments,
        )
        yield GaugeMetricFamily(
            "loader_spool_backlog_bytes",
            "Bytes of sealed segments waiting to load.",
            value=backlog.bytes,
        )
        yield GaugeMetricFamily(
            "loader_spool_oldest_age_seconds",
            "Age of the oldest sealed segment.",
            value=backlog.oldest_age,
        )
        yield GaugeMetricFamily(
            "loader_spool_failed_segments", "Segments quarantined in failed/.", value=backlog.failed
        )
