"""Property-based fuzzing of the whole pipeline: validate -> enrich -> spool -> load.

spec/http-api.md (what is rejected, and how) and spec/warehouse.md §2-§3 (names, types,
discards). Four layers:

1. pure: `spec.validate` and `flatten.transform(enrich(...))` on arbitrary JSON values;
2. body: `spec.parse_request` on arbitrary bytes and arbitrary JSON text;
3. HTTP: generated requests through the app (TestClient, loader in a thread), then loaded,
   then the warehouse checked: every accepted event exactly once, unstorable values NULL with a
   `rudder_discards` row, and no table created or dropped except the expected ones;
4. named cases: 10,000 keys, over 1,600 columns, deep nesting, odd keys, system table names.

The HTTP layer loads by calling the loader's own `Pipeline.drain()` from the test thread (the
same code the loader thread runs, under the same lock): a load error then fails the test with
its traceback at once, instead of being retried with back-off in the loader thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import multiprocessing
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings as hsettings, strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from loader import worker
from loader.enrich import enrich
from loader.errors import RequestRejected
from loader.flatten import MAX_COLUMNS, Row, TooManyColumns, transform
from loader.gateway import Gateway
from loader.microbatch import MAX_TABLE_COLUMNS
from loader.naming import SYSTEM_TABLES, event_table_name, quote
from loader.pipeline import Pipeline
from loader.settings import MAX_EVENT_BYTES, Settings
from loader.spec import parse_request, validate
from loader.types import CALL_TYPES, CallType, Event
from loader.views import EVENT_TABLES
from tests.conftest import basic, spooled

CALLS: tuple[CallType, ...] = ("identify", "track", "page", "screen", "group", "alias", "merge")
NAME = re.compile(r"[a-z0-9_]{1,64}")
"""What a table or column name from data may look like (naming.py, spec §2.2-2.3, postgres)."""
RUDDER_TABLES = frozenset(
    {"users", "identifies", "tracks", "pages", "screens", "aliases", "groups", "accounts"}
)
MAIN_TABLES = {
    "identify": "identifies",
    "track": "tracks",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
PHRASES = (
    "Missing Authorization Header",
    "Invalid Authorization Header",
    "Request size too large",
    "Invalid JSON",
    "Invalid event",
    "Empty batch payload",
    "Invalid event type",
    "Request neither has anonymousId nor userId",
    "Missing required field",
)
INJECTION = '"; DROP TABLE tracks; --'
NAMESPACE_TABLES = frozenset(
    {"rudder_discards", "rudder_identity_merge_rules", "rudder_identity_mappings", "user_graph"}
)
"""What sql/namespace/create_tables.sql gives a new source's namespace."""
NOW = datetime(2024, 5, 14, 9, 21, 33, 512000, tzinfo=UTC)

# -- strategies --------------------------------------------------------------------------------

SPECIAL_KEYS = (
    "",
    " ",
    "_",
    "__",
    "select",
    "SELECT",
    "from",
    "id",
    "ID",
    "user_id",
    "userId",
    "anonymous_id",
    "received_at",
    "uuid_ts",
    "event",
    "event_text",
    "name",
    "rowid",
    "pivot",
    "qualify",
    "struct",
    "columns",
    "rudder_id",
    "rudderId",
    "first_seen",
    "context",
    "ip",
    "0",
    "1",
    "007",
    "a\x00b",
    "\x00",
    "\U0001f4a5",
    "Ünïcödé Kéy",
    INJECTION,
    'tracks"; DROP TABLE tracks; --',
    "x'); DROP TABLE users; --",
    "a" * 70,
    "A.b.C",
    "camelCaseKey",
    "HTTPServer",
    "1st place",
    "$$$",
)
SPECIAL_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\U0001f389 party",
    "\u200b",
    INJECTION,
    "NaN",
    "Infinity",
    "2020-01-01",
    "2020-01-01T10:20:30.123456Z",
    "2020-02-31T10:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z",
    "2024-05-14 09:21:33+05:30",
    "12345678901234567890",
    "true",
)
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
JSON_INTS = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=INT64_MIN, max_value=UINT64_MAX),
    st.sampled_from([0, -1, 2**53, 2**53 + 1, INT64_MAX, 2**63, INT64_MIN, UINT64_MAX]),
)
"""Integers as orjson.loads can give them: beyond uint64 a JSON number becomes a float."""
JSON_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [1e308, -1e308, 5e-324, -0.0, 0.5, 1e21, 9.223372036854776e18, -9.3e18, 1e300, 1.5e19]
    ),
)
STRINGS = st.one_of(st.sampled_from(SPECIAL_STRINGS), st.text(max_size=16))
KEYS = st.one_of(
    st.sampled_from(("n", "v", "when", "N")),  # shared by events: type conflicts, discards
    st.sampled_from(SPECIAL_KEYS),
    st.text(max_size=10),
)
SCALARS = st.one_of(st.none(), st.booleans(), JSON_INTS, JSON_FLOATS, STRINGS)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=6)
    ),
    max_leaves=12,
)
"""Values orjson.loads can produce (no NaN, no infinity, no integer beyond uint64)."""
OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=6)
BEYOND_JSON_SCALARS = st.one_of(
    st.integers(min_value=2**64, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=INT64_MIN - 1),
    st.sampled_from([123456789012345678901234567890, 10**400, math.nan, math.inf, -math.inf]),
)
BEYOND_JSON_VALUES = st.recursive(
    st.one_of(SCALARS, BEYOND_JSON_SCALARS),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=6)
    ),
    max_leaves=16,
)
"""Python values past what orjson gives: integers beyond 64 bits, NaN and infinities."""
EVENT_NAMES = st.one_of(
    st.sampled_from(
        [
            "Order Completed",
            'tracks"; DROP TABLE tracks; --',
            INJECTION,
            "Rudder Discards",
            "users",
            "tracks",
            "Identifies",
            "_loads",
            "sources",
            "alembic_version",
            "Tracks With Rudder ID",
            "Unified Users",
            "user_graph",
            "select",
            "Pivot",
            "\U0001f4a5 boom",
            "a" * 100,
            "$$$",
            "_",
            "2020-01-01T00:00:00Z",
        ]
    ),
    st.text(min_size=1, max_size=30),
)
IDS = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["u1", "anon-1", " ", "\u200b", "0", INJECTION, "L" * 510]),
    JSON_INTS,
    JSON_FLOATS,
    st.booleans(),
    st.none(),
)
GOOD_IDS = st.one_of(st.sampled_from(["u1", "u2", "anon-1", "42"]), st.integers(0, 10**6))
TIMES = st.one_of(st.none(), STRINGS, JSON_INTS)
JSON_PATHS = st.lists(
    st.sampled_from(
        [
            "track.properties.a",
            "track.context.page",
            "identify.traits.address",
            "page.properties.x.y",
            "a",
            "select",
            "",
            INJECTION,
        ]
    ),
    max_size=3,
)


