"""The worker under faults: executors that crash, processes that die, leases that
run out, a backend that stops answering, retries that an idle worker must wait for.

Each test is one item of "What was seen" in issue 7, on real SQLite files (and
PostgreSQL where it is cheap); nothing of runfox's storage is mocked.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqldb import scratch_database

import runfox as rfx
from runfox import graph
from runfox.backend.sql import parts_from_url
from runfox.results import DispatchJob
from runfox.status import StepStatus, WorkflowStatus
from runfox.worker import DEFAULT_LEASE, Worker

FAULTY = "fault_executors:faulty"


def sql_backend(url: str, **options: Any) -> rfx.Backend:
    store, runner = parts_from_url(url, **options)
    return rfx.Backend(store=store, runner=runner)


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[rfx.Backend]:
    backend = sql_backend(f"sqlite:///{tmp_path / 'faults.db'}")
    yield backend
    backend.runner.close()
    backend.store.close()


def one_step(fn: str, step_input: dict[str, Any] | None = None, **options: Any
             ) -> dict[str, Any]:
    return {"name": f"one-{fn}", "steps": [{"id": "a", "fn": fn, "input": step_input or {},
                                            **options}],
            "outputs": {"out": {"var": "steps.a.output"}}}


def start(backend: rfx.Backend, spec: dict[str, Any]) -> str:
    wf_id = backend.create(spec)
    backend.apply_and_advance(wf_id)
    return wf_id


def step_error(backend: rfx.Backend, wf_id: str, step: str = "a") -> dict[str, Any]:
    record = backend.load(wf_id)
    error = record.steps[step].error
    assert error is not None, record.to_dict()
    return error


# -- executors are contained -----------------------------------------------------------


@pytest.mark.parametrize(("fn", "kind", "message"), [
    ("sys_exit", "SystemExit", "sys.exit(2)"),
    ("interrupt", "KeyboardInterrupt", "KeyboardInterrupt"),
])
@pytest.mark.parametrize("timeout", [None, 5])
def test_an_executor_raising_a_base_exception_fails_its_attempt_and_the_worker_goes_on(
        sqlite: rfx.Backend, fn: str, kind: str, message: str, timeout: int | None) -> None:
    options = {"timeout": timeout} if timeout else {}
    bad = start(sqlite, one_step(fn, **options))
    good = start(sqlite, one_step("ok", {"out": {"n": 1}}))
    stats = Worker(sqlite, FAULTY, poll_interval=0.02).run(idle_timeout=0.3)
    assert stats.jobs == 2 and stats.failed == 1
    assert sqlite.load(bad).status is WorkflowStatus.FAILED
    error = step_error(sqlite, bad)
    assert error["type"] == kind and message in error["message"]  # not a TimeoutError
    assert sqlite.load(good).status is WorkflowStatus.COMPLETE


def test_a_child_that_exits_fails_only_its_job_and_the_next_job_runs(
        sqlite: rfx.Backend) -> None:
    dead = start(sqlite, one_step("exit", {"code": 3}))
    after = start(sqlite, one_step("ok"))
    worker = Worker(sqlite, FAULTY, processes=True, poll_interval=0.02)
    stats = worker.run(idle_timeout=0.5)
    error = step_error(sqlite, dead)
    assert error["type"] == "WorkerProcessDied"
    assert error["message"] == "the process running fn 'exit' exited with code 3"
    record = sqlite.load(after)
    assert record.status is WorkflowStatus.COMPLETE  # the same worker, a new process
    assert record.outcome["out"]["pid"] != os.getpid()
    assert stats.jobs == 2


def test_a_killed_child_is_reported_with_its_signal(sqlite: rfx.Backend) -> None:
    killed = start(sqlite, one_step("sigkill"))
    Worker(sqlite, FAULTY, processes=True, poll_interval=0.02).run(idle_timeout=0.3)
    error = step_error(sqlite, killed)
    assert error == {"type": "WorkerProcessDied",
                     "message": "the process running fn 'sigkill' was killed by signal 9 "
                                "(SIGKILL)"}


@pytest.mark.parametrize("processes", [False, True])
def test_an_output_nested_5000_deep_is_an_invalid_output(sqlite: rfx.Backend,
                                                         processes: bool) -> None:
    wf_id = start(sqlite, one_step("deep", {"depth": 5000}))
    stats = Worker(sqlite, FAULTY, processes=processes, poll_interval=0.02
                   ).run(idle_timeout=0.3)
    assert stats.jobs == 1
    error = step_error(sqlite, wf_id)
    assert error["type"] == "InvalidOutput"
    assert "nested more than 100 levels deep" in error["message"]  # the depth limit names itself


def test_a_timeout_in_process_mode_kills_the_child(sqlite: rfx.Backend, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    wf_id = start(sqlite, one_step("sleep", {"seconds": 60, "pidfile": str(pidfile)},
                                   timeout=0.5))
    began = time.monotonic()
    Worker(sqlite, FAULTY, processes=True, poll_interval=0.02).run(idle_timeout=0.3)
    assert time.monotonic() - began < 20
    error = step_error(sqlite, wf_id)
    assert error["type"] == "TimeoutError" and "was killed" in error["message"]
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)  # really gone, not left running


# -- lost leases -------------------------------------------------------------------------


def test_delivery_is_carried_but_not_part_of_a_jobs_identity() -> None:
    from dataclasses import replace

    from runfox.results import InvalidJob

    job = DispatchJob("w#e", "a", "f", {"x": 1})
    again = replace(job, delivery=3)
    assert job.delivery == 1 and again == job and again.key == job.key
    assert DispatchJob.from_dict(again.to_dict()).delivery == 3
    data = job.to_dict()
    del data["delivery"]
    assert DispatchJob.from_dict(data).delivery == 1  # older messages have no delivery
    with pytest.raises(InvalidJob, match="delivery"):
        DispatchJob.from_dict({**data, "delivery": 0})


def lose_the_job(backend: rfx.Backend) -> DispatchJob:
    """Claim the queued job as a worker that then dies: its short lease runs out."""
    deadline = time.monotonic() + 10
    while not (jobs := backend.runner.take_pending_jobs(limit=1, lease=0.05)):
        assert time.monotonic() < deadline, "no job to lose"
        time.sleep(0.01)
    assert jobs[0].delivery == 1
    time.sleep(0.1)
    return jobs[0]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_job_redelivered_after_its_lease_ran_out_is_reported_lost_and_retried(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with scratch_database(kind, tmp_path) as url:
        backend = sql_backend(url)
        try:
            wf_id = start(backend, one_step("ok"))  # max_attempts 1
            lost = lose_the_job(backend)
            worker = Worker(backend, FAULTY, poll_interval=0.02)
            with caplog.at_level(logging.WARNING, logger="runfox.worker"):
                stats = worker.run(idle_timeout=0.3)
            assert stats.lost == 1 and stats.jobs == 1  # the executor ran once, for run 1
            record = backend.load(wf_id)
            assert record.status is WorkflowStatus.COMPLETE
            assert record.steps["a"].run_id == lost.run_id + 1
            assert "reporting the attempt as WorkerLost" in caplog.text
            assert "delivery 2" in caplog.text
        finally:
            backend.runner.close()
            backend.store.close()


def test_a_job_that_loses_five_workers_in_a_row_fails_as_a_poison_job(
        sqlite: rfx.Backend) -> None:
    wf_id = start(sqlite, one_step("ok"))  # max_attempts 1: every retry is a WorkerLost one
    for n in range(1, graph.WORKER_LOST_CAP + 1):
        lose_the_job(sqlite)
        stats = Worker(sqlite, FAULTY, poll_interval=0.02).run(max_jobs=1)
        assert stats.lost == 1 and stats.jobs == 0
        step = sqlite.load(wf_id).steps["a"]
        assert step.error is not None and step.error["lost"] == n
    record = sqlite.load(wf_id)
    assert record.status is WorkflowStatus.FAILED
    assert record.steps["a"].attempts == graph.WORKER_LOST_CAP
    message = record.outcome["error"]["message"]
    assert "lost its worker 5 times in a row" in message and "poison" in message


def attempt(record: Any, output: dict[str, Any], now: float) -> tuple[Any, Any]:
    record, result = graph.advance(record, now)
    assert isinstance(result, rfx.Dispatch), result
    (job,) = result.jobs
    return graph.on_step_result(record, job.step_id, output, job.run_id, now)


LOST = {"ok": False, "error": {"type": "WorkerLost", "message": "lease ran out"}}
BOOM = {"ok": False, "error": {"type": "ValueError", "message": "boom"}}


def test_worker_lost_counts_against_max_attempts_without_backoff() -> None:
    from contract import new_record

    spec = one_step("f", max_attempts=3, retry={"backoff": "fixed", "delay": 60})
    record = new_record(spec)
    record, result = attempt(record, LOST, 1000.0)
    assert result == rfx.Pending(1000.0)  # no backoff for a lost worker
    assert record.steps["a"].error["lost"] == 1
    record, result = attempt(record, BOOM, 1000.0)
    assert result == rfx.Pending(1060.0)  # a real failure waits for its backoff
    assert "lost" not in record.steps["a"].error
    record, result = attempt(record, BOOM, 1060.0)
    assert isinstance(result, rfx.Failed)  # 3 attempts, one of them lost: budget spent
    assert record.steps["a"].attempts == 3


def test_worker_lost_is_retried_past_max_attempts_until_the_cap() -> None:
    from contract import new_record

    record = new_record(one_step("f", max_attempts=3))
    record, _ = attempt(record, BOOM, 0.0)
    for n in range(1, graph.WORKER_LOST_CAP):
        record, result = attempt(record, LOST, 0.0)
        assert isinstance(result, rfx.Pending) and record.steps["a"].error["lost"] == n
    record, result = attempt(record, LOST, 0.0)
    assert isinstance(result, rfx.Failed)
    assert result.error["lost"] == graph.WORKER_LOST_CAP
    assert record.steps["a"].status is StepStatus.FAILED


# -- leases --------------------------------------------------------------------------------


def lease_left(backend: rfx.Backend, job: DispatchJob) -> float:
    from sqlalchemy import select

    from runfox.backend.sql.schema import tasks

    with backend.runner.engine.connect() as conn:  # type: ignore[attr-defined]
        visible_at = conn.execute(select(tasks.c.visible_at).where(
            tasks.c.workflow_execution_id == job.workflow_execution_id,
            tasks.c.step_id == job.step_id, tasks.c.run_id == job.run_id)).scalar_one()
    return float(visible_at) - time.time()


def test_the_lease_is_fifteen_seconds_by_default_and_a_timeout_shortens_it(
        sqlite: rfx.Backend) -> None:
    assert DEFAULT_LEASE == 15.0 and Worker(sqlite, FAULTY).lease == 15.0
    from runfox.cli import build_parser

    args = build_parser().parse_args(["worker", "--executor", FAULTY])
    assert args.lease == 15.0
    start(sqlite, one_step("ok", timeout=2))
    start(sqlite, one_step("ok", timeout=100))
    worker = Worker(sqlite, FAULTY, lease=60)
    claims = worker.claims(limit=1)
    short, long_ = next(claims), next(claims)
    assert short is not None and long_ is not None
    assert worker.lease_for(short) == 7.0 and worker.lease_for(long_) == 60.0
    assert 5.0 < lease_left(sqlite, short) <= 7.5  # min(lease, timeout + 5), set at claim
    assert 55.0 < lease_left(sqlite, long_) <= 60.5
    worker.stop()


def test_heartbeats_keep_a_short_lease_alive(sqlite: rfx.Backend) -> None:
    wf_id = start(sqlite, one_step("sleep", {"seconds": 1.2}))
    stats = Worker(sqlite, FAULTY, lease=0.6, poll_interval=0.02).run(idle_timeout=0.3)
    # Every 0.2 s the lease was renewed: nobody saw the job as lost.
    assert stats.lost == 0 and stats.jobs == 1
    assert sqlite.load(wf_id).status is WorkflowStatus.COMPLETE


# -- outages ----------------------------------------------------------------------------------


def test_the_worker_rides_out_a_locked_database_and_finishes_afterwards(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another process holds the SQLite write lock for 1.5 s while a result is ready."""
    path = tmp_path / "locked.db"
    backend = sql_backend(f"sqlite:///{path}", busy_timeout=0.05)
    locked = threading.Event()

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "lock" and not locked.is_set():
            locked.set()
            holder = sqlite3.connect(str(path), check_same_thread=False,
                                     isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            threading.Timer(1.5, holder.close).start()  # closing rolls back and unlocks
        return {"x": inputs["x"] + 1}

    spec = {"name": "locky", "steps": [
        {"id": "s0", "fn": "inc", "input": {"x": {"var": "input.x"}}},
        {"id": "s1", "fn": "lock", "depends_on": ["s0"],
         "input": {"x": {"var": "steps.s0.output.x"}}},
        {"id": "s2", "fn": "inc", "depends_on": ["s1"],
         "input": {"x": {"var": "steps.s1.output.x"}}}],
        "outputs": {"x": {"var": "steps.s2.output.x"}}}
    try:
        ids = [backend.create(spec, {"x": i}) for i in range(3)]
        for wf_id in ids:
            backend.apply_and_advance(wf_id)
        worker = Worker(backend, executor, concurrency=2, poll_interval=0.02,
                        sweep_interval=0.2)
        with caplog.at_level(logging.INFO, logger="runfox.worker"):
            stats = worker.run(idle_timeout=0.5)
        assert [backend.load(i).outcome for i in ids] == [{"x": i + 3} for i in range(3)]
        assert stats.jobs == 9 and len(set(stats.executed)) == 9  # nothing ran twice
        assert stats.outages >= 1
        down = [r for r in caplog.records if "backend unavailable" in r.getMessage()]
        up = [r for r in caplog.records if "backend reachable again" in r.getMessage()]
        assert len(down) == stats.outages and len(up) == stats.outages
        assert all(r.levelno == logging.WARNING for r in down)
        assert "locked" in down[0].getMessage()
    finally:
        backend.runner.close()
        backend.store.close()


def test_workflow_run_rides_out_a_locked_database(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """``wf.run()`` (what ``runfox run`` drives) waits out an outage instead of failing."""
    path = tmp_path / "run-locked.db"
    store, runner = parts_from_url(f"sqlite:///{path}", busy_timeout=0.05)
    locked = threading.Event()

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "lock" and not locked.is_set():
            locked.set()
            holder = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            threading.Timer(1.0, holder.close).start()
        return {"x": inputs["x"] + 1}

    backend = rfx.Backend(executor=executor, store=store, runner=runner, poll_interval=0.02)
    spec = {"name": "run-locky", "steps": [
        {"id": "s0", "fn": "lock", "input": {"x": {"var": "input.x"}}},
        {"id": "s1", "fn": "inc", "depends_on": ["s0"],
         "input": {"x": {"var": "steps.s0.output.x"}}}],
        "outputs": {"x": {"var": "steps.s1.output.x"}}}
    try:
        wf = rfx.Workflow.from_dict(spec, backend, {"x": 1})
        with caplog.at_level(logging.INFO, logger="runfox.workflow"):
            result = wf.run(timeout=30)
        assert result.outcome == {"x": 3}
        messages = [r.getMessage() for r in caplog.records]
        assert sum("backend unavailable" in m for m in messages) == 1
        assert sum("backend reachable again" in m for m in messages) == 1
    finally:
        runner.close()
        store.close()


# -- idle timeout ---------------------------------------------------------------------------


def test_idle_timeout_does_not_exit_while_a_retry_is_due(sqlite: rfx.Backend) -> None:
    calls: list[float] = []

    def flaky(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        calls.append(time.monotonic())
        return {"ok": len(calls) > 1}

    wf_id = start(sqlite, one_step("f", max_attempts=2,
                                   retry={"backoff": "fixed", "delay": 1.0}))
    worker = Worker(sqlite, flaky, poll_interval=0.02, sweep_interval=30)
    began = time.monotonic()
    worker.run(idle_timeout=0.2)
    assert sqlite.load(wf_id).status is WorkflowStatus.COMPLETE
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.9
    assert worker.retry_at is None
    assert time.monotonic() - began < 10


def test_heartbeats_survive_a_locked_database(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Heartbeats fail while the write lock is held elsewhere, and resume after it."""
    path = tmp_path / "beats.db"
    backend = sql_backend(f"sqlite:///{path}", busy_timeout=0.05)
    seen: dict[str, float] = {}

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        holder = sqlite3.connect(str(path), isolation_level=None)
        time.sleep(0.2)
        holder.execute("BEGIN EXCLUSIVE")  # heartbeats every 0.3 s now fail
        time.sleep(1.0)
        holder.close()
        time.sleep(0.8)  # and succeed again
        job = next(iter(worker._held.values()))
        seen["left"] = lease_left(backend, job)
        return {"done": True}

    try:
        wf_id = start(backend, one_step("long"))
        worker = Worker(backend, executor, lease=0.9, poll_interval=0.02, sweep_interval=30)
        with caplog.at_level(logging.INFO, logger="runfox.worker"):
            stats = worker.run(idle_timeout=0.2)
        assert backend.load(wf_id).status is WorkflowStatus.COMPLETE
        # One outage as a rule; a loaded machine may see the lock end and return
        # between two rounds, which is two outages, each logged once.
        assert stats.lost == 0 and stats.jobs == 1 and stats.outages >= 1
        assert seen["left"] > 0  # renewed after the lock: the heartbeat thread lived on
        messages = [r.getMessage() for r in caplog.records]
        assert sum("backend unavailable" in m for m in messages) == stats.outages
        assert sum("backend reachable again" in m for m in messages) == stats.outages
    finally:
        backend.runner.close()
        backend.store.close()
