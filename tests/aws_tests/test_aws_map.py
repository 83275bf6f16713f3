"""A map step driven by the Lambda handler on the moto server (DynamoDB + SQS).

The map contract (``runfox.testing.MapContract``) runs on DynamoDB/SQS through
``test_aws_contract``; this drives a map the way Lambda would: each item is one SQS
job message, handled by ``lambda_handler`` fed by ``SQSConsumer``, whose results
claim the next items (``max_parallel``).
"""

from __future__ import annotations

import time

from runfox.backend.aws import SQSConsumer, lambda_handler
from runfox.results import Dispatch
from runfox.status import StepStatus, WorkflowStatus
from runfox.testing import map_executor, map_spec

from .conftest import Aws


def test_the_lambda_handler_runs_a_map_item_by_item(aws: Aws) -> None:
    executor = map_executor(lambda x, call: x == 4 and call == 1)  # item 4 fails once
    backend = aws.backend()
    handler = lambda_handler(backend, executor)
    wf = backend.create(map_spec(max_parallel=3, max_attempts=2), {"n": 12})
    _, nxt = backend.apply_and_advance(wf)  # claims ls and sends its job
    assert isinstance(nxt, Dispatch)
    consumer = SQSConsumer(aws.runner(), handler, visibility_timeout=5, wait_time=1)
    deadline = time.monotonic() + 120
    while not backend.load(wf).status.is_terminal:
        assert time.monotonic() < deadline, backend.load(wf).steps["each"]
        consumer.poll()
    record = backend.load(wf)
    assert record.status is WorkflowStatus.COMPLETE, record.outcome
    assert record.outcome["all"] == [{"y": i * i, "i": i} for i in range(12)]
    assert executor.calls == {i: 2 if i == 4 else 1 for i in range(12)}  # type: ignore[attr-defined]
    assert record.steps["each[4]"].attempts == 2
    assert all(record.steps[f"each[{i}]"].status is StepStatus.COMPLETE for i in range(12))
    assert aws.dead_letters() == []
