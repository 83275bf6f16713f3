"""Large payloads on AWS: S3 as the payload store (moto server), DynamoDB records and
SQS jobs that carry references, and ``RecordTooLarge`` naming the setting."""

from __future__ import annotations

from typing import Any

import pytest

from runfox import Workflow
from runfox.backend import Backend
from runfox.backend.aws import S3Payloads, parse_url, parts_from_url
from runfox.backend.aws.config import AWS_OFFLOAD_BYTES
from runfox.results import Complete, Failed
from runfox.testing import OffloadContract, PayloadContract, large_text

from .conftest import Aws


class TestS3Payloads(PayloadContract):
    @pytest.fixture
    def payloads(self, aws: Aws) -> S3Payloads:
        return S3Payloads(aws.resources.bucket, endpoint_url=aws.url, verify=True)


class TestDynamoDBOffloading(OffloadContract):
    @pytest.fixture
    def store(self, aws: Aws) -> Any:
        return aws.store(payloads=aws.offloader(1024))

    @pytest.fixture
    def reopen(self, aws: Aws) -> Any:
        return lambda: aws.store(payloads=aws.offloader(1024))


def _one_output(size: int) -> dict[str, Any]:
    return {"name": "mb", "steps": [{"id": "big", "fn": "big", "input": {"n": size}}],
            "outputs": {"length": {"var": "steps.big.output.length"},
                        "head": {"var": "steps.big.output.head"}}}


def _big(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    text = large_text(inputs["n"], 9)
    return {"text": text, "length": len(text), "head": text[:8]}


def test_a_1_mb_output_works_through_an_aws_url(aws: Aws) -> None:
    store, runner = parts_from_url(aws.backend_url)
    assert store.payloads() is not None and store.payloads().threshold == AWS_OFFLOAD_BYTES
    backend = Backend(store=store, runner=runner, executor=_big, poll_interval=0.01)
    wf = Workflow.from_dict(_one_output(1_000_000), backend)
    result = wf.run(timeout=120)
    assert isinstance(result, Complete), result
    assert result.outcome == {"length": 1_000_000, "head": large_text(1_000_000, 9)[:8]}
    assert wf.step_output("big")["text"] == large_text(1_000_000, 9)
    item = aws.dynamodb.get_item(TableName=aws.resources.table,
                                 Key={"id": {"S": wf.id}})["Item"]
    assert sum(len(str(v)) for v in item.values()) < 20_000  # the item holds a reference


def test_without_offloading_too_large_names_the_setting(aws: Aws) -> None:
    backend = Backend(store=aws.store(), runner=aws.runner(), executor=_big,
                      poll_interval=0.01)
    wf = Workflow.from_dict(_one_output(1_000_000), backend)
    result = wf.run(timeout=120)
    assert isinstance(result, Failed), result
    message = str(result.error)
    assert "RecordTooLarge" in message and "offload=" in message and "bucket=" in message


def test_the_url_sets_bucket_and_threshold() -> None:
    settings = parse_url("aws://?prefix=p")
    assert settings.bucket == "p-payloads" and settings.offload == AWS_OFFLOAD_BYTES
    settings = parse_url("aws://?bucket=none&offload=off")
    assert settings.bucket is None and settings.offload is None
    assert parse_url("aws://?offload=100000").offload == 100_000
    with pytest.raises(ValueError, match="offload"):
        parse_url("aws://?offload=much")


def test_a_missing_bucket_is_named_at_start(aws: Aws) -> None:
    from runfox.errors import BackendError

    url = aws.resources.url(endpoint_url=aws.url, bucket="no-such-runfox-bucket")
    with pytest.raises(BackendError, match=r"no-such-runfox-bucket.*bucket=none"):
        parts_from_url(url)


def test_lambda_handlers_pass_large_values_by_reference(aws: Aws) -> None:
    """Event-driven (no wf.run): a 1 MB output reaches the next job's inputs through
    SQS messages and task rows that carry references."""
    import time

    from runfox.backend.aws import SQSConsumer, lambda_handler

    text = large_text(1_000_000, 12)

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "make":
            return {"text": text}
        return {"same": inputs["t"] == text, "length": len(inputs["t"])}

    payloads = aws.offloader()
    backend = Backend(store=aws.store(payloads=payloads), runner=aws.runner(payloads=payloads))
    spec = {"name": "lambda-large", "steps": [
        {"id": "make", "fn": "make"},
        {"id": "use", "fn": "use", "depends_on": ["make"],
         "input": {"t": {"var": "steps.make.output.text"}}}],
        "outputs": {"same": {"var": "steps.use.output.same"},
                    "length": {"var": "steps.use.output.length"}}}
    wf = backend.create(spec)
    backend.runner.schedule_advance(wf)
    consumer = SQSConsumer(backend.runner, lambda_handler(backend, executor),
                           visibility_timeout=2, wait_time=1)
    deadline = time.monotonic() + 60
    consumer.run(until=lambda: backend.load(wf).status.is_terminal
                 or time.monotonic() > deadline)
    record = backend.load(wf)
    assert record.outcome == {"same": True, "length": len(text)}, record.outcome
    assert record.steps["make"].output == {"text": text}


def test_a_job_whose_input_blob_is_gone_fails_its_attempt_naming_the_key(aws: Aws) -> None:
    from runfox import payloads
    from runfox.results import DispatchJob

    inputs = {"doc": large_text(100_000, 13)}
    sender = aws.runner(payloads=aws.offloader())
    sender.dispatch("wf#1", [DispatchJob("wf#1", "a", "f", inputs)])
    key = payloads.make_ref(payloads.encode(inputs))["$runfox_ref"]
    assert aws.offloader().delete([key]) == 1
    taker = aws.runner(payloads=aws.offloader())
    assert taker.take_pending_jobs(lease=30.0) == []  # nothing an executor could run
    ((step_id, output),) = taker.gather("wf#1")
    assert step_id == "a" and output["ok"] is False
    assert output["error_type"] == "PayloadMissing" and key in output["error"]
