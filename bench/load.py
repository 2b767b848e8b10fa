"""Load benchmark: DuckDB's own read_json (the ceiling) and our loader, on the same events.

Generates --events realistic, seeded browser/mobile SDK events (~60% track over 20 event names
with 5-15 properties, some nested, some arrays; pages, screens, identifies with traits, groups,
aliases; users repeat), enriched as the server does, and writes them twice: one NDJSON file (one
event per line) and spool segments of --segment-events events. Then, per round (alternating which
goes first), each in a fresh process and a fresh database file:
  read_json  CREATE TABLE raw AS SELECT * FROM read_json(file, format='newline_delimited'),
             other options at their defaults (read_json_auto's detection); only this statement
             is timed.
  ours       the segments hard-linked into a fresh spool's sealed/, Pipeline.open(), then
             Pipeline.drain() timed (micro-batches of --load-max-events, one transaction each).
Last, a mixed run against a real `python -m api serve`: single /v1/track calls at a steady
--mixed-rate for --mixed-seconds with the loader idle, then again while it drains a backlog of
sealed segments dropped into its spool. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.http_ingest import (  # noqa: E402
    HOST,
    free_port,
    http_request,
    read_response,
    stop,
    track_event,
    wait_healthy,
)

MB = 1024 * 1024
FIXED_TABLES = ("sources", "alembic_version")
Gen = Callable[[random.Random], Any]


def words(text: str) -> list[str]:
    return text.split("|")


def _one(choices: str) -> Gen:
    options = words(choices)
    return lambda r: r.choice(options)


def _money(low: float, high: float) -> Gen:
    return lambda r: round(r.uniform(low, high), 2)


def _sku(r: random.Random) -> str:
    return f"SKU-{r.randrange(10_000):05d}"


CITIES = words("Berlin|Paris|London|New York|Austin|Madrid|Tokyo|Sao Paulo")
COUNTRIES = words("DE|FR|GB|US|US|ES|JP|BR")
PROPS: dict[str, Gen] = {  # each key keeps one JSON type everywhere (read_json infers one)
    "product_id": _sku,
    "name": _one("Trail Shoe|Rain Jacket|Wool Socks|City Backpack|Water Bottle"),
    "category": _one("Footwear|Outerwear|Accessories|Bags|Outdoor"),
    "brand": _one("Northwind|Contoso|Fabrikam|Tailspin"),
    "variant": _one("blue/42|black/M|red/L|green/S|grey/44"),
    "price": _money(2, 400),
    "quantity": lambda r: r.randint(1, 5),
    "currency": _one("USD|EUR|GBP"),
    "revenue": _money(10, 900),
    "discount": _money(0, 50),
    "coupon": _one("SPRING10|WELCOME|FREESHIP|VIP25"),
    "in_stock": lambda r: r.random() < 0.9,
    "position": lambda r: r.randint(1, 48),
    "url": lambda r: f"https://shop.example.com/products/{r.randrange(10_000)}",
    "image_url": lambda r: f"https://cdn.example.com/img/{r.randrange(10_000)}.jpg",
    "order_id": lambda r: f"ORD-{r.randrange(10**8):08d}",
    "cart_id": lambda r: f"{r.getrandbits(64):016x}",
    "checkout_step": lambda r: r.randint(1, 4),
    "shipping_method": _one("standard|express|pickup"),
    "payment_method": _one("card|paypal|apple_pay|invoice"),
    "query": _one("rain jacket|shoes size 42|backpack|gift card|socks"),
    "results_count": lambda r: r.randint(0, 500),
    "list_id": _one("search_results|featured|related|sale"),
    "plan": _one("free|starter|pro|enterprise"),
    "billing_period": _one("monthly|annual"),
    "duration_seconds": lambda r: round(r.uniform(5, 3600), 1),
    "button_text": _one("Buy now|Add to cart|Learn more|Sign up"),
    "rating": lambda r: r.randint(1, 5),
    "product": lambda r: {  # nested objects flatten into product_sku, product_dimensions_...
        "sku": _sku(r),
        "list_price": round(r.uniform(2, 400), 2),
        "dimensions": {"width_cm": r.randint(5, 80), "height_cm": r.randint(5, 80)},
    },
    "shipping": lambda r: {
        "method": r.choice(("standard", "express")),
        "cost": round(r.uniform(0, 25), 2),
        "address": {"city": r.choice(CITIES), "country": r.choice(COUNTRIES)},
    },
    "experiment": lambda r: {"key": f"exp_{r.randrange(12)}", "arm": r.choice("ABC")},
    "products": lambda r: [  # arrays become JSON text columns
        {"sku": _sku(r), "price": round(r.uniform(2, 400), 2)} for _ in range(r.randint(1, 4))
    ],
    "tags": lambda r: r.sample(["sale", "new", "eco", "bestseller", "gift", "limited"], 2),
}
EVENT_NAMES = words(
    "Product Viewed|Product Added|Product Removed|Cart Viewed|Checkout Started|"
    "Checkout Step Completed|Payment Info Entered|Order Completed|Order Refunded|Coupon Applied|"
    "Products Searched|Product List Viewed|Product Clicked|Promotion Viewed|Signed Up|Logged In|"
    "Subscription Started|Video Playback Started|Form Submitted|Button Clicked"
)
PAGES = words("/|/products/trail-shoe|/products/rain-jacket|/cart|/checkout|/search|/pricing")
SCREENS = words("Home|Product Detail|Cart|Checkout|Search|Profile|Settings")
UAS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
MIX = {"track": 60, "page": 18, "screen": 6, "identify": 9, "group": 4, "alias": 3}
SCHEMAS: dict[str, list[str]] = {}
"""Per event name, its 15 property keys (seeded); an event carries the first 5-15 of them."""


def make_user(r: random.Random, u: int) -> dict[str, Any]:
    first, last = r.choice(("Jane", "Ali", "Mei", "Lars", "Ana")), r.choice(("Doe", "Kim", "Ng"))
    where = r.randrange(len(CITIES))
    traits = {
        "email": f"{first.lower()}.{last.lower()}{u}@example.com",
        "name": f"{first} {last}",
        "first_name": first,
        "last_name": last,
        "plan": r.choice(("free", "pro", "team")),
        "age": r.randint(18, 80),
        "logins": r.randint(1, 400),
        "created_at": f"2023-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T10:00:00.000Z",
        "company": {"name": f"Company {u % 3000}", "industry": r.choice(("retail", "saas"))},
        "address": {"city": CITIES[where], "country": COUNTRIES[where]},
    }
    width, height, density = r.choice(((1920, 1080, 1), (1440, 900, 2), (390, 844, 3)))
    return {
        "anonymousId": str(uuid.UUID(int=r.getrandbits(128), version=4)),
        "userId": f"usr_{u:06d}",
        "known": r.random() < 0.6,  # the others send anonymousId only (but identify, alias)
        "traits": traits,
        "groupId": f"org_{u % 2000:04d}",
        "ip": f"198.51.{u % 250}.{u % 199 + 1}",
        "ua": r.choice(UAS),
        "locale": r.choice(("en-US", "de-DE", "fr-FR", "en-GB", "es-ES", "ja-JP")),
        "screen": {"width": width, "height": height, "density": density},
        "os": {"name": r.choice(("Linux", "macOS", "Windows", "iOS")), "version": "14.4"},
    }


def make_event(r: random.Random, user: dict[str, Any], kind: str, i: int) -> dict[str, Any]:
    """One call as the JavaScript SDK (screens: the Android SDK) sends it, before enrichment."""
    path = r.choice(PAGES)
    url = f"https://shop.example.com{path}"
    title = f"{path.strip('/') or 'Home'} | Example Store"
    referrer = r.choice(("https://www.google.com/", "$direct", "https://t.co/"))
    page = {"path": path, "url": url, "title": title, "referrer": referrer, "search": ""}
    page |= {"tab_url": url, "initial_referrer": "$direct", "initial_referring_domain": ""}
    context: dict[str, Any] = {
        "library": {"name": "RudderLabs JavaScript SDK", "version": "3.7.2"},
        "userAgent": user["ua"],
        "locale": user["locale"],
        "screen": user["screen"],
        "os": user["os"],
        "timezone": "GMT+0200",
        "sessionId": 1715644800000 + i // 50,
        "traits": {k: user["traits"][k] for k in ("email", "plan")} if user["known"] else {},
        "page": page,
    }
    if kind == "screen":
        del context["page"]
        context["library"] = {"name": "com.rudderstack.android.sdk.core", "version": "1.20.1"}
        context["app"] = {"name": "Example Store", "version": "4.2.0", "build": "420"}
        context["device"] = {"id": user["anonymousId"], "manufacturer": "Google", "model": "P8"}
        context["network"] = {"wifi": r.random() < 0.7, "carrier": "T-Mobile"}
    event: dict[str, Any] = {"type": kind, "anonymousId": user["anonymousId"], "context": context}
    event |= {"channel": "web", "integrations": {"All": True}}
    if user["known"] or kind in ("identify", "alias"):
        event["userId"] = user["userId"]
    if kind == "track":
        event["event"] = name = r.choice(EVENT_NAMES)
        event["properties"] = {key: PROPS[key](r) for key in SCHEMAS[name][: r.randint(5, 15)]}
    elif kind == "page":
        event["name"] = title
        event["properties"] = {k: page[k] for k in ("path", "url", "title", "referrer")}
    elif kind == "screen":
        event["name"] = name = r.choice(SCREENS)
        event["properties"] = {"name": name, "tab": r.choice(("shop", "me"))}
    elif kind == "identify":
        event["traits"] = context["traits"] = user["traits"]
    elif kind == "group":
        event["groupId"] = user["groupId"]
        company, plan = user["traits"]["company"]["name"], r.choice(("team", "enterprise"))
        event["traits"] = {"name": company, "employees": r.randint(2, 900), "plan": plan}
    else:
        event["previousId"] = user["anonymousId"]
    return event


def generate(events: int, seed: int, segment_events: int, out: str) -> dict[str, Any]:
    """Write out/events.ndjson and out/segments/<id>.jsonl; returns counts and sizes."""
    from loader.enrich import enrich, format_time
    from loader.spec import validate
    from loader.spool import new_segment_id

    r = random.Random(seed)
    pool = sorted(PROPS)
    SCHEMAS.update({name: r.sample(pool, 15) for name in EVENT_NAMES})
    users = [make_user(r, u) for u in range(max(100, min(50_000, events // 20)))]
    kinds = r.choices(list(MIX), list(MIX.values()), k=events)
    base, counts, size = datetime(2024, 5, 14, tzinfo=UTC), Counter[str](), 0
    folder = Path(out)
    (folder / "segments").mkdir(parents=True)
    with (folder / "events.ndjson").open("wb") as ndjson:
        for start in range(0, events, segment_events):
            lines = []
            for i in range(start, min(events, start + segment_events)):
                user = users[int(len(users) * r.random() ** 2)]  # skewed: some users repeat a lot
                event = make_event(r, user, kinds[i], i)
                received = base + timedelta(milliseconds=37 * i)
                sent = received - timedelta(milliseconds=r.randint(5, 40))
                event["sentAt"] = format_time(sent)
                event["originalTimestamp"] = format_time(sent - timedelta(seconds=r.random()))
                event["messageId"] = str(uuid.UUID(int=r.getrandbits(128), version=4))
                enrich(
                    validate(event, None), received_at=received, request_ip=user["ip"], sent_at=None
                )
                raw = orjson.dumps(event)
                size += len(raw) + 1
                counts[kinds[i]] += 1
                lines.append(raw + b"\n")
            ndjson.write(b"".join(lines))
            segment = b"".join(b'{"source":"default","event":' + ln[:-1] + b"}\n" for ln in lines)
            (folder / "segments" / f"{new_segment_id()}.jsonl").write_bytes(segment)
    return {"events": events, "bytes": size, "users": len(users), "counts": counts}


def part_read_json(ndjson: str, db: str) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(db)
    started = time.perf_counter()
    con.execute(
        f"CREATE TABLE raw AS SELECT * FROM read_json('{ndjson}', format='newline_delimited')"
    )
    seconds = time.perf_counter() - started
    rows = con.execute("SELECT count(*) FROM raw").fetchone()
    columns = len(con.execute("DESCRIBE raw").fetchall())
    con.close()
    return {"seconds": seconds, "rows": rows[0] if rows else 0, "columns": columns}


def part_ours(segments: str, work: str, load_max_events: int, profile: bool) -> dict[str, Any]:
    import logging

    from loader.pipeline import Pipeline
    from loader.settings import Settings

    logging.basicConfig(stream=sys.stderr, format="    %(name)s: %(message)s")
    logging.getLogger("loader.pipeline").setLevel(logging.INFO)
    folder = Path(work)
    settings = Settings(
        database=folder / "ours.duckdb", spool_dir=folder / "spool", load_max_events=load_max_events
    )
    (settings.spool_dir / "sealed").mkdir(parents=True)
    for path in sorted(Path(segments).iterdir()):
        os.link(path, settings.spool_dir / "sealed" / path.name)
    pipeline = Pipeline(settings)
    started = time.perf_counter()
    pipeline.open(create_default=True)
    opened = time.perf_counter()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        loaded = profiler.runcall(pipeline.drain)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    else:
        loaded = pipeline.drain()
    drained = time.perf_counter()
    con = pipeline.con
    names = [
        n
        for (n,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE "
            "table_schema = 'main' AND table_type = 'BASE TABLE'"
        ).fetchall()
    ]
    rows = {n: con.execute(f'SELECT count(*) FROM main."{n}"').fetchall()[0][0] for n in names}
    pipeline.close()
    failed = {p.stem: p.read_text()[:2000] for p in (settings.spool_dir / "failed").glob("*.error")}
    return {
        "open": opened - started,
        "seconds": drained - opened,
        "loaded": loaded,
        "rows": rows,
        "failed": failed,
    }


def child(part: str, **params: Any) -> dict[str, Any] | None:
    """Run one part in a fresh interpreter; its result has the child's own peak RSS in MB."""
    command = [sys.executable, __file__, "--internal", part, json.dumps(params, default=str)]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        print(f"  !! part {part} failed with exit code {done.returncode} (see stderr above)")
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def internal(part: str, params: dict[str, Any]) -> None:
    """The child's side of `child()`: run the part, print its result as the last line."""
    parts: dict[str, Callable[..., dict[str, Any]]] = {
        "gen": generate,
        "read_json": part_read_json,
        "ours": part_ours,
    }
    result = parts[part](**params)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# -- mixed run: steady single calls against a real server ------------------------------------


