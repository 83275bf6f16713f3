"""One worker's throughput with 1, 1,000, 10,000 and 100,000 open executions.

The open executions are written straight into the tables (``executemany`` in
chunks, no runfox calls), cloned from two templates that runfox itself made in a
scratch SQLite file: a 3-step chain whose first step is *in flight* (its job
claimed by a worker that is gone, the lease running for another day) and one
whose first step *waits for a retry* due in a day. Half of the open ones are of
each kind: nothing in them is due, so a worker that only reads what is due never
touches them; a worker that scans running executions (its sweep) or sorts the
whole queue (its claim) pays for every one.

For each size (the database grows from one size to the next), ``--batch`` chains
of 10 steps are created and dispatched while one ``runfox worker`` process
(default settings but a 10 ms poll: the sweep runs every 5 s) runs them; the
clock stops when the batch is done or after ``--limit`` seconds, and steps/s is
completed batch steps over the elapsed time. Printed: steps/s per size, median
of ``--repeat`` batches (a batch cut short is not repeated), and max/min over the
sizes (target: within 1.5x). Then on PostgreSQL, the same with 4 worker
processes against the largest size.

    python benchmarks/bench_scale.py [--sizes 1,1000,10000,100000] [--batch 50]
        [--repeat 3] [--limit 60] [--postgres URL] [--no-postgres] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from typing import Any

from bench_sql import (
    DEFAULT_URLS,
    LABELS,
    chain,
    fresh_database,
    reachable,
    start_workers,
    stop_workers,
)
from sqlalchemy import Table, delete, func, insert, select

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.sql import parts_from_url
from runfox.backend.sql.schema import steps, tasks, workflows

DAY = 86400.0
GENERATED = "20260101T000000.000000Z-"  # execution ids of the generated open executions
CHUNK = 5000

OPEN_SPEC = {"name": "open", "steps": [
    {"id": "a", "fn": "inc", "max_attempts": 3, "retry": {"delay": DAY, "max_delay": DAY},
     "input": {"x": {"var": "input.x"}}},
    {"id": "b", "fn": "inc", "depends_on": ["a"], "input": {"x": {"var": "steps.a.output.x"}}},
    {"id": "c", "fn": "inc", "depends_on": ["b"], "input": {"x": {"var": "steps.b.output.x"}}},
]}


def templates() -> list[dict[str, list[dict[str, Any]]]]:
    """The rows of two open executions runfox made: one in flight, one waiting a retry."""
    with tempfile.TemporaryDirectory(prefix="runfox-scale-") as directory:
        store, runner = parts_from_url(f"sqlite:///{directory}/template.db")
        backend = Backend(store=store, runner=runner)
        spec = rfx.load_spec(OPEN_SPEC)
        flying, waiting = (backend.create(spec, {"x": 0}) for _ in range(2))
        for key in (flying, waiting):
            backend.apply_and_advance(key)
        runner.take_pending_jobs(lease=DAY)  # both claimed by a worker that then vanishes
        failed = {"ok": False, "error": "boom", "error_type": "RuntimeError"}
        backend.apply_and_advance(waiting, [("a", failed, 0)])
        out = []
        with store.engine.connect() as conn:
            conn.execute(delete(tasks).where(tasks.c.workflow_execution_id == waiting))
            conn.commit()
            for key in (flying, waiting):
                rows: dict[str, list[dict[str, Any]]] = {}
                for table in (workflows, steps, tasks):
                    query = select(table).where(table.c.workflow_execution_id == key)
                    rows[table.name] = [dict(r) for r in conn.execute(query).mappings()]
                for row in rows["runfox_tasks"]:
                    row.pop("id")
                out.append(rows)
        runner.close()
        store.close()
    assert out[0]["runfox_tasks"] and not out[1]["runfox_tasks"], out
    assert any(r["status"] == "retry" for r in out[1]["runfox_steps"]), out[1]
    return out


_NOT_BEFORE = re.compile(r'"not_before":[-+.0-9eE]+')


def _clone(rows: list[dict[str, Any]], old: str, new: str, now: float) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        copy = {}
        for name, value in row.items():
            if isinstance(value, str) and old in value:
                value = value.replace(old, new)
            copy[name] = value
        if "visible_at" in copy:
            copy["visible_at"] = now + DAY
        if copy.get("status") == "retry":  # a step row: its retry is due in a day
            copy["data"] = _NOT_BEFORE.sub(f'"not_before":{now + DAY!r}', copy["data"], 1)
        # The header's due columns follow the rows: a retry due in a day; a step in
        # flight looked at after the joint grace (an hour), as a real write sets them.
        if copy.get("retry_at") is not None:
            copy["retry_at"] = copy["due_at"] = now + DAY
        elif copy.get("due_at") is not None:
            copy["due_at"] = now + 3600.0
        out.append(copy)
    return out


def add_open(engine: Any, shapes: list[dict[str, list[dict[str, Any]]]], first: int,
             count: int) -> float:
    """Insert open executions number ``first`` .. ``first + count - 1``; seconds taken."""
    started = time.perf_counter()
    now = time.time()
    tables: dict[str, Table] = {t.name: t for t in (workflows, steps, tasks)}
    for low in range(first, first + count, CHUNK):
        batch: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        for n in range(low, min(first + count, low + CHUNK)):
            shape = shapes[n % 2]
            head = shape["runfox_workflows"][0]
            old = head["workflow_execution_id"]
            execution_id = f"{GENERATED}{n:016x}"
            new = f"{head['workflow_id']}#{execution_id}"
            for name in tables:
                rows = _clone(shape[name], old, new, now)
                if name == "runfox_workflows":
                    rows[0]["execution_id"] = execution_id
                batch[name].extend(rows)
        with engine.begin() as conn:
            for name, table in tables.items():
                if batch[name]:
                    conn.execute(insert(table), batch[name])
    return time.perf_counter() - started


def measure(url: str, store: Any, backend: Backend, workers: int, batch: int, length: int,
            limit: float) -> tuple[float, int]:
    """Run ``batch`` chains with ``workers`` worker processes; (steps/s, steps done)."""
    spec = rfx.load_spec(chain(length))
    ids = [backend.create(spec, {"x": 0}) for _ in range(batch)]
    done_steps = (select(func.count()).select_from(steps)
                  .where(steps.c.workflow_execution_id.in_(ids), steps.c.status == "complete"))
    total = batch * length
    procs = start_workers(url, workers, "--sweep-interval", "5")
    try:
        started = time.perf_counter()
        for wf_id in ids:
            backend.apply_and_advance(wf_id)
        while True:
            with store.engine.connect() as conn:
                done = int(conn.execute(done_steps).scalar() or 0)
            elapsed = time.perf_counter() - started
            if done >= total or elapsed >= limit:
                break
            time.sleep(0.05)
    finally:
        logged = stop_workers(procs)
    noisy = [line for line in logged if "WARNING" in line or "ERROR" in line]
    if noisy:
        print(f"  (the workers logged {len(noisy)} warnings/errors; last: {noisy[-1].strip()})")
    return done / elapsed, done


def _rate(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2f}"


def run_kind(kind: str, admin_url: str, sizes: list[int], args: argparse.Namespace,
             shapes: list[dict[str, list[dict[str, Any]]]]) -> None:
    label = LABELS[kind]
    rates: list[float] = []
    with fresh_database(kind, admin_url) as url:
        store, runner = parts_from_url(url)
        backend = Backend(store=store, runner=runner)
        have = 0
        for size in sizes:
            took = add_open(store.engine, shapes, have, size - have)
            have = size
            runs = [measure(url, store, backend, 1, args.batch, args.length, args.limit)]
            while len(runs) < args.repeat and runs[0][1] >= args.batch * args.length:
                runs.append(measure(url, store, backend, 1, args.batch, args.length,
                                    args.limit))  # a run cut short is not repeated
            rate = statistics.median(r for r, _ in runs)
            rates.append(rate)
            finished = min(d for _, d in runs)
            note = "" if finished >= args.batch * args.length else \
                f"  (only {finished} of {args.batch * args.length} steps in {args.limit:.0f} s)"
            print(f"{label:<11} {size:>8} {_rate(rate):>9} {_rate(min(r for r, _ in runs)):>7}-"
                  f"{_rate(max(r for r, _ in runs)):<7} {took:>7.1f}s{note}", flush=True)
        if rates and min(rates) > 0:
            print(f"{label:<11} max/min over sizes: {max(rates) / min(rates):.2f}x "
                  "(target <= 1.5x)", flush=True)
        else:
            print(f"{label:<11} max/min over sizes: infinite (a size finished no step)")
        if kind == "postgresql" and args.workers4:
            runs = [measure(url, store, backend, 4, args.batch * 4, args.length, args.limit)]
            while len(runs) < args.repeat and runs[0][1] >= args.batch * 4 * args.length:
                runs.append(measure(url, store, backend, 4, args.batch * 4, args.length,
                                    args.limit))
            rate = statistics.median(r for r, _ in runs)
            print(f"{label:<11} {have:>8} {_rate(rate):>9} {_rate(min(r for r, _ in runs)):>7}-"
                  f"{_rate(max(r for r, _ in runs)):<7}          4 workers, "
                  f"{args.batch * 4} chains", flush=True)
        with store.engine.connect() as conn:  # the generated ones must stay untouched
            still = conn.execute(select(func.count()).select_from(workflows).where(
                workflows.c.status == "in_progress",
                workflows.c.execution_id.startswith(GENERATED))).scalar()
        if still != have:
            print(f"{label:<11} note: {still} of the {have} generated executions still open")
        runner.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,1000,10000,100000")
    parser.add_argument("--batch", type=int, default=50, help="chains per measurement")
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=float, default=60.0,
                        help="seconds a measurement may take before it is cut short")
    parser.add_argument("--postgres", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-4-workers", dest="workers4", action="store_false")
    parser.add_argument("--quick", action="store_true",
                        help="sizes 1 and 1,000, 10 chains, once, 30 s limit")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.batch, args.repeat, args.limit = "1,1000", 10, 1, 30.0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    kinds = [] if args.no_sqlite else [("sqlite", "")]
    if not args.no_postgres:
        why = reachable(args.postgres)
        if why is None:
            kinds.append(("postgresql", args.postgres))
        else:
            print(f"(PostgreSQL skipped: {why})")
    shapes = templates()
    print(f"one worker process, {args.batch} chains x {args.length} steps per measurement, "
          f"median of {args.repeat}, cut at {args.limit:.0f} s ({os.cpu_count()} CPUs); open "
          "executions: half in flight (lease ends in a day), half waiting a retry in a day")
    print(f"{'backend':<11} {'open':>8} {'steps/s':>9} {'range':>15} {'insert':>8}")
    for kind, url in kinds:
        run_kind(kind, url, sizes, args, shapes)


if __name__ == "__main__":
    main()
