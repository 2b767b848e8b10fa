"""`loader query` (issue: query): SQL text, --file and named queries, bound --param values,
output formats, and queries through a running server's admin channel (read-only, cut at a time
and a row limit, never holding up ingestion).

The named queries are checked on one small warehouse built through the real pipeline (enrich ->
spool -> drain). Every expected row below was worked out by hand from the events in FIRST and
SECOND; the people in them:

- alice: anonymous `anon-a` (page + Product Viewed on 05-06), identifies as `alice` on 05-07,
  then Added To Cart, Order Completed, later visits in weeks 2 and 3.
- bob: user `bob`; Product Viewed, then Order Completed *before* Added To Cart (out of order),
  and an Order Completed 11 days later (outside a 7-day window); a screen in week 2. His
  Product Viewed sends `price` as "free" after alice sent a number: one discard.
- carol: user `carol-old`, aliased to `carol` (m11); the funnel only completes across both ids.
- dave: anonymous `anon-d`, never identified, week 3 only.
- erin: anonymous `anon-e` (screens in weeks 1 and 3), merged with email erin@example.com (m17).

Weeks (Monday first): W1 = 2024-05-06, W2 = 2024-05-13, W3 = 2024-05-20.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import re
import shutil
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest

from api import admin
from loader.enrich import enrich
from loader.pipeline import Pipeline
from loader.query import QueryError, resolve_sql
from loader.settings import Settings
from loader.spool import Spool
from loader.types import Event
from tests.conftest import ROOT, Server, basic, cli

RECEIVED = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
NAMED = [
    "daily_active_users",
    "discards_recent",
    "events_per_day_by_name",
    "funnel",
    "identity_stats",
    "retention_weekly",
    "schema_overview",
    "top_events",
    "user_timeline",
]
PV, ATC, OC = "Product Viewed", "Added To Cart", "Order Completed"
FUNNEL = f"{PV},{ATC},{OC}"


def _event(mid: str, kind: str, ts: str, user: str | None, anon: str | None, **extra: Any) -> Event:
    event: Event = {"type": kind, "messageId": mid, "timestamp": ts, **extra}
    if user is not None:
        event["userId"] = user
    if anon is not None:
        event["anonymousId"] = anon
    return event


FIRST: list[Event] = [
    _event("m01", "page", "2024-05-06T10:00:00Z", None, "anon-a", name="Home"),
    _event(
        "m02", "track", "2024-05-06T10:05:00Z", None, "anon-a", event=PV, properties={"price": 10}
    ),
    _event(
        "m03", "identify", "2024-05-07T09:00:00Z", "alice", "anon-a", traits={"email": "a@x.io"}
    ),
    _event("m04", "track", "2024-05-07T11:00:00Z", "alice", "anon-a", event=ATC),
    _event("m05", "screen", "2024-05-07T08:00:00Z", None, "anon-e", name="Home"),
    _event("m06", "track", "2024-05-08T09:00:00Z", "alice", None, event=OC),
]
"""Loaded first, so `product_viewed.price` is a BIGINT before bob's "free" arrives."""
SECOND: list[Event] = [
    _event(
        "m07", "track", "2024-05-09T15:00:00Z", "bob", None, event=PV, properties={"price": "free"}
    ),
    _event("m08", "track", "2024-05-09T16:00:00Z", "bob", None, event=OC),
    _event("m09", "track", "2024-05-10T10:00:00Z", "bob", None, event=ATC),
    _event("m10", "track", "2024-05-13T09:00:00Z", "carol-old", None, event=PV),
    _event("m11", "alias", "2024-05-14T08:00:00Z", "carol", None, previousId="carol-old"),
    _event("m12", "track", "2024-05-13T18:00:00Z", "carol", None, event=PV),
    _event("m13", "track", "2024-05-14T12:00:00Z", "alice", None, event=PV),
    _event("m14", "screen", "2024-05-15T07:00:00Z", "bob", None, name="Main"),
    _event("m15", "track", "2024-05-15T10:00:00Z", "carol", None, event=ATC),
    _event("m16", "track", "2024-05-16T10:00:00Z", "carol", None, event=OC),
    _event(
        "m17",
        "merge",
        "2024-05-17T12:00:00Z",
        None,
        "anon-e",
        mergeProperties=[
            {"type": "anonymous_id", "value": "anon-e"},
            {"type": "email", "value": "erin@example.com"},
        ],
    ),
    _event("m18", "page", "2024-05-20T14:00:00Z", None, "anon-d", name="Pricing"),
    _event("m19", "track", "2024-05-20T14:05:00Z", None, "anon-d", event=PV),
    _event("m20", "track", "2024-05-20T10:00:00Z", "bob", None, event=OC),
    _event("m21", "page", "2024-05-21T09:00:00Z", "alice", None, name="Home"),
    _event("m22", "screen", "2024-05-21T08:00:00Z", None, "anon-e", name="Home"),
    _event("m23", "track", "2024-05-23T15:00:00Z", "carol", None, event=PV),
]


# -- the fixture warehouse -------------------------------------------------------------------


def _load(pipeline: Pipeline, spool: Spool, events: list[Event]) -> None:
    """Spool the events as one sealed segment, as the HTTP side would, and drain it."""
    lines = [
        orjson.dumps(
            {
                "source": "default",
                "event": enrich(
                    copy.deepcopy(e), received_at=RECEIVED, request_ip="1.2.3.4", sent_at=None
                ),
            }
        )
        + b"\n"
        for e in events
    ]
    spool.append(lines, len(lines))
    assert spool.seal() is not None
    assert pipeline.drain() == len(events)
    assert not list((pipeline.settings.spool_dir / "failed").iterdir()), "a segment failed"


