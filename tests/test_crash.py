"""Crash matrix on real processes, and a full disk (README, "How it works": exactly once).

A real `loader serve` (or `loader import`) kills itself with SIGKILL at one crash point of
loader/faults.py (LOADER_CRASH_AT / LOADER_CRASH_AFTER) while clients stream events; it is then
restarted without the crash point. Afterwards every event that got a 200 is in the warehouse
exactly once, no event is half loaded, and `loader check` passes. The full disk is a small
tmpfs under the spool: requests get 503 with Retry-After, and once the loader has moved the
spooled events into the warehouse (deleting their segments) requests succeed again by themselves.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from loader.settings import Settings
from tests.conftest import Server, basic, cli as _cli, query as _query

pytestmark = pytest.mark.slow

SENDERS = 4
HTTP_POINTS = {"request": 60, "fsync": 40, "acknowledge": 60}
"""Crash points of the HTTP process (the whole server dies), with LOADER_CRASH_AFTER."""
LOADER_POINTS = {"load": 2, "add_column": 2, "relabel": 1}
"""Crash points of the loader process (the HTTP process keeps answering)."""
ALIAS_AFTER = 1.0
"""Seconds before two acknowledged identities are aliased: long enough for both to be loaded
already, so the alias joins two stored components and the load relabels one (`relabel`)."""


# -- helpers -----------------------------------------------------------------------------------


def _tables(settings: Settings) -> set[str]:
    rows = _query(settings, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'")
    return {name for (name,) in rows}


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (the loader process and its helpers), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(entry.path, "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    """Waits until none of `pids` runs; returns those still running at the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = {pid for pid in pids if _running(pid)}
        if not alive:
            return set()
        time.sleep(0.1)
    return {pid for pid in pids if _running(pid)}


def _log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _health(url: str) -> dict[str, Any]:
    response = httpx.get(url + "/health", timeout=5)
    result: dict[str, Any] = response.json()
    return result


# -- the event stream ----------------------------------------------------------------------


@dataclass
class Refusal:
    at: float
    retry_after: str | None
    text: str


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, by messageId."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, str] = field(default_factory=dict)
    """messageId -> call type, for every event sent (acknowledged or not)."""
    acked: dict[str, str] = field(default_factory=dict)
    identifies: dict[str, tuple[str, str]] = field(default_factory=dict)
    """messageId -> (anonymous_id, user_id)"""
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)
    """messageId -> (previous_id, user_id)"""
    merges: dict[str, tuple[str, str]] = field(default_factory=dict)
    """messageId -> (user_id, email)"""
    accepted: list[tuple[float, int]] = field(default_factory=list)
    """(time the request was sent, its bytes) per acknowledged request"""
    refusals: list[Refusal] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)


def _mid() -> str:
    return str(uuid.uuid4())


def _batch(
    ledger: Ledger, thread: int, k: int, pending: collections.deque[tuple[float, str]], pad: int
) -> list[dict[str, Any]]:
    """Three tracks with a column new every iteration, an identify, a merge, and an alias
    joining two identities acknowledged more than ALIAS_AFTER seconds ago."""
    user = f"u{thread}-{k}"
    events: list[dict[str, Any]] = [
        {
            "type": "track",
            "event": "Tick",
            "userId": user,
            "messageId": _mid(),
            "properties": {"n": i, f"p{k % 100}": k, **({"pad": "x" * pad} if pad else {})},
        }
        for i in range(3)
    ]
    anonymous = f"a{thread}-{k}"
    identify: dict[str, Any] = {
        "type": "identify",
        "userId": user,
        "anonymousId": anonymous,
        "messageId": _mid(),
        "traits": {"plan": "pro", "k": k},
    }
    merge: dict[str, Any] = {
        "type": "merge",
        "userId": user,
        "messageId": _mid(),
        "mergeProperties": [
            {"type": "user_id", "value": user},
            {"type": "email", "value": f"{user}@example.com"},
        ],
    }
    events += [identify, merge]
    with ledger.lock:
        ledger.identifies[identify["messageId"]] = (anonymous, user)
        ledger.merges[merge["messageId"]] = (user, f"{user}@example.com")
        if len(pending) >= 2 and pending[1][0] < time.monotonic() - ALIAS_AFTER:
            (_, previous), (_, later) = pending.popleft(), pending.popleft()
            alias = {
                "type": "alias",
                "userId": later,
                "previousId": previous,
                "messageId": _mid(),
            }
            events.append(alias)
            ledger.aliases[alias["messageId"]] = (previous, later)
        for event in events:
            ledger.sent[event["messageId"]] = event["type"]
    return events


