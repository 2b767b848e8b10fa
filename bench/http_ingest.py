"""HTTP ingest benchmark: a bare Starlette app (the ceiling) and our server, side by side.

Both run as separate processes on 127.0.0.1 (uvicorn, 1 worker, uvloop, httptools, no access
log). A light asyncio load generator keeps --connections keep-alive connections busy for
--duration seconds per scenario (after a ~1 s warm-up that is not counted), with single
`/v1/track` calls (~1 KB browser-SDK-like event) and `/v1/batch` calls of 100 such events.
Scenarios are interleaved (bare-track, ours-track, bare-batch, ours-batch) and repeated --rounds
times; medians across rounds are printed with the ratio ours/bare and the targets (single calls:
req/s >= 0.5 of bare; batches: events/s >= 0.5 of bare). Our server runs with a fresh temporary
database and spool dir, fsync on; after each of its scenarios the script waits (at most
--drain-timeout s) until its loader has emptied the sealed backlog, so the next bare scenario does
not share the CPU with it. The script only prints figures: it never fails because of one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import itertools
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BATCH_SIZE = 100
Medians = dict[tuple[str, str], dict[str, float]]


def bare_app_main(port: int) -> None:
    """The ceiling: parse the JSON body, answer 200 OK. Uvicorn set up as our server is."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def ingest(request: Request) -> Response:
        orjson.loads(await request.body())
        return PlainTextResponse("OK")

    async def health(request: Request) -> Response:
        return PlainTextResponse("OK")

    routes = [Route(path, ingest, methods=["POST"]) for path in ("/v1/track", "/v1/batch")]
    app = Starlette(routes=[*routes, Route("/health", health, methods=["GET"])])
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


# A track call as the browser SDK sends it (~1 KB encoded); each event gets its own messageId.
TRACK_EVENT = """{
 "type": "track", "event": "Product Added", "userId": "user-48213",
 "anonymousId": "6f1c2b9e-2d4a-4c1e-9a77-0b8f5e3c1d42",
 "messageId": "0d9a7c2e-5b1f-4e8a-b3c6-{i:012d}", "channel": "web",
 "timestamp": "2024-05-14T09:21:37.512Z", "sentAt": "2024-05-14T09:21:37.530Z",
 "context": {
  "library": {"name": "RudderLabs JavaScript SDK", "version": "3.0.3"},
  "page": {"path": "/products/trail-shoe", "referrer": "https://www.google.com/",
   "search": "?color=blue", "title": "Trail Shoe - Example Store",
   "url": "https://shop.example.com/products/trail-shoe?color=blue"},
  "userAgent": "USER_AGENT",
  "locale": "en-US", "timezone": "Europe/Berlin",
  "screen": {"width": 1920, "height": 1080, "density": 1, "innerWidth": 1600, "innerHeight": 900},
  "traits": {"email": "jane.doe@example.com", "plan": "pro", "company": "Acme"}},
 "properties": {"product_id": "SKU-1042", "name": "Trail Shoe", "category": "Footwear",
  "price": 89.95, "quantity": 1, "currency": "EUR", "in_stock": true, "variant": "blue/42"}
}"""


USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def track_event(i: int) -> object:
    text = TRACK_EVENT.replace("{i:012d}", f"{i:012d}").replace("USER_AGENT", USER_AGENT)
    return orjson.loads(text)


def http_request(path: str, body: bytes, write_key: str) -> bytes:
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Result:
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, bytes] = field(default_factory=dict)
    cpu: float = 0.0  # load generator CPU seconds per wall second


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readline()
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() != "close"


async def connection(port: int, request: bytes, start: float, end: float, res: Result) -> None:
    """One keep-alive connection, request after request; reconnects after a close or an error."""
    clock = time.perf_counter
    while clock() < end:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            keep = True
            while keep and (t0 := clock()) < end:
                writer.write(request)
                status, body, keep = await read_response(reader)
                t1 = clock()
                if start <= t0 and t1 <= end:
                    if status == 200:
                        res.ok += 1
                        res.latencies.append(t1 - t0)
                    else:
                        res.errors[str(status)] += 1
                        res.samples.setdefault(str(status), body[:200])
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            res.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.05)
        finally:
            if writer is not None:
                writer.close()


