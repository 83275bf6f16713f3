"""Durable throughput of the SQL backends, beside the database's own floor.

1. Many small workflows (chains of 10 steps) on SQLite, PostgreSQL and MariaDB,
   run by 1, 2 and 4 ``runfox worker`` processes (each drives what it finishes).
   The workers get a second to start; then the clock starts, this process starts
   the chains one by one (``Backend.start``: the execution and its first job in
   one commit, timed with the rest) and the clock stops when the last workflow
   completes. A step makes two committed transitions (claimed, then
   completed), so transitions/s = 2 x steps/s. In the same run, the *floor*:
   as many plain driver processes (sqlite3 / psycopg / PyMySQL, no SQLAlchemy,
   no runfox) committing write transactions shaped like a transition (update a
   header row with a version check, upsert a step row, insert the next job row,
   delete the previous one), on the same database server and settings (SQLite:
   WAL, ``synchronous = NORMAL``, ``BEGIN IMMEDIATE``, as runfox). The ratio is
   runfox transitions/s over floor transactions/s.
2. SQL statements, transactions and commits per step, counted by SQLAlchemy
   event listeners on the engine while one ``Worker`` runs chains in this
   process (one thread slot, drive on).
3. The 1,000-step fan-out (root, 998 leaves, sink) on SQLite driven by
   ``wf.run()``: with an in-process worker, and polling while two
   ``runfox worker --no-drive`` processes run the jobs. 100 and 300 steps are
   shown too, to compare with runfox 0.0.7 (4.1 s and 31 s).
4. An idle ``runfox worker`` with default settings on an empty database: the
   share of a CPU it uses, and how long a job dispatched after 1-3 s of quiet
   waits before its executor starts.

Every run gets a fresh database (a temporary file, or a scratch PostgreSQL /
MariaDB database that is dropped afterwards). Medians of ``--repeat`` runs.
A server that cannot be reached is reported and skipped.

    python benchmarks/bench_sql.py [--workflows 200] [--repeat 5] [--quick]
        [--postgres URL] [--mysql URL] [--no-postgres] [--no-mysql]
        [--sections 1,2,3,4]

``--quick`` (a smoke test, under a minute): 20 chains, 1 and 2 workers, one
run each, a 100-step fan-out.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
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


def stamp(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The executor of section 4: when the step started (epoch seconds)."""
    return {"started": time.time()}


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