def _stream(
    url: str,
    key: str,
    thread: int,
    ledger: Ledger,
    stop: threading.Event,
    *,
    pad: int,
    may_die: bool,
    timeout: float,
) -> None:
    """Sends batches until `stop`; 503s are noted and retried later. An error without an
    answer ends the stream; it is unexpected unless the server `may_die`."""
    pending: collections.deque[tuple[float, str]] = collections.deque()
    k = 0
    with httpx.Client(timeout=timeout) as client:
        while not stop.is_set():
            events = _batch(ledger, thread, k, pending, pad)
            body = orjson.dumps({"batch": events})
            sent_at = time.monotonic()
            try:
                response = client.post(
                    url + "/v1/batch",
                    content=body,
                    headers={**basic(key), "Content-Type": "application/json"},
                )
            except httpx.HTTPError as exc:
                if not may_die:  # an unanswered request is never acknowledged, but a hang
                    with ledger.lock:
                        ledger.unexpected.append(f"no answer in {timeout} s: {exc!r}")
                return
            now = time.monotonic()
            if response.status_code == 200:
                with ledger.lock:
                    for event in events:
                        ledger.acked[event["messageId"]] = event["type"]
                    ledger.accepted.append((sent_at, len(body)))
                pending.append((now, f"u{thread}-{k}"))
            elif response.status_code == 503:
                with ledger.lock:
                    ledger.refusals.append(
                        Refusal(now, response.headers.get("retry-after"), response.text)
                    )
                time.sleep(0.05)
            else:
                with ledger.lock:
                    ledger.unexpected.append(f"{response.status_code}: {response.text[:200]}")
                return
            k += 1


@contextlib.contextmanager
def _streaming(
    server: Server, ledger: Ledger, pad: int = 0, may_die: bool = False, timeout: float = 10
) -> Iterator[None]:
    assert server.write_key, "the first start prints the default source's write key"
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_stream,
            args=(server.url, server.write_key, n, ledger, stop),
            kwargs={"pad": pad, "may_die": may_die, "timeout": timeout},
            daemon=True,
        )
        for n in range(SENDERS)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a sender did not end"


# -- the end state -------------------------------------------------------------------------


def _some(ids: Any, n: int = 5) -> list[Any]:
    return sorted(ids)[:n]


