"""How long a killed worker's job waits before it runs again, with default settings.

Two ``runfox worker`` processes with their default lease, poll and sweep
intervals serve one workflow whose only step sleeps (``max_attempts: 3``). When
one worker has started the step it is killed with SIGKILL; the clock runs from
the kill until the step's executor starts again on the other worker. Its lease
has to run out first (then the lost lease is a failed attempt and the retry is
dispatched at once), so this measures the default lease and how promptly the
survivor notices. A second row per backend gives the step a ``timeout``, whose
job lease is ``min(lease, timeout + 5 s)``.

Every sample gets a fresh database (a temporary SQLite file, or a scratch
PostgreSQL database dropped afterwards). Median of ``--repeat`` samples.

    python benchmarks/bench_recovery.py [--repeat 5] [--timeout 5]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--no-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_sql import fresh_database  # the same fresh databases as the throughput benchmark

from runfox.backend import Backend
from runfox.backend.sql import parts_from_url

HERE = Path(__file__).resolve().parent
GIVE_UP = 180.0  # seconds to wait for the job to come back


def sleepy(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The executor: note ``<pid> <epoch seconds>`` in ``$RUNFOX_BENCH_LOG``, then sleep."""
    line = f"{os.getpid()} {time.time():.6f}\n"
    fd = os.open(os.environ["RUNFOX_BENCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    time.sleep(float(inputs["seconds"]))
    return {"slept": inputs["seconds"]}


def spec(timeout: float | None) -> dict[str, Any]:
    step: dict[str, Any] = {"id": "nap", "fn": "sleep", "input": {"seconds": 3600}}
    if timeout is not None:
        step["timeout"] = timeout
    return {"name": "recovery", "defaults": {"max_attempts": 3}, "steps": [step]}


def starts(log: Path) -> list[tuple[int, float]]:
    """(pid, time) of every executor start so far."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        pid, _, when = line.partition(" ")
        with contextlib.suppress(ValueError):
            found.append((int(pid), float(when)))
    return found


def wait_for(condition: Any, what: str, limit: float = GIVE_UP) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"gave up after {limit:.0f} s waiting for {what}")


def recovery(kind: str, admin_url: str, timeout: float | None) -> float:
    """One sample: seconds from SIGKILL to the step's executor starting again."""
    with fresh_database(kind, admin_url) as url, \
            tempfile.TemporaryDirectory(prefix="runfox-bench-") as scratch:
        log = Path(scratch) / "starts.log"
        env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}",
               "RUNFOX_BENCH_LOG": str(log)}
        errs = [Path(scratch) / f"worker{i}.err" for i in range(2)]
        workers = []
        for err in errs:
            with err.open("wb") as stream:
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "runfox.cli", "worker", "--backend", url,
                     "--executor", "bench_recovery:sleepy"],
                    env=env, stdout=subprocess.DEVNULL, stderr=stream))
        try:
            for err in errs:  # each logs "serving ..." once it is ready
                wait_for(lambda e=err: "serving" in e.read_text(), "a worker to start", 60)
            store, runner = parts_from_url(url)
            try:
                backend = Backend(store=store, runner=runner)
                backend.apply_and_advance(backend.create(spec(timeout), {}))
            finally:
                runner.close()
                store.close()
            first_pid, _ = wait_for(lambda: starts(log)[:1], "the step to start")[0]
            victim = next(w for w in workers if w.pid == first_pid)
            victim.send_signal(signal.SIGKILL)
            killed_at = time.time()
            victim.wait()
            again = wait_for(lambda: [s for s in starts(log) if s[0] != first_pid],
                             "the step to run again")
            return again[0][1] - killed_at
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="the step timeout of the second row per backend")
    parser.add_argument("--postgres", default=os.environ.get(
        "RUNFOX_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    kinds = ["sqlite"] + ([] if args.no_postgres else ["postgresql"])
    print(f"time from SIGKILL of a worker holding a job to the job running again, default "
          f"worker settings, median of {args.repeat} ({os.cpu_count()} CPUs)")
    print(f"{'backend':<11} {'step timeout':>12} {'median':>8} {'min':>7} {'max':>7}")
    for kind in kinds:
        for timeout in (None, args.timeout):
            samples = [recovery(kind, args.postgres, timeout) for _ in range(args.repeat)]
            shown = "none" if timeout is None else f"{timeout:g} s"
            print(f"{kind:<11} {shown:>12} {statistics.median(samples):>7.1f}s "
                  f"{min(samples):>6.1f}s {max(samples):>6.1f}s", flush=True)


if __name__ == "__main__":
    main()
