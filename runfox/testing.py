"""The Store, Runner and Backend contract suites, for runfox's backends and anyone else's.

Every backend runfox ships runs these unchanged, and so can a backend in another
package: subclass the contract classes in a pytest test module and give each a
fixture that returns fresh, empty instances::

    import pytest
    from runfox.testing import BackendContract, RunnerContract, StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            return MyStore(...)

    class TestMyRunner(RunnerContract):
        supports_leases = True      # the lease tests run only when True

        @pytest.fixture
        def runner(self):
            return MyRunner(...)

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def parts(self):
            return MyStore(...), MyRunner(...)

A backend is done when all three pass. The helpers beside them (``fan_spec``,
``chain_spec``, ``fan_executor``, ``new_record``, ``bump``, ``job``) build the
specs, records and jobs the suites use, for a backend's own extra tests.

This module needs pytest (``pip install 'runfox[dev]'``, or just ``pytest``);
nothing else in runfox imports it, so runfox itself never needs pytest.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

try:
    import pytest
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "runfox.testing needs pytest: pip install 'runfox[dev]' (or pytest)",
        name=exc.name) from exc

from .backend import Backend, Cache, InProcessRunner, Runner, Store
from .cache import cache_key
from .errors import (
    ConflictError,
    ExecutionStateError,
    SpecError,
    UnknownStepError,
    WorkflowNotFound,
)
from .graph import advance, on_step_result
from .history import Event
from .ids import new_execution_id
from .records import WorkflowRecord
from .results import Complete, Dispatch, DispatchJob, Failed, Halt, Ignored
from .spec import load_spec
from .status import StepStatus, WorkflowStatus
from .workflow import Workflow

__all__ = [
    "BackendContract",
    "CacheContract",
    "CountingExecutor",
    "FakeClock",
    "KeyedStoreContract",
    "MapContract",
    "OffloadContract",
    "PayloadContract",
    "RunnerContract",
    "ScheduleContract",
    "StoreContract",
    "SubWorkflowContract",
    "SubworkflowExecutor",
    "WorkerRegistryContract",
    "bump",
    "cached_chain_fan_spec",
    "chain_fan_spec",
    "chain_spec",
    "fan_executor",
    "fan_spec",
    "job",
    "large_text",
    "map_executor",
    "map_spec",
    "map_subworkflow_spec",
    "new_record",
    "subworkflow_spec",
]


def fan_spec(width: int, name: str = "fan") -> dict[str, Any]:
    """``root`` feeds ``width`` parallel ``leaf`` steps whose outputs ``sink`` adds up.

    Run with ``fan_executor`` and input ``n``; the outcome is
    ``{"total": n * sum(range(width))}``.
    """
    steps: list[dict[str, Any]] = [{"id": "root", "fn": "seed", "input": {"n": {"var": "input.n"}}}]
    for i in range(width):
        steps.append({"id": f"leaf{i}", "fn": "leaf", "depends_on": ["root"],
                      "input": {"i": i, "n": {"var": "steps.root.output.n"}}})
    steps.append({"id": "sink", "fn": "sink", "depends_on": [f"leaf{i}" for i in range(width)],
                  "input": {"state": {"var": "state"}}})
    return {"name": name, "steps": steps,
            "outputs": {"total": {"var": "steps.sink.output.total"}}}


def chain_spec(length: int) -> dict[str, Any]:
    """``length`` steps, each adding one to the output of the one before."""
    steps: list[dict[str, Any]] = [{"id": "s0", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    for i in range(1, length):
        steps.append({"id": f"s{i}", "fn": "inc", "depends_on": [f"s{i - 1}"],
                      "input": {"x": {"var": f"steps.s{i - 1}.output.x"}}})
    return {"name": f"chain{length}", "steps": steps,
            "outputs": {"x": {"var": f"steps.s{length - 1}.output.x"}}}


def fan_executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The executor for ``fan_spec`` (``seed``, ``leaf``, ``sink``)."""
    if fn == "seed":
        return {"n": inputs["n"]}
    if fn == "leaf":
        return {f"k{inputs['i']}": inputs["i"] * inputs["n"]}
    if fn == "sink":
        return {"total": sum(v for k, v in inputs["state"].items() if k.startswith("k"))}
    raise ValueError(fn)


def new_record(spec: dict[str, Any], inputs: dict[str, Any] | None = None,
               created_at: float = 1_700_000_000.0) -> WorkflowRecord:
    """A fresh version-1 record of ``spec``, as ``Backend.create`` would write it."""
    plan = load_spec(spec)
    return WorkflowRecord(workflow_id=plan.workflow_id, execution_id=new_execution_id(created_at),
                          spec=plan.raw, inputs=inputs or {}, version=1, created_at=created_at,
                          updated_at=created_at, plan=plan)


def bump(new: WorkflowRecord, old: WorkflowRecord) -> WorkflowRecord:
    """``new`` with the version and time a write after ``old`` gives it."""
    return new.evolve(version=old.version + 1, updated_at=old.updated_at + 1)


def job(wf: str, step: str, run_id: int = 0, **inputs: Any) -> DispatchJob:
    """A job for a runner test: ``fn_<step>`` with ``inputs`` (default ``{"x": 1}``)."""
    return DispatchJob(wf, step, "fn_" + step, inputs or {"x": 1}, run_id, 1, None)


def keyed_job(wf: str, step: str, key: str, limit: int) -> DispatchJob:
    """A job with a concurrency key: at most ``limit`` such jobs are handed out at once."""
    return DispatchJob(wf, step, "fn_" + step, {"x": 1}, concurrency_key=key,
                       concurrency_limit=limit)


