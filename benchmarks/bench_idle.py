"""What an idle worker costs, how fast it notices new work, and what a claim costs.

1. **Idle CPU.** A ``runfox worker`` process on an empty queue (SQLite and
   PostgreSQL, default options unless ``--poll-interval`` is given) is left
   alone for ``--warmup`` seconds, then its CPU time (user + system, from
   ``/proc/<pid>/stat``) is read over ``--seconds`` seconds and shown as a
   percentage of one CPU. Over the same seconds, its wake-ups: the context
   switches (voluntary + involuntary, ``/proc/<pid>/task/*/status``) of all its
   threads, per second in all and per thread name. What one wake-up costs
   differs between days of a virtual machine; how many there are does not.
2. **Dispatch-to-start latency.** With that worker idle, a one-step workflow is
   dispatched ``--jobs`` times, a random 1-3 s apart (so the worker is idle and
   backed off each time). Latency = the executor's ``time.time()`` at entry
   minus the client's ``time.time()`` just before the call that dispatches the
   job (``Backend.apply_and_advance``), so it includes the dispatch transaction.
   Median, 90th percentile and maximum.
3. **Statements per claim.** ``SqlRunner.take_pending_jobs(limit)`` on a queue of
   waiting jobs and on an empty one, counted with SQLAlchemy's
   ``before_cursor_execute`` (statements sent through the driver) and ``begin``
   events (a transaction, or a unit in autocommit, which sends no ``BEGIN`` or
   ``COMMIT``). Round trips on PostgreSQL: statements + 2 per transaction
   (psycopg sends ``BEGIN`` and ``COMMIT``); on MariaDB: statements + 1 per
   transaction (PyMySQL sends no ``BEGIN``); SQLite has none (in-process).

    python benchmarks/bench_idle.py [--seconds 30] [--jobs 20] [--only idle,latency,claims]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--no-postgres]
        [--mysql mysql+pymysql://root@127.0.0.1:3306/test] [--no-mysql]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_sql import cpu_seconds, fresh_database
from sqlalchemy import event

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.sql import parts_from_url
from runfox.results import DispatchJob

HERE = Path(__file__).resolve().parent


def stamp(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The executor: when it started, on this host's clock."""
    return {"started": time.time()}


ONE_STEP = {"name": "one", "steps": [{"id": "only", "fn": "stamp"}]}


def start_worker(url: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "runfox.cli", "worker", "--backend", url, "--executor",
         "bench_idle:stamp", *extra], env=env, stderr=subprocess.PIPE, text=True)
    assert worker.stderr is not None
    for line in worker.stderr:  # ready once it says it serves the backend
        if "serving" in line:
            break
    else:
        raise RuntimeError("the worker exited before it started")
    return worker


def stop_worker(worker: subprocess.Popen[str]) -> None:
    worker.terminate()
    worker.communicate(timeout=60)


