"""A map step driven by the Lambda handler on the moto server (DynamoDB + SQS).

The map contract (``runfox.testing.MapContract``) runs on DynamoDB/SQS through
``test_aws_contract``; this drives a map the way Lambda would: each item is one SQS
job message, handled by ``lambda_handler`` fed by ``SQSConsumer``, whose results
claim the next items (``max_parallel``). And 3 ``runfox worker`` processes on
DynamoDB + SQS with one SIGKILLed mid-map.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path
from typing import Any

import proctools
import pytest
from map_executor import map_spec as mp_map_spec

from runfox.backend.aws import SQSConsumer, lambda_handler
from runfox.history import COMPLETED
from runfox.results import Dispatch
from runfox.status import StepStatus, WorkflowStatus
from runfox.testing import map_executor, map_spec

from .conftest import ROOT, Aws, new_aws


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


@pytest.mark.slow
def test_a_map_of_50_survives_a_worker_process_killed_mid_run(
        moto_url: str, aws_clients: tuple[Any, Any], tmp_path: Path) -> None:
    """3 ``runfox worker`` processes on DynamoDB + SQS (moto), one SIGKILLed once 10
    items are done: exact ordered outputs, every item completed exactly once."""
    aws = new_aws(moto_url, *aws_clients, max_receive_count=20)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOX_")}
    env["PYTHONPATH"] = f"{ROOT / 'tests'}{os.pathsep}{ROOT}"
    env["RUNFOX_TEST_LOG"] = str(tmp_path / "calls.log")
    log = tmp_path / "workers.log"
    backend = aws.backend()
    workers = [proctools.start_worker(aws.backend_url, env, log, "map_executor:execute",
                                      concurrency=2, lease=3.0) for _ in range(3)]
    try:
        wf = backend.create(mp_map_spec(seconds=0.15), {"n": 50})
        backend.apply_and_advance(wf)
        deadline = time.monotonic() + 150
        killed = False
        while True:
            record = backend.load(wf)
            if record.status.is_terminal:
                break
            assert time.monotonic() < deadline, (
                f"unfinished; worker log: {log.read_text()[-3000:]}")
            done = sum(1 for i in range(50) if (s := record.steps.get(f"each[{i}]"))
                       is not None and s.status is StepStatus.COMPLETE)
            if not killed and done >= 10:
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait()
                killed = True
            time.sleep(0.2)
        assert killed, "the map finished before a worker could be killed"
        assert record.status is WorkflowStatus.COMPLETE, record.outcome
        assert [(o["y"], o["index"]) for o in record.outcome["ys"]] == [
            (i * i, i) for i in range(50)]
        completed = collections.Counter(e.step_id for e in backend.history(wf)
                                        if e.type == COMPLETED)
        assert completed == collections.Counter(
            {"ls": 1, "each": 1, **{f"each[{i}]": 1 for i in range(50)}})
        for i in range(50):
            item = record.steps[f"each[{i}]"]
            assert item.run_id == item.attempts - 1, (i, item)
    finally:
        proctools.stop_workers(workers)
