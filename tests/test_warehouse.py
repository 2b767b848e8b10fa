"""The warehouse a real Pipeline writes (spec/warehouse.md §1-§5): tables, types, users, dedup.

Every test spools segments by hand, drains them into a DuckDB file in tmp_path and queries it.
"""

from __future__ import annotations

import copy
import gc
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
import pytest

from loader import flatten, microbatch, warehouse
from loader.enrich import enrich
from loader.pipeline import Pipeline
from loader.settings import Settings
from loader.spool import Spool
from loader.types import Event
from tests.conftest import load_case

RECEIVED = datetime(2024, 5, 1, 10, 0, 2, tzinfo=UTC)
REQUEST_IP = "1.2.3.4"

BIGINT, DOUBLE, BOOLEAN, VARCHAR, JSON = "BIGINT", "DOUBLE", "BOOLEAN", "VARCHAR", "JSON"
TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def spool_line(event: Event, received_at: datetime = RECEIVED, source: str = "default") -> bytes:
    """One spooled line, enriched as the HTTP side does it (the event itself is not changed)."""
    enriched = enrich(
        copy.deepcopy(event), received_at=received_at, request_ip=REQUEST_IP, sent_at=None
    )
    return orjson.dumps({"source": source, "event": enriched}) + b"\n"