def switches(pid: int) -> dict[int, int]:
    """Context switches (voluntary + involuntary) so far of each thread of ``pid``,
    by thread id (Python 3.11 does not give the kernel its threads' names)."""
    found: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        found[int(task.name)] = (
            int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"]))
    return found


def idle_cpu(url: str, seconds: float, warmup: float, extra: list[str]
             ) -> tuple[float, float, dict[str, float]]:
    """Percent of one CPU the idle worker used over ``seconds``, its wake-ups per
    second, and those per thread (``main``, then the others in the order they
    started: ``t1``, ``t2``, ...)."""
    parts_from_url(url)[0].close()  # create the tables before the worker opens them
    worker = start_worker(url, *extra)
    try:
        time.sleep(warmup)
        before, woken, started = cpu_seconds(worker.pid), switches(worker.pid), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu_seconds(worker.pid) - before, time.monotonic() - started
        after = switches(worker.pid)
    finally:
        stop_worker(worker)
    per_thread = {("main" if tid == worker.pid else f"t{n}"): (count - woken.get(tid, 0)) / elapsed
                  for n, (tid, count) in enumerate(sorted(after.items()))}
    return 100.0 * used / elapsed, sum(per_thread.values()), per_thread


def latencies(url: str, jobs: int, extra: list[str]) -> list[float]:
    """Dispatch-to-start seconds of ``jobs`` one-step workflows sent to an idle worker."""
    store, runner = parts_from_url(url)
    backend = Backend(store=store, runner=runner)
    spec = rfx.load_spec(ONE_STEP)
    worker = start_worker(url, *extra)
    found = []
    try:
        time.sleep(3.0)
        for _ in range(jobs):
            wf_id = backend.create(spec, {})
            time.sleep(random.uniform(1.0, 3.0))
            sent = time.time()
            backend.apply_and_advance(wf_id)
            deadline = time.monotonic() + 30
            while True:
                record = backend.load(wf_id)
                if record.status.value in ("complete", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{wf_id} did not finish in 30 s")
                time.sleep(0.01)
            found.append(record.steps["only"].output["started"] - sent)
    finally:
        stop_worker(worker)
        runner.close()
        store.close()
    return found


def claim_costs(url: str, limit: int, rounds: int = 20) -> dict[str, float]:
    """Statements and units of work per ``take_pending_jobs(limit)``, with jobs
    waiting and with the queue empty. A unit is a transaction (``BEGIN`` ...
    ``COMMIT``) or, where the connection is in autocommit, ``autocommit`` (no
    ``BEGIN`` or ``COMMIT`` goes to the server)."""
    store, runner = parts_from_url(url)
    engine = runner._db.engine
    counts = {"statements": 0, "transactions": 0, "autocommit": 0}

    def autocommit(conn: Any) -> bool:
        return conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"

    def on_statement(*args: Any, **kwargs: Any) -> None:
        counts["statements"] += 1

    def on_begin(conn: Any) -> None:
        counts["autocommit" if autocommit(conn) else "transactions"] += 1

    found: dict[str, float] = {}
    try:
        wf = f"bench#{secrets.token_hex(4)}"
        runner.dispatch(wf, [DispatchJob(wf, f"s{i}", "stamp", {}, run_id=1)
                             for i in range(limit * rounds)])
        listeners = [("before_cursor_execute", on_statement), ("begin", on_begin)]
        for name, fn in listeners:
            event.listen(engine, name, fn)
        try:
            for label in ("full", "empty"):
                for key in counts:
                    counts[key] = 0
                taken = 0
                for _ in range(rounds):
                    taken += len(runner.take_pending_jobs(limit=limit, lease=60))
                if label == "full":
                    assert taken == limit * rounds, taken
                for key, value in counts.items():
                    found[f"{label} {key}"] = value / rounds
        finally:
            for name, fn in listeners:
                event.remove(engine, name, fn)
    finally:
        runner.close()
        store.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--only", default="idle,latency,claims")
    parser.add_argument("--poll-interval", help="passed to the worker")
    parser.add_argument("--postgres", default=os.environ.get(
        "RUNFOX_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--mysql", default=os.environ.get(
        "RUNFOX_BENCH_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"))
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-mysql", action="store_true")
    args = parser.parse_args()
    only = set(args.only.split(","))
    extra = ["--poll-interval", args.poll_interval] if args.poll_interval else []
    servers = {"sqlite": "", "postgresql": args.postgres, "mysql": args.mysql}
    kinds = [k for k in servers if not (k == "postgresql" and args.no_postgres)
             and not (k == "mysql" and args.no_mysql)]
    if "idle" in only:
        print(f"idle worker CPU and wake-ups over {args.seconds:g} s "
              f"(after {args.warmup:g} s warm-up)")
        for kind in kinds:
            with fresh_database(kind, servers[kind]) as url:
                share, wakeups, per_thread = idle_cpu(url, args.seconds, args.warmup, extra)
            threads = " ".join(f"{name} {rate:.1f}" for name, rate in per_thread.items()
                               if rate >= 0.05)
            print(f"  {kind:<11} {share:6.2f}% of one CPU   {wakeups:5.1f} wake-ups/s ({threads})")
    if "latency" in only:
        print(f"dispatch-to-start latency, idle worker, {args.jobs} jobs")
        for kind in kinds:
            with fresh_database(kind, servers[kind]) as url:
                found = sorted(latencies(url, args.jobs, extra))
            p90 = found[min(len(found) - 1, int(0.9 * len(found)))]
            print(f"  {kind:<11} median {1000 * statistics.median(found):7.1f} ms   "
                  f"p90 {1000 * p90:7.1f} ms   max {1000 * found[-1]:7.1f} ms")
    if "claims" in only:
        print("per take_pending_jobs(limit): statements / transactions / autocommit units")
        for kind in kinds:
            for limit in (1, 8):
                with fresh_database(kind, servers[kind]) as url:
                    c = claim_costs(url, limit)
                print(f"  {kind:<11} limit {limit}: jobs waiting "
                      f"{c['full statements']:.1f} / {c['full transactions']:.1f} / "
                      f"{c['full autocommit']:.1f}; queue empty {c['empty statements']:.1f} / "
                      f"{c['empty transactions']:.1f} / {c['empty autocommit']:.1f}")

if __name__ == "__main__":
    main()