def _build(root: Path, batches: list[list[Event]]) -> Settings:
    settings = Settings(database=root / "warehouse.duckdb", spool_dir=root / "spool")
    pipeline = Pipeline(settings)
    pipeline.open(create_default=True)
    try:
        spool = Spool(settings.spool_dir)
        for batch in batches:
            _load(pipeline, spool, batch)
    finally:
        pipeline.close()
    return settings


@dataclass
class Warehouse:
    pipeline: Pipeline
    """An open Pipeline on the fixture warehouse, for in-process queries."""
    cli: Settings
    """A copy of the same warehouse file, for `loader query` subprocesses (no lock conflict)."""
    built: tuple[datetime, datetime]
    """When the load ran (bounds for the discards' uuid_ts)."""

    def query(self, sql_or_name: str, **params: str) -> list[list[Any]]:
        return self.answer(sql_or_name, **params)["rows"]  # type: ignore[no-any-return]

    def answer(self, sql_or_name: str, **params: str) -> dict[str, Any]:
        args = {"sql": resolve_sql(sql_or_name, None), "params": params, "source": "default"}
        return self.pipeline.command("query", args)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    root = tmp_path_factory.mktemp("query")
    started = datetime.now(UTC)
    settings = _build(root / "main", [FIRST, SECOND])
    finished = datetime.now(UTC)
    (root / "cli").mkdir()
    for path in root.joinpath("main").glob("warehouse.duckdb*"):
        shutil.copy(path, root / "cli" / path.name)
    cli_settings = Settings(database=root / "cli" / "warehouse.duckdb", spool_dir=root / "cli-sp")
    pipeline = Pipeline(settings)
    pipeline.open()
    try:
        yield Warehouse(pipeline, cli_settings, (started, finished))
    finally:
        pipeline.close()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A warehouse of its own for the refusal tests: a statement that wrongly runs changes this
    one, never the fixture the exact results are computed on."""
    settings = _build(tmp_path_factory.mktemp("scratch"), [FIRST])
    pipeline = Pipeline(settings)
    pipeline.open()
    try:
        yield pipeline
    finally:
        pipeline.close()


def json_rows(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# -- named queries: exact results on the fixture ---------------------------------------------


def test_named_queries_are_the_nine_the_issue_lists() -> None:
    """Issue: the named queries daily_active_users .. discards_recent exist in sql/queries/."""
    assert sorted(p.stem for p in (ROOT / "sql" / "queries").glob("*.sql")) == NAMED


DAILY_ACTIVE_USERS = [
    ["2024-05-06", 1],  # anon-a (page + track)
    ["2024-05-07", 2],  # alice (m04), erin (m05)
    ["2024-05-08", 1],
    ["2024-05-09", 1],  # bob twice
    ["2024-05-10", 1],
    ["2024-05-13", 1],  # carol-old and carol: one person
    ["2024-05-14", 1],  # alice; the alias is no activity
    ["2024-05-15", 2],  # bob (screen), carol
    ["2024-05-16", 1],
    ["2024-05-20", 2],  # dave (page + track), bob
    ["2024-05-21", 2],  # alice (page), erin (screen)
    ["2024-05-23", 1],
]


def test_daily_active_users_counts_identity_resolved_people_per_day(warehouse: Warehouse) -> None:
    """Named query daily_active_users: tracks/pages/screens only (identify m03 and alias m11
    add nobody), a person counted once per day across ids (05-13: carol-old + carol = 1)."""
    assert warehouse.query("daily_active_users") == DAILY_ACTIVE_USERS


def test_events_per_day_by_name_counts_tracks_by_name_as_sent(warehouse: Warehouse) -> None:
    """Named query events_per_day_by_name: per day, most events first, then by name."""
    assert warehouse.query("events_per_day_by_name") == [
        ["2024-05-06", PV, 1],
        ["2024-05-07", ATC, 1],
        ["2024-05-08", OC, 1],
        ["2024-05-09", OC, 1],
        ["2024-05-09", PV, 1],
        ["2024-05-10", ATC, 1],
        ["2024-05-13", PV, 2],
        ["2024-05-14", PV, 1],
        ["2024-05-15", ATC, 1],
        ["2024-05-16", OC, 1],
        ["2024-05-20", OC, 1],
        ["2024-05-20", PV, 1],
        ["2024-05-23", PV, 1],
    ]


def test_top_events_counts_events_and_distinct_people(warehouse: Warehouse) -> None:
    """Named query top_events: Product Viewed 7 times by alice, bob, carol (2 ids), dave."""
    answer = warehouse.answer("top_events")
    assert answer["columns"] == ["event", "events", "users"]
    assert answer["rows"] == [[PV, 7, 4], [OC, 4, 3], [ATC, 3, 3]]
    assert (answer["row_count"], answer["truncated"]) == (3, False)


ALICE = [
    ["2024-05-06T10:00:00+00:00", "page", "Home", None, "anon-a", "m01"],
    ["2024-05-06T10:05:00+00:00", "track", PV, None, "anon-a", "m02"],
    ["2024-05-07T09:00:00+00:00", "identify", None, "alice", "anon-a", "m03"],
    ["2024-05-07T11:00:00+00:00", "track", ATC, "alice", "anon-a", "m04"],
    ["2024-05-08T09:00:00+00:00", "track", OC, "alice", None, "m06"],
    ["2024-05-14T12:00:00+00:00", "track", PV, "alice", None, "m13"],
    ["2024-05-21T09:00:00+00:00", "page", "Home", "alice", None, "m21"],
]
CAROL = [
    ["2024-05-13T09:00:00+00:00", "track", PV, "carol-old", None, "m10"],
    ["2024-05-13T18:00:00+00:00", "track", PV, "carol", None, "m12"],
    ["2024-05-15T10:00:00+00:00", "track", ATC, "carol", None, "m15"],
    ["2024-05-16T10:00:00+00:00", "track", OC, "carol", None, "m16"],
    ["2024-05-23T15:00:00+00:00", "track", PV, "carol", None, "m23"],
]
ERIN = [
    ["2024-05-07T08:00:00+00:00", "screen", "Home", None, "anon-e", "m05"],
    ["2024-05-21T08:00:00+00:00", "screen", "Home", None, "anon-e", "m22"],
]


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("anon-a", ALICE),
        ("alice", ALICE),
        ("user_id:alice", ALICE),
        ("carol-old", CAROL),
        ("carol", CAROL),
        ("erin@example.com", ERIN),
        ("email:erin@example.com", ERIN),
        ("anon-e", ERIN),
        ("nobody", []),
        ("x' OR '1'='1", []),
    ],
)
def test_user_timeline_resolves_any_identifier_through_the_identity_graph(
    warehouse: Warehouse, identifier: str, expected: list[list[Any]]
) -> None:
    """Named query user_timeline ($id): any id as sent or type:value gives the whole person,
    oldest first (alias joins carol-old/carol, merge joins anon-e/erin@example.com)."""
    answer = warehouse.answer("user_timeline", id=identifier)
    assert answer["columns"] == [
        "timestamp",
        "call_type",
        "name",
        "user_id",
        "anonymous_id",
        "message_id",
    ]
    assert answer["rows"] == expected


@pytest.mark.parametrize(
    ("steps", "window", "expected"),
    [
        # alice (anon-a -> alice) completes; bob's Order Completed comes before his cart, his
        # second one 11 days after his first view; carol completes across carol-old -> carol.
        (FUNNEL, "7 days", [[1, PV, 4, 100.0], [2, ATC, 3, 75.0], [3, OC, 2, 50.0]]),
        # a 30-day window lets bob's 05-20 Order Completed count
        (FUNNEL, "30 days", [[1, PV, 4, 100.0], [2, ATC, 3, 75.0], [3, OC, 3, 75.0]]),
        # one day: only bob carts within 24 h of his view (05-09 15:00 -> 05-10 10:00)
        (FUNNEL, "1 day", [[1, PV, 4, 100.0], [2, ATC, 1, 25.0], [3, OC, 0, 0.0]]),
        # order matters: only bob carts after ordering (alice and carol cart before)
        (f"{OC}, {ATC}", "7 days", [[1, OC, 3, 100.0], [2, ATC, 1, 33.3]]),
        (f"{PV},Refund Requested", "7 days", [[1, PV, 4, 100.0], [2, "Refund Requested", 0, 0.0]]),
    ],
)
def test_funnel_counts_people_reaching_each_step_in_order_within_the_window(
    warehouse: Warehouse, steps: str, window: str, expected: list[list[Any]]
) -> None:
    """Named query funnel ($steps, $window): steps in order, each after the previous one and
    within the window of the person's first step 1; percentages of step 1."""
    answer = warehouse.answer("funnel", steps=steps, window=window)
    assert answer["columns"] == ["step", "event", "users", "pct_of_first"]
    assert answer["rows"] == expected