class Warehouse:
    """The real pipeline (source "default", namespace "main") on a DuckDB file in tmp_path."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.pipeline = Pipeline(settings)
        self.pipeline.open(create_default=True)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self.pipeline.con

    def reopen(self) -> None:
        """Stop and start the loader on the same files (a restart)."""
        self.pipeline.close()
        self.pipeline = Pipeline(self.settings)
        self.pipeline.open()

    def close(self) -> None:
        self.pipeline.close()

    def seal(self, lines: Sequence[bytes]) -> str:
        self.spool.append(list(lines), len(lines))
        segment_id = self.spool.seal()
        assert segment_id is not None
        return segment_id

    def spool_events(
        self, events: Sequence[Event], received_at: datetime = RECEIVED, source: str = "default"
    ) -> str:
        return self.seal([spool_line(e, received_at, source) for e in events])

    def load(
        self, events: Sequence[Event], received_at: datetime = RECEIVED, source: str = "default"
    ) -> str:
        """Spool the events as one segment and drain it; returns the segment id."""
        segment_id = self.spool_events(events, received_at, source)
        self.pipeline.drain()
        return segment_id

    def load_lines(self, lines: Sequence[bytes]) -> str:
        segment_id = self.seal(lines)
        self.pipeline.drain()
        return segment_id

    def tables(self, namespace: str = "main") -> set[str]:
        """Base tables of a namespace (views the loader installs are left out)."""
        rows = self.con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = ? AND table_type = 'BASE TABLE'",
            [namespace],
        ).fetchall()
        return {name for (name,) in rows}

    def columns(self, table: str, namespace: str = "main") -> dict[str, str]:
        """{column: DuckDB data_type} of a table."""
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [namespace, table],
        ).fetchall()
        return dict(rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.con.execute(sql, list(params))
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def rows(self, table: str, namespace: str = "main", order: str = "id") -> list[dict[str, Any]]:
        return self.query(f'SELECT * FROM "{namespace}"."{table}" ORDER BY "{order}"')

    def count(self, table: str, namespace: str = "main") -> int:
        row = self.con.execute(f'SELECT count(*) FROM "{namespace}"."{table}"').fetchone()
        assert row is not None
        return int(row[0])

    def discards(self, namespace: str = "main") -> list[dict[str, Any]]:
        return self.query(
            f'SELECT * FROM "{namespace}".rudder_discards ORDER BY table_name, row_id, column_name'
        )

    def merge_rules(self, namespace: str = "main") -> list[tuple[Any, ...]]:
        return sorted(
            self.con.execute(f'SELECT * FROM "{namespace}".rudder_identity_merge_rules').fetchall(),
            key=repr,
        )


@pytest.fixture
def wh(settings: Settings) -> Iterator[Warehouse]:
    warehouse = Warehouse(settings)
    try:
        yield warehouse
    finally:
        warehouse.close()


def assert_recent(moment: Any) -> None:
    assert isinstance(moment, datetime) and moment.tzinfo is not None
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


Golden = dict[str, tuple[str, Any]]
"""column -> (DuckDB type, the value of the one row); uuid_ts is checked apart."""


def assert_golden(wh: Warehouse, table: str, expected: Golden) -> None:
    """The table has exactly these columns (plus uuid_ts) and exactly one row with these values."""
    assert wh.columns(table) == {c: t for c, (t, _) in expected.items()} | {"uuid_ts": TIMESTAMPTZ}
    [row] = wh.rows(table)
    assert_recent(row.pop("uuid_ts"))
    assert row == {c: v for c, (_, v) in expected.items()}


# What every golden case (tests/cases/<call>.golden.json) brings: context and the time fields.
CONTEXT: Golden = {
    "context_library_name": (VARCHAR, "analytics.js"),
    "context_library_version": (VARCHAR, "3.0.1"),
    "context_page_url": (VARCHAR, "https://shop.test/p?id=1"),
    "context_page_path": (VARCHAR, "/p"),
    "context_user_agent": (VARCHAR, "Mozilla/5.0 (X11; Linux x86_64)"),
    "context_traits_email": (VARCHAR, "alex@example.com"),
    "context_traits_beta": (BOOLEAN, True),
    "context_locale": (VARCHAR, "en-US"),
    "context_ip": (VARCHAR, "198.51.100.4"),
    "context_passed_ip": (VARCHAR, "198.51.100.4"),
    "context_request_ip": (VARCHAR, REQUEST_IP),
}
TIMES: Golden = {
    "timestamp": (TIMESTAMPTZ, datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)),
    "sent_at": (TIMESTAMPTZ, utc(2024, 5, 1, 10, 0, 1)),
    "original_timestamp": (TIMESTAMPTZ, datetime(2024, 5, 1, 9, 59, 59, 500_000, tzinfo=UTC)),
    "received_at": (TIMESTAMPTZ, RECEIVED),
}


# -- §1.2 golden rows per call type -------------------------------------------------------


def test_track_golden_tracks_and_event_table(wh: Warehouse) -> None:
    """§1.1, §1.2 track, §2.1, §3.1, §3.2, §5.1: tracks + product_added + one merge rule."""
    before = wh.tables()
    wh.load([load_case("track.golden")])
    assert wh.tables() - before == {"tracks", "product_added"}
    common: Golden = {
        **CONTEXT,
        **TIMES,
        "event_text": (VARCHAR, "Product Added"),
        "event": (VARCHAR, "product_added"),
        "id": (VARCHAR, "msg-track-1"),
        "anonymous_id": (VARCHAR, "anon-1"),
        "user_id": (VARCHAR, "user-1"),
        "channel": (VARCHAR, "web"),
    }
    assert_golden(wh, "tracks", common)  # properties are not in tracks
    assert_golden(
        wh,
        "product_added",
        {
            **common,
            "price": (DOUBLE, 9.5),
            "quantity": (BIGINT, 2),
            "in_stock": (BOOLEAN, False),
            "tags": (VARCHAR, '["new","sale"]'),
            "product_sku": (VARCHAR, "SKU-1"),
            "product_dims_width_cm": (BIGINT, 30),
            "shipped_at": (TIMESTAMPTZ, utc(2024, 5, 2, 1, 4, 5)),
            "meta": (JSON, '{"a":"b","k":[1,2]}'),
        },
    )
    assert wh.merge_rules() == [("anonymous_id", "anon-1", "user_id", "user-1")]


def test_identify_golden_identifies_users_and_merge_rule(wh: Warehouse) -> None:
    """§1.2 identify, §4: identifies, users (id typed as identifies.user_id: BIGINT), rule."""
    before = wh.tables()
    wh.load([load_case("identify.golden")])
    assert wh.tables() - before == {"identifies", "users"}
    traits: Golden = {
        "email": (VARCHAR, "alex@work.test"),
        "name": (VARCHAR, "Alex"),
        "age": (BIGINT, 30),
        "vip": (BOOLEAN, True),
        "score": (DOUBLE, 1.5),
        "roles": (VARCHAR, '["admin","dev"]'),
        "address_city": (VARCHAR, "Paris"),
        "address_geo_lat": (DOUBLE, 48.85),
        "signed_up_at": (TIMESTAMPTZ, utc(2024, 1, 2, 1, 4, 5)),
    }
    envelope: Golden = {
        **traits,
        **CONTEXT,
        **TIMES,
        "anonymous_id": (VARCHAR, "anon-1"),
        "channel": (VARCHAR, "server"),
    }
    # Traits named like rule columns (userId, id) are dropped; the numeric userId is an int.
    assert_golden(
        wh,
        "identifies",
        {**envelope, "id": (VARCHAR, "msg-identify-1"), "user_id": (BIGINT, 42)},
    )
    assert_golden(wh, "users", {**envelope, "id": (BIGINT, 42)})
    assert wh.merge_rules() == [("anonymous_id", "anon-1", "user_id", "42")]


def test_page_golden_name_from_properties_and_no_user_id(wh: Warehouse) -> None:
    """§1.2 page: name = properties.name when the call has none; §5.1 rule without property 2."""
    before = wh.tables()
    wh.load([load_case("page.golden")])
    assert wh.tables() - before == {"pages"}
    assert_golden(
        wh,
        "pages",
        {
            **CONTEXT,
            **TIMES,
            "path": (VARCHAR, "/pricing"),
            "tab_id": (BIGINT, 3),
            "variants": (VARCHAR, '["a"]'),
            "scrolled": (BOOLEAN, True),
            "name": (VARCHAR, "Pricing"),
            "id": (VARCHAR, "msg-page-1"),
            "anonymous_id": (VARCHAR, "anon-2"),
            "channel": (VARCHAR, "web"),
        },
    )
    assert wh.merge_rules() == [("anonymous_id", "anon-2", None, None)]


def test_screen_golden_message_name_wins(wh: Warehouse) -> None:
    """§1.2 screen: message.name beats properties.name (a reserved column, dropped)."""
    before = wh.tables()
    wh.load([load_case("screen.golden")])
    assert wh.tables() - before == {"screens"}
    assert_golden(
        wh,
        "screens",
        {
            **CONTEXT,
            **TIMES,
            "load_ms": (BIGINT, 120),
            "ratio": (DOUBLE, 0.75),
            "dark": (BOOLEAN, False),
            "name": (VARCHAR, "Home"),
            "id": (VARCHAR, "msg-screen-1"),
            "user_id": (VARCHAR, "user-1"),
            "channel": (VARCHAR, "mobile"),
        },
    )
    assert wh.merge_rules() == [("user_id", "user-1", None, None)]


def test_group_golden_traits_unprefixed_and_group_id(wh: Warehouse) -> None:
    """§1.2 group: traits (no prefix) + context + rules + group_id."""
    before = wh.tables()
    wh.load([load_case("group.golden")])
    assert wh.tables() - before == {"groups"}
    assert_golden(
        wh,
        "groups",
        {
            **CONTEXT,
            **TIMES,
            "name": (VARCHAR, "Acme"),
            "employees": (BIGINT, 50),
            "listed": (BOOLEAN, False),
            "industries": (VARCHAR, '["saas"]'),
            "hq_city": (VARCHAR, "Berlin"),
            "group_id": (VARCHAR, "group-1"),
            "id": (VARCHAR, "msg-group-1"),
            "anonymous_id": (VARCHAR, "anon-1"),
            "user_id": (VARCHAR, "user-1"),
        },
    )
    assert wh.merge_rules() == [("anonymous_id", "anon-1", "user_id", "user-1")]


def test_alias_golden_previous_id_and_user_id_pair_rule(wh: Warehouse) -> None:
    """§1.2 alias: previous_id; §5.1 the rule joins userId and previousId (not anonymousId)."""
    before = wh.tables()
    wh.load([load_case("alias.golden")])
    assert wh.tables() - before == {"aliases"}
    assert_golden(
        wh,
        "aliases",
        {
            **CONTEXT,
            **TIMES,
            "source": (VARCHAR, "signup"),
            "merged": (BOOLEAN, True),
            "previous_id": (VARCHAR, "user-old"),
            "id": (VARCHAR, "msg-alias-1"),
            "anonymous_id": (VARCHAR, "anon-3"),
            "user_id": (VARCHAR, "user-new"),
        },
    )
    assert wh.merge_rules() == [("user_id", "user-new", "user_id", "user-old")]


def test_track_named_groups_lands_in_underscore_groups(wh: Warehouse) -> None:
    """§2.4: event "groups" -> table `_groups`, its `event` column stays "groups"."""
    group = {"type": "group", "messageId": "g-call", "userId": "u1", "groupId": "g1"}
    track = {"type": "track", "messageId": "t-groups", "userId": "u1", "event": "groups"}
    wh.load([group, track])
    assert {"groups", "_groups", "tracks"} <= wh.tables()
    assert [r["id"] for r in wh.rows("groups")] == ["g-call"]
    [row] = wh.rows("_groups")
    assert (row["id"], row["event"], row["event_text"]) == ("t-groups", "groups", "groups")
    [tracked] = wh.rows("tracks")
    assert (tracked["event"], tracked["event_text"]) == ("groups", "groups")


def test_track_of_system_table_names_never_writes_system_tables(wh: Warehouse) -> None:
    """§2.4 + DESIGN.md: events named "users", "identifies", "rudder_discards" get a `_`."""
    events = [
        {"type": "track", "messageId": f"t-{i}", "userId": "u1", "event": name}
        for i, name in enumerate(("users", "identifies", "Rudder Discards"))
    ]
    wh.load(events)
    assert {"_users", "_identifies", "_rudder_discards"} <= wh.tables()
    assert not {"users", "identifies"} & wh.tables()
    assert wh.discards() == []


# -- §3.3 and §3.4: type evolution, coercion and discards across loads --------------------

# column -> (first value, second value, stored second value or DISCARD, table type)
DISCARD = object()
EVOLUTION: dict[str, tuple[Any, Any, Any, str]] = {
    # string column <- anything: fmt.Sprint (the ISO text for a datetime), no discard
    "s_int": ("x", 50, "50", VARCHAR),
    "s_bool": ("x", True, "true", VARCHAR),
    "s_float": ("x", 1.5, "1.5", VARCHAR),
    "s_datetime": ("x", "2024-02-03T04:05:06+01:00", "2024-02-03T03:05:06.000Z", VARCHAR),
    "s_array": ("x", [1, "a"], '[1,"a"]', VARCHAR),
    # float <- int; int <- float truncates toward zero
    "f_int": (1.5, 3, 3.0, DOUBLE),
    "i_float": (2, 2.7, 2, BIGINT),
    "i_negative_float": (2, -2.7, -2, BIGINT),
    # json <- int, float, bool: their text; array: kept; anything else: a JSON string
    "j_int": ({"a": 1}, 5, "5", JSON),
    "j_float": ({"a": 1}, 1.25, "1.25", JSON),
    "j_bool": ({"a": 1}, False, "false", JSON),
    "j_array": ({"a": 1}, [1, "a"], '[1,"a"]', JSON),
    "j_string": ({"a": 1}, "hello", '"hello"', JSON),
    "j_datetime": ({"a": 1}, "2024-02-03T04:05:06Z", '"2024-02-03T04:05:06.000Z"', JSON),
    # string <- json: kept
    "s_json": ("x", {"a": 1}, '{"a":1}', VARCHAR),
    # everything else is a discard
    "dt_string": ("2024-01-01T00:00:00Z", "not a date", DISCARD, TIMESTAMPTZ),
    "dt_int": ("2024-01-01T00:00:00Z", 7, DISCARD, TIMESTAMPTZ),
    "b_string": (True, "yes", DISCARD, BOOLEAN),
    "b_int": (True, 5, DISCARD, BOOLEAN),
    "b_float": (True, 2.5, DISCARD, BOOLEAN),
    "i_string": (1, "abc", DISCARD, BIGINT),
    "i_datetime": (1, "2024-03-01T00:00:00Z", DISCARD, BIGINT),
    "i_bool": (1, True, DISCARD, BIGINT),
    "f_string": (1.5, "zz", DISCARD, DOUBLE),
    "f_bool": (1.5, False, DISCARD, DOUBLE),
}
# column -> (column_value, reason) of the rudder_discards row of the second load
EVOLUTION_DISCARDS = {
    "dt_string": ("not a date", "incompatible schema conversion from datetime to string"),
    "dt_int": ("7", "incompatible schema conversion from datetime to int"),
    "b_string": ("yes", "incompatible schema conversion from boolean to string"),
    "b_int": ("5", "incompatible schema conversion from boolean to int"),
    "b_float": ("2.5", "incompatible schema conversion from boolean to float"),
    "i_string": ("abc", "incompatible schema conversion from int to string"),
    "i_datetime": (
        "2024-03-01T00:00:00.000Z",
        "incompatible schema conversion from int to datetime",
    ),
    "i_bool": ("true", "incompatible schema conversion from int to boolean"),
    "f_string": ("zz", "incompatible schema conversion from float to string"),
    "f_bool": ("false", "incompatible schema conversion from float to boolean"),
}


def json_paths(*columns: str) -> dict[str, Any]:
    paths = [f"track.properties.{c}" for c in columns]
    return {"DATA_WAREHOUSE": {"options": {"jsonPaths": paths}}}


def test_existing_column_type_wins_coerce_or_discard(wh: Warehouse) -> None:
    """§3.3 the warehouse type wins; §3.4 every row of the coercion table, across two loads."""
    first = {c: v[0] for c, v in EVOLUTION.items()}
    second = {c: v[1] for c, v in EVOLUTION.items()}
    wh.load(
        [
            {
                "type": "track",
                "event": "Evolve",
                "messageId": "m-1",
                "userId": "u1",
                "properties": first,
                "integrations": json_paths(*(c for c in EVOLUTION if c.startswith("j_"))),
            }
        ]
    )
    created = wh.columns("evolve")
    assert {c: created[c] for c in EVOLUTION} == {c: v[3] for c, v in EVOLUTION.items()}
    later = RECEIVED + timedelta(minutes=5)
    wh.load(
        [
            {
                "type": "track",
                "event": "Evolve",
                "messageId": "m-2",
                "userId": "u1",
                "properties": second,
                "integrations": json_paths("s_json"),
            }
        ],
        received_at=later,
    )
    assert wh.columns("evolve") == created  # never retyped
    [row] = wh.query("SELECT * FROM evolve WHERE id = 'm-2'")
    stored = {c: None if v[2] is DISCARD else v[2] for c, v in EVOLUTION.items()}
    assert {c: row[c] for c in EVOLUTION} == stored
    discards = wh.discards()
    for discard in discards:
        assert_recent(discard.pop("uuid_ts"))
    assert discards == [
        {
            "table_name": "evolve",
            "row_id": "m-2",
            "column_name": column,
            "column_value": value,
            "received_at": later,
            "reason": reason,
        }
        for column, (value, reason) in sorted(EVOLUTION_DISCARDS.items())
    ]


def test_first_type_in_a_batch_wins_later_rows_coerced_or_discarded(wh: Warehouse) -> None:
    """§3.3: within one micro-batch the first type seen makes the column; later rows coerce."""
    events = [
        {"type": "track", "event": "Mixed", "messageId": mid, "userId": "u", "properties": p}
        for mid, p in (("m-1", {"n": 1, "s": "a"}), ("m-2", {"n": "one", "s": 2}))
    ]
    wh.load(events)
    columns = wh.columns("mixed")
    assert (columns["n"], columns["s"]) == (BIGINT, VARCHAR)
    assert [(r["id"], r["n"], r["s"]) for r in wh.rows("mixed")] == [
        ("m-1", 1, "a"),
        ("m-2", None, "2"),
    ]
    assert [
        (d["row_id"], d["column_name"], d["column_value"], d["reason"]) for d in wh.discards()
    ] == [("m-2", "n", "one", "incompatible schema conversion from int to string")]


def test_rule_column_string_then_numeric_user_id_is_text(wh: Warehouse) -> None:
    """§3.4 string <- int: user_id created as text stores a later numeric userId as '50'."""
    wh.load([{"type": "track", "event": "E", "messageId": "m-1", "userId": "alice"}])
    wh.load([{"type": "track", "event": "E", "messageId": "m-2", "userId": 50}])
    assert wh.columns("tracks")["user_id"] == VARCHAR
    assert [(r["id"], r["user_id"]) for r in wh.rows("tracks")] == [("m-1", "alice"), ("m-2", "50")]
    assert wh.discards() == []


def test_later_load_adds_columns_never_retypes(wh: Warehouse) -> None:
    """§3.3: new columns are added (ADD COLUMN); old rows read NULL there; types stay."""
    wh.load(
        [{"type": "track", "event": "E", "messageId": "m-1", "userId": "u", "properties": {"a": 1}}]
    )
    before = wh.columns("e")
    wh.load(
        [
            {
                "type": "track",
                "event": "E",
                "messageId": "m-2",
                "userId": "u",
                "properties": {"a": "text", "b": True, "c": {"d": 2.5}},
                "context": {"app": {"build": "7"}},
            }
        ]
    )
    after = wh.columns("e")
    assert {c: t for c, t in after.items() if c in before} == before
    assert {c: t for c, t in after.items() if c not in before} == {
        "b": BOOLEAN,
        "c_d": DOUBLE,
        "context_app_build": VARCHAR,
    }
    rows = wh.rows("e")
    assert [(r["id"], r["a"], r["b"], r["c_d"], r["context_app_build"]) for r in rows] == [
        ("m-1", 1, None, None, None),
        ("m-2", None, True, 2.5, "7"),
    ]
    assert [d["column_name"] for d in wh.discards()] == ["a"]
    assert "context_app_build" in wh.columns("tracks")


def test_column_type_changed_by_hand_is_honoured(wh: Warehouse) -> None:
    """§3.3 "the warehouse is the source of truth": a person retyped columns between runs."""
    wh.load(
        [
            {
                "type": "track",
                "event": "E",
                "messageId": "m-1",
                "userId": "u",
                "properties": {"qty": 2, "code": "7"},
            }
        ]
    )
    wh.pipeline.close()
    with duckdb.connect(str(wh.settings.database)) as con:
        con.execute("ALTER TABLE main.e ALTER COLUMN qty TYPE VARCHAR")
        con.execute("ALTER TABLE main.e ALTER COLUMN code TYPE BIGINT")
    wh.reopen()
    wh.load(
        [
            {
                "type": "track",
                "event": "E",
                "messageId": "m-2",
                "userId": "u",
                "properties": {"qty": 50, "code": "abc"},
            }
        ]
    )
    columns = wh.columns("e")
    assert (columns["qty"], columns["code"]) == (VARCHAR, BIGINT)
    assert [(r["id"], r["qty"], r["code"]) for r in wh.rows("e")] == [
        ("m-1", "2", 7),
        ("m-2", "50", None),
    ]
    assert [
        (d["row_id"], d["column_name"], d["column_value"], d["reason"]) for d in wh.discards()
    ] == [("m-2", "code", "abc", "incompatible schema conversion from int to string")]


# -- §4 users ------------------------------------------------------------------------------


def identify(
    message_id: str, user_id: Any = None, anonymous_id: str | None = None, **traits: Any
) -> Event:
    event: Event = {"type": "identify", "messageId": message_id, "traits": traits}
    if user_id is not None:
        event["userId"] = user_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    return event


def test_users_latest_non_null_value_per_column(wh: Warehouse) -> None:
    """§4: per column the latest non-null value; missing traits keep older ones."""
    t1, t2, t3 = RECEIVED, RECEIVED + timedelta(minutes=1), RECEIVED + timedelta(minutes=2)
    wh.load([identify("i-1", "u1", "a1", email="e1@x.test", name="First")], received_at=t1)
    wh.load([identify("i-2", "u1", "a2", plan="pro")], received_at=t2)
    wh.load([identify("i-3", "u1", "a3", name=None, email="e3@x.test")], received_at=t3)
    assert wh.count("identifies") == 3
    [user] = wh.rows("users")
    assert {k: user[k] for k in ("id", "email", "name", "plan", "anonymous_id", "received_at")} == {
        "id": "u1",
        "email": "e3@x.test",
        "name": "First",
        "plan": "pro",
        "anonymous_id": "a3",
        "received_at": t3,
    }
    assert "user_id" not in wh.columns("users")
    # A late identify (older received_at) changes nothing that is newer.
    wh.load([identify("i-0", "u1", "a0", email="old@x.test")], received_at=t1 - timedelta(hours=1))
    [late] = wh.rows("users")
    assert (late["email"], late["anonymous_id"], late["received_at"]) == ("e3@x.test", "a3", t3)


def test_users_schema_is_identifies_schema(wh: Warehouse) -> None:
    """§4 columns: every identifies column, user_id removed, id typed as identifies.user_id."""
    wh.load([identify("i-1", "u1", "a1", email="e@x.test", age=3)])
    wh.load([identify("i-2", "u2", traits_only=True)])  # a column only the second load brings
    identifies = wh.columns("identifies")
    expected = {c: t for c, t in identifies.items() if c not in ("id", "user_id")}
    assert wh.columns("users") == expected | {"id": identifies["user_id"]}


def test_users_column_added_by_hand_is_added_to_identifies(wh: Warehouse) -> None:
    """§4 columns: a column in users but not in identifies is added to both tables; the
    person's value stays (identifies bring no non-null value for it)."""
    wh.load([identify("i-1", "u1", "a1", email="e@x.test")])
    wh.pipeline.close()
    with duckdb.connect(str(wh.settings.database)) as con:
        con.execute("ALTER TABLE main.users ADD COLUMN crm_score BIGINT")
        con.execute("UPDATE main.users SET crm_score = 7")
    wh.reopen()
    wh.load(
        [identify("i-2", "u1", "a2", email="new@x.test")],
        received_at=RECEIVED + timedelta(minutes=1),
    )
    assert wh.columns("identifies").get("crm_score") == BIGINT
    assert wh.columns("users")["crm_score"] == BIGINT
    [user] = wh.rows("users")
    assert (user["email"], user["crm_score"]) == ("new@x.test", 7)