def _verify(settings: Settings, ledger: Ledger) -> None:
    """Every acknowledged event exactly once, nothing half loaded, spool empty, check OK."""
    acked = {
        kind: {m for m, t in ledger.acked.items() if t == kind} for kind in ledger.sent.values()
    }
    assert acked.get("track"), "no event was acknowledged: the test proved nothing"
    tables = _tables(settings)

    def ids(table: str, columns: str = "id") -> list[tuple[Any, ...]]:
        return _query(settings, f"SELECT {columns} FROM main.{table}") if table in tables else []

    tracks = [row[0] for row in ids("tracks")]
    tick = [row[0] for row in ids("tick")]
    identifies = {
        row[0]: (row[1], row[2]) for row in ids("identifies", "id, anonymous_id, user_id")
    }
    identify_ids = [row[0] for row in ids("identifies")]
    aliases = {row[0]: (row[1], row[2]) for row in ids("aliases", "id, previous_id, user_id")}
    alias_ids = [row[0] for row in ids("aliases")]
    for table, loaded in (
        ("tracks", tracks),
        ("tick", tick),
        ("identifies", identify_ids),
        ("aliases", alias_ids),
    ):
        twice = [m for m, n in collections.Counter(loaded).items() if n > 1]
        assert not twice, f"{len(twice)} events loaded twice into {table}: {_some(twice)}"
        unknown = set(loaded) - set(ledger.sent)
        assert not unknown, f"{table} holds ids never sent: {_some(unknown)}"

    for kind, present in (
        ("track", set(tracks)),
        ("identify", set(identifies)),
        ("alias", set(aliases)),
    ):
        lost = acked.get(kind, set()) - present
        assert not lost, (
            f"{len(lost)} of {len(acked.get(kind, ()))} acknowledged {kind} events lost: "
            f"{_some(lost)}"
        )
    half = set(tracks) ^ set(tick)
    assert not half, (
        f"{len(half)} track events half loaded (in only one of tracks and tick): {_some(half)}"
    )

    users = {user for (user,) in ids("users")}
    unmatched = {user for _, user in identifies.values()} - users
    assert not unmatched, f"{len(unmatched)} identified users have no users row: {_some(unmatched)}"

    rules = set(
        _query(
            settings,
            "SELECT merge_property_1_type, merge_property_1_value, merge_property_2_type, "
            "merge_property_2_value FROM main.rudder_identity_merge_rules",
        )
    )
    merged = {
        m
        for m, (user, email) in ledger.merges.items()
        if ("user_id", user, "email", email) in rules
    }
    lost = acked.get("merge", set()) - merged
    assert not lost, f"{len(lost)} acknowledged merges have no merge rule: {_some(lost)}"

    labels = {
        (kind, value): label
        for kind, value, label in _query(
            settings,
            "SELECT merge_property_type, merge_property_value, rudder_id "
            "FROM main.rudder_identity_mappings",
        )
    }

    def joined(a: tuple[str, str], b: tuple[str, str]) -> bool:
        return a in labels and labels.get(a) == labels.get(b)

    apart = [
        m
        for m, (anon, user) in identifies.items()
        if not joined(("anonymous_id", anon), ("user_id", user))
    ]
    apart += [
        m for m, (prev, user) in aliases.items() if not joined(("user_id", prev), ("user_id", user))
    ]
    apart += [
        m
        for m in merged
        if not joined(("user_id", ledger.merges[m][0]), ("email", ledger.merges[m][1]))
    ]
    assert not apart, f"{len(apart)} loaded events whose ids are not one person: {_some(apart)}"

    (keys,) = _query(settings, "SELECT count(*) FROM main._message_ids")[0]
    rows = len(tracks) + len(identifies) + len(aliases) + len(merged)
    assert keys == rows, f"{keys} exactly-once keys for {rows} loaded events (half-loaded ones)"
    (marked,) = _query(settings, "SELECT coalesce(sum(events), 0) FROM main._loads")[0]
    assert marked == keys, f"load markers count {marked} events, the warehouse holds {keys}"

    left = {
        folder: sorted(p.name for p in (settings.spool_dir / folder).glob("*"))
        for folder in ("open", "sealed", "failed")
    }
    assert left == {"open": [], "sealed": [], "failed": []}, f"spool not drained: {left}"
    checked = _cli(settings, "check")
    assert checked.returncode == 0 and checked.stdout.startswith("OK"), (
        f"loader check failed after recovery:\n{checked.stdout}{checked.stderr}"
    )


def _recover(settings: Settings, log: Path) -> None:
    """Start again without a crash point (recovery loads the leftovers), flush, stop."""
    server = Server(settings, log)
    server.start()
    try:
        flushed = _cli(settings, "flush")
        assert flushed.returncode == 0, flushed.stderr
    finally:
        server.stop()
    assert server.process is not None, "started"
    assert server.process.returncode in (0, -signal.SIGTERM), _log_tail(log)  # a clean stop


def _settings(tmp_path: Path, segment_max_age: float = 0.2) -> Settings:
    return Settings(
        database=tmp_path / "w.duckdb",
        spool_dir=tmp_path / "spool",
        segment_max_age=segment_max_age,
    )


# -- the crash matrix ----------------------------------------------------------------------


@pytest.mark.parametrize("point", sorted(HTTP_POINTS))
def test_http_process_killed_at_crash_point_loses_nothing(point: str, tmp_path: Path) -> None:
    """SIGKILL of the HTTP process mid-request, mid-append (before fsync) or between fsync
    and the 200; the orphaned loader ends by itself; the restart loads what was spooled."""
    settings = _settings(tmp_path)
    log = tmp_path / "server.log"
    server = Server(
        settings, log, LOADER_CRASH_AT=point, LOADER_CRASH_AFTER=str(HTTP_POINTS[point])
    )
    server.start()
    assert server.process is not None
    helpers = _descendants(server.process.pid)
    assert helpers, "no loader process runs beside the HTTP process"
    ledger = Ledger()
    try:
        with _streaming(server, ledger, may_die=True):
            deadline = time.monotonic() + 60
            while server.process.poll() is None and time.monotonic() < deadline:
                assert not ledger.unexpected, ledger.unexpected
                time.sleep(0.05)
            code = server.process.poll()
    finally:
        server.stop()
    assert code == -9, (
        f"the server did not die by SIGKILL at {point!r} (exit {code}); log:\n{_log_tail(log)}"
    )
    assert ledger.acked_count() > 0, "nothing was acknowledged before the crash"
    assert not ledger.unexpected, ledger.unexpected
    stuck = _wait_gone(helpers, 60)
    assert not stuck, f"the orphaned loader {stuck} did not end after the HTTP process died"

    _recover(settings, tmp_path / "restart.log")
    _verify(settings, ledger)


