"""The Workflow handle and the Backend driving real in-memory workflows."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from contract import fan_executor, fan_spec

import runfox as rfx
from runfox.backend import Backend, InMemoryStore, InProcessRunner, InProcessWorker
from runfox.errors import ConflictError
from runfox.records import WorkflowRecord
from runfox.status import StepStatus, WorkflowStatus

QUICKSTART = """
name: example
steps:
  - id: greet
    fn: make_greeting
    input:
      name: {"var": "input.name"}

  - id: shout
    fn: upper
    depends_on: [greet]
    input:
      text: {"var": "steps.greet.output.text"}

outputs:
  message: {"var": "steps.shout.output.text"}
"""


def greet(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "make_greeting":
        return {"text": f"hello, {inputs['name']}"}
    if fn == "upper":
        return {"text": inputs["text"].upper()}
    raise ValueError(f"unknown fn {fn!r}")


class CountingStore(InMemoryStore):
    """A real in-memory store that counts loads, to show that run() does not spin."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def _load(self, workflow_execution_id: str) -> WorkflowRecord | None:
        self.loads += 1
        return super()._load(workflow_execution_id)


def test_seed_quickstart() -> None:
    runner = InProcessRunner()
    worker = InProcessWorker(runner, greet)
    backend = rfx.Backend(store=InMemoryStore(), runner=runner)
    wf = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs={"name": "world"})
    result = wf.run(worker=worker)
    assert isinstance(result, rfx.Complete)
    assert result.outcome == {"message": "HELLO, WORLD"}
    assert wf.status is WorkflowStatus.COMPLETE
    assert wf.step_statuses == {"greet": StepStatus.COMPLETE, "shout": StepStatus.COMPLETE}
    assert repr(wf) == f"Workflow(id={wf.id!r})"
    workflow_id, execution_id = wf.id.split("#")
    assert wf.record.workflow_id == workflow_id and wf.record.execution_id == execution_id


def test_backend_with_an_executor_defaults_everything() -> None:
    backend = rfx.Backend(executor=greet)
    assert isinstance(backend.store, InMemoryStore) and isinstance(backend.runner, InProcessRunner)
    result = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs={"name": "x"}).run()
    assert result.outcome == {"message": "HELLO, X"}


def test_handles_are_interchangeable_and_resume_checks_existence() -> None:
    backend = rfx.Backend(executor=greet)
    wf = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs={"name": "a"})
    twin = rfx.Workflow.resume(wf.id, backend)
    assert twin == wf and twin.advance() is not None
    assert wf.step_statuses["greet"] is StepStatus.IN_PROGRESS
    with pytest.raises(KeyError):
        rfx.Workflow.resume("nope#none", backend)


def test_the_seed_event_driven_pattern() -> None:
    backend = rfx.Backend()
    queue: list[rfx.DispatchJob] = []

    def start(inputs: dict[str, Any]) -> str:
        wf = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs=inputs)
        result = wf.advance()
        if isinstance(result, rfx.Dispatch):
            backend.dispatch(wf.id, result.jobs)
            queue.extend(backend.take_pending_jobs())
        return wf.id

    def handle_result(wf_id: str, step_id: str, output: dict[str, Any]) -> None:
        wf = rfx.Workflow.resume(wf_id, backend)
        if isinstance(wf.on_step_result(step_id, output), rfx.Halt):
            return
        result = wf.advance()
        if isinstance(result, rfx.Dispatch):
            backend.dispatch(wf.id, result.jobs)
            queue.extend(backend.take_pending_jobs())

    wf_id = start({"name": "event"})
    while queue:
        job = queue.pop(0)
        handle_result(job.workflow_execution_id, job.step_id, greet(job.fn, job.inputs))
    assert rfx.Workflow.resume(wf_id, backend).outcome == {"message": "HELLO, EVENT"}


def test_an_executor_that_raises_fails_the_step_and_the_worker_lives_on() -> None:
    def boom(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "upper":
            raise KeyError("missing thing")
        return greet(fn, inputs)

    backend = rfx.Backend(executor=boom)
    result = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs={"name": "a"}).run()
    assert isinstance(result, rfx.Failed)
    assert result.step_id == "shout"
    assert result.error["type"] == "KeyError" and "missing thing" in result.error["message"]
    assert "Traceback" in result.error["traceback"]
    again = rfx.Workflow.from_dict({"steps": [{"id": "x", "fn": "make_greeting",
                                               "input": {"name": "b"}}]}, backend).run()
    assert isinstance(again, rfx.Complete)


@pytest.mark.parametrize(("returned", "message"), [
    ("just text", "returned str"), ({"when": object()}, "is not JSON")])