def test_identify_without_user_id_never_reaches_users(wh: Warehouse) -> None:
    """§4: identifies rows without user_id stay out of users."""
    wh.load([identify("i-anon", None, "a-only", email="anon@x.test")])
    assert wh.count("identifies") == 1
    assert "users" not in wh.tables() or wh.count("users") == 0
    wh.load(
        [identify("i-anon-2", None, "a-only", email="anon2@x.test"), identify("i-1", "u1", "a1")]
    )
    assert [(u["id"], u["anonymous_id"], u["email"]) for u in wh.rows("users")] == [
        ("u1", "a1", None)
    ]


def test_users_two_users_in_one_batch_ordered_by_received_at(wh: Warehouse) -> None:
    """§4: one row per user of a batch; the latest received_at wins, not the line order."""
    t1, t2 = RECEIVED, RECEIVED + timedelta(minutes=1)
    wh.load_lines(
        [
            spool_line(identify("i-1", "u1", "a1", name="newer", plan="pro"), t2),
            spool_line(identify("i-2", "u2", "b1", name="other"), t1),
            spool_line(identify("i-3", "u1", "a0", name="older", email="e@x.test"), t1),
        ]
    )
    users = wh.rows("users")
    assert [
        (u["id"], u["name"], u["plan"], u["email"], u["anonymous_id"], u["received_at"])
        for u in users
    ] == [
        ("u1", "newer", "pro", "e@x.test", "a1", t2),
        ("u2", "other", None, None, "b1", t1),
    ]


