"""The DuckDB warehouse: migrations, namespaces, and loading rows in one transaction.

This module owns the only read-write connection; other threads use `.cursor()`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from loader import faults, identity, views
from loader.errors import ConfigError, TerminalError, TransientError
from loader.flatten import MergeRule
from loader.importer import Checkpoint
from loader.microbatch import Batch, TableLoad
from loader.naming import quote
from loader.sqlfiles import statements
from loader.types import DUCKDB_TYPES, ColumnType

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def migrate(database: Path, revision: str = "head") -> None:
    """`alembic upgrade <revision>` (head) on the warehouse file; run before the writer
    connection opens. Tests pass an older revision to build a warehouse of that age."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per start is enough
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    database.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # duckdb-engine warns that it cannot reflect indexes; Alembic does not need them.
        warnings.simplefilter("ignore")
        engine = create_engine(f"duckdb:///{database}")
        try:
            with engine.begin() as connection:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS_DIR))
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        finally:
            engine.dispose()


def connect(
    database: Path, read_only: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse; a lock held by another process becomes a clear TransientError.

    `memory_limit` bounds DuckDB's own memory (its cache of table blocks grows with the
    warehouse otherwise, up to 80% of RAM); what a query needs beyond it spills to disk.
    """
    # No file access from SQL: queries through a running server must not read or write files,
    # and the loader moves data through Arrow, never through paths.
    config: dict[str, Any] = {"enable_external_access": False}
    if memory_limit:
        config["memory_limit"] = memory_limit
    try:
        con = duckdb.connect(str(database), read_only=read_only, config=config)
    except (duckdb.ParserException, duckdb.InvalidInputException) as exc:
        if memory_limit and "memory" in str(exc).lower():
            raise ConfigError(
                f"LOADER_DUCKDB_MEMORY_LIMIT={memory_limit!r} is not a memory size ({exc}); "
                "use a number and a unit, such as 2GB or 512MB."
            ) from None
        raise
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise TransientError(
                f"The warehouse {database} is locked by another process ({exc}). "
                "If `loader serve` runs, commands go through it; otherwise stop the other "
                "process and try again."
            ) from exc
        raise
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # for every cursor, not only this one
    return con


def memory_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """DuckDB's own memory now (buffers it tracks: cached blocks, indexes, transactions)."""
    # fetchall, not fetchone: DuckDB 2 keeps a result that was not read to its end open, and
    # the connection refuses other work until it is.
    [(total,)] = con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()
    return int(total or 0)


def ensure_namespace(con: duckdb.DuckDBPyConnection, namespace: str) -> None:
    """Create a namespace's schema and system tables if they are missing."""
    for statement in statements("namespace/create_tables.sql", namespace=namespace):
        con.execute(statement)


# -- loading -------------------------------------------------------------------------------

_FROM_DUCKDB: dict[str, ColumnType] = {
    "BIGINT": "int",
    "INTEGER": "int",
    "SMALLINT": "int",
    "TINYINT": "int",
    "HUGEINT": "int",
    "UBIGINT": "int",
    "UINTEGER": "int",
    "DOUBLE": "float",
    "FLOAT": "float",
    "REAL": "float",
    "BOOLEAN": "boolean",
    "TIMESTAMP WITH TIME ZONE": "datetime",
    "TIMESTAMP": "datetime",
    "DATE": "datetime",
    "VARCHAR": "string",
    "JSON": "json",
}
_ARROW: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "datetime": pa.string(),
    "string": pa.string(),
    "json": pa.string(),
}
_UINT64 = (1 << 64) - 1
_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_TRANSPOSED_CELLS = 8_000_000
"""Rows x columns transposed at once by _arrow_table: 64 MB of list slots at most."""


def column_type(duckdb_type: str) -> ColumnType:
    """Our type for a warehouse column; a type a person set by hand is honoured (§3.3)."""
    if duckdb_type.startswith("DECIMAL"):
        return "float"
    return _FROM_DUCKDB.get(duckdb_type, "string")