def test_bad_executor_returns_are_failed_attempts(returned: Any, message: str) -> None:
    backend = rfx.Backend(executor=lambda fn, inputs: returned)
    result = rfx.Workflow.from_dict({"steps": [{"id": "a", "fn": "f"}]}, backend).run()
    assert isinstance(result, rfx.Failed)
    assert result.error["type"] == "InvalidOutput" and message in result.error["message"]
    assert rfx.WorkflowRecord.from_dict(backend.load(backend.store.list_executions()[0]
                                                     .workflow_execution_id).to_dict())


def test_a_step_timeout_fails_the_attempt_and_a_retry_can_succeed() -> None:
    calls = []

    def slow_once(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(2)
        return {"done": True}

    backend = rfx.Backend(executor=slow_once)
    spec = {"steps": [{"id": "a", "fn": "f", "timeout": 0.2, "max_attempts": 2}],
            "outputs": {"done": {"var": "steps.a.output.done"}}}
    wf = rfx.Workflow.from_dict(spec, backend)
    started = time.monotonic()
    result = wf.run()
    assert result == rfx.Complete({"done": True})
    assert time.monotonic() - started < 1.5
    assert wf.record.steps["a"].attempts == 2

    only_once = rfx.Workflow.from_dict({"steps": [{"id": "a", "fn": "f", "timeout": 0.1}]},
                                       rfx.Backend(executor=lambda fn, i: time.sleep(1) or {}))
    failed = only_once.run()
    assert isinstance(failed, rfx.Failed) and failed.error["type"] == "TimeoutError"


def test_run_sleeps_until_a_retry_is_due_instead_of_spinning() -> None:
    attempts: list[float] = []

    def flaky(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        attempts.append(time.monotonic())
        return {"ok": len(attempts) > 1}

    store = CountingStore()
    backend = rfx.Backend(executor=flaky, store=store, poll_interval=0.001)
    spec = {"steps": [{"id": "a", "fn": "f", "max_attempts": 2,
                       "retry": {"backoff": "fixed", "delay": 0.5}}]}
    result = rfx.Workflow.from_dict(spec, backend).run()
    assert isinstance(result, rfx.Complete)
    assert attempts[1] - attempts[0] >= 0.45
    assert store.loads < 20, f"run() loaded the record {store.loads} times while waiting"


def test_cancel_through_the_handle() -> None:
    backend = rfx.Backend()
    wf = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs={"name": "a"})
    assert isinstance(wf.advance(), rfx.Dispatch)
    backend.dispatch(wf.id, [])
    result = wf.cancel("not needed")
    assert isinstance(result, rfx.Cancelled) and result.outcome["reason"] == "not needed"
    assert wf.status is WorkflowStatus.CANCELLED
    assert wf.on_step_result("greet", {"text": "late"}) == rfx.Ignored(
        "workflow is already cancelled")
    assert wf.run() == result


def test_cancel_drops_queued_jobs() -> None:
    backend = rfx.Backend()
    wf = rfx.Workflow.from_dict(fan_spec(3), backend, inputs={"n": 1})
    backend.apply_and_advance(wf.id)
    assert len(backend.list_pending_jobs()) == 1
    wf.cancel()
    assert backend.list_pending_jobs() == []


def test_on_state_change_callbacks() -> None:
    seen: list[tuple[Any, ...]] = []
    backend = rfx.Backend(executor=greet, on_state_change=lambda *a: seen.append(a))
    wf = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs={"name": "n"})
    wf.run()
    assert len(seen) == 2
    wf_id, previous, new, event = seen[1]
    assert wf_id == wf.id and previous == {"text": "hello, n"} and new == {"text": "HELLO, N"}
    assert (event.step_id, event.op, event.run_id) == ("shout", "shout", 0)

    three: list[tuple[Any, ...]] = []

    def legacy(workflow_execution_id: str, previous: dict, new: dict) -> None:
        three.append((workflow_execution_id, previous, new))

    rfx.Workflow.from_yaml(QUICKSTART, rfx.Backend(executor=greet, on_state_change=legacy),
                           inputs={"name": "n"}).run()
    assert [len(c) for c in three] == [3, 3]

    empty: list[Any] = []
    rfx.Workflow.from_dict({"steps": [{"id": "a", "fn": "f"}]},
                           rfx.Backend(executor=lambda fn, i: {},
                                       on_state_change=lambda *a: empty.append(a))).run()
    assert empty == []


def test_a_raising_callback_does_not_break_the_workflow(caplog: pytest.LogCaptureFixture) -> None:
    def bad(*args: Any) -> None:
        raise RuntimeError("impure callback")

    result = rfx.Workflow.from_yaml(QUICKSTART, rfx.Backend(executor=greet, on_state_change=bad),
                                    inputs={"name": "n"}).run()
    assert isinstance(result, rfx.Complete)
    assert "on_state_change raised" in caplog.text