@st.composite
def events(draw: st.DrawFn, kind: str | None = None) -> Event:
    """One event of a call type with arbitrary sections; its required fields are valid four
    times in five, arbitrary otherwise."""
    kind = kind or draw(st.sampled_from(CALLS))
    event: Event = {"type": kind}
    ids = GOOD_IDS if draw(st.integers(0, 4)) else IDS
    if draw(st.booleans()):
        event["userId"] = draw(ids)
    if draw(st.booleans()) or "userId" not in event:
        event["anonymousId"] = draw(ids)
    for section in ("properties", "traits", "context", "userProperties"):
        if draw(st.integers(0, 3)):
            event[section] = draw(
                st.one_of(OBJECTS, JSON_VALUES) if draw(st.booleans()) else OBJECTS
            )
    if kind == "track" or draw(st.integers(0, 9)) == 0:
        event["event"] = draw(EVENT_NAMES if ids is GOOD_IDS else st.one_of(EVENT_NAMES, IDS))
    if kind in ("page", "screen") and draw(st.booleans()):
        event["name"] = draw(st.one_of(EVENT_NAMES, IDS))
    if kind == "group" or draw(st.integers(0, 9)) == 0:
        event["groupId"] = draw(ids)
    if kind == "alias" or draw(st.integers(0, 9)) == 0:
        event["previousId"] = draw(ids)
    if kind == "merge":
        pair = st.fixed_dictionaries({"type": ids, "value": ids})
        pairs = st.lists(pair, min_size=2, max_size=2)
        event["mergeProperties"] = draw(pairs if ids is GOOD_IDS else st.one_of(pairs, IDS))
    for time_field in ("timestamp", "sentAt", "originalTimestamp"):
        if draw(st.integers(0, 3)) == 0:
            event[time_field] = draw(TIMES)
    if draw(st.integers(0, 5)) == 0:
        event["channel"] = draw(IDS)
    if draw(st.integers(0, 5)) == 0:
        paths = draw(JSON_PATHS)
        event["integrations"] = {"DATA_WAREHOUSE": {"options": {"jsonPaths": paths}}}
    return event


def _fill(event: Event, section: str, value: Any) -> Event:
    return {**event, section: value}


BASES: dict[str, Event] = {
    "identify": {"type": "identify", "userId": "u1"},
    "track": {"type": "track", "userId": "u1", "event": "Order Completed"},
    "page": {"type": "page", "anonymousId": "a1", "name": "Home"},
    "screen": {"type": "screen", "anonymousId": "a1"},
    "group": {"type": "group", "userId": "u1", "groupId": "g1"},
    "alias": {"type": "alias", "userId": "u1", "previousId": "u0"},
    "merge": {
        "type": "merge",
        "userId": "u1",
        "mergeProperties": [{"type": "email", "value": "a@b"}, {"type": "phone", "value": "1"}],
    },
}
SECTIONS = ("properties", "traits", "context", "userProperties")


def _nested(depth: int, leaf: Any, key: str = "a") -> Any:
    """`leaf` inside `depth` containers, alternating objects and arrays."""
    value = leaf
    for level in range(depth):
        value = {key: value} if level % 2 else [value]
    return value


def _nested_text(depth: int, leaf: bytes, key: str = "a") -> bytes:
    """The JSON text of `_nested(depth, leaf)`, built without recursion (any depth)."""
    opens = [b'{"' + key.encode() + b'":' if level % 2 else b"[" for level in range(depth)]
    closes = [b"}" if level % 2 else b"]" for level in range(depth)]
    return b"".join(reversed(opens)) + leaf + b"".join(closes)


