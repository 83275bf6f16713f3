"""The pure graph functions: semantics, failure model and properties on random DAGs."""

from __future__ import annotations

import random
from typing import Any

import pytest
from contract import new_record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runfox import graph
from runfox.errors import UnknownStepError
from runfox.records import WorkflowRecord, _derive
from runfox.results import (
    Cancelled,
    Complete,
    Dispatch,
    DispatchJob,
    Failed,
    Halt,
    Ignored,
    Pending,
)
from runfox.retry import RetryPolicy
from runfox.status import StepStatus, WorkflowStatus

T0 = 1_000.0


def claim(record: WorkflowRecord, now: float = T0) -> tuple[WorkflowRecord, list[DispatchJob]]:
    record, result = graph.advance(record, now)
    assert isinstance(result, Dispatch), result
    return record, result.jobs


def finish(record: WorkflowRecord, executor: Any, now: float = T0,
           limit: int = 1000) -> tuple[WorkflowRecord, Any]:
    """Drive a record to its end with ``executor``, one result per transition."""
    for _ in range(limit):
        record, result = graph.advance(record, now)
        if isinstance(result, Dispatch):
            for job in result.jobs:
                output = executor(job.fn, job.inputs)
                record, _ = graph.on_step_result(record, job.step_id, output, job.run_id, now)
            continue
        if isinstance(result, Pending):
            assert result.retry_at is not None, "stuck with nothing to wait for"
            now = result.retry_at
            continue
        return record, result
    raise AssertionError("did not finish")


def check_derived(record: WorkflowRecord) -> None:
    steps, ready, open_count, running = _derive(record.plan, record.steps)
    assert record.ready == ready
    assert record.open == open_count
    assert record.running == running
    assert [s.unmet for s in record.steps.values()] == [s.unmet for s in steps.values()]


CHAIN = {
    "steps": [
        {"id": "a", "fn": "seed", "input": {"v": {"var": "input.v"}}},
        {"id": "b", "fn": "double", "depends_on": ["a"],
         "input": {"v": {"var": "steps.a.output.v"}}},
        {"id": "c", "fn": "double", "depends_on": ["b"],
         "input": {"v": {"var": "steps.b.output.v"}}},
    ],
    "outputs": {"v": {"var": "steps.c.output.v"}, "const": "x", "state": {"var": "state.v"}},
}


def arith(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"v": inputs["v"] * (2 if fn == "double" else 1)}


def test_advance_claims_every_ready_step_in_one_transition() -> None:
    record = new_record({"steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "g"},
                                   {"id": "c", "fn": "h", "depends_on": ["a", "b"]}]})
    before = record.to_dict()
    new, jobs = claim(record)
    assert record.to_dict() == before  # the argument is untouched
    assert [(j.step_id, j.fn, j.run_id, j.attempt) for j in jobs] == [("a", "f", 0, 1),
                                                                     ("b", "g", 0, 1)]
    assert jobs[0].workflow_execution_id == record.workflow_execution_id
    assert new.status is WorkflowStatus.IN_PROGRESS
    assert new.steps["a"].status is StepStatus.IN_PROGRESS and new.steps["a"].started_at == T0
    assert new.steps["c"].status is StepStatus.READY
    again, result = graph.advance(new, T0)
    assert again is new and result == Pending(None)


def test_a_chain_runs_in_order_and_resolves_outputs() -> None:
    record = new_record(CHAIN, {"v": 3})
    record, result = finish(record, arith)
    assert result == Complete({"v": 12, "const": "x", "state": 12})
    assert record.status is WorkflowStatus.COMPLETE and record.outcome == result.outcome
    assert record.state == {"v": 12}  # latest wins


