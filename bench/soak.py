"""Soak benchmark: a steady open-loop load on our server for minutes; does memory stay flat?

Starts `python -m api serve` on 127.0.0.1 with a fresh database and spool. Unless --rate is
given, it first measures the max: --connections keep-alive connections send `/v1/batch` calls of
10 events (unique messageIds) back to back for 1 + 10 s, then the loader drains what they sent.
The end-to-end max is the events acknowledged / (11 s + the drain time). Then requests of 10
events are paced at --fraction of that max (--base http: of the acknowledged rate alone) for
--duration s: open loop, request j is due at start + j / request rate and a free connection
sends it; at most 2 x --connections requests wait, and requests made late by a stall go out at
once. The events are tracks over 4 event names with varying properties, and 10% identifies.
At the end the script stops sending, runs `python -m api flush`, stops the server (SIGTERM) and
counts the distinct ids loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.http_ingest import (  # noqa: E402
    HOST,
    drain,
    free_port,
    http_request,
    read_response,
    stop,
    track_event,
    wait_healthy,
)
from bench.load import process_tree_mb  # noqa: E402

PER_REQUEST = 10
DUCKDB_MEMORY = re.compile(r"^loader_duckdb_memory_bytes (\S+)$", re.MULTILINE)
NAMES = ("Product Viewed", "Product Added", "Checkout Started", "Order Completed")
TRACK: dict[str, Any] = track_event(0)  # type: ignore[assignment]
IDENTIFY = {k: v for k, v in TRACK.items() if k not in ("event", "properties", "type")}


def body(prefix: str, first: int) -> bytes:
    """A /v1/batch body: events first..first+9 (messageId `{prefix}-{i}`), the last an identify."""
    events = []
    for i in range(first, first + PER_REQUEST):
        user = f"user-{i % 5000}"
        if i % 10 == 9:
            traits = {"email": f"{user}@example.com", "plan": ("free", "pro")[i % 2], "n": i}
            ids = {"type": "identify", "messageId": f"{prefix}-{i}", "userId": user}
            events.append(IDENTIFY | ids | {"traits": traits})
            continue
        props = {"product_id": f"SKU-{i % 997}", "price": i % 400 + 0.95, "quantity": i % 5 + 1}
        event = {"messageId": f"{prefix}-{i}", "userId": user, "event": NAMES[i % len(NAMES)]}
        events.append(TRACK | event | {"properties": TRACK["properties"] | props})
    return orjson.dumps({"batch": events, "sentAt": "2024-05-14T09:21:37.530Z"})


@dataclass
class Totals:
    sent: int = 0  # events in requests handed to a connection
    ok: int = 0  # events in 200 answers
    failed: Counter[str] = field(default_factory=Counter)  # events by status or error
    window_ok: int = 0  # these three cover the current report interval only
    latencies: list[float] = field(default_factory=list)
    lag: float = 0.0  # worst delay of a request behind its schedule
    unanswered: list[int] = field(default_factory=list)  # first index of each request not 200


Queue = asyncio.Queue[tuple[int, bytes] | None]  # (index of the first event, request)


async def worker(port: int, queue: Queue, tot: Totals) -> None:
    """One keep-alive connection sending what the queue hands it; reconnects after a close."""
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while (item := await queue.get()) is not None:
        first, request = item
        t0, status, keep = time.perf_counter(), 0, False
        tot.sent += PER_REQUEST
        try:
            conn = conn or await asyncio.open_connection(HOST, port)
            conn[1].write(request)
            status, _, keep = await asyncio.wait_for(read_response(conn[0]), timeout=30)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:  # TimeoutError too
            tot.failed[type(exc).__name__] += PER_REQUEST
        if status == 200:
            tot.ok += PER_REQUEST
            tot.window_ok += PER_REQUEST
            tot.latencies.append(time.perf_counter() - t0)
        else:
            tot.unanswered.append(first)
        if status not in (0, 200):
            tot.failed[str(status)] += PER_REQUEST
        if not keep and conn is not None:
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()


async def measure_max(port: int, key: str, conns: int, seconds: float) -> tuple[float, int]:
    """Closed loop: each connection sends its next batch once the last one is answered.

    Returns events/s acknowledged after the first second, and all events acknowledged."""
    queue: Queue = asyncio.Queue(maxsize=conns)
    tot = Totals()
    workers = [asyncio.create_task(worker(port, queue, tot)) for _ in range(conns)]
    start, n, counted = time.perf_counter(), 0, -1
    while (now := time.perf_counter()) < start + 1 + seconds:
        if counted < 0 and now >= start + 1:
            counted = tot.ok  # the warm-up second is not counted
        await queue.put((n, http_request("/v1/batch", body("max", n), key)))
        n += PER_REQUEST
    done = tot.ok
    for _ in workers:
        await queue.put(None)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
    return (done - max(0, counted)) / seconds, tot.ok


async def soak(
    args: argparse.Namespace, port: int, key: str, pid: int, rate: float
) -> tuple[Totals, list[list[float]]]:
    """Paced batches at `rate` events/s for args.duration s, a report line every args.interval s."""
    queue: Queue = asyncio.Queue(maxsize=2 * args.connections)
    tot, rss_series, done = Totals(), list[list[float]](), asyncio.Event()
    workers = [asyncio.create_task(worker(port, queue, tot)) for _ in range(args.connections)]
    print(
        f"{'elapsed':>7} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'lag ms':>7} "
        f"{'rss MB (server + children)':>30} {'duckdb MB':>9} {'backlog':>8} {'failed':>6}",
        flush=True,
    )

    async def report(client: httpx.AsyncClient, start: float) -> None:
        """A line at each tick; once all is answered a last one (if over 1 s since the last)."""
        last, k = start, 1
        while not done.is_set() or time.perf_counter() - last > 1:
            tick = start + k * args.interval - time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), max(0.0, tick))
            now, ok, lat, lag = time.perf_counter(), tot.window_ok, tot.latencies, tot.lag
            tot.window_ok, tot.latencies, tot.lag = 0, [], 0.0
            k = max(k, int((now - start) / args.interval)) + 1  # skip ticks a stall made us miss
            lat = sorted(lat) or [float("nan")]
            sizes = process_tree_mb(pid, "VmRSS")
            rss_series.append(sizes)
            try:
                spool = (await client.get(f"http://{HOST}:{port}/health")).json()["spool"]
                backlog = f"{spool['backlog_segments']}/{spool['backlog_bytes'] / 1e6:.0f}MB"
                failed = str(spool["failed_segments"])
                metrics = (await client.get(f"http://{HOST}:{port}/metrics")).text
                found = DUCKDB_MEMORY.search(metrics)
                duckdb_mb = f"{float(found.group(1)) / 1e6:.0f}" if found else "?"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                backlog, failed, duckdb_mb = type(exc).__name__, "?", "?"
            rss = f"{sum(sizes):.0f} ({' + '.join(f'{s:.0f}' for s in sizes)})"
            p50, p99 = 1000 * lat[len(lat) // 2], 1000 * lat[int(len(lat) * 0.99)]
            when = "tail" if done.is_set() else f"{now - start:.0f}s"  # tail: after --duration
            print(
                f"{when:>7} {ok / (now - last):9.0f} {p50:7.1f} {p99:7.1f} "
                f"{1000 * lag:7.0f} {rss:>30} {duckdb_mb:>9} {backlog:>8} {failed:>6}",
                flush=True,
            )
            last = now

    async with httpx.AsyncClient(timeout=10) as client:
        start = time.perf_counter()
        reporter = asyncio.create_task(report(client, start))
        n = 0  # after a stall the schedule is kept: late requests go out at once (open loop)
        while (due := start + n / rate) < start + args.duration:
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            await queue.put((n, http_request("/v1/batch", body("soak", n), key)))
            tot.lag = max(tot.lag, time.perf_counter() - due)
            n += PER_REQUEST
        for _ in workers:
            await queue.put(None)
        await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
        done.set()
        await asyncio.wait_for(reporter, timeout=30)
    return tot, rss_series


def write_key(server: subprocess.Popen[bytes], port: int) -> str:
    """The last line the server printed on stdout once /health answers."""
    lines: list[str] = []
    out = server.stdout
    assert out is not None
    threading.Thread(target=lambda: lines.extend(ln.decode() for ln in out), daemon=True).start()
    wait_healthy(port, server)
    time.sleep(0.3)  # the key is printed before /health answers
    if not (keys := [ln.strip() for ln in lines if ln.strip()]):
        raise RuntimeError("the server printed no write key")
    return keys[-1]


def shutdown(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait (stop() kills after 60 s); then kill whatever is left of its group."""
    stop([server])
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, signal.SIGKILL)


