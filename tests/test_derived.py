"""Derived dependencies, products, targets and step inspection (issue 9, item 4).

The backend-level behaviour (invalidate, redrive, targets, step inputs on every
backend) is in ``runfox.testing.BackendContract``; this file checks the compiler's
rules, product values, the graph functions' edge cases and the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runfox import Backend, Workflow
from runfox.cli import main
from runfox.errors import ExecutionStateError, SpecError, UnknownStepError
from runfox.graph import advance, invalidate, redrive, restrict_to_targets
from runfox.records import WorkflowRecord
from runfox.results import Complete, Failed
from runfox.spec import load_spec
from runfox.status import StepStatus, WorkflowStatus
from runfox.testing import CountingExecutor, chain_fan_spec


def problems(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    return [str(p) for p in info.value.problems]


# -- derivation -------------------------------------------------------------------------


def test_dependencies_are_derived_from_what_a_step_reads() -> None:
    plan = load_spec(chain_fan_spec())
    assert {s.id: s.depends_on for s in plan.steps} == {
        "a": (), "b": ("a",), "c": ("b",), "d": ("c",), "e": ("c",), "f": ("c",)}
    assert plan.by_id["c"].dependents == ("d", "e", "f")


def test_branch_reads_derive_and_explicit_depends_on_still_adds() -> None:
    plan = load_spec({"steps": [
        {"id": "a", "fn": "f"}, {"id": "b", "fn": "f"}, {"id": "c", "fn": "f"},
        {"id": "d", "fn": "f", "depends_on": ["c"],
         "branch": [{"condition": {"var": "steps.a.output.stop"}, "action": "halt",
                     "result": {"b": {"var": "steps.b.output"}}}]}]})
    assert plan.by_id["d"].depends_on == ("c", "a", "b")


def test_a_cycle_of_derived_dependencies_is_reported() -> None:
    found = problems({"steps": [
        {"id": "a", "fn": "f", "input": {"x": {"var": "steps.c.output"}}},
        {"id": "b", "fn": "f", "input": {"x": {"var": "steps.a.output"}}},
        {"id": "c", "fn": "f", "requires": ["pb"], "produces": ["pc"]},
        {"id": "p", "fn": "f", "depends_on": ["b"], "produces": ["pb"]}]})
    assert len(found) == 1 and found[0].startswith("steps: dependency cycle: ")


def test_a_wildcard_needs_depends_on() -> None:
    spec = {"steps": [{"id": "a", "fn": "f"},
                      {"id": "b", "fn": "f", "input": {"all": {"vars": "$.steps.*.output"}}}]}
    assert problems(spec) == [
        "steps[1] 'b': reads '$.steps.*.output', a wildcard from which no dependency can be "
        "derived; list the steps it needs in depends_on"]
    spec["steps"][1]["depends_on"] = ["a"]
    assert load_spec(spec).by_id["b"].depends_on == ("a",)


# -- products ---------------------------------------------------------------------------


PRODUCTS = {"steps": [
    {"id": "mesh", "fn": "mesh", "produces": ["mesh", "coords"]},
    {"id": "solver", "fn": "solver", "requires": ["mesh"], "produces": ["solver"]},
    {"id": "run", "fn": "run", "input": {"s": {"var": "products.solver"},
                                         "c": {"var": "products.coords"}}},
], "outputs": {"mesh": {"var": "products.mesh"}, "solver": {"var": "products.solver.kind"}}}


def test_products_resolve_to_their_producer() -> None:
    plan = load_spec(PRODUCTS)
    assert plan.producers == {"mesh": "mesh", "coords": "mesh", "solver": "solver"}
    assert plan.by_id["solver"].depends_on == ("mesh",)
    assert plan.by_id["run"].depends_on == ("solver", "mesh")
    assert plan.by_id["run"].requires == ("solver", "coords")
    assert plan.what_invalidates("solver") == ["solver", "run"]


def test_a_products_value_is_the_named_field_else_the_whole_output() -> None:
    def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"mesh": {"mesh": [1, 2], "coords": [0.5]},
                "solver": {"kind": "cg", "tol": 1e-6},
                "run": {"got": inputs}}[fn]

    wf = Workflow.from_dict(PRODUCTS, Backend(executor=execute))
    result = wf.run(timeout=30)
    assert isinstance(result, Complete)
    assert result.outcome == {"mesh": [1, 2], "solver": "cg"}
    assert wf.step_inputs("run") == {"s": {"kind": "cg", "tol": 1e-6}, "c": [0.5]}


def test_product_errors_name_both_places() -> None:
    assert problems({"steps": [{"id": "a", "fn": "f", "produces": ["m"]},
                               {"id": "b", "fn": "f", "produces": ["n", "m"]}]}) == [
        "steps[1] 'b'.produces[1]: product 'm' is also produced by steps[0] 'a'.produces[0]; "
        "a product has one producer"]
    found = problems({"steps": [{"id": "a", "fn": "f", "produces": ["mesh"]},
                                {"id": "b", "fn": "f", "requires": ["mehs"],
                                 "input": {"x": {"var": "products.grid"}}}]})
    assert found == [
        "steps[1] 'b'.requires[0]: no step produces 'mehs' (did you mean 'mesh'?); the "
        "products are: mesh",
        "steps[1] 'b'.input.x: refers to products.grid, but no step produces 'grid'; the "
        "products are: mesh"]


# -- the graph functions ------------------------------------------------------------------


def _done(spec: dict[str, Any], fail: str | None = None) -> WorkflowRecord:
    """A record driven to its end by hand; ``fail`` fails that step's attempt."""
    from runfox.graph import apply_results

    record = WorkflowRecord("w", "e", spec)
    now = 1.0
    while True:
        record, result = advance(record, now)
        if not hasattr(result, "jobs"):
            return record
        outputs = [(j.step_id, {"ok": False, "error": "no"} if j.step_id == fail else
                    {"v": 1}, j.run_id) for j in result.jobs]
        record, _ = apply_results(record, outputs, now)
        now += 1


