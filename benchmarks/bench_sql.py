"""Durable throughput of the SQL backends with external worker processes.

1. Many small workflows (chains of 10 steps) on SQLite and PostgreSQL, run by
   1, 2 and 4 ``runfox worker`` processes (each drives what it finishes). The
   clock starts when the first jobs are dispatched and stops when the last
   workflow completes. A step makes two committed transitions (claimed, then
   completed), so transitions/s = 2 x steps/s.
2. The 1,000-step fan-out (root, 998 leaves, sink) on SQLite driven by
   ``wf.run()``: with an in-process worker, and polling while two
   ``runfox worker --no-drive`` processes run the jobs. 100 and 300 steps are
   shown too, to compare with runfox 0.0.7 (4.1 s and 31 s).

Every run gets a fresh database (a temporary file, or a scratch PostgreSQL
database that is dropped afterwards). Medians of ``--repeat`` runs.

    python benchmarks/bench_sql.py [--workflows 200] [--repeat 3]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--no-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url

import runfox as rfx
from runfox.backend import Backend, InProcessWorker
from runfox.backend.sql import parts_from_url
from runfox.backend.sql.schema import workflows

HERE = Path(__file__).resolve().parent
TERMINAL = ("complete", "halted", "failed", "cancelled")


def noop(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The executor: no work, so the numbers are orchestration cost only."""
    return {"x": inputs.get("x", 0) + 1}


