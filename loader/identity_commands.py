"""`loader identity show|explain|rebuild`: reading the identity graph of a source's namespace."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import duckdb

from loader.errors import LoaderError
from loader.identity import Node
from loader.naming import quote

if TYPE_CHECKING:
    from loader.pipeline import Pipeline


class UnknownIdentifier(LoaderError):
    def __init__(self, identifier: str, namespace: str) -> None:
        super().__init__(
            f"No identifier {identifier!r} in namespace {namespace!r}. Use a value as sent "
            "(a user id, an anonymous id, an email from a merge) or `type:value`, and check "
            "`--source`; events become identities only once loaded (`loader flush`)."
        )


def namespace_of(pipeline: Pipeline, args: dict[str, Any]) -> str:
    name = args.get("source") or "default"
    source = pipeline.sources.get(name)
    if source is None:
        known = ", ".join(sorted(pipeline.sources)) or "none"
        raise LoaderError(f"No source named {name!r} (sources: {known}).")
    return source.namespace


def find_nodes(cur: duckdb.DuckDBPyConnection, namespace: str, identifier: str) -> list[Node]:
    """The nodes an identifier names: `type:value` exactly, or a bare value of any type."""
    table = f"{quote(namespace)}.rudder_identity_mappings"
    kind, sep, value = identifier.partition(":")
    rows: list[tuple[str, str]] = []
    if sep:
        rows = cur.execute(
            f"SELECT merge_property_type, merge_property_value FROM {table} "
            "WHERE merge_property_type = ? AND merge_property_value = ?",
            [kind, value],
        ).fetchall()
    if not rows:
        rows = cur.execute(
            f"SELECT merge_property_type, merge_property_value FROM {table} "
            "WHERE merge_property_value = ? ORDER BY 1",
            [identifier],
        ).fetchall()
    return [(k, v) for k, v in rows]


def _rudder_ids(cur: duckdb.DuckDBPyConnection, namespace: str, nodes: list[Node]) -> list[str]:
    table = f"{quote(namespace)}.rudder_identity_mappings"
    found: list[str] = []
    for kind, value in nodes:
        row = cur.execute(
            f"SELECT rudder_id FROM {table} WHERE merge_property_type = ? "
            "AND merge_property_value = ?",
            [kind, value],
        ).fetchone()
        if row and row[0] not in found:
            found.append(row[0])
    return found


def show(pipeline: Pipeline, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Each component the identifier belongs to, as a row of unified_users (nulls left out)."""
    namespace = namespace_of(pipeline, args)
    cur = pipeline.con.cursor()
    nodes = find_nodes(cur, namespace, args["identifier"])
    if not nodes:
        raise UnknownIdentifier(args["identifier"], namespace)
    out = []
    for rudder_id in _rudder_ids(cur, namespace, nodes):
        result = cur.execute(
            f"SELECT * FROM {quote(namespace)}.unified_users WHERE rudder_id = ?", [rudder_id]
        )
        names = [d[0] for d in result.description or []]
        row = result.fetchone()
        if row is None:
            continue
        record = {k: _plain(v) for k, v in zip(names, row, strict=True) if v is not None}
        out.append(record)
    return out


def explain(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
    """The shortest chain of edges linking two identifiers, each with the event behind it."""
    namespace = namespace_of(pipeline, args)
    cur = pipeline.con.cursor()
    starts = find_nodes(cur, namespace, args["a"])
    goals = find_nodes(cur, namespace, args["b"])
    if not starts:
        raise UnknownIdentifier(args["a"], namespace)
    if not goals:
        raise UnknownIdentifier(args["b"], namespace)
    shared = set(_rudder_ids(cur, namespace, starts)) & set(_rudder_ids(cur, namespace, goals))
    if not shared:
        return {
            "linked": False,
            "chain": [],
            "message": f"{args['a']} and {args['b']} are not linked: they belong to "
            "different users (no chain of identify/alias/merge events joins them).",
        }
    rudder_id = sorted(shared)[0]
    ns = quote(namespace)
    edges = cur.execute(
        f"""
        SELECT g.* FROM {ns}.user_graph g
        JOIN {ns}.rudder_identity_mappings m
          ON m.merge_property_type = g.identifier_1_type
         AND m.merge_property_value = g.identifier_1_value
        WHERE m.rudder_id = ?
        """,
        [rudder_id],
    ).fetchall()
    neighbours: dict[Node, list[tuple[Node, tuple[Any, ...]]]] = {}
    for edge in edges:
        one, two = (edge[0], edge[1]), (edge[2], edge[3])
        neighbours.setdefault(one, []).append((two, edge))
        neighbours.setdefault(two, []).append((one, edge))
    goal_set = set(goals)
    previous: dict[Node, tuple[Node, tuple[Any, ...]] | None] = {s: None for s in starts}
    queue = deque(starts)
    while queue:
        node = queue.popleft()
        if node in goal_set:
            chain = []
            while previous[node] is not None:
                before, edge = previous[node]  # type: ignore[misc]
                chain.append(
                    {
                        "from": f"{before[0]}:{before[1]}",
                        "to": f"{node[0]}:{node[1]}",
                        "message_id": edge[4],
                        "call_type": edge[5],
                        "source": edge[6],
                        "received_at": _plain(edge[7]),
                    }
                )
                node = before
            return {"linked": True, "rudder_id": rudder_id, "chain": chain[::-1]}
        for nxt, edge in neighbours.get(node, []):
            if nxt not in previous:
                previous[nxt] = (node, edge)
                queue.append(nxt)
    return {
        "linked": True,
        "rudder_id": rudder_id,
        "chain": [],
        "message": "They share a user id but the edges that joined them were loaded "
        "before user_graph existed; run `loader identity rebuild`.",
    }


def rebuild(pipeline: Pipeline, args: dict[str, Any]) -> dict[str, Any]:
    namespace = namespace_of(pipeline, args)
    nodes = pipeline.rebuild_identity(namespace)
    return {"namespace": namespace, "identifiers": nodes}


def _plain(value: Any) -> Any:
    """JSON-able: datetimes as ISO text, lists kept."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
