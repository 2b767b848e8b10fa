"""`loader check`: the warehouse's consistency after anything, crashes included.

Every rule's identifiers are mapped, once; the mappings' partition is the one the rules give;
every event row has its exactly-once key, stored once, and no message id is loaded twice;
every event-table row has its `tracks` row; every user is an identified user. Read-only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb

from loader import identity
from loader.flatten import MergeRule
from loader.naming import SYSTEM_TABLES, quote

if TYPE_CHECKING:
    from loader.pipeline import Pipeline

_CALL_TABLES = ("tracks", "identifies", "pages", "screens", "groups", "aliases")


def check(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
    cur = pipeline.con.cursor()
    problems: list[str] = []
    checked: dict[str, int] = {}
    for source in pipeline.sources.values():
        ns = source.namespace
        tables = {
            name
            for (name,) in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = ? "
                "AND database_name = current_database()",
                [ns],
            ).fetchall()
        }
        problems += _identity(cur, ns)
        for table in sorted(tables):
            if table in SYSTEM_TABLES or table == "users" or table.startswith("rudder_"):
                continue
            rows = _one(cur, f"SELECT count(*) FROM {quote(ns)}.{quote(table)}")
            checked[f"{ns}.{table}"] = rows
            problems += _rows(cur, ns, table, source.name, "tracks" in tables)
        if "users" in tables and "identifies" in tables:
            stray = _one(
                cur,
                f"SELECT count(*) FROM {quote(ns)}.users WHERE id NOT IN "
                f"(SELECT user_id FROM {quote(ns)}.identifies "
                "WHERE user_id IS NOT NULL)",
            )
            if stray:
                problems.append(f"{ns}.users: {stray} users without an identify")
    twice = _one(cur, "SELECT count(*) - count(DISTINCT key) FROM main._message_ids")
    if twice:  # no index enforces it (migration 0003): the loader's dedup does
        problems.append(f"_message_ids: {twice} exactly-once keys stored twice")
    leftovers = [s for s in pipeline.spool.sealed() if pipeline.segment_loaded(s)]
    if leftovers:
        problems.append(
            f"{len(leftovers)} loaded segments still in sealed/ (the next start removes them)"
        )
    return {"ok": not problems, "problems": problems, "rows": checked}


def _rows(
    cur: duckdb.DuckDBPyConnection, ns: str, table: str, source: str, has_tracks: bool
) -> list[str]:
    name = f"{quote(ns)}.{quote(table)}"
    columns = {
        c
        for (c,) in cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
            "AND table_name = ?",
            [ns, table],
        ).fetchall()
    }
    if "id" not in columns:
        return []
    out = []
    twice = _one(cur, f"SELECT count(*) - count(DISTINCT id) FROM {name}")
    if twice:
        out.append(f"{ns}.{table}: {twice} rows repeat a message id")
    unkeyed = _one(
        cur,
        f"SELECT count(*) FROM {name} t WHERE md5_number(? || chr(0) || t.id) NOT IN "
        "(SELECT key FROM main._message_ids)",
        [source],
    )
    if unkeyed:
        out.append(f"{ns}.{table}: {unkeyed} rows without their exactly-once key")
    if has_tracks and table not in _CALL_TABLES and "event_text" in columns:
        orphans = _one(
            cur, f"SELECT count(*) FROM {name} WHERE id NOT IN (SELECT id FROM {quote(ns)}.tracks)"
        )
        if orphans:
            out.append(f"{ns}.{table}: {orphans} rows without their tracks row")
    return out


def _identity(cur: duckdb.DuckDBPyConnection, ns: str) -> list[str]:
    rules_table = f"{quote(ns)}.rudder_identity_merge_rules"
    mappings_table = f"{quote(ns)}.rudder_identity_mappings"
    rules = [
        MergeRule(*row)
        for row in cur.execute(
            "SELECT merge_property_1_type, merge_property_1_value, merge_property_2_type, "
            f"merge_property_2_value FROM {rules_table}"
        ).fetchall()
    ]
    stored: dict[identity.Node, str] = {}
    out = []
    for kind, value, label in cur.execute(
        f"SELECT merge_property_type, merge_property_value, rudder_id FROM {mappings_table}"
    ).fetchall():
        if (kind, value) in stored:
            out.append(f"{ns}: identifier {kind}:{value} is mapped twice")
        stored[(kind, value)] = label
    expected = identity.resolve(rules, {}).labels
    missing = set(expected) - set(stored)
    if missing:
        out.append(f"{ns}: {len(missing)} identifiers of merge rules have no mapping")
    if _partition(expected) != _partition({n: stored[n] for n in expected if n in stored}):
        out.append(f"{ns}: the mappings' components differ from the merge rules' components")
    return out


def _partition(labels: dict[identity.Node, str]) -> set[frozenset[identity.Node]]:
    groups: dict[str, set[identity.Node]] = {}
    for node, label in labels.items():
        groups.setdefault(label, set()).add(node)
    return {frozenset(group) for group in groups.values()}


def _one(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> int:
    return int(cur.execute(sql, params or []).fetchall()[0][0])
