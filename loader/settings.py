"""Settings: one frozen object, read once; the only reader of os.environ.

Every field `x_y` is also the flag `--x-y` and the environment variable `LOADER_X_Y`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loader.errors import ConfigError

MAX_REQUEST_BYTES = 4_096_000
"""Largest request body after gzip decoding (RudderStack's 4000 KB; spec/http-api.md)."""
MAX_EVENT_BYTES = 32 * 1024
"""Largest single event, as JSON (the seed's 32 KB per call)."""


@dataclass(frozen=True, slots=True)
class Settings:
    database: Path = Path("warehouse.duckdb")
    """DuckDB file; the serving process is its only writer."""
    spool_dir: Path = Path("spool")
    """Write-ahead segments: open/, sealed/, failed/."""
    host: str = "127.0.0.1"
    port: int = 8080
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    """Peers whose X-Forwarded-For is believed for `request_ip`."""
    body_timeout: float = 30.0
    """Seconds a request body may take to arrive; slower clients get a 400."""
    segment_max_events: int = 50_000
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age: float = 1.0
    """Seconds an open segment may wait before it is sealed for loading."""
    backlog_max_bytes: int = 8 * 1024 * 1024 * 1024
    """Sealed bytes waiting to load above which requests get 503."""
    min_free_bytes: int = 64 * 1024 * 1024
    """Free disk below which requests get 503 instead of risking a half-written append."""
    load_max_events: int = 50_000
    """Events loaded in one warehouse transaction (several segments may share one)."""
    duckdb_memory_limit: str = "2GB"
    """DuckDB's memory (its cache of table blocks, queries); beyond it, it spills to disk. Python's
    own memory for a micro-batch comes on top (about 1.3 GB at load_max_events 50000)."""
    query_timeout: float = 60.0
    """Seconds a query may run before it is stopped."""
    query_max_rows: int = 100_000
    """Rows a query returns at most (the answer says when it was cut)."""
    loader_in_thread: bool = False
    """Load in a thread of the HTTP process instead of a process of its own: less memory, but
    loading then competes with request handling for the GIL."""
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Defaults, then `LOADER_*` variables, then `overrides` (CLI flags; None means unset)."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw: Any = overrides.get(field.name)
            if raw is None:
                raw = environ.get(f"LOADER_{field.name.upper()}")
            if raw is None:
                continue
            values[field.name] = _convert(field.name, field.type, raw)
        return cls(**values)


def _convert(name: str, kind: Any, raw: Any) -> Any:
    if not isinstance(raw, str):
        return tuple(raw) if kind == "tuple[str, ...]" else raw
    try:
        if kind == "Path":
            return Path(raw)
        if kind == "int":
            return int(raw.replace("_", ""))
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "tuple[str, ...]":
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        env = f"LOADER_{name.upper()}"
        raise ConfigError(
            f"{env}={raw!r} is not a valid {kind}; set it to a {kind} or unset it."
        ) from None
    return raw
