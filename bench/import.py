"""Import benchmark: DuckDB's read_json (the ceiling), dlt (the Python peer) and `loader import`.

Generates --events realistic, seeded events once (bench/load.py's generator: ~60% track over 20
event names with 5-15 properties, some nested, some arrays; pages, screens, identifies with
traits, groups, aliases; users repeat; ~1.3 KB each) into one NDJSON file. Generation is not
timed. Then each part runs in its own fresh process, with a fresh database, in this order:
  read_json     CREATE TABLE raw AS SELECT * FROM read_json(file, format='newline_delimited'),
                other options at their defaults; only this statement is timed.
  dlt/<format>  dlt.pipeline(destination=duckdb).run(dicts read from the file, table_name=
                'events') with dlt's default normalization (nested objects flattened into
                columns, lists into child tables), once in dlt's default loader file format
                for DuckDB (insert_values) and once with loader_file_format='parquet'; the
                run() call (extract, normalize, load) is timed. dlt is slow, so it reads only
                the first --dlt-events lines of the same file: compare events/s, not seconds.
  ours          `python -m api import FILE --database D --spool-dir S` on a fresh database,
                LOADER_LOAD_MAX_EVENTS=--load-max-events: the events/s it prints itself (from
                reading the first file to the last commit), and events / wall time of the whole
                process (interpreter start, imports, migrations and closing included).
dlt runs with --dlt-python (default: this interpreter), so it can live in another venv. Each
part's peak memory is the ru_maxrss of its own process (os.wait4). Figures and ratios against
the targets (ours >= 0.5 x read_json; ours >= 5 x dlt in its fastest format) are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
DLT_FORMATS = ("default", "parquet")
READ_JSON_TARGET, DLT_TARGET = 0.5, 5.0
SUMMARY = re.compile(
    r"Imported (?P<files>\d+) files: (?P<loaded>\d+) events loaded, (?P<duplicates>\d+) "
    r"duplicates skipped, (?P<rejected>\d+) rejected.*?; (?P<tables>\d+) tables in "
    r"(?P<seconds>[\d.]+) s \((?P<rate>[\d,]+) events/s\)"
)
"""The closing line of `loader import` (api/cli.py)."""


class Outcome(NamedTuple):
    """A finished child process: its stdout, wall seconds and peak RSS (MB)."""

    ok: bool
    stdout: str
    wall: float
    peak_mb: float


class Row(NamedTuple):
    part: str
    events: int
    seconds: float
    wall: float
    peak_mb: float
    note: str

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def wall_rate(self) -> float:
        return self.events / self.wall if self.wall else 0.0


# -- the parts, each run in a child process ------------------------------------------------------


def part_generate(events: int, seed: int, dlt_events: int, out: str) -> dict[str, Any]:
    """out/events.ndjson (all events) and out/dlt.ndjson (its first dlt_events lines)."""
    sys.path.insert(0, str(ROOT))
    from bench.load import generate

    folder = Path(out)
    made = generate(events, seed, 100_000, out)
    shutil.rmtree(folder / "segments")  # bench/load.py's spool segments: not needed here
    with (folder / "events.ndjson").open("rb") as source, (folder / "dlt.ndjson").open("wb") as to:
        for _, line in zip(range(dlt_events), source, strict=False):
            to.write(line)
    return {"bytes": made["bytes"], "users": made["users"], "counts": dict(made["counts"])}


def part_read_json(ndjson: str, db: str) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(db)
    started = time.perf_counter()
    con.execute(
        f"CREATE TABLE raw AS SELECT * FROM read_json('{ndjson}', format='newline_delimited')"
    )
    seconds = time.perf_counter() - started
    count = con.execute("SELECT count(*) FROM raw").fetchall()[0][0]
    columns = len(con.execute("DESCRIBE raw").fetchall())
    con.close()
    return {"seconds": seconds, "rows": count, "note": f"1 table, {columns} columns"}


def part_dlt(ndjson: str, db: str, pipelines_dir: str, file_format: str) -> dict[str, Any]:
    """One dlt pipeline run into a fresh DuckDB file; runs under --dlt-python."""
    try:
        import dlt
    except ImportError as exc:
        sys.exit(f"dlt is not importable by {sys.executable} ({exc}); pass --dlt-python")
    try:
        import orjson  # a dependency of dlt

        loads: Callable[[bytes], Any] = orjson.loads
    except ImportError:
        loads = json.loads

    def rows() -> Iterator[dict[str, Any]]:
        with open(ndjson, "rb") as file:
            for line in file:
                yield loads(line)

    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{file_format}",
        destination=dlt.destinations.duckdb(db),
        dataset_name="bench",
        pipelines_dir=pipelines_dir,
    )
    fmt = None if file_format == "default" else file_format
    started = time.perf_counter()
    pipeline.run(rows(), table_name="events", loader_file_format=fmt)
    seconds = time.perf_counter() - started
    steps = {
        s.step: (s.finished_at - s.started_at).total_seconds() for s in pipeline.last_trace.steps
    }
    counts = pipeline.last_trace.last_normalize_info.row_counts
    tables = {t: n for t, n in counts.items() if not t.startswith("_dlt")}
    with pipeline.sql_client() as client:
        events = client.execute_sql("SELECT count(*) FROM events")[0][0]
    used = fmt or pipeline.destination.capabilities().preferred_loader_file_format
    split = ", ".join(f"{step} {s:.1f}" for step, s in steps.items() if step != "run")
    return {
        "seconds": seconds,
        "rows": events,
        "note": f"{used}; {len(tables)} tables, {sum(tables.values())} rows; {split} s",
    }


PARTS: dict[str, Callable[..., dict[str, Any]]] = {
    "generate": part_generate,
    "read_json": part_read_json,
    "dlt": part_dlt,
}


def internal(part: str, params: dict[str, Any]) -> None:
    """The child's side: run the part, print its result as the last stdout line."""
    print(json.dumps(PARTS[part](**params), default=str))


