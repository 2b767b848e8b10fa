"""Reviewed SQL from `sql/`, loaded by name; the one place that reads those files."""

from __future__ import annotations

import functools
from pathlib import Path

from loader.naming import quote

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@functools.cache
def text(name: str) -> str:
    """The file `sql/<name>`, comments included."""
    return (SQL_DIR / name).read_text(encoding="utf-8")


def statements(name: str, **identifiers: str) -> list[str]:
    """The `;`-separated statements of `sql/<name>`, with `{key}` identifiers quoted in.

    Only identifiers are formatted in (always through naming.quote); values are `?` parameters.
    """
    body = "\n".join(line for line in text(name).splitlines() if not line.lstrip().startswith("--"))
    quoted = {key: quote(value) for key, value in identifiers.items()}
    return [part.strip().format(**quoted) for part in body.split(";") if part.strip()]
