"""Dependency-failure policies (``on_dependency_failure``) and ``max_parallel``.

The must-show spec: a failing step (``fetch``), a step that depends on it
(``transform``), an independent branch (``other``) and a join of both (``join``),
run under ``fail``, ``skip`` and ``run`` through a ``Worker`` on the memory
backend and on SQLite, with every step status and the outcome checked exactly.
The pure graph is tested on the finer rules, and a property test checks the
incremental bookkeeping against a full recompute with policies in play.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from contract import new_record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runfox as rfx
from runfox import graph
from runfox.backend.urls import backend_from_url
from runfox.errors import SpecError
from runfox.records import WorkflowRecord, _derive
from runfox.results import Complete, Dispatch, Failed, Pending
from runfox.spec import compile_spec
from runfox.status import StepStatus, WorkflowStatus
from runfox.worker import Worker

T0 = 1_000.0
S = StepStatus


def check_derived(record: WorkflowRecord) -> None:
    steps, ready, open_count, running = _derive(record.plan, record.steps)
    assert record.ready == ready
    assert record.open == open_count
    assert record.running == running
    assert [s.unmet for s in record.steps.values()] == [s.unmet for s in steps.values()]


def statuses(record: WorkflowRecord) -> dict[str, StepStatus]:
    return {sid: step.status for sid, step in record.steps.items()}


def policy_spec(policy: str, other_seconds: float = 0.6) -> dict[str, Any]:
    return {
        "defaults": {"on_dependency_failure": policy},
        "steps": [
            {"id": "fetch", "fn": "boom"},
            {"id": "transform", "fn": "echo", "depends_on": ["fetch"],
             "input": {"seen": {"var": "steps.fetch.output"}}},
            {"id": "other", "fn": "slow", "input": {"seconds": other_seconds}},
            {"id": "join", "fn": "echo", "depends_on": ["transform", "other"],
             "input": {"seen": {"var": "steps.transform.output.seen.error_type"}}},
        ],
        "outputs": {"joined": {"var": "steps.join.output"}},
    }


def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "boom":
        raise ValueError("fetch broke")
    if fn == "slow":
        time.sleep(inputs["seconds"])
        return {"other": 1}
    if fn == "echo":
        return {"seen": inputs["seen"]}
    raise ValueError(fn)


def without_tracebacks(error: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in error.items() if k != "traceback"}


FETCH_FAILURE = {"step": "fetch", "attempts": 1,
                 "error": {"type": "ValueError", "message": "fetch broke"}}


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> rfx.Backend:
    if request.param == "memory":
        return rfx.Backend()
    return backend_from_url(f"sqlite:///{tmp_path / 'policies.db'}")


def run_with_worker(backend: rfx.Backend, spec: dict[str, Any]) -> WorkflowRecord:
    wf_id = backend.create(spec)
    backend.apply_and_advance(wf_id)
    Worker(backend, executor, concurrency=3, poll_interval=0.02).run(idle_timeout=1.0)
    record = backend.load(wf_id)
    assert record.status.is_terminal, record.status
    return record


def test_policy_fail_ends_the_workflow_at_once(backend: rfx.Backend) -> None:
    record = run_with_worker(backend, policy_spec("fail"))
    assert statuses(record) == {"fetch": S.FAILED, "transform": S.SKIPPED,
                                "other": S.CANCELLED, "join": S.SKIPPED}
    assert record.status is WorkflowStatus.FAILED
    outcome = record.outcome
    assert set(outcome) == {"step", "error", "attempts"}  # today's shape, no "failed"
    assert {**outcome, "error": without_tracebacks(outcome["error"])} == FETCH_FAILURE


def test_policy_skip_lets_the_independent_branch_finish(backend: rfx.Backend) -> None:
    record = run_with_worker(backend, policy_spec("skip"))
    assert statuses(record) == {"fetch": S.FAILED, "transform": S.SKIPPED,
                                "other": S.COMPLETE, "join": S.SKIPPED}
    assert record.steps["other"].output == {"other": 1}
    assert record.status is WorkflowStatus.FAILED
    outcome = record.outcome
    assert {k: v for k, v in outcome.items() if k != "failed"} | {
        "error": without_tracebacks(outcome["error"])} == FETCH_FAILURE
    assert [{**f, "error": without_tracebacks(f["error"])} for f in outcome["failed"]] == [
        FETCH_FAILURE]
    assert record.steps["transform"].error == {
        "type": "DependencyFailed", "message": "dependency 'fetch' is failed"}
    assert record.steps["join"].error == {
        "type": "DependencyFailed", "message": "dependency 'transform' is skipped"}


def test_policy_run_runs_dependents_on_the_error_output(backend: rfx.Backend) -> None:
    record = run_with_worker(backend, policy_spec("run"))
    assert statuses(record) == {"fetch": S.FAILED, "transform": S.COMPLETE,
                                "other": S.COMPLETE, "join": S.COMPLETE}
    seen = record.steps["transform"].output["seen"]
    assert seen["ok"] is False and seen["error"] == "fetch broke"
    assert seen["error_type"] == "ValueError"
    assert record.steps["join"].output == {"seen": "ValueError"}
    assert record.status is WorkflowStatus.FAILED  # a step failed: outputs are not resolved
    outcome = record.outcome
    assert {k: v for k, v in outcome.items() if k != "failed"} | {
        "error": without_tracebacks(outcome["error"])} == FETCH_FAILURE
    assert [f["step"] for f in outcome["failed"]] == ["fetch"]


# ---------------------------------------------------------------------------
# The pure graph: the finer rules
# ---------------------------------------------------------------------------


def drive(record: WorkflowRecord, fails: set[str], now: float = T0
          ) -> tuple[WorkflowRecord, Any]:
    """Run to the end, one result per transition; steps in ``fails`` fail every attempt."""
    for _ in range(500):
        record, result = graph.advance(record, now)
        check_derived(record)
        if isinstance(result, Dispatch):
            for job in result.jobs:
                output = ({"ok": False, "error": f"{job.step_id} broke",
                           "error_type": "RuntimeError"} if job.step_id in fails
                          else {"v": job.step_id, "in": job.inputs})
                record, _ = graph.on_step_result(record, job.step_id, output, job.run_id, now)
                check_derived(record)
                now += 1
            continue
        if isinstance(result, Pending):
            raise AssertionError("pending with nothing in flight")
        return record, result
    raise AssertionError("did not finish")


def test_a_skipped_dependency_propagates_unless_the_dependent_says_run() -> None:
    spec = {"defaults": {"on_dependency_failure": "skip"}, "steps": [
        {"id": "a0", "fn": "f"},
        {"id": "a", "fn": "f", "depends_on": "a0"},
        {"id": "b", "fn": "f", "depends_on": "a"},
        {"id": "c", "fn": "f", "depends_on": "b", "on_dependency_failure": "fail"},
        {"id": "d", "fn": "f", "depends_on": "b", "on_dependency_failure": "run",
         "input": {"b": {"var": "steps.b.output"}}},
        {"id": "x", "fn": "f"},
    ]}
    record, result = drive(new_record(spec), fails={"a0"})
    assert statuses(record) == {"a0": S.FAILED, "a": S.SKIPPED, "b": S.SKIPPED,
                                "c": S.SKIPPED, "d": S.COMPLETE, "x": S.COMPLETE}
    assert record.steps["d"].output["in"] == {"b": None}  # a skipped step has no output
    assert isinstance(result, Failed) and result.outcome["step"] == "a0"


def test_a_leaf_failure_follows_the_defaults_policy() -> None:
    steps = [{"id": "leaf", "fn": "f"}, {"id": "x", "fn": "f"},
             {"id": "y", "fn": "f", "depends_on": "x", "on_dependency_failure": "skip"}]
    # defaults fail: a step with no dependents ends the workflow at once.
    record = new_record({"steps": steps})
    record, _ = graph.advance(record, T0)
    record, result = graph.on_step_result(record, "leaf", {"ok": False, "error": "no"}, 0, T0)
    assert isinstance(result, Failed) and statuses(record)["x"] is S.CANCELLED
    # defaults skip: it does not; the workflow ends failed when nothing more can run.
    record = new_record({"steps": steps, "defaults": {"on_dependency_failure": "skip"}})
    record, _ = graph.advance(record, T0)
    record, result = graph.on_step_result(record, "leaf", {"ok": False, "error": "no"}, 0, T0)
    assert result is None and record.status is WorkflowStatus.IN_PROGRESS
    assert record.steps["leaf"].output == {"ok": False, "error": "no"}
    record, result = graph.on_step_result(record, "x", {"v": 1}, 0, T0 + 1)
    record, result = graph.advance(record, T0 + 1)
    record, result = graph.on_step_result(record, "y", {"v": 2}, 0, T0 + 2)
    assert isinstance(result, Failed) and result.outcome["failed"] == [
        {"step": "leaf", "attempts": 1, "error": {"type": "Error", "message": "no"}}]
    assert statuses(record) == {"leaf": S.FAILED, "x": S.COMPLETE, "y": S.COMPLETE}


def test_one_fail_dependent_makes_the_failure_fatal() -> None:
    spec = {"steps": [{"id": "a", "fn": "f"},
                      {"id": "b", "fn": "f", "depends_on": "a", "on_dependency_failure": "run"},
                      {"id": "c", "fn": "f", "depends_on": "a"},
                      {"id": "x", "fn": "f"}],
            "defaults": {"on_dependency_failure": "skip"}}
    spec["steps"][2]["on_dependency_failure"] = "fail"
    plan = compile_spec(spec)
    assert plan.ends_on_failure("a") and not plan.ends_on_failure("x")
    record, result = drive(new_record(spec), fails={"a"})
    assert statuses(record) == {"a": S.FAILED, "b": S.SKIPPED, "c": S.SKIPPED,
                                "x": S.CANCELLED}
    assert isinstance(result, Failed)


def test_the_outcome_names_every_failure_first_one_first() -> None:
    spec = {"defaults": {"on_dependency_failure": "run"},
            "steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "f"},
                      {"id": "c", "fn": "f", "depends_on": ["a", "b"]}]}
    record = new_record(spec)
    record, _ = graph.advance(record, T0)
    record, _ = graph.on_step_result(record, "b", {"ok": False, "error": "b1"}, 0, T0)
    record, _ = graph.on_step_result(record, "a", {"ok": False, "error": "a1"}, 0, T0 + 1)
    record, result = graph.advance(record, T0 + 1)
    assert isinstance(result, Dispatch) and [j.step_id for j in result.jobs] == ["c"]
    assert result.jobs[0].inputs == {}
    record, result = graph.on_step_result(record, "c", {"ok": False, "error": "c1",
                                                        "error_type": "KeyError"}, 0, T0 + 2)
    assert isinstance(result, Failed)
    assert result.outcome == {
        "step": "b", "error": {"type": "Error", "message": "b1"}, "attempts": 1,
        "failed": [{"step": "b", "error": {"type": "Error", "message": "b1"}, "attempts": 1},
                   {"step": "a", "error": {"type": "Error", "message": "a1"}, "attempts": 1},
                   {"step": "c", "error": {"type": "KeyError", "message": "c1"},
                    "attempts": 1}]}


def test_a_tolerant_plan_without_failures_completes() -> None:
    # With no failure nothing is skipped: a tolerant plan completes with its outputs.
    spec = {"defaults": {"on_dependency_failure": "skip"},
            "steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "f", "depends_on": "a"}],
            "outputs": {"b": {"var": "steps.b.output.v"}}}
    _, result = drive(new_record(spec), fails=set())
    assert isinstance(result, Complete) and result.outcome == {"b": "b"}


def test_an_input_error_the_workflow_survives_lets_dependents_run_in_the_same_advance() -> None:
    spec = {"defaults": {"on_dependency_failure": "run"},
            "steps": [{"id": "a", "fn": "f", "input": {"x": {"/": [1, 0]}}},
                      {"id": "b", "fn": "f", "depends_on": "a",
                       "input": {"seen": {"var": "steps.a.output.error_type"}}}]}
    record, result = graph.advance(new_record(spec), T0)
    assert isinstance(result, Dispatch) and [j.step_id for j in result.jobs] == ["b"]
    assert result.jobs[0].inputs == {"seen": "InputError"}
    assert statuses(record) == {"a": S.FAILED, "b": S.IN_PROGRESS}
    check_derived(record)


def test_a_branch_error_the_workflow_survives() -> None:
    spec = {"defaults": {"on_dependency_failure": "skip"},
            "steps": [{"id": "a", "fn": "f", "branch": [
                {"condition": {"/": [1, 0]}, "action": "halt"}]},
                {"id": "b", "fn": "f"}]}
    record, _ = graph.advance(new_record(spec), T0)
    record, result = graph.on_step_result(record, "a", {"v": 1}, 0, T0)
    assert result is None and record.steps["a"].status is S.FAILED
    assert record.steps["a"].output["error_type"] == "BranchError"
    record, result = graph.on_step_result(record, "b", {"v": 2}, 0, T0)
    assert isinstance(result, Failed) and result.outcome["step"] == "a"


def test_a_loop_reset_reapplies_the_policy() -> None:
    """A reset step whose dependency stays failed is skipped again, not run."""
    spec = {"defaults": {"on_dependency_failure": "skip"},
            "steps": [{"id": "a", "fn": "f"},
                      {"id": "b", "fn": "f", "depends_on": "a"},
                      {"id": "c", "fn": "f", "branch": [
                          {"condition": {"==": [{"var": "n"}, 1]}, "action": {"set": "b"}},
                          {"condition": True, "action": "complete"}]}]}
    record, _ = graph.advance(new_record(spec), T0)
    record, _ = graph.on_step_result(record, "a", {"ok": False, "error": "x"}, 0, T0)
    assert record.steps["b"].status is S.SKIPPED
    record, _ = graph.on_step_result(record, "c", {"n": 1}, 0, T0)
    check_derived(record)
    assert record.steps["b"].status is S.SKIPPED and "b" not in record.ready


def test_bad_policy_values_name_the_field() -> None:
    bad = {"defaults": {"on_dependency_failure": "ignore"}, "max_parallel": 0,
           "steps": [{"id": "a", "fn": "f", "on_dependency_failure": "run-anyway"}]}
    with pytest.raises(SpecError) as caught:
        compile_spec(bad)
    text = str(caught.value)
    assert "defaults.on_dependency_failure: expected one of" in text
    assert "steps[0] 'a'.on_dependency_failure: expected one of" in text
    assert "max_parallel: must be >= 1, got 0" in text
    with pytest.raises(SpecError, match="max_parallel: expected integer"):
        compile_spec({"max_parallel": "2", "steps": [{"id": "a", "fn": "f"}]})


# ---------------------------------------------------------------------------
# max_parallel
# ---------------------------------------------------------------------------


def test_advance_claims_at_most_max_parallel_minus_running() -> None:
    spec = {"max_parallel": 2, "steps": [{"id": f"s{i}", "fn": "f"} for i in range(5)]}
    record, result = graph.advance(new_record(spec), T0)
    assert isinstance(result, Dispatch) and [j.step_id for j in result.jobs] == ["s0", "s1"]
    assert record.running == 2
    again, result = graph.advance(record, T0)
    assert again is record and result == Pending(None)
    record, _ = graph.on_step_result(record, "s1", {}, 0, T0)
    assert record.running == 1
    record, result = graph.advance(record, T0)
    assert isinstance(result, Dispatch) and [j.step_id for j in result.jobs] == ["s2"]
    check_derived(record)


def test_a_worker_never_runs_more_than_max_parallel(backend: rfx.Backend) -> None:
    spec = {"max_parallel": 2,
            "steps": [{"id": f"s{i}", "fn": "work"} for i in range(8)]}
    wf_id = backend.create(spec)
    lock = threading.Lock()
    seen: list[int] = []
    active = [0]
    peak = [0]

    def work(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        record = backend.load(wf_id)  # what the record says while this job runs
        seen.append(sum(s.status is S.IN_PROGRESS for s in record.steps.values()))
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return {}

    backend.apply_and_advance(wf_id)
    Worker(backend, work, concurrency=4, poll_interval=0.01).run(idle_timeout=0.5)
    record = backend.load(wf_id)
    assert record.status is WorkflowStatus.COMPLETE
    assert len(seen) == 8 and max(seen) <= 2 and peak[0] <= 2


# ---------------------------------------------------------------------------
# Properties: the bookkeeping matches a recompute; final statuses match a model
# ---------------------------------------------------------------------------

POLICIES = ("fail", "skip", "run")


@st.composite
def policy_dags(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    n = draw(st.integers(1, 12))
    steps = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=min(i, 3)))) if i else []
        step: dict[str, Any] = {"id": f"s{i}", "fn": "f", "depends_on": [f"s{d}" for d in deps]}
        policy = draw(st.sampled_from((None, *POLICIES)))
        if policy:
            step["on_dependency_failure"] = policy
        steps.append(step)
    spec: dict[str, Any] = {"steps": steps}
    default = draw(st.sampled_from((None, *POLICIES)))
    if default:
        spec["defaults"] = {"on_dependency_failure": default}
    if draw(st.booleans()):
        spec["max_parallel"] = draw(st.integers(1, 3))
    fails = {f"s{i}" for i in draw(st.sets(st.integers(0, n - 1), max_size=3))}
    return spec, fails


def model(spec: dict[str, Any], fails: set[str]) -> dict[str, StepStatus]:
    """Final statuses when no failure is fatal: policies applied in dependency order."""
    default = (spec.get("defaults") or {}).get("on_dependency_failure", "fail")
    final: dict[str, StepStatus] = {}
    for step in spec["steps"]:
        policy = step.get("on_dependency_failure", default)
        clean = all(final[d] is S.COMPLETE for d in step["depends_on"])
        if not clean and policy != "run":
            final[step["id"]] = S.SKIPPED
        else:
            final[step["id"]] = S.FAILED if step["id"] in fails else S.COMPLETE
    return final


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=policy_dags(), seed=st.integers(0, 2**32 - 1))
def test_random_dags_with_policies(case: tuple[dict[str, Any], set[str]], seed: int) -> None:
    spec, fails = case
    rng = random.Random(seed)
    record = new_record(spec)
    plan = record.plan
    in_flight: list[Any] = []
    now = T0
    limit = spec.get("max_parallel")
    fatal_failures = []
    for _ in range(500):
        before = record.to_dict()
        new, result = graph.advance(record, now)
        assert record.to_dict() == before  # purity
        record = new
        check_derived(record)
        if limit is not None:
            assert record.running <= limit
        if isinstance(result, Complete | Failed):
            break
        if isinstance(result, Dispatch):
            in_flight.extend(result.jobs)
        assert in_flight, "nothing in flight and not finished"
        rng.shuffle(in_flight)
        k = rng.randint(1, len(in_flight))
        batch, in_flight = in_flight[:k], in_flight[k:]
        for job in batch:
            output = ({"ok": False, "error": "no", "error_type": "RuntimeError"}
                      if job.step_id in fails else {"v": 1})
            record, applied = graph.on_step_result(record, job.step_id, output, job.run_id, now)
            check_derived(record)
            if job.step_id in fails and isinstance(applied, Failed) and \
                    plan.ends_on_failure(job.step_id):
                fatal_failures.append(job.step_id)
        now += 1
    else:
        raise AssertionError("did not finish")
    assert record.status.is_terminal
    final = statuses(record)
    if fatal_failures:
        assert record.status is WorkflowStatus.FAILED
        assert not any(s in (S.READY, S.RETRY, S.IN_PROGRESS) for s in final.values())
        return
    assert final == model(spec, fails)
    failed = [sid for sid, status in final.items() if status is S.FAILED]
    if failed:
        assert isinstance(result, Failed)
        assert {f["step"] for f in result.outcome.get("failed", [result.outcome])} == set(failed)
    else:
        assert isinstance(result, Complete)