# -- running children --------------------------------------------------------------------------


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> Outcome:
    """Run command to its end; peak RSS from os.wait4, so it is this child's own."""
    with log.open("wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, env=env)
        assert child.stdout is not None
        stdout = child.stdout.read().decode()
        child.stdout.close()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    if child.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        print(f"  !! {' '.join(command[:4])} ... exited with {child.returncode}; stderr ends:")
        print("\n".join(f"     {line}" for line in tail))
    return Outcome(child.returncode == 0, stdout, wall, usage.ru_maxrss / 1024)


def run_part(python: str, part: str, log: Path, **params: Any) -> tuple[Outcome, dict[str, Any]]:
    command = [python, __file__, "--internal", part, json.dumps(params, default=str)]
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}  # dlt: no network calls
    outcome = spawn(command, log, env)
    lines = outcome.stdout.strip().splitlines()
    return outcome, json.loads(lines[-1]) if outcome.ok and lines else {}


def run_ours(ndjson: Path, folder: Path, load_max_events: int, log: Path) -> Row | None:
    env = {**os.environ, "LOADER_LOAD_MAX_EVENTS": str(load_max_events)}
    command = [sys.executable, "-m", "api", "import", str(ndjson)]
    command += ["--database", str(folder / "warehouse.duckdb")]
    command += ["--spool-dir", str(folder / "spool")]
    outcome = spawn(command, log, env)
    found = SUMMARY.search(outcome.stdout)
    if not outcome.ok or found is None:
        if outcome.ok:
            print(f"  !! no summary line in the output of ours: {outcome.stdout.strip()[-400:]}")
        return None
    note = (
        f"{found['tables']} tables, {found['duplicates']} duplicates, {found['rejected']} "
        f"rejected; {load_max_events} events/transaction"
    )
    loaded = int(found["loaded"])
    return Row("ours", loaded, float(found["seconds"]), outcome.wall, outcome.peak_mb, note)


# -- the run -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


def run(args: argparse.Namespace, work: Path) -> None:
    import duckdb

    logs = work / "logs"
    logs.mkdir()
    print(
        f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
        f"{sys.version.split()[0]}, DuckDB {duckdb.__version__}; dlt via {args.dlt_python}"
    )
    data = work / "data"
    started = time.perf_counter()
    dlt_events = min(args.dlt_events, args.events)
    made, gen = run_part(
        sys.executable,
        "generate",
        logs / "generate.stderr",
        events=args.events,
        seed=args.seed,
        dlt_events=dlt_events,
        out=data,
    )
    if not made.ok:
        return
    print(
        f"generated {args.events:,} events for {gen['users']:,} users in "
        f"{time.perf_counter() - started:.1f} s (not timed): {gen['bytes'] / MB:.0f} MB NDJSON, "
        f"avg {gen['bytes'] / args.events:.0f} B/event, {gen['counts']}"
    )
    ndjson = data / "events.ndjson"
    rows: list[Row] = []

    def measure(label: str, folder: Path, take: Callable[[Path], Row | None]) -> None:
        """Run one part in a fresh folder (removed after); print its line as soon as it ends."""
        folder.mkdir()
        row = take(folder)
        shutil.rmtree(folder)
        if row is not None:
            rows.append(row)
            print(f"  {label}: {row.events:,} events in {row.seconds:.1f} s ({row.rate:,.0f}/s)")

    measure(
        "read_json",
        work / "read_json",
        lambda folder: part_row(
            "read_json", sys.executable, logs, ndjson=ndjson, db=folder / "raw.duckdb"
        ),
    )

    def dlt_part(file_format: str) -> Callable[[Path], Row | None]:
        return lambda folder: part_row(
            "dlt",
            args.dlt_python,
            logs,
            ndjson=data / "dlt.ndjson",
            db=folder / "dlt.duckdb",
            pipelines_dir=folder / "pipelines",
            file_format=file_format,
        )

    for file_format in args.dlt_formats:
        measure(f"dlt/{file_format}", work / f"dlt-{file_format}", dlt_part(file_format))
    measure(
        "ours",
        work / "ours",
        lambda folder: run_ours(ndjson, folder, args.load_max_events, logs / "ours.stderr"),
    )
    report(rows, args.events, dlt_events)