def test_retention_weekly_cohorts_by_first_week(warehouse: Warehouse) -> None:
    """Named query retention_weekly: W1 cohort alice, bob, erin (2 back in W2, all 3 in W3);
    W2 cohort carol (back in W3); W3 cohort dave."""
    answer = warehouse.answer("retention_weekly")
    assert answer["columns"] == [
        "cohort_week",
        "cohort_size",
        "week_number",
        "active_users",
        "pct_retained",
    ]
    assert answer["rows"] == [
        ["2024-05-06", 3, 0, 3, 100.0],
        ["2024-05-06", 3, 1, 2, 66.7],
        ["2024-05-06", 3, 2, 3, 100.0],
        ["2024-05-13", 1, 0, 1, 100.0],
        ["2024-05-13", 1, 1, 1, 100.0],
        ["2024-05-20", 1, 0, 1, 100.0],
    ]


def test_identity_stats_counts_identifiers_people_rules_and_edges(warehouse: Warehouse) -> None:
    """Named query identity_stats. Identifiers: anon-a, anon-d, anon-e; alice, bob, carol-old,
    carol; email erin@example.com. People: alice, bob, carol, dave, erin (3 with two ids).
    Rules: (anon-a), (anon-a, alice), (anon-e), (alice), (bob), (carol-old), (carol, carol-old),
    (carol), (anon-e, email), (anon-d) = 10; edges: the three two-node rules."""
    assert warehouse.query("identity_stats") == [
        ["edges", 3],
        ["identifiers", 8],
        ["identifiers: anonymous_id", 3],
        ["identifiers: email", 1],
        ["identifiers: user_id", 4],
        ["largest person (identifiers)", 2],
        ["merge rules", 10],
        ["people (rudder_ids)", 5],
        ["people with more than one identifier", 3],
    ]


