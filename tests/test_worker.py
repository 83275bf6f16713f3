"""The generic worker harness over the in-process runner."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

import pytest
from contract import fan_executor, fan_spec

import runfox as rfx
from runfox.results import DispatchJob
from runfox.schedules import Schedules
from runfox.worker import Worker, load_executor


def started(backend: rfx.Backend, count: int, width: int = 4) -> list[str]:
    ids = [backend.create(fan_spec(width), {"n": i}) for i in range(count)]
    for wf_id in ids:
        backend.apply_and_advance(wf_id)
    return ids


def test_a_worker_drives_workflows_to_their_end() -> None:
    backend = rfx.Backend()
    ids = started(backend, 6)
    stats = Worker(backend, fan_executor, concurrency=3).run(idle_timeout=0.5)
    assert stats.jobs == 6 * 6 and stats.failed == 0 and stats.drive_errors == 0
    assert [backend.load(i).outcome for i in ids] == [{"total": 6 * i} for i in range(6)]
    assert len(set(stats.executed)) == len(stats.executed)  # no job ran twice


def test_process_pool_runs_jobs_in_other_processes() -> None:
    backend = rfx.Backend()
    (wf_id,) = started(backend, 1, width=6)
    worker = Worker(backend, "executors:arithmetic", concurrency=2, processes=True)
    worker.run(idle_timeout=1.0)
    record = backend.load(wf_id)
    assert record.outcome == {"total": 0}
    pids = {record.steps[f"leaf{i}"].output["pid"] for i in range(6)}
    assert pids and os.getpid() not in pids


def test_stop_lets_running_jobs_finish() -> None:
    backend = rfx.Backend()
    wf_id = backend.create({"steps": [{"id": f"s{i}", "fn": "sleep", "input": {"seconds": 0.3}}
                                      for i in range(4)]})
    backend.apply_and_advance(wf_id)
    worker = Worker(backend, "executors:arithmetic", concurrency=2, poll_interval=0.05)
    threading.Timer(0.1, worker.stop).start()
    stats = worker.run()
    assert stats.jobs == 2  # the two running when stop() came finished; no more were taken
    assert len(backend.list_pending_jobs()) == 2


def test_claims_iterator_yields_none_when_idle() -> None:
    backend = rfx.Backend()
    worker = Worker(backend, fan_executor, poll_interval=0.01)
    claims = worker.claims(idle_timeout=0.05)
    assert next(claims) is None
    backend.dispatch("w#e", [DispatchJob("w#e", "a", "leaf", {"i": 1, "n": 2})])
    job = next(claims)
    assert job is not None and job.step_id == "a"
    worker.stop()
    assert list(claims) == []


def test_sweep_redispatches_lost_claims() -> None:
    backend = rfx.Backend()
    wf_id = backend.create({"steps": [{"id": "a", "fn": "seed", "input": {"n": 1}}],
                            "outputs": {"n": {"var": "steps.a.output.n"}}})
    backend.advance(wf_id)  # claimed but never dispatched: a crash between the two
    worker = Worker(backend, fan_executor, stale_after=0.0, sweep_interval=0.05,
                    poll_interval=0.01)
    deadline = time.monotonic() + 10
    while backend.load(wf_id).status is not rfx.WorkflowStatus.COMPLETE:
        worker.run(idle_timeout=0.2)
        assert time.monotonic() < deadline
    assert backend.load(wf_id).outcome == {"n": 1}


def test_sweep_starts_a_retry_when_it_is_due() -> None:
    calls: list[float] = []

    def flaky(fn: str, inputs: dict) -> dict:
        calls.append(time.monotonic())
        return {"ok": len(calls) > 1}

    backend = rfx.Backend()
    wf_id = backend.create({"steps": [{"id": "a", "fn": "f", "max_attempts": 2,
                                       "retry": {"backoff": "fixed", "delay": 0.3}}]})
    backend.apply_and_advance(wf_id)
    Worker(backend, flaky, sweep_interval=0.05, poll_interval=0.01).run(idle_timeout=1.5)
    assert backend.load(wf_id).status is rfx.WorkflowStatus.COMPLETE
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.25


@pytest.mark.parametrize(("ref", "message"), [
    ("no_colon", "must look like"),
    ("no_such_module_xyz:f", "cannot import"),
    ("executors:missing", "has no attribute 'missing'"),
    ("executors:NOT_CALLABLE", "not a callable"),
])
def test_load_executor_errors(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_executor(ref)


def test_worker_arguments_are_checked() -> None:
    backend = rfx.Backend()
    with pytest.raises(ValueError, match="module:attr"):
        Worker(backend, fan_executor, processes=True)
    with pytest.raises(ValueError, match="concurrency"):
        Worker(backend, fan_executor, concurrency=0)


def test_an_idle_heartbeat_thread_rests_until_a_job_is_held() -> None:
    """With nothing held the heartbeat thread sleeps until the registry beat (10 s
    here, not 0.5 s); holding a job wakes it, so the job's first beat is on time."""
    backend = rfx.Backend()
    worker = Worker(backend, fan_executor, lease=30.0, register=False)
    worker._registry_beat()  # as ``run`` does: the next registry beat is 10 s away
    assert worker._next_beat() > 5.0
    worker._wake.clear()
    backend.runner.dispatch("w#e", [DispatchJob("w#e", "a", "leaf", {})])
    (job,) = backend.runner.take_pending_jobs(limit=1, lease=30.0)
    worker._hold(job)
    assert worker._wake.is_set()
    assert worker._next_beat() <= 0.5


def test_a_worker_fires_a_known_schedule_on_time_and_notices_a_new_one() -> None:
    """A schedule fires at its due times, not at the next ``schedule_interval``
    look; one added while the worker runs is noticed within ``schedule_interval``."""
    backend = rfx.Backend()
    schedules = Schedules(backend)
    def spec(name: str) -> dict[str, Any]:
        return {"name": name, "steps": [{"id": "a", "fn": "seed", "input": {"n": 1}}]}

    schedules.add("early", spec("early"), every="1s")
    worker = Worker(backend, fan_executor, schedule_interval=2.5, poll_interval=0.05,
                    register=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        schedules.add("late", spec("late"), every="1s")
        time.sleep(4.0)
    finally:
        worker.stop()
        thread.join(10)
    fires = Counter(s.name for s in backend.store.list_executions(limit=1000))
    early, late = fires["early"], fires["late"]
    # Every second for 4.5 s (a look only every 2.5 s would fire at most twice) ...
    assert early >= 3, fires
    # ... and the late one from at most 2.5 s after it was added, then every second.
    assert late >= 1, fires