DEPTHS = st.one_of(
    st.integers(min_value=0, max_value=1100),
    st.sampled_from([250, 251, 252, 253, 254, 255, 500, 1000, 1021, 1022, 1023, 1024]),
)

# -- 1. pure level -----------------------------------------------------------------------------


def _accepted(event: Event) -> Event | None:
    """validate's answer: the event, None for a RequestRejected; anything else propagates."""
    try:
        return validate(event, None)
    except RequestRejected:
        return None


def _check_rows(event: Event, rows: list[Row]) -> None:
    """Names of spec §2.2-2.4 and values that match their declared type."""
    for row in rows:
        assert NAME.fullmatch(row.table), row.table
        assert row.data.keys() == row.types.keys(), row
        for column, value in row.data.items():
            assert NAME.fullmatch(column), (row.table, column)
            kind = row.types[column]
            if kind == "int":
                assert type(value) is int and INT64_MIN <= value <= INT64_MAX, (column, value)
            elif kind == "float":
                assert type(value) is float, (column, value)
            elif kind == "boolean":
                assert type(value) is bool, (column, value)
            elif kind in ("string", "datetime", "json"):
                assert isinstance(value, str), (column, value)
            else:
                raise AssertionError(f"unknown column type {kind!r} of {column}")
        assert row.data.get("id") == event["messageId"], row
    tables = [row.table for row in rows]
    if event["type"] == "track":
        assert tables[0] == "tracks"
        if len(tables) == 2:
            text = rows[0].data.get("event_text")
            assert tables[1] == event_table_name(text if isinstance(text, str) else str(text))
            assert tables[1] not in SYSTEM_TABLES | RUDDER_TABLES, tables
    elif event["type"] == "merge":
        assert tables == []
    else:
        assert tables == [MAIN_TABLES[event["type"]]]


@pytest.mark.parametrize("kind", CALLS)
@hsettings(max_examples=150, deadline=None)
@given(values=st.lists(st.tuples(st.sampled_from(SECTIONS), JSON_VALUES), max_size=4))
def test_validate_and_transform_of_json_values_in_every_section(
    kind: str, values: list[tuple[str, Any]]
) -> None:
    """validate accepts or rejects (RequestRejected only); accepted events flatten to rows
    whose names are valid identifiers and whose values match their types."""
    event = dict(BASES[kind])
    for section, value in values:
        event = _fill(event, section, value)
    accepted = _accepted(orjson.loads(orjson.dumps(event)))
    if accepted is None:
        return
    enriched = enrich(accepted, received_at=NOW, request_ip="203.0.113.7", sent_at=None)
    assert orjson.loads(orjson.dumps({"source": "s", "event": enriched}))  # spoolable
    try:
        transformed = transform(enriched)
    except TooManyColumns:
        return
    _check_rows(enriched, transformed.rows)


@hsettings(max_examples=200, deadline=None)
@given(event=events(), sent_at=st.one_of(st.none(), STRINGS))
def test_validate_and_transform_of_generated_events(event: Event, sent_at: str | None) -> None:
    """Whole generated events (ids, names, times, jsonPaths): the same properties."""
    accepted = _accepted(event)
    if accepted is None:
        return
    assert accepted["type"] in CALL_TYPES
    enriched = enrich(accepted, received_at=NOW, request_ip=None, sent_at=sent_at)
    for time_field in ("receivedAt", "sentAt", "originalTimestamp", "timestamp"):
        assert isinstance(enriched[time_field], str), time_field
    spooled_line = orjson.dumps({"source": "s", "event": enriched})
    reread = orjson.loads(spooled_line)["event"]
    try:
        transformed = transform(reread)
    except TooManyColumns:
        return
    _check_rows(reread, transformed.rows)


@hsettings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(CALLS), section=st.sampled_from(SECTIONS), value=BEYOND_JSON_VALUES)
def test_validate_accepts_or_rejects_values_beyond_json_range(
    kind: str, section: str, value: Any
) -> None:
    """Python values past orjson's range (integers over 64 bits, NaN, infinities), as a
    caller that parses with something else may hand over: a RequestRejected or an event."""
    event = _fill(dict(BASES[kind]), section, {"v": value})
    accepted = _accepted(event)
    if accepted is None:
        return
    enriched = enrich(accepted, received_at=NOW, request_ip=None, sent_at=None)
    with contextlib.suppress(TooManyColumns):
        _check_rows(enriched, transform(enriched).rows)


@hsettings(max_examples=60, deadline=None)
@given(depth=DEPTHS, section=st.sampled_from(SECTIONS), kind=st.sampled_from(CALLS))
def test_validate_deep_nesting(depth: int, section: str, kind: str) -> None:
    """Any depth orjson.loads lets through (it stops at 1024): a RequestRejected or an event
    that can be spooled (one more level of nesting) and flattened."""
    event = _fill(dict(BASES[kind]), section, {"a": _nested(depth, 1)})
    accepted = _accepted(event)
    if accepted is None:
        return
    enriched = enrich(accepted, received_at=NOW, request_ip=None, sent_at=None)
    reread = orjson.loads(orjson.dumps({"source": "s", "event": enriched}))["event"]
    with contextlib.suppress(TooManyColumns):
        _check_rows(reread, transform(reread).rows)