def test_schema_overview_lists_the_namespace_tables_with_row_counts(warehouse: Warehouse) -> None:
    """Named query schema_overview: every table of the namespace with its exact row count and
    its columns in order; the loader's bookkeeping tables (in `main` too) are left out."""
    rows = warehouse.query("schema_overview")
    counts = {table: count for table, count, *_ in rows}
    assert counts == {
        "added_to_cart": 3,
        "aliases": 1,
        "identifies": 1,
        "order_completed": 4,
        "pages": 3,
        "product_viewed": 7,
        "rudder_discards": 1,
        "rudder_identity_mappings": 8,
        "rudder_identity_merge_rules": 10,
        "screens": 3,
        "tracks": 14,
        "user_graph": 3,
        "users": 1,
    }
    product_viewed = [row[2:] for row in rows if row[0] == "product_viewed"]
    tz = "TIMESTAMP WITH TIME ZONE"
    assert product_viewed == [
        [1, "price", "BIGINT"],
        [2, "event_text", "VARCHAR"],
        [3, "id", "VARCHAR"],
        [4, "anonymous_id", "VARCHAR"],
        [5, "sent_at", tz],
        [6, "timestamp", tz],
        [7, "received_at", tz],
        [8, "original_timestamp", tz],
        [9, "context_ip", "VARCHAR"],
        [10, "context_request_ip", "VARCHAR"],
        [11, "event", "VARCHAR"],
        [12, "uuid_ts", tz],
        [13, "user_id", "VARCHAR"],
    ]
    assert [row[3] for row in rows if row[0] == "rudder_discards"] == [
        "table_name",
        "row_id",
        "column_name",
        "column_value",
        "received_at",
        "uuid_ts",
        "reason",
    ]
    assert rows == sorted(rows, key=lambda row: (row[0], row[2]))


def test_discards_recent_shows_the_value_that_did_not_fit(warehouse: Warehouse) -> None:
    """Named query discards_recent: bob's "free" for the BIGINT product_viewed.price."""
    answer = warehouse.answer("discards_recent")
    assert answer["columns"] == [
        "discarded_at",
        "table_name",
        "column_name",
        "column_value",
        "row_id",
        "reason",
    ]
    [row] = answer["rows"]
    assert row[1:] == [
        "product_viewed",
        "price",
        "free",
        "m07",
        "incompatible schema conversion from int to string",
    ]
    started, finished = warehouse.built
    assert started <= datetime.fromisoformat(row[0]) <= finished


def test_named_queries_bucket_days_in_utc_whatever_the_host_time_zone(
    warehouse: Warehouse,
) -> None:
    """Named queries' days are UTC days (the warehouse sets TimeZone=UTC): carol's m23 at
    2024-05-23T15:00Z counts on 05-23 even where the host clock is Asia/Tokyo (05-24 there)."""
    done = cli(warehouse.cli, "query", "daily_active_users", "--format", "json", TZ="Asia/Tokyo")
    assert [[row["day"], row["active_users"]] for row in json_rows(done)] == DAILY_ACTIVE_USERS


# -- in process: parameters, limits, errors --------------------------------------------------


def test_param_values_are_bound_never_pasted_into_the_sql(warehouse: Warehouse) -> None:
    """Issue: --param key=value is bound safely: SQL in a value stays a value."""
    value = "x'; drop table tracks; --"
    assert warehouse.query("select $v as v, length($v) as n", v=value) == [[value, len(value)]]
    assert warehouse.query("select count(*) from tracks") == [[14]]


def test_a_missing_param_names_the_ones_to_pass(warehouse: Warehouse) -> None:
    """Issue: named queries take params; leaving one out says which, and how to pass it."""
    with pytest.raises(QueryError, match=r"window.*--param NAME=VALUE"):
        warehouse.answer("funnel", steps=FUNNEL)


def test_unknown_named_query_and_missing_file_are_clear_errors() -> None:
    """Issue: NAME is sql/queries/NAME.sql; anything else is an error naming the options."""
    with pytest.raises(QueryError, match=r"No named query 'nope'; named queries: daily_active"):
        resolve_sql("nope", None)
    with pytest.raises(QueryError, match="No SQL file"):
        resolve_sql(None, "/nonexistent/query.sql")
    assert resolve_sql("select 1", None) == "select 1"
    assert resolve_sql("top_events", None).startswith("-- The 20 most frequent track events")


def test_row_limit_cuts_the_result_and_says_so(warehouse: Warehouse) -> None:
    """Issue: queries run with a row limit; the answer says it was cut."""
    args = {"sql": "select * from range(10)", "max_rows": 3}
    answer = warehouse.pipeline.command("query", args)
    assert (answer["rows"], answer["row_count"], answer["truncated"]) == ([[0], [1], [2]], 3, True)
    args = {"sql": "select * from range(3)", "max_rows": 3}
    assert warehouse.pipeline.command("query", args)["truncated"] is False


def test_a_slow_query_is_stopped_at_its_time_limit(warehouse: Warehouse) -> None:
    """Issue: queries run with a time limit; the message says so and how to raise it."""
    started = time.monotonic()
    with pytest.raises(QueryError, match=r"longer than its limit of 0\.5 s and was stopped"):
        args = {"sql": "select count(*) from range(1000000000000)", "timeout": 0.5}
        warehouse.pipeline.command("query", args)
    assert time.monotonic() - started < 5
    assert warehouse.query("select count(*) from pages") == [[3]]  # the connection still works


# -- read-only while serving -----------------------------------------------------------------