def test_stale_and_duplicate_results_change_nothing() -> None:
    record, _ = claim(new_record(CHAIN, {"v": 1}))
    done, applied = graph.on_step_result(record, "a", {"v": 1}, 0, T0)
    assert applied is None
    again, result = graph.on_step_result(done, "a", {"v": 99}, 0, T0)
    assert again is done and isinstance(result, Ignored) and "not in progress" in result.reason
    not_yet, result = graph.on_step_result(done, "c", {"v": 1}, 0, T0)
    assert not_yet is done and isinstance(result, Ignored)
    b_claimed, _ = claim(done)
    wrong_run, result = graph.on_step_result(b_claimed, "b", {"v": 5}, 7, T0)
    assert wrong_run is b_claimed and "run 7" in result.reason
    with pytest.raises(UnknownStepError):
        graph.on_step_result(b_claimed, "zzz", {}, 0, T0)


def test_halt_ends_the_workflow_with_the_resolved_payload() -> None:
    spec = {"steps": [
        {"id": "score", "fn": "score", "branch": [
            {"condition": {">=": [{"var": "scores.unsafe"}, 0.7]}, "action": "halt",
             "result": {"status": "rejected", "why": {"var": "scores.unsafe"}}}]},
        {"id": "side", "fn": "slow"},
        {"id": "after", "fn": "never", "depends_on": ["score"]},
    ]}
    record, _ = claim(new_record(spec))
    record, result = graph.on_step_result(record, "score", {"scores": {"unsafe": 0.9}}, 0, T0 + 1)
    assert result == Halt({"status": "rejected", "why": 0.9})
    assert result.outcome == result.result
    assert record.status is WorkflowStatus.HALTED
    assert record.steps["score"].status is StepStatus.HALTED
    assert record.steps["side"].status is StepStatus.CANCELLED
    assert record.steps["after"].status is StepStatus.SKIPPED
    late, ignored = graph.on_step_result(record, "side", {"x": 1}, 0, T0 + 2)
    assert late is record and isinstance(ignored, Ignored)
    assert graph.advance(record, T0 + 3) == (record, Halt({"status": "rejected", "why": 0.9}))


def test_branch_sees_output_and_merged_state() -> None:
    spec = {"steps": [{"id": "a", "fn": "f", "input": {}, "branch": [
        {"condition": {"and": [{"==": [{"var": "n"}, 2]}, {"==": [{"var": "state.n"}, 2]},
                               {"==": [{"var": "steps.a.output.n"}, 2]}]},
         "action": "halt", "result": {"seen": True}}]}]}
    record, _ = claim(new_record(spec))
    _, result = graph.on_step_result(record, "a", {"n": 2}, 0, T0)
    assert result == Halt({"seen": True})


