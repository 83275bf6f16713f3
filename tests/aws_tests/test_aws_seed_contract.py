"""The seed's AWS sentence: ``runner=SQSRunner(queue_url="https://...")``.

Named after the seed README sentence each test enforces (see
``tests/test_seed_contract.py`` for the others).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

import runfox as rfx
from runfox.backend import Backend
from runfox.backend.aws import SQSRunner
from runfox.errors import BackendError

from .conftest import Aws

DEFAULT_TABLE = "runfox-tasks"


def _drop_default_table(aws: Aws) -> None:
    with contextlib.suppress(aws.dynamodb.exceptions.ResourceNotFoundException):
        aws.dynamodb.delete_table(TableName=DEFAULT_TABLE)


def _execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"text": f"{fn}:{inputs['x']}"}


def test_sqs_runner_takes_queue_url_as_in_the_seed(aws: Aws) -> None:
    """``Backend(store=DynamoDBStore(table=...), runner=SQSRunner(queue_url=...))``."""
    runner = SQSRunner(queue_url=aws.resources.queue_url,
                       tasks_table=aws.resources.tasks_table,
                       sqs_client=aws.sqs, dynamodb_client=aws.dynamodb)
    assert runner.queue_url == aws.resources.queue_url
    backend = Backend(executor=_execute, store=aws.store(), runner=runner,
                      poll_interval=0.01)
    spec = {"steps": [{"id": "a", "fn": "echo", "input": {"x": {"var": "input.x"}}}],
            "outputs": {"text": {"var": "steps.a.output.text"}}}
    result = rfx.Workflow.from_dict(spec, backend, inputs={"x": 1}).run(timeout=60)
    assert result == rfx.Complete({"text": "echo:1"})


def test_sqs_runner_needs_exactly_one_queue(aws: Aws) -> None:
    clients = {"sqs_client": aws.sqs, "dynamodb_client": aws.dynamodb}
    with pytest.raises(TypeError, match="queue_url"):
        SQSRunner(**clients)
    with pytest.raises(TypeError, match="exactly one"):
        SQSRunner(aws.resources.queue_url, queue_url=aws.resources.queue_url, **clients)


def test_the_default_task_table_is_created_when_missing(aws: Aws) -> None:
    _drop_default_table(aws)
    try:
        runner = SQSRunner(queue_url=aws.resources.queue_url, sqs_client=aws.sqs,
                           dynamodb_client=aws.dynamodb)
        assert runner.tasks.table == DEFAULT_TABLE
        table = aws.dynamodb.describe_table(TableName=DEFAULT_TABLE)["Table"]
        assert [k["AttributeName"] for k in table["KeySchema"]] == ["wf", "sk"]
        # A second runner finds it and leaves it as it is.
        SQSRunner(queue_url=aws.resources.queue_url, sqs_client=aws.sqs,
                  dynamodb_client=aws.dynamodb)
    finally:
        _drop_default_table(aws)


def test_a_named_task_table_that_is_missing_is_an_error(aws: Aws) -> None:
    with pytest.raises(BackendError, match="no-such-tasks"):
        SQSRunner(queue_url=aws.resources.queue_url, tasks_table="no-such-tasks",
                  sqs_client=aws.sqs, dynamodb_client=aws.dynamodb)