def loaded(database: Path, unanswered: list[int]) -> tuple[int, int, int]:
    """Soak events in main.tracks + main.identifies: distinct ids, rows, and ids loaded among
    the events of requests that got no 200."""
    import duckdb

    ids = [f"soak-{first + k}" for first in unanswered for k in range(PER_REQUEST)]
    both = "select id from main.tracks union all select id from main.identifies"
    with duckdb.connect(str(database), read_only=True) as con:
        sql = f"select count(distinct id), count(*) from ({both}) where id like 'soak-%'"
        distinct, rows = con.execute(sql).fetchone() or (0, 0)
        sql = f"select count(distinct id) from ({both}) where list_contains(?, id)"
        stray = (con.execute(sql, [ids]).fetchone() or (0,))[0] if ids else 0
    return distinct, rows, stray


def medians(lines: list[list[float]]) -> list[float]:
    """Median RSS of the tree, then of each process (by position; the HTTP process first)."""
    width = max(map(len, lines))
    columns = [[sizes[i] if i < len(sizes) else 0.0 for sizes in lines] for i in range(width)]
    return [statistics.median(map(sum, lines)), *map(statistics.median, columns)]


def run(args: argparse.Namespace, work: Path) -> None:
    port = free_port()
    env = {**os.environ, "LOADER_DATABASE": str(work / "soak.duckdb"), "LOADER_HOST": HOST}
    env |= {"LOADER_SPOOL_DIR": str(work / "spool"), "LOADER_PORT": str(port)}
    with (work / "server.stderr").open("wb") as log:  # start_new_session: Ctrl-C reaches only us
        command = [sys.executable, "-m", "api", "serve"]
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
    try:
        key = write_key(server, port)
        rate = args.rate
        if not rate:
            top, total = asyncio.run(measure_max(port, key, args.connections, 10))
            waited, _ = drain(port, 300)
            print(
                f"max: {top:.0f} events/s acknowledged (10 s closed loop, {args.connections} "
                f"connections, {PER_REQUEST} events/request); the loader needed {waited:.0f} s "
                f"more: end to end {total / (11 + waited):.0f} events/s"
            )
            rate = args.fraction * (top if args.base == "http" else total / (11 + waited))
        print(
            f"soak: {rate:.0f} events/s ({rate / PER_REQUEST:.0f} req/s) for {args.duration:g} s, "
            f"{args.connections} connections, server pid {server.pid}",
            flush=True,
        )
        tot, series = asyncio.run(soak(args, port, key, server.pid, rate))
        command = [sys.executable, "-m", "api", "flush"]
        flushed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=600)
        print(f"flush: {(flushed.stdout or flushed.stderr).decode().strip()}")
    except Exception:
        sys.stderr.write((work / "server.stderr").read_text(errors="replace")[-3000:])
        raise
    finally:
        shutdown(server)
    distinct, rows, stray = loaded(work / "soak.duckdb", tot.unanswered)
    same = tot.sent == tot.ok == distinct == rows
    print(
        f"\nevents sent {tot.sent}, acknowledged {tot.ok}, non-200/errors "
        f"{dict(tot.failed) or 'none'}"
    )
    print(
        f"events sent = acknowledged = distinct rows loaded: {tot.sent} = {tot.ok} = {distinct} "
        f"(rows {rows})  {'OK' if same else 'MISMATCH'}"
    )
    print(
        f"acknowledged events not loaded: {tot.ok - (distinct - stray)}; events without a 200 "
        f"loaded anyway: {stray} of {tot.sent - tot.ok} (stored, but the answer was lost)"
    )
    if third := len(series) // 3:
        (rss0, *each0), (rss1, *each1) = medians(series[:third]), medians(series[-third:])
        pairs = zip(each0, each1, strict=False)
        parts = ", ".join(f"{b - a:+.0f} MB ({(b - a) / a:+.0%})" for a, b in pairs if a)
        print(
            f"rss (server + children): median of first {third} lines {rss0:.0f} MB, last {third}"
            f" {rss1:.0f} MB: growth {rss1 - rss0:+.0f} MB ({rss1 / rss0 - 1:+.1%})  "
            f"{'FLAT' if rss1 / rss0 < 1.1 else 'GROWING'} (flat: < +10%); per process {parts}"
        )