def test_users_id_takes_identifies_user_id_type(wh: Warehouse) -> None:
    """§4: `id` takes the type of identifies.user_id (text here: a later number is '7')."""
    wh.load([identify("i-1", "u1", name="a")])
    wh.load([identify("i-2", 7, name="b")])
    assert wh.columns("identifies")["user_id"] == VARCHAR
    assert wh.columns("users")["id"] == VARCHAR
    assert [(u["id"], u["name"]) for u in wh.rows("users")] == [("7", "b"), ("u1", "a")]


# -- exactly once (DESIGN.md: dedup on (source, messageId)) --------------------------------


def test_same_events_in_two_segments_load_once(wh: Warehouse) -> None:
    """A replayed segment: every row once; users untouched by the replay."""
    events = [
        {
            "type": "track",
            "event": "Clicked",
            "messageId": "t-1",
            "userId": "u1",
            "anonymousId": "a1",
        },
        identify("i-1", "u1", "a1", email="e@x.test"),
    ]
    wh.load(events)
    users = wh.rows("users")
    rules = wh.merge_rules()
    wh.load(events, received_at=RECEIVED + timedelta(minutes=1))
    assert (wh.count("tracks"), wh.count("clicked"), wh.count("identifies")) == (1, 1, 1)
    assert wh.rows("users") == users
    assert wh.merge_rules() == rules


