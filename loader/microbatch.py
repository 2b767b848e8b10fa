"""One micro-batch: spooled lines -> deduplicated, typed rows per table, for a Backend.

Pure but for two reads from the backend (loader/backend.py), which writes it in one transaction.
The rules: spec/warehouse.md §1-§4 (rows, names, types, coercion, discards, users).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from loader.errors import SegmentCorrupt, TerminalError
from loader.flatten import MergeRule, Row, TooManyColumns, transform
from loader.schema import coerce, discard_text, merge_type
from loader.types import ColumnType

if TYPE_CHECKING:
    from loader.backend import Backend

logger = logging.getLogger(__name__)

MAX_TABLE_COLUMNS = 1600
"""Columns per table, as Postgres allows; further columns of an event are discarded."""

TableKey = tuple[str, str]
"""(namespace, table)"""


class Discard(NamedTuple):
    table_name: str
    row_id: str | None
    column_name: str
    column_value: str
    received_at: Any
    reason: str


class TableLoad(NamedTuple):
    namespace: str
    table: str
    columns: dict[str, ColumnType]
    """Every column of the rows, with the type it has (or gets) in the warehouse."""
    new_columns: dict[str, ColumnType]
    """Columns to create: all of them for a new table."""
    rows: list[dict[str, Any]]
    """Values coerced to `columns`' types; absent keys are NULL."""


class Batch(NamedTuple):
    """What one transaction writes, all of it derived from the events."""

    tables: list[TableLoad]
    discards: dict[str, list[Discard]]
    merge_rules: dict[str, list[tuple[MergeRule, dict[str, Any]]]]
    """Per namespace: each rule with its event's messageId, type, source and receivedAt."""
    keys: list[int]
    """Dedup keys of the events loaded (hash of source and messageId)."""
    events: int
    duplicates: int
    fresh_index: list[int]
    """Positions (in the events given to build) of the events loaded, not skipped."""