REFUSED = r"statements are refused while the server is running.*read-only"
NO_FILES = r"file system operations are disabled.*queries cannot read or write files"


def _fingerprint(pipeline: Pipeline) -> list[tuple[Any, ...]]:
    """Tables, views and row counts of the warehouse, read on the owner's connection."""
    cur = pipeline.con.cursor()
    objects = cur.execute(
        "SELECT schema_name, table_name, estimated_size FROM duckdb_tables() "
        "UNION ALL SELECT schema_name, view_name, NULL FROM duckdb_views() WHERE NOT internal "
        "ORDER BY ALL"
    ).fetchall()
    counts = cur.execute(
        "SELECT (SELECT count(*) FROM main.tracks), (SELECT count(*) FROM main.pages), "
        "(SELECT count(*) FROM main.tracks WHERE user_id = 'x')"
    ).fetchall()
    settings = cur.execute("SELECT current_setting('threads')").fetchall()
    return [*objects, *counts, *settings]


@pytest.fixture
def serving(scratch: Pipeline) -> Iterator[Pipeline]:
    """The scratch warehouse as a running server's loader process has it."""
    scratch.serving = True
    try:
        yield scratch
    finally:
        scratch.serving = False


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("insert into tracks (id) values ('x')", "INSERT " + REFUSED),
        ("with v as (select 'x') insert into tracks (id) select * from v", "INSERT " + REFUSED),
        ("update tracks set user_id = 'x'", "UPDATE " + REFUSED),
        ("delete from tracks", "DELETE " + REFUSED),
        ("create table scratch (x int)", "CREATE " + REFUSED),
        ("create view scratch as select 1", "CREATE " + REFUSED),
        ("create temp table scratch as select 1", "CREATE " + REFUSED),
        ("drop table tracks", "DROP " + REFUSED),
        ("alter table tracks add column z int", "ALTER " + REFUSED),
        ("attach ':memory:' as other", "ATTACH " + REFUSED),
        ("detach other", "DETACH " + REFUSED),
        ("copy (select 1) to '{tmp}/x.csv'", "COPY " + REFUSED),
        ("copy tracks to '{tmp}/x.csv'", "COPY " + REFUSED),
        ("copy tracks from '/etc/passwd'", "COPY " + REFUSED),
        ("export database '{tmp}/export'", "EXPORT " + REFUSED),
        ("pragma version", "PRAGMA " + REFUSED),
        ("set threads = 1", "SET " + REFUSED),
        ("install httpfs", "(INSTALL|LOAD) " + REFUSED),
        ("load httpfs", "LOAD " + REFUSED),
        ("checkpoint", REFUSED),
        ("vacuum", REFUSED),
        ("begin transaction", REFUSED),
        ("select 1; drop table tracks", "DROP " + REFUSED),
        ("select * from read_csv('/etc/passwd')", NO_FILES),
        ("select * from read_csv_auto('/etc/passwd')", NO_FILES),
        ("select * from read_text('/etc/passwd')", NO_FILES),
        ("select * from read_blob('/etc/passwd')", NO_FILES),
        ("select * from read_json_auto('/etc/hosts')", NO_FILES),
        ("select * from read_parquet('/etc/passwd')", NO_FILES),
        ("select * from glob('/etc/*')", NO_FILES),
        # EXPLAIN ANALYZE executes the statement it explains
        ("explain analyze insert into tracks (id) values ('x')", "refused"),
        ("explain analyze delete from pages", "refused"),
        ("explain analyze create table scratch as select 1", "refused"),
    ],
)
def test_writes_and_file_reads_are_refused_while_serving(
    serving: Pipeline, tmp_path: Path, sql: str, message: str
) -> None:
    """Issue: through a running server, statements that write (INSERT, UPDATE, DELETE, DDL,
    ATTACH, COPY TO, PRAGMA, SET, INSTALL/LOAD) and reading files are refused with a clear
    message, and the warehouse is left exactly as it was."""
    before = _fingerprint(serving)
    sql = sql.format(tmp=tmp_path)
    with pytest.raises(QueryError, match=re.compile(message, re.DOTALL)):
        serving.command("query", {"sql": sql})
    assert _fingerprint(serving) == before
    assert list(tmp_path.iterdir()) == []


def test_a_query_while_serving_does_not_fail_because_the_loader_is_using_its_connection(
    serving: Pipeline,
) -> None:
    """Issue: `loader query` works while the server ingests. The loader's micro-batches run on
    the pipeline's connection; a query arriving meanwhile must run (on a cursor of its own),
    not fail with DuckDB's "connection is busy". A long statement on that connection stands in
    for a micro-batch being loaded."""
    con = serving.con

    def load() -> None:
        with contextlib.suppress(duckdb.InterruptException):
            con.execute("select count(*) from range(1000000000000)")

    busy = threading.Thread(target=load, name="busy-loader", daemon=True)
    busy.start()
    try:
        time.sleep(0.3)
        answer = serving.command("query", {"sql": "select 42 as answer"})
        assert busy.is_alive(), "the stand-in micro-batch ended before the query ran"
    finally:
        con.interrupt()
        busy.join(timeout=10)
    assert not busy.is_alive()
    assert answer["rows"] == [[42]]


