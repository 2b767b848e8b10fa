"""Reviewed SQL from `sql/`, loaded by name; the one place that reads those files."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from loader.naming import quote

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@functools.cache
def text(name: str) -> str:
    """The file `sql/<name>`, comments included."""
    return (SQL_DIR / name).read_text(encoding="utf-8")


def statements(
    name: str, fragments: Mapping[str, str] | None = None, **identifiers: str
) -> list[str]:
    """The `;`-separated statements of `sql/<name>`, with `{key}` identifiers quoted in.

    Identifiers always go through naming.quote; `fragments` are SQL the caller generated from
    identifiers the same way (never from values: values are `?` parameters).
    """
    body = "\n".join(line for line in text(name).splitlines() if not line.lstrip().startswith("--"))
    filled = {key: quote(value) for key, value in identifiers.items()}
    filled.update(fragments or {})
    return [part.strip().format(**filled) for part in body.split(";") if part.strip()]