def part_row(part: str, python: str, logs: Path, **params: Any) -> Row | None:
    """A read_json or dlt part as a row of the results table."""
    label = part if part != "dlt" else f"dlt/{params['file_format']}"
    outcome, res = run_part(python, part, logs / f"{label.replace('/', '-')}.stderr", **params)
    if not outcome.ok:
        return None
    return Row(label, res["rows"], res["seconds"], outcome.wall, outcome.peak_mb, res["note"])


def report(rows: list[Row], events: int, dlt_events: int) -> None:
    print(
        f"\nresults (read_json and ours: all {events:,} events; dlt: the first {dlt_events:,} "
        "of the same file, so compare events/s, not seconds):"
    )
    print(
        f"  {'part':<12} {'events':>9} {'seconds':>8} {'events/s':>9} {'wall s':>8} "
        f"{'wall ev/s':>9} {'peak MB':>8}  notes"
    )
    for r in rows:
        print(
            f"  {r.part:<12} {r.events:>9,} {r.seconds:>8.1f} {r.rate:>9,.0f} {r.wall:>8.1f} "
            f"{r.wall_rate:>9,.0f} {r.peak_mb:>8,.0f}  {r.note}"
        )
    by_part = {r.part: r for r in rows}
    ours, raw = by_part.get("ours"), by_part.get("read_json")
    dlts = [r for r in rows if r.part.startswith("dlt/")]
    print("\nratios (events/s as timed inside each part; in brackets: by wall time):")
    if ours is None:
        print("  ours did not finish: no ratios")
        return
    if raw is not None:
        ratio_line(ours, raw, "read_json", READ_JSON_TARGET)
    if dlts:
        best = max(dlts, key=lambda r: r.rate)
        ratio_line(ours, best, f"{best.part} (fastest)", DLT_TARGET)
        for other in dlts:
            if other is not best:
                ratio_line(ours, other, other.part, None)


def ratio_line(ours: Row, other: Row, label: str, target: float | None) -> None:
    ratio = ours.rate / other.rate if other.rate else float("nan")
    wall = ours.wall_rate / other.wall_rate if other.wall_rate else float("nan")
    line = f"  ours / {label:<22} {ratio:7.2f}  ({wall:.2f})"
    if target is not None:
        line += f"  target >= {target:g}  {verdict(ratio >= target)}"
    print(line)


EPILOG = """output:
  generated ...  the data set: events, users, MB and average bytes per event, events per type.
  results        one line per part: events (rows of `raw`; rows of dlt's `events` table; the
                 events `loader import` reports loaded), seconds as timed inside the part and
                 events/s from them, wall seconds of the whole child process and events/s from
                 them, the child's peak RSS (ru_maxrss: Python and DuckDB together), and notes
                 (read_json: columns; dlt: the loader file format used, tables and rows written,
                 seconds per dlt step; ours: tables, duplicates, rejects, batch size).
  ratios         ours against read_json (target >= 0.5) and against dlt in its fastest format
                 (target >= 5), by the timed events/s and, in brackets, by wall time.
                 PASS/BELOW are printed, never asserted.
  The machine is noisy (+-30%): compare the ratios within one run. With --workdir the directory
  is kept (it must not exist or be empty); otherwise a temporary directory is used and removed.
dlt:
  Install the `bench` extra (pip install -e '.[bench]') or point --dlt-python at an interpreter
  that has dlt[duckdb] and pyarrow, e.g. a throwaway venv:
    python3 -m venv /tmp/dltvenv && /tmp/dltvenv/bin/pip install 'dlt[duckdb]' pyarrow
    .venv/bin/python bench/import.py --dlt-python /tmp/dltvenv/bin/python
  dlt's anonymous telemetry is switched off for its runs (RUNTIME__DLTHUB_TELEMETRY=false).
"""


def parse_args() -> argparse.Namespace:
    from loader.settings import Settings

    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--events", type=int, default=1_000_000, help="events generated (default 1000000)")
    add("--dlt-events", type=int, default=100_000, help="events dlt loads (default 100000)")
    add("--seed", type=int, default=1, help="random seed of the generator (default 1)")
    load_max = Settings().load_max_events  # the setting's default, not a copy of it
    add(
        "--load-max-events",
        type=int,
        default=load_max,
        help=f"events per transaction ({load_max}, the setting's default)",
    )
    add(
        "--dlt-python",
        default=sys.executable,
        help="the Python that runs dlt (default: this one, %(default)s)",
    )
    add(
        "--dlt-formats",
        type=lambda text: [f for f in text.split(",") if f],
        default=list(DLT_FORMATS),
        help="dlt loader file formats, comma-separated; 'default' is dlt's own choice, '' skips "
        "dlt (default: default,parquet)",
    )
    add("--workdir", type=Path, help="where data and databases go (default: a temporary dir)")
    return parser.parse_args()


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress in a file
    if sys.argv[1:2] == ["--internal"]:
        # One part, maybe under --dlt-python: a venv without this project, so before
        # parse_args (which reads our Settings).
        internal(sys.argv[2], json.loads(sys.argv[3]))
        return
    args = parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-import-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        sys.exit(f"{work} is not empty")
    try:
        run(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