def chain(n: int) -> dict[str, Any]:
    steps = [{"id": "s0", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    steps += [{"id": f"s{i}", "fn": "inc", "depends_on": [f"s{i - 1}"],
               "input": {"x": {"var": f"steps.s{i - 1}.output.x"}}} for i in range(1, n)]
    return {"name": f"chain-{n}", "steps": steps,
            "outputs": {"x": {"var": f"steps.s{n - 1}.output.x"}}}


def fan(n: int) -> dict[str, Any]:
    leaves = n - 2
    steps = [{"id": "root", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    steps += [{"id": f"l{i}", "fn": "inc", "depends_on": ["root"],
               "input": {"x": {"var": "steps.root.output.x"}}} for i in range(leaves)]
    steps.append({"id": "sink", "fn": "inc", "depends_on": [f"l{i}" for i in range(leaves)],
                  "input": {"x": {"var": "steps.l0.output.x"}}})
    return {"name": f"fan-{n}", "steps": steps,
            "outputs": {"x": {"var": "steps.sink.output.x"}}}


class StatementCounter:
    """Counts the SQL statements, commits and rollbacks an engine sends, by event listeners.

    A statement is one ``cursor.execute`` or ``executemany`` (SQLAlchemy's
    ``before_cursor_execute``); a begin is one transaction SQLAlchemy starts (on
    SQLite runfox's own listener sends ``BEGIN IMMEDIATE`` for writers, on the raw
    driver connection, so it is a begin here, not a statement); a commit is one
    ``Connection.commit`` (on PostgreSQL, runfox runs lone statements in autocommit,
    and those are counted as begin and commit too).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements = 0
        self.begins = 0
        self.commits = 0
        self.rollbacks = 0
        self.verbs: dict[str, int] = {}
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements += 1
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        self.verbs[verb] = self.verbs.get(verb, 0) + 1

    def _begin(self, conn: Any) -> None:
        self.begins += 1

    def _commit(self, conn: Any) -> None:
        self.commits += 1

    def _rollback(self, conn: Any) -> None:
        self.rollbacks += 1

    def by_verb(self) -> dict[str, int]:
        return dict(sorted(self.verbs.items(), key=lambda item: -item[1]))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "begin", self._begin)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)


# -- databases ---------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, admin_url: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="runfox-bench-") as directory:
            yield f"sqlite:///{directory}/bench.db"
        return
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"runfox_bench_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()


def start_workers(url: str, count: int, *extra: str) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}"}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "runfox.cli", "worker", "--backend", url, "--executor",
         "bench_sql:noop", "--poll-interval", "0.01", "--sweep-interval", "30", *extra],
        env=env, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    for worker in workers:  # ready once it logged that it serves the backend
        assert worker.stderr is not None
        for line in worker.stderr:
            if "serving" in line:
                break
        else:
            raise RuntimeError("a worker exited before it started")
    return workers


def stop_workers(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.communicate(timeout=120)


# -- 1. many small workflows -----------------------------------------------------------------


def throughput(kind: str, admin_url: str, workers: int, count: int, length: int) -> float:
    """Steps per second for ``count`` chains of ``length`` steps and ``workers`` processes."""
    with fresh_database(kind, admin_url) as url:
        store, runner = parts_from_url(url)
        backend = Backend(store=store, runner=runner)
        spec = rfx.load_spec(chain(length))
        ids = [backend.create(spec, {"x": 0}) for _ in range(count)]
        procs = start_workers(url, workers)
        try:
            started = time.perf_counter()
            for wf_id in ids:
                backend.apply_and_advance(wf_id)
            done_query = (select(func.count()).select_from(workflows)
                          .where(workflows.c.status.in_(TERMINAL)))
            while True:
                with store.engine.connect() as conn:
                    if conn.execute(done_query).scalar() == count:
                        break
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            stop_workers(procs)
        for wf_id in ids[:: max(1, count // 10)]:
            assert backend.load(wf_id).outcome == {"x": length}
        runner.close()
        store.close()
    return count * length / elapsed


# -- 2. the wide fan-out -------------------------------------------------------------


def fan_in_process(width: int) -> float:
    with fresh_database("sqlite", "") as url:
        store, runner = parts_from_url(url)
        backend = Backend(store=store, runner=runner, poll_interval=0.01)
        started = time.perf_counter()
        wf = rfx.Workflow.from_dict(fan(width), backend, {"x": 0})
        result = wf.run(worker=InProcessWorker(runner, noop))
        elapsed = time.perf_counter() - started
        assert result.outcome == {"x": 3}, result
        runner.close()
        store.close()
    return elapsed


def fan_polling(width: int, workers: int = 2) -> float:
    with fresh_database("sqlite", "") as url:
        store, runner = parts_from_url(url)
        backend = Backend(store=store, runner=runner, poll_interval=0.01)
        procs = start_workers(url, workers, "--no-drive", "--concurrency", "1")
        try:
            started = time.perf_counter()
            wf = rfx.Workflow.from_dict(fan(width), backend, {"x": 0})
            result = wf.run()
            elapsed = time.perf_counter() - started
        finally:
            stop_workers(procs)
        assert result.outcome == {"x": 3}, result
        runner.close()
        store.close()
    return elapsed


def median(fn: Any, repeat: int, *args: Any) -> float:
    return statistics.median(fn(*args) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--postgres", default=os.environ.get(
        "RUNFOX_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--fan-sizes", default="100,300,1000")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    kinds = ["sqlite"] + ([] if args.no_postgres else ["postgresql"])

    steps = args.workflows * args.length
    print(f"1. durable throughput: {args.workflows} chains x {args.length} steps = {steps} "
          f"steps, noop executor, median of {args.repeat} ({os.cpu_count()} CPUs)")
    print(f"{'backend':<11} {'workers':>7} {'steps/s':>9} {'transitions/s':>14} "
          f"{'vs 1 worker':>12}")
    for kind in kinds:
        base = None
        for workers in counts:
            rate = median(throughput, args.repeat, kind, args.postgres, workers,
                          args.workflows, args.length)
            base = base or rate
            print(f"{kind:<11} {workers:>7} {rate:>9.0f} {2 * rate:>14.0f} "
                  f"{rate / base:>11.2f}x")

    print(f"\n2. fan-out on SQLite driven by wf.run() (root, n-2 leaves, sink), median of "
          f"{args.repeat}")
    print(f"{'steps':>6} {'in-process worker':>18} {'per step':>9} "
          f"{'polling + 2 workers':>20} {'per step':>9}")
    for width in (int(s) for s in args.fan_sizes.split(",")):
        local = median(fan_in_process, args.repeat, width)
        remote = median(fan_polling, args.repeat, width)
        print(f"{width:>6} {local:>17.2f}s {local / width * 1e3:>7.2f}ms "
              f"{remote:>19.2f}s {remote / width * 1e3:>7.2f}ms")
    print("(runfox 0.0.7 on SQLite: 4.1 s for a 100-step fan-out, 31 s for 300)")


if __name__ == "__main__":
    main()
