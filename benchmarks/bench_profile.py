"""Where a driving worker spends its CPU per step, on SQLite (cProfile).

Creates ``--workflows`` chains of ``--length`` steps in a fresh SQLite file,
dispatches their first steps, then runs one ``runfox.worker.Worker`` (one
thread slot, drive on, no registry, no schedules) in this process under
cProfile until every step ran. Prints the wall time, the process CPU time per
step, SQL statements and commits per step (counted by SQLAlchemy event
listeners on the engine), the top functions by cumulative and by own time, and
own time grouped by module.

    python benchmarks/bench_profile.py [--workflows 200] [--length 10] [--top 40]
        [--no-profile] [--dump profile.out]

``--no-profile`` measures CPU per step without cProfile's own overhead (cProfile
roughly doubles the Python part of the cost).

``--pages`` instead counts what a step writes to SQLite's log (WAL): the same
chains, with the log's automatic checkpoint turned off on runfox's connections,
then the log's frames are read back and each page is named by the table or
index it belongs to (SQLite's ``dbstat`` table). Pages per step, by owner: what
a commit writes, and later copies into the database file at a checkpoint.
Deterministic, unlike the timings.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import sqlite3
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_sql import StatementCounter, chain, noop
from sqlalchemy import event

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.sql import parts_from_url
from runfox.worker import Worker


def by_module(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time grouped: runfox modules by file, SQLAlchemy as one, C calls by name."""
    totals: dict[str, float] = {}
    for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        own = row[2]
        if "/runfox/" in filename:
            where = "runfox/" + filename.rsplit("/runfox/", 1)[1]
        elif "sqlalchemy" in filename:
            where = "sqlalchemy (all)"
        elif filename == "~":
            where = f"C: {function}"
        else:
            where = filename.rsplit("/", 1)[-1]
        totals[where] = totals.get(where, 0.0) + own
    return sorted(totals.items(), key=lambda item: -item[1])


def pages(workflows: int, length: int) -> None:
    """Pages written to the WAL per step, by the table or index they belong to."""
    with tempfile.TemporaryDirectory(prefix="runfox-pages-") as directory:
        path = f"{directory}/bench.db"
        store, runner = parts_from_url(f"sqlite:///{path}")
        backend = Backend(store=store, runner=runner)
        spec = rfx.load_spec(chain(length))
        for _ in range(workflows):
            backend.start(spec, {"x": 0})
        first = workflows * length // 4  # the tables are past their first pages
        Worker(backend, noop, concurrency=1, poll_interval=0.005, sweep_interval=3600,
               schedule_interval=None, register=False).run(max_jobs=first, idle_timeout=5)
        with sqlite3.connect(path) as plain:
            plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        def no_checkpoint(conn: Any) -> None:
            conn.connection.driver_connection.execute("PRAGMA wal_autocheckpoint = 0")

        event.listen(store.engine, "begin", no_checkpoint)
        steps = workflows * length // 2
        Worker(backend, noop, concurrency=1, poll_interval=0.005, sweep_interval=3600,
               schedule_interval=None, register=False).run(max_jobs=steps, idle_timeout=5)
        event.remove(store.engine, "begin", no_checkpoint)
        log = Path(f"{path}-wal").read_bytes()
        with sqlite3.connect(path) as plain:
            owner = dict(plain.execute("SELECT pageno, name FROM dbstat"))
        runner.close()
        store.close()
    size = struct.unpack(">I", log[8:12])[0]
    counts: collections.Counter[str] = collections.Counter()
    commits = 0
    for offset in range(32, len(log) - size - 23, size + 24):  # frame: 24-byte header, page
        number, committed = struct.unpack(">II", log[offset:offset + 8])
        counts[owner.get(number, f"page {number}")] += 1
        commits += committed != 0
    total = sum(counts.values())
    print(f"{steps} chain steps, one driving worker, SQLite: {total / steps:.2f} pages "
          f"({size} bytes each) written to the log per step, {commits / steps:.2f} commits")
    for name, number in counts.most_common():
        print(f"  {number / steps:6.2f}  {name}")


def run(workflows: int, length: int, profile: bool, top: int, dump: str | None,
        count: bool = True) -> None:
    with tempfile.TemporaryDirectory(prefix="runfox-profile-") as directory:
        store, runner = parts_from_url(f"sqlite:///{directory}/bench.db")
        backend = Backend(store=store, runner=runner)
        spec = rfx.load_spec(chain(length))
        ids = [backend.create(spec, {"x": 0}) for _ in range(workflows)]
        for wf_id in ids:
            backend.apply_and_advance(wf_id)
        worker = Worker(backend, noop, concurrency=1, poll_interval=0.005,
                        sweep_interval=3600, schedule_interval=None, register=False)
        steps = workflows * length
        counter = StatementCounter(store.engine) if count else None
        profiler = cProfile.Profile() if profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        worker.run(max_jobs=steps, idle_timeout=5)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if counter is not None:
            counter.close()
        for wf_id in ids[:: max(1, workflows // 10)]:
            assert backend.load(wf_id).outcome == {"x": length}, wf_id
        runner.close()
        store.close()
    print(f"{workflows} chains x {length} steps = {steps} steps, one worker (drive, 1 thread "
          f"slot), SQLite, {'with' if profile else 'without'} cProfile")
    print(f"wall {wall:.2f} s = {wall / steps * 1e3:.3f} ms/step ({steps / wall:.0f} steps/s); "
          f"process CPU {cpu / steps * 1e3:.3f} ms/step")
    if counter is not None:
        print(f"SQL per step: {counter.statements / steps:.2f} statements, "
              f"{counter.begins / steps:.2f} transactions, {counter.commits / steps:.2f} "
              f"commits, {counter.rollbacks / steps:.2f} rollbacks")
        for verb, number in counter.by_verb().items():
            print(f"  {verb:<10} {number / steps:6.2f}/step")
    if profiler is None:
        return
    if dump:
        profiler.dump_stats(dump)
    print("\n--- own time by module, ms per step (cProfile's clock: about 2x the real cost) ---")
    for where, seconds in by_module(pstats.Stats(profiler))[:25]:
        print(f"{seconds / steps * 1e3:8.3f}  {where}")
    print("(lock acquire and queue put are mostly waits for the job's slot thread and for "
          "the GIL, not CPU)")
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(top)
        print(f"\n--- top {top} by {key} ---")
        print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-count", action="store_true",
                        help="no statement counting (its listeners cost CPU too)")
    parser.add_argument("--dump", default=None, help="write the raw profile here")
    parser.add_argument("--pages", action="store_true",
                        help="count the pages a step writes to the log, by table and index")
    args = parser.parse_args(argv)
    if args.pages:
        pages(args.workflows, args.length)
        return
    run(args.workflows, args.length, not args.no_profile, args.top, args.dump,
        not args.no_count)


if __name__ == "__main__":
    main()
