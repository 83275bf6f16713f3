"""Retry filters: ``retry: {on: [...]}`` and ``retry: {on_timeout: false}``."""

from __future__ import annotations

from typing import Any

import pytest
from contract import new_record

from runfox import graph
from runfox.errors import SpecError
from runfox.records import WorkflowRecord
from runfox.results import Dispatch, Failed, Pending
from runfox.retry import RetryPolicy, type_matches
from runfox.spec import compile_spec, parse_yaml
from runfox.status import StepStatus

T0 = 1_000.0


@pytest.mark.parametrize(("kind", "filters", "expected"), [
    ("TimeoutError", ("TimeoutError",), True),
    ("ConnectionRefusedError", ("ConnectionError",), True),  # a builtin subclass
    ("ConnectionRefusedError", ("OSError",), True),
    ("ValueError", ("ConnectionError", "TimeoutError"), False),
    ("ConnectionError", ("ConnectionRefusedError",), False),  # a superclass does not match
    # A dotted entry is imported; a bare recorded name is found in its module.
    ("RemoteDisconnected", ("http.client.HTTPException",), True),
    ("http.client.RemoteDisconnected", ("ConnectionError",), False),  # module not named
    ("http.client.RemoteDisconnected", ("http.client.BadStatusLine",), True),
    # Unimportable names match by spelling only (the full name or its last part).
    ("Throttled", ("nosuch.module.Throttled",), True),
    ("nosuch.module.Throttled", ("Throttled",), True),
    ("SlowDown", ("nosuch.module.Throttled",), False),
    ("NotAClass", ("len",), False),
    ("Error", ("Exception",), False),  # "Error" (an ok: false without a type) resolves to nothing
])
def test_type_matches(kind: str, filters: tuple[str, ...], expected: bool) -> None:
    assert type_matches(kind, filters) is expected


def test_policy_retries() -> None:
    assert RetryPolicy().retries("Anything")
    assert not RetryPolicy(on_timeout=False).retries("TimeoutError")
    assert RetryPolicy(on_timeout=False).retries("ValueError")
    assert not RetryPolicy(on=("TimeoutError",), on_timeout=False).retries("TimeoutError")
    policy = RetryPolicy(on=("TimeoutError", "ConnectionError"))
    assert policy.retries("TimeoutError") and policy.retries("ConnectionResetError")
    assert not policy.retries("KeyError")
    assert policy.to_dict()["on"] == ["TimeoutError", "ConnectionError"]


def failing(retry: dict[str, Any]) -> WorkflowRecord:
    record = new_record({"steps": [{"id": "a", "fn": "f", "max_attempts": 3, "retry": retry}]})
    record, result = graph.advance(record, T0)
    assert isinstance(result, Dispatch)
    return record


def fail_with(record: WorkflowRecord, kind: str) -> tuple[WorkflowRecord, Any]:
    step = record.steps["a"]
    return graph.on_step_result(record, "a", {"ok": False, "error": f"{kind} happened",
                                              "error_type": kind}, step.run_id, T0)


def test_on_retries_only_the_listed_types_and_subclasses() -> None:
    record = failing({"on": ["TimeoutError", "ConnectionError"]})
    record, result = fail_with(record, "ConnectionResetError")
    assert isinstance(result, Pending) and record.steps["a"].status is StepStatus.RETRY
    record, _ = graph.advance(record, T0)
    record, result = fail_with(record, "ValueError")
    assert isinstance(result, Failed) and record.steps["a"].status is StepStatus.FAILED
    assert result.outcome["attempts"] == 2  # the budget (3) was not spent: the type ended it


def test_on_timeout_false_makes_a_timeout_terminal() -> None:
    record = failing({"on_timeout": False})
    record, result = fail_with(record, "TimeoutError")
    assert isinstance(result, Failed) and result.outcome["attempts"] == 1
    record = failing({"on_timeout": False})
    record, result = fail_with(record, "OSError")
    assert isinstance(result, Pending)  # anything else is still retried


def test_worker_lost_is_retried_whatever_on_says() -> None:
    record = failing({"on": ["ValueError"]})
    for _ in range(graph.WORKER_LOST_CAP - 1):
        record, result = fail_with(record, "WorkerLost")
        assert isinstance(result, Pending)
        record, _ = graph.advance(record, T0)
    record, result = fail_with(record, "WorkerLost")
    assert isinstance(result, Failed) and "lost its worker" in result.outcome["error"]["message"]


def test_the_yaml_key_on_is_read_as_text() -> None:
    spec = compile_spec(parse_yaml("""
steps:
  - id: a
    fn: f
    retry: {on: [TimeoutError, requests.exceptions.ConnectionError], on_timeout: false}
"""))
    assert spec.steps[0].retry.on == ("TimeoutError", "requests.exceptions.ConnectionError")
    assert spec.steps[0].retry.on_timeout is False
    defaults = compile_spec(parse_yaml("""
defaults: {retry: {on: [KeyError]}}
steps: [{id: a, fn: f}]
"""))
    assert defaults.steps[0].retry.on == ("KeyError",)


@pytest.mark.parametrize(("retry", "message"), [
    ({"on": "TimeoutError"}, "retry.on: must be a non-empty list of error type names"),
    ({"on": []}, "retry.on: must be a non-empty list of error type names"),
    ({"on": ["TimeoutError", 3]}, "retry.on[1]: must be an error type name"),
    ({"on": ["not a name"]}, "retry.on[0]: must be an error type name"),
    ({"on_timeout": "no"}, "retry.on_timeout: must be true or false"),
])
def test_bad_filters_name_the_field(retry: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compile_spec({"steps": [{"id": "a", "fn": "f", "retry": retry}]})
