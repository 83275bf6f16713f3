"""A transition that cannot complete ends somewhere visible (issue 7, scope 1).

Each test is named after what an operator saw: an input that overflows, a
record whose ``state`` became ``5``, a ``MemoryError`` while resolving inputs, a
bug in a pure transition. In every case the execution must end (failed, with
the error and its place) instead of staying ``in_progress`` while workers log
the same error, or run the same executor, on every sweep.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqldb import scratch_database

import runfox as rfx
from runfox import graph
from runfox.backend import InProcessRunner
from runfox.backend.sql import parts_from_url
from runfox.cli import main
from runfox.errors import NotJSONError, UnknownStepError
from runfox.results import Failed
from runfox.status import StepStatus, WorkflowStatus
from runfox.worker import Worker

CLI_EXECUTOR = "cli_executor:execute"

#: ``big`` multiplies past the largest float: the result is inf, which JSON cannot hold.
OVERFLOW = {
    "name": "overflow",
    "steps": [{"id": "a", "fn": "echo", "input": {"x": 1}},
              {"id": "big", "fn": "echo", "depends_on": ["a"],
               "input": {"ok": 1, "total": {"*": [1e308, 10]}}}],
}


class Calls:
    """An executor that echoes its inputs and counts its calls per step."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}

    def __call__(self, fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls[fn] = self.calls.get(fn, 0) + 1
        return {f"out_{fn}": inputs.get("x", 0)}


def assert_overflow_failed(record: rfx.WorkflowRecord) -> None:
    assert record.status is WorkflowStatus.FAILED
    assert record.steps["a"].status is StepStatus.COMPLETE
    big = record.steps["big"]
    assert big.status is StepStatus.FAILED and big.attempts == 0  # never dispatched
    outcome = record.outcome
    assert outcome["step"] == "big"
    error = outcome["error"]
    assert error["type"] == "InputError" and error["step"] == "big"
    assert error["field"] == "total"
    assert "'big'" in error["message"] and "'total'" in error["message"]
    assert "not a finite number" in error["message"]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'faults.db'}"


def sql_backend(url: str) -> rfx.Backend:
    store, runner = parts_from_url(url)
    return rfx.Backend(store=store, runner=runner)


def close(backend: rfx.Backend) -> None:
    backend.runner.close()
    backend.store.close()


# -- an input that overflows -------------------------------------------------------------


def test_an_overflowing_input_fails_the_step_on_the_memory_backend() -> None:
    calls = Calls()
    backend = rfx.Backend(executor=calls)
    wf = rfx.Workflow.from_dict(OVERFLOW, backend)
    result = wf.run(timeout=10)
    assert isinstance(result, Failed)
    assert_overflow_failed(wf.record)
    assert calls.calls == {"echo": 1}  # a ran; big never did
    assert backend.list_pending_jobs() == []


def test_an_overflowing_input_fails_the_step_on_sqlite_driven_by_a_worker(
        sqlite_url: str) -> None:
    backend = sql_backend(sqlite_url)
    try:
        wf_id = backend.create(OVERFLOW)
        backend.apply_and_advance(wf_id)
        calls = Calls()
        stats = Worker(backend, calls, poll_interval=0.01, sweep_interval=0.05,
                       stale_after=0.0).run(idle_timeout=0.5)
        assert_overflow_failed(backend.load(wf_id))
        assert calls.calls == {"echo": 1} and stats.drive_errors == 0
        assert backend.list_pending_jobs() == []
    finally:
        close(backend)