@pytest.mark.parametrize("point", sorted(LOADER_POINTS))
def test_loader_killed_at_crash_point_loses_nothing(point: str, tmp_path: Path) -> None:
    """SIGKILL of the loader process inside a load transaction, after an ADD COLUMN or after an
    identity relabelling: nothing of that transaction stays; the HTTP process goes on
    acknowledging into the spool, /health says the loader is down, and the restart loads it."""
    settings = _settings(tmp_path)
    log = tmp_path / "server.log"
    server = Server(
        settings, log, LOADER_CRASH_AT=point, LOADER_CRASH_AFTER=str(LOADER_POINTS[point])
    )
    server.start()
    assert server.process is not None
    ledger = Ledger()
    health: dict[str, Any] = {}
    try:
        with _streaming(server, ledger):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and server.process.poll() is None:
                assert not ledger.unexpected, ledger.unexpected
                health = _health(server.url)
                if not health["loader"]["running"]:
                    break
                time.sleep(0.1)
            assert server.process.poll() is None, f"the HTTP process died too:\n{_log_tail(log)}"
            assert not health.get("loader", {}).get("running", True), (
                f"the loader never died at {point!r}: the crash point was not reached "
                f"({ledger.acked_count()} events acknowledged); log:\n{_log_tail(log)}"
            )
            assert health["status"] == "degraded", health
            at_death = ledger.acked_count()
            deadline = time.monotonic() + 10
            while ledger.acked_count() < at_death + 100 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ledger.acked_count() >= at_death + 100, (
                "the HTTP process stopped acknowledging when the loader died"
            )
            died = log.read_text(errors="replace")  # before the shutdown's own messages
    finally:
        server.stop()
    assert not ledger.unexpected, ledger.unexpected
    assert "The loader process ended" in died, _log_tail(log)
    assert "The loader stopped" not in died, f"the loader failed, not killed:\n{_log_tail(log)}"

    _recover(settings, tmp_path / "restart.log")
    _verify(settings, ledger)


# -- import ----------------------------------------------------------------------------------


def test_import_killed_between_batches_resumes_exactly_once(tmp_path: Path) -> None:
    """`loader import` dies by SIGKILL before its third micro-batch; the re-run resumes from
    the committed checkpoint and every line of the file is loaded once."""
    settings = _settings(tmp_path)
    path = tmp_path / "history.ndjson"
    lines = []
    for n in range(5000):
        if n % 10 == 0:
            event: dict[str, Any] = {
                "type": "identify",
                "userId": f"u{n}",
                "anonymousId": f"a{n}",
                "traits": {"n": n},
            }
        else:
            event = {
                "type": "track",
                "event": "Imported",
                "userId": f"u{n - n % 10}",
                "properties": {"n": n, f"p{n // 500}": n},
            }
        event.update(messageId=f"imp-{n}", timestamp="2025-01-02T03:04:05.000Z")
        lines.append(orjson.dumps(event))
    path.write_bytes(b"\n".join(lines) + b"\n")
    batch = ["import", str(path), "--load-max-events", "500"]

    crashed = _cli(settings, *batch, LOADER_CRASH_AT="import", LOADER_CRASH_AFTER="3")
    assert crashed.returncode == -9, (
        f"import did not die by SIGKILL (exit {crashed.returncode}):\n{crashed.stderr[-3000:]}"
    )
    counted = "SELECT (SELECT count(*) FROM main.tracks) + (SELECT count(*) FROM main.identifies)"
    assert _query(settings, counted) == [(1000,)], "two batches of 500 commit before the crash"

    resumed = _cli(settings, *batch)
    assert resumed.returncode == 0, resumed.stderr
    assert "4000 events loaded" in resumed.stdout and "1 resumed" in resumed.stdout, resumed.stdout
    again = _cli(settings, *batch)
    assert again.returncode == 0, again.stderr
    assert "0 events loaded" in again.stdout and "1 already imported" in again.stdout, again.stdout

    tracks = _query(settings, "SELECT count(*), count(DISTINCT id) FROM main.tracks")
    assert tracks == [(4500, 4500)]
    assert _query(settings, "SELECT count(*), count(DISTINCT id) FROM main.imported") == [
        (4500, 4500)
    ]
    assert _query(settings, "SELECT count(*), count(DISTINCT id) FROM main.identifies") == [
        (500, 500)
    ]
    assert _query(settings, "SELECT count(*) FROM main._message_ids") == [(5000,)]
    checked = _cli(settings, "check")
    assert checked.returncode == 0 and checked.stdout.startswith("OK"), (
        checked.stdout + checked.stderr
    )


