"""Dedup benchmark: the exactly-once key store without an index (ours) against a PRIMARY KEY.

Migration 0003 dropped the PRIMARY KEY of `_message_ids`, whose ART index DuckDB keeps whole in
memory. This measures what that trade costs and saves, side by side in one run. For each layout,
in a child process of its own (so memory figures are its own), on a fresh DuckDB file:

  fill     --keys keys (source `default`, messageIds m-0, m-1, ...) inserted in SQL, in
           chunks of 1M, then CHECKPOINT and a reopen of the file (a server restart)
  probe    --rounds micro-batches of --batch keys, half already stored and half new: the time
           of `DuckDBWriter.seen()` (the loader's own probe) and of `DuckDBWriter.write()` of a
           batch that holds only the new keys (their INSERT and the COMMIT)
  memory   DuckDB's own memory after the rounds (duckdb_memory(): ART_INDEX is the index, the
           rest mostly cached blocks) and the child's peak RSS

  index-free   `key UHUGEINT NOT NULL` (ours, since migration 0003): the probe is a hash join
               of the batch against the whole column
  primary-key  `key UHUGEINT PRIMARY KEY` (before migration 0003): the probe uses the ART

Medians of the rounds are printed, with ours / primary-key. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYOUTS = {
    "index-free": "CREATE TABLE _message_ids (key UHUGEINT NOT NULL)",
    "primary-key": "CREATE TABLE _message_ids (key UHUGEINT PRIMARY KEY)",
}
FILL_CHUNK = 1_000_000


def measure(layout: str, args: argparse.Namespace, database: Path) -> dict[str, Any]:
    """One layout in this process: fill, reopen, probe and insert; the figures as a dict."""
    from loader import warehouse
    from loader.microbatch import Batch, message_key

    con = warehouse.connect(database, memory_limit=args.memory_limit)
    con.execute(LAYOUTS[layout])
    started = time.perf_counter()
    for first in range(0, args.keys, FILL_CHUNK):
        con.execute(
            "INSERT INTO _message_ids "
            "SELECT md5_number('default' || chr(0) || 'm-' || range) FROM range(?, ?)",
            [first, min(first + FILL_CHUNK, args.keys)],
        )
    fill = time.perf_counter() - started
    con.execute("CHECKPOINT")
    con.close()

    con = warehouse.connect(database, memory_limit=args.memory_limit)
    writer = warehouse.DuckDBWriter(con)
    rng = random.Random(args.seed)
    probes, inserts, fresh = [], [], args.keys
    for _ in range(args.rounds):
        stored = [
            message_key("default", f"m-{rng.randrange(args.keys)}") for _ in range(args.batch // 2)
        ]
        new = [message_key("default", f"m-{fresh + i}") for i in range(args.batch - len(stored))]
        fresh += len(new)
        keys = stored + new
        rng.shuffle(keys)
        started = time.perf_counter()
        found = writer.seen(keys)
        probes.append(time.perf_counter() - started)
        assert found == set(stored), "the probe must find exactly the stored keys"
        batch = Batch([], {}, {}, [k for k in keys if k not in found], len(keys), len(found), [])
        started = time.perf_counter()
        writer.write(batch)  # one transaction: here, only the new keys
        inserts.append(time.perf_counter() - started)
    memory = dict(
        con.execute(
            "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0"
        ).fetchall()
    )
    con.close()
    return {
        "fill_s": fill,
        "probe_ms": 1000 * statistics.median(probes),
        "insert_ms": 1000 * statistics.median(inserts),
        "index_mb": memory.get("ART_INDEX", 0) / 1e6,
        "duckdb_mb": sum(memory.values()) / 1e6,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "file_mb": database.stat().st_size / 1e6,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--keys", type=int, default=10_000_000, help="keys stored before the probes (10000000)")
    add("--batch", type=int, default=50_000, help="keys per micro-batch (50000, the default)")
    add("--rounds", type=int, default=7, help="micro-batches probed per layout (7)")
    add("--memory-limit", default="2GB", help="DuckDB memory_limit (2GB, the default)")
    add("--seed", type=int, default=1, help="random seed of the batches (1)")
    add("--internal", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.internal:
        layout, database = args.internal
        print(json.dumps(measure(layout, args, Path(database))))
        return
    print(
        f"{args.keys:,} stored keys, micro-batches of {args.batch:,} (half stored, half new), "
        f"{args.rounds} rounds, memory_limit {args.memory_limit}, {os.cpu_count()} cores"
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        for layout in LAYOUTS:
            passed = [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "internal"
            ]
            command = [
                sys.executable,
                __file__,
                *passed,
                "--internal",
                layout,
                f"{tmp}/{layout}.duckdb",
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"{layout} failed:\n{out.stderr[-3000:]}")
            results[layout] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{'layout':12} {'fill s':>7} {'probe ms':>9} {'insert ms':>10} {'index MB':>9} "
        f"{'duckdb MB':>10} {'peak MB':>8} {'file MB':>8}"
    )
    for layout, r in results.items():
        print(
            f"{layout:12} {r['fill_s']:7.1f} {r['probe_ms']:9.1f} {r['insert_ms']:10.1f} "
            f"{r['index_mb']:9.1f} {r['duckdb_mb']:10.1f} {r['peak_mb']:8.0f} {r['file_mb']:8.0f}"
        )
    ours, pk = results["index-free"], results["primary-key"]
    both = (ours["probe_ms"] + ours["insert_ms"]) / (pk["probe_ms"] + pk["insert_ms"])
    print(
        f"ours / primary-key per micro-batch: probe {ours['probe_ms'] / pk['probe_ms']:.2f}x, "
        f"insert {ours['insert_ms'] / pk['insert_ms']:.2f}x, both {both:.2f}x; peak memory "
        f"{ours['peak_mb'] / pk['peak_mb']:.2f}x, file {ours['file_mb'] / pk['file_mb']:.2f}x; "
        f"the index held {pk['index_mb']:.0f} MB ({1e6 * pk['index_mb'] / args.keys:.0f} B per key)"
    )


if __name__ == "__main__":
    main()
