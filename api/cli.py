"""The `loader` command: serve, sources, status, migrate (and `python -m api`)."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from api import admin
from loader import importer
from loader.errors import LoaderError
from loader.pipeline import Pipeline
from loader.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

_HELP = {
    "database": "DuckDB warehouse file.",
    "spool_dir": "Folder of write-ahead segments (open/, sealed/, failed/).",
    "host": "Address to listen on.",
    "port": "Port to listen on.",
    "trusted_proxies": "Comma-separated peers whose X-Forwarded-For sets request_ip.",
    "body_timeout": "Seconds a request body may take to arrive.",
    "segment_max_events": "Seal the open spool segment at this many events.",
    "segment_max_bytes": "Seal the open spool segment at this many bytes.",
    "segment_max_age": "Seal the open spool segment after this many seconds.",
    "backlog_max_bytes": "Answer 503 while more than this many sealed bytes wait to load.",
    "min_free_bytes": "Answer 503 while less than this much disk is free for the spool.",
    "load_max_events": "Events loaded per warehouse transaction.",
    "duckdb_memory_limit": "DuckDB's memory (e.g. 2GB); beyond it, it spills to disk.",
    "query_timeout": "Seconds a query may run before it is stopped.",
    "query_max_rows": "Rows a query returns at most.",
    "loader_in_thread": "Load in a thread of the HTTP process instead of its own process.",
    "log_level": "debug, info, warning or error.",
}


def settings_options(*names: str) -> Callable[[F], F]:
    """Options for Settings fields: `--x-y` is field `x_y` and env `LOADER_X_Y`."""
    defaults = Settings()

    def decorate(func: F) -> F:
        for name in reversed(names):
            default = getattr(defaults, name)
            if isinstance(default, tuple):
                default = ",".join(default)
            flag = "--" + name.replace("_", "-")
            func = click.option(
                flag,
                name,
                default=None,
                is_flag=isinstance(default, bool),
                flag_value=True if isinstance(default, bool) else None,
                help=f"{_HELP[name]} [env LOADER_{name.upper()}; default {default}]",
            )(func)
        return func

    return decorate


def _settings(**flags: Any) -> Settings:
    return Settings.from_env(**flags)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_command(
    settings: Settings,
    name: str,
    args: dict[str, Any],
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Through the running server if there is one, else on the warehouse file directly."""
    result = admin.call(settings, name, args, progress)
    if result is not admin.NOT_RUNNING:
        return result
    pipeline = Pipeline(settings)
    try:
        pipeline.open(create_default=True)
        if pipeline.created_default is not None:
            click.echo(
                f"Created source `default` (namespace `main`) in {settings.database}; its write "
                f"key: {pipeline.created_default.write_key}",
                err=True,
            )
        return pipeline.command(name, args, progress)
    finally:
        pipeline.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="event-warehouse", prog_name="loader")
def main() -> None:
    """An event warehouse: a RudderStack/Segment-compatible HTTP collector on DuckDB.

    Start with `loader serve`, then send events with any RudderStack or Segment SDK (or curl)
    using the write key it prints. Every command takes --database and --spool-dir (or
    LOADER_DATABASE and LOADER_SPOOL_DIR), so scripts can point all of them at one warehouse.
    While `loader serve` runs, other commands go through it.
    """


@main.command()
@settings_options(*(f.name for f in dataclasses.fields(Settings)))
def serve(**flags: Any) -> None:
    """Accept events over HTTP and load them into the warehouse.

    The first start on an empty warehouse creates the source `default` (namespace `main`)
    and prints its write key once. Stop with Ctrl-C: requests in flight finish first.
    """
    from api.server import run as run_server

    settings = _settings(**flags)
    _configure_logging(settings.log_level)
    try:
        run_server(settings)
    except LoaderError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@settings_options("database", "spool_dir")
def migrate(**flags: Any) -> None:
    """Bring the warehouse's fixed tables up to date (also done at every start)."""
    from loader import warehouse

    settings = _settings(**flags)
    _guard(lambda: warehouse.migrate(settings.database))
    click.echo(f"Warehouse {settings.database} is up to date.")


