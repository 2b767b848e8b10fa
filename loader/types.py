"""Small shared types: the event envelope, call types, column types."""

from __future__ import annotations

from typing import Any, Literal

CallType = Literal["identify", "track", "page", "screen", "group", "alias", "merge"]
CALL_TYPES: frozenset[str] = frozenset(
    ("identify", "track", "page", "screen", "group", "alias", "merge")
)

# The warehouse column types of spec/warehouse.md §1 and their DuckDB types.
ColumnType = Literal["int", "float", "boolean", "datetime", "string", "json"]
DUCKDB_TYPES: dict[str, str] = {
    "int": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "datetime": "TIMESTAMPTZ",
    "string": "VARCHAR",
    "json": "JSON",
}

Event = dict[str, Any]
"""An event as the client sent it (after validation), plain JSON values."""