# -- 2. body level -----------------------------------------------------------------------------

RAW_TOKENS = (
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "18446744073709551616",
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "1E+2",
    '"\\ud800"',
    '"\\udc00x"',
    '"a\\ud800\\ud800b"',
    '"\\ud83d\\ude00"',
    '"\\u0000"',
    '"\\u0000\\u001f"',
    "null",
)


class Raw(str):
    """A JSON token written into the body as is."""


RAW = st.sampled_from(RAW_TOKENS).map(Raw)
TEXT_VALUES = st.recursive(
    st.one_of(SCALARS, RAW),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)
    ),
    max_leaves=20,
)


def json_text(value: Any) -> bytes:
    """JSON text of `value`; a Raw string is written verbatim (NaN, 1e400, lone surrogates)."""
    if isinstance(value, Raw):
        return value.encode()
    if isinstance(value, dict):
        items = (orjson.dumps(k) + b":" + json_text(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(json_text(v) for v in value) + b"]"
    return orjson.dumps(value)


def _check_parsed(body: bytes, call_type: CallType | None) -> None:
    """parse_request raises a RequestRejected or gives events the route can spool."""
    try:
        payload = parse_request(body, call_type)
    except RequestRejected as exc:
        assert str(exc).startswith(PHRASES), exc
        return
    assert payload.events
    for event in payload.events:
        assert event["type"] in CALL_TYPES
        assert len(orjson.dumps(event)) <= MAX_EVENT_BYTES
        enriched = enrich(event, received_at=NOW, request_ip="::1", sent_at=payload.sent_at)
        line = orjson.dumps({"source": "s", "event": enriched}, option=orjson.OPT_APPEND_NEWLINE)
        assert orjson.loads(line)["event"]["messageId"] == enriched["messageId"]


CALL_OR_BATCH = st.sampled_from([None, *CALLS])


@hsettings(max_examples=400, deadline=None)
@given(body=st.binary(max_size=200), call_type=CALL_OR_BATCH)
def test_parse_request_of_arbitrary_bytes(body: bytes, call_type: CallType | None) -> None:
    _check_parsed(body, call_type)


@hsettings(max_examples=150, deadline=None)
@given(
    event=st.one_of(events(), TEXT_VALUES),
    extra=st.dictionaries(st.sampled_from(SECTIONS), TEXT_VALUES, max_size=2),
    call_type=CALL_OR_BATCH,
    batch=st.booleans(),
)
def test_parse_request_of_json_text_with_odd_literals(
    event: Any, extra: dict[str, Any], call_type: CallType | None, batch: bool
) -> None:
    """NaN/Infinity literals, lone surrogate escapes, 1e400, numbers past 64 bits."""
    if isinstance(event, dict):
        event = {**event, **extra}
    body = json_text({"batch": [event], "sentAt": Raw('"x"')} if batch else event)
    _check_parsed(body, call_type)


@hsettings(max_examples=40, deadline=None)
@given(depth=DEPTHS, call_type=st.sampled_from([None, "identify", "track"]))
def test_parse_request_of_deeply_nested_bodies(depth: int, call_type: CallType | None) -> None:
    """1000+ levels: a 400 (orjson stops at 1024) or events that can be spooled."""
    event = b'{"userId":"u1","type":"track","event":"Deep","properties":{"a":'
    event += _nested_text(depth, b"1") + b"}}"
    body = b'{"batch":[' + event + b"]}" if call_type is None else event
    _check_parsed(body, call_type)


@pytest.mark.parametrize("token", RAW_TOKENS)
def test_odd_literals_are_invalid_json_or_numbers(token: str) -> None:
    """Each odd literal alone: a 400 `Invalid JSON`, or stored as what orjson reads."""
    body = b'{"userId": "u1", "properties": {"v": ' + token.encode() + b"}}"
    try:
        payload = parse_request(body, "identify")
    except RequestRejected as exc:
        assert str(exc).startswith("Invalid JSON"), exc
        assert token.lstrip("-") in ("1e400", "NaN", "Infinity") or "\\ud" in token
        return
    value = payload.events[0]["properties"]["v"]
    assert value is None or isinstance(value, int | float | str), value
    assert not (isinstance(value, float) and not math.isfinite(value)), value


# -- 3. whole pipeline through HTTP ------------------------------------------------------------


@dataclass
class Live:
    """The app with its lifespan; the loader thread's Pipeline, captured to drain and read."""

    settings: Settings
    client: TestClient
    gateway: Gateway
    pipeline: Pipeline
    quarantine: Path
    counter: Iterator[int] = field(default_factory=itertools.count)

    def source(self) -> tuple[str, str, str]:
        """A new source (name, write key, namespace): each example gets its own tables."""
        name = f"fuzz{next(self.counter)}x{uuid.uuid4().hex[:6]}"
        made = self.pipeline.command("sources.add", {"name": name})
        deadline = time.monotonic() + 10
        while self.gateway.registry.lookup(made["write_key"]) is None:
            assert time.monotonic() < deadline, "the HTTP side never heard of the new source"
            time.sleep(0.005)
        cur = self.cursor()
        try:
            fresh = {(n, k) for schema, n, k in _all_tables(cur) if schema == made["namespace"]}
        finally:
            cur.close()
        assert fresh == {(t, "BASE TABLE") for t in NAMESPACE_TABLES}, fresh
        return name, made["write_key"], made["namespace"]

    def load(self) -> None:
        """Seal the open segment and load everything sealed; nothing may end in failed/."""
        portal = self.client.portal
        assert portal is not None
        portal.call(self.gateway.batcher.seal)
        try:
            self.pipeline.drain()
        except BaseException:
            self._set_aside(self.settings.spool_dir / "sealed")
            raise
        failed = self.settings.spool_dir / "failed"
        reasons = [p.read_text() for p in failed.glob("*.error")]
        self._set_aside(failed)
        assert not reasons, f"segments went to spool/failed/: {reasons}"
        assert not list((self.settings.spool_dir / "sealed").glob("*.jsonl"))

    def _set_aside(self, folder: Path) -> None:
        """Move segments that cannot load out of the way, so later examples (and the loader
        thread's shutdown, which never ends while a load keeps failing) are not blocked."""
        with self.pipeline._load_lock:
            for path in folder.iterdir():
                shutil.move(path, self.quarantine / path.name)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.pipeline.con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur


@contextlib.contextmanager
def serving(root: Path) -> Iterator[Live]:
    settings = Settings(
        database=root / "warehouse.duckdb",
        spool_dir=root / "spool",
        segment_max_age=3600.0,  # segments are sealed by Live.load only
        loader_in_thread=True,
    )
    captured: list[Pipeline] = []

    def capture(pipeline: Pipeline) -> None:
        captured.append(pipeline)

    gateway = Gateway(settings, admin=capture)
    quarantine = root / "quarantine"
    quarantine.mkdir()
    with TestClient(create_app(gateway), client=("203.0.113.7", 5000)) as client:
        yield Live(settings, client, gateway, captured[0], quarantine)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with serving(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


def _all_tables(cur: duckdb.DuckDBPyConnection) -> set[tuple[str, str, str]]:
    rows = cur.execute(
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database()"
    ).fetchall()
    return {(schema, name, kind) for schema, name, kind in rows}


def _columns(cur: duckdb.DuckDBPyConnection, namespace: str) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for table, column, kind in cur.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_catalog = current_database()",
        [namespace],
    ).fetchall():
        found.setdefault(table, {})[column] = kind
    return found


def _stored_matches(stored: Any, value: Any, kind: str) -> bool:
    if kind == "datetime":
        return bool(stored == datetime.fromisoformat(value.replace("Z", "+00:00")))
    if kind == "json":
        return bool(orjson.loads(stored) == orjson.loads(value))
    return bool(stored == value and type(stored) is type(value if kind != "string" else ""))


DUCKDB_TYPE = {
    "int": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "datetime": "TIMESTAMP WITH TIME ZONE",
    "string": "VARCHAR",
    "json": "JSON",
}


def check_warehouse(live: Live, source: str, namespace: str, before: set[Any], sent: int) -> None:
    """Every spooled event of `source` loaded as flatten says, or discarded with a reason;
    the set of tables is exactly the expected one."""
    events = [r["event"] for r in spooled(live.settings) if r["source"] == source]
    assert len(events) == sent, (len(events), sent)
    live.load()
    cur = live.cursor()
    try:
        expected_rows: list[tuple[Event, Row]] = []
        too_wide: list[Event] = []
        for event in events:
            try:
                rows = transform(event).rows
            except TooManyColumns:
                too_wide.append(event)
                continue
            _check_rows(event, rows)  # names (naming.event_table_name for event tables)
            expected_rows += [(event, row) for row in rows]
        tables = {row.table for _, row in expected_rows}
        if any("user_id" in row.data for _, row in expected_rows if row.table == "identifies"):
            tables.add("users")
        views = set()
        if tables:
            views = {"all_events", "unified_users"}
            views |= {f"{t}_with_rudder_id" for t in EVENT_TABLES if t in tables}
        after = _all_tables(cur)
        outside = {t for t in after if t[0] != namespace}
        assert outside == {t for t in before if t[0] != namespace}, "tables outside changed"
        kept = {(name, kind) for schema, name, kind in before if schema == namespace}
        assert {(name, kind) for schema, name, kind in after if schema == namespace} == {
            *kept,
            *((t, "BASE TABLE") for t in tables),
            *((v, "VIEW") for v in views),
        }
        for view in views:  # still queryable, whatever columns the tables grew
            cur.execute(f"SELECT count(*) FROM {quote(namespace)}.{quote(view)}").fetchall()
        columns = _columns(cur, namespace)
        discards = cur.execute(
            f"SELECT table_name, row_id, column_name, column_value, reason "
            f"FROM {quote(namespace)}.rudder_discards"
        ).fetchall()
        discarded = {(t, r, c): reason for t, r, c, _, reason in discards}
        for event in too_wide:
            reasons = [d[4] for d in discards if d[1] == event["messageId"] and d[2] == ""]
            assert reasons and "Too many columns" in reasons[0], event["messageId"]
        for _, row in expected_rows:
            table = f"{quote(namespace)}.{quote(row.table)}"
            found = cur.execute(f"SELECT * FROM {table} WHERE id = ?", [row.data["id"]])
            names = [d[0] for d in found.description or ()]
            stored_rows = found.fetchall()
            assert len(stored_rows) == 1, (row.table, row.data["id"], len(stored_rows))
            stored = dict(zip(names, stored_rows[0], strict=True))
            assert isinstance(stored["uuid_ts"], datetime)
            for column, value in row.data.items():
                if column == "uuid_ts":
                    continue  # the load's time, always (spec §2.1 quirk)
                key = (row.table, row.data["id"], column)
                if column not in stored:
                    assert f"limit of {MAX_TABLE_COLUMNS} columns" in discarded.get(key, ""), key
                    continue
                kind = row.types[column]
                if stored[column] is None:
                    assert key in discarded, f"{key}: {value!r} is NULL without a discard"
                    continue
                assert key not in discarded, f"{key} is stored and discarded: {stored[column]!r}"
                if columns[row.table][column] == DUCKDB_TYPE[kind]:
                    assert _stored_matches(stored[column], value, kind), (
                        key,
                        kind,
                        value,
                        stored[column],
                    )
    finally:
        cur.close()


def _check_response(status: int, text: str, content_type: str) -> None:
    assert status in (200, 400), (status, text)
    assert content_type.startswith("text/plain"), content_type
    if status == 200:
        assert text == "OK"
    else:
        assert text.startswith(PHRASES) and text.count("\n") <= 1, text


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, list[Event], dict[str, Any]]:
    """(path, events, extra batch fields): a single call or a batch (plain or beacon); one
    event in five carries an odd literal (NaN, 1e400, a lone surrogate, 30 digits...)."""
    batch = draw(st.lists(events(), min_size=1, max_size=1 if draw(st.booleans()) else 6))
    for event in batch:
        if draw(st.integers(0, 4)) == 0:
            event["context"] = {"odd": draw(RAW)}
    if len(batch) == 1 and draw(st.booleans()):
        return f"/v1/{batch[0]['type']}", batch, {}
    extra = {"sentAt": draw(STRINGS)} if draw(st.booleans()) else {}
    path = draw(st.sampled_from(["/v1/batch", "/beacon/v1/batch"]))
    return path, batch, extra


@hsettings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No shrinking: each step is a load (~0.3 s) and shrinking a failure ran past 5 minutes.
    # The named tests below hold the minimal inputs of what this test found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(calls=st.lists(requests(), min_size=1, max_size=4), message_ids=st.booleans())
def test_http_requests_load_exactly_once_and_only_expected_tables(
    live: Live, calls: list[tuple[str, list[Event], dict[str, Any]]], message_ids: bool
) -> None:
    """HTTP -> spool -> load: 200 or 400 (text/plain), never 5xx; every accepted event is in
    its tables exactly once; NULL only with a discard; no other table created or dropped."""
    source, key, namespace = live.source()
    cur = live.cursor()
    try:
        before = _all_tables(cur)
    finally:
        cur.close()
    sent = 0
    for path, batch, extra in calls:
        for event in batch:
            if message_ids:
                event["messageId"] = f"fuzz-{next(live.counter)}"
        if path.startswith("/v1/batch"):
            body = json_text({"batch": batch, **extra})
            response = live.client.post(path, content=body, headers=basic(key))
        elif path.startswith("/beacon"):
            body = json_text({"batch": batch, **extra})
            response = live.client.post(
                path, content=body, params={"writeKey": key}, headers={"content-type": "text/plain"}
            )
        else:
            response = live.client.post(path, content=json_text(batch[0]), headers=basic(key))
        _check_response(response.status_code, response.text, response.headers["content-type"])
        if response.status_code == 200:
            sent += len(batch)
    check_warehouse(live, source, namespace, before, sent)


# -- 4. named cases ----------------------------------------------------------------------------


def _post(live: Live, key: str, path: str, payload: Any) -> tuple[int, str]:
    response = live.client.post(path, content=json_text(payload), headers=basic(key))
    _check_response(response.status_code, response.text, response.headers["content-type"])
    return response.status_code, response.text


def _one(live: Live, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    cur = live.cursor()
    try:
        return cur.execute(sql, params or []).fetchall()
    finally:
        cur.close()


def _snapshot(live: Live) -> set[tuple[str, str, str]]:
    cur = live.cursor()
    try:
        return _all_tables(cur)
    finally:
        cur.close()


def test_ten_thousand_property_keys_are_over_the_event_limit(live: Live) -> None:
    source, key, namespace = live.source()
    before = _snapshot(live)
    properties = {f"key{i}": i for i in range(10_000)}
    event = {"userId": "u1", "event": "Wide", "properties": properties, "messageId": "wide-1"}
    assert len(orjson.dumps(event)) > MAX_EVENT_BYTES
    status, text = _post(live, key, "/v1/track", event)
    assert status == 400 and text.startswith("Request size too large"), text
    check_warehouse(live, source, namespace, before, 0)


def test_an_event_over_1600_columns_is_discarded_with_the_limit_named(live: Live) -> None:
    """Under 32 KB with 1,700 short keys: flatten raises TooManyColumns (RudderStack's rule);
    the event lands in rudder_discards with the reason, nothing in tracks."""
    source, key, namespace = live.source()
    before = _snapshot(live)
    properties = {f"k{i}": 1 for i in range(MAX_COLUMNS + 100)}
    event = {"userId": "u1", "event": "Wide", "properties": properties, "messageId": "wide-2"}
    assert len(orjson.dumps(event)) <= MAX_EVENT_BYTES
    assert _post(live, key, "/v1/track", event)[0] == 200
    check_warehouse(live, source, namespace, before, 1)
    reasons = _one(
        live,
        f"SELECT reason FROM {quote(namespace)}.rudder_discards WHERE row_id = 'wide-2'",
    )
    assert len(reasons) == 1 and str(MAX_COLUMNS) in reasons[0][0], reasons


def test_a_table_over_1600_columns_keeps_its_rows_and_discards_the_excess(live: Live) -> None:
    """Two events of one table, 900 keys each: both rows load; the columns past the table's
    cap of 1,600 are discarded with a reason naming the limit (microbatch.MAX_TABLE_COLUMNS)."""
    source, key, namespace = live.source()
    before = _snapshot(live)
    batch = [
        {
            "type": "track",
            "userId": "u1",
            "event": "Wide",
            "messageId": f"wide-{part}",
            "properties": {f"{part}{i}": 1 for i in range(900)},
        }
        for part in ("a", "b")
    ]
    assert _post(live, key, "/v1/batch", {"batch": batch})[0] == 200
    check_warehouse(live, source, namespace, before, 2)
    width = _one(
        live,
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = ? "
        "AND table_name = 'wide'",
        [namespace],
    )[0][0]
    assert width == MAX_TABLE_COLUMNS
    over = _one(
        live,
        f"SELECT count(*) FROM {quote(namespace)}.rudder_discards WHERE row_id = 'wide-b' "
        "AND reason LIKE '%limit of 1600 columns%'",
    )[0][0]
    assert over > 0


@pytest.mark.parametrize("depth", [200, 252, 253, 500])
def test_deep_nesting_in_properties(live: Live, depth: int) -> None:
    """Up to 500 levels of objects: accepted and stored (the column cut to 63 characters) or a
    400; never a 500 (252/253: around what orjson can encode with the spool's envelope).
    200 levels must load."""
    source, key, namespace = live.source()
    before = _snapshot(live)
    body = b'{"userId":"u1","event":"Deep","messageId":"deep-' + str(depth).encode() + b'",'
    body += b'"properties":' + b'{"a":' * depth + b'"leaf"' + b"}" * depth + b"}"
    response = live.client.post("/v1/track", content=body, headers=basic(key))
    status, text = response.status_code, response.text
    _check_response(status, text, response.headers["content-type"])
    check_warehouse(live, source, namespace, before, 1 if status == 200 else 0)
    if depth == 200:
        assert status == 200, text
        column = ("a_" * 32)[:63]
        assert _one(live, f"SELECT {quote(column)} FROM {quote(namespace)}.deep") == [("leaf",)]


def test_blank_keys_and_uuid_ts_property(live: Live) -> None:
    """Keys "" and " " give no column; a property `uuid_ts` does not replace the load time."""
    source, key, namespace = live.source()
    before = _snapshot(live)
    started = datetime.now(UTC) - timedelta(seconds=1)
    properties = {"": 1, " ": 2, "ok": 3, "uuid_ts": "not a time", INJECTION: "x"}
    event = {"userId": "u1", "event": "Odd", "messageId": "odd-1", "properties": properties}
    assert _post(live, key, "/v1/track", event)[0] == 200
    check_warehouse(live, source, namespace, before, 1)
    cur = live.cursor()
    try:
        columns = _columns(cur, namespace)["odd"]
        row = cur.execute(f"SELECT ok, uuid_ts, drop_table_tracks FROM {quote(namespace)}.odd")
        assert row.fetchall()[0][0::2] == (3, "x")
        uuid_ts = cur.execute(f"SELECT uuid_ts FROM {quote(namespace)}.odd").fetchall()[0][0]
    finally:
        cur.close()
    assert "" not in columns and " " not in columns and "_" not in columns
    assert columns["uuid_ts"] == "TIMESTAMP WITH TIME ZONE"
    assert started <= uuid_ts <= datetime.now(UTC) + timedelta(seconds=1)


SYSTEM_NAMES = sorted(
    SYSTEM_TABLES | RUDDER_TABLES | {"Rudder Discards", "Tracks With Rudder ID", "All Events"}
)


def test_events_named_like_system_tables_get_their_own_tables(live: Live) -> None:
    """In the default namespace (`main`, where the loader's own tables live too): an event named
    like any system or RudderStack table lands in `_<name>`; those tables keep their columns."""
    assert live.gateway.created_default is not None
    key = live.gateway.created_default.write_key
    cur = live.cursor()
    try:
        columns_before = _columns(cur, "main")
        before = _all_tables(cur)
    finally:
        cur.close()
    batch = [
        {"type": "track", "userId": "u1", "event": name, "messageId": f"sys-{i}"}
        for i, name in enumerate(SYSTEM_NAMES)
    ]
    batch.append(
        {"type": "track", "userId": "u1", "event": 'tracks"; DROP TABLE tracks; --'}
        | {"messageId": "sys-injection", "properties": {INJECTION: 1}}
    )
    assert _post(live, key, "/v1/batch", {"batch": batch})[0] == 200
    check_warehouse(live, "default", "main", before, len(batch))
    cur = live.cursor()
    try:
        columns_after = _columns(cur, "main")
        landed = dict(
            cur.execute("SELECT id, event FROM main.tracks WHERE id LIKE 'sys-%'").fetchall()
        )
    finally:
        cur.close()
    for name, columns in columns_before.items():
        if name not in ("tracks", "tracks_with_rudder_id", "all_events"):
            assert columns_after[name] == columns, name
    for i, name in enumerate(SYSTEM_NAMES):
        table = event_table_name(name)
        assert table is not None and table.startswith("_"), (name, table)
        assert table[1:] in SYSTEM_TABLES | RUDDER_TABLES, (name, table)
        stored = f"SELECT count(*) FROM main.{quote(table)} WHERE id = ?"
        assert _one(live, stored, [f"sys-{i}"]) == [(1,)], (name, table)
        assert landed[f"sys-{i}"] is not None
    assert "_rudder_discards" in columns_after and "tracks" in columns_after
    assert not _one(live, "SELECT 1 FROM main.rudder_discards WHERE row_id LIKE 'sys-%'")


def test_float_past_bigint_into_an_int_column_is_discarded(live: Live) -> None:
    """spec §3.4: an int column takes a float truncated; one past BIGINT cannot be stored and
    must be a discard, not a load error that blocks the spool (the events after it too)."""
    source, key, namespace = live.source()
    before = _snapshot(live)
    first = {"userId": "u1", "messageId": "int-1", "traits": {"n": 1}}
    assert _post(live, key, "/v1/identify", first)[0] == 200
    check_warehouse(live, source, namespace, before, 1)
    before = _snapshot(live)
    later = [
        {"type": "identify", "userId": "u1", "messageId": "int-2", "traits": {"n": 1e300}},
        {"type": "identify", "userId": "u2", "messageId": "int-3", "traits": {"n": 2}},
        {"type": "identify", "userId": "u3", "messageId": "int-4", "traits": {"n": 2**63}},
    ]
    assert _post(live, key, "/v1/batch", {"batch": later})[0] == 200
    check_warehouse(live, source, namespace, before, 3)
    stored = _one(live, f"SELECT id, n FROM {quote(namespace)}.identifies ORDER BY id")
    assert stored == [("int-1", 1), ("int-2", None), ("int-3", 2), ("int-4", None)]


def test_merge_property_over_512_bytes_is_discarded(live: Live) -> None:
    """spec §3.4 (warehouse constraints): a merge property whose type and value pass 512
    bytes is stored as `rudder-discards-<uuid>` with a discard row; the event loads."""
    source, key, namespace = live.source()
    before = _snapshot(live)
    long_id = "u" * 506  # "user_id" + 506 = 513 bytes
    event = {"userId": long_id, "messageId": "long-1", "traits": {"plan": "pro"}}
    assert _post(live, key, "/v1/identify", event)[0] == 200
    check_warehouse(live, source, namespace, before, 1)
    rules = _one(
        live, f"SELECT merge_property_1_value FROM {quote(namespace)}.rudder_identity_merge_rules"
    )
    assert len(rules) == 1 and rules[0][0].startswith("rudder-discards-"), rules
    discards = _one(
        live,
        f"SELECT table_name, row_id, column_name, column_value "
        f"FROM {quote(namespace)}.rudder_discards",
    )
    assert discards == [
        ("rudder_identity_merge_rules", rules[0][0], "merge_property_1_value", long_id)
    ]


def test_loader_loop_hears_stop_while_a_load_keeps_failing() -> None:
    """worker.serve: an exception from every drain (as the load of a poisoned segment gives)
    must not make the loader deaf to `stop`, or the server can never shut down."""
    ours, theirs = multiprocessing.Pipe(duplex=True)
    poisoned = threading.Event()
    poisoned.set()

    def drain() -> int:
        if poisoned.is_set():
            raise OverflowError("Python int too large to convert to C long")
        return 0

    pipeline = SimpleNamespace(
        settings=Settings(segment_max_age=0.05),
        sources={},
        created_default=None,
        drain=drain,
    )
    thread = threading.Thread(
        target=worker.serve, args=(cast(Pipeline, pipeline), theirs), daemon=True
    )
    logging.getLogger("loader.worker").disabled = True
    try:
        thread.start()
        assert ours.recv()[0] == "ready"
        ours.send(("stop",))
        thread.join(timeout=4.0)
        assert not thread.is_alive(), "the loader never read `stop` while its loads failed"
    finally:
        poisoned.clear()  # let a stuck loop end after its back-off
        logging.getLogger("loader.worker").disabled = False
