"""`loader import`: historical files through the HTTP API's rules into the same tables.

Most tests run the "import" command in process on a real Pipeline (a DuckDB file in tmp_path)
with a small batch_size, so every file spans several micro-batches. The tests marked slow run
the CLI as a subprocess: alone, killed with SIGKILL and re-run, on a terminal, and through a
running `loader serve` (the admin channel). Docstrings name the rule of the issue they check.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from loader import importer
from loader.errors import LoaderError
from loader.gateway import Gateway
from loader.importer import ImportAborted
from loader.pipeline import Pipeline
from loader.settings import Settings
from tests.conftest import CASES, Server, basic

Event = dict[str, Any]
Rows = list[tuple[Any, ...]]

T0 = "2019-05-06T07:08:09.123Z"
ORIGINAL = "2019-05-06T07:08:09.000Z"
SENT = "2019-05-06T07:08:10.000Z"
RECEIVED = "2019-05-06T07:08:11.000Z"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# -- payloads ------------------------------------------------------------------------------


def tick(i: int, message_id: str | None = None, **extra: Any) -> Event:
    """A track "Tick" with every time field given (historical)."""
    event: Event = {
        "type": "track",
        "event": "Tick",
        "userId": f"user-{i}",
        "anonymousId": f"anon-{i}",
        "properties": {"n": i, "price": 1.5},
        "timestamp": T0,
        "originalTimestamp": ORIGINAL,
        "sentAt": SENT,
        "receivedAt": RECEIVED,
        **extra,
    }
    if message_id is not None:
        event["messageId"] = message_id
    return event


def sample(prefix: str = "fmt") -> list[Event]:
    """Three tracks, an identify and a page, each with its messageId and time fields."""
    times = {"timestamp": T0, "originalTimestamp": ORIGINAL, "sentAt": SENT, "receivedAt": RECEIVED}
    return [
        tick(0, f"{prefix}-0"),
        tick(1, f"{prefix}-1"),
        tick(2, f"{prefix}-2"),
        {
            "type": "identify",
            "messageId": f"{prefix}-3",
            "userId": "user-0",
            "anonymousId": "anon-0",
            "traits": {"email": "a@example.com", "age": 30},
            **times,
        },
        {
            "type": "page",
            "messageId": f"{prefix}-4",
            "anonymousId": "anon-9",
            "name": "Home",
            "properties": {"path": "/"},
            **times,
        },
    ]


def ndjson(events: Sequence[Any]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def rudder_jobs(events: Sequence[Event], ip: str = "10.1.2.3") -> bytes:
    """RudderStack gateway job lines: {"batch": [event], "requestIP", "writeKey", "receivedAt"};
    the envelope carries receivedAt (taken out of the events)."""
    lines = []
    for event in events:
        inner = {k: v for k, v in event.items() if k != "receivedAt"}
        job = {"batch": [inner], "requestIP": ip, "writeKey": "KEY"}
        if "receivedAt" in event:
            job["receivedAt"] = event["receivedAt"]
        lines.append(job)
    return ndjson(lines)


def segment_export(events: Sequence[Event]) -> bytes:
    """Segment export lines: one event per line with Segment's extra envelope fields."""
    return ndjson([{**e, "projectId": "proj-1", "version": 2, "channel": "server"} for e in events])


ENCODERS: dict[str, Callable[[Sequence[Event]], bytes]] = {
    "ndjson": ndjson,
    "array": lambda events: orjson.dumps(list(events)),
    "array-indented": lambda events: orjson.dumps(list(events), option=orjson.OPT_INDENT_2),
    "batch": lambda events: orjson.dumps({"batch": list(events)}),
    "batch-indented": lambda events: orjson.dumps(
        {"batch": list(events)}, option=orjson.OPT_INDENT_2
    ),
    "rudder-jobs": rudder_jobs,
    "segment-export": segment_export,
}


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# -- the warehouse -------------------------------------------------------------------------


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    opened = Pipeline(settings)
    opened.open(create_default=True)
    try:
        yield opened
    finally:
        opened.close()


def run_import(
    pipeline: Pipeline,
    *paths: Path,
    source: str = "default",
    on_error: str = "abort",
    rejects: Path | None = None,
    batch_size: int = 3,
) -> dict[str, Any]:
    summary = pipeline.command(
        "import",
        {
            "paths": [str(p) for p in paths],
            "source": source,
            "on_error": on_error,
            "rejects": str(rejects) if rejects else None,
            "batch_size": batch_size,
        },
    )
    assert isinstance(summary, dict)
    return summary


def event_tables(summary: dict[str, Any]) -> list[str]:
    """The summary's tables but `users` (checked on its own: the users upsert is a table
    touched too)."""
    return [t for t in summary["tables"] if not t.endswith(".users")]


def q(pipeline: Pipeline, sql: str, params: Sequence[Any] = ()) -> Rows:
    return pipeline.con.execute(sql, list(params)).fetchall()


def ids(pipeline: Pipeline, table: str = "main.tracks") -> list[str]:
    return [row[0] for row in q(pipeline, f"SELECT id FROM {table} ORDER BY id")]


def count(pipeline: Pipeline, table: str) -> int:
    return int(q(pipeline, f"SELECT count(*) FROM {table}")[0][0])


