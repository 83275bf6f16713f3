"""What starting an execution costs, and reading it in another process, by workflow size.

For chains of 1, 10 and 50 steps (``--sizes``), on a fresh SQLite file (WAL,
``synchronous = NORMAL``) per run:

- *start*: ``Backend.start`` of ``--count`` executions of one spec, one after
  another in one process (what a client, a schedule or a parent step does):
  the CPU time and the wall time per start, and the rows of ``runfox_steps`` each
  start wrote. A start stores the execution, claims its first step and queues
  that step's job in one commit.
- *cold load*: a second store on the same file, with no record cached, loads
  each of those executions once (what a worker does with the first job of an
  execution another process started): CPU time per load.

Medians of ``--repeat`` runs. The work a start does grows with the steps it
must write; a start that writes a row for every step of the workflow pays for
all of them, although only the first one was claimed.

    python benchmarks/bench_start.py [--sizes 1,10,50] [--count 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

from sqlalchemy import func, select

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.sql import SqlStore, parts_from_url
from runfox.backend.sql.schema import steps


def chain(length: int) -> dict[str, Any]:
    """``length`` steps, each taking the output of the one before (and a label)."""
    body: list[dict[str, Any]] = [{"id": "s0", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    body += [{"id": f"s{i}", "fn": "inc", "depends_on": [f"s{i - 1}"],
              "input": {"x": {"var": f"steps.s{i - 1}.output.x"},
                        "label": f"step {i} of the pipeline"}} for i in range(1, length)]
    return {"name": f"chain-{length}", "steps": body,
            "outputs": {"x": {"var": f"steps.s{length - 1}.output.x"}}}


def one_run(length: int, count: int) -> dict[str, float]:
    """One run on a fresh file: ms per start (CPU, wall), step rows per start, ms
    per cold load."""
    with tempfile.TemporaryDirectory(prefix="runfox-start-") as directory:
        url = f"sqlite:///{directory}/runfox.db"
        store, runner = parts_from_url(url)
        try:
            backend = Backend(store=store, runner=runner)
            spec = rfx.load_spec(chain(length))
            for _ in range(20):  # warm: compiled statements, the spec's plan
                backend.start(spec, {"x": 0})
            cpu, wall = time.process_time(), time.perf_counter()
            ids = [backend.start(spec, {"x": 0}) for _ in range(count)]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            with store.engine.connect() as conn:
                rows = conn.execute(select(func.count()).select_from(steps)).scalar() or 0
            reader = SqlStore(url, cache_size=0)
            try:
                reader.load_shared(ids[0])
                load = time.process_time()
                for key in ids:
                    reader.load_shared(key)
                load = time.process_time() - load
            finally:
                reader.close()
        finally:
            runner.close()
            store.close()
    return {"start_cpu": cpu / count * 1000, "start_wall": wall / count * 1000,
            "rows": rows / (count + 20), "load_cpu": load / count * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not args.json:
        print(f"Starting {args.count} executions of one chain, SQLite WAL, median of "
              f"{args.repeat} ({os.cpu_count()} CPUs)")
        print(f"  {'steps':>5}  {'start CPU ms':>12}  {'start wall ms':>13}  "
              f"{'step rows/start':>15}  {'cold load CPU ms':>16}")
    medians: dict[int, dict[str, float]] = {}
    for length in sizes:
        runs = [one_run(length, args.count) for _ in range(args.repeat)]
        medians[length] = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
        m = medians[length]
        if not args.json:
            print(f"  {length:>5}  {m['start_cpu']:>12.3f}  {m['start_wall']:>13.3f}  "
                  f"{m['rows']:>15.1f}  {m['load_cpu']:>16.3f}")
    if args.json:
        print(json.dumps(medians))


if __name__ == "__main__":
    main()
