"""Sub-workflows: how specs name them (files, registered names, the workflows table),
what the compiler refuses, the depth bound at run time, and how status shows them.

What every backend must do with them is in ``runfox.testing.SubWorkflowContract``
(part of ``BackendContract``); these tests need only the in-memory backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runfox as rfx
from runfox import limits
from runfox.backend import Backend
from runfox.cli.render import status_json, status_text, step_detail
from runfox.errors import SpecError
from runfox.results import Complete, Failed
from runfox.spec import compile_spec, load_spec, parse_yaml
from runfox.spec_schema import json_schema
from runfox.subflows import registered_workflows, resolve_workflows, unregister_workflow
from runfox.testing import SubworkflowExecutor, subworkflow_spec
from runfox.workflow import Workflow


@pytest.fixture
def restore_limits() -> Iterator[None]:
    previous = limits.current()
    yield
    limits.restore(previous)


@pytest.fixture
def registered() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        unregister_workflow(name)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


INC_CHILD = """\
name: {name}
inputs: {{x: {{type: integer}}}}
steps:
  - id: s
    {call}
    input: {{x: {{var: input.x}}}}
outputs: {{v: {{var: steps.s.output.v}}}}
"""


def child_yaml(name: str, call: str = "fn: inc") -> str:
    return INC_CHILD.format(name=name, call=call)


# -- where specs come from --------------------------------------------------------------


def test_files_are_resolved_next_to_the_file_that_names_them(tmp_path: Path) -> None:
    write(tmp_path / "sub" / "grand.yaml", child_yaml("grand"))
    write(tmp_path / "sub" / "child.yaml", child_yaml("child", "workflow: grand.yaml"))
    parent = write(tmp_path / "parent.yaml", child_yaml("parent", "workflow: sub/child.yaml"))
    plan = load_spec(parent)
    assert sorted(plan.workflows) == ["grand.yaml", "sub/child.yaml"]
    backend = Backend(executor=SubworkflowExecutor())
    wf = Workflow.from_file(parent, backend, inputs={"x": 1})
    assert wf.run(timeout=30) == Complete({"v": 2})  # only grand adds one
    # the stored spec carries both children: nothing is read from files after loading
    assert sorted(wf.record.spec["workflows"]) == ["grand.yaml", "sub/child.yaml"]


def test_a_missing_file_is_an_unknown_workflow_naming_where_it_was_looked_for(
        tmp_path: Path) -> None:
    parent = write(tmp_path / "parent.yaml", child_yaml("parent", "workflow: nope.yaml"))
    with pytest.raises(SpecError, match=r"steps\[0\] 's'\.workflow: unknown workflow "
                                        r"'nope\.yaml' \(known: none\) \(not found as a file"):
        load_spec(parent)


def test_registered_names_resolve_from_a_mapping_or_a_file(
        tmp_path: Path, registered: list[str]) -> None:
    grand = write(tmp_path / "g.yaml", child_yaml("grand"))
    rfx.register_workflow("grand", grand)
    rfx.register_workflow("child", parse(child_yaml("child", "workflow: grand")))
    registered += ["grand", "child"]
    assert {"child", "grand"} <= set(registered_workflows())
    spec = parse(child_yaml("parent", "workflow: child"))
    wf = Workflow.from_dict(spec, Backend(executor=SubworkflowExecutor()), inputs={"x": 5})
    assert wf.run(timeout=30) == Complete({"v": 6})
    assert sorted(wf.record.spec["workflows"]) == ["child", "grand"]
    unregister_workflow("grand")
    with pytest.raises(SpecError, match="unknown workflow 'grand'"):
        Workflow.from_dict(spec, Backend())


def test_register_workflow_refuses_an_empty_name() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        rfx.register_workflow("", {"steps": [{"id": "a", "fn": "f"}]})


def test_a_table_given_by_hand_is_kept_and_a_nested_table_is_merged(tmp_path: Path) -> None:
    write(tmp_path / "child.yaml", child_yaml("child", "workflow: grand") +
          "workflows:\n  grand: " + json.dumps(parse(child_yaml("grand"))) + "\n")
    raw = parse(child_yaml("parent", "workflow: child.yaml"))
    resolved = resolve_workflows(raw, tmp_path)
    assert sorted(resolved["workflows"]) == ["child.yaml", "grand"]
    assert "workflows" not in resolved["workflows"]["child.yaml"]
    assert resolve_workflows(resolved, tmp_path) is resolved  # nothing more to add


def parse(text: str) -> dict[str, Any]:
    return parse_yaml(text)


# -- what the compiler refuses ------------------------------------------------------------


@pytest.mark.parametrize(("step", "message"), [
    ({"id": "a", "fn": "f", "workflow": "w"}, "has both fn and workflow"),
    ({"id": "a"}, "missing 'fn' (the function name passed to the executor) or 'workflow'"),
    ({"id": "a", "workflow": 3}, "must be a workflow name or a JSON Logic rule, got 3"),
    ({"id": "a", "workflow": None}, "must be a workflow name or a JSON Logic rule, got null"),
    ({"id": "a", "fn": "workflow:w"}, "names starting 'workflow:' are kept"),
    ({"id": "a", "workflow": {"var": "steps.ghost.output"}}, "ghost"),
    ({"id": "a", "workflow": {"var": "item"}, "map": [1, 2]},
     "'a'.workflow: reads {var: item}: a map step's sub-workflow is chosen once"),
    ({"id": "a", "workflow": {"cat": ["w", {"var": "index"}]}},
     "'a'.workflow: reads {var: index}"),
])
def test_bad_workflow_fields_are_refused(step: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        compile_spec({"steps": [step], "workflows": {"w": {"steps": [{"id": "s", "fn": "f"}]}}})
    assert message in str(caught.value)
    assert "steps[0]" in str(caught.value)


def test_the_schema_agrees_on_fn_or_workflow() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    table = {"w": {"steps": [{"id": "s", "fn": "f"}]}}
    good = {"steps": [{"id": "a", "workflow": "w"},
                      {"id": "b", "workflow": {"var": "input.which"}}], "workflows": table}
    compile_spec(good)
    assert not list(validator.iter_errors(good))
    for step in ({"id": "a", "fn": "f", "workflow": "w"}, {"id": "a"},
                 {"id": "a", "fn": "workflow:w"}):
        bad = {"steps": [step], "workflows": table}
        assert list(validator.iter_errors(bad)), step
        with pytest.raises(SpecError):
            compile_spec(bad)


def test_a_child_that_does_not_compile_is_reported_under_its_name() -> None:
    spec = subworkflow_spec()
    spec["workflows"]["grand"]["steps"][0]["max_attempts"] = 0
    with pytest.raises(SpecError, match=r"workflows\['grand'\]\.steps\[0\] 'g'\.max_attempts"):
        compile_spec(spec)


def test_a_nested_table_inside_the_table_is_refused() -> None:
    spec = subworkflow_spec()
    spec["workflows"]["grand"]["workflows"] = {}
    with pytest.raises(SpecError, match=r"workflows\['grand'\]\.workflows: a sub-workflow has "
                                        "no table of its own"):
        compile_spec(spec)


def test_a_self_reference_is_a_cycle() -> None:
    spec = {"name": "me", "steps": [{"id": "a", "workflow": "me"}],
            "workflows": {"me": {"name": "me", "steps": [{"id": "a", "workflow": "me"}]}}}
    with pytest.raises(SpecError, match="a cycle of sub-workflows: me -> me -> me"):
        compile_spec(spec)


def test_a_chain_deeper_than_the_limit_is_refused_with_the_chain(
        restore_limits: None) -> None:
    compile_spec(subworkflow_spec())  # depth 2 below the parent
    limits.configure(workflow_depth=1)
    with pytest.raises(SpecError, match=r"nest deeper than limits\.workflow_depth \(1\): "
                                        "parent -> child -> grand"):
        compile_spec(subworkflow_spec())


# -- at run time ---------------------------------------------------------------------------


def test_dynamic_recursion_stops_at_the_depth_limit(restore_limits: None) -> None:
    """A workflow that starts itself through a rule (no static cycle to refuse) is
    bounded at run time: the child past the limit fails its step (WorkflowTooDeep),
    and every level fails in turn with the chain of ChildFailed errors."""
    limits.configure(workflow_depth=3)
    again = {"name": "again", "steps": [
        {"id": "a", "workflow": {"if": [True, "again", "none"]}, "input": {}}]}
    spec = {**again, "workflows": {"again": again}}
    backend = Backend(executor=SubworkflowExecutor())
    wf = Workflow.from_dict(spec, backend)
    result = wf.run(timeout=30)
    assert isinstance(result, Failed)
    assert result.outcome["error"]["type"] == "ChildFailed"
    depth, key = 0, wf.id
    while True:
        record = backend.load(key)
        step = record.steps["a"]
        if step.error is not None and step.error["type"] == "WorkflowTooDeep":
            break
        assert step.child is not None
        depth, key = depth + 1, step.child
    assert depth == 3 and record.parent is not None and record.parent["depth"] == 3
    assert "over limits.workflow_depth (3)" in (step.error or {})["message"]


def test_inputs_the_child_refuses_fail_the_step() -> None:
    spec = subworkflow_spec()
    spec["steps"][0]["input"] = {"x": "not a number"}
    wf = Workflow.from_dict(spec, Backend(executor=SubworkflowExecutor()), inputs={"x": 1})
    result = wf.run(timeout=30)
    assert isinstance(result, Failed)
    error = wf.record.steps["a"].error or {}
    assert error["type"] == "ChildInputError" and "'child'" in error["message"]
    assert "expected integer" in error["message"]


def test_a_halting_child_fails_the_step_with_its_result() -> None:
    spec = subworkflow_spec()
    spec["workflows"]["grand"]["steps"][0]["branch"] = [
        {"condition": True, "action": "halt", "result": {"why": "enough"}}]
    backend = Backend(executor=SubworkflowExecutor())
    wf = Workflow.from_dict(spec, backend, inputs={"x": 1})
    result = wf.run(timeout=30)
    assert isinstance(result, Failed)
    child = backend.load(wf.record.steps["a"].child or "")
    output = child.steps["c"].output or {}
    assert output["error_type"] == "ChildHalted" and output["outcome"] == {"why": "enough"}


def test_status_shows_the_child_on_the_step_and_the_parent_on_the_child() -> None:
    backend = Backend(executor=SubworkflowExecutor())
    wf = Workflow.from_dict(subworkflow_spec(), backend, inputs={"x": 1})
    wf.run(timeout=30)
    record = backend.load(wf.id)
    child_key = record.steps["a"].child or ""
    text = status_text(record)
    assert any(line.startswith("a ") and f"child {child_key}" in line
               for line in text.splitlines())
    assert status_json(record)["steps"]["a"]["child"] == child_key
    assert "child" not in status_json(record)["steps"]["b"]
    assert f"child:    {child_key}" in step_detail(record, "a", as_json=False)
    child = backend.load(child_key)
    assert f"parent:   {wf.id} (step 'a', run 0)" in status_text(child)
    assert status_json(child)["parent"]["execution"] == wf.id


def test_the_dashboard_data_names_the_child() -> None:
    from runfox.ui.data import execution_detail

    backend = Backend(executor=SubworkflowExecutor())
    wf = Workflow.from_dict(subworkflow_spec(), backend, inputs={"x": 1})
    wf.run(timeout=30)
    detail = execution_detail(backend.load(wf.id))
    rows = {row["id"]: row for row in detail["steps"]}
    assert rows["a"]["child"] == wf.record.steps["a"].child and rows["a"]["fn"] == \
        "workflow:child"
    assert rows["b"]["child"] is None and detail["parent"] is None


def test_runfox_worker_processes_drive_a_parent_and_its_child(tmp_path: Path) -> None:
    """No driver in the test process: two ``runfox worker`` processes claim the jobs of
    parent and child, and the child's end reaches the parent through them."""
    import os
    import subprocess
    import sys

    from runfox.backend.sql import parts_from_url

    root = Path(__file__).resolve().parent.parent
    url = f"sqlite:///{tmp_path / 'runfox.db'}"
    store, runner = parts_from_url(url)
    backend = Backend(store=store, runner=runner)
    wf = Workflow.from_file(root / "examples" / "subworkflow" / "parent.yaml", backend,
                            inputs={"items": [{"sku": "mug", "price": 850, "grams": 400}],
                                    "address": "1 Quay St"})
    backend.apply_and_advance(wf.id)  # claimed and queued here; the workers do the rest
    env = {**os.environ, "PYTHONPATH": str(root)}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "runfox.cli", "worker", "--backend", url, "--executor",
         "examples.subworkflow.tasks:execute", "--poll-interval", "0.05",
         "--sweep-interval", "1", "--idle-timeout", "4"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
    record = backend.load(wf.id)
    assert record.status is rfx.WorkflowStatus.COMPLETE, record.outcome
    assert record.outcome == {"boxes": 1, "total": 850,
                              "receipt": "paid 8.50, tracking TRK-1QUAYS-1"}
    child = backend.load(record.steps["ship"].child or "")
    assert child.parent is not None and child.parent["execution"] == wf.id


