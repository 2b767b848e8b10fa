"""The views the loader installs in each namespace (sql/views/): events with their rudder_id,
and unified_users. They follow the tables' columns, so they are re-created when those change.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    fragments = {
        "activity": " UNION ALL ".join(activity) or _NO_ACTIVITY,
        "traits": _traits(namespace, tables.get("users")),
    }
    out += statements("views/unified_users.sql", fragments, namespace=namespace)
    return out


def _traits(namespace: str, users: Mapping[str, ColumnType] | None) -> str:
    """Latest non-null value of each users column, across the component's user ids (§4)."""
    if not users or "id" not in users or "received_at" not in users:
        return _NO_TRAITS
    picks = ", ".join(
        f"arg_max(u.{quote(c)}, u.received_at) FILTER (WHERE u.{quote(c)} IS NOT NULL) "
        f"AS {quote(c)}"
        for c in users
        if c not in ("id", "uuid_ts") and c not in UNIFIED_COLUMNS
    )
    return (
        f"SELECT m.rudder_id{', ' + picks if picks else ''} FROM {quote(namespace)}.users AS u "
        f"JOIN {quote(namespace)}.rudder_identity_mappings AS m "
        "ON m.merge_property_type = 'user_id' AND m.merge_property_value = CAST(u.id AS VARCHAR) "
        "GROUP BY m.rudder_id"
    )
