"""Identity benchmark: incremental resolution in micro-batches vs `rebuild`, on a big graph.

Generates (seeded, in a child process so that its memory is not counted) --identifiers nodes of
four types (anonymous_id, user_id, email, phone) and --edges distinct edges. Component sizes
follow a power law: three giant components (4%, 2% and 1% of the nodes), the rest drawn from a
discrete Pareto law (alpha 2.3, at least 2 nodes, at most 0.2% of the nodes). Each component is
a preferential-attachment spanning tree plus extra edges (one end preferential, one uniform),
the extras spread over components in proportion to their size. The edges are shuffled.

Each edge becomes one `merge` event (mergeProperties = its two identifiers), enriched as the
server does (loader.enrich), and the events go through the real loading path in micro-batches of
--batch events: `microbatch.build(writer, ...)` then `DuckDBWriter.write(...)`, one transaction
per micro-batch, as `Pipeline.drain()` does minus reading spool segments from disk.
`DuckDBWriter._apply_identity` (the identity step inside each transaction) is timed on its own,
and split by SQL statement:
  fresh    the NOT EXISTS check of the batch's rules against the stored rules
  +rules   INSERT of the new rules           +graph   INSERT of the new user_graph edges
  lookup   the stored labels of the touched nodes (join with rudder_identity_mappings)
  resolve  loader.identity.resolve (pure Python)
  relabel  the UPDATE of absorbed components (`rows` = mapping rows it rewrote)
  +map     INSERT of the new mappings        other    Arrow tables, register, Python glue

Probes: --probes micro-batches of --batch merges, each between two brand-new identifiers (an
email and a user_id; the same work every time), load before the graph (after one warm-up probe)
and again after it, so that one batch's identity step can be compared at an empty and at a full
warehouse. Their identifiers are part of the checks below.

Output:
  per batch (the first 10, every 20th, the last 10): cumulative edges, stored mappings, build and
    write ms (write = the whole transaction; commit and msgids = its COMMIT and message-id
    INSERT), the identity step's ms and its split, merges (components absorbed), rows relabelled;
  the median identity step of the first and the last 10% of batches and of each part (the mix
    changes over a run: early batches bring new identifiers, late ones link known ones), and
    least-squares fits of `fresh` against stored rules and `lookup` against stored mappings;
  the probes' identity step at the start and at the end (flat = independent of the total);
  incremental throughput: edges / total write time (whole transactions), edges / total build +
    write time, edges / total identity-step time;
  rebuild (`Pipeline.rebuild_identity("main")`): time, edges/s, split;
  checks (printed OK/MISMATCH, never asserted): the stored partition after the incremental path
    and after rebuild each equal a plain union-find of the generated edges (same node set and a
    bijection between rudder_ids and the union-find's roots), and equal each other;
  memory: peak RSS (VmHWM, reset between phases where the kernel allows it) per phase, and
    ru_maxrss of the whole run.

--workdir keeps the database there (it must not hold one yet); by default a temp dir is used and
removed at the end. --profile-last N runs cProfile over the identity step of the last N batches.
Progress goes to stderr every 20 batches.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import io
import multiprocessing
import pstats
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from loader import identity, microbatch, warehouse  # noqa: E402
from loader.enrich import enrich  # noqa: E402
from loader.pipeline import Pipeline  # noqa: E402
from loader.settings import Settings  # noqa: E402

TYPES = ("anonymous_id", "user_id", "email", "phone")
TYPE_WEIGHTS = (45, 25, 20, 10)
GIANTS = (0.04, 0.02, 0.01)
"""Giant components, as fractions of the identifiers."""
ALPHA = 2.3
MAX_SMALL = 0.002
"""Largest non-giant component, as a fraction of the identifiers."""
NAMESPACE = "main"
PARTS = ("fresh", "+rules", "+graph", "lookup", "resolve", "relabel", "+map", "other")
REBUILD_PARTS = ("read", "delete", "resolve", "relabel", "+map", "other")
Times = defaultdict[str, float]
"""Seconds per part."""


# -- the graph -------------------------------------------------------------------------------


def component_sizes(rng: random.Random, n: int) -> list[int]:
    sizes = [max(2, int(n * f)) for f in GIANTS if int(n * f) >= 2]
    cap = max(2, int(n * MAX_SMALL))
    left = n - sum(sizes)
    while left > 0:
        size = min(cap, int(2 * (1.0 - rng.random()) ** (-1.0 / (ALPHA - 1.0))))
        if left - size < 2:
            size = left
        sizes.append(size)
        left -= size
    return sizes


def generate(path: str, n: int, edges: int, seed: int) -> None:
    """Write the graph to `path`: n, e (int64), node types (n bytes), ends a and b (int32 each)."""
    rng = random.Random(seed)
    sizes = component_sizes(rng, n)
    extra = edges - (n - len(sizes))
    if extra < 0:
        raise SystemExit(
            f"{edges} edges cannot connect {len(sizes)} components of {n} identifiers; "
            f"use at least {n - len(sizes)} edges."
        )
    capacity = [s * (s - 1) // 2 - (s - 1) for s in sizes]
    if extra > sum(capacity):
        raise SystemExit(f"{edges} distinct edges do not fit in these components.")
    eligible = sum(s for s, c in zip(sizes, capacity, strict=True) if c > 0)
    share = [min(c, extra * s // eligible) for s, c in zip(sizes, capacity, strict=True)]
    cumulative = list(_accumulate(sizes))
    left = extra - sum(share)
    while left > 0:  # the rounding remainder, to random components (by size) with room
        i = bisect.bisect_right(cumulative, rng.randrange(n))
        if share[i] < capacity[i]:
            share[i] += 1
            left -= 1

    perm = list(range(n))
    rng.shuffle(perm)
    kinds = bytearray(rng.choices(range(len(TYPES)), TYPE_WEIGHTS, k=n))
    ends_a, ends_b = array("i"), array("i")
    offset = 0
    for size, extras in zip(sizes, share, strict=True):
        members = perm[offset : offset + size]
        offset += size
        pool = [members[0]]
        seen: set[tuple[int, int]] = set()
        for v in members[1:]:
            u = pool[rng.randrange(len(pool))]
            pool += (u, v, v)
            seen.add((min(u, v), max(u, v)))
            ends_a.append(u)
            ends_b.append(v)
        made = 0
        while made < extras:
            u, v = pool[rng.randrange(len(pool))], members[rng.randrange(size)]
            key = (min(u, v), max(u, v))
            if u == v or key in seen:
                continue
            seen.add(key)
            pool += (u, v)
            ends_a.append(u)
            ends_b.append(v)
            made += 1
    order = list(range(len(ends_a)))
    rng.shuffle(order)
    out_a, out_b = array("i"), array("i")
    for i in order:
        if rng.random() < 0.5:
            out_a.append(ends_a[i])
            out_b.append(ends_b[i])
        else:
            out_a.append(ends_b[i])
            out_b.append(ends_a[i])
    with open(path, "wb") as f:
        array("q", (n, len(out_a))).tofile(f)
        f.write(kinds)
        out_a.tofile(f)
        out_b.tofile(f)


def _accumulate(values: list[int]) -> list[int]:
    total, out = 0, []
    for v in values:
        total += v
        out.append(total)
    return out


class Graph:
    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            header = array("q")
            header.fromfile(f, 2)
            self.n, self.e = header
            self.kinds = f.read(self.n)
            self.a, self.b = array("i"), array("i")
            self.a.fromfile(f, self.e)
            self.b.fromfile(f, self.e)

    def node(self, i: int) -> tuple[str, str]:
        kind = self.kinds[i]
        if kind == 0:
            h = (i * 2654435761) & 0xFFFFFFFF
            value = (
                f"{h:08x}-{(h >> 7) & 0xFFFF:04x}-4{i & 0xFFF:03x}-a{(h >> 3) & 0xFFF:03x}-{i:012x}"
            )
        elif kind == 1:
            value = f"usr_{i:09d}"
        elif kind == 2:
            value = f"person{i}@example.com"
        else:
            value = f"+1555{i:08d}"
        return TYPES[kind], value

    def roots(self) -> array[int]:
        """A plain union-find (by size, path halving) over the edges: the root of each node."""
        parent = array("i", range(self.n))
        size = array("i", [1]) * self.n

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for u, v in zip(self.a, self.b, strict=True):
            ru, rv = find(u), find(v)
            if ru != rv:
                if size[ru] < size[rv]:
                    ru, rv = rv, ru
                parent[rv] = ru
                size[ru] += size[rv]
        return array("i", (find(x) for x in range(self.n)))


# -- measuring -------------------------------------------------------------------------------


def _kind(sql: str) -> str:
    if "NOT EXISTS" in sql:
        return "fresh"
    if sql.lstrip().startswith("UPDATE"):
        return "relabel"
    if "JOIN _batch_nodes" in sql:
        return "lookup"
    if sql.lstrip().startswith("DELETE"):
        return "delete"
    if "FROM" in sql and "rudder_identity_merge_rules" in sql and "INSERT" not in sql:
        return "read"
    if "INSERT" in sql:
        if "rudder_identity_merge_rules" in sql:
            return "+rules"
        if "user_graph" in sql:
            return "+graph"
        if "rudder_identity_mappings" in sql:
            return "+map"
    return "other"


class TimedConnection:
    """Stands in for the writer's connection during one step: times each statement by kind.

    A statement's time includes fetching its result; register/unregister count as "other".
    """

    def __init__(self, con: Any, parts: Times, counts: Counter[str]) -> None:
        self._con = con
        self.parts = parts
        self.counts = counts

    def execute(self, sql: str, params: Any = None) -> Any:
        started = time.perf_counter()
        result = self._con.execute(sql) if params is None else self._con.execute(sql, params)
        kind = _kind(sql)
        self.parts[kind] += time.perf_counter() - started
        if kind == "relabel":  # UPDATE ... RETURNING: one row per mapping rewritten
            fetching = time.perf_counter()
            rows = result.fetchall()
            self.parts[kind] += time.perf_counter() - fetching
            self.counts["relabelled"] += len(rows)
            return _Rows(rows)
        return TimedResult(result, self.parts, kind)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class _Rows:
    """A result already fetched (the relabel's RETURNING rows)."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchall(self) -> list[Any]:
        return self._rows


class WriteTimer:
    """The writer's connection during a whole `write`: times COMMIT and the message-id insert."""

    def __init__(self, con: Any, parts: Times) -> None:
        self._con = con
        self.parts = parts

    def execute(self, sql: str, params: Any = None) -> Any:
        started = time.perf_counter()
        result = self._con.execute(sql) if params is None else self._con.execute(sql, params)
        if sql == "COMMIT":
            self.parts["commit"] += time.perf_counter() - started
        elif "_message_ids" in sql:
            self.parts["msgids"] += time.perf_counter() - started
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class TimedResult:
    def __init__(self, result: Any, parts: Times, kind: str) -> None:
        self._result, self._parts, self._kind = result, parts, kind

    def fetchall(self) -> Any:
        started = time.perf_counter()
        try:
            return self._result.fetchall()
        finally:
            self._parts[self._kind] += time.perf_counter() - started

    def fetchone(self) -> Any:
        started = time.perf_counter()
        try:
            return self._result.fetchone()
        finally:
            self._parts[self._kind] += time.perf_counter() - started


@dataclass
class Step:
    parts: Times = field(default_factory=lambda: defaultdict(float))
    counts: Counter[str] = field(default_factory=Counter)
    total: float = 0.0


@dataclass
class BatchStat:
    index: int
    edges: int
    build: float
    write: float
    step: Step
    mappings: int
    """Stored mappings after the batch."""
    rest: Times
    """Parts of the write outside the identity step: commit, msgids."""
    rules_before: int
    mappings_before: int


class Instrument:
    """Wraps `_apply_identity` / `rebuild_identity` of one writer and `identity.resolve`."""

    def __init__(self, writer: warehouse.DuckDBWriter) -> None:
        self.writer = writer
        self.current: Step | None = None
        self.profiler: cProfile.Profile | None = None
        self.mappings = 0
        original_resolve = identity.resolve

        def resolve(*args: Any, **kwargs: Any) -> identity.Resolution:
            started = time.perf_counter()
            result = original_resolve(*args, **kwargs)
            if self.current is not None:
                self.current.parts["resolve"] += time.perf_counter() - started
                self.current.counts["merges"] += len(result.relabel)
                self.current.counts["new_nodes"] += len(result.labels)
                self.current.counts["known"] += len(args[1]) if len(args) > 1 else 0
            self.mappings += len(result.labels)
            return result

        identity.resolve = resolve
        self._apply = writer._apply_identity
        self._rebuild = writer.rebuild_identity
        writer._apply_identity = self._timed(self._apply)  # type: ignore[method-assign]
        writer.rebuild_identity = self._timed(self._rebuild)  # type: ignore[method-assign]
        self.steps: list[Step] = []
        self.write_parts: Times = defaultdict(float)
        self._write = writer.write
        writer.write = self._timed_write  # type: ignore[method-assign]

    def _timed_write(self, *args: Any, **kwargs: Any) -> Any:
        self.write_parts = defaultdict(float)
        con = self.writer.con
        self.writer.con = WriteTimer(con, self.write_parts)  # type: ignore[assignment]
        try:
            return self._write(*args, **kwargs)
        finally:
            self.writer.con = con

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            step = self.current = Step()
            con = self.writer.con
            self.writer.con = TimedConnection(con, step.parts, step.counts)  # type: ignore[assignment]
            started = time.perf_counter()
            try:
                if self.profiler is not None:
                    return self.profiler.runcall(method, *args, **kwargs)
                return method(*args, **kwargs)
            finally:
                step.total = time.perf_counter() - started
                step.parts["other"] += step.total - sum(step.parts.values())
                self.writer.con = con
                self.current = None
                self.steps.append(step)

        return run


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the run ---------------------------------------------------------------------------------


def events_for(graph: Graph, start: int, end: int, seed: int, base: datetime) -> list[Any]:
    out = []
    for k in range(start, end):
        t1, v1 = graph.node(graph.a[k])
        t2, v2 = graph.node(graph.b[k])
        event = {
            "type": "merge",
            "userId": v1,
            "messageId": f"bench-{seed}-{k}",
            "mergeProperties": [{"type": t1, "value": v1}, {"type": t2, "value": v2}],
        }
        enrich(event, received_at=base + timedelta(milliseconds=k), request_ip=None, sent_at=None)
        out.append(("default", event))
    return out


class Expected:
    """The partition a plain union-find gives: the graph's nodes plus the probes' pairs."""

    def __init__(
        self, graph: Graph, roots: array[int], components: int, probes: list[str], size: int
    ) -> None:
        self.graph, self.roots, self.probes, self.size = graph, roots, probes, size
        self.nodes = graph.n + 2 * size * len(probes)
        self.components = components + size * len(probes)

    def table(self) -> pa.Table:
        kinds, values, roots = [], [], array("i", self.roots)
        for i in range(self.graph.n):
            kind, value = self.graph.node(i)
            kinds.append(kind)
            values.append(value)
        root = self.graph.n
        for tag in self.probes:
            for j in range(self.size):
                for kind, value in probe_nodes(tag, j):
                    kinds.append(kind)
                    values.append(value)
                    roots.append(root)
                root += 1
        return pa.table(
            {
                "t": pa.array(kinds, pa.string()),
                "v": pa.array(values, pa.string()),
                "root": pa.array(roots, pa.int32()),
            }
        )


def check_partition(con: Any, expected: Expected, what: str) -> bool:
    con.register("_expected", expected.table())
    try:
        stored, distinct_nodes, labels = con.execute(
            "SELECT count(*), count(DISTINCT (merge_property_type, merge_property_value)), "
            f"count(DISTINCT rudder_id) FROM {NAMESPACE}.rudder_identity_mappings"
        ).fetchone()
        joined, ids, rts, pairs = con.execute(
            "SELECT count(*), count(DISTINCT m.rudder_id), count(DISTINCT e.root), "
            f"count(DISTINCT (m.rudder_id, e.root)) FROM {NAMESPACE}.rudder_identity_mappings m "
            "JOIN _expected e ON m.merge_property_type = e.t AND m.merge_property_value = e.v"
        ).fetchone()
        top = [
            s
            for (s,) in con.execute(
                f"SELECT count(*) AS s FROM {NAMESPACE}.rudder_identity_mappings "
                "GROUP BY rudder_id ORDER BY s DESC LIMIT 5"
            ).fetchall()
        ]
    finally:
        con.unregister("_expected")
    ok = bool(
        stored == distinct_nodes == joined == expected.nodes
        and labels == ids == rts == pairs == expected.components
    )
    print(
        f"  {what}: {stored:,} mapping rows, {distinct_nodes:,} distinct nodes, {labels:,} "
        f"rudder_ids; joined to the union-find's {expected.nodes:,} nodes: {joined:,} rows, "
        f"{ids:,} ids <-> {rts:,} roots ({pairs:,} pairs, {expected.components:,} expected); "
        f"largest {top} -> {'OK' if ok else 'MISMATCH'}"
    )
    return ok


def probe_nodes(tag: str, j: int) -> tuple[tuple[str, str], tuple[str, str]]:
    return ("email", f"probe-{tag}-{j}@example.org"), ("user_id", f"probe-{tag}-{j}")


def probe_events(tag: str, size: int, base: datetime) -> list[Any]:
    out = []
    for j in range(size):
        (t1, v1), (t2, v2) = probe_nodes(tag, j)
        event = {
            "type": "merge",
            "userId": v2,
            "messageId": f"probe-{tag}-{j}",
            "mergeProperties": [{"type": t1, "value": v1}, {"type": t2, "value": v2}],
        }
        enrich(event, received_at=base, request_ip=None, sent_at=None)
        out.append(("default", event))
    return out


def batch_line(b: BatchStat) -> str:
    return (
        f"{b.index + 1:5d} {b.edges:7d} {b.mappings:9d} {b.build * 1000:6.0f} "
        f"{b.write * 1000:6.0f} {b.rest['commit'] * 1000:6.0f} {b.rest['msgids'] * 1000:6.0f} | "
        f"{b.step.total * 1000:5.0f}  {fmt_parts(b.step, PARTS)} | "
        f"{b.step.counts['merges']:6d} {b.step.counts['relabelled']:10d}"
    )


def fmt_parts(step: Step, parts: tuple[str, ...]) -> str:
    return " ".join(f"{step.parts[p] * 1000:7.1f}" for p in parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--identifiers", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="events per micro-batch")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="keep the database here (default: temp)")
    parser.add_argument("--profile-last", type=int, default=0, metavar="N")
    parser.add_argument(
        "--probes", type=int, default=3, help="probe batches at the start and at the end"
    )
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-identity-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    print(
        f"identifiers {args.identifiers:,}, edges {args.edges:,}, batch {args.batch:,}, "
        f"seed {args.seed}, probes {args.probes}, workdir {workdir}"
    )
    started = time.perf_counter()
    graph_file = workdir / "graph.bin"
    child = multiprocessing.get_context("fork").Process(
        target=generate, args=(str(graph_file), args.identifiers, args.edges, args.seed)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        print(f"generation failed (exit {child.exitcode})")
        return
    graph = Graph(graph_file)
    roots = graph.roots()
    comp_sizes = Counter(roots)
    components = len(comp_sizes)
    by_size = sorted(comp_sizes.values(), reverse=True)
    histogram = Counter(min(s.bit_length() - 1, 20) for s in by_size)
    print(
        f"graph: {graph.n:,} identifiers, {graph.e:,} edges, {components:,} components "
        f"(largest {by_size[:5]}, median {statistics.median(by_size):g}); sizes 2^k..: "
        + ", ".join(f"{1 << k}+: {histogram[k]:,}" for k in sorted(histogram))
        + f"  [{time.perf_counter() - started:.1f} s]"
    )
    types = Counter(TYPES[k] for k in graph.kinds)
    print("types: " + ", ".join(f"{t} {c:,}" for t, c in types.items()))

    settings = Settings(
        database=workdir / "warehouse.duckdb",
        spool_dir=workdir / "spool",
        load_max_events=args.batch,
    )
    pipeline = Pipeline(settings)
    pipeline.open(create_default=True)
    writer = pipeline._writer
    assert writer is not None
    instrument = Instrument(writer)
    namespaces = {name: s.namespace for name, s in pipeline.sources.items()}
    base = datetime(2025, 1, 1, tzinfo=UTC)
    peaks: dict[str, float] = {"generate+union-find (this process)": peak_mb()}
    can_reset = reset_peak()
    stored_rules = 0
    probe_tags: list[str] = []

    def load(events: list[Any], segment_id: str, index: int, edges: int) -> BatchStat:
        nonlocal stored_rules
        before = (stored_rules, instrument.mappings)
        t1 = time.perf_counter()
        batch = microbatch.build(writer, events, namespaces)
        t2 = time.perf_counter()
        writer.write(batch, [(segment_id, len(events))])
        t3 = time.perf_counter()
        stored_rules += len(events)  # every edge is a distinct rule
        step = instrument.steps[-1]
        return BatchStat(
            index,
            edges,
            t2 - t1,
            t3 - t2,
            step,
            instrument.mappings,
            instrument.write_parts,
            *before,
        )

    def probe(tag: str) -> BatchStat:
        probe_tags.append(tag)
        return load(probe_events(tag, args.batch, base), f"probe-{tag}", -1, 0)

    start_probes = [probe(f"s{i}") for i in range(args.probes + 1 if args.probes else 0)][1:]

    batches: list[BatchStat] = []
    count = (graph.e + args.batch - 1) // args.batch
    prep_total = 0.0
    load_started = time.perf_counter()
    for index in range(count):
        start, end = index * args.batch, min(graph.e, (index + 1) * args.batch)
        t0 = time.perf_counter()
        events = events_for(graph, start, end, args.seed, base)
        prep_total += time.perf_counter() - t0
        if args.profile_last and index >= count - args.profile_last:
            instrument.profiler = instrument.profiler or cProfile.Profile()
        batches.append(load(events, f"bench-{index:06d}", index, end))
        if (index + 1) % 20 == 0 or index + 1 == count:
            print(
                f"  [{index + 1}/{count} batches, {time.perf_counter() - load_started:.0f} s, "
                f"last step {batches[-1].step.total * 1000:.0f} ms]",
                file=sys.stderr,
                flush=True,
            )
    load_wall = time.perf_counter() - load_started
    profiler, instrument.profiler = instrument.profiler, None
    end_probes = [probe(f"e{i}") for i in range(1, args.probes + 1)]
    peaks["incremental load"] = peak_mb()

    header = (
        "batch   edges  mappings  build  write commit msgids |  step  "
        + " ".join(f"{p:>7}" for p in PARTS)
        + " | merges relabelled"
    )
    print("\nper micro-batch (ms; commit and msgids are parts of write outside the identity step):")
    print(header)
    shown = {
        i for i in range(len(batches)) if i < 10 or i >= len(batches) - 10 or (i + 1) % 20 == 0
    }
    for b in batches:
        if b.index in shown:
            print(batch_line(b))

    tenth = max(1, len(batches) // 10)
    first = [b.step.total for b in batches[:tenth]]
    last = [b.step.total for b in batches[-tenth:]]
    med_first, med_last = statistics.median(first), statistics.median(last)
    print(
        f"\nidentity step, median of the first {tenth} batches: {med_first * 1000:.0f} ms; "
        f"of the last {tenth}: {med_last * 1000:.0f} ms (x{med_last / med_first:.2f})"
    )
    for part in PARTS:
        f = statistics.median(b.step.parts[part] for b in batches[:tenth])
        la = statistics.median(b.step.parts[part] for b in batches[-tenth:])
        print(f"  {part:8} {f * 1000:8.1f} -> {la * 1000:8.1f} ms")
    print(
        "  (the mix changes over the run: early batches bring mostly new identifiers, late ones "
        "mostly link known ones; the probes below compare the same work)"
    )
    if len(batches) >= 3:
        for part, xs, what in (
            ("fresh", [b.rules_before for b in batches], "stored rules"),
            ("lookup", [b.mappings_before for b in batches], "stored mappings"),
        ):
            ys = [b.step.parts[part] for b in batches]
            slope, intercept = statistics.linear_regression(xs, ys)
            print(
                f"  fit: {part} = {intercept * 1000:.0f} ms + {slope * 1e8:.1f} ms per 100k {what}"
                f" ({slope * xs[-1] * 1000:+.0f} ms at the end)"
            )
    if start_probes and end_probes:
        print(
            f"\nprobe batches ({args.batch:,} merges, each between two new identifiers: the same "
            "work each time), identity step in ms:"
        )
        print("  when     rules  mappings   step  " + " ".join(f"{p:>7}" for p in PARTS))
        for when, probes in (("start", start_probes), ("end", end_probes)):
            for b in probes:
                print(
                    f"  {when:5} {b.rules_before:8d} {b.mappings_before:9d} "
                    f"{b.step.total * 1000:6.0f}  {fmt_parts(b.step, PARTS)}"
                )
        s_med = statistics.median(b.step.total for b in start_probes)
        e_med = statistics.median(b.step.total for b in end_probes)
        print(
            f"  median: start {s_med * 1000:.0f} ms, end {e_med * 1000:.0f} ms "
            f"(x{e_med / s_med:.2f}, {(e_med - s_med) * 1000:+.0f} ms)"
        )
    write_total = sum(b.write for b in batches)
    build_total = sum(b.build for b in batches)
    step_total = sum(b.step.total for b in batches)
    commit_total = sum(b.rest["commit"] for b in batches)
    ids_total = sum(b.rest["msgids"] for b in batches)
    print(
        f"\nincremental: {graph.e:,} edges in {len(batches)} micro-batches, wall {load_wall:.1f} s "
        f"(event generation+enrich {prep_total:.1f} s, build {build_total:.1f} s, "
        f"write {write_total:.1f} s: identity {step_total:.1f} s, commit {commit_total:.1f} s, "
        f"message ids {ids_total:.1f} s)"
    )
    print(f"  edges/s, write (whole transactions): {graph.e / write_total:,.0f}")
    print(f"  edges/s, build + write:              {graph.e / (build_total + write_total):,.0f}")
    print(f"  edges/s, identity step only:         {graph.e / step_total:,.0f}")

    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
        print(f"\ncProfile of the identity step of the last {args.profile_last} batches:")
        print(text.getvalue().strip())
    expected = Expected(graph, roots, components, probe_tags, args.batch)
    print("\nchecks:")
    con = pipeline.con
    ok_incremental = check_partition(con, expected, "incremental")
    con.execute(
        "CREATE TEMP TABLE _before AS SELECT merge_property_type AS t, merge_property_value AS v, "
        f"rudder_id FROM {NAMESPACE}.rudder_identity_mappings"
    )

    reset_peak()
    rebuild_started = time.perf_counter()
    nodes = pipeline.rebuild_identity(NAMESPACE)
    rebuild_time = time.perf_counter() - rebuild_started
    peaks["rebuild"] = peak_mb()
    step = instrument.steps[-1]
    rebuild_parts = "  ".join(f"{p} {step.parts[p]:.1f}" for p in REBUILD_PARTS)
    print(
        f"\nrebuild: {nodes:,} identifiers from {stored_rules:,} rules in {rebuild_time:.1f} s -> "
        f"{stored_rules / rebuild_time:,.0f} edges/s  (s: {rebuild_parts})"
    )

    print("\nchecks:")
    ok_rebuild = check_partition(con, expected, "rebuild")
    same = con.execute(
        "SELECT count(*), count(DISTINCT b.rudder_id), count(DISTINCT m.rudder_id), "
        f"count(DISTINCT (b.rudder_id, m.rudder_id)) FROM {NAMESPACE}.rudder_identity_mappings m "
        "JOIN _before b ON m.merge_property_type = b.t AND m.merge_property_value = b.v"
    ).fetchone() or (0, 0, 0, 0)
    ok_same = same[0] == expected.nodes and same[1] == same[2] == same[3]
    print(
        f"  incremental vs rebuild: {same[0]:,} nodes in both, {same[1]:,} ids before, "
        f"{same[2]:,} after, {same[3]:,} pairs -> {'OK' if ok_same else 'MISMATCH'}"
    )
    verdict = "OK" if ok_incremental and ok_rebuild and ok_same else "MISMATCH"
    print(f"  overall: {verdict}")

    pipeline.close()
    size = (workdir / "warehouse.duckdb").stat().st_size
    print(f"\nmemory (peak RSS, MB{'' if can_reset else '; VmHWM not resettable: cumulative'}):")
    for phase, mb in peaks.items():
        print(f"  {phase:36} {mb:8.0f}")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  peak of the run: {max(peaks.values()):.0f} MB (ru_maxrss now {maxrss:.0f} MB, "
        f"RSS now {rss_mb():.0f} MB)"
    )
    print(f"database file: {size / 2**20:.0f} MB; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