def test_invalidate_of_an_unknown_step_changes_nothing() -> None:
    record = _done(chain_fan_spec())
    with pytest.raises(UnknownStepError, match="no step 'bb' in workflow 'chain-fan'"):
        invalidate(record, ["bb"], 9.0)


def test_invalidate_then_invalidate_again_before_running() -> None:
    record = _done(chain_fan_spec())
    once, reopened = invalidate(record, ["e"], 9.0)
    assert reopened == ["e"] and once.status is WorkflowStatus.IN_PROGRESS
    assert invalidate(once, ["e"], 10.0) == (once, [])  # never ran since: nothing to do


def test_redrive_rules() -> None:
    failed = _done(chain_fan_spec(), fail="c")
    assert failed.status is WorkflowStatus.FAILED
    new, reopened = redrive(failed, 9.0)
    assert reopened == ["c", "d", "e", "f"]
    assert new.status is WorkflowStatus.IN_PROGRESS and new.outcome is None
    assert new.steps["c"].attempts == 0 and new.steps["a"] is failed.steps["a"]
    with pytest.raises(ExecutionStateError, match="in_progress"):
        redrive(new, 10.0)
    with pytest.raises(ExecutionStateError, match="complete"):
        redrive(_done(chain_fan_spec()), 10.0)


def test_targets_skip_what_is_not_needed() -> None:
    record = WorkflowRecord("w", "e", chain_fan_spec())
    new, skipped = restrict_to_targets(record, ["b"], 1.0)
    assert skipped == ["c", "d", "e", "f"]
    assert new.steps["d"].error == {"type": "NotTargeted",
                                    "message": "not needed by the target(s) b"}
    assert redrive.__doc__ and "restrict_to_targets" in redrive.__doc__
    with pytest.raises(UnknownStepError):
        restrict_to_targets(record, ["zz"], 1.0)


