"""runfox beside huey on SQLite: 1,000 trivial tasks, 2 worker processes.

huey (``SqliteHuey``, its consumer with ``-k process -w 2``) runs ``--tasks``
trivial tasks; runfox runs the same number of trivial steps, as that many
one-step workflows started with ``Backend.start``, as that many submitted with
``Backend.submit`` (one start job each, which a worker turns into the execution)
and as one fan-out (a root, ``--tasks`` leaves, a sink),
with two ``runfox worker`` processes (each claims, executes and drives): first
with ``--concurrency 1``, one job at a time as each huey worker process runs
one, then with ``--concurrency N`` (``--concurrency``, default 16): N jobs at
once in threads, so that jobs finishing together are recorded together, one
commit for several results (``Backend.apply_and_take_many``). Both
use one SQLite file in WAL mode with ``PRAGMA synchronous = NORMAL`` (what runfox
sets on its connections; huey's storage is given the same pragma) and poll every
10 ms when idle. Both keep results (huey's result store; runfox's step outputs).

The clock starts when the first task is enqueued (huey) or the first workflow
is started (runfox: ``Backend.start``, which stores the execution and queues its
first job in one commit, or ``Backend.submit``, which queues a start job), with the
worker processes already running, and stops
when every result is stored (huey) or every workflow has ended (runfox). Medians of
``--repeat`` runs, each on a fresh file. Needs the ``bench`` extra
(``pip install -e .[bench]``, i.e. huey).

    python benchmarks/bench_huey.py [--tasks 1000] [--repeat 5] [--concurrency 16] [--quick]

``RUNFOX_BENCH_SPLIT=1`` also prints, per runfox run, how long the starts took
(and their CPU) and the CPU each worker process used.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_sql import HERE, WARM_UP, cpu_seconds, start_workers, stop_workers, wait_until_done

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.sql import parts_from_url

try:
    from huey import SqliteHuey
    from huey.storage import SqliteStorage
except ImportError:  # pragma: no cover - reported by main()
    SqliteHuey = None  # type: ignore[assignment,misc]
    SqliteStorage = object  # type: ignore[assignment,misc]


class NormalSyncStorage(SqliteStorage):  # type: ignore[misc,valid-type]
    """huey's SQLite storage with ``synchronous = NORMAL``, as runfox sets it."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn


def trivial(x: int) -> dict[str, int]:
    """The task: no work, so the numbers are queueing cost only."""
    return {"x": x + 1}


# huey keys a task by module and name; this script runs as __main__ and the
# consumer imports it as bench_huey, so the module is fixed here.
trivial.__module__ = "bench_huey"


def _make_huey(filename: str) -> tuple[Any, Any]:
    """A huey on ``filename`` and its ``trivial`` task."""

    class Huey(SqliteHuey):  # type: ignore[misc,valid-type]
        storage_class = NormalSyncStorage

    instance = Huey("bench", filename=filename)
    return instance, instance.task(name="trivial")(trivial)


# The consumer imports this module and finds ``huey`` here (its file from the env).
huey: Any = None
if SqliteHuey is not None and os.environ.get("RUNFOX_BENCH_HUEY_DB"):
    huey, _ = _make_huey(os.environ["RUNFOX_BENCH_HUEY_DB"])


def huey_rate(tasks: int) -> float:
    """huey tasks/s for ``tasks`` trivial tasks and a 2-process consumer."""
    with tempfile.TemporaryDirectory(prefix="runfox-huey-") as directory:
        db = f"{directory}/huey.db"
        log = Path(directory) / "consumer.log"
        env = {**os.environ, "RUNFOX_BENCH_HUEY_DB": db,
               "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}"}
        local, task = _make_huey(db)
        with log.open("w") as out:
            consumer = subprocess.Popen(
                [sys.executable, "-m", "huey.bin.huey_consumer", "bench_huey.huey",
                 "-k", "process", "-w", "2", "-d", "0.01", "-m", "0.01", "-n"],
                env=env, stderr=out, stdout=out, cwd=HERE)
        try:
            deadline = time.monotonic() + 60
            while "consumer started" not in log.read_text().lower():
                if consumer.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the huey consumer did not start:\n{log.read_text()}")
                time.sleep(0.05)
            time.sleep(0.5)  # the worker processes start after the line
            started = time.perf_counter()
            handles = [task(i) for i in range(tasks)]
            deadline = time.monotonic() + 600
            while local.result_count() < tasks:
                if time.monotonic() > deadline:
                    raise TimeoutError("huey did not finish in 600 s")
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            consumer.terminate()
            consumer.wait(timeout=60)
        assert local.pending_count() == 0
        assert handles[-1].get() == {"x": tasks}, handles[-1].get()
    return tasks / elapsed