def test_keys_of_a_0002_warehouse_survive_the_index_free_migration(settings: Settings) -> None:
    """Migration 0003 drops the ART index of `_message_ids` (unbounded memory) and keeps its
    keys: an event loaded before the upgrade is still a repeat after it (spec/http-api.md
    "Duplicates")."""
    warehouse.migrate(settings.database, "0002")
    con = duckdb.connect(str(settings.database))
    con.execute("INSERT INTO _message_ids SELECT md5_number('default' || chr(0) || 'old-1')")
    con.close()
    wh = Warehouse(settings)  # migrates to head
    try:
        assert wh.query("SELECT count(*) AS n FROM duckdb_indexes()") == [{"n": 0}]
        assert wh.query(
            "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = '_message_ids'"
        ) == [{"constraint_type": "NOT NULL"}]
        wh.load([{"type": "track", "event": "Old", "messageId": "old-1", "userId": "u"}])
        wh.load([{"type": "track", "event": "New", "messageId": "new-1", "userId": "u"}])
        assert wh.query("SELECT id FROM tracks") == [{"id": "new-1"}]
        assert wh.count("_message_ids") == 2
    finally:
        wh.close()


def test_check_reports_rows_and_keys_that_break_exactly_once(wh: Warehouse) -> None:
    """`loader check` (issue #7's consistency check) finds a row loaded twice, a row without
    its key and a key stored twice; a clean warehouse passes."""
    wh.load(
        [
            {"type": "track", "event": "Clicked", "messageId": f"m-{i}", "userId": "u"}
            for i in range(3)
        ]
    )
    assert wh.pipeline.command("check", {})["problems"] == []
    wh.con.execute("INSERT INTO tracks SELECT * FROM tracks WHERE id = 'm-0'")
    wh.con.execute("UPDATE clicked SET id = 'm-9' WHERE id = 'm-1'")
    wh.con.execute("INSERT INTO _message_ids SELECT key FROM _message_ids LIMIT 1")
    report = wh.pipeline.command("check", {})
    assert not report["ok"]
    assert sorted(report["problems"]) == [
        "_message_ids: 1 exactly-once keys stored twice",
        "main.clicked: 1 rows without their exactly-once key",
        "main.clicked: 1 rows without their tracks row",
        "main.tracks: 1 rows repeat a message id",
    ]


