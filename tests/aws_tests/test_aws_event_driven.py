"""Workflows driven only by handlers consuming SQS messages (no ``wf.run``, no driver)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from contract import chain_spec, fan_executor, fan_spec

import runfox as rfx
from runfox.backend.aws import SQSConsumer, lambda_handler, sweep
from runfox.backend.aws.messages import Message, advance_body
from runfox.status import StepStatus, WorkflowStatus

from .conftest import Aws


class Recorder:
    """Counts executions per job and state merges (result applications) per step."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executions: Counter[tuple[str, str]] = Counter()
        self.applications: Counter[tuple[str, str]] = Counter()

    def executor(self, fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.executions[(fn, repr(sorted(inputs.items())))] += 1
        if fn == "inc":
            return {"x": inputs["x"] + 1}
        return fan_executor(fn, inputs)

    def on_state_change(self, wf: str, previous: dict[str, Any], new: dict[str, Any],
                        event: rfx.StateChangeEvent) -> None:
        with self.lock:
            self.applications[(wf, event.step_id)] += 1


def poll_once(runner: Any, handler: Any) -> int:
    return SQSConsumer(runner, handler, visibility_timeout=2, wait_time=1).poll()


def finished(backend: rfx.Backend, ids: list[str]) -> bool:
    return all(backend.load(wf).status.is_terminal for wf in ids)


def consume(aws: Aws, handler: Any, until: Any, *, threads: int = 2, timeout: float = 120.0,
            meddle: Any = None) -> None:
    """Run ``threads`` Lambda-style consumers until ``until()`` or the deadline."""
    runner = aws.runner()
    deadline = time.monotonic() + timeout
    errors: list[BaseException] = []

    def loop() -> None:
        consumer = SQSConsumer(runner, handler if meddle is None else meddle(handler, runner),
                               visibility_timeout=2, wait_time=1)
        try:
            consumer.run(until=lambda: until() or time.monotonic() > deadline)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors
    assert until(), "the workflows did not finish before the deadline"


def test_twenty_workflows_driven_by_handlers_with_duplicate_deliveries(aws: Aws) -> None:
    recorder = Recorder()
    backend = aws.backend(on_state_change=recorder.on_state_change)
    handler = lambda_handler(backend, recorder.executor)
    ids = []
    for i in range(20):
        if i % 2:
            ids.append(backend.create(fan_spec(4, f"fan{i}"), {"n": i}))
        else:
            ids.append(backend.create(chain_spec(4), {"x": i}))
    for wf in ids:  # starting is a message too: nothing but handlers drives the workflows
        backend.runner.schedule_advance(wf)
    duplicated = Counter[str]()

    def meddle(inner: Any, runner: Any) -> Any:
        """Deliver some messages twice: a copy sent again, or the same one left undeleted."""
        seen = [0]

        def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
            response = inner(event, context)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            for record in event["Records"]:
                seen[0] += 1
                if seen[0] % 3 == 0:  # a second copy of the message
                    runner.send([(runner.queue_url, record["body"], 0)])
                    duplicated["copy"] += 1
                elif seen[0] % 5 == 0 and record["messageId"] not in failed:
                    failed.add(record["messageId"])  # not deleted: redelivered after 2 s
                    duplicated["redelivered"] += 1
            return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

        return handle

    consume(aws, handler, lambda: finished(backend, ids), meddle=meddle)

    assert duplicated["copy"] > 5 and duplicated["redelivered"] > 5
    for i, wf in enumerate(ids):
        record = backend.load(wf)
        assert record.status is WorkflowStatus.COMPLETE, (wf, record.outcome)
        if i % 2:
            assert record.outcome == {"total": i * sum(range(4))}
        else:
            assert record.outcome == {"x": i + 4}
        assert set(s.status for s in record.steps.values()) == {StepStatus.COMPLETE}
        assert all(s.attempts == 1 for s in record.steps.values())
    # Every step's result was applied exactly once, duplicates or not.
    expected = {(wf, s) for wf in ids for s in backend.load(wf).steps}
    assert set(recorder.applications) == expected
    assert set(recorder.applications.values()) == {1}
    # Duplicates were mostly skipped before running; none failed or reached the DLQ.
    assert sum(recorder.executions.values()) >= len(expected)
    assert aws.dead_letters() == []


@dataclass
class Started:
    """A chain started by handlers: s0 is claimed and its job is on the queue."""

    recorder: Recorder
    backend: rfx.Backend
    handler: Any
    runner: Any
    wf: str


def start_chain(aws: Aws, length: int, x: int) -> Started:
    recorder = Recorder()
    backend = aws.backend(on_state_change=recorder.on_state_change)
    handler = lambda_handler(backend, recorder.executor)
    wf = backend.create(chain_spec(length), {"x": x})
    backend.runner.schedule_advance(wf)
    runner = aws.runner()
    poll_once(runner, handler)
    return Started(recorder, backend, handler, runner, wf)


def test_a_crashed_worker_message_comes_back_and_the_workflow_completes(aws: Aws) -> None:
    started = start_chain(aws, 2, 1)
    recorder, backend, handler, runner, wf = (started.recorder, started.backend,
                                              started.handler, started.runner, started.wf)
    # A worker receives the job and dies: no result, no delete.
    (lost,) = runner.receive(runner.queue_url, 10, lease=1, wait_time=1)
    assert lost.body and '"step_id":"s0"' in lost.body
    assert recorder.executions == Counter()
    consume(aws, handler, lambda: finished(backend, [wf]), threads=1, timeout=60)
    record = backend.load(wf)
    assert record.status is WorkflowStatus.COMPLETE and record.outcome == {"x": 3}
    assert recorder.applications == Counter({(wf, "s0"): 1, (wf, "s1"): 1})


def test_a_crash_between_claim_and_send_is_repaired_by_the_sweep(aws: Aws) -> None:
    started = start_chain(aws, 3, 0)
    recorder, backend, handler, runner, wf = (started.recorder, started.backend,
                                              started.handler, started.runner, started.wf)

    # The next handler applies s0, claims s1, writes its job row, then dies before sending.
    def crash(**_: Any) -> None:
        raise RuntimeError("the process died here")

    backend.runner.sqs.meta.events.register_first("before-call.sqs.SendMessageBatch", crash)
    try:
        assert poll_once(runner, handler) == 1
    finally:
        backend.runner.sqs.meta.events.unregister("before-call.sqs.SendMessageBatch", crash)
    record = backend.load(wf)
    assert record.steps["s0"].status is StepStatus.COMPLETE
    assert record.steps["s1"].status is StepStatus.IN_PROGRESS
    # The s0 message is redelivered and dropped; s1's row exists, so it is not sent
    # again at once (it may still be on its way) ...
    deadline = time.monotonic() + 30
    while aws.queue_depth() and time.monotonic() < deadline:
        poll_once(runner, handler)
    assert aws.queue_depth() == 0
    assert backend.load(wf).steps["s1"].status is StepStatus.IN_PROGRESS
    # ... until the scheduled sweep finds it stale (resend_after is 300 s by default).
    sweeper = rfx.Backend(store=aws.store(), runner=aws.runner(resend_after=0.0))
    assert sweep(sweeper, stale_after=0.0) == 1
    consume(aws, handler, lambda: finished(backend, [wf]), threads=1, timeout=60)
    assert backend.load(wf).outcome == {"x": 3}
    assert set(recorder.applications.values()) == {1}


def test_a_crash_before_the_job_rows_are_written_is_repaired_by_the_redelivery(
        aws: Aws) -> None:
    """The handler dies after claiming s1 and before writing its row and message."""
    started = start_chain(aws, 3, 0)
    recorder, backend, handler, runner, wf = (started.recorder, started.backend,
                                              started.handler, started.runner, started.wf)
    crashed: list[str] = []

    def crash_once(params: Any = None, **_: Any) -> None:
        body = (params or {}).get("body") or b""
        body = body.decode() if isinstance(body, bytes) else str(body)
        # Only the job rows' write: the store's record write (with its history
        # items) is a TransactWriteItems on the same client too.
        if not crashed and aws.resources.tasks_table in body:
            crashed.append("dispatch")
            raise RuntimeError("the process died here")

    events = backend.runner.dynamodb.meta.events
    events.register_first("before-call.dynamodb.TransactWriteItems", crash_once)
    try:
        assert poll_once(runner, handler) == 1
        assert crashed == ["dispatch"]
        assert backend.load(wf).steps["s1"].status is StepStatus.IN_PROGRESS
        # No sweep: the redelivered s0 message is dropped unrun and s1 is sent again.
        consume(aws, handler, lambda: finished(backend, [wf]), threads=1, timeout=60)
    finally:
        events.unregister("before-call.dynamodb.TransactWriteItems", crash_once)
    assert backend.load(wf).outcome == {"x": 3}
    assert set(recorder.applications.values()) == {1}
    assert sum(recorder.executions.values()) == 3


def test_retry_backoff_is_woken_by_a_delayed_advance_message(aws: Aws) -> None:
    attempts: list[float] = []

    def flaky(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        attempts.append(time.time())
        if len(attempts) == 1:
            raise ConnectionError("transient")
        return {"done": True}

    spec = {"steps": [{"id": "a", "fn": "flaky", "max_attempts": 2,
                       "retry": {"backoff": "fixed", "delay": 2}}]}
    backend = aws.backend()
    handler = lambda_handler(backend, flaky)
    wf = backend.create(spec)
    backend.runner.schedule_advance(wf)
    consume(aws, handler, lambda: finished(backend, [wf]), threads=1, timeout=60)
    record = backend.load(wf)
    assert record.status is WorkflowStatus.COMPLETE
    assert record.steps["a"].attempts == 2 and record.steps["a"].run_id == 1
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 1.9


def test_an_early_wake_up_is_sent_on_without_loading_the_record(aws: Aws) -> None:
    backend = aws.backend()
    handler = lambda_handler(backend, fan_executor)
    wf = backend.create(fan_spec(1))
    far = time.time() + 3600  # beyond SQS's 15-minute delay
    body = advance_body(wf, far)
    calls: Counter[str] = Counter()
    backend.runner.dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda event_name, **_: calls.update([event_name]))
    response = handler({"Records": [Message("m-1", body).to_lambda()]}, None)
    assert response == {"batchItemFailures": []}
    assert calls == Counter()  # the record was not read
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=aws.resources.queue_url,
        AttributeNames=["ApproximateNumberOfMessagesDelayed"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    assert backend.load(wf).status is WorkflowStatus.PENDING


def test_a_subworkflow_chain_driven_only_by_handlers(aws: Aws) -> None:
    """Sub-workflow steps under Lambda handlers: the handler that claims a child step
    starts the child (``Backend.start_children``), and the child's last result, applied
    by whichever handler receives it, reports to the parent."""
    from runfox.testing import SubworkflowExecutor, subworkflow_spec

    backend = aws.backend()
    handler = lambda_handler(backend, SubworkflowExecutor())
    wf = backend.create(subworkflow_spec(), {"x": 1})
    backend.runner.schedule_advance(wf)
    consume(aws, handler, lambda: finished(backend, [wf]))
    record = backend.load(wf)
    assert record.status is WorkflowStatus.COMPLETE and record.outcome == {"v": 4}
    child = backend.load(record.steps["a"].child or "")
    assert child.status is WorkflowStatus.COMPLETE and child.outcome == {"v": 3}
    assert child.parent is not None and child.parent["execution"] == wf
    assert aws.dead_letters() == []
