"""Per-step concurrency limits (``concurrency: {key, limit}``).

- The spec field reaches the job: a literal key, a key computed from the workflow
  input and the step's input, and a key rule that gives no key failing the step.
- Threads taking from the memory runner: never more than ``limit`` jobs of one
  key at once, across executions.
- The must-show (slow): 4 ``runfox worker`` processes on SQLite and on
  PostgreSQL run a fan-out of 20 steps with ``concurrency: {key: gpu, limit: 2}``;
  the executor's start/end log never shows more than 2 calls at once, and a
  worker killed with SIGKILL while running a step holds its slot only until its
  lease runs out: afterwards two steps run at once again and every step completes.

The runner-level checks (limit 2, five jobs: two handed out; an ack frees one; a
lapsed lease frees one) are in ``runfox.testing.RunnerContract``, run by every
runner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import proctools
import pytest
from slot_executor import fan_spec
from sqldb import scratch_database

from runfox.backend import Backend, InProcessRunner
from runfox.backend.sql import parts_from_url
from runfox.graph import advance
from runfox.results import Dispatch, DispatchJob, Failed
from runfox.status import StepStatus, WorkflowStatus
from runfox.testing import keyed_job, new_record

ROOT = Path(__file__).resolve().parent.parent


# -- the job carries the key ----------------------------------------------------------


def _jobs(spec: dict[str, Any], inputs: dict[str, Any] | None = None) -> list[DispatchJob]:
    _, result = advance(new_record(spec, inputs), now=1.0)
    assert isinstance(result, Dispatch)
    return result.jobs


def test_a_literal_key_and_the_defaults_reach_the_job() -> None:
    jobs = _jobs({"defaults": {"concurrency": {"key": "gpu", "limit": 2}},
                  "steps": [{"id": "a", "fn": "f"},
                            {"id": "b", "fn": "f", "concurrency": {"key": "io", "limit": 5}}]})
    assert [(j.concurrency_key, j.concurrency_limit) for j in jobs] == [("gpu", 2), ("io", 5)]
    again = DispatchJob.from_dict(jobs[0].to_dict())
    assert (again.concurrency_key, again.concurrency_limit) == ("gpu", 2)


def test_a_key_rule_reads_the_workflow_input_and_the_step_input() -> None:
    spec = {"steps": [{"id": "a", "fn": "f", "input": {"region": "eu", "n": 3},
                       "concurrency": {"limit": 1, "key": {"cat": [
                           "customer-", {"var": "input.customer"}, "-",
                           {"var": "step_input.region"}]}}},
                      {"id": "b", "fn": "f", "input": {"n": 3},
                       "concurrency": {"limit": 1, "key": {"var": "step_input.n"}}}]}
    a, b = _jobs(spec, {"customer": "acme"})
    assert (a.concurrency_key, b.concurrency_key) == ("customer-acme-eu", "3")
    plain = _jobs({"steps": [{"id": "a", "fn": "f"}]})[0]
    assert (plain.concurrency_key, plain.concurrency_limit) == (None, None)
    assert "concurrency_key" not in plain.to_dict()


def test_a_key_rule_that_gives_no_key_fails_the_step() -> None:
    spec = {"steps": [{"id": "a", "fn": "f", "concurrency": {
        "limit": 1, "key": {"var": "input.customer"}}}]}
    record, result = advance(new_record(spec, {}), now=1.0)
    assert isinstance(result, Failed)
    assert record.steps["a"].status is StepStatus.FAILED
    assert "concurrency.key must give a non-empty string, got null" in str(result.outcome)


# -- whole workflows in one process -----------------------------------------------------


def test_threads_taking_from_the_memory_runner_never_exceed_the_limit() -> None:
    runner = InProcessRunner()
    for wf in ("wf#1", "wf#2"):
        runner.dispatch(wf, [keyed_job(wf, f"s{i}", "gpu", 2) for i in range(8)])
    running, peak, done, lock = 0, 0, 0, threading.Lock()

    def consume() -> None:
        nonlocal running, peak, done
        while True:
            with lock:
                if done == 16:
                    return
            jobs = runner.take_pending_jobs(limit=1)
            if not jobs:
                time.sleep(0.001)
                continue
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.01)
            with lock:
                running -= 1
                done += 1
            runner.ack(jobs[0], {})

    threads = [threading.Thread(target=consume) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert done == 16 and peak == 2


# -- the must-show: worker processes, a kill -------------------------------------------

LEASE = 2.0
SECONDS = 0.4  # per step
WIDTH = 20
LIMIT = 2


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as url:
        yield url


def _start_worker(url: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return proctools.start_worker(url, env, log, "slot_executor:execute", concurrency=3,
                                  lease=LEASE)


def _calls(path: Path) -> list[tuple[int, str, str, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        pid, event, step, at = line.split()
        rows.append((int(pid), event, step, float(at)))
    return rows


def _intervals(calls: list[tuple[int, str, str, float]], killed: tuple[int, float] | None
               ) -> list[tuple[float, float]]:
    """(start, end) of every call; a call of the killed worker ended when it was killed."""
    open_calls: dict[tuple[int, str], float] = {}
    spans = []
    for pid, event, step, at in sorted(calls, key=lambda c: c[3]):
        if event == "start":
            open_calls[(pid, step)] = at
        else:
            spans.append((open_calls.pop((pid, step)), at))
    for (pid, _), start in open_calls.items():
        assert killed is not None and pid == killed[0], f"call of {pid} never ended"
        spans.append((start, killed[1]))
    return spans


def _running(spans: list[tuple[float, float]], at: float) -> int:
    return sum(1 for start, end in spans if start <= at < end)


def _peak(spans: list[tuple[float, float]], since: float = 0.0, until: float = 1e18) -> int:
    points = [s for s, _ in spans if since <= s < until] + [since]
    return max(_running(spans, p) for p in points)


def _wait(what: str, check: Any, within: float, log: Path) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, (
            f"{what} not within {within} s; worker log tail: {log.read_text()[-3000:]}")
        time.sleep(0.05)


@pytest.mark.slow
def test_four_workers_never_run_more_than_the_limit(db_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOX_")}
    env["PYTHONPATH"] = f"{ROOT / 'tests'}{os.pathsep}{ROOT}"
    calls_log = tmp_path / "calls.log"
    env["RUNFOX_TEST_LOG"] = str(calls_log)
    log = tmp_path / "workers.log"
    store, runner = parts_from_url(db_url)
    backend = Backend(store=store, runner=runner)
    workers = [_start_worker(db_url, env, log) for _ in range(4)]
    try:
        wf_id = backend.create(fan_spec(WIDTH, SECONDS, LIMIT), {})
        backend.apply_and_advance(wf_id)

        # Kill a worker while it runs a step (so holds a slot), after a few finished.
        victim: subprocess.Popen[bytes] | None = None

        def running_victim() -> bool:
            nonlocal victim
            calls = _calls(calls_log)
            if sum(1 for c in calls if c[1] == "end") < 4:
                return False
            ended = {(c[0], c[2]) for c in calls if c[1] == "end"}
            busy = {c[0] for c in calls if c[1] == "start" and (c[0], c[2]) not in ended}
            victim = next((w for w in workers if w.pid in busy), None)
            return victim is not None

        _wait("a worker running a step", running_victim, 60, log)
        assert victim is not None
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = time.time()

        def finished() -> bool:
            return store.load(wf_id).status.is_terminal

        _wait("the workflow's end", finished, 90, log)
        record = store.load(wf_id)
        assert record.status is WorkflowStatus.COMPLETE, record.outcome
        calls = _calls(calls_log)
        spans = _intervals(calls, (victim.pid, killed_at))
        assert len(spans) >= WIDTH
        # Never more than two steps at once, the killed worker's included.
        assert _peak(spans) <= LIMIT
        # While the dead worker's lease runs (at least 2/3 of it: heartbeats come
        # every third), its slot stays held: at most one other step runs.
        assert _peak(spans, killed_at, killed_at + LEASE * 0.6) <= LIMIT - 1
        # After the lease the slot is free again: two steps ran at once.
        assert _peak(spans, killed_at + LEASE) == LIMIT
        lost = [s for s in record.steps.values() if s.attempts > 1]
        assert lost, "the killed worker's step was not retried"
        print(f"\n{db_url.split(':')[0]}: {len(spans)} calls, peak {_peak(spans)}, "
              f"retried {[s.id for s in lost]}")
    finally:
        proctools.stop_workers(workers)
        runner.close()
        store.close()
