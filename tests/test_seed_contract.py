"""The seed's contract, sentence by sentence, where runfox once departed from it.

Each test is named after the sentence of the seed README (``003_*``) it enforces.
The AWS sentences (``SQSRunner(queue_url=...)``) are in
``aws_tests/test_aws_seed_contract.py``; the isolation of every store is also in
the shared ``StoreContract`` (``runfox.testing``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from contract import new_record

import runfox as rfx
from runfox import Complete, Dispatch, Halt, Pending, StateChangeEvent
from runfox.backend import Backend, InMemoryStore, InProcessRunner, InProcessWorker, Store
from runfox.backend.sql import SqliteStore
from runfox.status import StepStatus, WorkflowStatus

CHAIN = {"name": "chain", "steps": [
    {"id": "greet", "fn": "make_greeting", "input": {"name": {"var": "input.name"}}},
    {"id": "shout", "fn": "upper", "depends_on": ["greet"],
     "input": {"text": {"var": "steps.greet.output.text"}}}],
    "outputs": {"message": {"var": "steps.shout.output.text"}}}


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "make_greeting":
        return {"text": f"hello, {inputs['name']}", "meta": {"tags": ["greeting"]}}
    if fn == "upper":
        return {"text": inputs["text"].upper()}
    raise ValueError(f"unknown fn {fn!r}")


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = InMemoryStore() if request.param == "memory" else SqliteStore(
        str(tmp_path / "workflow.db"))
    yield made
    made.close()


# -- Store: "load ... returns a copy isolated from the backing store" -----------------


def test_load_returns_a_copy_isolated_from_the_backing_store(store: Store) -> None:
    backend = Backend(store=store, runner=InProcessRunner())
    wf = rfx.Workflow.from_dict(CHAIN, backend, inputs={"name": "world", "opts": {"a": [1]}})
    wf.advance()
    wf.on_step_result("greet", execute("make_greeting", {"name": "world"}))
    for record in (store.load(wf.id), backend.load(wf.id), wf.record):
        record.state["x"] = 1
        record.state["meta"]["tags"].append("mine")
        record.inputs["opts"]["a"].append(2)
        output = record.steps["greet"].output
        assert output is not None
        output["text"] = "changed"
    wf.state["meta"]["tags"].append("theirs")
    assert isinstance(wf.advance(), Dispatch)  # the next transition writes the record
    for record in (store.load(wf.id), wf.record):
        assert record.state == {"text": "hello, world", "meta": {"tags": ["greeting"]}}
        assert record.inputs == {"name": "world", "opts": {"a": [1]}}
        assert record.steps["greet"].output == {"text": "hello, world",
                                                "meta": {"tags": ["greeting"]}}
        assert record.steps["shout"].status is StepStatus.IN_PROGRESS


def test_load_returns_a_new_copy_each_time(store: Store) -> None:
    record = new_record(CHAIN, {"name": "world"})
    store.write(record)
    first, second = store.load(record.id), store.load(record.id)
    assert first == second
    assert first.inputs is not second.inputs and first.state is not second.state


def test_write_persists_a_copy_isolated_from_the_caller(store: Store) -> None:
    record = new_record(CHAIN, {"name": "world", "opts": {"a": [1]}})
    store.write(record)
    record.inputs["opts"]["a"].append(2)
    record.state["x"] = 1
    loaded = store.load(record.id)
    assert loaded.inputs == {"name": "world", "opts": {"a": [1]}}
    assert loaded.state == {}


def test_outcome_and_results_are_copies(store: Store) -> None:
    backend = Backend(executor=execute, store=store)
    wf = rfx.Workflow.from_dict(CHAIN, backend, inputs={"name": "world"})
    result = wf.run()
    assert isinstance(result, Complete)
    result.outcome["message"] = "changed"
    wf.outcome["message"] = "changed too"
    assert wf.outcome == {"message": "HELLO, WORLD"}
    assert store.load(wf.id).outcome == {"message": "HELLO, WORLD"}


# -- "on_step_result() returns Halt ..., Pending ..., or None on normal completion" ---


def _claimed(spec: dict[str, Any], inputs: dict[str, Any] | None = None
             ) -> tuple[rfx.Workflow, Dispatch]:
    wf = rfx.Workflow.from_dict(spec, Backend(), inputs=inputs)
    dispatch = wf.advance()
    assert isinstance(dispatch, Dispatch)
    return wf, dispatch


def test_on_step_result_returns_none_on_normal_completion() -> None:
    wf, dispatch = _claimed(CHAIN, {"name": "world"})
    (job,) = dispatch.jobs
    assert wf.on_step_result(job.step_id, execute(job.fn, job.inputs)) is None
    (job,) = wf.advance().jobs  # type: ignore[union-attr]
    # The last step too: None, and Complete comes from the next advance.
    assert wf.on_step_result(job.step_id, execute(job.fn, job.inputs)) is None
    assert wf.status is WorkflowStatus.COMPLETE
    assert wf.advance() == Complete({"message": "HELLO, WORLD"})


def test_the_seeds_event_driven_loop_reaches_complete() -> None:
    """``handle_result``: ``on_step_result``, then ``advance``, until the end."""
    wf, dispatch = _claimed(CHAIN, {"name": "world"})
    queue = list(dispatch.jobs)
    result: Any = dispatch
    while queue:
        job = queue.pop(0)
        step_result = wf.on_step_result(job.step_id, execute(job.fn, job.inputs))
        assert step_result is None
        result = wf.advance()
        if isinstance(result, Dispatch):
            queue.extend(result.jobs)
    assert result == Complete({"message": "HELLO, WORLD"})


def test_on_step_result_returns_halt_if_a_branch_fires() -> None:
    spec = {"steps": [{"id": "a", "fn": "f", "branch": [
        {"condition": {">=": [{"var": "score"}, 0.7]}, "action": "halt",
         "result": {"status": "rejected"}}]}]}
    wf, _ = _claimed(spec)
    assert wf.on_step_result("a", {"score": 0.9}) == Halt({"status": "rejected"})


def test_on_step_result_returns_pending_if_the_step_has_remaining_retry_attempts() -> None:
    spec = {"steps": [{"id": "a", "fn": "f", "max_attempts": 2}]}
    wf, _ = _claimed(spec)
    assert isinstance(wf.on_step_result("a", {"ok": False, "error": "flaky"}), Pending)


# -- "The recommended pattern ... returns {"error": str(e), "ok": False}" -------------


def test_an_executor_exception_gives_the_recommended_error_output() -> None:
    def failing(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no such image")

    runner = InProcessRunner()
    worker = InProcessWorker(runner, failing)
    backend = Backend(store=InMemoryStore(), runner=runner)
    wf = rfx.Workflow.from_dict({"steps": [{"id": "a", "fn": "load"}]}, backend)
    backend.dispatch(wf.id, wf.advance().jobs)  # type: ignore[union-attr]
    worker.run(wf.id)
    outputs = [r.output for r in backend.gather(wf.id)]
    (output,) = outputs
    assert output["ok"] is False
    assert output["error"] == "no such image"  # the message, as a string
    assert output["error_type"] == "ValueError"
    assert "ValueError: no such image" in output["traceback"]


def test_branch_conditions_read_error_as_the_message_string() -> None:
    def failing(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("quota exceeded")

    spec = {"steps": [{"id": "a", "fn": "call", "branch": [
        {"condition": {"==": [{"var": "ok"}, False]}, "action": "halt",
         "result": {"status": "error", "reason": {"var": "error"},
                    "kind": {"var": "error_type"}}}]}]}
    result = rfx.Workflow.from_dict(spec, Backend(executor=failing)).run()
    assert result == Halt({"status": "error", "reason": "quota exceeded",
                           "kind": "RuntimeError"})


def test_the_step_record_keeps_the_error_as_type_and_message() -> None:
    wf, _ = _claimed({"steps": [{"id": "a", "fn": "f"}]})
    wf.on_step_result("a", {"ok": False, "error": "bad input", "error_type": "ValueError"})
    assert wf.record.steps["a"].error == {"type": "ValueError", "message": "bad input"}
    assert wf.outcome == {"step": "a", "attempts": 1,
                          "error": {"type": "ValueError", "message": "bad input"}}


def test_the_older_error_dict_is_still_accepted() -> None:
    wf, _ = _claimed({"steps": [{"id": "a", "fn": "f"}]})
    wf.on_step_result("a", {"ok": False, "error": {"type": "KeyError", "message": "'x'",
                                                   "traceback": "tb"}})
    assert wf.record.steps["a"].error == {"type": "KeyError", "message": "'x'",
                                          "traceback": "tb"}


def test_the_seeds_plain_error_output_is_a_failed_attempt() -> None:
    wf, _ = _claimed({"steps": [{"id": "a", "fn": "f"}]})
    wf.on_step_result("a", {"error": "boom", "ok": False})
    assert wf.record.steps["a"].error == {"type": "Error", "message": "boom"}
    assert wf.status is WorkflowStatus.FAILED


# -- "on_state_change callback fired after every merge_workflow_state call" ------------


def test_on_state_change_events_name_the_step_its_run_and_its_fn() -> None:
    events: list[StateChangeEvent | None] = []
    backend = Backend(executor=execute, on_state_change=lambda _w, _p, _n, e: events.append(e))
    rfx.Workflow.from_dict(CHAIN, backend, inputs={"name": "world"}).run()
    assert [(e.step_id, e.run_id, e.fn) for e in events if e is not None] == [
        ("greet", 0, "make_greeting"), ("shout", 0, "upper")]
    assert None not in events


def test_a_direct_merge_workflow_state_passes_none_as_the_event() -> None:
    calls: list[tuple[Any, ...]] = []
    backend = Backend(on_state_change=lambda *args: calls.append(args))
    wf_id = backend.create(CHAIN, {"name": "world"})
    backend.merge_workflow_state(wf_id, {"x": {"y": 1}})
    ((key, previous, new, event),) = calls
    assert (key, previous, new, event) == (wf_id, {}, {"x": {"y": 1}}, None)
    new["x"]["y"] = 2  # the callback's arguments are copies
    assert backend.load(wf_id).state == {"x": {"y": 1}}


def test_on_state_change_with_three_parameters_gets_the_states() -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def observe(_: str, previous: dict[str, Any], new: dict[str, Any]) -> None:
        seen.append((previous, new))

    backend = Backend(on_state_change=observe)
    wf_id = backend.create(CHAIN, {"name": "world"})
    backend.merge_workflow_state(wf_id, {"x": 1})
    assert seen == [({}, {"x": 1})]
