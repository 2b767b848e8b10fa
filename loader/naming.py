"""Warehouse identifiers: RudderStack's naming rules for provider postgres, and SQL quoting.

The only source of table, column and schema names; it never decides which tables exist.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "RESERVED_WORDS",
    "SYSTEM_TABLES",
    "column_name",
    "event_table_name",
    "namespace",
    "quote",
    "snake_case",
    "transform_name",
]

_POSTGRES_MAX_IDENTIFIER = 63
_MAX_IDENTIFIER = 127

# T config/ReservedKeywords.json "POSTGRES" (spec §2.3), compared upper-case.
_POSTGRES_RESERVED = """
    ALL ANALYSE ANALYZE AND ANY ARRAY AS ASC ASYMMETRIC AUTHORIZATION BETWEEN BINARY
    BOTH CASE CAST CHECK COLLATE COLUMN CONSTRAINT CREATE CROSS CURRENT_DATE
    CURRENT_ROLE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DEFAULT DEFERRABLE DESC
    DISTINCT DO ELSE END EXCEPT FALSE FOR FOREIGN FREEZE FROM FULL GRANT GROUP HAVING
    ILIKE IN INITIALLY INNER INTERSECT INTO IS ISNULL JOIN LEADING LEFT LIKE LIMIT
    LOCALTIME LOCALTIMESTAMP NATURAL NEW NOT NOTNULL NULL OFF OFFSET OLD ON ONLY OR
    ORDER OUTER OVERLAPS PLACING PRIMARY REFERENCES RIGHT SELECT SESSION_USER SIMILAR
    SOME SYMMETRIC TABLE THEN TO TRAILING TRUE UNION UNIQUE USER USING VERBOSE WHEN
    WHERE
