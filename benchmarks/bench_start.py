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

- *drain*: ``--count`` one-step workflows started (queued) by this process,
  then one ``runfox worker --concurrency 16`` on SQLite, PostgreSQL and MariaDB
  (``--databases``; the URLs of ``bench_sql.py``): steps/s from the moment
  their jobs become visible (hidden while the worker starts) until the last
  workflow ended. Every record is one the worker has not
  seen, so each result starts with a read of its record; the results of the
  jobs that finish together are applied in one unit, and their records read
  together (``Store.load_shared_many``).

Medians of ``--repeat`` runs. The work a start does grows with the steps it
must write; a start that writes a row for every step of the workflow pays for
all of them, although only the first one was claimed.

    python benchmarks/bench_start.py [--sizes 1,10,50] [--count 500] [--repeat 5]
        [--databases sqlite,postgresql,mysql] [--drain 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from bench_huey import one_step
from bench_sql import (
    DEFAULT_URLS,
    LABELS,
    WARM_UP,
    fresh_database,
    reachable,
    start_workers,
    stop_workers,
    wait_until_done,
)
from sqlalchemy import func, select, update

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.sql import SqlStore, parts_from_url
from runfox.backend.sql.schema import steps, tasks


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


def drain(kind: str, count: int) -> float:
    """Steps/s of one worker (16 slots) running ``count`` queued one-step workflows."""
    with fresh_database(kind, DEFAULT_URLS.get(kind, "")) as url:
        store, runner = parts_from_url(url)
        try:
            backend = Backend(store=store, runner=runner)
            spec = rfx.load_spec(one_step())
            for _ in range(count):
                backend.start(spec, {"x": 0})
            # The jobs are hidden while the worker starts, and shown at once when
            # the clock starts (the worker polls every 10 ms while idle).
            with store.engine.begin() as conn:
                conn.execute(update(tasks).values(visible_at=tasks.c.visible_at + 3600))
            workers = start_workers(url, 1, "--concurrency", "16")
            try:
                time.sleep(WARM_UP)
                started = time.perf_counter()
                with store.engine.begin() as conn:
                    conn.execute(update(tasks).values(visible_at=0))
                wait_until_done(store, count)
                return count / (time.perf_counter() - started)
            finally:
                stop_workers(workers)
        finally:
            runner.close()
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--databases", default="sqlite,postgresql,mysql")
    parser.add_argument("--drain", type=int, default=1000,
                        help="one-step workflows for the drain part (0: skip it)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        print(f"Starting {args.count} executions of one chain, SQLite WAL, median of "
              f"{args.repeat} ({os.cpu_count()} CPUs)")
        print(f"  {'steps':>5}  {'start CPU ms':>12}  {'start wall ms':>13}  "
              f"{'step rows/start':>15}  {'cold load CPU ms':>16}")
    for length in sizes:
        runs = [one_run(length, args.count) for _ in range(args.repeat)]
        m = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
        print(f"  {length:>5}  {m['start_cpu']:>12.3f}  {m['start_wall']:>13.3f}  "
              f"{m['rows']:>15.1f}  {m['load_cpu']:>16.3f}", flush=True)
    if args.drain <= 0:
        return
    print(f"One worker (--concurrency 16) draining {args.drain} queued one-step workflows, "
          f"median of {args.repeat}")
    for kind in args.databases.split(","):
        if kind != "sqlite":
            why = reachable(DEFAULT_URLS[kind])
            if why is not None:
                print(f"  {LABELS[kind]}: skipped, the server does not answer ({why})")
                continue
        rates = [drain(kind, args.drain) for _ in range(args.repeat)]
        print(f"  {LABELS[kind]:<10}  {statistics.median(rates):>7,.0f} steps/s  "
              f"({min(rates):,.0f}-{max(rates):,.0f})", flush=True)


if __name__ == "__main__":
    main()
