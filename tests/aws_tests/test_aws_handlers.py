"""Handlers on the moto server: bad messages, partial batch failures, races, skips."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from contract import fan_executor, fan_spec

import runfox as rfx
from runfox.backend.aws import JobHandler, ResultHandler, SQSConsumer, SQSRunner, lambda_handler
from runfox.backend.aws.messages import Message, job_body, result_body
from runfox.results import Dispatch, DispatchJob, WorkResult
from runfox.status import StepStatus, WorkflowStatus

from .conftest import MAX_RECEIVES, Aws


def job_key(job: DispatchJob) -> tuple[str, str, int]:
    return job.workflow_execution_id, job.step_id, job.run_id


def start(backend: rfx.Backend, spec: dict[str, Any], inputs: dict[str, Any] | None = None
          ) -> tuple[str, list[DispatchJob]]:
    """Create an execution and claim its first steps without sending their jobs."""
    wf = backend.create(spec, inputs)
    _, nxt = backend.apply_and_advance(wf, dispatch=False)
    assert isinstance(nxt, Dispatch)
    return wf, nxt.jobs


def test_bad_messages_reach_the_dead_letter_queue_and_touch_nothing(
        aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    backend = aws.backend()
    handler = lambda_handler(backend, fan_executor)
    unknown_job = DispatchJob("nope#missing", "a", "seed", {"n": 1})
    known = backend.create(fan_spec(1), {"n": 1})
    bodies = [
        job_body(DispatchJob(known, "nostep", "seed", {})),  # a step the workflow lacks
        job_body(DispatchJob(known, "root", "rm -rf", {})),  # another fn than the step's
        "this is not JSON",
        "[1, 2, 3]",
        '{"workflow_execution_id": "x#y", "step_id": "a"}',  # no fn
        '{"workflow_execution_id": "x#y", "step_id": "a", "fn": "f", "run_id": -1}',
        '{"runfox": "explode", "workflow_execution_id": "x#y"}',
        '{"runfox": "result", "workflow_execution_id": "x#y", "step_id": "a", "output": 3}',
        '{"x": NaN}',
        job_body(unknown_job),  # well formed, but nobody dispatched it
        '{"runfox": "advance", "workflow_execution_id": "nope#missing", "not_before": null}',
    ]
    sent = {}
    for body in bodies:
        message_id = aws.sqs.send_message(QueueUrl=aws.resources.queue_url,
                                          MessageBody=body)["MessageId"]
        sent[message_id] = body
    runner = aws.runner()
    consumer = SQSConsumer(runner, handler, visibility_timeout=1, wait_time=1)
    deadline = time.monotonic() + 90
    with caplog.at_level(logging.WARNING, logger="runfox.backend.aws"):
        while aws.queue_depth() and time.monotonic() < deadline:
            consumer.poll()  # never raises: every bad message is reported, not thrown
    dead = {m["MessageId"]: m["Body"] for m in aws.dead_letters()}
    assert dead == sent
    for message_id in sent:
        assert message_id in caplog.text
    # Nothing was written anywhere.
    assert aws.dynamodb.scan(TableName=aws.resources.tasks_table)["Items"] == []
    (item,) = aws.dynamodb.scan(TableName=aws.resources.table)["Items"]
    assert item["id"]["S"] == known and item["version"]["N"] == "1"


def test_lambda_handler_reports_partial_batch_failures(aws: Aws) -> None:
    backend = aws.backend()
    handler = lambda_handler(backend, fan_executor)
    wf, (root,) = start(backend, fan_spec(2), {"n": 3})
    backend.runner.dispatch(wf, [root])
    (message,) = backend.runner.receive(aws.resources.queue_url, 10, lease=30)
    event = {"Records": [message.to_lambda("arn:aws:sqs:us-east-1:123456789012:q"),
                         Message("bad-1", "{oops").to_lambda(),
                         Message("bad-2", job_body(DispatchJob("x#y", "a", "f", {}))).to_lambda()]}
    response = handler(event, None)
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"},
                                              {"itemIdentifier": "bad-2"}]}
    record = backend.load(wf)
    assert record.steps["root"].status is StepStatus.COMPLETE
    assert {record.steps["leaf0"].status, record.steps["leaf1"].status} == {
        StepStatus.IN_PROGRESS}
    assert handler({"Records": []}, None) == {"batchItemFailures": []}


def test_a_handler_that_cannot_reach_aws_fails_the_whole_batch(aws: Aws) -> None:
    backend = aws.backend()
    handler = lambda_handler(backend, fan_executor)

    def unreachable(**_: Any) -> None:
        raise ConnectionError("network down")

    backend.runner.dynamodb.meta.events.register_first("before-call.dynamodb.*", unreachable)
    try:
        records = [Message(f"m{i}", job_body(DispatchJob("x#y", f"s{i}", "f", {}))).to_lambda()
                   for i in range(3)]
        response = handler({"Records": records}, None)
    finally:
        backend.runner.dynamodb.meta.events.unregister("before-call.dynamodb.*", unreachable)
    assert response == {"batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(3)]}


def test_parallel_result_handlers_lose_no_update(aws: Aws) -> None:
    merges: list[str] = []
    lock = threading.Lock()

    def on_change(wf: str, previous: dict[str, Any], new: dict[str, Any],
                  event: rfx.StateChangeEvent) -> None:
        with lock:
            merges.append(event.step_id)

    backend = aws.backend(on_state_change=on_change)
    results = ResultHandler(backend)
    wf, (root,) = start(backend, fan_spec(40), {"n": 2})
    backend.runner.dispatch(wf, [root])
    nxt = results(wf, "root", {"n": 2}, root.run_id)
    assert isinstance(nxt, Dispatch) and len(nxt.jobs) == 40
    leaves = nxt.jobs
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def apply(part: list[DispatchJob]) -> None:
        try:
            barrier.wait()
            for job in part:
                results.apply(wf, [WorkResult(job.step_id, fan_executor(job.fn, job.inputs),
                                              job.run_id)], completed=[job_key(job)])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(leaves[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    record = backend.load(wf)
    assert sorted(k for k in record.state if k.startswith("k")) == sorted(
        f"k{i}" for i in range(40))
    assert all(record.steps[f"leaf{i}"].status is StepStatus.COMPLETE for i in range(40))
    assert record.steps["sink"].status is StepStatus.IN_PROGRESS
    assert sorted(merges) == sorted(["root", *(f"leaf{i}" for i in range(40))])
    # The sink was dispatched exactly once, and every leaf's job row is closed.
    pending = backend.runner.list_pending_jobs()
    assert [j.step_id for j in pending] == ["sink"]
    rows = backend.runner.tasks.query(wf, "job#leaf")
    assert {r["state"]["S"] for r in rows} == {"done"} and len(rows) == 40


def test_jobs_of_a_cancelled_execution_are_dropped_unrun(aws: Aws) -> None:
    ran: list[str] = []

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        ran.append(fn)
        return fan_executor(fn, inputs)

    backend = aws.backend()
    handler = lambda_handler(backend, executor)
    wf, jobs = start(backend, fan_spec(3), {"n": 1})
    backend.runner.dispatch(wf, jobs)
    backend.cancel(wf, "changed my mind")
    consumer = SQSConsumer(aws.runner(), handler, visibility_timeout=2, wait_time=1)
    assert consumer.poll() == 1
    assert ran == []
    assert aws.queue_depth() == 0  # deleted, not left for the DLQ
    assert backend.load(wf).status is WorkflowStatus.CANCELLED


def test_a_halt_cancels_the_queued_jobs_of_its_siblings(aws: Aws) -> None:
    spec = {"steps": [
        {"id": "judge", "fn": "judge",
         "branch": [{"condition": {"==": [{"var": "verdict"}, "stop"]}, "action": "halt",
                     "result": {"stopped": True}}]},
        {"id": "slow", "fn": "slow"},
    ]}
    ran: list[str] = []

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        ran.append(fn)
        return {"verdict": "stop"}

    backend = aws.backend()
    wf, jobs = start(backend, spec)
    backend.runner.dispatch(wf, jobs)
    by_step = {m.body: m for m in backend.runner.receive(aws.resources.queue_url, 10, 30)}
    judge = next(m for body, m in by_step.items() if '"step_id":"judge"' in body)
    handler = JobHandler(backend, executor)
    assert handler.process([judge]) == []
    assert isinstance(backend.load(wf).outcome, dict)
    assert backend.load(wf).status is WorkflowStatus.HALTED
    slow = next(m for body, m in by_step.items() if '"step_id":"slow"' in body)
    assert handler.process([slow]) == []  # dropped unrun: the execution has ended
    assert ran == ["judge"]


def test_results_reported_as_messages_are_applied(aws: Aws) -> None:
    backend = aws.backend()
    handler = lambda_handler(backend)  # no executor: a result handler only
    wf, (root,) = start(backend, fan_spec(1), {"n": 4})
    body = result_body(wf, "root", {"n": 4}, root.run_id)
    response = handler({"Records": [Message("r1", body).to_lambda(),
                                    Message("r2", body).to_lambda()]}, None)
    assert response == {"batchItemFailures": []}
    record = backend.load(wf)
    assert record.steps["root"].status is StepStatus.COMPLETE
    assert record.steps["leaf0"].status is StepStatus.IN_PROGRESS
    # A job message needs an executor: this handler leaves it on the queue.
    (leaf_message,) = backend.runner.receive(aws.resources.queue_url, 10, 30)
    assert handler({"Records": [leaf_message.to_lambda()]}, None) == {
        "batchItemFailures": [{"itemIdentifier": leaf_message.message_id}]}


def test_results_submitted_elsewhere_are_applied_on_an_advance_message(aws: Aws) -> None:
    """An outside worker submits through the task table and asks for an advance."""
    backend = aws.backend()
    wf, jobs = start(backend, fan_spec(2), {"n": 5})
    backend.runner.dispatch(wf, jobs)
    outside = aws.runner()
    (job,) = outside.take_pending_jobs(lease=30)
    assert outside.submit_work_result(wf, job.step_id, fan_executor(job.fn, job.inputs),
                                      job.run_id)
    outside.schedule_advance(wf)
    (message,) = backend.runner.receive(aws.resources.queue_url, 10, 30)
    assert json.loads(message.body)["runfox"] == "advance"
    assert JobHandler(backend).process([message]) == []
    record = backend.load(wf)
    assert record.steps["root"].status is StepStatus.COMPLETE
    assert backend.runner.gather(wf) == []  # taken by the handler, once


def test_concurrent_gatherers_get_each_result_once(aws: Aws) -> None:
    runner = aws.runner()
    jobs = [DispatchJob("wf#g", f"s{i}", "f", {"i": i}) for i in range(30)]
    runner.dispatch("wf#g", jobs)
    for job in runner.take_pending_jobs():
        assert runner.submit_work_result("wf#g", job.step_id, {"i": job.inputs["i"]},
                                         job.run_id)
    got: list[WorkResult] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def gather() -> None:
        barrier.wait()
        for _ in range(3):
            mine = runner.gather("wf#g")
            with lock:
                got.extend(mine)

    threads = [threading.Thread(target=gather) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.step_id for r in got) == sorted(f"s{i}" for i in range(30))


def test_routing_by_fn_sends_jobs_to_their_queues(aws: Aws) -> None:
    gpu_url = aws.sqs.create_queue(QueueName=aws.resources.table + "-gpu")["QueueUrl"]
    cpu_url = aws.resources.queue_url

    def route(job: DispatchJob) -> str:
        return gpu_url if job.fn == "render" else cpu_url

    runner = SQSRunner(route, tasks_table=aws.resources.tasks_table, receive_queues=[gpu_url],
                       events_queue=cpu_url, sqs_client=aws.sqs, dynamodb_client=aws.dynamodb)
    runner.dispatch("wf#r", [DispatchJob("wf#r", "a", "render", {}),
                             DispatchJob("wf#r", "b", "parse", {})])
    assert [j.step_id for j in runner.take_pending_jobs(lease=30)] == ["a"]
    assert aws.queue_depth(cpu_url) == 1
    with pytest.raises(ValueError, match="receive_queues"):
        SQSRunner(route, tasks_table=aws.resources.tasks_table, sqs_client=aws.sqs,
                  dynamodb_client=aws.dynamodb)


def test_a_superseded_run_is_dropped_unrun(aws: Aws) -> None:
    """After a retry the old run's job (say, a late duplicate) is not run again."""
    ran: list[int] = []

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        ran.append(1)
        raise ConnectionError("flaky")

    backend = aws.backend()
    spec = {"steps": [{"id": "a", "fn": "f", "max_attempts": 3,
                       "retry": {"backoff": "fixed", "delay": 600}}]}
    wf, (first,) = start(backend, spec)
    backend.runner.dispatch(wf, [first])
    (message,) = backend.runner.receive(aws.resources.queue_url, 10, 30)
    handler = JobHandler(backend, executor)
    assert handler.process([message]) == []  # fails: run 1 waits 10 minutes
    assert backend.load(wf).steps["a"].run_id == 1
    assert handler.process([message]) == []  # the run-0 job again: dropped
    assert ran == [1]


def test_duplicate_copies_in_one_batch_run_once(aws: Aws) -> None:
    ran: list[str] = []
    backend = aws.backend()
    wf, (root,) = start(backend, fan_spec(1), {"n": 1})
    backend.runner.dispatch(wf, [root])
    backend.runner.send([(aws.resources.queue_url, job_body(root), 0)])  # a second copy
    messages = backend.runner.receive(aws.resources.queue_url, 10, 30)
    assert len(messages) == 2

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        ran.append(fn)
        return fan_executor(fn, inputs)

    assert JobHandler(backend, executor).process(messages) == []
    assert ran == ["seed"]


def test_dead_letter_redrive_counts_receives(aws: Aws) -> None:
    """The test queue's redrive policy is what the DLQ test above relies on."""
    attributes = aws.sqs.get_queue_attributes(QueueUrl=aws.resources.queue_url,
                                              AttributeNames=["RedrivePolicy"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == MAX_RECEIVES