def test_an_overflowing_input_fails_runfox_run_naming_the_step_and_the_execution(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    (tmp_path / "wf.yaml").write_text(json.dumps(OVERFLOW), encoding="utf-8")
    code = main(["run", "wf.yaml", "--executor", CLI_EXECUTOR, "-q", "--timeout", "20"])
    out, err = capsys.readouterr()
    assert code == 1, err  # failed, not "bad usage" (2) as before
    wf_id = err.split("runfox: execution ", 1)[1].split()[0]
    assert f"execution {wf_id} failed at step 'big': InputError:" in err
    assert json.loads(out)["step"] == "big"
    backend = sql_backend("sqlite:///runfox.db")
    try:
        assert_overflow_failed(backend.load(wf_id))
    finally:
        close(backend)


def test_an_overflowing_first_input_fails_runfox_start_naming_the_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    spec = {"steps": [{"id": "first", "fn": "echo", "input": {"n": {"*": [1e308, 1e308]}}}]}
    (tmp_path / "wf.yaml").write_text(json.dumps(spec), encoding="utf-8")
    code = main(["start", "wf.yaml"])
    out, err = capsys.readouterr()
    wf_id = out.strip()
    assert code == 1
    assert f"execution {wf_id} failed at step 'first': InputError:" in err
    backend = sql_backend("sqlite:///runfox.db")
    try:
        record = backend.load(wf_id)
        assert record.status is WorkflowStatus.FAILED
        assert record.steps["first"].status is StepStatus.FAILED
        assert backend.list_pending_jobs() == []
    finally:
        close(backend)


def test_inputs_that_no_longer_resolve_on_redispatch_fail_the_step() -> None:
    """A claimed step whose job was lost and whose inputs now raise is failed, not skipped."""
    backend = rfx.Backend()
    wf_id = backend.create({"steps": [
        {"id": "a", "fn": "f"},
        {"id": "b", "fn": "f", "input": {"q": {"/": [1, {"var": ["state.d", 1]}]}}}]})
    backend.advance(wf_id)  # claims a and b (b's input is 1 / 1); no job is dispatched
    backend.on_step_result(wf_id, "a", {"d": 0})  # now b's input would divide by zero
    assert graph.claim_timeouts(backend.load(wf_id), backend.clock() + 1, 0.0) == []
    assert backend.redispatch_stale(wf_id, 0.0) == []
    record = backend.load(wf_id)
    assert record.status is WorkflowStatus.FAILED
    error = record.outcome["error"]
    assert record.outcome["step"] == "b" and error["type"] == "InputError"
    assert error["field"] == "q" and "on re-dispatch" in error["message"]
    assert backend.redispatch_stale(wf_id, 0.0) == []  # finished: nothing more happens


# -- a record whose state is 5 ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as url:
        yield url


def test_a_state_stored_as_5_fails_the_execution_and_runs_the_executor_at_most_once(
        sql_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"name": "corrupt", "steps": [{"id": "a", "fn": "a", "input": {"x": 1}},
                                         {"id": "b", "fn": "b", "depends_on": ["a"]}]}
    backend = sql_backend(sql_url)
    try:
        wf_id = backend.create(spec)
        backend.apply_and_advance(wf_id)  # a is claimed and its job is queued
    finally:
        close(backend)
    engine = create_engine(sql_url)
    try:
        with engine.begin() as conn:
            changed = conn.execute(text("UPDATE runfox_workflows SET state = '5' "
                                        "WHERE workflow_execution_id = :k"), {"k": wf_id})
            assert changed.rowcount == 1
    finally:
        engine.dispose()

    backend = sql_backend(sql_url)  # a fresh process: nothing cached
    try:
        calls = Calls()
        Worker(backend, calls, poll_interval=0.01, sweep_interval=0.05,
               stale_after=0.0).run(idle_timeout=0.6, max_jobs=5)
        record = backend.load(wf_id)
        assert sum(calls.calls.values()) <= 1 and "b" not in calls.calls
        assert record.status is WorkflowStatus.FAILED and record.defects == ()
        error = record.outcome["error"]
        assert error["type"] == "CorruptRecord" and error["where"] == "state"
        assert error["stored"] == 5  # the bad value is kept
        assert "state" in error["message"]
        assert record.state == {}
        assert record.steps["b"].status is StepStatus.SKIPPED
        assert backend.list_pending_jobs() == []
        # Later sweeps and results change nothing and run nothing.
        assert backend.redispatch_stale(wf_id, 0.0) == []
        assert backend.advance(wf_id) == Failed(record.outcome)
    finally:
        close(backend)

    code = main(["status", wf_id, "--backend", sql_url])
    out, _ = capsys.readouterr()
    assert code == 0 and "status:   failed" in out
    assert "failed because its stored record was unusable at state" in out


def test_a_step_output_of_the_wrong_shape_fails_the_execution_naming_the_step(
        sqlite_url: str) -> None:
    backend = sql_backend(sqlite_url)
    try:
        wf_id = backend.create({"steps": [{"id": "a", "fn": "a"},
                                          {"id": "b", "fn": "b", "depends_on": ["a"]}]})
        backend.apply_and_advance(wf_id)
    finally:
        close(backend)
    engine = create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE runfox_steps SET data = :d WHERE step_id = 'a'"),
                         {"d": json.dumps({"id": "a", "status": "complete", "run_id": 0,
                                           "attempts": 1, "output": [1, 2, 3]})})
    finally:
        engine.dispose()
    backend = sql_backend(sqlite_url)
    try:
        result = backend.advance(wf_id)
        assert isinstance(result, Failed)
        error = result.outcome["error"]
        assert error["type"] == "CorruptRecord" and error["step"] == "a"
        assert error["where"] == "steps.a.output" and error["stored"] == [1, 2, 3]
        assert "step 'a'" in error["message"]
        record = backend.load(wf_id)
        assert record.status is WorkflowStatus.FAILED and record.defects == ()
    finally:
        close(backend)


# -- MemoryError while resolving inputs ---------------------------------------------------


def test_a_memory_error_resolving_inputs_fails_the_step() -> None:
    calls = Calls()
    backend = rfx.Backend(executor=calls)
    wf = rfx.Workflow.from_dict({"name": "memory-error-in-inputs",
                                 "steps": [{"id": "a", "fn": "echo"},
                                           {"id": "hog", "fn": "echo", "depends_on": ["a"],
                                            "input": {"all": {"var": "state"}}}]}, backend)
    spec = wf.record.plan.by_id["hog"]
    original = spec.inputs

    def exhausts_memory(context: Any) -> Any:
        raise MemoryError

    object.__setattr__(spec, "inputs", exhausts_memory)  # compiled specs are frozen
    try:
        result = wf.run(timeout=10)
    finally:
        object.__setattr__(spec, "inputs", original)
    assert isinstance(result, Failed)
    record = wf.record
    assert record.status is WorkflowStatus.FAILED
    assert record.steps["hog"].status is StepStatus.FAILED
    error = record.outcome["error"]
    assert record.outcome["step"] == "hog" and error["type"] == "InputError"
    assert "'hog'" in error["message"] and "MemoryError" in error["message"]
    assert calls.calls == {"echo": 1}