def test_parent_and_child_survive_the_json_form_and_bad_values_are_caught() -> None:
    from runfox.errors import CorruptRecord
    from runfox.records import WorkflowRecord

    backend = Backend(executor=SubworkflowExecutor())
    wf = Workflow.from_dict(subworkflow_spec(), backend, inputs={"x": 1})
    wf.run(timeout=30)
    parent = backend.load(wf.id)
    child = backend.load(parent.steps["a"].child or "")
    for record in (parent, child):
        data = json.loads(json.dumps(record.to_dict()))
        again = WorkflowRecord.from_dict(data)
        assert again == record and again.parent == record.parent
        assert again.steps["a" if record is parent else "c"].child is not None
    assert "parent" not in parent.to_dict()
    assert "child" not in parent.steps["b"].to_dict()
    data = child.to_dict()
    data["steps"][0]["child"] = 7  # a step field of the wrong shape: kept as a defect
    assert [d.where for d in WorkflowRecord.from_dict(data).defects] == ["steps.c.child"]
    data = child.to_dict()
    data["parent"] = "somewhere"
    with pytest.raises(CorruptRecord, match="parent must be an object"):
        WorkflowRecord.from_dict(data)


def test_runfox_worker_processes_drive_a_map_of_children(tmp_path: Path) -> None:
    """A map step over 3 orders, each item running the example's shipping workflow, with
    no driver in the test process: two ``runfox worker`` processes run the children and
    the children's ends reach the parent's items."""
    import os
    import subprocess
    import sys

    from runfox.backend.sql import parts_from_url

    root = Path(__file__).resolve().parent.parent
    shipping = parse_yaml((root / "examples" / "subworkflow" / "shipping.yaml").read_text())
    spec = {"name": "ship-all", "workflows": {"shipping": shipping},
            "steps": [{"id": "ship", "workflow": "shipping", "map": {"var": "input.orders"},
                       "input": {"address": {"var": "item.address"},
                                 "grams": {"var": "item.grams"}}}],
            "outputs": {"all": {"var": "steps.ship.output"}}}
    orders = [{"address": f"{n} Quay St", "grams": 400 * n} for n in (1, 2, 3)]
    url = f"sqlite:///{tmp_path / 'runfox.db'}"
    store, runner = parts_from_url(url)
    backend = Backend(store=store, runner=runner)
    wf = Workflow.from_dict(spec, backend, inputs={"orders": orders})
    backend.apply_and_advance(wf.id)  # the items claimed and their children started here
    env = {**os.environ, "PYTHONPATH": str(root)}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "runfox.cli", "worker", "--backend", url, "--executor",
         "examples.subworkflow.tasks:execute", "--poll-interval", "0.05",
         "--sweep-interval", "1", "--idle-timeout", "4"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
    record = backend.load(wf.id)
    assert record.status is rfx.WorkflowStatus.COMPLETE, record.outcome
    assert record.outcome == {"all": [
        {"boxes": 1, "tracking": "TRK-1QUAYS-1"}, {"boxes": 1, "tracking": "TRK-2QUAYS-1"},
        {"boxes": 2, "tracking": "TRK-3QUAYS-2"}]}
    for i in range(3):
        child = backend.load(record.steps[f"ship[{i}]"].child or "")
        assert child.parent is not None and child.parent["step"] == f"ship[{i}]"
    store.close()
    runner.close()