# -- disk full -------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at `path`, unmounted at the end; skips the test where mounting is denied."""
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("needs Linux and mount(8) for a small tmpfs")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        unmounted = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@dataclass(frozen=True)
class Disk:
    options: str
    """tmpfs mount options"""
    min_free: int
    segment_max_age: float
    resumed: int
    """Bytes acknowledged in requests sent after the first 503, to count as resumed."""


DISKS = {
    # The free-space check refuses first; writes may still hit ENOSPC between its looks.
    "min_free_bytes": Disk("size=512k", 65536, 2.0, 1024 * 1024),
    # No free-space check: a real ENOSPC in the middle of an append, cut back and refused.
    "enospc_write": Disk("size=512k", 0, 2.0, 1024 * 1024),
    # Room for data but for one segment file only (5 inodes are the folders): ENOSPC when
    # the next segment is created, until the loader has deleted the sealed one.
    "enospc_create": Disk("size=4m,nr_inodes=6", 0, 0.2, 128 * 1024),
}


@pytest.mark.parametrize("disk_name", sorted(DISKS))
def test_disk_full_answers_503_and_resumes_by_itself(disk_name: str, tmp_path: Path) -> None:
    """The spool's disk is a small tmpfs and segments are sealed late, so the spool fills it
    (or, with few inodes, cannot create its next segment). Requests then get 503 with
    Retry-After, never a hang; once the loader has loaded and deleted a segment, requests
    succeed again without anyone doing anything. Nothing acknowledged is lost."""
    disk = DISKS[disk_name]
    with _tmpfs(tmp_path / "disk", disk.options) as root:
        settings = Settings(
            database=tmp_path / "w.duckdb",
            spool_dir=root / "spool",
            segment_max_age=disk.segment_max_age,
        )
        log = tmp_path / "server.log"
        server = Server(settings, log, LOADER_MIN_FREE_BYTES=str(disk.min_free))
        server.start()
        ledger = Ledger()
        after = 0
        try:
            with _streaming(server, ledger, pad=1000):
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline and not ledger.unexpected:
                    with ledger.lock:
                        first = ledger.refusals[0].at if ledger.refusals else None
                        after = sum(size for at, size in ledger.accepted if first and at > first)
                    if after > disk.resumed:
                        break
                    time.sleep(0.1)
            assert not ledger.unexpected, (
                f"requests failed or hung instead of a 503: {ledger.unexpected[:3]}; "
                f"log:\n{_log_tail(log)}"
            )
            flushed = _cli(settings, "flush")
            assert flushed.returncode == 0, flushed.stderr
        finally:
            server.stop()
        assert ledger.refusals, f"the disk never filled up; log:\n{_log_tail(log)}"
        for refusal in ledger.refusals:
            assert refusal.retry_after and int(refusal.retry_after) > 0, refusal
            assert refusal.text.startswith("Service unavailable: "), refusal
        reasons = " ".join(r.text for r in ledger.refusals)
        if disk.min_free == 0:
            assert "disk full" in reasons, reasons[:500]
        assert after > disk.resumed, (
            f"requests sent after the first 503 got only {after} bytes acknowledged in 40 s: "
            f"the service did not resume by itself; log:\n{_log_tail(log)}"
        )
        _verify(settings, ledger)