@pytest.fixture
def reading(warehouse: Warehouse) -> Iterator[Warehouse]:
    """The fixture warehouse in read-only (serving) mode, for statements that must still run."""
    warehouse.pipeline.serving = True
    try:
        yield warehouse
    finally:
        warehouse.pipeline.serving = False


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select count(*) from tracks", [[14]]),
        ("from tracks select count(*)", [[14]]),
        ("with t as (select id from pages) select count(*) from t", [[3]]),
        ("select column_name from (describe pages) where column_name = 'name'", [["name"]]),
        ("select 1; select 2", [[2]]),
    ],
)
def test_reading_statements_still_run_while_serving(
    reading: Warehouse, sql: str, expected: list[list[Any]]
) -> None:
    """Issue: read-only, not refuse-everything: SELECT/WITH/FROM/DESCRIBE run while serving."""
    assert reading.query(sql) == expected


def test_describe_summarize_explain_and_named_queries_run_while_serving(
    reading: Warehouse,
) -> None:
    """Issue: every named query runs through the server (read-only mode), same answers."""
    for sql in ("describe tracks", "summarize tracks", "explain select count(*) from tracks"):
        assert reading.answer(sql)["row_count"] > 0
    assert reading.query("funnel", steps=FUNNEL, window="7 days") == [
        [1, PV, 4, 100.0],
        [2, ATC, 3, 75.0],
        [3, OC, 2, 50.0],
    ]
    assert reading.query("user_timeline", id="carol-old") == CAROL
    for name in NAMED:
        if name not in ("funnel", "user_timeline"):
            assert reading.answer(name)["row_count"] > 0, name


# -- the CLI on a stopped warehouse ----------------------------------------------------------


def test_cli_list_shows_every_named_query_with_its_first_comment_line(
    warehouse: Warehouse,
) -> None:
    """Issue: `loader query --list` lists the named queries, the first comment line of each as
    its description."""
    done = cli(warehouse.cli, "query", "--list")
    assert done.returncode == 0, done.stderr
    listed = [line.split(None, 1) for line in done.stdout.splitlines()]
    assert [entry[0] for entry in listed] == NAMED
    for name, description in listed:
        text = (ROOT / "sql" / "queries" / f"{name}.sql").read_text()
        first = text.splitlines()[0]
        assert first.startswith("-- ")
        assert description == first[3:].strip(), name


def test_cli_prints_an_aligned_table_by_default(warehouse: Warehouse) -> None:
    """Issue: output is an aligned table on a terminal."""
    done = cli(warehouse.cli, "query", "top_events")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "event            events  users",
        "---------------  ------  -----",
        "Product Viewed   7       4",
        "Order Completed  4       3",
        "Added To Cart    3       3",
        "(3 rows)",
    ]


def test_cli_named_query_with_params(warehouse: Warehouse) -> None:
    """Issue: `loader query NAME --param key=value`."""
    done = cli(
        warehouse.cli,
        "query",
        "funnel",
        "--param",
        f"steps={FUNNEL}",
        "--param",
        "window=7 days",
        "--format",
        "json",
    )
    assert json_rows(done) == [
        {"step": 1, "event": PV, "users": 4, "pct_of_first": 100.0},
        {"step": 2, "event": ATC, "users": 3, "pct_of_first": 75.0},
        {"step": 3, "event": OC, "users": 2, "pct_of_first": 50.0},
    ]


def test_cli_sql_text_binds_params_safely(warehouse: Warehouse) -> None:
    """Issue: `loader query SQL --param` binds values; quotes and SQL in them stay data."""
    value = "x'; drop table tracks; --"
    done = cli(
        warehouse.cli, "query", "select $v as v", "--param", f"v={value}", "--format", "json"
    )
    assert json_rows(done) == [{"v": value}]
    after = cli(warehouse.cli, "query", "select count(*) as n from tracks", "--format", "json")
    assert json_rows(after) == [{"n": 14}]


def test_cli_file_runs_the_sql_in_the_file(warehouse: Warehouse, tmp_path: Path) -> None:
    """Issue: `loader query --file PATH`, with params."""
    path = tmp_path / "count.sql"
    path.write_text(
        "-- Tracks of one event name.\nSELECT count(*) AS n FROM tracks\n"
        "WHERE event_text = $event\n"
    )
    done = cli(
        warehouse.cli, "query", "--file", str(path), "--param", f"event={PV}", "--format", "json"
    )
    assert json_rows(done) == [{"n": 7}]


def test_cli_errors_are_clear_and_exit_nonzero(warehouse: Warehouse, tmp_path: Path) -> None:
    """Issue: wrong names, files, params and formats fail with a message, no traceback."""
    unknown = cli(warehouse.cli, "query", "nope")
    assert unknown.returncode == 1
    assert "No named query 'nope'; named queries: daily_active_users" in unknown.stderr
    missing = cli(warehouse.cli, "query", "--file", str(tmp_path / "none.sql"))
    assert missing.returncode == 1 and "No SQL file" in missing.stderr
    bad_param = cli(warehouse.cli, "query", "select 1", "--param", "novalue")
    assert bad_param.returncode == 2 and "is not NAME=VALUE" in bad_param.stderr
    no_output = cli(warehouse.cli, "query", "select 1", "--format", "parquet")
    assert no_output.returncode == 2 and "parquet needs --output FILE" in no_output.stderr
    for done in (unknown, missing, bad_param, no_output):
        assert "Traceback" not in done.stderr


# -- output formats round-trip ---------------------------------------------------------------