def test_a_loop_resets_the_target_and_its_dependents() -> None:
    spec = {"steps": [
        {"id": "seed", "fn": "seed"},
        {"id": "iterate", "fn": "fib", "depends_on": ["seed"],
         "input": {"a": {"var": "state.a"}, "b": {"var": "state.b"}},
         "branch": [
             {"condition": {"<": [{"var": "state.b"}, 100]},
              "action": {"set": "steps.iterate.status", "value": "ready"}},
             {"condition": True, "action": "complete"}]},
        {"id": "report", "fn": "report", "depends_on": ["iterate"],
         "input": {"b": {"var": "state.b"}}},
    ], "outputs": {"fib": {"var": "steps.report.output.b"}}}

    def fib(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "seed":
            return {"a": 0, "b": 1}
        if fn == "fib":
            return {"a": inputs["b"], "b": inputs["a"] + inputs["b"]}
        return {"b": inputs["b"]}

    record, result = finish(new_record(spec), fib)
    assert result == Complete({"fib": 144})
    iterate = record.steps["iterate"]
    assert iterate.run_id == 10 and iterate.status is StepStatus.COMPLETE
    assert record.steps["report"].run_id == 0


def test_set_resets_completed_dependents_with_new_run_ids() -> None:
    spec = {"steps": [
        {"id": "a", "fn": "f"},
        {"id": "b", "fn": "f", "depends_on": ["a"]},
        {"id": "c", "fn": "check", "depends_on": ["b"], "branch": [
            {"condition": {"==": [{"var": "again"}, True]},
             "action": {"set": ["steps.a.status"], "value": "ready"}},
            {"condition": True, "action": "complete"}]},
    ]}
    record = new_record(spec)
    for step in ("a", "b"):
        record, _ = claim(record)
        record, _ = graph.on_step_result(record, step, {"x": 1}, 0, T0)
    record, _ = claim(record)
    record, result = graph.on_step_result(record, "c", {"again": True}, 0, T0)
    assert result is None
    assert {s.id: (s.status, s.run_id) for s in record.steps.values()} == {
        "a": (StepStatus.READY, 1), "b": (StepStatus.READY, 1), "c": (StepStatus.READY, 1)}
    assert record.ready == frozenset({"a"})
    check_derived(record)
    record, jobs = claim(record)
    assert [(j.step_id, j.run_id) for j in jobs] == [("a", 1)]


def test_a_failed_attempt_is_retried_after_backoff() -> None:
    spec = {"steps": [{"id": "a", "fn": "f", "max_attempts": 3,
                       "retry": {"backoff": "exponential", "delay": 10, "max_delay": 15}}]}
    record, _ = claim(new_record(spec))
    record, result = graph.on_step_result(record, "a", {"ok": False, "error": "boom"}, 0, T0)
    assert result == Pending(T0 + 10)
    step = record.steps["a"]
    assert (step.status, step.run_id, step.attempts) == (StepStatus.RETRY, 1, 1)
    assert step.error == {"type": "Error", "message": "boom"}
    assert graph.advance(record, T0 + 5) == (record, Pending(T0 + 10))
    record, jobs = claim(record, T0 + 10)
    assert [(j.run_id, j.attempt) for j in jobs] == [(1, 2)]
    record, result = graph.on_step_result(record, "a", {"ok": False}, 1, T0 + 11)
    assert result == Pending(T0 + 11 + 15)  # 20 capped at 15
    record, _ = claim(record, T0 + 26)
    record, result = graph.on_step_result(
        record, "a", {"ok": False, "error": {"type": "ValueError", "message": "bad"}}, 2, T0 + 27)
    assert isinstance(result, Failed)
    assert result.outcome == {"step": "a", "attempts": 3,
                              "error": {"type": "ValueError", "message": "bad"}}
    assert result.step_id == "a" and result.error["type"] == "ValueError"
    assert record.status is WorkflowStatus.FAILED and record.steps["a"].status is StepStatus.FAILED


def test_a_branch_can_act_on_an_error_before_retry() -> None:
    spec = {"steps": [{"id": "a", "fn": "f", "max_attempts": 5, "branch": [
        {"condition": {"==": [{"var": "ok"}, False]}, "action": "halt",
         "result": {"status": "error", "message": {"var": "error.message"}}}]}]}
    record, _ = claim(new_record(spec))
    _, result = graph.on_step_result(record, "a", {"ok": False, "error": {"type": "E",
                                                                           "message": "m"}}, 0, T0)
    assert result == Halt({"status": "error", "message": "m"})


def test_complete_branch_accepts_an_error_output() -> None:
    spec = {"steps": [{"id": "a", "fn": "f", "branch": [
        {"condition": {"==": [{"var": "ok"}, False]}, "action": "complete"}]}]}
    record, _ = claim(new_record(spec))
    record, result = graph.on_step_result(record, "a", {"ok": False}, 0, T0)
    assert result is None  # the seed: Complete comes from the next advance
    assert record.steps["a"].status is StepStatus.COMPLETE
    assert graph.advance(record, T0)[1] == Complete({})


@pytest.mark.parametrize(("output", "message"), [
    (None, "returned NoneType, expected a dict"),
    (["x"], "returned list, expected a dict"),
    ({"x": object()}, "the output is not JSON"),
    ({"x": float("inf")}, "is not a finite number"),
])
def test_an_output_that_is_not_a_json_object_is_a_failed_attempt(output: Any, message: str
                                                                 ) -> None:
    record, _ = claim(new_record({"steps": [{"id": "a", "fn": "f"}]}))
    record, result = graph.on_step_result(record, "a", output, 0, T0)
    assert isinstance(result, Failed)
    assert result.error["type"] == "InvalidOutput" and message in result.error["message"]
    assert record.to_dict()  # the stored record is still JSON


def test_input_and_branch_evaluation_errors_fail_the_workflow() -> None:
    bad_input = new_record({"steps": [{"id": "a", "fn": "f", "input": {"x": {"/": [1, 0]}}}]})
    record, result = graph.advance(bad_input, T0)
    assert isinstance(result, Failed) and result.error["type"] == "InputError"
    assert "step 'a' input" in result.error["message"]
    bad_branch = new_record({"steps": [{"id": "a", "fn": "f", "branch": [
        {"condition": {"%": [1, 0]}, "action": "halt"}]}]})
    record, _ = claim(bad_branch)
    record, result = graph.on_step_result(record, "a", {}, 0, T0)
    assert isinstance(result, Failed) and result.error["type"] == "BranchError"


def test_output_resolution_error_fails_the_workflow() -> None:
    record, _ = claim(new_record({"steps": [{"id": "a", "fn": "f"}],
                                  "outputs": {"x": {"/": [{"var": "steps.a.output.n"}, 0]}}}))
    record, result = graph.on_step_result(record, "a", {"n": 1}, 0, T0)
    assert isinstance(result, Failed) and result.outcome["error"]["type"] == "OutputError"
    assert record.status is WorkflowStatus.FAILED


def test_cancel_stops_everything_and_ignores_late_results() -> None:
    record, _ = claim(new_record(CHAIN, {"v": 1}))
    record, result = graph.cancel(record, T0, "operator said so")
    assert result == Cancelled({"cancelled": True, "reason": "operator said so"})
    assert record.steps["a"].status is StepStatus.CANCELLED
    assert record.steps["b"].status is StepStatus.SKIPPED
    assert graph.on_step_result(record, "a", {"v": 1}, 0, T0)[0] is record
    assert graph.advance(record, T0)[1] == result
    assert graph.cancel(record, T0)[0] is record


def test_claim_timeouts_finds_old_claims_only() -> None:
    record, _ = claim(new_record({"steps": [{"id": "a", "fn": "f", "input": {"k": 1}}]}), T0)
    assert graph.claim_timeouts(record, T0 + 5, older_than=10) == []
    (job,) = graph.claim_timeouts(record, T0 + 11, older_than=10)
    assert (job.step_id, job.run_id, job.inputs) == ("a", 0, {"k": 1})


def test_seed_operations_are_pure_and_keep_derived_fields() -> None:
    record = new_record(CHAIN)
    step_by_step = graph.mark_in_progress(record, "a", T0)
    step_by_step = graph.write_step_output(step_by_step, "a", {"v": 2})
    step_by_step = graph.merge_workflow_state(step_by_step, {"v": 2})
    step_by_step = graph.mark_complete(step_by_step, "a", T0 + 1)
    assert step_by_step.ready == frozenset({"b"})
    check_derived(step_by_step)
    retried = graph.reset_for_retry(step_by_step, "a", not_before=T0 + 9)
    assert retried.steps["a"].status is StepStatus.RETRY and retried.steps["a"].run_id == 1
    check_derived(retried)
    reset = graph.reset_step(step_by_step, "a")
    assert reset.steps["a"].output is None and reset.steps["a"].run_id == 1
    halted = graph.mark_halted(step_by_step, "b", T0)
    assert halted.status is WorkflowStatus.HALTED
    assert graph.write_workflow_outcome(halted, {"o": 1}).status is WorkflowStatus.HALTED
    assert graph.write_workflow_outcome(step_by_step, {}).status is WorkflowStatus.COMPLETE
    assert record.to_dict() == new_record(CHAIN).to_dict() | {
        "execution_id": record.execution_id}


@pytest.mark.parametrize(("policy", "delays"), [
    (RetryPolicy("none"), [0, 0, 0]),
    (RetryPolicy("fixed", 2), [2, 2, 2]),
    (RetryPolicy("linear", 2), [2, 4, 6]),
    (RetryPolicy("exponential", 2, max_delay=5), [2, 4, 5]),
])
def test_backoff_policies(policy: RetryPolicy, delays: list[float]) -> None:
    assert [policy.delay_for(n) for n in (1, 2, 3)] == delays


def test_jitter_is_bounded_and_deterministic() -> None:
    policy = RetryPolicy("fixed", 10, jitter=0.5)
    delays = [policy.delay_for(1, f"seed{i}") for i in range(200)]
    assert all(5 <= d <= 10 for d in delays) and len(set(delays)) > 100
    assert policy.delay_for(1, "same") == policy.delay_for(1, "same")


# ---------------------------------------------------------------------------
# Properties on random DAGs
# ---------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 14))
    steps = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=min(i, 4)))) if i else []
        steps.append({"id": f"s{i}", "fn": "add", "depends_on": [f"s{d}" for d in deps],
                      "input": {"base": i, "from": [{"var": f"steps.s{d}.output.v"}
                                                    for d in deps]}})
    return {"steps": steps, "outputs": {f"s{i}": {"var": f"steps.s{i}.output.v"}
                                        for i in range(n)}}