def one_step() -> dict[str, Any]:
    return {"name": "one", "steps": [{"id": "s", "fn": "inc",
                                      "input": {"x": {"var": "input.x"}}}],
            "outputs": {"x": {"var": "steps.s.output.x"}}}


def fan(leaves: int) -> dict[str, Any]:
    steps = [{"id": "root", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    steps += [{"id": f"l{i}", "fn": "inc", "depends_on": ["root"],
               "input": {"x": {"var": "steps.root.output.x"}}} for i in range(leaves)]
    steps.append({"id": "sink", "fn": "inc", "depends_on": [f"l{i}" for i in range(leaves)],
                  "input": {"x": {"var": "steps.l0.output.x"}}})
    return {"name": f"fan-{leaves}", "steps": steps,
            "outputs": {"x": {"var": "steps.sink.output.x"}}}


def runfox_rate(tasks: int, shape: str, concurrency: int = 1) -> float:
    """runfox steps/s: ``tasks`` one-step workflows, or one fan-out of ``tasks`` leaves;
    each worker runs ``concurrency`` jobs at once."""
    with tempfile.TemporaryDirectory(prefix="runfox-huey-") as directory:
        url = f"sqlite:///{directory}/runfox.db"
        store, runner = parts_from_url(url)
        backend = Backend(store=store, runner=runner)
        if shape in ("one-step", "submitted"):
            spec, count, steps = rfx.load_spec(one_step()), tasks, tasks
        else:
            spec, count, steps = rfx.load_spec(fan(tasks)), 1, tasks + 2
        procs = start_workers(url, 2, "--concurrency", str(concurrency))
        try:
            time.sleep(WARM_UP)  # as huey's consumer gets its half second
            cpu0 = [cpu_seconds(p.pid) for p in procs]
            started, cpu = time.perf_counter(), time.process_time()
            # Like huey's enqueue, each start is in the clock: one commit that
            # stores the execution and queues its first job (``Backend.start``).
            begin = backend.submit if shape == "submitted" else backend.start
            ids = [begin(spec, {"x": 0}) for _ in range(count)]
            split = os.environ.get("RUNFOX_BENCH_SPLIT")
            if split:
                print(f"    starts took {time.perf_counter() - started:.3f} s, "
                      f"{time.process_time() - cpu:.3f} s CPU", flush=True)
            wait_until_done(store, count)
            elapsed = time.perf_counter() - started
            if split:
                used = [round(cpu_seconds(p.pid) - c0, 3)
                        for p, c0 in zip(procs, cpu0, strict=True)]
                print(f"    all done in {elapsed:.3f} s; worker CPU {used} s")
        finally:
            stop_workers(procs)
        expected = 3 if shape == "fan" else 1
        assert backend.load(ids[-1]).outcome == {"x": expected}
        runner.close()
        store.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16,
                        help="jobs each runfox worker runs at once in the second set of runs")
    parser.add_argument("--quick", action="store_true", help="200 tasks, once")
    args = parser.parse_args()
    if SqliteHuey is None:
        sys.exit("bench_huey.py needs huey: pip install -e '.[bench]'")
    if args.quick:
        args.tasks, args.repeat = 200, 1
    import huey as huey_package

    print(f"{args.tasks} trivial tasks, 2 worker processes, SQLite WAL + synchronous NORMAL, "
          f"median of {args.repeat} ({os.cpu_count()} CPUs; huey {huey_package.__version__})")
    huey_label = "huey (SqliteHuey, -k process -w 2)"
    runs_of: list[tuple[str, Any, tuple[Any, ...]]] = [(huey_label, huey_rate, ())]
    for concurrency in sorted({1, args.concurrency}):
        runs_of += [(f"runfox, one-step workflows, -c {concurrency}", runfox_rate,
                     ("one-step", concurrency)),
                    (f"runfox, one-step workflows submitted, -c {concurrency}", runfox_rate,
                     ("submitted", concurrency)),
                    (f"runfox, one fan-out, -c {concurrency}", runfox_rate, ("fan", concurrency))]
    rates = {}
    for label, fn, extra in runs_of:
        runs = [fn(args.tasks, *extra) for _ in range(args.repeat)]
        rates[label] = statistics.median(runs)
        spread = f"{min(runs):.0f}-{max(runs):.0f}" if len(runs) > 1 else ""
        print(f"  {label:<40} {rates[label]:>7.0f} /s  {spread}", flush=True)
    for label, _, _ in runs_of[1:]:
        print(f"  ratio {label} / huey: {rates[label] / rates[huey_label]:.2f} "
              "(target >= 0.5)")


if __name__ == "__main__":
    main()