NOTE = 'a, "quoted"\nline; drop table tracks; --'
ROUND_TRIP_SQL = """-- Erin's calls, with a value of every kind, for the format round trips.
SELECT e.timestamp, e.call_type, e.name, e.user_id, CAST(e.timestamp AS DATE) AS day,
       row_number() OVER (ORDER BY e.timestamp) AS n,
       row_number() OVER (ORDER BY e.timestamp) / 2 AS half,
       $note AS note
FROM all_events AS e
WHERE e.anonymous_id = 'anon-e'
ORDER BY e.timestamp
"""
COLUMNS = ["timestamp", "call_type", "name", "user_id", "day", "n", "half", "note"]
ROWS = [
    (datetime(2024, 5, 7, 8, tzinfo=UTC), "screen", "Home", None, date(2024, 5, 7), 1, 0.5, NOTE),
    (datetime(2024, 5, 21, 8, tzinfo=UTC), "screen", "Home", None, date(2024, 5, 21), 2, 1.0, NOTE),
]


def _typed(cells: list[Any]) -> tuple[Any, ...]:
    """A row read back from text: the cells as the types the query returned."""
    ts, call_type, name, user_id, day, n, half, note = cells
    return (
        datetime.fromisoformat(ts),
        call_type,
        name,
        user_id or None,  # CSV has no NULL but the empty cell
        date.fromisoformat(day),
        int(n),
        float(half),
        note,
    )


def _read_csv(text: str) -> list[tuple[Any, ...]]:
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    assert header == COLUMNS
    return [_typed(row) for row in rows]


def _read_json(text: str) -> list[tuple[Any, ...]]:
    rows = json.loads(text)
    assert all(list(row) == COLUMNS for row in rows)
    return [_typed(list(row.values())) for row in rows]


def _read_ndjson(text: str) -> list[tuple[Any, ...]]:
    return _read_json("[" + ",".join(text.splitlines()) + "]")


