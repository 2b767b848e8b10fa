"""Crashes and bad segments between the spool and the warehouse (DESIGN.md: exactly once).

Each test builds the on-disk state a crash or a bad write leaves, by hand, then runs the real
Pipeline on it; the docstrings name the crash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import duckdb
import pytest

from loader.errors import TransientError
from loader.settings import Settings
from loader.spool import SUFFIX, new_segment_id
from loader.warehouse import DuckDBWriter
from tests.test_warehouse import RECEIVED, Warehouse, identify, spool_line


@pytest.fixture
def wh(settings: Settings) -> Iterator[Warehouse]:
    warehouse = Warehouse(settings)
    try:
        yield warehouse
    finally:
        warehouse.close()


def track(message_id: str, **properties: object) -> dict[str, object]:
    return {
        "type": "track",
        "event": "Clicked",
        "messageId": message_id,
        "userId": "u1",
        "anonymousId": "a1",
        "properties": properties,
    }


def loads(wh: Warehouse) -> list[str]:
    return [r["segment_id"] for r in wh.query("SELECT segment_id FROM main._loads ORDER BY 1")]


def failed(wh: Warehouse) -> list[str]:
    return sorted(p.name for p in wh.spool.failed_dir.iterdir())


def test_recover_skips_segment_already_committed(wh: Warehouse) -> None:
    """Crash after COMMIT, before the segment left sealed/: it must not load twice."""
    segment = wh.spool.path(wh.spool_events([track("t-1"), identify("i-1", "u1", "a1")]))
    data = segment.read_bytes()
    wh.pipeline.drain()
    assert not segment.exists()
    counts = {t: wh.count(t) for t in ("tracks", "clicked", "identifies", "users")}
    assert counts == {"tracks": 1, "clicked": 1, "identifies": 1, "users": 1}
    users = wh.rows("users")
    segment.write_bytes(data)  # the delete never happened
    wh.reopen()
    assert wh.pipeline.drain() == 0
    assert {t: wh.count(t) for t in counts} == counts
    assert wh.rows("users") == users
    assert wh.spool.sealed() == []
    assert failed(wh) == []
    assert loads(wh) == [segment.name.removesuffix(SUFFIX)]


def test_corrupt_line_quarantines_segment_next_one_loads(wh: Warehouse) -> None:
    """A segment with a line that is not JSON (disk corruption) goes to failed/ with why."""
    lines = [spool_line(track("t-1")), b'{"source": "default", "event": {"ty\x00\n']
    bad = wh.seal(lines)
    wh.pipeline.drain()
    assert wh.spool.sealed() == []
    assert failed(wh) == [f"{bad}.error", f"{bad}{SUFFIX}"]
    assert (wh.spool.failed_dir / f"{bad}{SUFFIX}").read_bytes() == b"".join(lines)
    assert "line 2" in (wh.spool.failed_dir / f"{bad}.error").read_text()
    assert "tracks" not in wh.tables()  # nothing of the bad segment loads
    good = wh.load([track("t-2")])
    assert [r["id"] for r in wh.rows("tracks")] == ["t-2"]
    assert loads(wh) == [good]
    assert wh.pipeline.command("status", {})["failed_segments"] == 1


def test_line_that_is_no_event_quarantines_segment(wh: Warehouse) -> None:
    """A JSON line that can never load (an unknown call type, written by hand or by an older
    version) quarantines its segment like a corrupt line; the loader goes on."""
    bad = wh.seal([b'{"source": "default", "event": {"type": "bogus", "messageId": "b-1"}}\n'])
    wh.pipeline.drain()
    assert wh.spool.sealed() == []
    assert failed(wh) == [f"{bad}.error", f"{bad}{SUFFIX}"]
    good = wh.load([track("t-1")])
    assert loads(wh) == [good]


def test_corrupt_segment_in_a_micro_batch_others_load_together(wh: Warehouse) -> None:
    """Several sealed segments (a backlog after downtime), one of them corrupt: the good ones
    load in one micro-batch (one transaction: one loaded_at), the bad one is quarantined."""
    first = wh.spool_events([track("t-1")])
    bad = wh.seal([spool_line(track("t-2")), b"\xff\xfe not json\n"])
    last = wh.spool_events([track("t-3"), track("t-4")])
    wh.pipeline.drain()
    assert [r["id"] for r in wh.rows("tracks")] == ["t-1", "t-3", "t-4"]
    assert loads(wh) == [first, last]
    times = {r["loaded_at"] for r in wh.query("SELECT loaded_at FROM main._loads")}
    assert len(times) == 1
    assert failed(wh) == [f"{bad}.error", f"{bad}{SUFFIX}"]
    assert wh.spool.sealed() == []


def narrow_qty_column(wh: Warehouse) -> None:
    """A person narrowed clicked.qty to INTEGER by hand, between two runs of the loader."""
    wh.load([track("t-0", qty=1)])
    wh.pipeline.close()
    with duckdb.connect(str(wh.settings.database)) as con:
        con.execute("ALTER TABLE main.clicked ALTER COLUMN qty TYPE INTEGER")
    wh.reopen()


def test_segment_duckdb_rejects_is_quarantined_others_in_its_batch_load(wh: Warehouse) -> None:
    """A micro-batch of three segments where DuckDB rejects a value of one (out of range for
    a column narrowed by hand): the batch rolls back, each segment is retried alone, the bad
    one goes to failed/, the good ones load."""
    narrow_qty_column(wh)
    first = wh.spool_events([track("t-1", qty=2)])
    bad = wh.spool_events([track("t-2", qty=3), track("t-3", qty=2**40)])
    last = wh.spool_events([track("t-4", qty=4)])
    wh.pipeline.drain()
    assert [(r["id"], r["qty"]) for r in wh.rows("clicked")] == [
        ("t-0", 1),
        ("t-1", 2),
        ("t-4", 4),
    ]
    assert [r["id"] for r in wh.rows("tracks")] == ["t-0", "t-1", "t-4"]
    assert loads(wh)[1:] == [first, last]
    assert failed(wh) == [f"{bad}.error", f"{bad}{SUFFIX}"]
    assert wh.spool.sealed() == []


def test_quarantined_segment_moved_back_by_hand_loads_once(wh: Warehouse) -> None:
    """What the README tells an operator: once the cause is fixed (here, the column narrowed
    by hand is widened again), moving a failed segment back into sealed/ loads it, once."""
    narrow_qty_column(wh)
    bad = wh.spool_events([track("t-2", qty=3), track("t-3", qty=2**40)])
    wh.pipeline.drain()
    assert failed(wh) == [f"{bad}.error", f"{bad}{SUFFIX}"]
    wh.con.execute("ALTER TABLE main.clicked ALTER COLUMN qty TYPE BIGINT")
    (wh.spool.failed_dir / f"{bad}{SUFFIX}").rename(wh.spool.sealed_dir / f"{bad}{SUFFIX}")
    (wh.spool.failed_dir / f"{bad}.error").unlink()
    assert wh.pipeline.drain() == 2
    assert [(r["id"], r["qty"]) for r in wh.rows("clicked")] == [
        ("t-0", 1),
        ("t-2", 3),
        ("t-3", 2**40),
    ]
    assert bad in loads(wh)
    assert (failed(wh), wh.spool.sealed()) == ([], [])
    assert wh.pipeline.drain() == 0


def test_recover_seals_open_segment_and_cuts_torn_line(settings: Settings) -> None:
    """Crash mid-write: open/ holds a segment whose last line is torn (never acknowledged).
    Pipeline.open() seals it without the torn tail; drain() loads the whole lines."""
    open_dir = settings.spool_dir / "open"
    open_dir.mkdir(parents=True)
    segment_id = new_segment_id()
    whole = spool_line(track("t-1")) + spool_line(identify("i-1", "u1", "a1"))
    torn = spool_line(track("t-2"))[:40]
    (open_dir / f"{segment_id}{SUFFIX}").write_bytes(whole + torn)
    wh = Warehouse(settings)
    try:
        assert list(open_dir.iterdir()) == []
        assert wh.spool.sealed() == [segment_id]
        assert wh.spool.path(segment_id).read_bytes() == whole
        assert wh.pipeline.drain() == 2
        assert [r["id"] for r in wh.rows("tracks")] == ["t-1"]
        assert [r["id"] for r in wh.rows("identifies")] == ["i-1"]
        assert loads(wh) == [segment_id]
        assert wh.spool.sealed() == []
    finally:
        wh.close()


def fail_after_inserts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inject a disk error late in the transaction: after the rows and users are written."""

    def broken(self: DuckDBWriter, *args: object) -> int:
        raise duckdb.IOException("injected: disk I/O error")

    monkeypatch.setattr(DuckDBWriter, "_insert_discards", broken)