async def load(port: int, request: bytes, conns: int, warmup: float, duration: float) -> Result:
    res = Result()
    start = time.perf_counter() + warmup
    cpu0 = time.process_time()
    await asyncio.gather(
        *(connection(port, request, start, start + duration, res) for _ in range(conns))
    )
    res.cpu = (time.process_time() - cpu0) / (warmup + duration)
    return res


def run_load(port: int, request: bytes, args: argparse.Namespace) -> Result:
    coro = load(port, request, args.connections, args.warmup, args.duration)
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no /health answer on port {port} within {timeout:.0f} s")


def drain(port: int, timeout: float) -> tuple[float, int]:
    """Wait until our sealed backlog is empty twice in a row: (seconds, failed segments)."""
    t0, empty, failed = time.monotonic(), 0, 0
    while empty < 2 and time.monotonic() - t0 < timeout:
        time.sleep(1.1)  # the server refreshes its backlog figure about once a second
        try:
            spool = httpx.get(f"http://{HOST}:{port}/health", timeout=5).json()["spool"]
        except (httpx.HTTPError, ValueError, KeyError):
            continue
        empty, failed = empty + 1 if spool["backlog_segments"] == 0 else 0, spool["failed_segments"]
    return time.monotonic() - t0, failed


def start_servers(tmp: Path) -> tuple[list[subprocess.Popen[bytes]], int, int, str]:
    bare_port, ours_port = free_port(), free_port()
    bare = subprocess.Popen([sys.executable, __file__, "--bare-app", str(bare_port)])
    env = {
        **os.environ,
        "LOADER_DATABASE": str(tmp / "bench.duckdb"),
        "LOADER_HOST": HOST,
        "LOADER_SPOOL_DIR": str(tmp / "spool"),
        "LOADER_PORT": str(ours_port),
    }
    stderr = (tmp / "server.stderr").open("wb")
    ours = subprocess.Popen(
        [sys.executable, "-m", "api", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    lines: list[str] = []
    assert ours.stdout is not None
    out = ours.stdout
    threading.Thread(
        target=lambda: lines.extend(ln.decode().strip() for ln in out), daemon=True
    ).start()
    procs = [bare, ours]
    try:
        wait_healthy(bare_port, bare)
        wait_healthy(ours_port, ours)
        time.sleep(0.3)  # the key is printed before /health answers; let the reader catch up
        keys = [ln for ln in lines if ln]
        if not keys:
            raise RuntimeError("our server printed no write key")
    except RuntimeError:
        stop(procs)
        sys.stderr.write((tmp / "server.stderr").read_text(errors="replace")[-4000:])
        raise
    return procs, bare_port, ours_port, keys[-1]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def figures(res: Result, duration: float, events_per_request: int) -> dict[str, float]:
    lat = sorted(res.latencies) or [float("nan")]
    return {
        "req/s": res.ok / duration,
        "events/s": res.ok * events_per_request / duration,
        "p50 ms": 1000 * lat[len(lat) // 2],
        "p99 ms": 1000 * lat[int(len(lat) * 0.99)],
    }


EPILOG = """output:
  One line per round and scenario: req/s and events/s count the 200 answers completed inside the
  measured window; p50/p99 are per-request latencies (request written -> whole answer read);
  client cpu is the load generator's CPU time per wall second (it shares the 2 cores). Non-200
  answers and connection errors are counted and printed with a sample body. Then the medians
  across rounds, and ours/bare with the targets: PASS or BELOW (printed, never asserted).
  Our server is `python -m api serve`, run from the repository root by this interpreter, with
  LOADER_DATABASE/LOADER_SPOOL_DIR in a temporary directory; its write key is the last line it
  prints on stdout.
"""
OPTIONS: tuple[tuple[str, type, float, str], ...] = (
    ("--duration", float, 10, "seconds measured per scenario"),
    ("--warmup", float, 1, "seconds of load before measuring, not counted"),
    ("--connections", int, 64, "concurrent keep-alive connections"),
    ("--rounds", int, 3, "times the four scenarios run; medians across rounds are shown"),
    (
        "--drain-timeout",
        float,
        120,
        "max seconds to wait for our loader after each of our scenarios (0: do not wait)",
    ),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for flag, kind, default, text in OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    parser.add_argument("--bare-app", type=int, metavar="PORT", help="internal: serve the bare app")
    return parser.parse_args()


def run_rounds(args: argparse.Namespace, track: bytes, batch: bytes) -> Medians:
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmpdir:
        procs, bare_port, ours_port, key = start_servers(Path(tmpdir))
        try:
            for rnd, (kind, path, body, n), (server, port) in itertools.product(
                range(1, args.rounds + 1),
                (("track", "/v1/track", track, 1), ("batch", "/v1/batch", batch, BATCH_SIZE)),
                (("bare", bare_port), ("ours", ours_port)),
            ):
                res = run_load(port, http_request(path, body, key), args)
                fig = figures(res, args.duration, n)
                runs.setdefault((kind, server), []).append(fig)
                drained = ""
                if server == "ours" and args.drain_timeout > 0:
                    waited, failed = drain(port, args.drain_timeout)
                    drained = f"  drained in {waited:.1f} s" + (
                        f" ({failed} failed segments so far)" if failed else ""
                    )
                print(
                    f"round {rnd} {server} {kind}: {fig['req/s']:7.0f} req/s "
                    f"{fig['events/s']:7.0f} ev/s  p50 {fig['p50 ms']:6.1f} ms  "
                    f"p99 {fig['p99 ms']:6.1f} ms  client cpu {res.cpu:4.0%}{drained}",
                    flush=True,
                )
                for code, count in res.errors.items():
                    print(f"    non-200: {code} x{count} {res.samples.get(code, b'')!r}")
        finally:
            stop(procs)
    return {
        k: {m: statistics.median(f[m] for f in figs) for m in figs[0]} for k, figs in runs.items()
    }


def report(medians: Medians, rounds: int) -> None:
    print(f"\nmedians of {rounds} round(s):")
    print(f"{'scenario':12} {'req/s':>9} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for (kind, server), m in medians.items():
        print(
            f"{server + ' ' + kind:12} {m['req/s']:9.0f} {m['events/s']:9.0f} "
            f"{m['p50 ms']:8.1f} {m['p99 ms']:8.1f}"
        )
    print()
    for kind, metric, label in (
        ("track", "req/s", "single calls"),
        ("batch", "events/s", "batches"),
    ):
        bare, ours = medians[(kind, "bare")][metric], medians[(kind, "ours")][metric]
        ratio = ours / bare if bare else float("nan")
        verdict = "PASS" if ratio >= 0.5 else "BELOW"
        print(f"ours/bare {label:12} ({metric:8}): {ratio:5.2f}  target >= 0.50  {verdict}")


def main() -> None:
    args = parse_args()
    if args.bare_app is not None:
        bare_app_main(args.bare_app)
        return
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {now}")
    print(
        f"load: {args.connections} connections, {args.warmup:g} s warm-up + {args.duration:g} s "
        f"per scenario, {args.rounds} round(s), batches of {BATCH_SIZE} events"
    )
    track = orjson.dumps(track_event(0))
    events = [track_event(i) for i in range(BATCH_SIZE)]
    batch = orjson.dumps({"batch": events, "sentAt": "2024-05-14T09:21:37.530Z"})
    print(f"bodies: track {len(track)} B, batch {len(batch)} B")
    report(run_rounds(args, track, batch), args.rounds)


if __name__ == "__main__":
    main()