DEFAULT_URLS = {
    "postgresql": os.environ.get("RUNFOX_BENCH_POSTGRES",
                                 "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("RUNFOX_BENCH_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}


def reachable(admin_url: str) -> str | None:
    """``None`` when the server answers, else why not (one line)."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            return None
    except Exception as exc:  # reported, and the database skipped
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()


@contextlib.contextmanager
def fresh_database(kind: str, admin_url: str) -> Iterator[str]:
    """A URL to a new empty database of ``kind``, removed when the block ends."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="runfox-bench-") as directory:
            yield f"sqlite:///{directory}/bench.db"
        return
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"runfox_bench_{secrets.token_hex(4)}"
    force = " WITH (FORCE)" if kind == "postgresql" else ""
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
    finally:
        admin.dispose()


#: The last lines each running worker logged after it started (drained by a thread,
#: so a chatty worker never blocks on a full pipe), by process id.
WORKER_LOGS: dict[int, collections.deque[str]] = {}


def _drain(worker: subprocess.Popen[str]) -> None:
    assert worker.stderr is not None
    lines = WORKER_LOGS.setdefault(worker.pid, collections.deque(maxlen=200))
    for line in worker.stderr:
        lines.append(line)


#: Seconds the workers get after logging that they serve before the clock starts:
#: their first sweep, registry row and connections belong to start-up, not to
#: throughput.
WARM_UP = 1.0


def start_workers(url: str, count: int, *extra: str, executor: str = "bench_sql:noop",
                  tuned: bool = True) -> list[subprocess.Popen[str]]:
    """Start ``count`` ``runfox worker`` processes; ``tuned``: 10 ms poll, 30 s sweep."""
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}"}
    tuning = ("--poll-interval", "0.01", "--sweep-interval", "30") if tuned else ()
    workers = [subprocess.Popen(
        [sys.executable, "-m", "runfox.cli", "worker", "--backend", url, "--executor",
         executor, *tuning, *extra],
        env=env, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    for worker in workers:  # ready once it logged that it serves the backend
        assert worker.stderr is not None
        for line in worker.stderr:
            if "serving" in line:
                break
        else:
            raise RuntimeError("a worker exited before it started")
        threading.Thread(target=_drain, args=(worker,), daemon=True).start()
    return workers


def stop_workers(workers: list[subprocess.Popen[str]]) -> list[str]:
    """Stop the workers; the lines they logged after starting (warnings and errors)."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:  # stuck in a long round: stop it hard
            worker.kill()
            worker.wait(timeout=30)
    time.sleep(0.05)  # the drain threads read to the end of each pipe
    logged = []
    for worker in workers:
        logged.extend(WORKER_LOGS.pop(worker.pid, ()))
    return logged


def wait_until_done(store: Any, count: int, timeout: float = 600.0) -> None:
    """Poll the header table until ``count`` executions are terminal."""
    done_query = (select(func.count()).select_from(workflows)
                  .where(workflows.c.status.in_(TERMINAL)))
    deadline = time.monotonic() + timeout
    while True:
        with store.engine.connect() as conn:
            if conn.execute(done_query).scalar() == count:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} workflows did not finish within {timeout:.0f} s")
        time.sleep(0.02)


# -- 1. many small workflows -----------------------------------------------------------------


def start(backend: Backend, spec: Any) -> str:
    """Start one execution: ``Backend.start``, or on a runfox before it (to run
    this script on an older checkout, side by side) ``create`` and its first advance."""
    if hasattr(backend, "start"):
        return str(backend.start(spec, {"x": 0}))
    wf_id = backend.create(spec, {"x": 0})
    backend.apply_and_advance(wf_id)
    return wf_id


def throughput(kind: str, admin_url: str, workers: int, count: int, length: int) -> float:
    """Steps per second for ``count`` chains of ``length`` steps and ``workers`` processes."""
    with fresh_database(kind, admin_url) as url:
        store, runner = parts_from_url(url)
        backend = Backend(store=store, runner=runner)
        spec = rfx.load_spec(chain(length))
        procs = start_workers(url, workers)
        try:
            time.sleep(WARM_UP)
            started = time.perf_counter()
            ids = [start(backend, spec) for _ in range(count)]
            wait_until_done(store, count)
            elapsed = time.perf_counter() - started
        finally:
            stop_workers(procs)
        for wf_id in ids[:: max(1, count // 10)]:
            assert backend.load(wf_id).outcome == {"x": length}
        runner.close()
        store.close()
    return count * length / elapsed


# -- 1b. the floor: plain driver transactions of a transition's shape ------------------------

_STEP_DATA = ('{"id": "s3", "status": "complete", "run_id": 1, "attempts": 1, '
              '"inputs": {"x": 3}, "output": {"x": 4}, "started_at": 1790000000.123456, '
              '"finished_at": 1790000000.234567, "error": null}')
_PAYLOAD = ('{"workflow_execution_id": "0123456789abcdef0123456789abcdef#1790000000-'
            '0123456789abcdef", "step_id": "s4", "run_id": 1, "fn": "inc", "inputs": '
            '{"x": 4}, "attempt": 1}')


def _floor_connect(kind: str, url: str) -> tuple[Any, str]:
    """A raw DBAPI connection and its parameter marker."""
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn, "?"
    parts = make_url(url)
    if kind == "postgresql":
        import psycopg

        return psycopg.connect(host=parts.host, port=parts.port or 5432,
                               user=parts.username, password=parts.password or "",
                               dbname=parts.database), "%s"
    import pymysql

    return pymysql.connect(host=parts.host or "127.0.0.1", port=parts.port or 3306,
                           user=parts.username or "root", password=parts.password or "",
                           database=parts.database, autocommit=False), "%s"


def _floor_tables(kind: str, url: str, rows: int) -> None:
    conn, _ = _floor_connect(kind, url)
    text = "LONGTEXT" if kind == "mysql" else "TEXT"
    key = "VARCHAR(200)"
    engine = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin" if kind == "mysql" \
        else ""
    serial = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
              "postgresql": "BIGSERIAL PRIMARY KEY",
              "mysql": "BIGINT AUTO_INCREMENT PRIMARY KEY"}[kind]
    statements = [
        f"CREATE TABLE floor_head (k {key} PRIMARY KEY, version INTEGER NOT NULL, "
        f"updated_at DOUBLE PRECISION NOT NULL, state {text} NOT NULL){engine}",
        f"CREATE TABLE floor_step (k {key} NOT NULL, step VARCHAR(255) NOT NULL, "
        f"version INTEGER NOT NULL, data {text} NOT NULL, PRIMARY KEY (k, step)){engine}",
        f"CREATE TABLE floor_job (id {serial}, k {key} NOT NULL, step VARCHAR(255) NOT NULL, "
        f"state VARCHAR(16) NOT NULL, payload {text} NOT NULL){engine}",
        "CREATE UNIQUE INDEX floor_job_key ON floor_job (k, step)",
    ]
    cur = conn.cursor()
    for statement in statements:
        cur.execute(statement)
    mark = "?" if kind == "sqlite" else "%s"
    if kind == "sqlite":
        cur.execute("BEGIN")
    cur.executemany(f"INSERT INTO floor_head VALUES ({mark}, 0, 0, '{{}}')",
                    [(f"w{i}",) for i in range(rows)])
    cur.executemany(f"INSERT INTO floor_job (k, step, state, payload) "
                    f"VALUES ({mark}, 's0', 'queued', '{{}}')",
                    [(f"w{i}",) for i in range(rows)])
    conn.commit() if kind != "sqlite" else cur.execute("COMMIT")
    conn.close()


def _floor_worker(kind: str, url: str, first: int, rows: int, transactions: int,
                  ready: Any, go: Any, results: Any) -> None:
    """One process committing ``transactions`` transition-shaped write transactions."""
    conn, m = _floor_connect(kind, url)
    cur = conn.cursor()
    upsert = {
        "sqlite": f"INSERT INTO floor_step VALUES ({m}, {m}, {m}, {m}) ON CONFLICT (k, step) "
                  "DO UPDATE SET version = excluded.version, data = excluded.data",
        "postgresql": f"INSERT INTO floor_step VALUES ({m}, {m}, {m}, {m}) ON CONFLICT "
                      "(k, step) DO UPDATE SET version = excluded.version, data = excluded.data",
        "mysql": f"INSERT INTO floor_step VALUES ({m}, {m}, {m}, {m}) ON DUPLICATE KEY UPDATE "
                 "version = VALUES(version), data = VALUES(data)",
    }[kind]
    head = (f"UPDATE floor_head SET version = {m}, updated_at = {m}, state = {m} "
            f"WHERE k = {m} AND version = {m}")
    insert_job = f"INSERT INTO floor_job (k, step, state, payload) VALUES ({m}, {m}, 'queued', {m})"
    delete_job = f"DELETE FROM floor_job WHERE k = {m} AND step = {m}"
    versions = dict.fromkeys(range(first, first + rows), 0)
    ready.put(os.getpid())
    go.wait()
    started = time.perf_counter()
    for i in range(transactions):
        row = first + i % rows
        key, version = f"w{row}", versions[row]
        if kind == "sqlite":
            while True:
                try:
                    cur.execute("BEGIN IMMEDIATE")
                    break
                except Exception:  # the write lock is busy: try again
                    time.sleep(0.0001)
        cur.execute(head, (version + 1, time.time(), "{}", key, version))
        assert cur.rowcount == 1
        cur.execute(upsert, (key, f"s{version}", version + 1, _STEP_DATA))
        cur.execute(insert_job, (key, f"s{version + 1}", _PAYLOAD))
        cur.execute(delete_job, (key, f"s{version}"))
        if kind == "sqlite":
            cur.execute("COMMIT")
        else:
            conn.commit()
        versions[row] = version + 1
    results.put((started, time.perf_counter()))
    conn.close()


def floor(kind: str, admin_url: str, processes: int, transactions: int) -> float:
    """Write transactions per second of ``processes`` plain driver processes together."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rows = 50
    with fresh_database(kind, admin_url) as url:
        _floor_tables(kind, url, rows * processes)
        ready, results, go = context.Queue(), context.Queue(), context.Event()
        each = transactions // processes
        procs = [context.Process(target=_floor_worker, args=(
            kind, url, n * rows, rows, each, ready, go, results)) for n in range(processes)]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        spans = [results.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
            if proc.exitcode != 0:
                raise RuntimeError(f"a floor process exited with {proc.exitcode}")
    started = min(s for s, _ in spans)
    ended = max(e for _, e in spans)
    return each * processes / (ended - started)


# -- 2. statements per step ----------------------------------------------------------------------


def statements_per_step(kind: str, admin_url: str, count: int, length: int
                        ) -> tuple[float, dict[str, float], StatementCounter]:
    """Run ``count`` chains through one in-process ``Worker`` with the engine's SQL counted.

    Returns the steps/s of that run, the counts per step and the counter."""
    from runfox.worker import Worker

    with fresh_database(kind, admin_url) as url:
        store, runner = parts_from_url(url)
        backend = Backend(store=store, runner=runner)
        spec = rfx.load_spec(chain(length))
        ids = [backend.create(spec, {"x": 0}) for _ in range(count)]
        for wf_id in ids:
            backend.apply_and_advance(wf_id)
        worker = Worker(backend, noop, concurrency=1, poll_interval=0.005,
                        sweep_interval=3600, schedule_interval=None, register=False)
        counter = StatementCounter(store.engine)
        steps = count * length
        started = time.perf_counter()
        worker.run(max_jobs=steps, idle_timeout=10)
        elapsed = time.perf_counter() - started
        counter.close()
        assert backend.load(ids[-1]).outcome == {"x": length}
        runner.close()
        store.close()
    per = {"statements": counter.statements / steps, "transactions": counter.begins / steps,
           "commits": counter.commits / steps}
    per.update({verb: number / steps for verb, number in counter.by_verb().items()})
    return steps / elapsed, per, counter


# -- 3. the wide fan-out -------------------------------------------------------------


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


# -- 4. an idle worker ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_worker(kind: str, admin_url: str, seconds: float, wakeups: int
                ) -> tuple[float, list[float]]:
    """One ``runfox worker`` with default settings on an empty database: its CPU share
    while idle over ``seconds``, and for ``wakeups`` one-step workflows dispatched after
    1-3 s of quiet, the seconds from creation and dispatch until the step's executor
    started."""
    spec = rfx.load_spec({"name": "wake", "steps": [{"id": "s", "fn": "stamp"}]})
    with fresh_database(kind, admin_url) as url:
        store, runner = parts_from_url(url)
        backend = Backend(store=store, runner=runner)
        procs = start_workers(url, 1, executor="bench_sql:stamp", tuned=False)
        latencies = []
        try:
            time.sleep(2.0)  # past start-up work
            pid = procs[0].pid
            cpu, wall = cpu_seconds(pid), time.perf_counter()
            time.sleep(seconds)
            share = (cpu_seconds(pid) - cpu) / (time.perf_counter() - wall)
            for n in range(wakeups):
                time.sleep(1.0 + n % 3)
                sent = time.time()  # create and dispatch (a sweep would start a created one)
                wf_id = backend.create(spec, {})
                backend.apply_and_advance(wf_id)
                deadline = time.monotonic() + 30
                while True:
                    record = backend.load(wf_id)
                    if record.status.is_terminal or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                output = record.steps["s"].output or {}
                latencies.append(float(output.get("started", float("nan"))) - sent)
        finally:
            stop_workers(procs)
        runner.close()
        store.close()
    return share, latencies


def median(fn: Any, repeat: int, *args: Any) -> float:
    return statistics.median(fn(*args) for _ in range(repeat))


def available_kinds(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(kind, admin URL)`` for SQLite and each server asked for that answers."""
    kinds = [("sqlite", "")]
    for kind, skip, url in (("postgresql", args.no_postgres, args.postgres),
                            ("mysql", args.no_mysql, args.mysql)):
        if skip:
            continue
        why = reachable(url)
        if why is None:
            kinds.append((kind, url))
        else:
            print(f"({LABELS[kind]} skipped: {why})")
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--floor-transactions", type=int, default=4000,
                        help="transactions per floor measurement (split over processes)")
    parser.add_argument("--postgres", default=DEFAULT_URLS["postgresql"])
    parser.add_argument("--mysql", default=DEFAULT_URLS["mysql"])
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-mysql", action="store_true")
    parser.add_argument("--fan-sizes", default="100,300,1000")
    parser.add_argument("--sections", default="1,2,3,4")
    parser.add_argument("--quick", action="store_true", help="a smoke test: small and once")
    args = parser.parse_args()
    if args.quick:
        args.workflows, args.repeat, args.workers = 20, 1, "1,2"
        args.fan_sizes, args.floor_transactions = "100", 600
    counts = [int(w) for w in args.workers.split(",")]
    sections = {int(s) for s in args.sections.split(",")}
    kinds = available_kinds(args)

    if 1 in sections:
        steps = args.workflows * args.length
        print(f"1. durable throughput: {args.workflows} chains x {args.length} steps = {steps} "
              f"steps, noop executor, median of {args.repeat} ({os.cpu_count()} CPUs); floor: "
              f"{args.floor_transactions} plain driver write transactions of a transition's "
              "shape, split over the same number of processes")
        print(f"{'backend':<11} {'workers':>7} {'steps/s':>9} {'transitions/s':>14} "
              f"{'vs 1 worker':>12} {'floor tx/s':>11} {'runfox/floor':>13}")
        for kind, url in kinds:
            base = None
            for workers in counts:
                rate = median(throughput, args.repeat, kind, url, workers,
                              args.workflows, args.length)
                raw = median(floor, args.repeat, kind, url, workers, args.floor_transactions)
                base = base or rate
                print(f"{LABELS[kind]:<11} {workers:>7} {rate:>9.0f} {2 * rate:>14.0f} "
                      f"{rate / base:>11.2f}x {raw:>11.0f} {2 * rate / raw:>12.3f}",
                      flush=True)

    if 2 in sections:
        count = max(10, args.workflows // 4)
        print(f"\n2. SQL per step: one in-process Worker (drive, 1 thread slot), {count} chains x "
              f"{args.length} steps, counted by SQLAlchemy event listeners")
        print(f"{'backend':<11} {'steps/s':>8} {'statements':>11} {'transactions':>13} "
              f"{'commits':>8}  by verb")
        for kind, url in kinds:
            rate, per, _ = statements_per_step(kind, url, count, args.length)
            verbs = ", ".join(f"{verb} {number:.2f}" for verb, number in per.items()
                              if verb not in ("statements", "transactions", "commits"))
            print(f"{LABELS[kind]:<11} {rate:>8.0f} {per['statements']:>11.2f} "
                  f"{per['transactions']:>13.2f} {per['commits']:>8.2f}  {verbs}", flush=True)
        print("(a statement is one cursor execute or executemany; SQLite's BEGIN IMMEDIATE is "
              "sent on the raw connection and counted as a transaction, not a statement)")

    if 3 in sections:
        print(f"\n3. fan-out on SQLite driven by wf.run() (root, n-2 leaves, sink), median of "
              f"{args.repeat}")
        print(f"{'steps':>6} {'in-process worker':>18} {'per step':>9} "
              f"{'polling + 2 workers':>20} {'per step':>9}")
        for width in (int(s) for s in args.fan_sizes.split(",")):
            local = median(fan_in_process, args.repeat, width)
            remote = median(fan_polling, args.repeat, width)
            print(f"{width:>6} {local:>17.2f}s {local / width * 1e3:>7.2f}ms "
                  f"{remote:>19.2f}s {remote / width * 1e3:>7.2f}ms", flush=True)
        print("(runfox 0.0.7 on SQLite: 4.1 s for a 100-step fan-out, 31 s for 300)")

    if 4 in sections:
        seconds, wakeups = (3.0, 2) if args.quick else (10.0, 5)
        print(f"\n4. an idle runfox worker (default settings) on an empty database: CPU share "
              f"over {seconds:.0f} s, and dispatch-to-start latency after 1-3 s of quiet "
              f"(median and max of {wakeups})")
        print(f"{'backend':<11} {'idle CPU':>9} {'wake-up median':>15} {'max':>8}")
        for kind, url in kinds:
            share, waits = idle_worker(kind, url, seconds, wakeups)
            print(f"{LABELS[kind]:<11} {share * 100:>8.2f}% {statistics.median(waits) * 1e3:>13.0f}"
                  f"ms {max(waits) * 1e3:>6.0f}ms", flush=True)
        print("(targets, issue 13: idle below 1 % of a CPU; a job dispatched to an idle "
              "PostgreSQL worker starts within 50 ms)")


if __name__ == "__main__":
    main()