def test_failed_transaction_leaves_nothing_and_retries_once(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error inside the micro-batch's transaction (first load: tables are created in
    it): nothing half-written, no marker, the segment stays sealed; the retry loads it once."""
    before = wh.tables()
    events = [track("t-1", n=1), identify("i-1", "u1", "a1", email="e@x.test")]
    segment_id = wh.spool_events(events)
    with monkeypatch.context() as patch:
        fail_after_inserts(patch)
        with pytest.raises(TransientError):
            wh.pipeline.drain()
    assert wh.tables() == before  # CREATE TABLEs rolled back
    assert loads(wh) == []
    assert wh.count("_message_ids") == 0
    assert wh.merge_rules() == []
    assert wh.spool.sealed() == [segment_id]
    assert failed(wh) == []
    assert wh.pipeline.drain() == 2
    assert [(t, wh.count(t)) for t in ("tracks", "clicked", "identifies", "users")] == [
        ("tracks", 1),
        ("clicked", 1),
        ("identifies", 1),
        ("users", 1),
    ]
    assert wh.merge_rules() == [("anonymous_id", "a1", "user_id", "u1")]
    assert loads(wh) == [segment_id]
    assert wh.spool.sealed() == []


def test_failed_transaction_rolls_back_new_columns_and_users(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error inside a later micro-batch (ADD COLUMN and the users upsert in it): the
    tables, columns and users row are as before; the retry loads the segment once."""
    wh.load([track("t-1", n=1), identify("i-1", "u1", "a1", email="old@x.test")])
    columns = {t: wh.columns(t) for t in ("tracks", "clicked", "identifies", "users")}
    users = wh.rows("users")
    segment_id = wh.spool_events(
        [track("t-2", n=2, added=True), identify("i-2", "u1", "a2", email="new@x.test", plan="x")],
        received_at=RECEIVED + timedelta(minutes=1),
    )
    with monkeypatch.context() as patch:
        fail_after_inserts(patch)
        with pytest.raises(TransientError):
            wh.pipeline.drain()
    assert {t: wh.columns(t) for t in columns} == columns
    assert wh.rows("users") == users
    assert [r["id"] for r in wh.rows("tracks")] == ["t-1"]
    assert wh.spool.sealed() == [segment_id]
    assert wh.pipeline.drain() == 2
    assert [(r["id"], r["added"]) for r in wh.rows("clicked")] == [("t-1", None), ("t-2", True)]
    [user] = wh.rows("users")
    assert (user["email"], user["plan"], user["anonymous_id"]) == ("new@x.test", "x", "a2")
    assert wh.count("identifies") == 2