class LoadResult(NamedTuple):
    events: int
    duplicates: int
    rows: dict[str, int]
    """Rows inserted per `namespace.table`."""
    discards: int
    new_columns: int
    merges: int
    """Stored identity components absorbed into others by this load."""


class _Graph(NamedTuple):
    """What the writer keeps of one namespace's identity graph (§5.2 state), so a batch's
    identity step costs what the batch brings, not what the warehouse holds."""

    labels: dict[identity.Node, str]
    rules: set[int]
    """Keys of the stored merge rules (_rule_key)."""


def _rule_key(rule: MergeRule) -> int:
    """128 bits of a rule's four values (None apart from any string)."""
    text = "\x1f".join("\x00" if part is None else part for part in rule)
    return int.from_bytes(hashlib.md5(text.encode("utf-8", "surrogatepass")).digest(), "little")


class DuckDBWriter:
    """The one Backend (loader/backend.py) today: DuckDB through one connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._tables: dict[str, dict[str, dict[str, ColumnType]]] = {}
        self._graphs: dict[str, _Graph] = {}
        self._after_commit: list[Callable[[], None]] = []

    def tables(self, namespace: str) -> dict[str, dict[str, ColumnType]]:
        if namespace not in self._tables:
            rows = self.con.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? ORDER BY table_name, ordinal_position",
                [namespace],
            ).fetchall()
            found: dict[str, dict[str, ColumnType]] = {}
            for table, column, kind in rows:
                found.setdefault(table, {})[column] = column_type(kind)
            self._tables[namespace] = found
        return self._tables[namespace]

    def seen(self, keys: Sequence[int]) -> set[int]:
        if not keys:
            return set()
        with self._registered("_batch_keys", _keys_table(keys)):
            rows = self.con.execute(
                "SELECT k.hi, k.lo FROM _batch_keys k JOIN main._message_ids m "
                "ON m.key = (k.hi::UHUGEINT << 64) | k.lo::UHUGEINT"
            ).fetchall()
        return {(hi << 64) | lo for hi, lo in rows}

    def write(
        self,
        batch: Batch,
        segments: Sequence[tuple[str, int]] = (),
        checkpoint: Checkpoint | None = None,
    ) -> LoadResult:
        """Everything of one micro-batch in ONE transaction, with what marks it done: the
        load markers of its spool segments, or an import file's checkpoint."""
        now = datetime.now(UTC)
        rows: dict[str, int] = {}
        new_columns = 0
        self.con.execute("BEGIN TRANSACTION")
        try:
            changed: set[str] = set()
            for load in batch.tables:
                added = self._evolve(load)
                if added:
                    changed.add(load.namespace)
                new_columns += added
                self._insert(load.namespace, load.table, load.columns, load.rows, now)
                rows[f"{load.namespace}.{load.table}"] = len(load.rows)
            for load in batch.tables:
                if load.table == "identifies" and self._upsert_users(load, now):
                    rows.setdefault(f"{load.namespace}.users", 0)
            discards = self._insert_discards(batch, now)
            for namespace in sorted(changed):  # views follow their tables' columns
                self.install_views(namespace)
            merges = sum(
                self._apply_identity(namespace, rules, now)
                for namespace, rules in batch.merge_rules.items()
            )
            if batch.keys:
                with self._registered("_batch_keys", _keys_table(batch.keys)):
                    self.con.execute(
                        "INSERT INTO main._message_ids "
                        "SELECT (hi::UHUGEINT << 64) | lo::UHUGEINT FROM _batch_keys"
                    )
            for segment_id, events in segments:
                self.con.execute(
                    "INSERT INTO main._loads VALUES (?, ?, ?)", [segment_id, events, now]
                )
            if checkpoint is not None:
                self.con.execute(
                    "INSERT OR REPLACE INTO main._imports VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        checkpoint.file_hash,
                        checkpoint.path,
                        checkpoint.source,
                        checkpoint.position,
                        checkpoint.events,
                        checkpoint.completed,
                        now,
                    ],
                )
            faults.point("load")
            self.con.execute("COMMIT")
        except BaseException:
            self._tables.clear()  # DDL of the failed transaction is gone too
            self._graphs.clear()
            self._after_commit.clear()
            with contextlib.suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
            raise
        for remember in self._after_commit:
            remember()
        self._after_commit.clear()
        return LoadResult(batch.events, batch.duplicates, rows, discards, new_columns, merges)

    def install_views(self, namespace: str) -> None:
        """(Re)create the namespace's views for its tables as they are now (loader/views.py)."""
        for statement in views.install(namespace, self.tables(namespace)):
            self.con.execute(statement)

    # fetchall(), never fetchone(), on this shared connection: an unfinished result blocks
    # the next register() ("connection has an unfinished result").

    def checkpoint(self, file_hash: str, source: str) -> Checkpoint | None:
        rows = self.con.execute(
            "SELECT file_hash, source, path, position, events, completed FROM main._imports "
            "WHERE file_hash = ? AND source = ?",
            [file_hash, source],
        ).fetchall()
        return Checkpoint(*rows[0]) if rows else None

    def loaded(self, segment_id: str) -> bool:
        return bool(
            self.con.execute(
                "SELECT 1 FROM main._loads WHERE segment_id = ?", [segment_id]
            ).fetchall()
        )

    def _evolve(self, load: TableLoad) -> int:
        """CREATE TABLE or ADD COLUMN for what the rows bring; never retype (§3.3)."""
        table = f"{quote(load.namespace)}.{quote(load.table)}"
        known = self.tables(load.namespace)
        if load.table not in known:
            columns = {**load.columns, "uuid_ts": "datetime"}
            ddl = ", ".join(f"{quote(c)} {DUCKDB_TYPES[t]}" for c, t in columns.items())
            self.con.execute(f"CREATE TABLE {table} ({ddl})")
            known[load.table] = dict(columns)
            return len(columns)
        added = 0
        for column, kind in load.new_columns.items():
            if column not in known[load.table]:
                self.con.execute(
                    f"ALTER TABLE {table} ADD COLUMN {quote(column)} {DUCKDB_TYPES[kind]}"
                )
                known[load.table][column] = kind
                added += 1
                faults.point("add_column")
        if "uuid_ts" not in known[load.table]:
            self.con.execute(f"ALTER TABLE {table} ADD COLUMN uuid_ts TIMESTAMPTZ")
            known[load.table]["uuid_ts"] = "datetime"
        return added

    def _insert(
        self,
        namespace: str,
        table: str,
        columns: dict[str, ColumnType],
        rows: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        self._append(namespace, table, _arrow_table(columns, rows, now))

    def _upsert_users(self, identifies: TableLoad, now: datetime) -> bool:
        """§4: per user, the latest non-null value of each column, merged with the stored row."""
        namespace = identifies.namespace
        known = self.tables(namespace)
        source_columns = known["identifies"]
        wanted: dict[str, ColumnType] = {
            ("id" if c == "user_id" else c): t
            for c, t in source_columns.items()
            if c not in ("id",)
        }
        if "id" not in wanted:
            return False  # no identify of this namespace ever had a user_id
        users = f"{quote(namespace)}.users"
        if "users" not in known:
            ddl = ", ".join(f"{quote(c)} {DUCKDB_TYPES[t]}" for c, t in wanted.items())
            self.con.execute(f"CREATE TABLE {users} ({ddl})")
            known["users"] = dict(wanted)
        for column, kind in wanted.items():
            if column not in known["users"]:
                self.con.execute(
                    f"ALTER TABLE {users} ADD COLUMN {quote(column)} {DUCKDB_TYPES[kind]}"
                )
                known["users"][column] = kind
        for column, kind in known["users"].items():  # §4: users' own columns join identifies
            if column != "id" and column not in source_columns:
                self.con.execute(
                    f"ALTER TABLE {quote(namespace)}.identifies ADD COLUMN {quote(column)} "
                    f"{DUCKDB_TYPES[kind]}"
                )
                source_columns[column] = kind
        batch = [r for r in identifies.rows if r.get("user_id") is not None]
        if not batch:
            return False
        with self._registered("_batch_identifies", _arrow_table(identifies.columns, batch, now)):
            self._merge_users(users, [c for c in known["users"] if c != "id"])
        return True

    def _merge_users(self, users: str, columns: list[str]) -> None:
        """Stored rows of the batch's users + the batch's identifies -> latest non-null each.

        Latest by received_at (§4); an import gives many rows one received_at, so the event's
        own timestamp breaks the tie.
        """
        order = "(received_at, timestamp)" if "timestamp" in columns else "received_at"
        latest = ", ".join(
            f"arg_max({quote(c)}, {order}) FILTER (WHERE {quote(c)} IS NOT NULL) AS {quote(c)}"
            for c in columns
        )
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _new_users AS
            WITH candidates AS (
                SELECT * FROM {users}
                WHERE id IN (SELECT user_id FROM _batch_identifies)
                UNION ALL BY NAME
                SELECT * EXCLUDE (user_id, id), user_id AS id FROM _batch_identifies
            )
            SELECT id, {latest} FROM candidates GROUP BY id
            """
        )
        self.con.execute(f"DELETE FROM {users} WHERE id IN (SELECT id FROM _new_users)")
        self.con.execute(f"INSERT INTO {users} BY NAME SELECT * FROM _new_users")
        self.con.execute("DROP TABLE _new_users")

    def _insert_discards(self, batch: Batch, now: datetime) -> int:
        count = 0
        for namespace, discards in batch.discards.items():
            if not discards:
                continue
            table = pa.table(
                {
                    "table_name": pa.array([d.table_name for d in discards], pa.string()),
                    "row_id": pa.array([d.row_id for d in discards], pa.string()),
                    "column_name": pa.array([d.column_name for d in discards], pa.string()),
                    "column_value": pa.array([d.column_value for d in discards], pa.string()),
                    "received_at": pa.array([d.received_at for d in discards], pa.string()).cast(
                        _TIMESTAMP
                    ),
                    "uuid_ts": pa.array([now] * len(discards), _TIMESTAMP),
                    "reason": pa.array([d.reason for d in discards], pa.string()),
                }
            )
            self._append(namespace, "rudder_discards", table)
            count += len(discards)
        return count

    def _apply_identity(
        self,
        namespace: str,
        rules: list[tuple[MergeRule, dict[str, Any]]],
        now: datetime,
    ) -> int:
        """§5: store the batch's new rules, their edges, and the mappings they change.

        Returns how many stored components were absorbed by merges.
        """
        graph = self._graph(namespace)
        first: dict[MergeRule, dict[str, Any]] = {}
        for rule, envelope in rules:
            first.setdefault(rule, envelope)
        new_rules = [rule for rule in first if _rule_key(rule) not in graph.rules]
        if not new_rules:
            return 0
        self._append(namespace, "rudder_identity_merge_rules", _rules_table(new_rules))
        edges = [rule for rule in new_rules if len(identity.nodes(rule)) == 2]
        if edges:
            self._append(
                namespace,
                "user_graph",
                pa.table(
                    {
                        "identifier_1_type": [r.type1 for r in edges],
                        "identifier_1_value": [r.value1 for r in edges],
                        "identifier_2_type": [r.type2 for r in edges],
                        "identifier_2_value": [r.value2 for r in edges],
                        "message_id": [first[r]["message_id"] for r in edges],
                        "call_type": [first[r]["call_type"] for r in edges],
                        "source": [first[r]["source"] for r in edges],
                        "received_at": pa.array(
                            [first[r]["received_at"] for r in edges], pa.string()
                        ).cast(_TIMESTAMP),
                    }
                ),
            )
        touched = {node for rule in new_rules for node in identity.nodes(rule)}
        known = {node: graph.labels[node] for node in touched if node in graph.labels}
        resolution = identity.resolve(new_rules, known)
        relabelled = self._store_resolution(namespace, resolution, now)

        def remember() -> None:  # after COMMIT only: the cache never runs ahead of the tables
            graph.rules.update(_rule_key(rule) for rule in new_rules)
            graph.labels.update(resolution.labels)
            graph.labels.update(relabelled)

        self._after_commit.append(remember)
        return len(resolution.relabel)

    def _graph(self, namespace: str) -> _Graph:
        """The namespace's identity graph as stored, read once per process and then kept."""
        graph = self._graphs.get(namespace)
        if graph is None:
            ns = quote(namespace)
            rows = self.con.execute(
                "SELECT merge_property_1_type, merge_property_1_value, merge_property_2_type, "
                f"merge_property_2_value FROM {ns}.rudder_identity_merge_rules"
            ).fetchall()
            interned: dict[str, str] = {}
            labels = {
                (kind, value): interned.setdefault(label, label)
                for kind, value, label in self.con.execute(
                    "SELECT merge_property_type, merge_property_value, rudder_id "
                    f"FROM {ns}.rudder_identity_mappings"
                ).fetchall()
            }
            graph = self._graphs[namespace] = _Graph(
                labels, {_rule_key(MergeRule(*row)) for row in rows}
            )
        return graph

    def _store_resolution(
        self, namespace: str, resolution: identity.Resolution, now: datetime
    ) -> dict[identity.Node, str]:
        """Relabel and insert; returns the stored identifiers that changed label."""
        ns = quote(namespace)
        relabelled: dict[identity.Node, str] = {}
        if resolution.relabel:
            relabel = pa.table(
                {"old": list(resolution.relabel), "new": list(resolution.relabel.values())}
            )
            with self._registered("_relabel", relabel):
                relabelled = {
                    (kind, value): label
                    for kind, value, label in self.con.execute(
                        f"UPDATE {ns}.rudder_identity_mappings AS m SET rudder_id = r.new, "
                        "updated_at = ? FROM _relabel r WHERE m.rudder_id = r.old "
                        "RETURNING m.merge_property_type, m.merge_property_value, m.rudder_id",
                        [now],
                    ).fetchall()
                }
            faults.point("relabel")
        if resolution.labels:
            nodes = list(resolution.labels)
            self._append(
                namespace,
                "rudder_identity_mappings",
                pa.table(
                    {
                        "merge_property_type": [n[0] for n in nodes],
                        "merge_property_value": [n[1] for n in nodes],
                        "rudder_id": [resolution.labels[n] for n in nodes],
                        "updated_at": pa.array([now] * len(nodes), _TIMESTAMP),
                    }
                ),
            )
        return relabelled

    def rebuild_identity(self, namespace: str) -> int:
        """§5.2 backfill: recompute every mapping from the stored rules; returns the node count.

        Labels are new, the partition is the one the incremental path keeps.
        """
        ns = quote(namespace)
        self.con.execute("BEGIN TRANSACTION")
        try:
            rules = [
                MergeRule(*row)
                for row in self.con.execute(
                    f"SELECT merge_property_1_type, merge_property_1_value, merge_property_2_type, "
                    f"merge_property_2_value FROM {ns}.rudder_identity_merge_rules"
                ).fetchall()
            ]
            self.con.execute(f"DELETE FROM {ns}.rudder_identity_mappings")
            resolution = identity.resolve(rules, {})
            self._store_resolution(namespace, resolution, datetime.now(UTC))
            self.con.execute("COMMIT")
            self._graphs.pop(namespace, None)
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
            raise
        return len(resolution.labels)

    def _append(self, namespace: str, table: str, rows: pa.Table) -> None:
        """INSERT BY NAME of an Arrow table into a namespace's table."""
        with self._registered("_batch_append", rows):
            self.con.execute(
                f"INSERT INTO {quote(namespace)}.{quote(table)} BY NAME SELECT * FROM _batch_append"
            )

    @contextlib.contextmanager
    def _registered(self, name: str, table: pa.Table) -> Iterator[None]:
        """`table` visible to SQL as `name` for the block. Unregistering inside a transaction
        that has already failed raises again; that second error must not hide the first."""
        self.con.register(name, table)
        try:
            yield
        finally:
            with contextlib.suppress(duckdb.Error):
                self.con.unregister(name)


_gc_lock = threading.Lock()
_gc_pauses = [0, False]
"""[threads inside gc_paused, whether gc was enabled before the first of them]"""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cycle collection inside: a batch holds millions of small objects (parsed events,
    rows) that the collector would walk again and again for nothing, since refcounting frees
    them anyway. Measured: 38% of a load, and 2.7x the time of parsing a 100k-event segment.

    Threads may overlap (an import beside the spool's loading): the collector comes back when
    the last of them leaves, as it was before the first.
    """
    with _gc_lock:
        if _gc_pauses[0] == 0:
            _gc_pauses[1] = gc.isenabled()
            gc.disable()
        _gc_pauses[0] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses[0] -= 1
            if _gc_pauses[0] == 0 and _gc_pauses[1]:
                gc.enable()


@contextlib.contextmanager
def batch_work(what: str) -> Iterator[None]:
    """Around one micro-batch's build and write: errors translated once, gc paused.

    DuckDB's errors become Transient (retry) or Terminal (quarantine); so do data errors from
    Arrow or Python on values that slipped past the rules, so one bad segment is put aside
    instead of holding up every segment behind it.
    """
    try:
        with gc_paused():
            yield
    except duckdb.Error as exc:
        raise classify(exc)(f"{what}: {exc}") from exc
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise TerminalError(f"{what}: {type(exc).__name__}: {exc}") from exc


def classify(exc: duckdb.Error) -> type[TransientError] | type[TerminalError]:
    """Driver errors, translated once: I/O, memory, locks and conflicts pass; data does not."""
    transient = (
        duckdb.IOException,
        duckdb.OutOfMemoryException,
        duckdb.TransactionException,
        duckdb.InterruptException,
    )
    return TransientError if isinstance(exc, transient) else TerminalError


def _arrow_table(
    columns: dict[str, ColumnType], rows: list[dict[str, Any]], now: datetime
) -> pa.Table:
    """Rows as a typed Arrow table (datetimes parsed from their ISO text), uuid_ts = now.

    The rows are transposed row by row, reading each dict once in its own order: reading them
    column by column (`row.get(column)` for every column of every row) jumps between dicts
    and was 3 times slower on a 50k-event batch. A transposed cell costs 8 bytes until its
    column is converted, so a very wide table is transposed a slice of columns at a time.
    """
    width = len(rows)
    names = [column for column in columns if column != "uuid_ts"]
    step = max(1, _TRANSPOSED_CELLS // max(width, 1))
    arrays = {}
    for start in range(0, len(names), step):
        values = {column: [None] * width for column in names[start : start + step]}
        for index, row in enumerate(rows):
            for column, value in row.items():
                slots = values.get(column)  # None: another slice's column, or a row's uuid_ts
                if slots is not None:
                    slots[index] = value
        for column, column_values in values.items():
            kind = columns[column]
            array = pa.array(column_values, _ARROW[kind])
            arrays[column] = array.cast(_TIMESTAMP) if kind == "datetime" else array
    arrays["uuid_ts"] = pa.array([now] * width, _TIMESTAMP)
    return pa.table(arrays)


def _rules_table(rules: Sequence[MergeRule]) -> pa.Table:
    return pa.table(
        {
            "merge_property_1_type": pa.array([r.type1 for r in rules], pa.string()),
            "merge_property_1_value": pa.array([r.value1 for r in rules], pa.string()),
            "merge_property_2_type": pa.array([r.type2 for r in rules], pa.string()),
            "merge_property_2_value": pa.array([r.value2 for r in rules], pa.string()),
        }
    )


def _keys_table(keys: Sequence[int]) -> pa.Table:
    return pa.table(
        {
            "hi": pa.array([k >> 64 for k in keys], pa.uint64()),
            "lo": pa.array([k & _UINT64 for k in keys], pa.uint64()),
        }
    )
