"""Queries on the warehouse: SQL text, files, or named queries from sql/queries/.

Parameters are bound by DuckDB (`$name`), never formatted into the SQL. While the server owns
the warehouse, only reading statements run, on their own cursor, cut at a time limit and a
row limit; the connection itself has external (file) access disabled.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from loader.errors import LoaderError
from loader.sqlfiles import SQL_DIR

OutputFormat = Literal["table", "csv", "json", "ndjson", "parquet"]
QUERIES = SQL_DIR / "queries"
_READING = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_ANALYZE = re.compile(r"\s*explain\s+analy[sz]e\b", re.IGNORECASE)


class QueryError(LoaderError):
    """The SQL failed, was refused, or ran past its limit; the message says which."""


class QueryResult(NamedTuple):
    table: pa.Table
    truncated: bool
    """More rows than the row limit existed; `table` holds the first ones."""


def named_queries() -> list[tuple[str, str]]:
    """(name, description) of every sql/queries/*.sql; the description is its first comment."""
    out = []
    for path in sorted(QUERIES.glob("*.sql")):
        first = next(
            (
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.startswith("--")
            ),
            "-- ",
        )
        out.append((path.stem, first[2:].strip()))
    return out


def resolve_sql(text: str | None, file: str | None) -> str:
    """The SQL to run: a file, a named query (a bare word naming sql/queries/NAME.sql), or text."""
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise QueryError(f"No SQL file {file}.")
        return path.read_text(encoding="utf-8")
    if text is None or not text.strip():
        raise QueryError("Give SQL, a named query (see `loader query --list`) or --file PATH.")
    if text.strip().isidentifier():
        path = QUERIES / f"{text.strip()}.sql"
        if path.is_file():
            return path.read_text(encoding="utf-8")
        names = ", ".join(name for name, _ in named_queries())
        raise QueryError(f"No named query {text.strip()!r}; named queries: {names}.")
    return text


def check_reading(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but reading statements (a running server's warehouse is read-only)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"The SQL does not parse: {exc}") from None
    for statement in statements:
        if statement.type not in _READING or _ANALYZE.match(statement.query):
            kind = str(statement.type).rsplit(".", 1)[-1]
            if _ANALYZE.match(statement.query):
                kind = "EXPLAIN ANALYZE"  # it runs the statement it explains
            raise QueryError(
                f"{kind} statements are refused while the server is running: queries through "
                "it are read-only (SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, EXPLAIN). Stop the "
                "server to change the warehouse directly."
            )


def run(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Mapping[str, str],
    *,
    schema: str,
    reading_only: bool,
    timeout: float,
    max_rows: int,
) -> QueryResult:
    """Run `sql` on a fresh cursor of `con`, in `schema`, within the limits."""
    cursor = con.cursor()  # its own connection: the loader may be busy with `con`
    if reading_only:
        try:
            check_reading(cursor, sql)
        except QueryError:
            cursor.close()
            raise
    cursor.execute("SET TimeZone = 'UTC'")
    cursor.execute(f"SET schema = '{schema.replace(chr(39), chr(39) * 2)}'")
    timer = threading.Timer(timeout, cursor.interrupt)
    timer.start()
    try:
        relation = cursor.sql(sql, params=dict(params) if params else None)
        if relation is None:  # a statement without a result (local mode only)
            return QueryResult(pa.table({}), False)
        reader = relation.to_arrow_reader(min(max_rows + 1, 100_000))
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise QueryError(
            f"The query ran longer than its limit of {timeout:g} s and was stopped "
            "(raise it with --timeout)."
        ) from None
    except duckdb.Error as exc:
        raise QueryError(_explain(exc, params)) from None
    finally:
        timer.cancel()
        cursor.close()
    return QueryResult(table.slice(0, max_rows), table.num_rows > max_rows)


def _explain(exc: duckdb.Error, params: Mapping[str, str]) -> str:
    text = str(exc)
    if "parameter" in text.lower():
        return f"{text} — pass each with --param NAME=VALUE (given: {sorted(params) or 'none'})."
    if isinstance(exc, duckdb.CatalogException):
        return f"{text} — the table appears once events of that kind are loaded."
    if isinstance(exc, duckdb.PermissionException):
        return f"{text} — queries cannot read or write files; use --output for results."
    return text


def write(table: pa.Table, fmt: OutputFormat, output: Path) -> None:
    """Write a result as CSV, JSON (an array), NDJSON or Parquet."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, output)
    elif fmt == "csv":
        pa_csv.write_csv(table, output)
    else:
        rows = table.to_pylist()
        option = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY
        with output.open("wb") as file:
            if fmt == "json":
                file.write(orjson.dumps(rows, default=str, option=option | orjson.OPT_INDENT_2))
            else:
                for row in rows:
                    file.write(orjson.dumps(row, default=str, option=option))
                    file.write(b"\n")


def jsonable(table: pa.Table) -> dict[str, Any]:
    """Columns, DuckDB-ish type names and rows with JSON-safe values (for the terminal)."""
    rows = [[_plain(value) for value in row.values()] for row in table.to_pylist()]
    return {
        "columns": table.column_names,
        "types": [str(t) for t in table.schema.types],
        "rows": rows,
    }


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