@main.command()
@settings_options("database", "spool_dir")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def status(fmt: str, **flags: Any) -> None:
    """Show the spool backlog, failed segments and sources."""
    result = _guard(lambda: run_command(_settings(**flags), "status", {}))
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    backlog = result["backlog"]
    click.echo(f"database:  {result['database']}")
    click.echo(f"spool:     {result['spool_dir']}")
    click.echo(
        f"backlog:   {backlog['segments']} segments, {backlog['events']} events, "
        f"{backlog['bytes']} bytes, oldest {backlog['oldest_age_seconds']} s"
    )
    click.echo(f"failed:    {result['failed_segments']} segments")
    click.echo(
        f"loaded:    {result['events_loaded']} events from the spool, last at "
        f"{result['last_load']}; {result['events_imported']} imported from files"
    )
    click.echo(f"discards:  {result['discards']}")
    for table, count in result["rows"].items():
        click.echo(f"  {table:<40} {count:>12} rows")
    click.echo(f"sources:   {', '.join(s['name'] for s in result['sources']) or 'none'}")


@main.command()
@settings_options("database", "spool_dir")
def flush(**flags: Any) -> None:
    """Load everything waiting in the spool now, then exit (through the server if it runs)."""
    result = _guard(lambda: run_command(_settings(**flags), "flush", {}))
    click.echo(
        f"Loaded {result['events_loaded']} events from {result['segments_loaded']} segments; "
        f"{result['segments_waiting']} segments waiting, {result['failed_segments']} failed."
    )


@main.command("check")
@settings_options("database", "spool_dir")
def check_(**flags: Any) -> None:
    """Check the warehouse's consistency; exits 1 and lists the problems if there are any.

    Every merge rule's identifiers are mapped once and form the components the rules give;
    every event row has its exactly-once key and no message id is loaded twice; every event
    table row has its tracks row; every user has an identify.
    """
    result = _guard(lambda: run_command(_settings(**flags), "check", {}))
    for problem in result["problems"]:
        click.echo(f"problem: {problem}")
    total = sum(result["rows"].values())
    if not result["ok"]:
        raise click.ClickException(f"{len(result['problems'])} problems found.")
    click.echo(f"OK: {len(result['rows'])} tables, {total} rows checked.")


@main.group()
def sources() -> None:
    """Manage sources: each has a write key and a namespace (DuckDB schema)."""


@sources.command("add")
@click.argument("name")
@click.option("--namespace", default=None, help="DuckDB schema for its tables [default: from NAME]")
@settings_options("database", "spool_dir")
def sources_add(name: str, namespace: str | None, **flags: Any) -> None:
    """Create a source; prints only its write key, so `KEY=$(loader sources add web)` works."""
    result = _guard(
        lambda: run_command(
            _settings(**flags), "sources.add", {"name": name, "namespace": namespace}
        )
    )
    click.echo(result["write_key"])


@sources.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@settings_options("database", "spool_dir")
def sources_list(fmt: str, **flags: Any) -> None:
    """List sources (write keys shortened)."""
    result = _guard(lambda: run_command(_settings(**flags), "sources.list", {}))
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{'NAME':<20} {'NAMESPACE':<20} {'ENABLED':<8} {'KEY':<8} CREATED")
    for row in result:
        click.echo(
            f"{row['name']:<20} {row['namespace']:<20} {row['enabled']!s:<8} "
            f"{row['write_key']:<8} {row['created_at']}"
        )


def _named(command: str, doc: str) -> None:
    @sources.command(command.split(".")[1], help=doc)
    @click.argument("name")
    @settings_options("database", "spool_dir")
    def run(name: str, **flags: Any) -> None:
        result = _guard(lambda: run_command(_settings(**flags), command, {"name": name}))
        if "write_key" in result and len(result["write_key"]) > 8:
            click.echo(result["write_key"])
        else:
            click.echo(f"Source {result['name']}: enabled={result['enabled']}")


_named("sources.disable", "Reject the source's write key (its data stays).")
_named("sources.enable", "Accept the source's write key again.")
_named(
    "sources.rotate-key", "Give the source a new write key; prints it. The old key stops working."
)