def test_same_message_id_twice_in_one_segment_loads_once(wh: Warehouse) -> None:
    """A retried request within one segment: one row per table, all from the same event."""
    event = {"type": "track", "event": "Clicked", "messageId": "dup", "userId": "u1"}
    first = {**event, "context": {"traits": {"try": 1}}}
    retry = {**event, "context": {"traits": {"try": 2}}}
    wh.load([first, retry])
    [tracked] = wh.rows("tracks")
    [clicked] = wh.rows("clicked")
    assert tracked["context_traits_try"] in (1, 2)
    assert tracked["context_traits_try"] == clicked["context_traits_try"]
    assert (wh.count("tracks"), wh.count("clicked")) == (1, 1)


def test_same_message_id_in_two_sources_loads_in_each_namespace(wh: Warehouse) -> None:
    """The dedup key is (source, messageId): one row per source namespace."""
    wh.pipeline.command("sources.add", {"name": "web"})
    event = {"type": "track", "event": "Clicked", "messageId": "shared", "userId": "u1"}
    wh.load([event])
    wh.load([event], source="web")
    assert (wh.count("tracks"), wh.count("clicked")) == (1, 1)
    assert (wh.count("tracks", "web"), wh.count("clicked", "web")) == (1, 1)
    assert [r["id"] for r in wh.rows("tracks", "web")] == ["shared"]