def test_value_duckdb_rejects_leaves_nothing_and_quarantines(wh: Warehouse) -> None:
    """A segment whose load fails in DuckDB on real data (a value out of range for a column a
    person narrowed to INTEGER): no row of it in any table, no marker; the error is in the
    data, not the disk, so the segment is quarantined (not retried forever) and the next loads.
    """
    narrow_qty_column(wh)
    marked = loads(wh)
    bad = wh.spool_events(
        [track("t-1", qty=5), identify("i-1", "u2", "b1"), track("t-2", qty=2**40)]
    )
    wh.pipeline.drain()  # must not raise: retrying cannot help
    assert [r["id"] for r in wh.rows("clicked")] == ["t-0"]
    assert [r["id"] for r in wh.rows("tracks")] == ["t-0"]
    assert "identifies" not in wh.tables()
    assert loads(wh) == marked
    assert failed(wh) == [f"{bad}.error", f"{bad}{SUFFIX}"]
    good = wh.load([track("t-3", qty=3)])
    assert loads(wh) == [*marked, good]


def test_segments_beyond_load_max_events_load_in_several_batches(settings: Settings) -> None:
    """drain() groups sealed segments up to load_max_events per transaction (a backlog)."""
    wh = Warehouse(dataclasses.replace(settings, load_max_events=2))
    try:
        ids = [wh.spool_events([track(f"t-{i}")]) for i in range(5)]
        assert wh.pipeline.drain() == 5
        batches = wh.query(
            "SELECT loaded_at, list(segment_id ORDER BY segment_id) AS ids FROM main._loads "
            "GROUP BY loaded_at ORDER BY loaded_at"
        )
        assert [b["ids"] for b in batches] == [ids[0:2], ids[2:4], ids[4:5]]
        assert wh.count("tracks") == 5
    finally:
        wh.close()