"""
RESERVED_WORDS: frozenset[str] = frozenset(_POSTGRES_RESERVED.split())

# Our own tables (DESIGN.md): an event table never lands on one of them.
SYSTEM_TABLES: frozenset[str] = frozenset(
    {
        "rudder_discards",
        "rudder_identity_merge_rules",
        "rudder_identity_mappings",
        "user_graph",
        "unified_users",
        "_loads",
        "_message_ids",
        "_imports",
        "alembic_version",
        "sources",
        "tracks_with_rudder_id",
        "pages_with_rudder_id",
        "screens_with_rudder_id",
        "identifies_with_rudder_id",
        "all_events",
    }
)

# T index.js excludeRudderCreatedTableNames: rudderIsolatedTables + rudderCreatedTables (§2.4).
_RUDDER_TABLES = frozenset(
    {"users", "identifies", "tracks", "pages", "screens", "aliases", "groups", "accounts"}
)
_PREFIXED_TABLES = _RUDDER_TABLES | SYSTEM_TABLES

_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_APOSTROPHES = re.compile("['\u2019]")
# lodash hasUnicodeWord (T snakecase/snakecase.js), verbatim.
_HAS_UNICODE_WORD = re.compile(
    r"[a-z][A-Z]|[A-Z]{2}[a-z]|[0-9][a-zA-Z]|[a-zA-Z][0-9]|[^a-zA-Z0-9 ]"
)
# unicodeWordsWithNumbers (T snakecase/unicodeWords.js) reduced to ASCII, as written in §2.2.
# The spec writes the JS "break" class as `_`, the only break left after transform_name;
# `[^A-Za-z0-9]` is the same there and also right for other ASCII punctuation. `\Z`, not `$`,
# because Python's `$` also matches before a final newline; re.ASCII makes `\b` JS-like.
_BREAK = r"[^A-Za-z0-9]"
_WORDS_WITH_NUMBERS = re.compile(
    "|".join(
        [
            r"[A-Z]?[a-z]+[0-9]+",
            r"[A-Z]+[0-9]+",
            r"[0-9]+[A-Z]?[a-z]+",
            r"[0-9]+[A-Z]+",
            rf"[A-Z]?[a-z]+(?={_BREAK}|[A-Z]|\Z)",
            rf"[A-Z]+(?={_BREAK}|[A-Z][a-z]|\Z)",
            r"[A-Z]?[a-z]+",
            r"[A-Z]+",
            r"[0-9]*(?:1ST|2ND|3RD|(?![123])[0-9]TH)(?=\b|[a-z_])",
            r"[0-9]*(?:1st|2nd|3rd|(?![123])[0-9]th)(?=\b|[A-Z_])",
            r"[0-9]+",
        ]
    ),
    re.ASCII,
)
# strcase.ToSnake (iancoleman/strcase v0.3.0, used by S ToSafeNamespace): a `_` goes between a
# letter and a digit, a lower and an upper, and before the last upper of a run followed by a lower.
_STRCASE_BOUNDARY = re.compile(
    r"(?<=[a-z])(?=[A-Z0-9])|(?<=[A-Z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])|(?<=[A-Z])(?=[A-Z][a-z])"
)


def snake_case(name: str) -> str:
    """lodash-style snake_case with numbers kept on their word (§2.2, underscoreDivideNumbers off).

    Exact for ASCII input (transform_name only passes `[A-Za-z0-9_]`); a non-ASCII character
    is treated as a separator, where lodash would treat some of them as letters.
    """
    name = _APOSTROPHES.sub("", name)
    if _HAS_UNICODE_WORD.search(name):
        words = _WORDS_WITH_NUMBERS.findall(name)
    else:  # only [A-Za-z0-9 ] here, where lodash's asciiWords are the alphanumeric runs
        words = _ALNUM_RUN.findall(name)
    return "_".join(words).lower()


@functools.lru_cache(maxsize=65536)
def transform_name(name: str) -> str:
    """T v1/util.js transformName without the provider cut (§2.2 steps 1-3).

    It is transformTableName, the value of a track's `event` column. The JS (and the Go port's
    transformTableName in S embedded/warehouse/safe.go) applies the leading-underscore and digit
    rules to table names too; only the 63-character cut is column-only. "" when nothing is left.
    """
    key = "_".join(_ALNUM_RUN.findall(name))
    if name.startswith("_"):
        # Leading underscores survive so that `_timestamp` can escape a rule column.
        key = name[: len(name) - len(name.lstrip("_"))] + snake_case(key)
    else:
        key = snake_case(key)
    if _starts_with_digit(key):
        key = "_" + key
    return key


def _starts_with_digit(name: str) -> bool:
    return name != "" and "0" <= name[0] <= "9"


def _safe_name(name: str) -> str:
    """T v1/util.js safeColumnName / safeTableName for postgres (§2.3); name is not empty."""
    name = name[:_POSTGRES_MAX_IDENTIFIER].lower()
    if name.upper() in RESERVED_WORDS:
        name = "_" + name
    return name[:_MAX_IDENTIFIER]


@functools.lru_cache(maxsize=65536)
def column_name(raw: str) -> str | None:
    """The column for a raw (joined) key: safeColumnName(transformColumnName(raw)), postgres.

    Rules, in order (spec §2.2-2.3):
    1. split into runs of ASCII `[A-Za-z0-9]` (everything else separates) and join with `_`;
    2. keep the original's leading underscores, snake_case the rest (numbers stay on their word);
    3. prefix `_` if it starts with a digit;
    4. cut to 63 characters and lower-case;
    5. prefix `_` if the upper-cased name is a Postgres reserved word (so at most 64).
    None when step 3 leaves nothing: the key is silently dropped.
    """
    transformed = transform_name(raw)[:_POSTGRES_MAX_IDENTIFIER]
    if not transformed:
        return None
    return _safe_name(transformed)


@functools.lru_cache(maxsize=65536)
def event_table_name(event: str) -> str | None:
    """The table for a track event name (§2.4); None when the name leaves nothing.

    As T index.js: safeTableName(transformColumnName(<event column>)), where the event column is
    already transform_name(event). Then `_` goes before RudderStack's own tables (`users`,
    `identifies`, `tracks`, `pages`, `screens`, `aliases`, `groups`, `accounts`) and, unlike
    RudderStack, before ours (SYSTEM_TABLES, DESIGN.md).
    """
    event_column = transform_name(event)
    transformed = transform_name(event_column)[:_POSTGRES_MAX_IDENTIFIER]
    if not transformed:
        return None
    table = _safe_name(transformed)
    if table in _PREFIXED_TABLES:
        table = "_" + table
    return table


def namespace(source_name: str) -> str:
    """The schema for a source name: S warehouse/utils/utils.go ToSafeNamespace, postgres (§1.3).

    Alphanumeric runs joined by `_`, strcase.ToSnake, `_` before a leading digit, `stringempty`
    when empty, `_` before a reserved word, cut to 127.
    """
    name = "_".join(_ALNUM_RUN.findall(source_name))
    name = _STRCASE_BOUNDARY.sub("_", name).lower()
    if _starts_with_digit(name):
        name = "_" + name
    if not name:
        name = "stringempty"
    if name.upper() in RESERVED_WORDS:
        name = "_" + name
    return name[:_MAX_IDENTIFIER]


def quote(identifier: str) -> str:
    """`identifier` as a DuckDB double-quoted identifier, embedded `"` doubled."""
    return '"' + identifier.replace('"', '""') + '"'
