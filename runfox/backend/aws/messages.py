"""What travels on the SQS queue, and how a received message is read.

Every message body is a JSON object (never pickle). Three kinds:

- a **job**: exactly ``DispatchJob.to_dict()``;
- an **advance** request: ``{"runfox": "advance", "workflow_execution_id": ...,
  "not_before": <epoch seconds or null>}``: look at this execution (apply the
  results waiting for it, claim what is due). With a delay it is the wake-up of
  a retry whose backoff has not passed; without one it starts an execution or
  follows up on results submitted elsewhere;
- a **result**: ``{"runfox": "result", "workflow_execution_id": ..., "step_id": ...,
  "run_id": <int>, "output": {...}}``, for workers that report over SQS. The run id
  is required: it is what keeps a stale or forged result from being applied to a
  newer run of the step (a retry, a loop's next pass).

Anything else (not JSON, missing fields, wrong types, a result without a run id)
is *invalid*: the consumer logs it with its message id and leaves it on the
queue, so the queue's redrive policy moves it to the dead-letter queue. So is a
Lambda record that is not an SQS message at all (``Message.from_lambda`` raises
``ValueError``; ``lambda_handler`` reports it by its ``messageId``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ...results import DispatchJob, InvalidJob
from ._codec import dumps

__all__ = ["Advance", "Invalid", "Message", "ResultMessage", "advance_body", "parse",
           "result_body"]


@dataclass(frozen=True, slots=True)
class Message:
    """One received SQS message.

    ``receipt_handle`` and ``queue_url`` are what deleting it or changing its
    visibility needs; a Lambda event gives the queue as ``eventSourceARN`` only,
    so ``queue_url`` may be empty there (Lambda deletes the messages itself).
    """

    message_id: str
    body: str
    receipt_handle: str = ""
    queue_url: str = ""
    receive_count: int = 1

    @classmethod
    def from_sqs(cls, raw: dict[str, Any], queue_url: str) -> Message:
        """From a ``ReceiveMessage`` response entry."""
        return cls(raw["MessageId"], raw.get("Body", ""), raw.get("ReceiptHandle", ""),
                   queue_url, int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1)))

    @classmethod
    def from_lambda(cls, record: Any) -> Message:
        """From one record of a Lambda SQS event.

        Raises ``ValueError`` naming what is wrong when ``record`` is not an SQS
        record (not an object, no ``messageId``, a body that is not a string...).
        """
        if not isinstance(record, dict):
            raise ValueError(f"the record is a {type(record).__name__}, not an object")
        message_id = record.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            raise ValueError("the record has no messageId")
        body = record.get("body", "")
        handle = record.get("receiptHandle", "")
        if not isinstance(body, str) or not isinstance(handle, str):
            raise ValueError("the record's body and receiptHandle must be strings")
        attributes = record.get("attributes") or {}
        count = attributes.get("ApproximateReceiveCount", 1) if isinstance(attributes,
                                                                           dict) else None
        try:
            receive_count = int(count)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"the record's ApproximateReceiveCount {count!r} is not a "
                             "number") from None
        return cls(message_id, body, handle, "", receive_count)

    def to_lambda(self, source_arn: str = "") -> dict[str, Any]:
        """This message as a record of a Lambda SQS event."""
        return {"messageId": self.message_id, "receiptHandle": self.receipt_handle,
                "body": self.body, "eventSource": "aws:sqs", "eventSourceARN": source_arn,
                "attributes": {"ApproximateReceiveCount": str(self.receive_count)},
                "messageAttributes": {}}


@dataclass(frozen=True, slots=True)
class Advance:
    """Look at ``workflow_execution_id`` (at ``not_before`` or later, when set)."""

    workflow_execution_id: str
    not_before: float | None = None


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """A step result that arrived as a message."""

    workflow_execution_id: str
    step_id: str
    run_id: int
    output: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Invalid:
    """A message that is not for runfox; ``reason`` says why."""

    reason: str


Parsed = DispatchJob | Advance | ResultMessage | Invalid


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidJob(f"field {name!r} must be a non-empty string")
    return value


def _parse_control(data: dict[str, Any]) -> Parsed:
    kind = data.get("runfox")
    wf = _text(data, "workflow_execution_id")
    if kind == "advance":
        not_before = data.get("not_before")
        if not_before is not None and (isinstance(not_before, bool) or not isinstance(
                not_before, int | float) or not math.isfinite(not_before)):
            raise InvalidJob("field 'not_before' must be a number or null")
        return Advance(wf, None if not_before is None else float(not_before))
    if kind == "result":
        run_id = data.get("run_id")
        if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id < 0:
            raise InvalidJob(f"field 'run_id' must be a non-negative integer, got {run_id!r}: a "
                             "result must name the run it came from")
        output = data.get("output")
        if not isinstance(output, dict):
            raise InvalidJob("field 'output' must be an object")
        return ResultMessage(wf, _text(data, "step_id"), run_id, output)
    raise InvalidJob(f"unknown runfox message kind {kind!r}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(body: str) -> Parsed:
    """Classify a message body; never raises (a bad body gives ``Invalid``)."""
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, TypeError, RecursionError) as exc:
        return Invalid(f"body is not JSON ({exc})")
    try:
        if isinstance(data, dict) and "runfox" in data:
            return _parse_control(data)
        return DispatchJob.from_dict(data)
    except InvalidJob as exc:
        return Invalid(str(exc))


def job_body(job: DispatchJob) -> str:
    """The body of a job message (canonical JSON, so equal jobs give equal bodies)."""
    return dumps(job.to_dict())


def advance_body(workflow_execution_id: str, not_before: float | None = None) -> str:
    return dumps({"runfox": "advance", "workflow_execution_id": workflow_execution_id,
                  "not_before": not_before})


def result_body(workflow_execution_id: str, step_id: str, output: dict[str, Any],
                run_id: int | None = None) -> str:
    """The body of a result message, for workers that report results over SQS.

    ``run_id`` is required (``None`` is a ``ValueError``): a result message
    without one is refused by every consumer.
    """
    if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id < 0:
        raise ValueError(f"a result message needs the run id of its job, got {run_id!r}")
    return dumps({"runfox": "result", "workflow_execution_id": workflow_execution_id,
                  "step_id": step_id, "run_id": run_id, "output": output})
