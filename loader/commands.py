"""The commands `loader` runs on a warehouse, whether it opened it or a server did.

Each takes the Pipeline and a dict of JSON-able arguments and returns JSON-able data, so the
admin endpoint and the local CLI share one implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from loader import check, identity_commands, importer, query, sources, warehouse
from loader.errors import LoaderError
from loader.importer import Progress
from loader.naming import SYSTEM_TABLES, quote

if TYPE_CHECKING:
    from loader.pipeline import Pipeline


class UnknownCommand(LoaderError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted([*COMMANDS, *STREAMING]))
        super().__init__(f"Unknown command {name!r}; known: {known}.")


def sources_add(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
    cur = pipeline.con.cursor()
    source = sources.add(cur, args["name"], args.get("namespace"))
    warehouse.ensure_namespace(cur, source.namespace)
    pipeline.refresh_sources()
    return {**source.public(), "write_key": source.write_key}


def sources_list(pipeline: Pipeline, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [s.public() for s in sources.all_sources(pipeline.con.cursor())]


def _set_enabled(enabled: bool) -> Callable[[Pipeline, dict[str, Any]], dict[str, Any]]:
    def run(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
        source = sources.set_enabled(pipeline.con.cursor(), args["name"], enabled)
        pipeline.refresh_sources()
        return source.public()

    return run


def sources_rotate_key(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
    source = sources.rotate_key(pipeline.con.cursor(), args["name"])
    pipeline.refresh_sources()
    return {**source.public(), "write_key": source.write_key}


def flush(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
    """Seal the open segment and load everything sealed, now.

    The loader's own loop may load some of it first; the answer counts every segment loaded
    while the flush ran, whoever loaded it.
    """
    started = datetime.now(UTC)
    pipeline.seal_open()
    pipeline.drain()
    segments, events = pipeline.con.cursor().execute(
        "SELECT count(*), coalesce(sum(events), 0) FROM main._loads WHERE loaded_at >= ?",
        [started],
    ).fetchone() or (0, 0)
    backlog = pipeline.spool.backlog()
    return {
        "segments_loaded": segments,
        "events_loaded": int(events),
        "failed_segments": backlog.failed,
        "segments_waiting": backlog.segments,
    }


def status(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
    backlog = pipeline.spool.backlog()
    cur = pipeline.con.cursor()
    last_load, events_loaded = cur.execute(
        "SELECT max(loaded_at), coalesce(sum(events), 0) FROM main._loads"
    ).fetchone() or (None, 0)
    return {
        "database": str(pipeline.settings.database),
        "spool_dir": str(pipeline.settings.spool_dir),
        "backlog": {
            "segments": backlog.segments,
            "events": pipeline.spool.count_events(),
            "bytes": backlog.bytes,
            "oldest_age_seconds": round(backlog.oldest_age, 3),
        },
        "failed_segments": backlog.failed,
        "last_load": last_load.isoformat() if last_load else None,
        "events_loaded": int(events_loaded),
        "events_imported": int(
            (cur.execute("SELECT coalesce(sum(events), 0) FROM main._imports").fetchone() or (0,))[
                0
            ]
        ),
        "discards": _count_discards(cur),
        "rows": _row_counts(cur),
        "sources": [s.public() for s in sources.all_sources(cur)],
    }


def _row_counts(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per event table, `namespace.table` (system tables left out)."""
    tables = cur.execute(
        "SELECT schema_name, table_name, estimated_size FROM duckdb_tables() "
        "WHERE database_name = current_database() ORDER BY schema_name, table_name"
    ).fetchall()
    return {
        f"{schema}.{table}": int(
            (
                cur.execute(f"SELECT count(*) FROM {quote(schema)}.{quote(table)}").fetchone()
                or (0,)
            )[0]
        )
        for schema, table, _ in tables
        if table not in SYSTEM_TABLES and not table.startswith("rudder_")
    }


def _count_discards(cur: duckdb.DuckDBPyConnection) -> int:
    namespaces = [
        row[0]
        for row in cur.execute(
            "SELECT DISTINCT schema_name FROM duckdb_tables() WHERE table_name = 'rudder_discards'"
        ).fetchall()
    ]
    return sum(
        int(
            (cur.execute(f"SELECT count(*) FROM {quote(ns)}.rudder_discards").fetchone() or (0,))[0]
        )
        for ns in namespaces
    )


def import_files(pipeline: Pipeline, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """`loader import`: files and folders of JSON events into a source's tables."""
    source = args.get("source") or sources.DEFAULT_SOURCE
    if source not in pipeline.sources:
        known = ", ".join(sorted(pipeline.sources)) or "none"
        raise LoaderError(
            f"No source named {source!r} (sources: {known}); create it with "
            f"`loader sources add {source}`."
        )
    rejects = args.get("rejects")
    with warehouse.gc_paused():  # parsing too: see gc_paused
        summary = importer.run(
            [Path(p) for p in args["paths"]],
            source=source,
            on_error=args.get("on_error", "abort"),
            rejects=Path(rejects) if rejects else None,
            batch_size=int(args.get("batch_size") or pipeline.settings.load_max_events),
            load=pipeline.import_batch,
            checkpoint_of=pipeline.checkpoint,
            progress=progress,
        )
    return summary._asdict()


def query_command(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
    """`loader query`: run SQL on a source's namespace; rows back, or a file written."""
    namespace = identity_commands.namespace_of(pipeline, args)
    settings = pipeline.settings
    result = query.run(
        pipeline.con,
        args["sql"],
        args.get("params") or {},
        schema=namespace,
        reading_only=pipeline.serving,
        timeout=float(args.get("timeout") or settings.query_timeout),
        max_rows=int(args.get("max_rows") or settings.query_max_rows),
    )
    answer: dict[str, Any] = {"row_count": result.table.num_rows, "truncated": result.truncated}
    if args.get("output"):
        query.write(result.table, args.get("format", "csv"), Path(args["output"]))
        answer["output"] = args["output"]
    else:
        answer.update(query.jsonable(result.table))
    return answer


STREAMING: dict[str, Callable[[Pipeline, dict[str, Any], Progress], Any]] = {
    "import": import_files,
}
"""Commands that report progress while they run (a long import)."""

COMMANDS: dict[str, Callable[[Pipeline, dict[str, Any]], Any]] = {
    "sources.add": sources_add,
    "sources.list": sources_list,
    "sources.enable": _set_enabled(True),
    "sources.disable": _set_enabled(False),
    "sources.rotate-key": sources_rotate_key,
    "status": status,
    "identity.show": identity_commands.show,
    "identity.explain": identity_commands.explain,
    "identity.rebuild": identity_commands.rebuild,
    "flush": flush,
    "check": check.check,
    "query": query_command,
}