def _read_parquet(path: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect() as con:
        relation = con.sql("SELECT * FROM read_parquet(?)", params=[str(path)])
        assert relation.columns == COLUMNS
        return relation.fetchall()


READERS: dict[str, Callable[[str], list[tuple[Any, ...]]]] = {
    "csv": _read_csv,
    "json": _read_json,
    "ndjson": _read_ndjson,
}


@pytest.fixture(scope="module")
def round_trip_sql(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sql") / "erin.sql"
    path.write_text(ROUND_TRIP_SQL)
    return path


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson", "parquet"])
def test_output_files_round_trip(
    warehouse: Warehouse, round_trip_sql: Path, tmp_path: Path, fmt: str
) -> None:
    """Issue: --format csv|json|ndjson|parquet --output FILE; CSV and JSON parse back to the
    same rows, parquet opens in DuckDB with the same rows and types."""
    output = tmp_path / f"erin.{fmt}"
    done = cli(
        warehouse.cli,
        "query",
        "--file",
        str(round_trip_sql),
        "--param",
        f"note={NOTE}",
        "--format",
        fmt,
        "--output",
        str(output),
    )
    assert done.returncode == 0, done.stderr
    assert f"Wrote 2 rows to {output}" in done.stderr and done.stdout == ""
    if fmt == "parquet":
        assert _read_parquet(output) == ROWS
    else:
        assert READERS[fmt](output.read_text()) == ROWS


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
def test_output_on_stdout_round_trips(warehouse: Warehouse, round_trip_sql: Path, fmt: str) -> None:
    """Issue: --format csv|json|ndjson without --output prints rows that parse back the same."""
    done = cli(
        warehouse.cli,
        "query",
        "--file",
        str(round_trip_sql),
        "--param",
        f"note={NOTE}",
        "--format",
        fmt,
    )
    assert done.returncode == 0, done.stderr
    assert READERS[fmt](done.stdout) == ROWS


# -- while `loader serve` runs ---------------------------------------------------------------


class Sender:
    """Posts batches of tracks named `event` at a steady pace from a thread, recording each
    request's (start, end, status) on the monotonic clock and the acknowledged messageIds."""

    def __init__(self, url: str, key: str, event: str, batch: int = 5, pace: float = 0.02) -> None:
        self.url, self.key, self.event, self.batch, self.pace = url, key, event, batch, pace
        self.acked: list[str] = []
        self.requests: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"send-{event}", daemon=True)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive()

    def wait_for(self, events: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.acked) >= events, self.requests[-5:]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                ids = [str(uuid.uuid4()) for _ in range(self.batch)]
                body = {
                    "batch": [
                        {"type": "track", "userId": "sender", "event": self.event, "messageId": m}
                        for m in ids
                    ]
                }
                start = time.monotonic()
                try:
                    status = client.post(
                        self.url + "/v1/batch", json=body, headers=basic(self.key)
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                self.requests.append((start, time.monotonic(), status))
                if status == 200:
                    self.acked.extend(ids)
                self._stop.wait(self.pace)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `loader serve` (loader in its own process), sealing segments every 0.2 s."""
    root = tmp_path_factory.mktemp("live")
    settings = Settings(
        database=root / "warehouse.duckdb", spool_dir=root / "spool", segment_max_age=0.2
    )
    server = Server(settings, root / "server.log")
    server.start()
    try:
        path = admin.admin_file(settings)
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.exists(), "the server wrote no admin file"
        assert server.write_key
        yield server
    finally:
        server.stop()


def _count(settings: Settings, event: str) -> list[int]:
    done = cli(
        settings,
        "query",
        "select count(*) as n, count(distinct id) as ids from tracks where event_text = $e",
        "--param",
        f"e={event}",
        "--format",
        "json",
    )
    [row] = json_rows(done)
    return [row["n"], row["ids"]]


def _flush(settings: Settings) -> None:
    done = cli(settings, "flush")
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_query_while_serving_returns_exact_counts_of_what_was_ingested(live: Server) -> None:
    """Issue: `loader query` works while `loader serve` holds the file (through the admin
    channel): during steady ingestion it answers, and after `loader flush` the count is exactly
    the events that got a 200."""
    settings = live.settings
    assert live.write_key
    with Sender(live.url, live.write_key, "Tick Count") as sender:
        sender.wait_for(100)
        during = _count(settings, "Tick Count")
        sender.wait_for(len(sender.acked) + 50)
    assert during[0] == during[1] <= len(sender.acked)
    assert {status for *_, status in sender.requests} == {200}
    _flush(settings)
    assert _count(settings, "Tick Count") == [len(sender.acked), len(set(sender.acked))]
    done = cli(settings, "query", "select count(*) from tracks", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.splitlines()[1]) >= len(sender.acked)


@pytest.mark.slow
def test_slow_query_through_the_server_is_cut_while_ingestion_continues(live: Server) -> None:
    """Issue: through the server, a query is cut at its time limit with a clear message; it
    never blocks ingestion for longer than one micro-batch: requests sent meanwhile get 200
    quickly, micro-batches commit while it runs, and every acknowledged event loads."""
    settings = live.settings
    assert live.write_key
    timeout = 3.0
    with Sender(live.url, live.write_key, "Tick Slow") as sender:
        sender.wait_for(50)
        started = time.monotonic()
        slow = cli(
            settings,
            "query",
            "select count(*) from range(1000000000000)",
            "--timeout",
            str(timeout),
            timeout=30,
        )
        ended, ended_wall = time.monotonic(), datetime.now(UTC)
        sender.wait_for(len(sender.acked) + 25)
    assert slow.returncode == 1, slow.stdout
    assert "ran longer than its limit of 3 s and was stopped" in slow.stderr, slow.stderr
    assert "--timeout" in slow.stderr
    assert ended - started < timeout + 15
    # the query ran (at least) during [ended - timeout, ended]; look inside, with margins
    inside = [r for r in sender.requests if r[0] >= ended - timeout + 0.3 and r[1] <= ended - 0.3]
    assert len(inside) >= 10, f"{len(inside)} requests completed during the slow query"
    assert {status for *_, status in inside} == {200}
    assert max(end - start for start, end, _ in inside) < 1.0
    window = [
        (ended_wall - timedelta(seconds=timeout - 0.3)).isoformat(),
        (ended_wall - timedelta(seconds=0.3)).isoformat(),
    ]
    loads = cli(
        settings,
        "query",
        "select count(*) as loads from _loads "
        "where loaded_at between cast($a as timestamptz) and cast($b as timestamptz)",
        "--param",
        f"a={window[0]}",
        "--param",
        f"b={window[1]}",
        "--format",
        "json",
    )
    assert json_rows(loads)[0]["loads"] >= 2, "no micro-batch committed during the slow query"
    _flush(settings)
    assert _count(settings, "Tick Slow") == [len(sender.acked), len(set(sender.acked))]


@pytest.mark.slow
def test_writes_and_file_reads_are_refused_through_a_running_server(live: Server) -> None:
    """Issue: through the server, writes and file reads are refused with a clear message; the
    row limit applies; --output is written."""
    settings = live.settings
    for sql, message in [
        ("drop table tracks", "DROP statements are refused while the server is running"),
        ("select * from read_csv('/etc/passwd')", "file system operations are disabled"),
        ("copy (select 1) to '/tmp/loader-query-test.csv'", "COPY statements are refused"),
    ]:
        done = cli(settings, "query", sql)
        assert done.returncode == 1, (sql, done.stdout)
        assert message in done.stderr, (sql, done.stderr)
        assert "Traceback" not in done.stderr
    limited = cli(
        settings, "query", "select * from range(10) r", "--max-rows", "3", "--format", "json"
    )
    assert json_rows(limited) == [{"r": 0}, {"r": 1}, {"r": 2}]
    assert "(cut at 3 rows; raise --max-rows)" in limited.stderr
    tables = cli(
        settings,
        "query",
        "select count(*) as n from duckdb_tables() where table_name = 'tracks'",
        "--format",
        "json",
    )
    assert json_rows(tables) == [{"n": 1}]


@pytest.mark.slow
def test_admin_channel_rejects_a_wrong_token(live: Server, tmp_path: Path) -> None:
    """Issue: the admin channel (POST /admin/{command}, Bearer token from `<database>.admin`,
    owner-only) rejects a wrong or missing token with 401, through the CLI too."""
    path = admin.admin_file(live.settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    assert info["url"].startswith("http://127.0.0.1:")
    url = f"{info['url']}/admin/query"
    body = {"sql": "select 42 as answer"}
    for headers in ({"Authorization": "Bearer x"}, {}, {"Authorization": info["token"]}):
        response = httpx.post(url, json=body, headers=headers, timeout=10)
        assert response.status_code == 401, headers
        assert response.json() == {"error": "missing or wrong admin token"}
    good = httpx.post(url, json=body, headers={"Authorization": f"Bearer {info['token']}"})
    assert good.status_code == 200
    assert json.loads(good.text.splitlines()[-1])["result"]["rows"] == [[42]]
    original = path.read_text()
    try:
        path.write_text(json.dumps({**info, "token": "x"}))
        done = cli(live.settings, "query", "select 1")
    finally:
        path.write_text(original)
    assert done.returncode == 1
    assert "missing or wrong admin token" in done.stderr