def read_rejects(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def checkpoints(pipeline: Pipeline) -> Rows:
    return q(pipeline, "SELECT path, source, position, events, completed FROM main._imports")


# -- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", list(ENCODERS))
def test_each_format_plain_and_gzip_loads_every_event(
    pipeline: Pipeline, tmp_path: Path, fmt: str, gz: bool
) -> None:
    """Formats (NDJSON, JSON array, {"batch": [...]}, RudderStack/Segment export lines), each
    plain or gzip, detected per file: the same events land in the same rows."""
    path = write(tmp_path / "export" / "events.data", ENCODERS[fmt](sample()), gz)
    summary = run_import(pipeline, path)
    assert summary["files"] == 1
    assert (summary["events_loaded"], summary["duplicates"], summary["rejected"]) == (5, 0, 0)
    assert event_tables(summary) == [
        "main.identifies",
        "main.pages",
        "main.tick",
        "main.tracks",
    ]
    assert ids(pipeline) == ["fmt-0", "fmt-1", "fmt-2"]
    assert q(pipeline, "SELECT id, n, price FROM main.tick ORDER BY n") == [
        ("fmt-0", 0, 1.5),
        ("fmt-1", 1, 1.5),
        ("fmt-2", 2, 1.5),
    ]
    assert q(pipeline, "SELECT id, email, age FROM main.identifies") == [
        ("fmt-3", "a@example.com", 30)
    ]
    assert q(pipeline, "SELECT id, name FROM main.pages") == [("fmt-4", "Home")]
    times = q(
        pipeline,
        "SELECT DISTINCT timestamp, original_timestamp, sent_at, received_at FROM main.tracks",
    )
    assert times == [(utc(T0), utc(ORIGINAL), utc(SENT), utc(RECEIVED))]
    [(cp_path, source, _, events, completed)] = checkpoints(pipeline)
    assert (cp_path, source, events, completed) == (str(path), "default", 5, True)


def test_gzip_is_detected_by_magic_bytes_not_by_the_name(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Gzip is recognised by its magic bytes: a gzip file named .ndjson and a plain file named
    .gz both load."""
    events = sample()
    compressed = write(tmp_path / "really-gzip.ndjson", ndjson(events[:3]), gz=True)
    plain = write(tmp_path / "not-gzip.json.gz", ndjson(events[3:]))
    summary = run_import(pipeline, compressed, plain)
    assert (summary["files"], summary["events_loaded"], summary["rejected"]) == (2, 5, 0)
    assert ids(pipeline) == ["fmt-0", "fmt-1", "fmt-2"]
    assert count(pipeline, "main.identifies") == count(pipeline, "main.pages") == 1


def test_rudder_job_lines_give_their_events_received_at_and_request_ip(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """RudderStack export lines: a job's events (several per line) are each imported, with the
    envelope's receivedAt and requestIP."""
    job = {
        "batch": [
            {"type": "track", "event": "Tick", "userId": "u1", "messageId": "job-1"},
            {"type": "track", "event": "Tick", "userId": "u2", "messageId": "job-2"},
        ],
        "requestIP": "10.9.8.7",
        "writeKey": "KEY",
        "receivedAt": RECEIVED,
    }
    path = write(tmp_path / "gw_jobs_1.json", ndjson([job]))
    summary = run_import(pipeline, path)
    assert summary["events_loaded"] == 2
    assert q(
        pipeline, "SELECT id, received_at, context_request_ip FROM main.tracks ORDER BY id"
    ) == [
        ("job-1", utc(RECEIVED), "10.9.8.7"),
        ("job-2", utc(RECEIVED), "10.9.8.7"),
    ]


def test_ndjson_whose_first_line_is_longer_than_4kb_is_still_ndjson(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """The format is detected per file: an NDJSON file whose first event is large (events may be
    up to 32 KB) is NDJSON, every line loads."""
    events = [tick(i, f"big-{i}", properties={"pad": "x" * 6000, "n": i}) for i in range(4)]
    path = write(tmp_path / "big.ndjson", ndjson(events))
    summary = run_import(pipeline, path, on_error="skip", rejects=tmp_path / "rejects.ndjson")
    assert (summary["events_loaded"], summary["rejected"]) == (4, 0)
    assert ids(pipeline) == [f"big-{i}" for i in range(4)]


def test_ndjson_whose_first_line_is_bad_json_skips_only_that_line(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Bad lines with --on-error skip: a bad first line is rejected alone and the import goes
    on with the file's other lines (the format is still NDJSON)."""
    path = write(
        tmp_path / "bad-first.ndjson",
        b'{"type": "track", "event": "Tick", broken\n'
        + ndjson([tick(i, f"m-{i}") for i in range(4)]),
    )
    rejects = tmp_path / "rejects.ndjson"
    summary = run_import(pipeline, path, on_error="skip", rejects=rejects)
    assert (summary["events_loaded"], summary["rejected"]) == (4, 1)
    assert ids(pipeline) == [f"m-{i}" for i in range(4)]
    [rejected] = read_rejects(rejects)
    assert rejected["line"] == 1 and rejected["reason"].startswith("Invalid JSON")


def test_mixed_folder_recursively_every_format(pipeline: Pipeline, tmp_path: Path) -> None:
    """Files and folders (recursively) of every format, gzip or not, in one import; the format
    is detected per file; the summary counts files, events and tables."""
    root = tmp_path / "export"
    write(root / "a.ndjson", ndjson([tick(i, f"a-{i}") for i in range(4)]))
    write(root / "sub" / "b.json", orjson.dumps([tick(i, f"b-{i}") for i in range(3)]), gz=True)
    write(
        root / "sub" / "deeper" / "c.json",
        orjson.dumps({"batch": [tick(i, f"c-{i}") for i in range(2)]}, option=orjson.OPT_INDENT_2),
    )
    write(
        root / "sub" / "deeper" / "d.gz", rudder_jobs([tick(i, f"d-{i}") for i in range(5)]), True
    )
    write(root / "e.jsonl", segment_export([tick(i, f"e-{i}") for i in range(2)]))
    single = write(tmp_path / "single.ndjson", ndjson(sample()[3:]))
    summary = run_import(pipeline, root, single)
    assert summary["files"] == 6
    assert (summary["events_loaded"], summary["duplicates"], summary["rejected"]) == (18, 0, 0)
    assert event_tables(summary) == [
        "main.identifies",
        "main.pages",
        "main.tick",
        "main.tracks",
    ]
    files = {"a": 4, "b": 3, "c": 2, "d": 5, "e": 2}
    expected = [f"{name}-{i}" for name, n in files.items() for i in range(n)]
    assert ids(pipeline) == sorted(expected)
    assert len(checkpoints(pipeline)) == 6
    assert all(row[4] for row in checkpoints(pipeline))


def test_summary_tables_touched_include_users(pipeline: Pipeline, tmp_path: Path) -> None:
    """The summary lists the tables touched: an identify's import writes `identifies` and
    upserts `users`, so both are listed."""
    path = write(tmp_path / "events.ndjson", ndjson(sample()[3:4]))
    summary = run_import(pipeline, path)
    assert count(pipeline, "main.users") == 1
    assert summary["tables"] == ["main.identifies", "main.users"]


# -- bad lines -----------------------------------------------------------------------------


def numbered(path: Path, lines: Sequence[bytes]) -> Path:
    return write(path, b"".join(line + b"\n" for line in lines))


def good(i: int) -> bytes:
    return orjson.dumps(tick(i, f"m-{i}"))


def test_invalid_json_line_abort_reports_file_line_and_keeps_whole_batches(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """--on-error abort (default): the import stops at the first bad line with `FILE:LINE:
    message`; the warehouse holds whole committed micro-batches only, matching the checkpoint."""
    lines = [good(1), good(2), good(3), good(4), b"{not json", good(6), good(7), good(8)]
    path = numbered(tmp_path / "bad.ndjson", lines)
    later = write(tmp_path / "z-later.ndjson", ndjson([tick(9, "m-9")]))
    with pytest.raises(ImportAborted) as raised:
        run_import(pipeline, path, later)
    assert str(raised.value).startswith(f"{path}:5: Invalid JSON")
    [(cp_path, source, position, events, completed)] = checkpoints(pipeline)
    assert (cp_path, source, completed) == (str(path), "default", False)
    assert position in (3, 4), "only whole micro-batches of lines before line 5 are committed"
    assert events == position
    assert ids(pipeline) == [f"m-{i}" for i in range(1, position + 1)]
    assert count(pipeline, "main.tick") == position


def test_invalid_json_lines_skip_go_to_rejects_and_the_import_goes_on(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """--on-error skip: bad lines go to the rejects file (file, line, reason), the import goes
    on (in this file and the next), and the summary counts loaded and rejected."""
    lines = [good(1), b"{not json", good(3), b"", b"[1, 2", good(6), good(7)]
    path = numbered(tmp_path / "a.ndjson", lines)
    later = write(tmp_path / "b.ndjson", ndjson([tick(8, "m-8")]))
    rejects = tmp_path / "rejects.ndjson"
    summary = run_import(pipeline, path, later, on_error="skip", rejects=rejects)
    assert (summary["files"], summary["events_loaded"], summary["rejected"]) == (2, 5, 2)
    assert ids(pipeline) == ["m-1", "m-3", "m-6", "m-7", "m-8"]
    found = read_rejects(rejects)
    assert [(r["file"], r["line"]) for r in found] == [(str(path), 2), (str(path), 5)]
    assert all(r["reason"].startswith("Invalid JSON") for r in found)


def test_torn_last_line_skip_rejects_it_and_loads_the_rest(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A file with a torn last line (no newline, cut mid-event): with skip it is rejected with
    its line number and every whole line loads."""
    data = b"".join(good(i) + b"\n" for i in range(1, 7)) + good(7)[:25]
    path = write(tmp_path / "torn.ndjson", data)
    rejects = tmp_path / "rejects.ndjson"
    summary = run_import(pipeline, path, on_error="skip", rejects=rejects)
    assert (summary["events_loaded"], summary["rejected"]) == (6, 1)
    assert ids(pipeline) == [f"m-{i}" for i in range(1, 7)]
    [rejected] = read_rejects(rejects)
    assert rejected["line"] == 7 and rejected["reason"].startswith("Invalid JSON")


def test_torn_last_line_abort_reports_it_after_whole_batches(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A torn last line with abort: `FILE:LINE: Invalid JSON`, the whole lines before it that
    filled micro-batches are committed."""
    data = b"".join(good(i) + b"\n" for i in range(1, 7)) + good(7)[:25]
    path = write(tmp_path / "torn.ndjson", data)
    with pytest.raises(ImportAborted, match=rf"^{path}:7: Invalid JSON"):
        run_import(pipeline, path)
    assert ids(pipeline) == [f"m-{i}" for i in range(1, 7)]


def torn_gzip(path: Path, events: int) -> int:
    """A gzip NDJSON file cut short (an export still being written); returns its whole lines."""
    data = b"".join(good(i) + b"\n" for i in range(events))
    compressed = gzip.compress(data)
    torn = compressed[: len(compressed) * 3 // 4]
    path.write_bytes(torn)
    readable = zlib.decompressobj(wbits=31).decompress(torn)
    return readable.count(b"\n")


def test_torn_gzip_file_skip_loads_whole_lines_and_rejects_the_tear(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A torn last line in a gzip file (stream cut short): with skip, every whole line loads and
    the tear is rejected; no crash."""
    path = tmp_path / "torn.ndjson.gz"
    whole = torn_gzip(path, 3000)
    assert whole > 0
    rejects = tmp_path / "rejects.ndjson"
    summary = run_import(pipeline, path, on_error="skip", rejects=rejects, batch_size=500)
    assert summary["events_loaded"] == whole
    assert summary["rejected"] >= 1
    assert count(pipeline, "main.tracks") == whole
    assert read_rejects(rejects)[0]["file"] == str(path)


def test_torn_gzip_file_abort_reports_file_and_line(pipeline: Pipeline, tmp_path: Path) -> None:
    """A torn gzip file with abort: an ImportAborted `FILE:LINE: message` (not a raw EOFError
    traceback)."""
    path = tmp_path / "torn.ndjson.gz"
    whole = torn_gzip(path, 3000)
    with pytest.raises(ImportAborted, match=rf"^{path}:{whole + 1}: "):
        run_import(pipeline, path, batch_size=500)


def test_invalid_json_in_an_array_skip_keeps_the_elements_before_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A JSON document broken midway: the elements before the break load, the break is one
    rejection naming the file."""
    head = orjson.dumps([tick(i, f"m-{i}") for i in range(4)])[:-1]
    path = write(tmp_path / "broken.json", head + b', {"type": "track", oops]')
    rejects = tmp_path / "rejects.ndjson"
    summary = run_import(pipeline, path, on_error="skip", rejects=rejects)
    assert (summary["events_loaded"], summary["rejected"]) == (4, 1)
    assert ids(pipeline) == [f"m-{i}" for i in range(4)]
    [rejected] = read_rejects(rejects)
    assert rejected["file"] == str(path) and rejected["reason"].startswith("Invalid JSON")


# -- validation: the HTTP API's rules and messages -----------------------------------------

BAD_EVENTS: list[tuple[str, Any, str]] = [
    ("not-object", 5, "Invalid event"),
    ("no-type", {"userId": "u", "event": "X"}, "Invalid event type"),
    ("unknown-type", {"type": "purchase", "userId": "u"}, "Invalid event type"),
    ("no-ids", {"type": "track", "event": "X"}, "Request neither has anonymousId nor userId"),
    (
        "blank-ids",
        {"type": "track", "event": "X", "userId": " ", "anonymousId": None},
        "Request neither has anonymousId nor userId",
    ),
    ("track-no-event", {"type": "track", "userId": "u"}, "Missing required field"),
    ("group-no-group-id", {"type": "group", "userId": "u"}, "Missing required field"),
    ("alias-no-previous-id", {"type": "alias", "userId": "u"}, "Missing required field"),
    (
        "merge-bad",
        {"type": "merge", "userId": "u", "mergeProperties": []},
        "Missing required field",
    ),
    (
        "too-large",
        {"type": "track", "event": "X", "userId": "u", "properties": {"p": "x" * 40000}},
        "Request size too large",
    ),
]


def test_every_event_is_validated_with_the_http_api_rules_and_messages(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Every event is validated like the HTTP API, with the same messages (spec/http-api.md's
    error table): each bad event is rejected with the table's phrase; accepted shapes load."""
    accepted: list[Event] = [
        {"type": "TRACK", "event": "Upper", "userId": "u", "messageId": "ok-1"},
        {"type": "track", "event": "Numeric", "userId": 42, "messageId": "ok-2"},
        {"type": "page", "anonymousId": "a", "messageId": "ok-3"},  # page without name
    ]
    lines = [orjson.dumps(raw) for _, raw, _ in BAD_EVENTS] + [orjson.dumps(e) for e in accepted]
    path = numbered(tmp_path / "mixed.ndjson", lines)
    rejects = tmp_path / "rejects.ndjson"
    summary = run_import(pipeline, path, on_error="skip", rejects=rejects)
    assert (summary["events_loaded"], summary["rejected"]) == (3, len(BAD_EVENTS))
    found = read_rejects(rejects)
    assert [r["line"] for r in found] == list(range(1, len(BAD_EVENTS) + 1))
    for (name, _, phrase), rejected in zip(BAD_EVENTS, found, strict=True):
        assert rejected["reason"].startswith(phrase), (name, rejected["reason"])
    assert ids(pipeline) == ["ok-1", "ok-2"]
    assert count(pipeline, "main.pages") == 1


def test_rejection_messages_equal_the_http_api_answers(pipeline: Pipeline, tmp_path: Path) -> None:
    """Same messages as the HTTP API: a bad single event's import reason is the text the API
    answers (400) for the same event."""
    cases = [(name, raw) for name, raw, _ in BAD_EVENTS if isinstance(raw, dict) and "type" in raw]
    cases = [(n, r) for n, r in cases if n != "unknown-type"]
    http_settings = Settings(
        database=tmp_path / "http" / "w.duckdb",
        spool_dir=tmp_path / "http" / "spool",
        segment_max_age=3600.0,
        loader_in_thread=True,
    )
    (tmp_path / "http").mkdir()
    gateway = Gateway(http_settings)
    with TestClient(create_app(gateway)) as client:
        assert gateway.created_default is not None
        key = gateway.created_default.write_key
        answers = {}
        for name, raw in cases:
            response = client.post(f"/v1/{raw['type']}", json=raw, headers=basic(key))
            assert response.status_code == 400, name
            answers[name] = response.text.rstrip("\n")
    path = numbered(tmp_path / "bad.ndjson", [orjson.dumps(raw) for _, raw in cases])
    rejects = tmp_path / "rejects.ndjson"
    run_import(pipeline, path, on_error="skip", rejects=rejects)
    reasons = {name: r["reason"] for (name, _), r in zip(cases, read_rejects(rejects), strict=True)}
    assert reasons == answers


# -- ids, dedup, idempotency ---------------------------------------------------------------


def test_events_missing_message_id_get_deterministic_ids_per_content_and_line(
    tmp_path: Path,
) -> None:
    """Events without messageId get an id derived from the file's content hash and line
    number: two warehouses importing the same file give the same ids; two identical lines are
    two events; every event of a multi-event job line has its own id."""
    plain = {"type": "track", "event": "Tick", "userId": "same"}
    job = {"batch": [dict(plain), dict(plain)], "receivedAt": RECEIVED}
    blank = {**plain, "messageId": "   "}
    path = write(tmp_path / "no-ids.ndjson", ndjson([plain, plain, job, blank]))
    found = []
    for name in ("one", "two"):
        settings = Settings(database=tmp_path / f"{name}.duckdb", spool_dir=tmp_path / name)
        opened = Pipeline(settings)
        opened.open(create_default=True)
        try:
            summary = run_import(opened, path)
            assert (summary["events_loaded"], summary["duplicates"]) == (5, 0)
            found.append(ids(opened))
        finally:
            opened.close()
    assert found[0] == found[1]
    assert len(set(found[0])) == 5
    assert all(i.strip() for i in found[0])


def test_reimport_without_checkpoint_matches_derived_ids_as_duplicates(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Re-imports match: with the checkpoint forgotten, importing the same file again loads
    nothing; every event (with or without messageId) is a duplicate."""
    events = [tick(i) for i in range(4)] + [tick(4, "given-4")]
    paths = [
        write(tmp_path / "a.ndjson", ndjson(events)),
        write(tmp_path / "b.json", orjson.dumps({"batch": events}, option=orjson.OPT_INDENT_2)),
    ]
    first = run_import(pipeline, *paths)
    assert first["events_loaded"] == 9  # given-4 is in both files: one row
    assert first["duplicates"] == 1
    before = ids(pipeline)
    pipeline.con.execute("DELETE FROM main._imports")
    second = run_import(pipeline, *paths)
    assert (second["events_loaded"], second["duplicates"], second["skipped"]) == (0, 10, 0)
    assert ids(pipeline) == before
    assert count(pipeline, "main.tick") == 9


def test_import_twice_adds_no_rows(pipeline: Pipeline, tmp_path: Path) -> None:
    """Idempotent: running the same import twice leaves the same row counts; the second run
    loads nothing."""
    root = tmp_path / "export"
    write(root / "a.ndjson", ndjson(sample()))
    write(root / "b.json.gz", orjson.dumps([tick(i) for i in range(5, 9)]), gz=True)
    tables = ["main.tracks", "main.tick", "main.identifies", "main.users", "main.pages"]
    first = run_import(pipeline, root)
    assert first["events_loaded"] == 9
    counts = {t: count(pipeline, t) for t in tables}
    assert counts["main.tracks"] == 7
    second = run_import(pipeline, root)
    assert second["files"] == 2
    assert second["events_loaded"] == 0
    assert second["rejected"] == 0
    assert {t: count(pipeline, t) for t in tables} == counts


def test_same_events_in_another_file_are_duplicates_skipped(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Dedup on messageId: the same events in another file (another format, gzip) are counted
    as duplicates skipped and add no rows."""
    run_import(pipeline, write(tmp_path / "a.ndjson", ndjson(sample())))
    again = write(tmp_path / "b.json", orjson.dumps(sample()), gz=True)
    summary = run_import(pipeline, again)
    assert (summary["events_loaded"], summary["duplicates"]) == (0, 5)
    assert ids(pipeline) == ["fmt-0", "fmt-1", "fmt-2"]


# -- resume (in process) -------------------------------------------------------------------


class Crash(Exception):
    """Stands for the process dying between two micro-batches."""


def crash_after(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline, batches: int) -> None:
    load = pipeline.import_batch
    done = [0]

    def failing(events: Any, checkpoint: Any) -> Any:
        if done[0] == batches:
            raise Crash
        done[0] += 1
        return load(events, checkpoint)

    monkeypatch.setattr(pipeline, "import_batch", failing)


def test_interrupted_import_resumes_from_its_checkpoint(
    pipeline: Pipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Resumable: an import that died after two micro-batches continues after its checkpoint;
    lines before it are not processed again (no duplicates), the log says it resumed."""
    events = [tick(i, f"m-{i}" if i % 2 else None) for i in range(20)]
    path = write(tmp_path / "events.ndjson", ndjson(events))
    crash_after(monkeypatch, pipeline, 2)
    with pytest.raises(Crash):
        run_import(pipeline, path, batch_size=4)
    assert checkpoints(pipeline) == [(str(path), "default", 8, 8, False)]
    assert count(pipeline, "main.tracks") == 8
    monkeypatch.undo()

    prepared: list[int] = []
    prepare = importer.prepare

    def counting(raw: Any, file_hash: str, position: int, sub: int, now: datetime) -> Any:
        prepared.append(position)
        return prepare(raw, file_hash, position, sub, now)

    monkeypatch.setattr(importer, "prepare", counting)
    caplog.set_level("INFO", logger="loader.importer")
    summary = run_import(pipeline, path, batch_size=4)
    assert (summary["resumed"], summary["events_loaded"], summary["duplicates"]) == (1, 12, 0)
    assert min(prepared) == 9
    assert any("Resuming" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    rows = q(pipeline, "SELECT count(*), count(DISTINCT id) FROM main.tracks")
    assert rows == [(20, 20)]
    assert checkpoints(pipeline) == [(str(path), "default", 20, 20, True)]


def test_resumed_import_keeps_rejects_of_the_part_before_the_crash(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skip + resume: a bad line in the committed part of an interrupted import still ends up
    in the rejects file (the summary/rejects count both loaded and rejected)."""
    lines = [good(1), b"{bad", good(3), good(4), good(5), good(6), good(7), good(8)]
    path = numbered(tmp_path / "events.ndjson", lines)
    rejects = tmp_path / "rejects.ndjson"
    crash_after(monkeypatch, pipeline, 1)
    with pytest.raises(Crash):
        run_import(pipeline, path, on_error="skip", rejects=rejects, batch_size=3)
    assert checkpoints(pipeline)[0][2] == 4  # lines 1-4 committed, line 2 rejected
    monkeypatch.undo()
    run_import(pipeline, path, on_error="skip", rejects=rejects, batch_size=3)
    assert count(pipeline, "main.tracks") == 7
    found = read_rejects(rejects) if rejects.exists() else []
    assert [(r["file"], r["line"]) for r in found] == [(str(path), 2)]


# -- time fields ---------------------------------------------------------------------------


def test_historical_timestamps_are_kept_exactly(pipeline: Pipeline, tmp_path: Path) -> None:
    """Historical time fields: a given timestamp, originalTimestamp, sentAt and receivedAt are
    used as they are (an offset keeps its instant)."""
    offset = tick(1, "offset", timestamp="2019-05-06T09:08:09.123+02:00")
    path = write(tmp_path / "h.ndjson", ndjson([tick(0, "exact"), offset]))
    run_import(pipeline, path)
    rows = q(
        pipeline,
        "SELECT id, timestamp, original_timestamp, sent_at, received_at FROM main.tracks "
        "ORDER BY id",
    )
    assert rows == [
        ("exact", utc(T0), utc(ORIGINAL), utc(SENT), utc(RECEIVED)),
        ("offset", utc(T0), utc(ORIGINAL), utc(SENT), utc(RECEIVED)),
    ]
    assert rows[0][1] == datetime(2019, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


def test_only_missing_time_fields_are_filled_received_at_is_import_time(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Only missing time fields are filled: receivedAt = import time, originalTimestamp and
    sentAt default to it, timestamp is kept or computed as RudderStack does."""
    events = [
        {"type": "track", "event": "T", "userId": "u", "messageId": "only-ts", "timestamp": T0},
        {"type": "track", "event": "T", "userId": "u", "messageId": "none"},
        {
            "type": "track",
            "event": "T",
            "userId": "u",
            "messageId": "no-ts",
            "originalTimestamp": ORIGINAL,
            "sentAt": SENT,
            "receivedAt": RECEIVED,
        },
    ]
    path = write(tmp_path / "t.ndjson", ndjson(events))
    before = datetime.now(UTC).replace(microsecond=0)
    run_import(pipeline, path)
    after = datetime.now(UTC)
    rows = {
        r[0]: r[1:]
        for r in q(
            pipeline,
            "SELECT id, timestamp, original_timestamp, sent_at, received_at FROM main.tracks",
        )
    }
    timestamp, original, sent, received = rows["only-ts"]
    assert timestamp == utc(T0)
    assert before <= received <= after
    assert original == sent == received
    timestamp, original, sent, received = rows["none"]
    assert before <= received <= after
    assert timestamp == original == sent == received
    # receivedAt - (sentAt - originalTimestamp) = 07:08:11 - 1 s
    assert rows["no-ts"] == (
        utc("2019-05-06T07:08:10.000Z"),
        utc(ORIGINAL),
        utc(SENT),
        utc(RECEIVED),
    )


# -- the seed's batch sample, sources --------------------------------------------------------


def test_seed_batch_sample_as_a_file(pipeline: Pipeline) -> None:
    """The seed document's batch sample ({"batch": [...]}, as the HTTP API takes it) imports as
    a file: one row per call type, the seed's timestamps kept."""
    summary = run_import(pipeline, CASES / "batch.seed.json")
    assert (summary["files"], summary["events_loaded"], summary["rejected"]) == (1, 6, 0)
    assert event_tables(summary) == [
        "main.aliases",
        "main.groups",
        "main.identifies",
        "main.pages",
        "main.product_purchased_new",
        "main.screens",
        "main.tracks",
    ]
    for table in summary["tables"]:
        assert count(pipeline, table) == 1, table
    assert q(pipeline, "SELECT timestamp, context_ip, user_id FROM main.tracks") == [
        (utc("2020-02-02T00:23:09.544Z"), "14.5.67.21", "identified user id")
    ]
    assert q(pipeline, "SELECT timestamp, previous_id FROM main.aliases") == [
        (utc("2020-01-21T00:21:34.208Z"), "previd1")
    ]
    assert q(pipeline, "SELECT revenue, name FROM main.product_purchased_new") == [(4.99, "Shirt")]
    again = run_import(pipeline, CASES / "batch.seed.json")
    assert (again["events_loaded"], again["skipped"]) == (0, 1)


def test_import_into_a_second_source_namespace(pipeline: Pipeline, tmp_path: Path) -> None:
    """--source: events land in that source's namespace; dedup and checkpoints are per source,
    so the same file also imports into another source."""
    pipeline.command("sources.add", {"name": "Web Shop"})
    path = write(tmp_path / "events.ndjson", ndjson(sample()))
    summary = run_import(pipeline, path, source="Web Shop")
    assert summary["events_loaded"] == 5
    assert event_tables(summary) == [
        "web_shop.identifies",
        "web_shop.pages",
        "web_shop.tick",
        "web_shop.tracks",
    ]
    assert ids(pipeline, "web_shop.tracks") == ["fmt-0", "fmt-1", "fmt-2"]
    assert q(pipeline, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'tick'") == [(1,)]
    into_default = run_import(pipeline, path)
    assert (into_default["events_loaded"], into_default["skipped"]) == (5, 0)
    assert ids(pipeline) == ["fmt-0", "fmt-1", "fmt-2"]
    assert run_import(pipeline, path, source="Web Shop")["events_loaded"] == 0
    assert count(pipeline, "web_shop.tracks") == 3


def test_unknown_source_is_refused(pipeline: Pipeline, tmp_path: Path) -> None:
    """--source NAME must exist: a clear error, nothing loaded."""
    path = write(tmp_path / "events.ndjson", ndjson(sample()))
    with pytest.raises(LoaderError, match="No source named 'nope'"):
        run_import(pipeline, path, source="nope")
    assert checkpoints(pipeline) == []


# -- the CLI (subprocess) ------------------------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "LOADER_DATABASE": str(settings.database),
        "LOADER_SPOOL_DIR": str(settings.spool_dir),
    }


def cli(settings: Settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", "import", *args],
        env=cli_env(settings),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def query(settings: Settings, sql: str) -> Rows:
    """Read the warehouse once no process holds it."""
    with duckdb.connect(str(settings.database), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql).fetchall()


@pytest.mark.slow
def test_cli_prints_the_summary_and_log_lines(settings: Settings, tmp_path: Path) -> None:
    """The CLI without a server: a summary (files, events loaded, duplicates skipped, rejected,
    tables touched, elapsed, events/s); plain log lines when stderr is no terminal."""
    root = tmp_path / "export"
    write(root / "a.ndjson", ndjson(sample()))
    write(root / "sub" / "b.json", orjson.dumps([tick(i) for i in range(5, 8)]), gz=True)
    done = cli(settings, tmp_path, str(root))
    assert done.returncode == 0, done.stderr
    assert (
        "Imported 2 files: 8 events loaded, 0 duplicates skipped, 0 rejected, 0 resumed, "
        "0 already imported; " in done.stdout
    )
    assert re.search(r"; \d+ tables in \d+\.\d s \([\d,]+ events/s\)\.", done.stdout)
    assert "Tables: main.identifies, main.pages, main.tick, main.tracks" in done.stdout
    assert "Import: 8 events" in done.stderr
    again = cli(settings, tmp_path, str(root))
    assert again.returncode == 0, again.stderr
    assert "0 events loaded" in again.stdout and "2 already imported" in again.stdout
    assert query(settings, "SELECT count(*) FROM main.tracks") == [(6,)]


@pytest.mark.slow
def test_cli_abort_exits_1_with_file_line_message(settings: Settings, tmp_path: Path) -> None:
    """--on-error abort from the CLI: exit code 1, `FILE:LINE: message` on stderr."""
    path = numbered(tmp_path / "bad.ndjson", [good(1), good(2), b'{"type": "track"'])
    done = cli(settings, tmp_path, str(path), "--load-max-events", "1")
    assert done.returncode == 1
    assert f"{path}:3: Invalid JSON" in done.stderr
    assert "Imported" not in done.stdout
    assert query(settings, "SELECT id FROM main.tracks ORDER BY id") == [("m-1",), ("m-2",)]


@pytest.mark.slow
def test_cli_skip_writes_rejects_and_counts_them(settings: Settings, tmp_path: Path) -> None:
    """--on-error skip --rejects FILE: bad lines (line, reason) in FILE; the summary counts them;
    without --rejects they go to ./import-rejects.ndjson."""
    no_ids = orjson.dumps({"type": "track", "event": "X"})
    path = numbered(tmp_path / "bad.ndjson", [good(1), b"{oops", good(3), no_ids])
    done = cli(settings, tmp_path, str(path), "--on-error", "skip", "--rejects", "bad.rejects")
    assert done.returncode == 0, done.stderr
    assert "1 files: 2 events loaded, 0 duplicates skipped, 2 rejected" in done.stdout
    found = read_rejects(tmp_path / "bad.rejects")
    assert [(r["file"], r["line"]) for r in found] == [(str(path), 2), (str(path), 4)]
    assert found[1]["reason"].startswith("Request neither has anonymousId nor userId")

    other = numbered(tmp_path / "other.ndjson", [b"{oops"])
    done = cli(settings, tmp_path, str(other), "--on-error", "skip")
    assert done.returncode == 0, done.stderr
    assert [r["line"] for r in read_rejects(tmp_path / "import-rejects.ndjson")] == [1]


@pytest.mark.slow
def test_cli_shows_a_progress_bar_on_a_terminal(settings: Settings, tmp_path: Path) -> None:
    """A progress bar on a terminal (instead of log lines)."""
    path = write(tmp_path / "events.ndjson", ndjson([tick(i, f"m-{i}") for i in range(50)]))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a real size
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "import", str(path), "--load-max-events", "10"],
        env=cli_env(settings),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other side closed (EIO)
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        out, _ = process.communicate(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "import: 100%|" in text and "events=50]" in text
    assert "Import: " not in text  # no log lines under the bar
    assert b"50 events loaded" in out


@pytest.mark.slow
def test_sigkill_mid_file_then_rerun_resumes_with_exact_counts(
    settings: Settings, tmp_path: Path
) -> None:
    """Resumable: an import killed (SIGKILL) mid-file leaves whole committed batches with their
    checkpoint; the re-run logs that it resumes, loads the rest, and every event is there
    exactly once (with and without messageId)."""
    total = 8_000
    events = [
        {"type": "track", "event": "Tick", "userId": f"u{i}", "properties": {"n": i}}
        | ({"messageId": f"m-{i}"} if i % 2 else {})
        for i in range(total)
    ]
    path = write(tmp_path / "big.ndjson", ndjson(events))
    log = tmp_path / "first.log"
    args = [sys.executable, "-m", "api", "import", str(path), "--load-max-events", "500"]
    with log.open("wb") as err:
        process = subprocess.Popen(
            args, env=cli_env(settings), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if b"Import: " in log.read_bytes():  # logged after a batch committed
                break
            time.sleep(0.01)
        assert process.poll() is None, (
            "the import ended before it could be killed: " + (log.read_text()[-2000:])
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    [(position, committed, completed)] = query(
        settings, "SELECT position, events, completed FROM main._imports"
    )
    assert not completed, "killed after the last commit: make the file bigger"
    assert 0 < committed < total and position == committed
    assert query(settings, "SELECT count(*) FROM main.tick") == [(committed,)]

    done = subprocess.run(
        args, env=cli_env(settings), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"Resuming {path} from line {position}" in done.stderr
    assert (
        f"{total - committed} events loaded, 0 duplicates skipped, 0 rejected, 1 resumed"
        in done.stdout
    )
    assert query(settings, "SELECT count(*), count(DISTINCT id) FROM main.tracks") == [
        (total, total)
    ]
    assert query(settings, "SELECT count(*), count(DISTINCT n) FROM main.tick") == [(total, total)]
    assert query(settings, "SELECT position, events, completed FROM main._imports") == [
        (total, total, True)
    ]


@pytest.mark.slow
def test_import_while_the_server_runs_goes_through_the_admin_channel(
    server: Server, tmp_path: Path
) -> None:
    """Works while the server is running: handed to it over the admin channel (the server
    holds the DuckDB file); the CLI prints the summary; abort errors keep `FILE:LINE:`."""
    settings = server.settings
    add = subprocess.run(
        [sys.executable, "-m", "api", "sources", "add", "web"],
        env=cli_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert add.returncode == 0, add.stderr
    root = tmp_path / "export"
    write(root / "a.ndjson", ndjson(sample()))
    write(root / "b.json.gz", orjson.dumps({"batch": [tick(i) for i in range(5, 9)]}), gz=True)
    done = cli(settings, tmp_path, str(root), "--source", "web", "--load-max-events", "3")
    assert done.returncode == 0, done.stderr
    assert "Imported 2 files: 9 events loaded, 0 duplicates skipped, 0 rejected" in done.stdout
    assert "web.tracks" in done.stdout

    bad = numbered(tmp_path / "bad.ndjson", [good(1), b"{nope"])
    failed = cli(settings, tmp_path, str(bad))
    assert failed.returncode == 1
    assert f"{bad}:2: Invalid JSON" in failed.stderr

    server.stop()
    assert query(settings, "SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(7, 7)]
    assert query(settings, "SELECT timestamp FROM web.tracks WHERE id = 'fmt-0'") == [(utc(T0),)]
    assert query(settings, "SELECT count(*) FROM main._imports WHERE completed") == [(2,)]