_SOURCE = click.option(
    "--source",
    default="default",
    show_default=True,
    help="The source, and so the namespace (DuckDB schema), to work in.",
)


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@_SOURCE
@click.option(
    "--on-error",
    type=click.Choice(["abort", "skip"]),
    default="abort",
    show_default=True,
    help="abort: stop at the first bad line (FILE:LINE: reason), keeping only whole "
    "committed micro-batches. skip: write bad lines to --rejects and go on.",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="NDJSON file the rejected lines are appended to (file, line, reason). "
    "[default with --on-error skip: ./import-rejects.ndjson]",
)
@settings_options("database", "spool_dir", "load_max_events")
def import_(
    paths: tuple[Path, ...], source: str, on_error: str, rejects: Path | None, **flags: Any
) -> None:
    """Load historical events from JSON files and folders (recursively).

    Each file may be NDJSON (one event per line, or RudderStack job lines), a JSON array of
    events, or {"batch": [...]}, optionally gzip-compressed. Events are validated like the
    HTTP API, keep their own timestamps, and go through the same tables, dedup and identity
    graph. Re-running an import adds nothing; an interrupted one resumes where it stopped.
    """
    settings = _settings(**flags)
    if on_error == "skip" and rejects is None:
        rejects = Path("import-rejects.ndjson")
    args = {
        "paths": [str(p.resolve()) for p in paths],
        "source": source,
        "on_error": on_error,
        "rejects": str(rejects.resolve()) if rejects else None,
        "batch_size": settings.load_max_events,
    }
    bar = _ProgressBar() if sys.stderr.isatty() else None
    progress = bar.update if bar is not None else importer.log_progress()
    if bar is None:
        _configure_logging(settings.log_level)
    try:
        summary = _guard(lambda: run_command(settings, "import", args, progress))
    finally:
        if bar is not None:
            bar.close()
    rate = summary["events_loaded"] / summary["elapsed"] if summary["elapsed"] else 0.0
    click.echo(
        f"Imported {summary['files']} files: {summary['events_loaded']} events loaded, "
        f"{summary['duplicates']} duplicates skipped, {summary['rejected']} rejected"
        + (f" (see {rejects})" if summary["rejected"] and rejects else "")
        + f", {summary['resumed']} resumed, {summary['skipped']} already imported; "
        f"{len(summary['tables'])} tables in {summary['elapsed']:.1f} s ({rate:,.0f} events/s)."
    )
    if summary["tables"]:
        click.echo("Tables: " + ", ".join(summary["tables"]))