# -- column cap ----------------------------------------------------------------------------


def wide(message_id: str, keys: Sequence[str]) -> Event:
    return {
        "type": "track",
        "event": "Wide",
        "messageId": message_id,
        "userId": "u",
        "properties": {k: i for i, k in enumerate(keys)},
    }


def test_column_cap_stops_new_columns_and_discards_them(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§1.3 per-table cap (Postgres 1600, MAX_TABLE_COLUMNS), patched to 30 here for speed.

    A table at the cap gets no further columns; each value of a column left out is a discard
    naming the limit, and the rest of the row loads.
    """
    cap = 30
    monkeypatch.setattr(microbatch, "MAX_TABLE_COLUMNS", cap)
    wh.load([wide("w-1", ["a", "b"])])
    existing = wh.columns("wide")
    assert len(existing) < cap
    extra = [f"x{i:02d}" for i in range(cap)]
    wh.load([wide("w-2", ["a", *extra])])
    columns = wh.columns("wide")
    assert len(columns) == cap
    assert {c: t for c, t in columns.items() if c in existing} == existing
    added = [c for c in columns if c not in existing]
    left_out = [c for c in extra if c not in columns]
    assert set(added) | set(left_out) == set(extra) and left_out
    [row] = wh.query("SELECT * FROM wide WHERE id = 'w-2'")
    assert all(row[c] == extra.index(c) + 1 for c in added)
    assert row["a"] == 0
    discards = wh.discards()
    assert sorted(d["column_name"] for d in discards) == sorted(left_out)
    for d in discards:
        assert (d["table_name"], d["row_id"], d["received_at"]) == ("wide", "w-2", RECEIVED)
        assert d["column_value"] == str(extra.index(d["column_name"]) + 1)
        assert str(cap) in d["reason"] and "wide" in d["reason"]


@pytest.mark.parametrize("cells", [warehouse._TRANSPOSED_CELLS, 5])
def test_sparse_rows_load_the_same_transposed_whole_or_a_slice_of_columns_at_a_time(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch, cells: int
) -> None:
    """Rows become Arrow columns a slice of columns at a time past _TRANSPOSED_CELLS (bounded
    memory for very wide tables); patched to 5 cells, 3 rows go one column per slice. Each value
    of each type lands in its own row and column, and a property `uuid_ts` gives way to the load
    time (§1.1: uuid_ts is stamped at load)."""
    monkeypatch.setattr(warehouse, "_TRANSPOSED_CELLS", cells)
    sparse: list[dict[str, Any]] = [
        {"a": 1, "b": "x", "seen_at": "2024-05-01T10:00:00.000Z"},
        {"c": 2.5, "flag": True, "uuid_ts": "mine"},
        {"b": "y", "a": 3, "tags": ["p", "q"]},
    ]
    started = datetime.now(UTC)
    wh.load(
        [
            {"type": "track", "event": "Sparse", "userId": f"u{i}", "messageId": f"s-{i}"}
            | {"properties": properties}
            for i, properties in enumerate(sparse, start=1)
        ]
    )
    rows = wh.rows("sparse")
    picked = [{c: row[c] for c in ("id", "a", "b", "c", "flag", "seen_at", "tags")} for row in rows]
    assert picked == [
        {
            "id": "s-1",
            "a": 1,
            "b": "x",
            "c": None,
            "flag": None,
            "seen_at": utc(2024, 5, 1, 10, 0, 0),
            "tags": None,
        },
        {"id": "s-2", "a": None, "b": None, "c": 2.5, "flag": True, "seen_at": None, "tags": None},
        {
            "id": "s-3",
            "a": 3,
            "b": "y",
            "c": None,
            "flag": None,
            "seen_at": None,
            "tags": '["p","q"]',
        },
    ]
    assert all(
        started - timedelta(seconds=1) <= row["uuid_ts"] <= datetime.now(UTC) for row in rows
    )


def test_column_cap_counts_every_column_of_a_new_table(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§1.3 per-table cap (MAX_TABLE_COLUMNS, patched to 30 for speed), uuid_ts counted.

    The first event of a table brings more columns than the cap: the table is created with
    exactly `cap` columns, and the rest are discards.
    """
    cap = 30
    monkeypatch.setattr(microbatch, "MAX_TABLE_COLUMNS", cap)
    keys = [f"p{i:02d}" for i in range(cap)]
    wh.load([wide("w-1", keys)])
    columns = wh.columns("wide")
    assert len(columns) == cap
    sent = set(keys) | set(wh.columns("tracks")) - {"uuid_ts"}
    left_out = sent - set(columns)
    assert sorted(d["column_name"] for d in wh.discards()) == sorted(left_out)


def test_event_over_the_per_event_column_limit_is_discarded_whole(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§1.3 WH_MAX_COLUMNS_IN_EVENT (1600, patched to 40 here for speed), uuid_ts counted.

    The event is rejected ("Too many columns outputted from the event"): none of its rows
    load, a discard says why, and the other events of the batch load.
    """
    monkeypatch.setattr(flatten, "MAX_COLUMNS", 40)
    wh.load([wide("too-wide", [f"p{i:02d}" for i in range(40)]), wide("fits", ["a"])])
    assert [r["id"] for r in wh.rows("tracks")] == ["fits"]
    assert [r["id"] for r in wh.rows("wide")] == ["fits"]
    [discard] = wh.discards()
    assert discard["row_id"] == "too-wide"
    assert "Too many columns outputted from the event" in discard["reason"]


# -- loader status ---------------------------------------------------------------------------


def test_status_reports_rows_per_table_and_loads(wh: Warehouse) -> None:
    """`loader status`: rows per namespace.table (users after its upsert), loads, discards."""
    wh.pipeline.command("sources.add", {"name": "web"})
    track = {"type": "track", "event": "Clicked", "userId": "u1", "properties": {"n": 1}}
    wh.load([{**track, "messageId": "t-1"}, identify("i-1", "u1", name="a")])
    wh.load(
        [{**track, "messageId": "t-2", "properties": {"n": "x"}}, identify("i-2", "u1", name="b")],
        received_at=RECEIVED + timedelta(minutes=1),
    )
    wh.load([{**track, "messageId": "t-3"}], source="web")
    status = wh.pipeline.command("status", {})
    assert status["rows"] == {
        "main.tracks": 2,
        "main.clicked": 2,
        "main.identifies": 2,
        "main.users": 1,
        "web.tracks": 1,
        "web.clicked": 1,
    }
    assert status["events_loaded"] == 5
    assert status["discards"] == 1
    assert status["failed_segments"] == 0
    assert status["backlog"]["segments"] == 0
    assert_recent(datetime.fromisoformat(status["last_load"]))


def test_status_events_loaded_leaves_out_duplicates(wh: Warehouse) -> None:
    """`loader status` events_loaded counts events loaded, not replayed duplicates skipped."""
    event = {"type": "track", "event": "Clicked", "messageId": "t-1", "userId": "u1"}
    wh.load([event, {**event, "messageId": "t-2"}])
    wh.load([event])  # a replay: skipped
    status = wh.pipeline.command("status", {})
    assert wh.count("tracks") == 2
    assert status["events_loaded"] == 2


def test_status_before_any_load(wh: Warehouse) -> None:
    status = wh.pipeline.command("status", {})
    assert (status["rows"], status["events_loaded"], status["discards"]) == ({}, 0, 0)
    assert status["last_load"] is None


def test_property_named_rudder_id_keeps_the_views_working(wh: Warehouse) -> None:
    """A property `rudder_id` is an ordinary column of pages (§1.2, §2.1), while
    pages_with_rudder_id and all_events give the identity graph's rudder_id (a fuzz find: the
    two collided and all_events failed to cast the property into the graph's text ids)."""
    wh.load(
        [
            {"type": "page", "messageId": "r1", "userId": "u1", "properties": {"rudder_id": 5}},
            {"type": "identify", "messageId": "r2", "userId": "u1", "anonymousId": "a1"},
        ]
    )
    assert wh.con.execute("SELECT rudder_id FROM main.pages").fetchall() == [(5,)]
    label = wh.con.execute(
        "SELECT rudder_id FROM main.rudder_identity_mappings WHERE merge_property_value = 'u1'"
    ).fetchall()[0][0]
    assert wh.con.execute("SELECT rudder_id FROM main.pages_with_rudder_id").fetchall() == [
        (label,)
    ]
    assert wh.con.execute(
        "SELECT call_type, rudder_id FROM main.all_events ORDER BY call_type"
    ).fetchall() == [("identify", label), ("page", label)]


def test_gc_paused_brings_the_collector_back_after_overlapping_threads() -> None:
    """Loading and an import pause gc from two threads; the last one out restores it."""
    assert gc.isenabled()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with warehouse.gc_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    worker = threading.Thread(target=first)
    worker.start()
    first_in.wait(5)
    with warehouse.gc_paused():
        second_in.set()
        first_out.wait(5)
        assert not gc.isenabled()  # the first thread left, this one is still inside
    worker.join(5)
    assert gc.isenabled()