def message_key(source: str, message_id: str) -> int:
    """128-bit key of (source, messageId), the exactly-once identity of an event.

    Equal to DuckDB's `md5_number(source || chr(0) || message_id)`, so SQL can check it.
    """
    digest = hashlib.md5(f"{source}\0{message_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest, "little")


def read_segment(segment_id: str, data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (source, event) pairs of a sealed segment; a bad line makes it SegmentCorrupt."""
    events = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            source, event = record["source"], record["event"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise SegmentCorrupt(segment_id, number, f"not a spooled event ({exc})") from None
        if not isinstance(event, dict) or not isinstance(source, str):
            raise SegmentCorrupt(segment_id, number, "not a spooled event")
        events.append((source, event))
    return events


def build(
    writer: Backend,
    events: Iterable[tuple[str, dict[str, Any]]],
    namespaces: dict[str, str],
) -> Batch:
    """Deduplicate, transform and type a micro-batch's events.

    `namespaces` maps source name -> namespace. Events of a source that no longer exists
    load into the namespace of the same name (never lost).
    """
    # 1. Exactly once: first occurrence in the batch, and nothing already stored.
    firsts: dict[int, tuple[int, tuple[str, dict[str, Any]]]] = {}
    total = 0
    for index, (source, event) in enumerate(events):
        total += 1
        key = message_key(source, str(event.get("messageId", "")))
        firsts.setdefault(key, (index, (source, event)))
    stored = writer.seen(list(firsts))
    fresh = [(key, pair) for key, (_, pair) in firsts.items() if key not in stored]
    fresh_index = [index for key, (index, _) in firsts.items() if key not in stored]

    # 2. Rows per (namespace, table), in arrival order.
    rows_by_table: dict[TableKey, list[Row]] = defaultdict(list)
    discards: dict[str, list[Discard]] = defaultdict(list)
    merge_rules: dict[str, list[tuple[MergeRule, dict[str, Any]]]] = defaultdict(list)
    for _, (source, event) in fresh:
        namespace = namespaces.get(source, source)
        try:
            transformed = transform(event)
        except ValueError as exc:  # validated at ingest, so only a damaged spool gets here
            raise TerminalError(
                f"Event {event.get('messageId')!r} cannot be loaded: {exc}"
            ) from None
        except TooManyColumns as exc:
            discards[namespace].append(
                Discard(
                    event.get("type", ""),
                    str(event.get("messageId")),
                    "",
                    "",
                    event.get("receivedAt"),
                    str(exc),
                )
            )
            continue
        for row in transformed.rows:
            rows_by_table[(namespace, row.table)].append(row)
        if transformed.merge_rule is not None:
            envelope = {
                "source": source,
                "message_id": event.get("messageId"),
                "call_type": event.get("type"),
                "received_at": event.get("receivedAt"),
            }
            rule = _constrain(transformed.merge_rule, event.get("receivedAt"), discards[namespace])
            if rule is not None:
                merge_rules[namespace].append((rule, envelope))

    # 3. Schema per table, then coercion; users follow identifies.
    existing: dict[str, dict[str, dict[str, ColumnType]]] = {}
    tables: list[TableLoad] = []
    for (namespace, table), rows in rows_by_table.items():
        if namespace not in existing:  # a copy: the writer's own view changes only on DDL
            existing[namespace] = {t: dict(c) for t, c in writer.tables(namespace).items()}
        stored_columns = existing[namespace].get(table, {})
        load = _type_table(namespace, table, rows, stored_columns, discards[namespace])
        tables.append(load)
        existing[namespace][table] = load.columns
    return Batch(
        tables,
        dict(discards),
        dict(merge_rules),
        [k for k, _ in fresh],
        total,
        total - len(fresh),
        fresh_index,
    )


def _type_table(
    namespace: str,
    table: str,
    rows: list[Row],
    stored: dict[str, ColumnType],
    discards: list[Discard],
) -> TableLoad:
    """§3.3: the warehouse's type wins, then the first type seen; §3.4: coerce or discard."""
    columns = dict(stored)
    new_columns: dict[str, ColumnType] = {}
    over_cap: set[str] = set()
    cap = MAX_TABLE_COLUMNS - (0 if "uuid_ts" in columns else 1)  # uuid_ts counts too
    for row in rows:
        if row.types.keys() <= columns.keys():  # no set built; most rows bring nothing new
            continue
        for column, kind in row.types.items():  # in the row's order: the table's order
            if column in columns or column == "uuid_ts":  # uuid_ts is the load's, always
                continue
            if len(columns) >= cap:
                over_cap.add(column)
                continue
            columns[column] = new_columns[column] = merge_type(None, kind)
    out: list[dict[str, Any]] = []
    for row in rows:
        data = row.data
        types = row.types
        if not over_cap and types.items() <= columns.items():  # every value fits its column
            out.append(data)
            continue
        mismatched = [
            c for c, kind in types.items() if columns.get(c, kind) != kind and c != "uuid_ts"
        ]
        if mismatched or over_cap:
            data = dict(data)
            for column in mismatched:
                value, reason = coerce(data[column], types[column], columns[column])
                data[column] = value
                if reason is not None:
                    _discard(discards, table, row, column, reason)
            for column in over_cap.intersection(data):
                _discard(
                    discards,
                    table,
                    row,
                    column,
                    f"table {table} has reached the limit of {MAX_TABLE_COLUMNS} columns",
                )
                del data[column]
        out.append(data)
    return TableLoad(namespace, table, columns, new_columns, out)


def _discard(discards: list[Discard], table: str, row: Row, column: str, reason: str) -> None:
    """A discard row is written only when the row has an id and a received_at (§3.4)."""
    row_id, received_at = row.data.get("id"), row.data.get("received_at")
    if row_id is None or received_at is None:
        return
    discards.append(
        Discard(table, str(row_id), column, discard_text(row.data[column]), received_at, reason)
    )


MAX_MERGE_PROPERTY_BYTES = 512
"""Type + value of one merge property, in UTF-8 bytes (§3.4, warehouse constraints)."""


def _constrain(rule: MergeRule, received_at: Any, discards: list[Discard]) -> MergeRule | None:
    """§5.2 step 1 and the warehouse constraints, on one event's merge rule.

    Blank or whitespace-only values are NULL: no rule without property 1, no property 2
    without its value. A property over the length limit is replaced by
    `rudder-discards-<uuid>` and its value discarded.
    """
    if not rule.value1.strip():
        return None
    if rule.value2 is not None and not rule.value2.strip():
        rule = rule._replace(type2=None, value2=None)
    for index in (1, 2):
        kind, value = getattr(rule, f"type{index}"), getattr(rule, f"value{index}")
        if kind is None or value is None:
            continue
        if len(kind.encode()) + len(value.encode()) <= MAX_MERGE_PROPERTY_BYTES:
            continue
        replacement = f"rudder-discards-{uuid.uuid4()}"
        discards.append(
            Discard(
                "rudder_identity_merge_rules",
                replacement,
                f"merge_property_{index}_value",
                value,
                received_at,
                f"merge property {kind!r} is longer than {MAX_MERGE_PROPERTY_BYTES} bytes "
                "(type and value together)",
            )
        )
        rule = rule._replace(**{f"value{index}": replacement})
    return rule