EPILOG = """output:
  max ...     the closed-loop rate (events in 200 answers per second), the loader's extra drain
              time and the end-to-end rate; not shown with --rate.
  one line per --interval:
    elapsed   seconds since the soak started
    events/s  events in 200 answers during the interval / its length
    p50, p99  latency of the interval's 200 answers (request written -> whole answer read)
    lag ms    worst delay of a request's queueing behind its schedule (the generator or the
              bounded queue falling behind; ~0 when the rate is sustained)
    rss MB    VmRSS of the server's process tree: total (HTTP process + loader + other children)
    duckdb MB DuckDB's own memory in the loader after its last load (mostly cached blocks,
              capped by --duckdb-memory-limit), from GET /metrics
    backlog   sealed spool segments / bytes waiting to load, from GET /health
    failed    failed spool segments
  A last line, `tail`, covers what is answered after --duration (a stall delays requests).
  at the end: events sent, acknowledged (200), non-200 answers and errors (client timeout 30 s)
  by status; the flush result; events sent = acknowledged = distinct ids loaded in main.tracks
  and main.identifies (rows also counted: more rows than ids would be duplicates): OK/MISMATCH;
  acknowledged events missing from the warehouse (must be 0), and events without a 200 that
  were loaded anyway; the median RSS of the first third of the lines against the last third:
  FLAT if < +10% (the loader's RSS follows its batch size, so a growing backlog inflates it).
  The workdir (database, spool, server.stderr) is removed unless --workdir is given.
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--duration", type=float, default=600, help="seconds of steady load (default 600)")
    add("--interval", type=float, default=30, help="seconds between report lines (default 30)")
    add("--fraction", type=float, default=0.5, help="share of the measured max (default 0.5)")
    add("--rate", type=float, default=0, help="events/s; skips the max measurement")
    add(
        "--base",
        choices=("end-to-end", "http"),
        default="end-to-end",
        help="which max --fraction applies to: acknowledged and loaded (what the server can "
        "sustain; default) or acknowledged only (the loader then falls behind)",
    )
    add("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    add("--workdir", type=Path, help="kept directory for database and spool (default: temp)")
    args = parser.parse_args()
    if min(args.duration, args.interval, args.connections, args.fraction) <= 0 or args.rate < 0:
        parser.error("--duration, --interval, --fraction, --connections must be > 0, --rate >= 0")
    return args


def main() -> None:
    args = parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # clean up on each
        signal.signal(sig, signal.default_int_handler)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    if (work / "soak.duckdb").exists():
        sys.exit(f"{work} holds a previous run; give an empty --workdir")
    try:
        run(args, work)
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