class _ProgressBar:
    """Bytes read, events, rate and ETA on a terminal."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True, desc="import"
        )

    def update(self, state: dict[str, Any]) -> None:
        self._bar.total = state["total_bytes"]
        self._bar.n = state["bytes"]
        self._bar.set_postfix(events=state["events"], refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


@main.command("query")
@click.argument("sql", required=False)
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Run the SQL in this file.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Bind $NAME in the SQL (repeatable); values are never pasted into the SQL.",
)
@_SOURCE
@click.option(
    "--format",
    "fmt",
    default=None,
    type=click.Choice(["table", "csv", "json", "ndjson", "parquet"]),
    help="Output format [default: table, or from the --output file's extension].",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the result to this file instead of the terminal.",
)
@click.option("--list", "list_", is_flag=True, help="List the named queries and exit.")
@click.option("--max-rows", type=int, default=None, help="Rows at most [setting query_max_rows].")
@click.option(
    "--timeout", type=float, default=None, help="Seconds at most [setting query_timeout]."
)
@settings_options("database", "spool_dir")
def query_(
    sql: str | None,
    file: str | None,
    params: tuple[str, ...],
    source: str,
    fmt: str | None,
    output: Path | None,
    list_: bool,
    max_rows: int | None,
    timeout: float | None,
    **flags: Any,
) -> None:
    """Run SQL on the warehouse, or a named query from sql/queries/ (see --list).

    \b
      loader query "select event, count(*) from tracks group by 1 order by 2 desc"
      loader query daily_active_users --param days=30
      loader query user_timeline --param id=alex@example.com --format csv --output alex.csv

    Works whether or not `loader serve` runs; through a running server, queries are
    read-only and cut at --timeout and --max-rows.
    """
    from loader import query

    if list_:
        for name, description in query.named_queries():
            click.echo(f"{name:<24} {description}")
        return
    bound: dict[str, str] = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        bound[name.strip()] = value
    if fmt is None:
        fmt = output.suffix.lstrip(".") if output is not None else "table"
        fmt = {"jsonl": "ndjson", "pq": "parquet"}.get(fmt, fmt)
        if fmt not in ("table", "csv", "json", "ndjson", "parquet"):
            raise click.BadParameter(
                f"cannot tell the format of {output}; add --format", param_hint="--output"
            )
    if fmt == "parquet" and output is None:
        raise click.BadParameter("parquet needs --output FILE", param_hint="--format")
    text = _guard(lambda: query.resolve_sql(sql, file))
    args: dict[str, Any] = {
        "sql": text,
        "params": bound,
        "source": source,
        "format": fmt,
        "output": str(output.resolve()) if output else None,
        "max_rows": max_rows,
        "timeout": timeout,
    }
    result = _guard(lambda: run_command(_settings(**flags), "query", args))
    if output is not None:
        click.echo(
            f"Wrote {result['row_count']} rows to {output}"
            + (" (cut at the row limit)" if result["truncated"] else "")
            + ".",
            err=True,
        )
        return
    _print_rows(result, fmt)
    if result["truncated"]:
        click.echo(f"(cut at {result['row_count']} rows; raise --max-rows)", err=True)


def _print_rows(result: dict[str, Any], fmt: str) -> None:
    columns, rows = result["columns"], result["rows"]
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2))
    elif fmt == "ndjson":
        for row in rows:
            click.echo(json.dumps(dict(zip(columns, row, strict=True))))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    else:
        cells = [[_cell(v) for v in row] for row in rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        click.echo("  ".join("-" * w for w in widths))
        for row in cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@main.group()
def identity() -> None:
    """The identity graph: which identifiers are one person (rudder_id), and why."""


_FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")


@identity.command("show")
@click.argument("identifier")
@_SOURCE
@_FORMAT
@settings_options("database", "spool_dir")
def identity_show(identifier: str, source: str, fmt: str, **flags: Any) -> None:
    """Show the person IDENTIFIER belongs to: every id, first/last seen, events, traits.

    IDENTIFIER is any value as sent (user id, anonymous id, an email from a merge call) or
    `type:value`, e.g. `email:alex@example.com`.
    """
    result = _guard(
        lambda: run_command(
            _settings(**flags), "identity.show", {"identifier": identifier, "source": source}
        )
    )
    if fmt == "json":
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for person in result:
        click.echo(f"rudder_id:      {person.pop('rudder_id')}")
        for key in ("user_ids", "anonymous_ids", "other_ids"):
            click.echo(f"{key + ':':<15} {', '.join(person.pop(key, [])) or '-'}")
        for key in ("first_seen", "last_seen", "event_count"):
            click.echo(f"{key + ':':<15} {person.pop(key, '-')}")
        for key, value in person.items():
            click.echo(f"  {key}: {value}")


@identity.command("explain")
@click.argument("a")
@click.argument("b")
@_SOURCE
@_FORMAT
@settings_options("database", "spool_dir")
def identity_explain(a: str, b: str, source: str, fmt: str, **flags: Any) -> None:
    """The shortest chain of events linking identifiers A and B, or why they are not linked."""
    result = _guard(
        lambda: run_command(
            _settings(**flags), "identity.explain", {"a": a, "b": b, "source": source}
        )
    )
    if fmt == "json":
        click.echo(json.dumps(result, indent=2, default=str))
        return
    if not result["linked"] or not result["chain"]:
        click.echo(result.get("message", f"{a} and {b} are the same identifier."))
        return
    click.echo(f"{a} and {b} are one person (rudder_id {result['rudder_id']}):")
    for step in result["chain"]:
        click.echo(
            f"  {step['from']} -- {step['to']}   by {step['call_type']} "
            f"{step['message_id']} ({step['source']}, {step['received_at']})"
        )


@identity.command("rebuild")
@_SOURCE
@settings_options("database", "spool_dir")
def identity_rebuild(source: str, **flags: Any) -> None:
    """Recompute every identity mapping from the stored merge rules (new rudder_ids)."""
    result = _guard(lambda: run_command(_settings(**flags), "identity.rebuild", {"source": source}))
    click.echo(f"Rebuilt {result['identifiers']} identifiers in namespace {result['namespace']}.")


T = TypeVar("T")


def _guard(action: Callable[[], T]) -> T:
    """A LoaderError is the user's to fix: print its message and exit 1, no traceback."""
    try:
        return action()
    except LoaderError as exc:
        raise click.ClickException(str(exc)) from None