def test_progress_durations_and_elapsed() -> None:
    clock = iter(range(100, 10_000))
    backend = rfx.Backend(executor=greet, clock=lambda: float(next(clock)))
    wf = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs={"name": "t"})
    assert wf.elapsed == 0.0
    assert wf.progress == {"ready": 2, "in_progress": 0, "complete": 0, "halted": 0, "retry": 0,
                           "failed": 0, "cancelled": 0, "skipped": 0, "total": 2}
    wf.run()
    assert wf.progress["complete"] == 2
    durations = wf.step_durations
    assert set(durations) == {"greet", "shout"} and all(d > 0 for d in durations.values())
    assert wf.elapsed >= sum(durations.values())


def test_progress_and_statuses_count_spec_steps_and_a_map_shows_its_items() -> None:
    from runfox.testing import map_executor, map_spec

    backend = rfx.Backend(map_executor(), poll_interval=0.01)
    wf = rfx.Workflow.from_dict(map_spec(max_parallel=2), backend, inputs={"n": 6})
    assert wf.item_counts("each") is None  # not claimed yet
    wf.advance()  # ls claimed
    wf.on_step_result("ls", {"xs": list(range(6))}, 0)
    wf.advance()  # each claimed: items 0 and 1 in progress, 4 waiting
    assert list(wf.step_statuses) == ["ls", "each", "total"]
    assert wf.step_statuses["each"] is StepStatus.IN_PROGRESS
    assert wf.progress["total"] == 3 and wf.progress["in_progress"] == 1
    assert wf.item_counts("each") == {"total": 6, "settled": 0, "complete": 0, "failed": 0,
                                      "in_progress": 2}
    assert len(wf.record.steps) == 9  # the records: 3 steps and 6 items
    wf.run(timeout=60)
    assert wf.progress == {**dict.fromkeys(wf.progress, 0), "complete": 3, "total": 3}
    assert wf.item_counts("each") == {"total": 6, "settled": 6, "complete": 6, "failed": 0,
                                      "in_progress": 0}
    assert wf.item_counts("ls") is None
    with pytest.raises(rfx.UnknownStepError):
        wf.item_counts("each[0]")

def test_a_claim_lost_in_a_crash_is_dispatched_again() -> None:
    store = InMemoryStore()
    first = rfx.Backend(store=store)
    wf_id = first.create(fan_spec(2), {"n": 3})
    first.advance(wf_id)  # claimed, then the process "dies" before dispatching
    survivor = rfx.Backend(store=store, executor=fan_executor)
    result = rfx.Workflow.resume(wf_id, survivor).run(timeout=30)
    assert result == rfx.Complete({"total": 3})


def test_run_times_out_without_losing_the_execution() -> None:
    backend = rfx.Backend(poll_interval=0.01)  # no executor, no worker: nobody runs jobs
    wf = rfx.Workflow.from_yaml(QUICKSTART, backend, inputs={"name": "slow"})
    with pytest.raises(TimeoutError):
        wf.run(timeout=0.2)
    worker = InProcessWorker(backend.runner, greet)
    assert wf.run(worker=worker).outcome == {"message": "HELLO, SLOW"}


def test_seed_backend_operations_each_write_once() -> None:
    backend = rfx.Backend()
    wf_id = backend.create({"steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "g"}]})
    backend.mark_in_progress(wf_id, "a")
    backend.write_step_output(wf_id, "a", {"x": 1})
    backend.merge_workflow_state(wf_id, {"x": 1})
    backend.mark_complete(wf_id, "a")
    backend.reset_for_retry(wf_id, "b")
    record = backend.load(wf_id)
    assert record.version == 6
    assert record.state == {"x": 1} and record.steps["a"].output == {"x": 1}
    assert record.steps["b"].status is StepStatus.RETRY and record.steps["b"].run_id == 1
    backend.reset_step(wf_id, "a")
    backend.mark_halted(wf_id, "b")
    backend.write_workflow_outcome(wf_id, {"why": "manual"})
    record = backend.load(wf_id)
    assert record.status is WorkflowStatus.HALTED and record.outcome == {"why": "manual"}
    assert backend.step_key(wf_id, "a") == f"{wf_id}#a"
    assert backend.step_run_key(wf_id, "a", 2) == f"{wf_id}#a#2"
    assert backend.workflow_execution_id(record) == wf_id


def test_backend_write_is_conditional() -> None:
    backend = rfx.Backend()
    wf_id = backend.create({"steps": [{"id": "a", "fn": "f"}]})
    record = backend.load(wf_id)
    backend.write(record.evolve(state={"hand": "edited"}))
    assert backend.load(wf_id).state == {"hand": "edited"}
    with pytest.raises(ConflictError):
        backend.write(record.evolve(state={"stale": True}))


def test_many_threads_driving_many_workflows() -> None:
    backend = Backend(executor=fan_executor)
    results: dict[int, Any] = {}

    def drive(i: int) -> None:
        results[i] = rfx.Workflow.from_dict(fan_spec(5), backend, inputs={"n": i}).run(timeout=60)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: r.outcome for i, r in results.items()} == {i: {"total": 10 * i} for i in range(8)}