def test_a_redrive_keeps_steps_no_target_needed() -> None:
    counter = CountingExecutor()
    counter.failing.add("b")
    wf = Workflow.from_dict(chain_fan_spec(), Backend(executor=counter), {"x": 0})
    assert isinstance(wf.run(targets=["c"], timeout=30), Failed)
    counter.failing.clear()
    counter.take()
    assert wf.redrive() == ["b", "c"]
    assert isinstance(wf.run(timeout=30), Complete)
    assert counter.take() == {"b": 1, "c": 1}
    assert wf.step_statuses["f"] is StepStatus.SKIPPED


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    monkeypatch.delenv("RUNFOX_EXECUTOR", raising=False)
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_spec(flag: Path) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"id": "a", "fn": "add", "input": {"x": 1}}]
    steps.append({"id": "b", "fn": "add", "input": {"x": {"var": "steps.a.output.v"},
                                                    "fail_if": str(flag)}})
    steps.append({"id": "c", "fn": "add", "input": {"x": {"var": "steps.b.output.v"}}})
    steps.append({"id": "side", "fn": "add", "input": {"x": {"var": "steps.a.output.v"}}})
    return {"name": "cli-derived", "steps": steps,
            "outputs": {"c": {"var": "steps.c.output.v"},
                        "side": {"var": "steps.side.output.v"}}}


EXECUTOR = "derived_executor:execute"


def test_cli_target_status_step_and_redrive(workdir: Path, capsys: Any) -> None:
    flag = workdir / "fail"
    spec = workdir / "wf.yaml"
    spec.write_text(json.dumps(cli_spec(flag)), encoding="utf-8")
    code, out, err = cli(capsys, "run", str(spec), "--executor", EXECUTOR, "--target", "side",
                         "-q")
    assert code == 0, err
    assert json.loads(out) == {"c": None, "side": 3}
    code, _, err = cli(capsys, "run", str(spec), "--executor", EXECUTOR, "--target", "sied")
    assert code == 2 and "sied" in err and "did you mean 'side'" in err

    flag.write_text("1")
    code, out, err = cli(capsys, "run", str(spec), "--executor", EXECUTOR, "-q")
    assert code == 1
    wf_id = err.split("runfox: execution ", 1)[1].split()[0]
    code, out, _ = cli(capsys, "status", wf_id, "--step", "b", "--json")
    detail = json.loads(out)
    assert detail["status"] == "failed" and detail["inputs"] == {"x": 2, "fail_if": str(flag)}
    code, out, _ = cli(capsys, "status", wf_id, "--step", "a")
    assert code == 0 and 'inputs:   {"x": 1}' in out and 'output:   {"v": 2}' in out
    code, _, err = cli(capsys, "status", wf_id, "--step", "zz")
    assert code == 2 and "zz" in err

    flag.unlink()
    code, out, err = cli(capsys, "redrive", wf_id, "--executor", EXECUTOR)
    assert code == 0, err
    assert json.loads(out) == {"c": 4, "side": 3}
    assert "reopened b, c" in err  # and side, if b's failure cancelled it
    code, _, err = cli(capsys, "redrive", wf_id, "--executor", EXECUTOR)
    assert code == 2 and "is complete" in err


def test_cli_redrive_without_executor_dispatches_for_workers(workdir: Path, capsys: Any
                                                             ) -> None:
    flag = workdir / "fail"
    flag.write_text("1")
    spec = workdir / "wf.yaml"
    spec.write_text(json.dumps(cli_spec(flag)), encoding="utf-8")
    code, _, err = cli(capsys, "run", str(spec), "--executor", EXECUTOR, "-q")
    assert code == 1
    wf_id = err.split("runfox: execution ", 1)[1].split()[0]
    code, out, err = cli(capsys, "redrive", wf_id)
    assert code == 0, err
    assert json.loads(out)["reopened"][:2] == ["b", "c"]  # side too, if it was cancelled
    code, out, _ = cli(capsys, "status", wf_id, "--json")
    data = json.loads(out)
    assert data["status"] == "in_progress" and data["steps"]["b"]["status"] == "in_progress"


def test_graph_shows_derived_edges(workdir: Path, capsys: Any) -> None:
    spec = workdir / "wf.yaml"
    spec.write_text(json.dumps(PRODUCTS), encoding="utf-8")
    code, out, _ = cli(capsys, "graph", str(spec))
    assert code == 0
    assert {"s0 --> s1", "s1 --> s2", "s0 --> s2"} <= {line.strip() for line in out.splitlines()}
