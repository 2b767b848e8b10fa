"""Sources: name, write key, namespace; stored in the warehouse, looked up in memory.

The HTTP path never reads DuckDB: it asks a `Registry`, which the owner of the connection
refreshes after every change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

import duckdb

from loader import naming
from loader.errors import SourceError

DEFAULT_SOURCE = "default"
DEFAULT_NAMESPACE = "main"


class Source(NamedTuple):
    name: str
    write_key: str
    namespace: str
    enabled: bool
    created_at: datetime

    def public(self) -> dict[str, object]:
        """The fields `loader sources list` shows (the key only in a short, safe form)."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "enabled": self.enabled,
            "write_key": self.write_key[:4] + "…",
            "created_at": self.created_at.isoformat(),
        }


_COLUMNS = "name, write_key, namespace, enabled, created_at"


def new_write_key() -> str:
    return secrets.token_urlsafe(24)


def all_sources(con: duckdb.DuckDBPyConnection) -> list[Source]:
    rows = con.execute(f"SELECT {_COLUMNS} FROM main.sources ORDER BY created_at, name").fetchall()
    return [Source(*row) for row in rows]


def get(con: duckdb.DuckDBPyConnection, name: str) -> Source:
    rows = con.execute(f"SELECT {_COLUMNS} FROM main.sources WHERE name = ?", [name]).fetchall()
    if not rows:
        known = ", ".join(s.name for s in all_sources(con)) or "none"
        raise SourceError(
            f"No source named {name!r} (sources: {known}). See `loader sources list`."
        )
    return Source(*rows[0])


def add(con: duckdb.DuckDBPyConnection, name: str, namespace: str | None = None) -> Source:
    """Create a source; its namespace defaults to the safe form of its name (§1.3)."""
    if not name.strip():
        raise SourceError("A source needs a non-blank name, e.g. `loader sources add web`.")
    if con.execute("SELECT 1 FROM main.sources WHERE name = ?", [name]).fetchall():
        raise SourceError(f"A source named {name!r} exists already; pick another name.")
    ns = naming.namespace(namespace if namespace is not None else name)
    if name == DEFAULT_SOURCE and namespace is None:
        ns = DEFAULT_NAMESPACE
    con.execute(
        "INSERT INTO main.sources (name, write_key, namespace, enabled, created_at) "
        "VALUES (?, ?, ?, TRUE, now())",
        [name, new_write_key(), ns],
    )
    return get(con, name)


def set_enabled(con: duckdb.DuckDBPyConnection, name: str, enabled: bool) -> Source:
    get(con, name)
    con.execute("UPDATE main.sources SET enabled = ? WHERE name = ?", [enabled, name])
    return get(con, name)


def rotate_key(con: duckdb.DuckDBPyConnection, name: str) -> Source:
    get(con, name)
    con.execute("UPDATE main.sources SET write_key = ? WHERE name = ?", [new_write_key(), name])
    return get(con, name)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class Registry:
    """Write key -> enabled source, for the request path. Replaced whole on every change."""

    def __init__(self, sources: Iterable[Source] = ()) -> None:
        self._by_digest: dict[bytes, Source] = {}
        self.by_name: dict[str, Source] = {}
        self.replace(sources)

    def replace(self, sources: Iterable[Source]) -> None:
        sources = list(sources)
        self._by_digest = {_digest(s.write_key): s for s in sources if s.enabled}
        self.by_name = {s.name: s for s in sources}

    def lookup(self, key: str) -> Source | None:
        """The enabled source whose key is `key`; keys are compared in constant time."""
        source = self._by_digest.get(_digest(key))
        if source is None or not hmac.compare_digest(source.write_key.encode(), key.encode()):
            return None
        return source
