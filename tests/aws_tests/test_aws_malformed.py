"""Results without a run id, and Lambda records that are not SQS messages."""

from __future__ import annotations

import json
import logging
import time

import pytest
from contract import fan_executor, fan_spec

from runfox.backend.aws import ResultHandler, SQSConsumer, lambda_handler
from runfox.backend.aws.messages import Invalid, Message, parse, result_body
from runfox.status import StepStatus

from .conftest import Aws
from .test_aws_handlers import start


def result_without_run(wf: str, run_id: object = None, *, drop: bool = False) -> str:
    body = {"runfox": "result", "workflow_execution_id": wf, "step_id": "root",
            "run_id": run_id, "output": {"n": 99}}
    if drop:
        del body["run_id"]
    return json.dumps(body)


def test_a_result_message_without_a_run_id_is_invalid() -> None:
    for body in (result_without_run("w#1"), result_without_run("w#1", drop=True),
                 result_without_run("w#1", "3"), result_without_run("w#1", True)):
        parsed = parse(body)
        assert isinstance(parsed, Invalid) and "run_id" in parsed.reason
    with pytest.raises(ValueError, match="run id"):
        result_body("w#1", "root", {"n": 1})


def test_a_result_without_a_run_id_is_never_applied_to_the_current_run(
        aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    backend = aws.backend()
    wf, _ = start(backend, fan_spec(1), {"n": 4})
    before = backend.load(wf)
    handler = lambda_handler(backend)
    records = [Message("null-run", result_without_run(wf)).to_lambda(),
               Message("no-run", result_without_run(wf, drop=True)).to_lambda()]
    with caplog.at_level(logging.WARNING, logger="runfox.backend.aws"):
        response = handler({"Records": records}, None)
    assert response == {"batchItemFailures": [{"itemIdentifier": "null-run"},
                                              {"itemIdentifier": "no-run"}]}
    assert "null-run" in caplog.text and "no-run" in caplog.text
    after = backend.load(wf)
    assert after.version == before.version
    assert after.steps["root"].status is StepStatus.IN_PROGRESS
    with pytest.raises(ValueError, match="run id"):
        ResultHandler(backend)(wf, "root", {"n": 99}, None)  # type: ignore[arg-type]
    assert backend.load(wf).version == before.version


def test_a_result_without_a_run_id_reaches_the_dead_letter_queue(aws: Aws) -> None:
    backend = aws.backend()
    wf, _ = start(backend, fan_spec(1), {"n": 4})
    version = backend.load(wf).version
    body = result_without_run(wf)
    aws.sqs.send_message(QueueUrl=aws.resources.queue_url, MessageBody=body)
    consumer = SQSConsumer(aws.runner(), lambda_handler(backend, fan_executor),
                           visibility_timeout=1, wait_time=1)
    deadline = time.monotonic() + 60
    while aws.queue_depth() and time.monotonic() < deadline:
        consumer.poll()
    assert [m["Body"] for m in aws.dead_letters()] == [body]
    assert backend.load(wf).version == version


def test_the_lambda_handler_never_raises_on_a_malformed_record(
        aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    backend = aws.backend()
    handler = lambda_handler(backend, fan_executor)
    wf, (root,) = start(backend, fan_spec(1), {"n": 3})
    good = Message("good", result_body(wf, "root", {"n": 3}, root.run_id)).to_lambda()
    records = [
        5, "a string", None, ["a", "list"],  # not objects, no id to report them by
        {"body": "{}"},  # no messageId
        {"messageId": "body-int", "body": 7},
        {"messageId": "body-none", "body": None},
        {"messageId": "no-body"},
        {"messageId": "bad-count", "body": "{}", "attributes": {"ApproximateReceiveCount": "x"}},
        {"messageId": "bad-attributes", "body": "{}", "attributes": [1]},
        {"messageId": "not-json", "body": "{oops"},
        good,
    ]
    with caplog.at_level(logging.WARNING, logger="runfox.backend.aws"):
        response = handler({"Records": records}, None)
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed == ["body-int", "body-none", "bad-count", "bad-attributes", "no-body",
                      "not-json"]
    for message_id in failed:
        assert message_id in caplog.text
    assert "record 0 of the event" in caplog.text and "record 4 of the event" in caplog.text
    # The good record in the same batch was applied.
    assert backend.load(wf).steps["root"].status is StepStatus.COMPLETE
    for event in (None, {}, [], "x", {"Records": None}, {"Records": "x"}, {"Records": {}}):
        assert handler(event, None) == {"batchItemFailures": []}  # type: ignore[arg-type]