def add(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"v": inputs["base"] + sum(inputs["from"]), f"k{inputs['base']}": True}


def expected_values(spec: dict[str, Any]) -> dict[str, int]:
    values: dict[str, int] = {}
    for i, step in enumerate(spec["steps"]):
        values[step["id"]] = i + sum(values[d] for d in step["depends_on"])
    return values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=dags(), seed=st.integers(0, 2**32 - 1))
def test_random_dags_run_each_step_once_in_dependency_order(spec: dict[str, Any], seed: int
                                                            ) -> None:
    rng = random.Random(seed)
    record = new_record(spec)
    deps = {s["id"]: s["depends_on"] for s in spec["steps"]}
    dispatched: list[str] = []
    in_flight: list[DispatchJob] = []
    now = T0
    for _ in range(500):
        before = record.to_dict()
        new, result = graph.advance(record, now)
        assert record.to_dict() == before  # purity
        record = new
        check_derived(record)
        if isinstance(result, Complete):
            break
        if isinstance(result, Dispatch):
            for job in result.jobs:
                assert all(record.steps[d].status is StepStatus.COMPLETE for d in deps[job.step_id])
                dispatched.append(job.step_id)
            in_flight.extend(result.jobs)
        assert in_flight, "nothing in flight and not complete"
        rng.shuffle(in_flight)
        k = rng.randint(1, len(in_flight))
        batch, in_flight = in_flight[:k], in_flight[k:]
        for job in batch:
            output = add(job.fn, job.inputs)
            before = record.to_dict()
            new, applied = graph.on_step_result(record, job.step_id, output, job.run_id, now)
            assert record.to_dict() == before
            assert not isinstance(applied, Ignored)
            again, ignored = graph.on_step_result(new, job.step_id, output, job.run_id, now)
            assert again is new and isinstance(ignored, Ignored | Complete)
            record = new
            check_derived(record)
        now += 1
    else:
        raise AssertionError("did not finish")
    assert sorted(dispatched) == sorted(deps)  # every step exactly once
    assert result.outcome == expected_values(spec)
    assert all(record.state[f"k{i}"] for i in range(len(deps)))


@settings(max_examples=60, deadline=None)
@given(spec=dags(), seed=st.integers(0, 2**32 - 1))
def test_applying_any_result_twice_changes_nothing(spec: dict[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    record = new_record(spec)
    history: list[tuple[str, dict[str, Any], int]] = []
    while True:
        record, result = graph.advance(record, T0)
        if isinstance(result, Complete):
            break
        assert isinstance(result, Dispatch)
        for job in result.jobs:
            output = add(job.fn, job.inputs)
            history.append((job.step_id, output, job.run_id))
            record, _ = graph.on_step_result(record, job.step_id, output, job.run_id, T0)
            replay = rng.choice(history)
            again, ignored = graph.on_step_result(record, *replay, T0)
            assert again is record and isinstance(ignored, Ignored)
    final = record
    for step_id, output, run_id in history:
        assert graph.on_step_result(final, step_id, output, run_id, T0)[0] is final
