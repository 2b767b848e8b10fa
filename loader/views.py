"""The views the loader installs in each namespace (sql/views/): events with their rudder_id,
and unified_users. They follow the tables' columns, so they are re-created when those change.
"""

from __future__ import annotations

from collections.abc import Mapping

from loader.flatten import DEFAULT_RULES
from loader.naming import quote
from loader.sqlfiles import statements
from loader.types import ColumnType

EVENT_TABLES = ("tracks", "pages", "screens", "identifies")
"""The tables that get a `<table>_with_rudder_id` view."""
UNIFIED_COLUMNS = frozenset(
    (
        "rudder_id",
        "user_ids",
        "anonymous_ids",
        "other_ids",
        "first_seen",
        "last_seen",
        "event_count",
    )
)
_NO_TRAITS = "SELECT NULL::VARCHAR AS rudder_id WHERE false"
_NO_ACTIVITY = "SELECT NULL::VARCHAR AS rudder_id, NULL::TIMESTAMPTZ AS timestamp WHERE false"


def view_name(table: str) -> str:
    return f"{table}_with_rudder_id"


def install(namespace: str, tables: Mapping[str, Mapping[str, ColumnType]]) -> list[str]:
    """The statements that (re)create every view of `namespace`, given its tables' columns."""
    out: list[str] = []
    activity: list[str] = []
    for table in EVENT_TABLES:
        columns = tables.get(table)
        if columns is None:
            continue
        keys = {
            "user_key": "CAST(e.user_id AS VARCHAR)" if "user_id" in columns else "NULL",
            "anonymous_key": (
                "CAST(e.anonymous_id AS VARCHAR)" if "anonymous_id" in columns else "NULL"
            ),
            "columns": "e.* EXCLUDE (rudder_id)" if "rudder_id" in columns else "e.*",
        }
        out += statements(
            "views/with_rudder_id.sql",
            keys,
            namespace=namespace,
            table=table,
            view=view_name(table),
        )
        if "timestamp" in columns:
            activity.append(
                f"SELECT rudder_id, timestamp FROM {quote(namespace)}.{quote(view_name(table))}"
            )
    selects = [
        _event_select(namespace, table, tables[table]) for table in EVENT_TABLES if table in tables
    ]
    out += statements(
        "views/all_events.sql",
        {"selects": " UNION ALL ".join(selects) or _NO_EVENTS},
        namespace=namespace,
    )
    fragments = {
        "activity": " UNION ALL ".join(activity) or _NO_ACTIVITY,
        "traits": _traits(namespace, tables.get("users")),
    }
    out += statements("views/unified_users.sql", fragments, namespace=namespace)
    return out


_NAMES = {"tracks": "event_text", "pages": "name", "screens": "name"}
_CALLS = {"tracks": "track", "pages": "page", "screens": "screen", "identifies": "identify"}
_NO_EVENTS = (
    "SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS call_type, NULL::VARCHAR AS name, "
    "NULL::VARCHAR AS user_id, NULL::VARCHAR AS anonymous_id, NULL::VARCHAR AS rudder_id, "
    "NULL::TIMESTAMPTZ AS timestamp, NULL::TIMESTAMPTZ AS received_at WHERE false"
)


def _event_select(namespace: str, table: str, columns: Mapping[str, ColumnType]) -> str:
    def pick(column: str | None, alias: str, cast: str = "VARCHAR") -> str:
        if column is not None and column in columns:
            return f"CAST({quote(column)} AS {cast}) AS {alias}"
        return f"NULL::{cast} AS {alias}"

    return (
        f"SELECT {pick('id', 'id')}, '{_CALLS[table]}' AS call_type, "
        f"{pick(_NAMES.get(table), 'name')}, {pick('user_id', 'user_id')}, "
        f"{pick('anonymous_id', 'anonymous_id')}, rudder_id, "
        f"{pick('timestamp', 'timestamp', 'TIMESTAMPTZ')}, "
        f"{pick('received_at', 'received_at', 'TIMESTAMPTZ')} "
        f"FROM {quote(namespace)}.{quote(view_name(table))}"
    )


_NOT_TRAITS = frozenset((*DEFAULT_RULES, "uuid_ts"))
"""The default-rule columns (§1.1): the last identify call's bookkeeping, not traits."""


def _is_trait(column: str) -> bool:
    """A users column that describes the person: traits and context_traits_*, not the
    bookkeeping of the last identify call (times, ids, ip, library, page...)."""
    if column in _NOT_TRAITS or column in UNIFIED_COLUMNS:
        return False
    return not column.startswith("context_") or column.startswith("context_traits_")


def _traits(namespace: str, users: Mapping[str, ColumnType] | None) -> str:
    """Latest non-null value of each trait, across the component's user ids (§4)."""
    if not users or "id" not in users or "received_at" not in users:
        return _NO_TRAITS
    order = "(u.received_at, u.timestamp)" if "timestamp" in users else "u.received_at"
    picks = ", ".join(
        f"arg_max(u.{quote(c)}, {order}) FILTER (WHERE u.{quote(c)} IS NOT NULL) AS {quote(c)}"
        for c in users
        if _is_trait(c)
    )
    return (
        f"SELECT m.rudder_id{', ' + picks if picks else ''} FROM {quote(namespace)}.users AS u "
        f"JOIN {quote(namespace)}.rudder_identity_mappings AS m "
        "ON m.merge_property_type = 'user_id' AND m.merge_property_value = CAST(u.id AS VARCHAR) "
        "GROUP BY m.rudder_id"
    )