async def steady(port: int, requests: list[bytes], rate: float, conns: int) -> dict[str, Any]:
    """Open loop: request i is handed to a free keep-alive connection at start + i / rate."""
    clock, queue = time.perf_counter, asyncio.Queue[tuple[float, bytes] | None]()
    lat: list[float] = []
    busy: list[int] = []
    errors: Counter[str] = Counter()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        while (item := await queue.get()) is not None:
            t0 = clock()
            try:
                writer.write(item[1])
                status, _, keep = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError) as exc:
                errors[type(exc).__name__] += 1
                status, keep = 0, False
            if status == 200:
                lat.append(clock() - t0)
            elif status:
                errors[str(status)] += 1
            if not keep:
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
        writer.close()

    async def monitor(client: httpx.AsyncClient) -> None:
        while True:
            spool = (await client.get(f"http://{HOST}:{port}/health")).json()["spool"]
            busy.append(spool["backlog_segments"])
            await asyncio.sleep(0.25)

    workers = [asyncio.create_task(worker()) for _ in range(conns)]
    async with httpx.AsyncClient(timeout=10) as client:
        watch = asyncio.create_task(monitor(client))
        start = clock() + 0.1
        for i, request in enumerate(requests):
            if (delay := start + i / rate - clock()) > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((start + i / rate, request))
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
        watch.cancel()
    lat.sort()
    return {
        "ok": len(lat),
        "p50": 1000 * lat[len(lat) // 2] if lat else 0.0,
        "p99": 1000 * lat[int(len(lat) * 0.99)] if lat else 0.0,
        "errors": dict(errors),
        "busy": sum(1 for b in busy if b) / max(1, len(busy)),
    }


def process_tree_mb(pid: int, field: str = "VmHWM") -> list[float]:
    """A /proc status field in MB (VmHWM: peak RSS, VmRSS: now) of pid and each descendant,
    pid first."""
    sizes, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        sizes += [
            int(ln.split()[1]) / 1024 for ln in status.splitlines() if ln.startswith(field + ":")
        ]
    return sizes


def mixed(
    args: argparse.Namespace, work: Path, segments: list[Path], backlog: int
) -> dict[str, Any]:
    port, spool = free_port(), work / "mixed-spool"
    env = {
        **os.environ,
        "LOADER_DATABASE": str(work / "mixed.duckdb"),
        "LOADER_HOST": HOST,
        "LOADER_SPOOL_DIR": str(spool),
        "LOADER_PORT": str(port),
        "LOADER_LOAD_MAX_EVENTS": str(args.load_max_events),
    }
    log = (work / "server.stderr").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "api", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    lines: list[str] = []
    out = server.stdout
    assert out is not None
    threading.Thread(
        target=lambda: lines.extend(ln.decode().strip() for ln in out), daemon=True
    ).start()
    try:
        wait_healthy(port, server)
        time.sleep(0.3)  # the key is printed before /health answers
        key = [ln for ln in lines if ln][-1]
        n = int(args.mixed_rate * args.mixed_seconds)
        warm = int(args.mixed_rate)  # 1 s of calls first, not counted
        bodies = [
            http_request("/v1/track", orjson.dumps(track_event(i)), key)
            for i in range(warm + 2 * n)
        ]
        os.sync()  # the earlier parts' dirty pages would otherwise slow our fsyncs down
        asyncio.run(steady(port, bodies[2 * n :], args.mixed_rate, args.mixed_connections))
        idle = asyncio.run(steady(port, bodies[:n], args.mixed_rate, args.mixed_connections))
        for path in segments[: -(-backlog // args.segment_events)]:
            os.link(path, spool / "sealed" / path.name)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until /health reports the backlog
            if httpx.get(f"http://{HOST}:{port}/health").json()["spool"]["backlog_segments"]:
                break
            time.sleep(0.1)
        loaded = asyncio.run(
            steady(port, bodies[n : 2 * n], args.mixed_rate, args.mixed_connections)
        )
        started = time.monotonic()
        while time.monotonic() - started < 600:
            spool_state = httpx.get(f"http://{HOST}:{port}/health").json()["spool"]
            if spool_state["backlog_segments"] == 0:
                break
            time.sleep(0.5)
        peaks = process_tree_mb(server.pid)
        return {
            "idle": idle,
            "loaded": loaded,
            "server_mb": peaks[0],
            "loader_mb": max(peaks[1:], default=0.0),
            "failed": spool_state["failed_segments"],
        }
    finally:
        stop([server])
        log.close()


# -- the run -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


def run(args: argparse.Namespace, work: Path) -> None:
    import duckdb

    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, DuckDB "
        f"{duckdb.__version__}, workdir {work}"
    )
    started = time.perf_counter()
    gen = child(
        "gen",
        events=args.events,
        seed=args.seed,
        segment_events=args.segment_events,
        out=work / "data",
    )
    if gen is None:
        return
    avg = gen["bytes"] / gen["events"]
    print(
        f"generated {gen['events']} events for {gen['users']} users in "
        f"{time.perf_counter() - started:.1f} s (not counted): avg {avg:.0f} B/event, "
        f"{gen['bytes'] / MB:.0f} MB NDJSON, { ({k: gen['counts'][k] for k in MIX}) }"
    )
    segments = sorted((work / "data" / "segments").iterdir())
    results: dict[str, list[dict[str, Any]]] = {"read_json": [], "ours": []}
    for rnd in range(1, args.rounds + 1):
        for part in ("read_json", "ours") if rnd % 2 else ("ours", "read_json"):
            folder = work / f"round{rnd}-{part}"
            folder.mkdir()
            if part == "read_json":
                res = child(part, ndjson=work / "data" / "events.ndjson", db=folder / "raw.duckdb")
            else:
                res = child(
                    part,
                    segments=work / "data" / "segments",
                    work=folder,
                    load_max_events=args.load_max_events,
                    profile=args.profile,
                )
            shutil.rmtree(folder, ignore_errors=True)
            if res is None:
                continue
            count = res["rows"] if part == "read_json" else res["loaded"]
            res["rate"] = count / res["seconds"]
            results[part].append(res)
            detail = (
                f"{res['columns']} columns"
                if part == "read_json"
                else f"open {res['open']:.1f} s, {len(res['failed'])} failed segments"
            )
            print(
                f"round {rnd} {part:9}: {count} events in {res['seconds']:6.1f} s = "
                f"{res['rate']:8,.0f} events/s ({detail}), peak {res['peak_mb']:.0f} MB"
            )
            for segment, error in res.get("failed", {}).items():
                print(f"    FAILED segment {segment}: {error.strip()}")

    mix = None
    if not args.skip_mixed and results["ours"]:
        rate = statistics.median(r["rate"] for r in results["ours"])
        backlog = args.mixed_backlog or int(rate * (args.mixed_seconds + 3) * 1.2)
        backlog = min(args.events, max(args.segment_events, backlog))
        print(
            f"mixed: {args.mixed_rate:g} req/s of single /v1/track for {args.mixed_seconds:g} s "
            f"idle, then again with a backlog of ~{backlog} events draining"
        )
        mix = mixed(args, work, segments, backlog)
        for phase in ("idle", "loaded"):
            m = mix[phase]
            print(
                f"  loader {phase:6}: {m['ok']} ok, p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms,"
                f" loader busy {m['busy']:.0%} of the window, errors {m['errors'] or 'none'}"
            )
    report(args, gen, results, mix)


def report(
    args: argparse.Namespace,
    gen: dict[str, Any],
    results: dict[str, list[dict[str, Any]]],
    mix: dict[str, Any] | None,
) -> None:
    print("\nsummary (medians over rounds):")
    print(
        f"  events              {gen['events']:,}, avg {gen['bytes'] / gen['events']:.0f} B/event"
    )
    rj, ours = results["read_json"], results["ours"]
    rates = {k: statistics.median(r["rate"] for r in v) if v else 0.0 for k, v in results.items()}
    print(f"  read_json events/s  {rates['read_json']:,.0f}")
    print(f"  ours events/s       {rates['ours']:,.0f}")
    if rates["read_json"] and rates["ours"]:
        ratio = rates["ours"] / rates["read_json"]
        print(f"  ours / read_json    {ratio:.2f}  target >= 0.50  {verdict(ratio >= 0.5)}")
    peaks = {"generate": gen["peak_mb"]}
    peaks |= {k: max(r["peak_mb"] for r in v) for k, v in (("read_json", rj), ("ours", ours)) if v}
    if mix is not None:
        peaks |= {"mixed server": mix["server_mb"], "mixed loader": mix["loader_mb"]}
    peaks["bench"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worst = max(peaks.values())
    print(
        f"  peak memory MB      {', '.join(f'{k} {v:.0f}' for k, v in peaks.items())}"
        f"  target < 2048 each  {verdict(worst < 2048)}"
    )
    if ours:
        rows = ours[-1]["rows"]
        data = {t: n for t, n in rows.items() if t[0] != "_" and t not in FIXED_TABLES}
        print(
            f"  warehouse           {len(data)} tables, {sum(data.values()):,} rows; main.tracks "
            f"{rows.get('tracks', 0):,} (generated {gen['counts'].get('track', 0):,}), users "
            f"{rows.get('users', 0):,}, failed segments {len(ours[-1]['failed'])}"
        )
        print("  rows per table      " + ", ".join(f"{t} {n}" for t, n in sorted(data.items())))
    if mix is not None:
        idle, busy = mix["idle"]["p99"], mix["loaded"]["p99"]
        print(
            f"  mixed HTTP p99 ms   idle {idle:.1f}, loader busy {busy:.1f} "
            f"(x{busy / idle if idle else float('nan'):.2f}); p50 {mix['idle']['p50']:.1f} / "
            f"{mix['loaded']['p50']:.1f}; failed segments {mix['failed']}"
        )


EPILOG = """output:
  generated ...  the data set: events, users, average encoded size per enriched event (what
                 both sides read; spool lines add a ~30 B envelope), events per call type.
  round N ...    one line per part: events loaded / seconds timed = events/s, the part's own
                 peak RSS (ru_maxrss of its process: DuckDB and Python together).
                 read_json counts rows of `raw`; ours counts what drain() returned.
  mixed ...      p50/p99 of single /v1/track calls (request written -> answer read) at the
                 steady rate (after 1 s of warm-up calls, and a sync of dirty pages), with the
                 loader idle and while it drains the dropped-in backlog;
                 "busy" is the share of /health polls (every 0.25 s) showing sealed segments.
  summary        medians over rounds; ours/read_json against the 0.5 target; the peak memory of
                 each part (mixed: the server process and its loader process) against 2 GB;
                 tables and rows of the warehouse `main` namespace after the last round of ours.
  PASS/BELOW are printed, never asserted. With --workdir the directory is kept (it must not
  hold a previous run); otherwise a temporary directory is used and removed.
"""


def parse_args() -> argparse.Namespace:
    from loader.settings import Settings

    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--events", type=int, default=1_000_000, help="events generated (default 1000000)")
    add("--seed", type=int, default=1, help="random seed of the generator (default 1)")
    segment_max = Settings().segment_max_events
    add(
        "--segment-events",
        type=int,
        default=segment_max,
        help=f"events per spool segment ({segment_max}, the setting's default)",
    )
    load_max = Settings().load_max_events  # the setting's default, not a copy of it
    add(
        "--load-max-events",
        type=int,
        default=load_max,
        help=f"events per transaction ({load_max}, the setting's default)",
    )
    add("--rounds", type=int, default=1, help="rounds of read_json + ours, alternating (1)")
    add("--profile", action="store_true", help="cProfile our drain, top 25 to stderr")
    add("--mixed-seconds", type=float, default=10, help="seconds per mixed phase (10)")
    add("--mixed-rate", type=float, default=500, help="single calls per second (500)")
    add("--mixed-connections", type=int, default=32, help="keep-alive connections (32)")
    add("--mixed-backlog", type=int, default=0, help="backlog events (0: sized to last the phase)")
    add("--skip-mixed", action="store_true", help="skip the mixed run")
    add("--workdir", type=Path, help="where data and databases go (default: a temporary dir)")
    add("--internal", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.internal:
        internal(args.internal[0], json.loads(args.internal[1]))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-load-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