# -- a bug in a pure transition -----------------------------------------------------------


def test_a_bug_in_a_transition_fails_the_execution_instead_of_looping(
        monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    backend = sql_backend(sqlite_url)
    try:
        wf_id = backend.create({"steps": [{"id": "a", "fn": "a"},
                                          {"id": "b", "fn": "b", "depends_on": ["a"]}]})
        backend.apply_and_advance(wf_id)

        def broken(output: Any) -> Any:
            raise KeyError("a bug in the graph")

        monkeypatch.setattr(graph, "_check_output", broken)
        calls = Calls()
        Worker(backend, calls, poll_interval=0.01, sweep_interval=0.05,
               stale_after=0.0).run(idle_timeout=0.6, max_jobs=5)
        assert calls.calls == {"a": 1}  # once, not once per sweep
        record = backend.load(wf_id)
        assert record.status is WorkflowStatus.FAILED
        error = record.outcome["error"]
        assert error["type"] == "KeyError" and "a bug in the graph" in error["message"]
        assert "in broken" in error["where"]
        assert record.steps["a"].status is StepStatus.CANCELLED
        assert record.steps["b"].status is StepStatus.SKIPPED
        assert backend.list_pending_jobs() == []
    finally:
        close(backend)


def test_errors_a_caller_made_still_raise_and_fail_nothing() -> None:
    backend = rfx.Backend()
    wf_id = backend.create({"steps": [{"id": "a", "fn": "f"}]})
    backend.advance(wf_id)
    with pytest.raises(UnknownStepError):
        backend.on_step_result(wf_id, "ghost", {})
    with pytest.raises(NotJSONError):
        backend.write_step_output(wf_id, "a", {"x": float("nan")})
    assert backend.load(wf_id).status is WorkflowStatus.IN_PROGRESS


# -- runfox run stopped by an error after the execution was created ----------------------


def test_runfox_run_stopped_by_an_error_names_the_execution_and_leaves_it_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    (tmp_path / "wf.yaml").write_text(json.dumps(
        {"steps": [{"id": "slow", "fn": "slow", "input": {"seconds": 0.3, "i": 1, "n": 1}}]}),
        encoding="utf-8")

    def lost(self: Any, workflow_execution_id: str) -> Any:
        raise RuntimeError("the queue went away")

    monkeypatch.setattr(InProcessRunner, "gather", lost)
    code = main(["run", "wf.yaml", "--executor", CLI_EXECUTOR, "-q"])
    _, err = capsys.readouterr()
    assert code == 1
    wf_id = err.split("runfox: execution ", 1)[1].split()[0]
    assert (f"execution {wf_id} stopped by RuntimeError (step(s) in progress: slow); "
            "it was left failed") in err
    assert "RuntimeError: the queue went away" in err
    backend = sql_backend("sqlite:///runfox.db")
    try:
        record = backend.load(wf_id)
        assert record.status is WorkflowStatus.FAILED
        assert record.outcome["error"] == {"type": "RuntimeError",
                                           "message": "the queue went away",
                                           "where": "runfox run"}
        assert record.steps["slow"].status is StepStatus.CANCELLED
    finally:
        close(backend)
    main(["status", wf_id])
    out, _ = capsys.readouterr()
    assert "`runfox run` stopped on RuntimeError" in out


def test_a_finished_record_of_the_wrong_shape_is_left_as_stored_and_explained(
        sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    backend = sql_backend(sqlite_url)
    try:
        wf_id = backend.create({"steps": [{"id": "a", "fn": "a"}]})
        backend.advance(wf_id)
        backend.on_step_result(wf_id, "a", {"x": 1})
        assert backend.load(wf_id).status is WorkflowStatus.COMPLETE
    finally:
        close(backend)
    engine = create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE runfox_workflows SET state = '[1]'"))
    finally:
        engine.dispose()
    backend = sql_backend(sqlite_url)
    try:
        before = backend.load(wf_id)
        assert [d.stored for d in before.defects] == [[1]]
        assert backend.advance(wf_id) == rfx.Complete(before.outcome)  # nothing written
        with pytest.raises(rfx.CorruptRecord, match="wrong shape"):
            backend.reset_step(wf_id, "a")  # would overwrite the stored value
        assert backend.load(wf_id).version == before.version
    finally:
        close(backend)
    main(["status", wf_id, "--backend", sqlite_url])
    out, _ = capsys.readouterr()
    assert "state: must be an object, found list" in out
    assert "it has finished, so they are left as stored" in out