class StoreContract:
    """What every Store must do. Provide a ``store`` fixture (fresh and empty).

    A store whose data outlives the process also overrides ``reopen``: a fixture
    returning a function that opens a *new* store object on the same data, as
    another process would (the isolation test loads through it).
    """

    @pytest.fixture
    def reopen(self, store: Store) -> Callable[[], Store]:
        """New store objects on ``store``'s data; by default ``store`` itself."""
        return lambda: store

    def test_load_missing_is_a_keyerror(self, store: Store) -> None:
        with pytest.raises(KeyError):
            store.load("nope#nothing")
        with pytest.raises(WorkflowNotFound):
            store.load("nope#nothing")

    def test_create_and_load_round_trip(self, store: Store) -> None:
        record = new_record(fan_spec(3), {"n": 2, "text": "héllo ✓", "f": 0.1, "nested": [{}]})
        store.write(record)
        loaded = store.load(record.workflow_execution_id)
        assert loaded == record
        assert loaded.to_dict() == record.to_dict()
        assert loaded.steps["leaf1"].status is StepStatus.READY

    def test_a_prepared_write_writes_when_called(self, store: Store) -> None:
        # prepare_write does what needs no database (checks, encoding) at once
        # and the write when its function is called: as write_shared, a lost race
        # included.
        v1 = new_record(fan_spec(2), {"n": 1})
        store.write(v1)
        key = v1.workflow_execution_id
        v2 = bump(advance(store.load(key), 10.0)[0], v1)
        with pytest.raises(ValueError):
            store.prepare_write(v2.evolve(version=5), previous=v1)
        write = store.prepare_write(v2, previous=store.load_shared(key))
        assert store.load(key).version == 1
        write()
        assert store.load(key) == v2
        created = new_record(fan_spec(1))
        store.prepare_write(created)()
        assert store.load(created.workflow_execution_id) == created
        stale = store.prepare_write(bump(v1.evolve(state={"a": 1}), v1), previous=v1)
        with pytest.raises(ConflictError):
            stale()
        assert store.load(key) == v2

    def test_several_records_load_together(self, store: Store) -> None:
        # load_shared_many gives what load_shared gives for each key; a key with
        # no record is left out, and a key given twice is one entry.
        fresh = [new_record(fan_spec(2), {"n": i}) for i in range(3)]
        for record in fresh:
            store.write(record)
        key = fresh[0].workflow_execution_id
        moved = bump(advance(store.load(key), 10.0)[0], fresh[0])
        store.write(moved)
        keys = [r.workflow_execution_id for r in fresh]
        found = store.load_shared_many([*keys, "nobody#none", keys[1]])
        assert sorted(found) == sorted(keys)
        assert found[key] == moved
        for record in fresh[1:]:
            assert found[record.workflow_execution_id] == record
        assert store.load_shared_many([]) == {}

    def test_prepared_writes_write_when_called(self, store: Store) -> None:
        # prepare_writes prepares several records at once and writes them all in
        # the call; a record whose stored version moved on raises ConflictError.
        fresh = [new_record(fan_spec(2), {"n": i}) for i in range(3)]
        for record in fresh:
            store.write(record)
        moved = [bump(advance(store.load(r.workflow_execution_id), 10.0)[0], r) for r in fresh]
        write = store.prepare_writes([(m, store.load_shared(m.workflow_execution_id), ())
                                      for m in moved])
        assert all(store.load(r.workflow_execution_id).version == 1 for r in fresh)
        write()
        assert [store.load(m.workflow_execution_id) for m in moved] == moved
        stale = store.prepare_writes([(bump(r.evolve(state={"a": 1}), r), r, ()) for r in fresh])
        with pytest.raises(ConflictError):
            stale()
        assert [store.load(m.workflow_execution_id) for m in moved] == moved

    def test_create_twice_conflicts(self, store: Store) -> None:
        record = new_record(fan_spec(1))
        store.write(record)
        with pytest.raises(ConflictError):
            store.write(record)

    def test_version_must_follow_the_stored_one(self, store: Store) -> None:
        v1 = new_record(fan_spec(2), {"n": 1})
        store.write(v1)
        v2 = bump(advance(v1, 10.0)[0], v1)
        store.write(v2, previous=v1)
        stale = bump(advance(v1, 11.0)[0], v1)  # also computed from v1: must lose
        with pytest.raises(ConflictError):
            store.write(stale, previous=v1)
        skipped = stale.evolve(version=5)
        with pytest.raises(ConflictError):
            store.write(skipped)
        loaded = store.load(v1.workflow_execution_id)
        assert loaded.version == 2
        assert loaded.to_dict() == v2.to_dict()

    def test_delta_and_full_writes_agree(self, store: Store) -> None:
        v1 = new_record(fan_spec(70), {"n": 3})  # more than one chunk of steps
        store.write(v1)
        v2 = bump(advance(v1, 10.0)[0], v1)
        store.write(v2, previous=v1)
        r3, _ = on_step_result(v2, "root", {"n": 3}, 0, 11.0)
        v3 = bump(r3, v2)
        store.write(v3)  # no previous: a full write
        v4 = bump(advance(v3, 12.0)[0], v3)
        store.write(v4, previous=v3)
        loaded = store.load(v1.workflow_execution_id)
        assert loaded.to_dict() == v4.to_dict()
        assert loaded.ready == v4.ready and loaded.open == v4.open
        assert sum(s.status is StepStatus.IN_PROGRESS for s in loaded.steps.values()) == 70

    def test_records_of_different_executions_are_separate(self, store: Store) -> None:
        a, b = new_record(fan_spec(1)), new_record(fan_spec(1))
        store.write(a)
        store.write(b)
        a2 = bump(advance(a, 5.0)[0], a)
        store.write(a2, previous=a)
        assert store.load(b.workflow_execution_id).version == 1
        assert store.load(a.workflow_execution_id).status is WorkflowStatus.IN_PROGRESS

    def test_loaded_records_are_isolated(self, store: Store) -> None:
        record = new_record(fan_spec(1), {"n": 1})
        store.write(record)
        loaded = store.load(record.workflow_execution_id)
        with pytest.raises(AttributeError):
            loaded.status = WorkflowStatus.COMPLETE  # type: ignore[misc]
        changed = loaded.evolve(state={"x": 1})
        assert changed.state == {"x": 1}
        assert store.load(record.workflow_execution_id).state == {}

    def test_write_persists_a_copy_isolated_from_the_caller(self, store: Store) -> None:
        record = new_record(fan_spec(1), {"cfg": {"deep": [1, {"k": "v"}]}, "n": 1})
        store.write(record)
        record.inputs["cfg"]["deep"][1]["k"] = "caller"
        record.inputs["extra"] = True
        assert store.load(record.workflow_execution_id).inputs == {
            "cfg": {"deep": [1, {"k": "v"}]}, "n": 1}

    def test_handed_out_records_are_isolated(self, store: Store,
                                             reopen: Callable[[], Store]) -> None:
        """Every record runfox hands out, changed deep inside, then a transition: unchanged.

        The seed: ``load`` returns a copy isolated from the backing store. The
        records come from ``Store.load``, ``Backend.load``, ``Workflow.record``,
        ``Workflow.state``/``outcome``, a terminal result and ``on_state_change``;
        the check loads from a new store object on the same data (``reopen``).
        """
        spec = {"name": "isolation", "steps": [
            {"id": "a", "fn": "make", "input": {"cfg": {"var": "input.cfg"}}},
            {"id": "b", "fn": "make", "depends_on": ["a"],
             "input": {"items": {"var": "steps.a.output.items"}}}],
            "outputs": {"items": {"var": "steps.b.output.items"}, "acc": {"var": "state.acc"}}}
        record = new_record(spec, {"cfg": {"deep": [1, {"k": "v"}]}})
        store.write(record)
        wf_id = record.workflow_execution_id
        pristine_spec = json.loads(json.dumps(record.spec))

        def touch(_: str, previous: dict[str, Any], new: dict[str, Any]) -> None:
            for state in (previous, new):
                state.setdefault("acc", {}).setdefault("seen", []).append("callback")
                state["callback"] = True

        backend = Backend(store=store, runner=InProcessRunner(), on_state_change=touch)
        backend.advance(wf_id)
        backend.on_step_result(wf_id, "a", {"items": [{"n": 1}], "acc": {"seen": ["a"]}}, 0)
        wf = Workflow(wf_id, backend)
        for handed in (store.load(wf_id), backend.load(wf_id), wf.record):
            handed.state["acc"]["seen"].append("x")
            handed.state["new"] = 1
            handed.inputs["cfg"]["deep"][1]["k"] = "changed"
            handed.inputs["cfg"]["deep"].append(2)
            step_output = handed.steps["a"].output
            assert step_output is not None
            step_output["items"][0]["n"] = 99
            step_output["items"].append({"n": 100})
            handed.spec["steps"][0]["fn"] = "hacked"
        wf.state["acc"]["seen"].append("y")
        backend.advance(wf_id)  # a transition: claims b and writes the record

        def check(loaded: WorkflowRecord) -> None:
            assert loaded.inputs == {"cfg": {"deep": [1, {"k": "v"}]}}
            assert loaded.state == {"items": [{"n": 1}], "acc": {"seen": ["a"]}}
            assert loaded.steps["a"].output == {"items": [{"n": 1}], "acc": {"seen": ["a"]}}
            assert loaded.spec == pristine_spec
            assert loaded.plan.by_id["a"].fn == "make"

        fresh = reopen().load(wf_id)
        assert fresh.steps["b"].status is StepStatus.IN_PROGRESS
        check(fresh)
        check(store.load(wf_id))

        assert backend.on_step_result(wf_id, "b", {"items": [{"n": 2}]}, 0) is None
        result = backend.advance(wf_id)
        assert isinstance(result, Complete)
        outcome = {"items": [{"n": 2}], "acc": {"seen": ["a"]}}
        assert result.outcome == outcome
        result.outcome["items"][0]["n"] = -1
        wf.outcome["acc"]["seen"].append("z")
        wf.record.outcome["items"].append("w")
        assert isinstance(backend.advance(wf_id), Complete)  # a finished record: no write
        for loaded in (reopen().load(wf_id), store.load(wf_id)):
            assert loaded.outcome == outcome
            assert loaded.state == {"items": [{"n": 2}], "acc": {"seen": ["a"]}}

    def test_list_executions(self, store: Store) -> None:
        first = new_record(fan_spec(1, "first"), created_at=1000.0)
        second = new_record(fan_spec(1, "second"), created_at=2000.0)
        store.write(first)
        store.write(second)
        store.write(bump(advance(second, 2001.0)[0], second), previous=second)
        listed = store.list_executions()
        assert [s.workflow_execution_id for s in listed][:2] == [
            second.workflow_execution_id, first.workflow_execution_id]
        assert listed[0].name == "second"
        running = store.list_executions(status="in_progress")
        assert [s.workflow_execution_id for s in running] == [second.workflow_execution_id]
        assert len(store.list_executions(limit=1)) == 1

    def test_find_by_a_prefix_of_the_key_or_of_the_execution_id(self, store: Store) -> None:
        """How ``runfox status|cancel|graph`` resolve an id typed by a person."""
        first = new_record(fan_spec(1, "first"), created_at=1000.0)
        second = new_record(fan_spec(1, "second"), created_at=2000.0)
        third = new_record(fan_spec(1, "first"), created_at=2000.5)  # first's workflow
        for record in (first, second, third):
            store.write(record)
        key = first.workflow_execution_id
        assert store.find(key) == [key]
        assert store.find(key[:10]) == [third.workflow_execution_id, key]  # newest first
        assert store.find(second.execution_id[:-3]) == [second.workflow_execution_id]
        shared = second.execution_id[:13]  # "19700101T0033": second and third, not first
        assert store.find(shared) == [third.workflow_execution_id,
                                      second.workflow_execution_id]
        assert store.find(shared, limit=1) == [third.workflow_execution_id]
        assert len(store.find(first.execution_id[:9])) == 3  # the day they share
        for nothing in ("", "nope", "%", "_", "1970%", key.upper()):
            assert store.find(nothing) == [], nothing

    def test_racing_writers_lose_nothing(self, store: Store) -> None:
        """Eight threads apply results of a 50-wide fan-out through one Backend."""
        backend = Backend(store=store, runner=InProcessRunner())
        wf_id = backend.create(fan_spec(50), {"n": 2})
        backend.advance(wf_id)
        backend.on_step_result(wf_id, "root", {"n": 2}, 0)
        dispatch = backend.advance(wf_id)
        assert isinstance(dispatch, Dispatch) and len(dispatch.jobs) == 50
        jobs = list(dispatch.jobs)
        errors: list[BaseException] = []

        def apply(part: list[DispatchJob]) -> None:
            try:
                for j in part:
                    backend.on_step_result(wf_id, j.step_id, fan_executor(j.fn, j.inputs),
                                           j.run_id)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=apply, args=(jobs[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        record = backend.load(wf_id)
        assert sorted(k for k in record.state if k.startswith("k")) == sorted(
            f"k{i}" for i in range(50))
        assert all(record.steps[f"leaf{i}"].status is StepStatus.COMPLETE for i in range(50))
        assert record.ready == frozenset({"sink"})

    def test_state_is_stored_by_key_changes_and_removals_included(
            self, store: Store, reopen: Callable[[], Store]) -> None:
        """Stores may write only the state keys that changed (the SQL store does):
        what is loaded, incrementally or afresh, is still the whole state."""
        v1 = new_record(fan_spec(1), {"n": 1}).evolve(state={"a": 1, "big": {"x": [1, 2]}})
        store.write(v1)
        v2 = bump(v1.evolve(state={**v1.state, "a": 2, "b": None}), v1)
        store.write(v2, previous=v1)
        assert store.load(v1.workflow_execution_id).state == {"a": 2, "big": {"x": [1, 2]},
                                                              "b": None}
        v3 = bump(v2.evolve(state={"b": None, "c": "new"}), v2)  # "a" and "big" removed
        store.write(v3, previous=v2)
        v4 = bump(v3.evolve(state={**v3.state, "a": [3]}), v3)  # "a" back again
        store.write(v4)  # no previous: every key is written
        for loaded in (store.load(v1.workflow_execution_id),
                       reopen().load(v1.workflow_execution_id)):
            assert loaded.state == {"b": None, "c": "new", "a": [3]}
            assert loaded.version == 4

    def test_due_names_what_can_be_done_now(self, store: Store) -> None:
        """``due`` names a new execution and a retry whose time came; never a finished
        execution; ``postpone`` never hides a retry past its time."""
        t0 = 1_700_000_000.0
        spec = {"name": "flaky", "steps": [
            {"id": "a", "fn": "work", "max_attempts": 3, "retry": {"delay": 100}}]}
        fresh = new_record(spec, created_at=t0)
        store.write(fresh)
        wf_id = fresh.workflow_execution_id
        assert wf_id in store.due(t0 + 1).keys
        claimed = bump(advance(fresh, t0)[0], fresh)
        store.write(claimed, previous=fresh)
        failed, _ = on_step_result(claimed, "a", {"ok": False, "error": "x"}, 0, t0 + 2)
        waiting = failed.evolve(version=claimed.version + 1, updated_at=t0 + 2)
        assert waiting.steps["a"].not_before == t0 + 102
        store.write(waiting, previous=claimed)
        store.postpone(waiting, t0 + 3)
        later = store.due(t0 + 3)
        assert later.next_retry in (None, t0 + 102)
        assert wf_id in store.due(t0 + 103).keys
        store.postpone(waiting, t0 + 103)  # looked at, nothing written: still due later
        assert wf_id in store.due(t0 + 4000).keys
        done = bump(waiting.evolve(status=WorkflowStatus.CANCELLED), waiting)
        store.write(done, previous=waiting)
        assert wf_id not in store.due(t0 + 10_000).keys
        with pytest.raises(ValueError):
            store.due(t0, 0)


class RunnerContract:
    """What every Runner must do. Provide a ``runner`` fixture (fresh and empty)."""

    #: Set True in subclasses whose runner holds taken jobs on a lease.
    supports_leases = False
    #: Set False in subclasses whose runner does not enforce concurrency limits.
    supports_concurrency_limits = True

    def test_dispatch_then_list_is_non_destructive(self, runner: Runner) -> None:
        jobs = [job("wf#1", "a", x=1), job("wf#1", "b", x={"deep": ["ü", 1.5, None]})]
        runner.dispatch("wf#1", jobs)
        first = sorted(runner.list_pending_jobs(), key=lambda j: j.step_id)
        second = sorted(runner.list_pending_jobs(), key=lambda j: j.step_id)
        assert first == second == jobs

    def test_take_consumes(self, runner: Runner) -> None:
        runner.dispatch("wf#1", [job("wf#1", "a"), job("wf#1", "b")])
        taken = runner.take_pending_jobs()
        assert sorted(j.step_id for j in taken) == ["a", "b"]
        assert runner.take_pending_jobs() == []
        assert runner.list_pending_jobs() == []

    def test_take_with_limit(self, runner: Runner) -> None:
        runner.dispatch("wf#1", [job("wf#1", f"s{i}") for i in range(5)])
        first = runner.take_pending_jobs(limit=2)
        assert len(first) == 2
        rest = runner.take_pending_jobs()
        assert len(rest) == 3
        assert {j.step_id for j in first} | {j.step_id for j in rest} == {
            f"s{i}" for i in range(5)}

    def test_dispatch_is_idempotent_per_job(self, runner: Runner) -> None:
        a = job("wf#1", "a")
        runner.dispatch("wf#1", [a])
        runner.dispatch("wf#1", [a])
        assert len(runner.list_pending_jobs()) == 1
        taken = runner.take_pending_jobs()
        runner.dispatch("wf#1", [a])  # held by a worker: not queued again
        assert runner.list_pending_jobs() == []
        runner.dispatch("wf#1", [job("wf#1", "a", run_id=1)])  # a new run is a new job
        assert [j.run_id for j in runner.list_pending_jobs()] == [1]
        assert taken[0].run_id == 0

    def test_results_are_gathered_once_per_execution(self, runner: Runner) -> None:
        runner.dispatch("wf#1", [job("wf#1", "a")])
        runner.dispatch("wf#2", [job("wf#2", "a")])
        for j in runner.take_pending_jobs():
            assert runner.submit_work_result(j.workflow_execution_id, j.step_id,
                                             {"from": j.workflow_execution_id, "v": [1, "é"]},
                                             j.run_id)
        got = runner.gather("wf#1")
        assert len(got) == 1
        step_id, output = got[0]  # the seed's (step_id, output) pair
        assert (step_id, output, got[0].run_id) == ("a", {"from": "wf#1", "v": [1, "é"]}, 0)
        assert runner.gather("wf#1") == []
        assert [r.output["from"] for r in runner.gather("wf#2")] == ["wf#2"]

    def test_gather_never_blocks_when_empty(self, runner: Runner) -> None:
        start = time.monotonic()
        assert runner.gather("wf#none") == []
        assert time.monotonic() - start < 2.0

    def test_a_repeated_result_is_recorded_once(self, runner: Runner) -> None:
        runner.dispatch("wf#1", [job("wf#1", "a")])
        (j,) = runner.take_pending_jobs()
        assert runner.submit_work_result("wf#1", "a", {"v": 1}, j.run_id) is True
        assert runner.submit_work_result("wf#1", "a", {"v": 2}, j.run_id) is False
        assert [r.output for r in runner.gather("wf#1")] == [{"v": 1}]

    def test_ack_forgets_a_finished_job(self, runner: Runner) -> None:
        runner.dispatch("wf#1", [job("wf#1", "a"), job("wf#1", "b")])
        taken = {j.step_id: j for j in runner.take_pending_jobs(lease=30.0)}
        runner.ack(taken["a"], {"v": 1})
        runner.release(taken["b"])
        assert [j.step_id for j in runner.list_pending_jobs()] == ["b"]
        assert [r.step_id for r in runner.gather("wf#1")] in ([], ["a"])  # stored or not
        assert [j.step_id for j in runner.take_pending_jobs(lease=30.0)] == ["b"]

    def test_ack_many_forgets_several_finished_jobs(self, runner: Runner) -> None:
        runner.dispatch("wf#1", [job("wf#1", "a"), job("wf#1", "b"), job("wf#1", "c")])
        runner.dispatch("wf#2", [job("wf#2", "a")])
        taken = {j.key: j for j in runner.take_pending_jobs(lease=30.0)}
        done = [j for j in taken.values() if j.step_id != "b"]
        runner.ack_many([(j, {"v": 1}) for j in done])
        runner.release(next(j for j in taken.values() if j.step_id == "b"))
        assert [j.step_id for j in runner.list_pending_jobs()] == ["b"]
        runner.dispatch("wf#2", [job("wf#2", "a")])  # a stale redispatch: not queued again
        assert [j.step_id for j in runner.take_pending_jobs(lease=30.0)] == ["b"]
        runner.ack_many([])

    def test_an_acked_job_does_not_come_back_after_its_lease(self, runner: Runner) -> None:
        if not self.supports_leases:
            pytest.skip("this runner has no leases")
        runner.dispatch("wf#1", [job("wf#1", "a")])
        (held,) = runner.take_pending_jobs(lease=1.0)
        runner.ack(held, {"ok": True})
        assert runner.heartbeat(held, 1.0) is False
        time.sleep(1.5)
        assert runner.take_pending_jobs(lease=30.0) == []

    def test_an_acked_job_is_not_queued_again_by_a_stale_redispatch(self, runner: Runner
                                                                     ) -> None:
        # A sweep that read the record just before the result was applied
        # dispatches the job again after the worker acknowledged it: it must not
        # run a second time.
        runner.dispatch("wf#1", [job("wf#1", "a")])
        (held,) = runner.take_pending_jobs(lease=30.0)
        runner.ack(held, {"ok": True})
        runner.dispatch("wf#1", [job("wf#1", "a")])
        assert runner.take_pending_jobs(lease=30.0) == []

    def test_release_gives_a_job_back(self, runner: Runner) -> None:
        runner.dispatch("wf#1", [job("wf#1", "a")])
        (j,) = runner.take_pending_jobs()
        runner.release(j)
        again = runner.take_pending_jobs()
        assert [x.key for x in again] == [j.key]

    def test_cancel_drops_only_that_executions_jobs(self, runner: Runner) -> None:
        runner.dispatch("wf#1", [job("wf#1", "a")])
        runner.dispatch("wf#2", [job("wf#2", "a")])
        runner.cancel("wf#1")
        assert [j.workflow_execution_id for j in runner.list_pending_jobs()] == ["wf#2"]

    def test_an_expired_lease_makes_a_job_claimable_again(self, runner: Runner) -> None:
        if not self.supports_leases:
            pytest.skip("this runner has no leases")
        runner.dispatch("wf#1", [job("wf#1", "a")])
        (first,) = runner.take_pending_jobs(lease=1.0)
        assert runner.take_pending_jobs(lease=1.0) == []
        deadline = time.monotonic() + 10
        again: list[DispatchJob] = []
        while not again and time.monotonic() < deadline:
            time.sleep(0.25)
            again = runner.take_pending_jobs(lease=30.0)
        assert [j.key for j in again] == [first.key]

    def test_heartbeat_keeps_a_job(self, runner: Runner) -> None:
        if not self.supports_leases:
            pytest.skip("this runner has no leases")
        runner.dispatch("wf#1", [job("wf#1", "a")])
        (held,) = runner.take_pending_jobs(lease=1.0)
        for _ in range(4):
            time.sleep(0.5)
            assert runner.heartbeat(held, 1.0)
            assert runner.take_pending_jobs(lease=1.0) == []
        assert runner.submit_work_result("wf#1", "a", {"ok": True}, held.run_id)
        assert runner.heartbeat(held, 1.0) is False

    # -- dispatch and take at once ----------------------------------------------------

    def test_dispatch_and_take_holds_what_it_takes_and_queues_the_rest(
            self, runner: Runner) -> None:
        jobs = [job("wf#1", f"s{i}", x=i) for i in range(3)]
        taken = runner.dispatch_and_take("wf#1", jobs, 2, 30.0)
        # A runner may take none (the default); whatever it took is not queued,
        # and everything it did not take is, exactly once.
        assert len(taken) <= 2
        assert all(j.delivery == 1 for j in taken)
        assert {j.key for j in taken} <= {j.key for j in jobs}
        pending = runner.take_pending_jobs(lease=30.0)
        assert sorted(j.key for j in pending) == sorted(
            j.key for j in jobs if j.key not in {t.key for t in taken})
        assert [j.inputs for j in taken] == [j.inputs for j in jobs[:len(taken)]]
        for held in taken:  # held like a claim: a result, an ack, a heartbeat
            assert runner.heartbeat(held, 30.0)
            runner.ack(held, {"ok": True})
        runner.dispatch("wf#1", jobs)  # a stale re-dispatch queues nothing again
        assert runner.take_pending_jobs(lease=30.0) == []

    def test_dispatch_and_take_never_takes_a_keyed_job(self, runner: Runner) -> None:
        keyed = keyed_job("wf#1", "g", "gpu", 1)
        taken = runner.dispatch_and_take("wf#1", [keyed, job("wf#1", "free")], 5, 30.0)
        assert [j.step_id for j in taken] in ([], ["free"])
        assert "g" in [j.step_id for j in runner.take_pending_jobs(lease=30.0)]

    def test_a_job_taken_at_dispatch_comes_back_when_its_lease_runs_out(
            self, runner: Runner) -> None:
        if not self.supports_leases:
            pytest.skip("this runner has no leases")
        (taken,) = runner.dispatch_and_take("wf#1", [job("wf#1", "a")], 1, 1.0) or (None,)
        if taken is None:
            pytest.skip("this runner takes no jobs at dispatch")
        assert runner.take_pending_jobs(lease=30.0) == []  # held by the dispatcher
        deadline = time.monotonic() + 10
        again: list[DispatchJob] = []
        while not again and time.monotonic() < deadline:
            time.sleep(0.25)
            again = runner.take_pending_jobs(lease=30.0)
        assert [(j.key, j.delivery) for j in again] == [(taken.key, 2)]

    # -- concurrency limits -------------------------------------------------------

    def _needs_limits(self) -> None:
        if not self.supports_concurrency_limits:
            pytest.skip("this runner does not enforce concurrency limits")

    def test_a_concurrency_key_bounds_the_jobs_handed_out(self, runner: Runner) -> None:
        self._needs_limits()
        # Five jobs of one key in two executions, limit 2; an unkeyed job behind them.
        runner.dispatch("wf#1", [keyed_job("wf#1", f"g{i}", "gpu", 2) for i in range(3)])
        runner.dispatch("wf#2", [keyed_job("wf#2", f"g{i}", "gpu", 2) for i in range(2)])
        runner.dispatch("wf#3", [job("wf#3", "free")])
        first = runner.take_pending_jobs(lease=30.0)
        assert sorted(j.key for j in first) == ["wf#1#g0#0", "wf#1#g1#0", "wf#3#free#0"]
        assert all(j.concurrency_key == "gpu" and j.concurrency_limit == 2
                   for j in first if j.step_id != "free")
        assert runner.take_pending_jobs(lease=30.0) == []
        assert len(runner.list_pending_jobs()) == 3  # the full key's jobs stay queued
        held = {j.key: j for j in first}
        runner.ack(held["wf#1#g0#0"], {"ok": True})  # an ack frees a slot
        (third,) = runner.take_pending_jobs(lease=30.0)
        assert third.key == "wf#1#g2#0"
        assert runner.take_pending_jobs(lease=30.0) == []
        runner.release(third)  # so does a release
        (fourth,) = runner.take_pending_jobs(limit=1, lease=30.0)
        assert fourth.concurrency_key == "gpu"
        assert runner.take_pending_jobs(lease=30.0) == []
        assert runner.submit_work_result("wf#1", "g1", {"ok": True}, 0)  # and a result
        assert len(runner.take_pending_jobs(lease=30.0)) == 1
        assert runner.take_pending_jobs(lease=30.0) == []

    def test_a_take_with_a_limit_skips_jobs_whose_key_is_full(self, runner: Runner) -> None:
        self._needs_limits()
        runner.dispatch("wf#1", [keyed_job("wf#1", f"g{i}", "gpu", 1) for i in range(3)])
        runner.dispatch("wf#1", [keyed_job("wf#1", "c", "cpu", 1), job("wf#1", "free")])
        assert [j.step_id for j in runner.take_pending_jobs(limit=1, lease=30.0)] == ["g0"]
        assert [j.step_id for j in runner.take_pending_jobs(limit=1, lease=30.0)] == ["c"]
        assert [j.step_id for j in runner.take_pending_jobs(limit=1, lease=30.0)] == ["free"]
        assert runner.take_pending_jobs(limit=1, lease=30.0) == []

    def test_a_slot_whose_lease_runs_out_is_freed(self, runner: Runner) -> None:
        self._needs_limits()
        if not self.supports_leases:
            pytest.skip("this runner has no leases")
        runner.dispatch("wf#1", [keyed_job("wf#1", f"g{i}", "gpu", 1) for i in range(2)])
        (first,) = runner.take_pending_jobs(lease=1.0)
        assert runner.take_pending_jobs(lease=1.0) == []
        # The holder stops heartbeating (it died): after its lease the slot is free
        # again, and the next job of the key (or the lost one again) gets it.
        deadline = time.monotonic() + 10
        again: list[DispatchJob] = []
        while not again and time.monotonic() < deadline:
            time.sleep(0.25)
            again = runner.take_pending_jobs(lease=30.0)
        assert len(again) == 1
        assert runner.heartbeat(first, 30.0) is (again[0].key == first.key)
        assert runner.take_pending_jobs(lease=30.0) == []

    def test_a_heartbeat_keeps_the_slot(self, runner: Runner) -> None:
        self._needs_limits()
        if not self.supports_leases:
            pytest.skip("this runner has no leases")
        runner.dispatch("wf#1", [keyed_job("wf#1", f"g{i}", "gpu", 1) for i in range(2)])
        (held,) = runner.take_pending_jobs(lease=1.0)
        for _ in range(4):
            time.sleep(0.5)
            assert runner.heartbeat(held, 1.0)
            assert runner.take_pending_jobs(lease=1.0) == []
        runner.ack(held, {"ok": True})
        assert [j.step_id for j in runner.take_pending_jobs(lease=30.0)] == ["g1"]


def chain_fan_spec() -> dict[str, Any]:
    """Six steps, no ``depends_on`` (all derived): a chain ``a -> b -> c`` feeding a
    fan-out ``d``, ``e``, ``f``. Each ``fn`` is its step id; with ``CountingExecutor``
    and input ``x``, ``d``/``e``/``f`` give ``x + 3 + k`` for k = 1, 2, 3."""
    steps: list[dict[str, Any]] = [{"id": "a", "fn": "a", "input": {"x": {"var": "input.x"}}}]
    for prev, sid in (("a", "b"), ("b", "c")):
        steps.append({"id": sid, "fn": sid, "input": {"x": {"var": f"steps.{prev}.output.v"}}})
    for k, sid in enumerate(("d", "e", "f"), 1):
        steps.append({"id": sid, "fn": sid, "input": {"x": {"var": "steps.c.output.v"}, "k": k}})
    return {"name": "chain-fan", "steps": steps,
            "outputs": {sid: {"var": f"steps.{sid}.output.v"} for sid in ("d", "e", "f")}}


def cached_chain_fan_spec(**cache: Any) -> dict[str, Any]:
    """``chain_fan_spec`` with the step cache on for every step (``defaults.cache``:
    ``cache`` settings, or ``true``) and a second input ``k`` read by ``e`` alone."""
    spec = chain_fan_spec()
    spec["defaults"] = {"cache": cache or True}
    spec["inputs"] = {"x": {"type": "integer"}, "k": {"type": "integer", "default": 2}}
    spec["steps"][4]["input"]["k"] = {"var": "input.k"}
    return spec


class CountingExecutor:
    """Counts calls by ``fn``; returns ``{"v": x + k}`` (``k`` defaults to 1). A ``fn``
    in ``failing`` fails its attempt (``ok: false``). Thread-safe."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.failing: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls[fn] = self.calls.get(fn, 0) + 1
        if fn in self.failing:
            return {"ok": False, "error": f"{fn} was told to fail"}
        return {"v": inputs["x"] + inputs.get("k", 1)}

    def take(self) -> dict[str, int]:
        """The counts so far, then start again from zero."""
        with self._lock:
            calls, self.calls = self.calls, {}
        return calls


def map_spec(*, max_parallel: int | None = None, tolerate: int | float | None = None,
             max_attempts: int = 1) -> dict[str, Any]:
    """``ls`` lists ``input.n`` numbers, ``each`` maps ``sq`` over them (``{"y": x*x,
    "i": index}``), ``total`` sums the list; ``outputs`` read the list too. For
    ``map_executor``."""
    each: dict[str, Any] = {"id": "each", "fn": "sq", "map": {"var": "steps.ls.output.xs"},
                            "input": {"x": {"var": "item"}, "i": {"var": "index"}},
                            "max_attempts": max_attempts}
    if max_parallel is not None:
        each["max_parallel"] = max_parallel
    if tolerate is not None:
        each["tolerate"] = tolerate
    return {"name": "map", "steps": [
        {"id": "ls", "fn": "ls", "input": {"n": {"var": "input.n"}}},
        each,
        {"id": "total", "fn": "total", "input": {"ys": {"var": "steps.each.output"}}},
    ], "outputs": {"total": {"var": "steps.total.output.total"},
                   "first": {"var": "steps.each.output.0.y"},
                   "all": {"var": "steps.each.output"}}}


def map_executor(fail: Callable[[int, int], bool] | None = None
                 ) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """The executor of ``map_spec``; ``fail(x, call)`` (call counts from 1 per ``x``)
    makes that attempt of ``sq`` fail."""
    calls: dict[int, int] = {}
    lock = threading.Lock()

    def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "ls":
            return {"xs": list(range(inputs["n"]))}
        if fn == "sq":
            x = inputs["x"]
            with lock:
                calls[x] = calls.get(x, 0) + 1
                call = calls[x]
            if fail is not None and fail(x, call):
                return {"ok": False, "error": f"item {x} failed (call {call})"}
            return {"y": x * x, "i": inputs["i"]}
        if fn == "total":
            return {"total": sum(o["y"] for o in inputs["ys"] if o.get("ok") is not False)}
        raise ValueError(f"unknown fn {fn!r}")

    execute.calls = calls  # type: ignore[attr-defined]
    return execute


class MapContract:
    """Map steps (``map:``) on a backend: items are step records ``X[i]`` applied like
    steps. Provide ``parts`` -> (store, runner); ``BackendContract`` includes this."""

    def _map_run(self, parts: tuple[Store, Runner], spec: dict[str, Any], n: int,
                 executor: Callable[[str, dict[str, Any]], dict[str, Any]]) -> Workflow:
        store, runner = parts
        backend = Backend(store=store, runner=runner, executor=executor, poll_interval=0.01)
        return Workflow.from_dict(spec, backend, inputs={"n": n})

    def test_map_outputs_are_the_items_outputs_in_order(
            self, parts: tuple[Store, Runner]) -> None:
        wf = self._map_run(parts, map_spec(), 25, map_executor())
        result = wf.run(timeout=120)
        assert isinstance(result, Complete), result
        assert result.outcome["all"] == [{"y": i * i, "i": i} for i in range(25)]
        assert result.outcome["total"] == sum(i * i for i in range(25))
        assert result.outcome["first"] == 0
        again = Backend(store=parts[0], runner=parts[1]).load(wf.id)  # from the store
        assert again.steps["each"].items == 25
        assert again.steps["each"].output == result.outcome["all"]
        items = [again.steps[f"each[{i}]"] for i in range(25)]
        assert all(s.status is StepStatus.COMPLETE and s.attempts == 1 for s in items)
        assert [s.inputs for s in items] == [{"x": i, "i": i} for i in range(25)]

    def test_map_over_an_empty_list_completes_with_an_empty_list(
            self, parts: tuple[Store, Runner]) -> None:
        executor = map_executor()
        wf = self._map_run(parts, map_spec(), 0, executor)
        result = wf.run(timeout=120)
        assert isinstance(result, Complete), result
        assert result.outcome == {"total": 0, "first": None, "all": []}
        assert executor.calls == {}  # type: ignore[attr-defined]

    def test_map_over_a_non_list_fails_the_step_naming_the_type(
            self, parts: tuple[Store, Runner]) -> None:
        spec = map_spec()
        spec["steps"][1]["map"] = {"var": "steps.ls.output"}  # an object
        wf = self._map_run(parts, spec, 3, map_executor())
        result = wf.run(timeout=120)
        assert isinstance(result, Failed), result
        error = result.outcome["error"]
        assert result.outcome["step"] == "each" and error["type"] == "MapError"
        assert "'each'" in error["message"] and "'map'" in error["message"]
        assert "got object" in error["message"]
        each = wf.record.steps["each"]  # a data error, as an input error: never ran
        assert each.status is StepStatus.FAILED and each.attempts == 0 and each.items is None

    @pytest.mark.parametrize("tolerate", [2, 0.2])
    def test_map_tolerates_item_failures(self, parts: tuple[Store, Runner],
                                         tolerate: int | float) -> None:
        wf = self._map_run(parts, map_spec(tolerate=tolerate), 10,
                           map_executor(lambda x, _: x in (3, 7)))
        result = wf.run(timeout=120)
        assert isinstance(result, Complete), result
        outputs = result.outcome["all"]
        assert [o.get("ok") is False for o in outputs] == [i in (3, 7) for i in range(10)]
        assert outputs[3]["error"] == "item 3 failed (call 1)"
        assert outputs[4] == {"y": 16, "i": 4}
        assert result.outcome["total"] == sum(i * i for i in range(10) if i not in (3, 7))

    @pytest.mark.parametrize("tolerate", [1, 0.1])
    def test_map_fails_past_its_tolerance(self, parts: tuple[Store, Runner],
                                          tolerate: int | float) -> None:
        wf = self._map_run(parts, map_spec(tolerate=tolerate, max_parallel=1), 10,
                           map_executor(lambda x, _: x in (3, 5, 7)))
        result = wf.run(timeout=120)
        assert isinstance(result, Failed), result
        error = result.outcome["error"]
        assert error["type"] == "MapFailed" and error["item"] == 3
        assert "2 of 10 items failed (tolerates 1)" in error["message"]
        record = wf.record
        assert record.steps["each"].status is StepStatus.FAILED
        assert record.steps["each[5]"].status is StepStatus.FAILED
        assert record.steps["each[6]"].status is StepStatus.SKIPPED  # never ran
        assert record.steps["total"].status is StepStatus.SKIPPED

    def test_map_retries_per_item(self, parts: tuple[Store, Runner]) -> None:
        executor = map_executor(lambda x, call: x == 2 and call < 3)
        wf = self._map_run(parts, map_spec(max_attempts=3), 5, executor)
        result = wf.run(timeout=120)
        assert isinstance(result, Complete), result
        assert result.outcome["all"] == [{"y": i * i, "i": i} for i in range(5)]
        assert executor.calls == {0: 1, 1: 1, 2: 3, 3: 1, 4: 1}  # type: ignore[attr-defined]
        record = wf.record
        assert record.steps["each[2]"].attempts == 3 and record.steps["each[2]"].run_id == 2
        assert record.steps["each[1]"].attempts == 1 and record.steps["each"].attempts == 1

    def _driven(self, parts: tuple[Store, Runner], spec: dict[str, Any], n: int
                ) -> tuple[Backend, str, list[DispatchJob]]:
        """A map execution driven by hand: ``ls`` applied, the first items claimed."""
        store, runner = parts
        backend = Backend(store=store, runner=runner)
        key = backend.create(spec, {"n": n})
        first = backend.advance(key)
        assert isinstance(first, Dispatch) and [j.step_id for j in first.jobs] == ["ls"]
        _, nxt = backend.apply_and_advance(key, [("ls", {"xs": list(range(n))},
                                                  first.jobs[0].run_id)], dispatch=False)
        assert isinstance(nxt, Dispatch)
        return backend, key, list(nxt.jobs)

    def test_map_max_parallel_bounds_items_in_progress(
            self, parts: tuple[Store, Runner]) -> None:
        backend, key, jobs = self._driven(parts, map_spec(max_parallel=3), 20)
        assert [j.step_id for j in jobs] == ["each[0]", "each[1]", "each[2]"]
        seen = [j.step_id for j in jobs]
        most = 0
        while jobs:
            job = jobs.pop(0)
            _, nxt = backend.apply_and_advance(
                key, [(job.step_id, {"y": job.inputs["x"] ** 2, "i": job.inputs["i"]},
                       job.run_id)], dispatch=False)
            record = backend.load(key)
            running = sum(record.steps[f"each[{i}]"].status is StepStatus.IN_PROGRESS
                          for i in range(20))
            most = max(most, running)
            assert running <= 3
            if isinstance(nxt, Dispatch):  # items only: "total" is left claimed
                claimed = [j for j in nxt.jobs if j.step_id != "total"]
                jobs.extend(claimed)
                seen.extend(j.step_id for j in claimed)
        assert most == 3
        assert seen == [f"each[{i}]" for i in range(20)]  # claimed once each, in order
        record = backend.load(key)
        assert record.steps["each"].status is StepStatus.COMPLETE
        assert record.steps["each"].output == [{"y": i * i, "i": i} for i in range(20)]
        assert record.steps["total"].status is StepStatus.IN_PROGRESS

    def test_map_item_results_with_a_stale_run_id_are_ignored(
            self, parts: tuple[Store, Runner]) -> None:
        spec = map_spec(max_attempts=2)
        backend, key, jobs = self._driven(parts, spec, 3)
        job = jobs[0]
        assert job.step_id == "each[0]" and job.run_id == 0 and job.inputs == {"x": 0, "i": 0}
        before = backend.load(key).version
        stale = backend.apply_results(key, [("each[0]", {"y": 99}, 7)])
        assert isinstance(stale[0], Ignored) and "run 7" in stale[0].reason
        assert backend.load(key).version == before  # nothing written
        # a failed attempt: retried with a new run id; the old run's result is stale
        backend.apply_results(key, [("each[0]", {"ok": False, "error": "boom"}, 0)])
        late = backend.apply_results(key, [("each[0]", {"y": 0, "i": 0}, 0)])
        assert isinstance(late[0], Ignored)
        retry = backend.advance(key)
        assert isinstance(retry, Dispatch) and [(j.step_id, j.run_id) for j in retry.jobs] \
            == [("each[0]", 1)]
        for step_id, x, run in (("each[0]", 0, 1), ("each[1]", 1, 0), ("each[2]", 2, 0)):
            done = backend.apply_results(key, [(step_id, {"y": x * x, "i": x}, run)])
            assert not isinstance(done[0], Ignored)
        again = backend.apply_results(key, [("each[2]", {"y": 4, "i": 2}, 0)])
        assert isinstance(again[0], Ignored)  # a duplicate
        assert backend.load(key).steps["each"].output == [{"y": x * x, "i": x}
                                                          for x in range(3)]

    def test_cancel_cancels_running_items_and_redrive_runs_the_map_again(
            self, parts: tuple[Store, Runner]) -> None:
        backend, key, _ = self._driven(parts, map_spec(max_parallel=2), 4)
        backend.apply_results(key, [("each[0]", {"y": 0, "i": 0}, 0)])
        backend.cancel(key, "test")
        record = backend.load(key)
        assert record.status is WorkflowStatus.CANCELLED
        assert record.steps["each[1]"].status is StepStatus.CANCELLED
        assert record.steps["each[3]"].status is StepStatus.SKIPPED
        late = backend.apply_results(key, [("each[1]", {"y": 1, "i": 1}, 0)])
        assert isinstance(late[0], Ignored)
        backend.executor = map_executor()
        assert "each" in backend.redrive(key, dispatch=False)
        result = Workflow.resume(key, backend).run(timeout=120)
        assert isinstance(result, Complete), result
        assert result.outcome["all"] == [{"y": i * i, "i": i} for i in range(4)]

    def test_large_item_outputs_and_the_assembled_list_go_by_reference(
            self, parts: tuple[Store, Runner]) -> None:
        """5 items of 300 KB each: every item output, and the map's output list as one
        value, are stored by reference where the store offloads (SQL by default, AWS,
        memory with a threshold); everyone downstream sees plain values."""
        from .payloads import encode, make_ref

        size = 300_000

        def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
            if fn == "ls":
                return {"xs": list(range(inputs["n"]))}
            if fn == "sq":
                return {"i": inputs["i"], "text": large_text(size, inputs["x"])}
            return {"total": sum(len(o["text"]) for o in inputs["ys"])}

        wf = self._map_run(parts, map_spec(), 5, execute)
        result = wf.run(timeout=300)
        assert isinstance(result, Complete), result
        assert result.outcome["total"] == 5 * size
        assert [o["text"] for o in result.outcome["all"]] == [large_text(size, i)
                                                            for i in range(5)]
        store = parts[0]
        offloader = store.payloads()
        if offloader is None or offloader.threshold is None or offloader.threshold >= size:
            return  # this store keeps values inline: passing through unchanged is the test
        record = Backend(store=store, runner=parts[1]).load(wf.id)
        listing = record.steps["each"].output
        assert listing == result.outcome["all"]
        assert make_ref(encode(listing))["$runfox_ref"] in offloader.store  # one value
        for i in range(5):
            item = record.steps[f"each[{i}]"].output  # packed per key: its text is the blob
            assert item is not None
            assert make_ref(encode(item["text"]))["$runfox_ref"] in offloader.store


def subworkflow_spec(max_attempts: int = 1, child_fn: str = "inc") -> dict[str, Any]:
    """A parent whose step ``a`` runs the sub-workflow ``child``, which runs ``grand``:
    a chain of depth 3. With ``subworkflow_executor`` and input ``x`` the outcome is
    ``{"v": x + 3}`` (one ``inc`` at each level). ``child_fn`` is the fn of the
    child's own step (``fail`` makes the child fail)."""
    grand = {"name": "grand", "inputs": {"x": {"type": "integer"}},
             "steps": [{"id": "g", "fn": "inc", "input": {"x": {"var": "input.x"}}}],
             "outputs": {"v": {"var": "steps.g.output.v"}}}
    child = {"name": "child", "inputs": {"x": {"type": "integer"}},
             "steps": [{"id": "c", "workflow": "grand", "input": {"x": {"var": "input.x"}}},
                       {"id": "d", "fn": child_fn,
                        "input": {"x": {"var": "steps.c.output.v"}}}],
             "outputs": {"v": {"var": "steps.d.output.v"}}}
    return {"name": "parent",
            "steps": [{"id": "a", "workflow": "child", "max_attempts": max_attempts,
                       "input": {"x": {"var": "input.x"}}},
                      {"id": "b", "fn": "inc", "input": {"x": {"var": "steps.a.output.v"}}}],
            "outputs": {"v": {"var": "steps.b.output.v"}},
            "workflows": {"child": child, "grand": grand}}


class SubworkflowExecutor:
    """``inc`` returns ``{"v": x + 1}``; ``fail`` fails its attempt (``ok: false``)
    the first ``failures`` times it is called, then acts as ``inc``; ``inc`` fails
    every attempt whose ``x`` is in ``bad``. Thread-safe."""

    def __init__(self, failures: int = 0, bad: Iterable[int] = ()) -> None:
        self.failures = failures
        self.bad = frozenset(bad)
        self._lock = threading.Lock()

    def __call__(self, fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "fail":
            with self._lock:
                self.failures -= 1
                failing = self.failures >= 0
            if failing:
                return {"ok": False, "error": "told to fail"}
        elif fn != "inc":
            raise ValueError(f"unknown fn {fn!r}")
        elif inputs["x"] in self.bad:
            return {"ok": False, "error": f"x={inputs['x']} is bad"}
        return {"v": inputs["x"] + 1}


def map_subworkflow_spec(xs: list[int], tolerate: int | None = None) -> dict[str, Any]:
    """A parent whose map step ``a`` runs the sub-workflow ``child`` once per item of
    ``xs`` (the child's one step is ``inc``); outcome ``all`` is the map's output, so
    with ``SubworkflowExecutor`` it is ``[{"v": x + 1} for x in xs]``."""
    child = {"name": "child", "inputs": {"x": {"type": "integer"}},
             "steps": [{"id": "c", "fn": "inc", "input": {"x": {"var": "input.x"}}}],
             "outputs": {"v": {"var": "steps.c.output.v"}}}
    step: dict[str, Any] = {"id": "a", "workflow": "child", "map": {"var": "input.xs"},
                            "input": {"x": {"var": "item"}}}
    if tolerate is not None:
        step["tolerate"] = tolerate
    return {"name": "map-parent", "steps": [step], "outputs": {"all": {"var": "steps.a.output"}},
            "workflows": {"child": child}}


class SubWorkflowContract:
    """Sub-workflows (``workflow:`` steps) over a store and runner; part of
    ``BackendContract``. Provide ``parts`` -> (store, runner)."""

    def _backend(self, parts: tuple[Store, Runner], executor: Any = None) -> Backend:
        store, runner = parts
        return Backend(store=store, runner=runner, executor=executor, poll_interval=0.01)

    def test_a_chain_of_depth_three_completes_and_records_its_children(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts, SubworkflowExecutor())
        wf = Workflow.from_dict(subworkflow_spec(), backend, inputs={"x": 1})
        result = wf.run(timeout=120)
        assert isinstance(result, Complete) and result.outcome == {"v": 4}
        again = Backend(store=parts[0], runner=parts[1])  # from the store, not a cache
        parent = again.load(wf.id)
        child_key = parent.steps["a"].child
        assert child_key is not None and parent.steps["a"].output == {"v": 3}
        assert parent.steps["b"].child is None and parent.parent is None
        child = again.load(child_key)
        assert child.status is WorkflowStatus.COMPLETE and child.inputs == {"x": 1}
        assert child.parent == {"execution": wf.id, "step": "a", "run_id": 0, "depth": 1}
        grand = again.load(child.steps["c"].child or "")
        assert grand.parent == {"execution": child_key, "step": "c", "run_id": 0, "depth": 2}
        assert grand.outcome == {"v": 2} and child.outcome == {"v": 3}

    def test_a_failing_child_fails_the_step_and_a_retry_runs_a_new_child(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts, SubworkflowExecutor(failures=1))
        wf = Workflow.from_dict(subworkflow_spec(max_attempts=2, child_fn="fail"), backend,
                                inputs={"x": 1})
        result = wf.run(timeout=120)
        assert isinstance(result, Complete) and result.outcome == {"v": 4}
        step = wf.record.steps["a"]
        assert step.attempts == 2 and step.run_id == 1
        from .backend.children import child_key
        first = child_key(wf.record, "a", 0, "child")
        assert first != step.child
        assert backend.load(first).status is WorkflowStatus.FAILED
        assert backend.load(step.child or "").status is WorkflowStatus.COMPLETE

    def test_a_child_that_fails_for_good_fails_the_parent(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts, SubworkflowExecutor(failures=5))
        wf = Workflow.from_dict(subworkflow_spec(child_fn="fail"), backend, inputs={"x": 1})
        result = wf.run(timeout=120)
        assert isinstance(result, Failed)
        error = result.outcome["error"]
        step = wf.record.steps["a"]
        assert result.outcome["step"] == "a" and error["type"] == "ChildFailed"
        assert step.child is not None and step.child in error["message"]
        assert "'d'" in error["message"] and "told to fail" in error["message"]
        assert step.output is not None and step.output["child"] == step.child

    def test_cancelling_the_parent_cancels_its_children(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts)  # no executor: the grandchild's job stays queued
        wf = Workflow.from_dict(subworkflow_spec(), backend, inputs={"x": 1})
        backend.apply_and_advance(wf.id)
        child_key = wf.record.steps["a"].child or ""
        grand_key = backend.load(child_key).steps["c"].child or ""
        assert backend.load(grand_key).steps["g"].status is StepStatus.IN_PROGRESS
        wf.cancel("stop")
        for key in (wf.id, child_key, grand_key):
            assert backend.load(key).status is WorkflowStatus.CANCELLED, key
        assert wf.record.steps["a"].status is StepStatus.CANCELLED
        # a late result of the grandchild's job changes nothing
        backend.apply_and_advance(grand_key, [("g", {"v": 2}, 0)])
        assert backend.load(grand_key).status is WorkflowStatus.CANCELLED
        assert backend.load(wf.id).status is WorkflowStatus.CANCELLED

    def test_a_static_name_missing_from_workflows_is_a_compile_error(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts, SubworkflowExecutor())
        spec = subworkflow_spec()
        del spec["workflows"]["grand"]
        with pytest.raises(SpecError, match=r"workflows\['child'\]\.steps\[0\] 'c'\.workflow: "
                                            r"unknown workflow 'grand' \(known: 'child'\)"):
            Workflow.from_dict(spec, backend, inputs={"x": 1})
        assert parts[0].list_executions() == []

    def test_a_cycle_of_subworkflows_is_refused_with_its_chain(
            self, parts: tuple[Store, Runner]) -> None:
        spec = subworkflow_spec()
        spec["workflows"]["grand"]["steps"][0] = {"id": "g", "workflow": "child",
                                                  "input": {"x": {"var": "input.x"}}}
        with pytest.raises(SpecError, match="parent -> child -> grand -> child"):
            Workflow.from_dict(spec, self._backend(parts))
        assert parts[0].list_executions() == []

    def test_a_dynamic_name_that_is_unknown_fails_the_step_without_retries(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts, SubworkflowExecutor())
        spec = subworkflow_spec(max_attempts=3)
        spec["steps"][0]["workflow"] = {"var": "input.which"}
        spec["steps"][0]["input"] = {"x": 1}
        wf = Workflow.from_dict(spec, backend, inputs={"which": "child"})
        assert wf.run(timeout=120) == Complete({"v": 4})
        wf = Workflow.from_dict(spec, backend, inputs={"which": "ghost"})
        result = wf.run(timeout=120)
        assert isinstance(result, Failed)
        step = wf.record.steps["a"]
        assert step.attempts == 1 and step.child is None
        assert step.error is not None and step.error["type"] == "UnknownWorkflow"
        assert "'ghost'" in step.error["message"] and "'child'" in step.error["message"]

    def test_a_sweep_repairs_a_crash_on_either_side_of_a_child(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts, SubworkflowExecutor())
        wf = Workflow.from_dict(subworkflow_spec(), backend, inputs={"x": 1})
        backend.advance(wf.id)  # claimed (the child's key recorded), then the process died
        child_key = wf.record.steps["a"].child or ""
        with pytest.raises(WorkflowNotFound):
            backend.load(child_key)
        backend.redispatch_stale(wf.id, 0.0)  # the sweep creates the missing child
        assert backend.load(child_key).status is WorkflowStatus.IN_PROGRESS
        # The child runs to its end, but the process dies before the parent hears of it.
        silent = self._backend(parts, SubworkflowExecutor())
        report = silent._children.report

        def lost(child: WorkflowRecord) -> None:  # reports to the top parent are lost
            if (child.parent or {}).get("execution") != wf.id:
                report(child)

        silent._children.report = lost  # type: ignore[method-assign]
        assert isinstance(Workflow(child_key, silent).run(timeout=120), Complete)
        assert wf.record.steps["a"].status is StepStatus.IN_PROGRESS
        backend.redispatch_stale(wf.id, 0.0)  # the sweep finds the ended child
        assert wf.record.steps["a"].output == {"v": 3}
        assert wf.run(timeout=120) == Complete({"v": 4})


    # -- a map over a workflow step: one child per item ------------------------------

    def test_a_map_over_a_workflow_step_runs_one_child_per_item(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts, SubworkflowExecutor())
        xs = [10, 11, 12, 13, 14]
        wf = Workflow.from_dict(map_subworkflow_spec(xs), backend, inputs={"xs": xs})
        result = wf.run(timeout=120)
        assert isinstance(result, Complete), result
        assert result.outcome == {"all": [{"v": x + 1} for x in xs]}  # item order
        again = Backend(store=parts[0], runner=parts[1])  # from the store, not a cache
        parent = again.load(wf.id)
        assert parent.steps["a"].items == 5 and parent.steps["a"].child is None
        keys = [parent.steps[f"a[{i}]"].child for i in range(5)]
        assert all(keys) and len(set(keys)) == 5
        for i, key in enumerate(keys):
            child = again.load(key or "")
            assert child.status is WorkflowStatus.COMPLETE and child.inputs == {"x": xs[i]}
            assert child.parent == {"execution": wf.id, "step": f"a[{i}]", "run_id": 0,
                                    "depth": 1}

    @pytest.mark.parametrize("tolerate", [1, 0])
    def test_a_failing_child_item_counts_against_tolerate(
            self, parts: tuple[Store, Runner], tolerate: int) -> None:
        backend = self._backend(parts, SubworkflowExecutor(bad=[12]))
        xs = [10, 11, 12, 13, 14]
        wf = Workflow.from_dict(map_subworkflow_spec(xs, tolerate=tolerate), backend,
                                inputs={"xs": xs})
        result = wf.run(timeout=120)
        item = wf.record.steps["a[2]"]
        assert item.status is StepStatus.FAILED and item.error is not None
        assert item.error["type"] == "ChildFailed" and "x=12 is bad" in item.error["message"]
        assert backend.load(item.child or "").status is WorkflowStatus.FAILED
        if tolerate:
            assert isinstance(result, Complete), result
            outputs = result.outcome["all"]
            assert [o.get("ok") is False for o in outputs] == [x == 12 for x in xs]
            assert outputs[2]["child"] == item.child and outputs[3] == {"v": 14}
        else:
            assert isinstance(result, Failed), result
            error = result.outcome["error"]
            assert error["type"] == "MapFailed" and error["item"] == 2

    def test_an_unknown_dynamic_name_fails_each_item_against_tolerate(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts, SubworkflowExecutor())
        spec = map_subworkflow_spec([1, 2, 3], tolerate=3)
        spec["steps"][0]["workflow"] = {"var": "input.which"}
        spec["steps"][0]["max_parallel"] = 1
        wf = Workflow.from_dict(spec, backend, inputs={"xs": [1, 2, 3], "which": "ghost"})
        result = wf.run(timeout=120)
        assert isinstance(result, Complete), result  # three failures, three tolerated
        assert [o["error_type"] for o in result.outcome["all"]] == ["UnknownWorkflow"] * 3
        assert "'ghost'" in result.outcome["all"][0]["error"]
        spec["steps"][0]["tolerate"] = 0
        wf = Workflow.from_dict(spec, backend, inputs={"xs": [1, 2, 3], "which": "ghost"})
        result = wf.run(timeout=120)
        assert isinstance(result, Failed) and result.outcome["step"] == "a", result
        assert result.outcome["error"]["type"] == "MapFailed"
        record = wf.record
        assert record.steps["a[0]"].attempts == 1 and record.steps["a[0]"].child is None
        assert record.steps["a[1]"].status is StepStatus.SKIPPED

    def test_cancelling_the_parent_cancels_the_item_children(
            self, parts: tuple[Store, Runner]) -> None:
        backend = self._backend(parts)  # no executor: every child's job stays queued
        xs = [1, 2, 3, 4, 5]
        wf = Workflow.from_dict(map_subworkflow_spec(xs), backend, inputs={"xs": xs})
        backend.apply_and_advance(wf.id)
        record = wf.record
        keys = [record.steps[f"a[{i}]"].child or "" for i in range(5)]
        for key in keys:
            assert backend.load(key).steps["c"].status is StepStatus.IN_PROGRESS, key
        wf.cancel("stop")
        for key in keys:
            assert backend.load(key).status is WorkflowStatus.CANCELLED, key
        record = wf.record
        assert record.steps["a[0]"].status is StepStatus.CANCELLED
        backend.apply_and_advance(keys[0], [("c", {"v": 2}, 0)])  # a late result
        assert backend.load(keys[0]).status is WorkflowStatus.CANCELLED
        assert backend.load(wf.id).status is WorkflowStatus.CANCELLED


class BackendContract(MapContract, SubWorkflowContract):
    """Whole workflows over a store and runner. Provide ``parts`` -> (store, runner)."""

    def test_runs_a_fan_out_to_completion(self, parts: tuple[Store, Runner]) -> None:
        store, runner = parts
        backend = Backend(store=store, runner=runner, executor=fan_executor,
                          poll_interval=0.01)
        wf = Workflow.from_dict(fan_spec(12), backend, inputs={"n": 5})
        result = wf.run(timeout=120)
        assert isinstance(result, Complete)
        assert result.outcome == {"total": 5 * sum(range(12))}
        again = Workflow.resume(wf.id, Backend(store=store, runner=runner))
        assert again.status is WorkflowStatus.COMPLETE
        assert set(again.step_statuses.values()) == {StepStatus.COMPLETE}

    def test_start_stores_the_execution_with_its_first_jobs_queued(
            self, parts: tuple[Store, Runner]) -> None:
        store, runner = parts
        backend = Backend(store=store, runner=runner)
        wf_id = backend.start(fan_spec(3), {"n": 2})
        record = backend.load(wf_id)
        assert record.version >= 1 and record.steps["root"].status is StepStatus.IN_PROGRESS
        assert record.steps["leaf0"].status is StepStatus.READY
        (root,) = [j for j in runner.take_pending_jobs(lease=30.0)
                   if j.workflow_execution_id == wf_id]
        assert (root.step_id, root.inputs, root.run_id) == (
            "root", {"n": 2}, record.steps["root"].run_id)
        if store.keeps_history:
            assert [(e.type, e.step_id) for e in backend.history(wf_id)][:2] == [
                ("created", None), ("claimed", "root")]
        # With an idempotency key the second start returns the first execution
        # and dispatches nothing more.
        keyed = backend.start(fan_spec(3), {"n": 2}, key="start-once")
        assert backend.start(fan_spec(3), {"n": 3}, key="start-once") == keyed
        (first,) = [j for j in runner.take_pending_jobs(lease=30.0)
                    if j.workflow_execution_id == keyed]
        assert first.step_id == "root"
        assert runner.take_pending_jobs(lease=30.0) == []
        # Then it runs like any execution.
        runner.release(first)
        done = Backend(store=store, runner=runner, executor=fan_executor, poll_interval=0.01)
        assert isinstance(Workflow.resume(keyed, done).run(timeout=120), Complete)

    def test_submit_checks_at_once_and_a_worker_starts_and_runs_it(
            self, parts: tuple[Store, Runner], caplog: pytest.LogCaptureFixture) -> None:
        # ``submit`` checks the spec and inputs before it returns. Where the store
        # and the runner share a unit of work it queues one start job and the
        # execution appears when a worker takes it; elsewhere it is ``start``.
        # Either way a worker runs it to its end, and a start job delivered again
        # makes no second execution and queues nothing more.
        from .backend.base import SUBMITTED_FN, SUBMITTED_STEP
        from .worker import Worker

        store, runner = parts
        backend = Backend(store=store, runner=runner)
        before = runner.list_pending_jobs()
        with pytest.raises(SpecError, match="steps"):
            backend.submit({"name": "bad", "steps": [{"id": "a b", "fn": "f"}]})
        with pytest.raises(SpecError, match="inputs"):
            backend.submit(fan_spec(2), ["not", "a", "mapping"])  # type: ignore[arg-type]
        assert runner.list_pending_jobs() == before
        # A start job that cannot become an execution is logged and dropped: one
        # whose spec is not an object, one whose key names another spec.
        other = new_execution_id()
        bad = [DispatchJob(f"w#{other}", SUBMITTED_STEP, SUBMITTED_FN,
                           {"spec": "nope", "inputs": {}, "created_at": 1.0}),
               DispatchJob(f"w#{other}x", SUBMITTED_STEP, SUBMITTED_FN,
                           {"spec": fan_spec(1), "inputs": {"n": 1}, "created_at": 1.0})]
        for job in bad:
            runner.dispatch(job.workflow_execution_id, [job])
        with caplog.at_level("ERROR", logger="runfox.backend"):
            assert [j for j in backend.take_pending_jobs()
                    if j.workflow_execution_id.startswith("w#")] == []
        assert [j for j in runner.list_pending_jobs()
                if j.workflow_execution_id.startswith("w#")] == []
        assert all(any(job.key in r.getMessage() and "dropped" in r.getMessage()
                       for r in caplog.records) for job in bad)
        with pytest.raises(WorkflowNotFound):
            backend.load(bad[1].workflow_execution_id)
        # A start job made by hand is started on every backend (in one unit where
        # the store and the runner share one, else as ``start`` does it), once.
        plan = load_spec(fan_spec(1))
        made = DispatchJob(f"{plan.workflow_id}#{other}", SUBMITTED_STEP, SUBMITTED_FN,
                           {"spec": plan.raw, "inputs": {"n": 4}, "created_at": 1.0})
        got = backend.start_submitted([made], limit=1)
        if store.unit_with(runner) is not None:  # its first job taken in the unit
            (root,) = got
            assert (root.workflow_execution_id, root.step_id, root.inputs) == (
                made.workflow_execution_id, "root", {"n": 4})
            runner.release(root)
        else:  # queued, as ``start`` queues it
            assert got == []
        assert backend.load(made.workflow_execution_id).created_at == 1.0
        version = backend.load(made.workflow_execution_id).version
        assert backend.start_submitted([made], limit=1) == []
        assert backend.load(made.workflow_execution_id).version == version
        assert [j.step_id for j in backend.take_pending_jobs()
                if j.workflow_execution_id == made.workflow_execution_id] == ["root"]
        ids = [backend.submit(fan_spec(3), {"n": n}) for n in (1, 2)]
        queued = store.unit_with(runner) is not None
        starts = [j for j in runner.list_pending_jobs() if j.workflow_execution_id in ids]
        if queued:
            assert sorted((j.workflow_execution_id, j.step_id, j.fn) for j in starts) == sorted(
                (wf_id, SUBMITTED_STEP, SUBMITTED_FN) for wf_id in ids)
            with pytest.raises(WorkflowNotFound):
                backend.load(ids[0])
            queued_state = backend.queued_start(ids[0])
            assert queued_state is not None and queued_state.state == "queued"
        else:
            assert {j.step_id for j in starts} == {"root"}
            assert backend.load(ids[0]).steps["root"].status is StepStatus.IN_PROGRESS
        stats = Worker(backend, fan_executor, lease=5.0, poll_interval=0.01,
                       concurrency=4).run(idle_timeout=0.5)
        assert stats.started == (2 if queued else 0)
        assert stats.jobs == 2 * 5  # root, three leaves, sink: no start job ran as a step
        for n, wf_id in zip((1, 2), ids, strict=True):
            assert backend.queued_start(wf_id) is None
            record = backend.load(wf_id)
            assert record.status is WorkflowStatus.COMPLETE, record.status
            assert record.outcome == {"total": n * sum(range(3))}
            assert record.workflow_execution_id == wf_id
        if not queued:
            return
        if store.keeps_history:
            assert [(e.type, e.step_id) for e in backend.history(ids[0])][:2] == [
                ("created", None), ("claimed", "root")]
        done = backend.load(ids[0]).version
        assert backend.start_submitted([starts[0]], limit=4) == []
        assert backend.load(ids[0]).version == done
        assert [j for j in runner.list_pending_jobs() if j.workflow_execution_id in ids] == []
        # A caller taking jobs by hand never gets a start job: it gets the first
        # jobs of the executions they stand for.
        third = backend.submit(fan_spec(3), {"n": 3})
        (root,) = [j for j in backend.take_pending_jobs()
                   if j.workflow_execution_id == third]
        assert (root.step_id, root.inputs) == ("root", {"n": 3})
        assert backend.load(third).steps["root"].status is StepStatus.IN_PROGRESS

    def test_results_of_several_executions_apply_together(
            self, parts: tuple[Store, Runner]) -> None:
        # A worker holding several finished jobs records them with one call
        # (Backend.apply_and_take_many): one unit of work where the store and the
        # runner share one; elsewhere every group is left to the caller, who
        # applies it alone. Either way each result is applied once, its job is
        # acknowledged, and what it made ready is queued.
        store, runner = parts
        backend = Backend(store=store, runner=runner)
        one = {"steps": [{"id": "s", "fn": "inc", "input": {"x": {"var": "input.x"}}}],
               "outputs": {"x": {"var": "steps.s.output.x"}}}
        singles = [backend.start(one, {"x": i}) for i in range(4)]
        fan = backend.start(fan_spec(2), {"n": 3})
        mine = set(singles) | {fan}
        jobs: list[DispatchJob] = []
        deadline = time.monotonic() + 30
        while len(jobs) < 5 and time.monotonic() < deadline:
            jobs += [j for j in runner.take_pending_jobs(limit=10, lease=60.0)
                     if j.workflow_execution_id in mine]
        assert sorted(j.step_id for j in jobs) == ["root", "s", "s", "s", "s"]
        outputs = {j.key: ({"x": j.inputs["x"] + 1} if j.step_id == "s" else {"n": 3})
                   for j in jobs}
        groups = [(j.workflow_execution_id, [(j.step_id, outputs[j.key], j.run_id)], [j])
                  for j in jobs]
        done, taken = backend.apply_and_take_many(groups, limit=0, lease=60.0)
        assert len(done) == len(groups) and taken == []
        together = store.unit_with(runner) is not None
        assert all((outcome is not None) is together for outcome in done)
        for group, outcome in zip(groups, done, strict=True):
            if outcome is None:
                (job,) = group[2]
                backend.apply_and_take(group[0], group[1], limit=0, lease=60.0, ack=job)
        for i, wf_id in enumerate(singles):
            record = backend.load(wf_id)
            assert record.status is WorkflowStatus.COMPLETE and record.outcome == {"x": i + 1}
        record = backend.load(fan)
        assert record.steps["root"].status is StepStatus.COMPLETE
        assert {record.steps[f"leaf{i}"].status for i in range(2)} == {StepStatus.IN_PROGRESS}
        leaves: list[DispatchJob] = []
        deadline = time.monotonic() + 30
        while len(leaves) < 2 and time.monotonic() < deadline:
            leaves += [j for j in runner.take_pending_jobs(limit=10, lease=60.0)
                       if j.workflow_execution_id == fan]
        assert sorted(j.step_id for j in leaves) == ["leaf0", "leaf1"]
        # Applied once: the same results again change nothing.
        again, _ = backend.apply_and_take_many(groups[:1], limit=0, lease=60.0)
        assert again == [None] and backend.load(singles[0]).outcome == {"x": 1}

    def test_retries_then_halts_on_a_branch(self, parts: tuple[Store, Runner]) -> None:
        store, runner = parts
        calls: dict[str, int] = {}

        def flaky(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
            calls[fn] = calls.get(fn, 0) + 1
            if fn == "flaky" and calls[fn] < 3:
                raise ConnectionError("transient")
            return {"score": inputs["score"]}

        spec = {"steps": [
            {"id": "a", "fn": "flaky", "max_attempts": 3, "input": {"score": 0.9}},
            {"id": "b", "fn": "judge", "depends_on": ["a"],
             "input": {"score": {"var": "steps.a.output.score"}},
             "branch": [{"condition": {">": [{"var": "score"}, 0.5]}, "action": "halt",
                         "result": {"status": "rejected", "score": {"var": "score"}}}]},
            {"id": "c", "fn": "never", "depends_on": ["b"]},
        ]}
        backend = Backend(store=store, runner=runner, executor=flaky, poll_interval=0.01)
        wf = Workflow.from_dict(spec, backend)
        result = wf.run(timeout=120)
        assert isinstance(result, Halt)
        assert result.result == {"status": "rejected", "score": 0.9}
        assert calls == {"flaky": 3, "judge": 1}
        record = wf.record
        assert record.steps["a"].attempts == 3 and record.steps["a"].run_id == 2
        assert record.steps["c"].status is StepStatus.SKIPPED

    # -- inspection, targets, invalidation, redrive --------------------------------------

    def _chain_fan(self, parts: tuple[Store, Runner], **options: Any
                   ) -> tuple[Workflow, CountingExecutor]:
        store, runner = parts
        counter = CountingExecutor()
        backend = Backend(store=store, runner=runner, executor=counter, poll_interval=0.01,
                          **options)
        return Workflow.from_dict(chain_fan_spec(), backend, inputs={"x": 0}), counter

    def test_steps_keep_the_inputs_they_ran_with(self, parts: tuple[Store, Runner]) -> None:
        wf, _ = self._chain_fan(parts)
        assert wf.step_inputs("b") is None
        assert isinstance(wf.run(timeout=120), Complete)
        assert wf.step_inputs("a") == {"x": 0} and wf.step_output("a") == {"v": 1}
        assert wf.step_inputs("e") == {"x": 3, "k": 2} and wf.step_output("e") == {"v": 5}
        again = Backend(store=parts[0], runner=parts[1])  # from the store, not a cache
        assert again.load(wf.id).steps["d"].inputs == {"x": 3, "k": 1}
        with pytest.raises(UnknownStepError, match="ghost"):
            wf.step_inputs("ghost")

    def test_invalidate_reruns_exactly_what_it_invalidates(
            self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._chain_fan(parts)
        assert isinstance(wf.run(timeout=120), Complete)
        counter.take()
        before = wf.record
        assert wf.what_invalidates("b") == ["b", "c", "d", "e", "f"]
        assert wf.what_invalidates("e") == ["e"]
        with pytest.raises(UnknownStepError, match="ghost"):
            wf.invalidate("ghost")
        assert wf.record.version == before.version  # nothing written
        assert wf.invalidate("b") == ["b", "c", "d", "e", "f"]
        record = wf.record
        assert record.status is WorkflowStatus.IN_PROGRESS and record.outcome is None
        assert record.steps["a"] == before.steps["a"]
        assert record.steps["c"].output is None
        assert record.steps["b"].run_id == before.steps["b"].run_id + 1
        result = wf.run(timeout=120)
        assert isinstance(result, Complete) and result.outcome == {"d": 4, "e": 5, "f": 6}
        assert counter.take() == {"b": 1, "c": 1, "d": 1, "e": 1, "f": 1}
        assert wf.invalidate("e") == ["e"]
        assert isinstance(wf.run(timeout=120), Complete)
        assert counter.take() == {"e": 1}

    def test_reset_step_on_a_complete_execution_runs_again(
            self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._chain_fan(parts)
        assert isinstance(wf.run(timeout=120), Complete)
        counter.take()
        wf.backend.reset_step(wf.id, "c")
        assert wf.status is WorkflowStatus.IN_PROGRESS
        assert isinstance(wf.run(timeout=120), Complete)
        assert counter.take() == {"c": 1, "d": 1, "e": 1, "f": 1}

    def test_redrive_reruns_only_what_did_not_complete(
            self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._chain_fan(parts)
        counter.failing.add("e")
        assert isinstance(wf.run(timeout=120), Failed)
        failed = wf.record
        open_steps = [s.id for s in failed.steps.values()
                      if s.status is not StepStatus.COMPLETE]
        assert "e" in open_steps and "a" not in open_steps
        counter.failing.clear()
        counter.take()
        assert wf.redrive() == open_steps
        record = wf.record
        assert record.steps["e"].run_id == failed.steps["e"].run_id + 1
        assert record.steps["e"].attempts <= 1  # reset, maybe claimed again
        result = wf.run(timeout=120)
        assert isinstance(result, Complete) and result.outcome == {"d": 4, "e": 5, "f": 6}
        assert counter.take() == dict.fromkeys(open_steps, 1)
        version = wf.record.version
        with pytest.raises(ExecutionStateError, match="complete"):
            wf.redrive()
        assert wf.record.version == version

    def test_redrive_of_a_running_execution_is_refused(
            self, parts: tuple[Store, Runner]) -> None:
        wf, _ = self._chain_fan(parts)
        wf.advance()
        version = wf.record.version
        with pytest.raises(ExecutionStateError, match="in_progress"):
            wf.redrive()
        assert wf.record.version == version

    def test_two_redrives_at_once_are_one(self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._chain_fan(parts)
        counter.failing.add("c")
        assert isinstance(wf.run(timeout=120), Failed)
        counter.failing.clear()
        failed = wf.record
        barrier = threading.Barrier(2, timeout=10)
        waited = threading.local()

        def clock() -> float:  # both transitions load the failed record before either writes
            if not getattr(waited, "done", False):
                waited.done = True
                barrier.wait()
            return time.time()

        answers: list[list[str]] = []
        errors: list[BaseException] = []

        def redrive() -> None:
            try:
                backend = Backend(store=parts[0], runner=parts[1], clock=clock)
                answers.append(backend.redrive(wf.id))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=redrive) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert answers[0] == answers[1] == ["c", "d", "e", "f"]
        record = wf.record
        assert record.version == failed.version + 1  # one write
        assert record.steps["c"].run_id == failed.steps["c"].run_id + 1
        assert isinstance(wf.run(timeout=120), Complete)

    def test_targets_run_only_what_they_need(self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._chain_fan(parts)
        with pytest.raises(UnknownStepError, match="ghost"):
            wf.run(targets=["ghost"], timeout=120)
        result = wf.run(targets=["d"], timeout=120)
        assert isinstance(result, Complete)
        assert result.outcome == {"d": 4, "e": None, "f": None}
        assert counter.take() == {"a": 1, "b": 1, "c": 1, "d": 1}
        record = wf.record
        assert record.steps["e"].status is StepStatus.SKIPPED
        assert (record.steps["e"].error or {}).get("type") == "NotTargeted"
        assert wf.invalidate("a") == ["a", "b", "c", "d"]  # e and f stay skipped
        assert isinstance(wf.run(timeout=120), Complete)
        assert counter.take() == {"a": 1, "b": 1, "c": 1, "d": 1}

    # -- history (runfox.history) ------------------------------------------------------

    @staticmethod
    def _history_backend(parts: tuple[Store, Runner], clock: FakeClock) -> Backend:
        store, runner = parts
        if not store.keeps_history:
            pytest.skip(f"{type(store).__name__} keeps no history")
        return Backend(store=store, runner=runner, clock=clock, poll_interval=0.01)

    @staticmethod
    def _steps_of(events: list[Event]) -> list[tuple[Any, ...]]:
        return [(e.type, e.step_id, e.run_id, e.attempt) for e in events]

    def test_history_of_a_step_that_fails_once_then_succeeds(
            self, parts: tuple[Store, Runner]) -> None:
        clock = FakeClock()
        backend = self._history_backend(parts, clock)
        seen: list[Event] = []
        backend.subscribe(seen.append)
        wf_id = backend.create({"name": "flaky", "steps": [
            {"id": "a", "fn": "work", "max_attempts": 2}]})
        backend.advance(wf_id)
        clock.now += 1
        backend.apply_and_advance(
            wf_id, [("a", {"ok": False, "error": "boom", "error_type": "ValueError"}, 0)],
            worker="w1")
        clock.now += 2
        timing = {"started_at": clock.now - 0.5, "duration": 0.25, "worker": "w2"}
        backend.apply_and_advance(wf_id, [("a", {"x": 1}, 1, timing)])
        history = Workflow.resume(wf_id, backend).history()
        t0 = EPOCH_2030
        assert self._steps_of(history) == [
            ("created", None, None, None),
            ("claimed", "a", 0, 1),
            ("failed", "a", 0, 1),
            ("retry_scheduled", "a", 1, 2),
            ("claimed", "a", 1, 2),
            ("started", "a", 1, 2),
            ("completed", "a", 1, 2),
            ("workflow_ended", None, None, None),
        ]
        created, _claimed, failed, retry, again, started, completed, ended = history
        assert created.details == {"name": "flaky"} and created.time == t0
        assert failed.details == {"error_type": "ValueError", "message": "boom",
                                  "worker": "w1", "final": False}
        assert again.details == {"by": "w1"} and again.time == t0 + 1
        assert retry.details == {"at": t0 + 1}
        assert started.time == t0 + 2.5 and started.details == {"worker": "w2"}
        assert completed.details == {"run_time": 2.0, "duration": 0.25, "queued": 1.5,
                                     "worker": "w2"}
        assert ended.details == {"status": "complete"} and ended.time == t0 + 3
        assert [e.seq for e in history] == sorted({e.seq for e in history})
        assert [e.to_dict() for e in seen] == [e.to_dict() for e in history]
        assert [Event.from_dict(json.loads(json.dumps(e.to_dict()))) for e in history] == history

    def test_history_of_halt_skip_and_cancel(self, parts: tuple[Store, Runner]) -> None:
        clock = FakeClock()
        backend = self._history_backend(parts, clock)
        spec = {"steps": [
            {"id": "a", "fn": "judge",
             "branch": [{"condition": True, "action": "halt", "result": {"why": "done"}}]},
            {"id": "b", "fn": "later", "depends_on": ["a"]},
            {"id": "c", "fn": "beside"},
        ]}
        halted = backend.create(spec)
        backend.advance(halted)
        backend.apply_and_advance(halted, [("a", {"v": 1}, 0)])
        assert self._steps_of(backend.history(halted)[3:]) == [
            ("completed", "a", 0, 1), ("halted", "a", 0, 1), ("skipped", "b", 0, 0),
            ("cancelled", "c", 0, 1), ("workflow_ended", None, None, None)]
        assert backend.history(halted)[-1].details == {"status": "halted"}
        cancelled = backend.create(spec)
        backend.advance(cancelled)
        backend.cancel(cancelled, "enough")
        assert self._steps_of(backend.history(cancelled)[3:]) == [
            ("cancelled", "a", 0, 1), ("skipped", "b", 0, 0), ("cancelled", "c", 0, 1),
            ("workflow_ended", None, None, None)]
        assert backend.history(cancelled)[-1].details == {"status": "cancelled",
                                                          "reason": "enough"}

    def test_subscribers_filter_and_survive_errors(self, parts: tuple[Store, Runner]) -> None:
        backend = self._history_backend(parts, FakeClock())
        ended: list[Event] = []

        def broken(event: Event) -> None:
            raise RuntimeError("observer bug")

        backend.subscribe(broken)
        stop = backend.subscribe(ended.append, events=["workflow_ended"])
        wf_id = backend.create({"steps": [{"id": "a", "fn": "f"}]})
        backend.advance(wf_id)
        backend.apply_and_advance(wf_id, [("a", {}, 0)])
        assert [e.type for e in ended] == ["workflow_ended"]
        stop()
        stop()
        again = backend.create({"steps": [{"id": "a", "fn": "f"}]})
        backend.advance(again)
        backend.apply_and_advance(again, [("a", {}, 0)])
        assert len(ended) == 1

    def test_prune_removes_old_finished_executions_and_nothing_else(
            self, parts: tuple[Store, Runner]) -> None:
        clock = FakeClock()
        backend = self._history_backend(parts, clock)
        spec = {"steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "g", "depends_on": ["a"]}]}

        def finished(output: dict[str, Any] | None = None) -> str:
            wf_id = backend.create(spec)
            backend.advance(wf_id)
            backend.apply_and_advance(wf_id, [("a", {}, 0)])
            backend.apply_and_advance(wf_id, [("b", output or {}, 0)])
            return wf_id

        old = [finished(), finished()]
        old_failed = finished({"ok": False, "error": "no"})
        running = backend.create(spec)
        backend.advance(running)
        clock.now += 100
        new = finished()
        kept = {wf_id: [e.to_dict() for e in backend.history(wf_id)]
                for wf_id in (old_failed, running, new)}
        assert backend.prune(clock.now - 50, statuses=["complete"], batch=1) == 2
        for wf_id in old:
            with pytest.raises(WorkflowNotFound):
                backend.load(wf_id)
            with pytest.raises(WorkflowNotFound):
                backend.history(wf_id)
        for wf_id, events in kept.items():
            assert [e.to_dict() for e in backend.history(wf_id)] == events
        assert backend.prune(clock.now - 50) == 1  # every finished status: old_failed
        with pytest.raises(WorkflowNotFound):
            backend.load(old_failed)
        assert backend.load(running).status is WorkflowStatus.IN_PROGRESS
        assert backend.load(new).status is WorkflowStatus.COMPLETE
        assert {s.workflow_execution_id for s in backend.store.list_executions()} == {
            running, new}
        with pytest.raises(ValueError):
            backend.prune(clock.now, statuses=["in_progress"])

    # -- the step cache and rerun -------------------------------------------------------

    def _cached(self, parts: tuple[Store, Runner], clock: Callable[[], float] = time.time,
                **cache: Any) -> tuple[Workflow, CountingExecutor]:
        store, runner = parts
        counter = CountingExecutor()
        backend = Backend(store=store, runner=runner, executor=counter, poll_interval=0.01,
                          clock=clock)
        assert backend.cache is not None, "this suite needs a store with a cache"
        backend.cache.clear()
        wf = Workflow.from_dict(cached_chain_fan_spec(**cache), backend, inputs={"x": 0})
        assert isinstance(wf.run(timeout=120), Complete)
        assert counter.take() == dict.fromkeys("abcdef", 1)
        return wf, counter

    def test_a_rerun_is_served_from_the_cache(self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._cached(parts)
        assert wf.steps_ran == list("abcdef") and wf.steps_cached == []
        rerun = wf.rerun(timeout=120)
        assert counter.take() == {}  # no executor call at all
        assert isinstance(rerun.result, Complete)
        assert rerun.result.outcome == {"d": 4, "e": 5, "f": 6}
        assert rerun.ran == [] and rerun.cached == list("abcdef")
        if rerun.workflow.backend.store.keeps_history:
            kinds = [e.type for e in rerun.workflow.history() if e.step_id is not None]
            assert kinds == ["cache_hit"] * 6, kinds
        assert rerun.workflow.id != wf.id
        record = rerun.workflow.record
        assert all(s.cached and s.status is StepStatus.COMPLETE for s in record.steps.values())
        assert record.steps["e"].inputs == {"x": 3, "k": 2}  # inputs kept for inspection
        assert record.state == wf.record.state
        again = Backend(store=parts[0], runner=parts[1])  # the marker is stored
        assert again.load(rerun.workflow.id).steps["a"].cached

    def test_changing_an_input_reruns_only_what_depends_on_it(
            self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._cached(parts)
        rerun = wf.rerun({"k": 5}, timeout=120)
        assert counter.take() == {"e": 1}
        assert rerun.ran == ["e"] and rerun.cached == list("abcdf")
        assert isinstance(rerun.result, Complete)
        assert rerun.result.outcome == {"d": 4, "e": 8, "f": 6}
        rerun = wf.rerun({"x": 10}, timeout=120)
        assert counter.take() == dict.fromkeys("abcdef", 1)
        assert rerun.cached == []

    def test_invalidate_drops_the_entries_it_reopens(self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._cached(parts)
        second = wf.rerun(timeout=120).workflow
        assert counter.take() == {}
        assert second.invalidate("b") == second.what_invalidates("b") == list("bcdef")
        assert isinstance(second.run(timeout=120), Complete)
        assert counter.take() == dict.fromkeys(second.what_invalidates("b"), 1)
        assert second.steps_cached == ["a"]
        third = wf.rerun(timeout=120)  # the runs after invalidate filled the cache again
        assert counter.take() == {} and third.cached == list("abcdef")

    def test_only_successful_outputs_are_stored(self, parts: tuple[Store, Runner]) -> None:
        store, runner = parts
        counter = CountingExecutor()
        counter.failing.add("e")
        backend = Backend(store=store, runner=runner, executor=counter, poll_interval=0.01)
        assert backend.cache is not None
        backend.cache.clear()
        wf = Workflow.from_dict(cached_chain_fan_spec(), backend, inputs={"x": 0})
        assert isinstance(wf.run(timeout=120), Failed)
        stored = {e.fn for e in backend.cache.list()}
        assert "e" not in stored and {"a", "b", "c"} <= stored
        counter.failing.clear()
        counter.take()
        rerun = wf.rerun(timeout=120)
        assert "e" in rerun.ran and counter.take()["e"] == 1
        entry = backend.cache.show(cache_key("e", {"x": 3, "k": 2}))
        assert entry is not None and entry.output == {"v": 5} and entry.fn == "e"

    def test_an_entry_older_than_max_age_is_a_miss(self, parts: tuple[Store, Runner]) -> None:
        clock = FakeClock()
        wf, counter = self._cached(parts, clock, max_age=60)
        clock.now += 30
        assert wf.rerun(timeout=120).cached == list("abcdef")
        clock.now += 31  # 61 s after the entries were stored
        rerun = wf.rerun(timeout=120)
        assert rerun.cached == [] and counter.take() == dict.fromkeys("abcdef", 1)

    def test_a_cache_version_changes_every_key(self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._cached(parts, version=1)
        backend = wf.backend
        wf2 = Workflow.from_dict(cached_chain_fan_spec(version=2), backend, inputs={"x": 0})
        assert isinstance(wf2.run(timeout=120), Complete)
        assert counter.take() == dict.fromkeys("abcdef", 1)
        assert wf.rerun(timeout=120).ran == []  # version 1's entries are still there

    def test_the_cache_is_shared_across_workflows(self, parts: tuple[Store, Runner]) -> None:
        wf, counter = self._cached(parts)
        other = {"name": "another", "defaults": {"cache": True},
                 "steps": [{"id": "first", "fn": "a", "input": {"x": 0}}]}
        wf2 = Workflow.from_dict(other, wf.backend)
        assert isinstance(wf2.run(timeout=120), Complete)
        assert counter.take() == {} and wf2.steps_cached == ["first"]

    def test_a_rerun_of_an_unknown_id_writes_nothing(self, parts: tuple[Store, Runner]) -> None:
        store, runner = parts
        backend = Backend(store=store, runner=runner)
        before = len(store.list_executions(limit=1000))
        ghost = Workflow("0" * 32 + "#20300101T000000.000000Z-0000000000000000", backend)
        with pytest.raises(WorkflowNotFound):
            ghost.rerun(timeout=5)
        assert len(store.list_executions(limit=1000)) == before

    # -- large payloads (runfox.payloads) ---------------------------------------------

    def test_a_5_mb_output_and_input_pass_through_unchanged(self, parts: tuple[Store, Runner]
                                                            ) -> None:
        """A 5 MB step output reaches the next step's inputs and the outcome unchanged,
        and so does a 5 MB workflow input, whatever the store's and queue's limits."""
        store, runner = parts
        big, seed = large_text(5_000_000, 1), large_text(5_000_000, 2)
        seen: dict[str, Any] = {}

        def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
            if fn == "make":
                seen["seed_in_make"] = inputs["seed"] == seed
                return {"blob": big, "tag": "made"}
            seen["blob_in_use"] = inputs["blob"] == big
            return {"blob": inputs["blob"], "length": len(inputs["blob"]),
                    "seed_ok": inputs["seed"] == seed}

        spec = {"name": "large", "steps": [
            {"id": "make", "fn": "make", "input": {"seed": {"var": "input.seed"}}},
            {"id": "use", "fn": "use", "depends_on": ["make"],
             "input": {"blob": {"var": "steps.make.output.blob"},
                       "seed": {"var": "input.seed"}}}],
            "outputs": {"blob": {"var": "steps.use.output.blob"},
                        "tag": {"var": "steps.make.output.tag"},
                        "length": {"var": "steps.use.output.length"},
                        "seed_ok": {"var": "steps.use.output.seed_ok"}}}
        backend = Backend(store=store, runner=runner, executor=executor, poll_interval=0.01)
        wf = Workflow.from_dict(spec, backend, inputs={"seed": seed})
        result = wf.run(timeout=300)
        assert isinstance(result, Complete), result
        assert seen == {"seed_in_make": True, "blob_in_use": True}
        assert result.outcome["blob"] == big
        assert result.outcome["tag"] == "made" and result.outcome["length"] == len(big)
        assert result.outcome["seed_ok"] is True
        again = Workflow.resume(wf.id, Backend(store=store, runner=runner)).record
        assert again.inputs == {"seed": seed}
        assert again.steps["make"].output == {"blob": big, "tag": "made"}
        assert again.steps["use"].inputs == {"blob": big, "seed": seed}
        assert again.outcome == result.outcome
        offloader = store.payloads()
        if offloader is not None and offloader.threshold is not None:
            from .payloads import encode, make_ref

            key = make_ref(encode(big))["$runfox_ref"]
            assert key in offloader.store  # stored once, by reference (the output's key)


class CacheContract:
    """What every ``Cache`` must do. Provide a ``store`` fixture (fresh, empty) whose
    ``cache()`` is the cache under test."""

    @pytest.fixture
    def cache(self, store: Store) -> Cache:
        cache = store.cache()
        assert cache is not None, f"{type(store).__name__}.cache() gives no cache"
        cache.clear()
        return cache

    def test_put_then_get(self, cache: Cache) -> None:
        key = cache_key("f", {"x": 1}, 2)
        assert cache.get(key) is None
        cache.put(key, {"v": 2, "deep": {"ü": [1, None]}}, "f", 2, 1000.5)
        entry = cache.get(key)
        assert entry is not None
        assert (entry.key, entry.fn, entry.version, entry.stored_at) == (key, "f", 2, 1000.5)
        assert entry.output == {"v": 2, "deep": {"ü": [1, None]}}
        assert cache.show(key) == entry

    def test_get_many_returns_what_exists(self, cache: Cache) -> None:
        keys = [cache_key("f", {"i": i}) for i in range(5)]
        for i, key in enumerate(keys[:3]):
            cache.put(key, {"i": i}, "f", None, 1.0)
        found = cache.get_many(keys)
        assert sorted(found) == sorted(keys[:3])
        assert found[keys[1]].output == {"i": 1} and found[keys[1]].version is None

    def test_put_replaces(self, cache: Cache) -> None:
        key = cache_key("f", {})
        cache.put(key, {"v": 1}, "f", "a", 1.0)
        cache.put(key, {"v": 2}, "f", "b", 2.0)
        entry = cache.get(key)
        assert entry is not None and (entry.output, entry.version, entry.stored_at) == (
            {"v": 2}, "b", 2.0)
        assert len(cache.list()) == 1

    def test_list_delete_and_clear(self, cache: Cache) -> None:
        for fn in ("f", "g"):
            for i in range(3):
                cache.put(cache_key(fn, {"i": i}), {"i": i}, fn, None, float(i))
        assert len(cache.list()) == 6
        assert {e.fn for e in cache.list("g")} == {"g"}
        assert [e.stored_at for e in cache.list("f")] == [2.0, 1.0, 0.0]  # newest first
        assert cache.delete([cache_key("f", {"i": 0}), cache_key("f", {"i": 9})]) == 1
        assert cache.get(cache_key("f", {"i": 0})) is None
        assert cache.clear("f") == 2
        assert {e.fn for e in cache.list()} == {"g"}
        assert cache.clear() == 3 and cache.list() == []
        assert cache.delete([]) == 0

    def test_handed_out_entries_are_copies(self, cache: Cache) -> None:
        key = cache_key("f", {})
        output = {"v": [1]}
        cache.put(key, output, "f", None, 1.0)
        output["v"].append(2)
        entry = cache.get(key)
        assert entry is not None and entry.output == {"v": [1]}
        entry.output["v"].append(3)
        again = cache.get(key)
        assert again is not None and again.output == {"v": [1]}

    def test_racing_puts_leave_one_whole_entry(self, cache: Cache) -> None:
        key = cache_key("f", {"race": True})
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for i in range(5):
                    cache.put(key, {"writer": n, "i": i, "pad": "x" * 200}, "f", n, float(i))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        entry = cache.get(key)
        assert entry is not None
        assert entry.version == entry.output["writer"]  # one writer's entry, whole
        assert entry.stored_at == float(entry.output["i"])
        assert len(cache.list("f")) == 1


# -- idempotency keys and schedules -------------------------------------------------------

#: A one-step spec for schedule and key tests.
ONE_STEP: dict[str, Any] = {"name": "scheduled", "steps": [{"id": "a", "fn": "work"}]}
#: 2030-01-01T00:00:00Z: a fixed "now" for fake clocks.
EPOCH_2030 = 1893456000.0


class FakeClock:
    """A settable clock for ``Backend(clock=...)``."""

    def __init__(self, now: float = EPOCH_2030) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class KeyedStoreContract:
    """Idempotency keys (``Store.create``). Provide a ``store`` fixture (fresh, empty);
    a store shared between processes also overrides ``reopen`` (see ``StoreContract``)."""

    @pytest.fixture
    def reopen(self, store: Store) -> Callable[[], Store]:
        return lambda: store

    def test_the_same_key_returns_the_first_execution(self, store: Store) -> None:
        backend = Backend(store=store)
        first = backend.create(ONE_STEP, key="order-1")
        assert backend.create(ONE_STEP, key="order-1") == first
        assert backend.create(ONE_STEP, {"x": 1}, key="order-1") == first
        assert store.key_owner("order-1") == first
        assert [s.workflow_execution_id for s in store.list_executions()] == [first]

    def test_different_keys_and_no_key_create_new_executions(self, store: Store) -> None:
        backend = Backend(store=store)
        ids = {backend.create(ONE_STEP, key="a"), backend.create(ONE_STEP, key="b"),
               backend.create(ONE_STEP), backend.create(ONE_STEP)}
        assert len(ids) == 4
        assert store.key_owner("c") is None

    def test_bad_keys_are_refused(self, store: Store) -> None:
        backend = Backend(store=store)
        for key in ("", "k" * 256):
            with pytest.raises(ValueError, match="key"):
                backend.create(ONE_STEP, key=key)
        assert store.list_executions() == []

    def test_racing_creators_make_one_execution(self, store: Store,
                                                reopen: Callable[[], Store]) -> None:
        stores = [reopen() for _ in range(8)]
        start = threading.Barrier(len(stores))
        ids: list[str] = []

        def create(one: Store) -> None:
            start.wait()
            ids.append(Backend(store=one).create(ONE_STEP, key="race"))

        threads = [threading.Thread(target=create, args=(one,)) for one in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(ids) == 8 and len(set(ids)) == 1
        assert [s.workflow_execution_id for s in store.list_executions()] == ids[:1]


class ScheduleContract:
    """Schedules on a store (``Store.schedules``), fired with a fake clock.

    Provide a ``store`` fixture (fresh, empty). Covers every trigger, catch-up,
    DST, overlap, bad input, compare-and-set and the crash points of a fire.
    """

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def backend(self, store: Store, clock: FakeClock) -> Backend:
        return Backend(store=store, runner=InProcessRunner(), clock=clock)

    @pytest.fixture
    def schedules(self, backend: Backend) -> Any:
        from .schedules import Schedules

        return Schedules(backend)

    @staticmethod
    def executions(backend: Backend) -> list[str]:
        return sorted(s.workflow_execution_id for s in backend.store.list_executions(limit=10_000))

    # -- management and bad input ---------------------------------------------------

    def test_add_get_list_pause_resume_remove(self, schedules: Any, clock: FakeClock) -> None:
        added = schedules.add("b", ONE_STEP, every="1m", inputs={"n": 1})
        schedules.add("a", ONE_STEP, cron="@hourly", tz="Europe/Paris")
        assert [s.name for s in schedules.list()] == ["a", "b"]
        got = schedules.get("b")
        assert got.spec == ONE_STEP and got.inputs == {"n": 1} and got.version == 1
        assert got.next_fire == clock.now + 60 == added.next_fire
        assert schedules.pause("b").paused
        assert schedules.store.due(clock.now + 3600) == [schedules.get("a")]
        clock.now += 150
        resumed = schedules.resume("b")
        assert not resumed.paused and resumed.next_fire == EPOCH_2030 + 180
        schedules.remove("b")
        with pytest.raises(KeyError):
            schedules.get("b")
        with pytest.raises(KeyError):
            schedules.remove("b")

    @pytest.mark.parametrize(("field", "kwargs"), [
        ("cron", {"cron": "61 * * * *"}),
        ("cron", {"cron": "* * *"}),
        ("tz", {"cron": "@daily", "tz": "Mars/Olympus"}),
        ("every", {"every": 0}),
        ("every", {"every": "0s"}),
        ("every", {"every": "soon"}),
        ("at", {"at": "2029-12-31T23:00:00Z"}),
        ("at", {"at": "not a time"}),
        ("trigger", {}),
        ("trigger", {"cron": "@daily", "every": 5}),
        ("catch_up", {"every": 5, "catch_up": "some"}),
        ("overlap", {"every": 5, "overlap": "queue"}),
        ("name", {"every": 5, "name": "has space"}),
    ])
    def test_bad_input_names_the_field_and_stores_nothing(
            self, schedules: Any, field: str, kwargs: dict[str, Any]) -> None:
        from .schedule import ScheduleError

        kwargs = dict(kwargs)  # the parameter is shared between test runs
        name = kwargs.pop("name", "s")
        with pytest.raises(ScheduleError) as caught:
            schedules.add(name, ONE_STEP, **kwargs)
        assert caught.value.field == field and str(caught.value).startswith(field)
        assert schedules.list() == []

    def test_an_existing_name_is_refused_and_kept(self, schedules: Any) -> None:
        from .schedule import ScheduleExists

        schedules.add("s", ONE_STEP, every=5)
        with pytest.raises(ScheduleExists, match="name"):
            schedules.add("s", ONE_STEP, cron="@daily")
        assert schedules.get("s").trigger["every"] == 5.0

    def test_replace_is_compare_and_set(self, schedules: Any) -> None:
        schedules.add("s", ONE_STEP, every=5)
        stored = schedules.get("s")
        schedules.store.replace(stored.evolve(paused=True))
        with pytest.raises(ConflictError):
            schedules.store.replace(stored.evolve(paused=False))
        assert schedules.get("s").paused and schedules.get("s").version == 2

    # -- firing ------------------------------------------------------------------------

    def test_every_fires_once_per_period(self, schedules: Any, backend: Backend,
                                         clock: FakeClock) -> None:
        schedules.add("s", ONE_STEP, every="10s")
        assert schedules.tick() == []
        fired = []
        for _ in range(5):
            clock.now += 10
            fired += schedules.tick()
            assert schedules.tick() == []  # a second tick at the same time fires nothing
        assert [f.fire_time for f in fired] == [EPOCH_2030 + 10 * i for i in range(1, 6)]
        assert self.executions(backend) == sorted(f.workflow_execution_id for f in fired)
        last = schedules.get("s")
        assert last.last_execution_id == fired[-1].workflow_execution_id
        assert last.next_fire == EPOCH_2030 + 60

    def test_cron_in_a_time_zone(self, schedules: Any, clock: FakeClock) -> None:
        schedules.add("s", ONE_STEP, cron="0 9 * * *", tz="Asia/Tokyo")  # 00:00 UTC
        assert schedules.next("s", 2) == [EPOCH_2030 + 86400, EPOCH_2030 + 2 * 86400]
        clock.now += 86400
        assert [f.fire_time for f in schedules.tick()] == [EPOCH_2030 + 86400]

    @pytest.mark.parametrize(("policy", "expected"), [
        ("none", []), ("one", [5]), ("all", [1, 2, 3, 4, 5])])
    def test_catch_up_after_an_outage(self, schedules: Any, clock: FakeClock, policy: str,
                                      expected: list[int]) -> None:
        schedules.add("s", ONE_STEP, cron="@hourly", catch_up=policy)
        clock.now += 5 * 3600 + 600  # every worker was down for five fires (last 10 min ago)
        fired = schedules.tick()
        assert [f.fire_time for f in fired] == [EPOCH_2030 + h * 3600 for h in expected]
        assert schedules.get("s").next_fire == EPOCH_2030 + 6 * 3600
        clock.now = EPOCH_2030 + 6 * 3600 + 1  # on time again: every policy fires it
        assert [f.fire_time for f in schedules.tick()] == [EPOCH_2030 + 6 * 3600]

    def test_catch_up_all_is_capped(self, schedules: Any, clock: FakeClock) -> None:
        from .schedule import CATCH_UP_CAP

        schedules.add("s", ONE_STEP, every=60, catch_up="all")
        clock.now += 60 * (CATCH_UP_CAP + 50) + 1
        fired = schedules.tick()
        assert len(fired) == CATCH_UP_CAP
        assert fired[-1].fire_time == EPOCH_2030 + 60 * (CATCH_UP_CAP + 50)

    @pytest.mark.parametrize(("day", "time", "fires"), [
        # 2030-03-10: New York springs forward 02:00 -> 03:00; 2030-11-03: falls back.
        ("2030-03-10", "30 2 * * *", []),                    # 02:30 does not exist: skipped
        ("2030-11-03", "30 1 * * *", ["01:30:00-04:00"]),    # 01:30 twice: fires once
        ("2030-11-03", "30 2 * * *", ["02:30:00-05:00"]),
        ("2030-03-10", "30 3 * * *", ["03:30:00-04:00"]),
    ])
    def test_dst_days_fire_once_or_skip_never_twice(self, schedules: Any, clock: FakeClock,
                                                    day: str, time: str,
                                                    fires: list[str]) -> None:
        from datetime import datetime
        from zoneinfo import ZoneInfo

        zone = ZoneInfo("America/New_York")
        clock.now = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=zone).timestamp()
        schedules.add("s", ONE_STEP, cron=time, tz="America/New_York")
        fired = []
        for _ in range(25 * 12):  # tick every 5 minutes through the day
            clock.now += 300
            fired += schedules.tick()
        assert [datetime.fromtimestamp(f.fire_time, zone).isoformat()[11:]
                for f in fired] == fires

    def test_overlap_skip_and_cancel_previous(self, schedules: Any, backend: Backend,
                                              clock: FakeClock) -> None:
        schedules.add("skip", ONE_STEP, every=10, overlap="skip")
        schedules.add("cancel", ONE_STEP, every=10, overlap="cancel_previous")
        clock.now += 10
        first = {f.name: f.workflow_execution_id for f in schedules.tick()}
        assert set(first) == {"skip", "cancel"}
        clock.now += 10  # both first executions still run
        second = {f.name: f.workflow_execution_id for f in schedules.tick()}
        assert set(second) == {"cancel"}
        assert backend.load(first["cancel"]).status is WorkflowStatus.CANCELLED
        assert backend.load(first["skip"]).status is not WorkflowStatus.CANCELLED
        backend.cancel(first["skip"])  # it ended: the next fire starts again
        clock.now += 10
        assert {f.name for f in schedules.tick()} == {"skip", "cancel"}

    def test_at_fires_once(self, schedules: Any, clock: FakeClock) -> None:
        schedules.add("once", ONE_STEP, at="2030-01-01T02:00:00+01:00")  # 01:00Z
        clock.now += 3599
        assert schedules.tick() == []
        clock.now += 1
        assert [f.fire_time for f in schedules.tick()] == [EPOCH_2030 + 3600]
        assert schedules.get("once").next_fire is None
        clock.now += 86400
        assert schedules.tick() == []

    def test_a_crash_between_deciding_and_starting_loses_nothing(
            self, schedules: Any, backend: Backend, clock: FakeClock) -> None:
        schedules.add("s", ONE_STEP, every=10)
        clock.now += 10
        stored = schedules.get("s")
        # A process wrote the decision, then died before creating the execution.
        schedules.store.replace(stored.evolve(pending=(EPOCH_2030 + 10,),
                                              next_fire=EPOCH_2030 + 20))
        assert schedules.store.due(clock.now) != []
        fired = schedules.tick()
        assert [f.fire_time for f in fired] == [EPOCH_2030 + 10]
        assert len(self.executions(backend)) == 1

    def test_a_crash_after_creating_doubles_nothing(self, schedules: Any, backend: Backend,
                                                    clock: FakeClock) -> None:
        from .schedule import fire_key

        schedules.add("s", ONE_STEP, every=10)
        clock.now += 10
        stored = schedules.get("s")
        schedules.store.replace(stored.evolve(pending=(EPOCH_2030 + 10,),
                                              next_fire=EPOCH_2030 + 20))
        # ... and created the execution, then died before clearing ``pending``.
        created = backend.create(ONE_STEP, key=fire_key("s", EPOCH_2030 + 10))
        fired = schedules.tick()
        assert [f.workflow_execution_id for f in fired] == [created]
        assert self.executions(backend) == [created]
        assert schedules.get("s").pending == ()

    def test_racing_ticks_fire_each_time_once(self, schedules: Any, backend: Backend,
                                              clock: FakeClock) -> None:
        from .schedules import Schedules

        schedules.add("s", ONE_STEP, every=1, catch_up="all")
        for _ in range(5):
            clock.now += 1
            start = threading.Barrier(4)

            def tick(barrier: threading.Barrier) -> None:
                barrier.wait()
                Schedules(backend).tick()

            threads = [threading.Thread(target=tick, args=(start,)) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        assert len(self.executions(backend)) == 5

    def test_a_spec_that_no_longer_compiles_pauses_only_its_schedule(
            self, schedules: Any, clock: FakeClock) -> None:
        schedules.add("good", ONE_STEP, every=10)
        schedules.add("bad", ONE_STEP, every=10)
        stored = schedules.get("bad")
        broken = {"name": "x", "steps": [{"id": "a", "fn": "f", "depends_on": ["missing"]}]}
        schedules.store.replace(stored.evolve(spec=broken))
        clock.now += 10
        assert [f.name for f in schedules.tick()] == ["good"]
        bad = schedules.get("bad")
        assert bad.paused and bad.last_error and "missing" in bad.last_error
        clock.now += 10
        assert [f.name for f in schedules.tick()] == ["good"]


class WorkerRegistryContract:
    """Live workers (``Store.workers()``, ``runfox.backend.workers``).

    Provide a ``store`` fixture (fresh, empty). Covers register, beat, list, remove,
    prune, the dead rule and a ``Worker`` registering while it runs.
    """

    @pytest.fixture
    def registry(self, store: Store) -> Any:
        return store.workers()

    @staticmethod
    def info(worker_id: str = "host:1-abc123", *, at: float = 1000.0,
             jobs: dict[str, float] | None = None) -> Any:
        from .backend.workers import WorkerInfo

        return WorkerInfo(id=worker_id, host="host", pid=1, executor="tasks:execute",
                          concurrency=2, started_at=at, heartbeat_at=at, interval=1.0,
                          lease=3.0, jobs=jobs or {})

    def test_register_list_beat_remove(self, registry: Any) -> None:
        assert registry.list() == []
        registry.register(self.info())
        registry.register(self.info("host:2-def456", at=1001.0))
        assert sorted(w.id for w in registry.list()) == ["host:1-abc123", "host:2-def456"]
        assert registry.beat("host:1-abc123", 1005.5, {"wf#a#0": 1004.0}) is True
        one = next(w for w in registry.list() if w.id == "host:1-abc123")
        assert one.heartbeat_at == 1005.5 and dict(one.jobs) == {"wf#a#0": 1004.0}
        assert (one.host, one.pid, one.executor, one.concurrency, one.interval, one.lease) == (
            "host", 1, "tasks:execute", 2, 1.0, 3.0)
        assert one.started_at == 1000.0
        assert registry.holders()["wf#a#0"].id == "host:1-abc123"
        registry.remove("host:1-abc123")
        registry.remove("host:1-abc123")  # twice is fine
        assert [w.id for w in registry.list()] == ["host:2-def456"]

    def test_a_beat_of_a_missing_row_says_so(self, registry: Any) -> None:
        assert registry.beat("nobody", 1.0, {}) is False
        assert registry.list() == []

    def test_register_again_replaces_the_row(self, registry: Any) -> None:
        registry.register(self.info(jobs={"wf#a#0": 1.0}))
        registry.register(self.info(at=2000.0))
        [row] = registry.list()
        assert row.heartbeat_at == 2000.0 and dict(row.jobs) == {}

    def test_dead_after_two_intervals_and_prune(self, registry: Any) -> None:
        registry.register(self.info("old", at=100.0))
        registry.register(self.info("new", at=200.0))
        rows = {w.id: w for w in registry.list()}
        assert rows["new"].dead(201.9) is False and rows["new"].dead(202.1) is True
        assert registry.prune(150.0) == 1
        assert [w.id for w in registry.list()] == ["new"]

    def test_a_worker_registers_while_it_runs(self, store: Store) -> None:
        from .worker import Worker

        backend = Backend(store=store, runner=InProcessRunner())
        seen: list[Any] = []

        def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
            seen.extend(store.workers().list())
            return {"ok": True}

        worker = Worker(backend, executor, lease=3.0, poll_interval=0.01, drive=False)
        backend.runner.dispatch("wf", [DispatchJob("wf", "a", "f", {})])
        worker.run(max_jobs=1)
        assert [w.id for w in seen] == [worker.id]
        assert seen[0].interval == 1.0 and seen[0].lease == 3.0
        assert store.workers().list() == []  # removed on a clean stop


def large_text(size: int, seed: int = 0) -> str:
    """``size`` characters of hex that compress poorly (deterministic for ``seed``)."""
    import random

    return random.Random(seed).randbytes(size // 2 + 1).hex()[:size]


class PayloadContract:
    """What every ``PayloadStore`` must do. Provide a ``payloads`` fixture (fresh, empty)."""

    def test_put_then_get(self, payloads: Any) -> None:
        blob = json.dumps({"text": "héllo ✓", "n": [1, 2.5, None]}).encode()
        key = payloads.put(blob)
        assert key.startswith("sha256:") and len(key) == 71
        assert payloads.get(key) == blob
        assert key in payloads

    def test_put_is_idempotent_and_content_addressed(self, payloads: Any) -> None:
        first, second = payloads.put(b'"same"'), payloads.put(b'"same"')
        assert first == second
        assert payloads.get(first) == b'"same"'
        assert payloads.put(b'"other"') != first

    def test_a_missing_blob_is_payload_missing_naming_its_key(self, payloads: Any) -> None:
        from .errors import PayloadMissing
        from .payloads import blob_key

        key = blob_key(b'"never stored"')
        with pytest.raises(PayloadMissing) as caught:
            payloads.get(key)
        assert caught.value.key == key and key in str(caught.value)
        assert key not in payloads

    def test_bad_keys_are_refused(self, payloads: Any) -> None:
        for bad in ("", "sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64):
            with pytest.raises(ValueError):
                payloads.get(bad)
        with pytest.raises(ValueError):
            payloads.put_keyed("sha256:" + "0" * 64, b'"not that"')

    def test_delete_counts_what_was_there(self, payloads: Any) -> None:
        a, b = payloads.put(b"1"), payloads.put(b"2")
        assert payloads.delete([a, a]) == 1
        assert a not in payloads and b in payloads
        assert payloads.delete([a]) == 0
        assert payloads.delete([]) == 0

    def test_a_5_mb_blob_round_trips(self, payloads: Any) -> None:
        blob = json.dumps({"rows": large_text(5_000_000, 3)}).encode()
        assert payloads.get(payloads.put(blob)) == blob

    def test_an_offloader_packs_and_a_fresh_one_unpacks(self, payloads: Any) -> None:
        from .backend.payload_store import Offloader
        from .payloads import REF_KEY, is_ref

        value = {"rows": [large_text(2000, 4)], "note": "ü"}
        packed = Offloader(payloads, 1000).pack(value)
        assert is_ref(packed) and packed["size"] > 1000 and packed["preview"].startswith("{")
        assert Offloader(payloads, 1000).unpack(packed) == value  # read from the store
        assert Offloader(payloads, 1000).pack({"small": 1}) == {"small": 1}
        lookalike = {REF_KEY: "mine", "x": 1}  # user data: escaped by offloading it
        escaped = Offloader(payloads, None).pack(lookalike)
        assert is_ref(escaped) and Offloader(payloads, None).unpack(escaped) == lookalike

    def test_racing_puts_of_one_blob_leave_it_whole(self, payloads: Any) -> None:
        blob = json.dumps(large_text(100_000, 5)).encode()
        errors: list[BaseException] = []

        def put() -> None:
            try:
                payloads.put(blob)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=put) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert payloads.get(payloads.put(blob)) == blob


class OffloadContract:
    """A store that offloads large values. Provide ``store`` (fresh, empty, with
    ``payloads()`` set and a threshold) and ``reopen`` (a new store object on the same
    data, with its own offloader, as another process would open it)."""

    def _offloader(self, store: Store) -> Any:
        offloader = store.payloads()
        assert offloader is not None and offloader.threshold is not None, \
            f"{type(store).__name__} was given no offloading threshold"
        return offloader

    def test_large_values_are_stored_by_reference(self, store: Store,
                                                  reopen: Callable[[], Store]) -> None:
        from .payloads import encode, make_ref

        offloader = self._offloader(store)
        big = large_text(offloader.threshold + 100, 6)
        v1 = new_record(fan_spec(2), {"n": 1, "doc": big})
        store.write(v1)
        v2 = bump(advance(v1, 10.0)[0], v1)
        store.write(v2, previous=v1)
        output = {"n": 1, "blob": big}
        r3, _ = on_step_result(v2, "root", output, 0, 11.0)
        v3 = bump(r3.evolve(state={**r3.state, "big": big, "small": 1}), v2)
        store.write(v3, previous=v2)
        # The output is packed per key: its "blob" and the state's "big" are one blob.
        for key in (make_ref(encode(v1.inputs))["$runfox_ref"],
                    make_ref(encode(big))["$runfox_ref"]):
            assert key in offloader.store
        assert make_ref(encode(output))["$runfox_ref"] not in offloader.store
        loaded = reopen().load(v1.workflow_execution_id)
        assert loaded.to_dict() == v3.to_dict()
        assert loaded.defects == ()

    def test_a_missing_blob_is_a_defect_naming_its_key(self, store: Store,
                                                       reopen: Callable[[], Store]) -> None:
        from .payloads import encode, make_ref

        offloader = self._offloader(store)
        big = large_text(offloader.threshold + 100, 7)
        v1 = new_record(fan_spec(2), {"n": 1, "note": "kept"})
        store.write(v1)
        v2 = bump(advance(v1, 10.0)[0], v1)
        store.write(v2, previous=v1)
        r3, _ = on_step_result(v2, "root", {"n": 1, "blob": big}, 0, 11.0)
        v3 = bump(r3, v2)
        store.write(v3, previous=v2)
        ref = make_ref(encode(big))  # the output is packed per key: its "blob" is gone
        key = ref["$runfox_ref"]
        assert offloader.delete([key]) == 1

        loaded = reopen().load(v1.workflow_execution_id)  # still loads
        (defect,) = loaded.steps["root"].defects
        assert defect.where == "steps.root.output.blob" and defect.step == "root"
        assert key in defect.message and defect.stored == ref
        assert defect in loaded.defects
        assert loaded.steps["root"].output == {"n": 1, "blob": ref}  # kept, not lost
        assert loaded.inputs == {"n": 1, "note": "kept"} and loaded.version == 3
        assert {s.status for sid, s in loaded.steps.items() if sid != "root"} == {
            StepStatus.READY}
        assert loaded.steps["root"].status is StepStatus.COMPLETE

        backend = Backend(store=reopen(), runner=InProcessRunner())
        result = backend.advance(v1.workflow_execution_id)
        assert isinstance(result, Failed)
        error = backend.load(v1.workflow_execution_id).outcome["error"]
        assert error["type"] == "CorruptRecord" and key in error["message"]
        assert error["where"] in ("steps.root.output.blob", "state.blob")
        assert error["stored"] == ref
