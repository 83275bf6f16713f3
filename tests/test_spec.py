"""Spec loading and validation: every problem reported at once, with its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import runfox as rfx
from runfox.errors import SpecError
from runfox.spec import load_spec, parse_yaml, workflow_id_for


def problems(spec: Any) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert isinstance(info.value, ValueError)
    return [str(p) for p in info.value.problems]


def one(spec: Any) -> str:
    found = problems(spec)
    assert len(found) == 1, found
    return found[0]


def test_a_valid_spec_compiles() -> None:
    plan = load_spec({
        "name": "ok",
        "steps": [
            {"id": "a", "fn": "f"},
            {"id": "b", "fn": "g", "depends_on": ["a"], "input": {"x": {"var": "steps.a.output.x"}},
             "max_attempts": 3, "retry": {"backoff": "exponential", "delay": 0.5}, "timeout": 2},
        ],
        "outputs": {"x": {"var": "steps.b.output.x"}},
    })
    assert [s.id for s in plan.steps] == ["a", "b"]
    assert plan.by_id["a"].dependents == ("b",)
    assert plan.by_id["b"].max_attempts == 3 and plan.by_id["b"].timeout == 2.0
    assert plan.by_id["b"].retry.backoff == "exponential"


def test_workflow_id_is_the_md5_of_canonical_json() -> None:
    a = {"steps": [{"id": "a", "fn": "f"}], "name": "x"}
    b = {"name": "x", "steps": [{"fn": "f", "id": "a"}]}
    assert workflow_id_for(a) == workflow_id_for(b) == load_spec(a).workflow_id
    assert len(workflow_id_for(a)) == 32


def test_every_problem_is_reported_with_its_place() -> None:
    found = problems({
        "steps": [
            {"id": "a", "fn": "f", "depends_on": ["nope"]},
            {"id": "a", "fn": "g"},
            {"fn": "h"},
            {"id": "c"},
            {"id": "d", "fn": "f", "max_attempts": 0, "timeout": -1,
             "input": {"x": {"var": "steps.e.output.x"}}},
            {"id": "e", "fn": "f", "branch": [{"condition": True, "action": "explode"}]},
        ],
    })
    joined = "\n".join(found)
    assert "steps[0] 'a'.depends_on[0]: unknown step 'nope'" in joined
    assert "steps[1].id: duplicate id 'a' (first used by steps[0])" in joined
    assert "steps[2]: missing 'id'" in joined
    assert "steps[3] 'c': missing 'fn'" in joined
    assert "steps[4] 'd'.max_attempts: max_attempts must be an integer >= 1, got 0" in joined
    assert "steps[4] 'd'.timeout" in joined
    # steps.e in d's input is a derived dependency now, not a problem
    assert "steps[5] 'e'.branch[0].action: unknown action 'explode'" in joined
    assert len(found) == 7


def test_cycles_are_named() -> None:
    message = one({"steps": [
        {"id": "a", "fn": "f", "depends_on": ["c"]},
        {"id": "b", "fn": "f", "depends_on": ["a"]},
        {"id": "c", "fn": "f", "depends_on": ["b"]},
    ]})
    assert "dependency cycle:" in message
    cycle = message.split("dependency cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_self_dependency() -> None:
    message = one({"steps": [{"id": "a", "fn": "f", "depends_on": ["a"]}]})
    assert "cannot depend on itself" in message


def test_reference_to_a_transitive_dependency_is_allowed() -> None:
    load_spec({"steps": [
        {"id": "a", "fn": "f"},
        {"id": "b", "fn": "f", "depends_on": ["a"]},
        {"id": "c", "fn": "f", "depends_on": ["b"], "input": {"x": {"var": "steps.a.output.x"}}},
    ]})


def test_reference_to_a_sibling_is_derived_and_a_missing_step_named() -> None:
    spec = {"steps": [
        {"id": "a", "fn": "f"},
        {"id": "b", "fn": "f"},
        {"id": "c", "fn": "f", "depends_on": ["a"],
         "input": {"x": {"if": [True, {"var": "steps.b.output.x"}, 0]}}},
    ]}
    assert load_spec(spec).by_id["c"].depends_on == ("a", "b")
    spec["steps"][2]["input"]["y"] = {"vars": "steps.zzz.output.y"}
    found = problems(spec)
    assert any("input.y: refers to steps.zzz, but there is no step 'zzz'" in p for p in found)


def test_branch_rules() -> None:
    found = problems({"steps": [
        {"id": "loop", "fn": "f", "branch": [
            {"condition": True, "action": {"set": "steps.ghost.status", "value": "ready"}}]},
        {"id": "b", "fn": "f", "branch": [{"action": "halt"}, {"condition": True}]},
    ]})
    joined = "\n".join(found)
    assert "steps[0] 'loop'.branch[0].action.set: no step 'ghost' to reset" in joined
    assert "steps[0] 'loop'.branch: a step with a set (loop) branch also needs a halt or " \
           "complete branch" in joined
    assert "steps[1] 'b'.branch[0]: missing 'condition'" in joined
    assert "steps[1] 'b'.branch[1]: missing 'action'" in joined


def test_unknown_operator_and_bad_jsonpath() -> None:
    found = problems({"steps": [{"id": "a", "fn": "f", "input": {
        "x": {"==": [{"varr": "input.x"}, 1]}, "y": {"vars": "steps[[.x"}}}]})
    assert any("steps[0] 'a'.input.x: unknown JSON Logic operator 'varr'" in p for p in found)
    assert any("steps[0] 'a'.input.y: vars: JSONPath 'steps[[.x' does not parse" in p
               for p in found)


def test_unknown_fields_get_a_suggestion() -> None:
    message = one({"steps": [{"id": "a", "fn": "f", "depend_on": ["x"]}]})
    assert ("steps[0] 'a'.depend_on: unknown field 'depend_on' "
            "(did you mean 'depends_on'?)") in message


def test_values_that_are_not_json() -> None:
    text = "steps:\n  - id: a\n    fn: f\n    input:\n      when: 2024-01-02\n"
    found = problems(parse_yaml(text))
    assert found == ["spec.steps[0].input.when: datetime.date(2024, 1, 2) is a date, not a JSON "
                     "value; quote it in YAML"]
    outputs = problems({"steps": [{"id": "a", "fn": "f"}], "outputs": {"x": float("nan")}})
    assert outputs == ["spec.outputs.x: nan is not a finite number; JSON cannot hold it"]


def test_malformed_yaml_names_the_line() -> None:
    with pytest.raises(SpecError) as info:
        parse_yaml("steps:\n  - id: a\n    fn: [unclosed\n", "flow.yaml")
    assert str(info.value.problems[0]).startswith("flow.yaml:4:")
    assert "malformed YAML" in str(info.value)


def test_duplicate_yaml_keys_are_refused() -> None:
    with pytest.raises(SpecError, match="duplicate key 'fn'"):
        parse_yaml("steps:\n  - id: a\n    fn: f\n    fn: g\n")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string", "42"])
def test_a_document_that_is_not_a_mapping(text: str) -> None:
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_yaml(text)


def test_steps_must_be_a_non_empty_list() -> None:
    assert "steps: missing" in one({"name": "x"})
    assert "steps: must be a non-empty list" in one({"steps": []})


def test_defaults_apply_to_steps() -> None:
    plan = load_spec({"defaults": {"max_attempts": 4, "timeout": 9, "retry": "linear"},
                      "steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "f", "max_attempts": 1}]})
    assert plan.by_id["a"].max_attempts == 4 and plan.by_id["b"].max_attempts == 1
    assert plan.by_id["a"].timeout == 9.0 and plan.by_id["a"].retry.backoff == "linear"


def test_retry_policy_validation() -> None:
    found = problems({"steps": [{"id": "a", "fn": "f", "retry": {
        "backoff": "quadratic", "delay": -1, "jitter": 2, "cap": 1}}]})
    joined = "\n".join(found)
    assert "retry.backoff: 'quadratic' is not one of none, fixed, linear, exponential" in joined
    assert "retry.delay: must be a number >= 0" in joined
    assert "retry.jitter" in joined and "retry.cap: unknown field" in joined


def test_bad_spec_is_rejected_before_anything_is_stored(tmp_path: Path) -> None:
    backend = rfx.Backend(executor=lambda fn, inputs: {})
    with pytest.raises(SpecError):
        rfx.Workflow.from_yaml("steps:\n  - id: a\n", backend)
    assert backend.store.list_executions() == []
    pattern = r"invalid workflow inputs(.|\n)*inputs.x: a set is not a JSON value"
    with pytest.raises(SpecError, match=pattern):
        rfx.Workflow.from_dict({"steps": [{"id": "a", "fn": "f"}]}, backend, inputs={"x": {1, 2}})
    assert backend.store.list_executions() == []


def test_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("steps:\n  - id: a\n    fn: f\n    depends_on: [b]\n")
    with pytest.raises(SpecError) as info:
        rfx.Workflow.from_file(path, rfx.Backend())
    assert str(path) in str(info.value)
    with pytest.raises(SpecError, match="cannot read"):
        rfx.Workflow.from_file(tmp_path / "missing.yaml", rfx.Backend())


def test_a_compiled_spec_does_not_alias_the_callers_dict() -> None:
    raw = {"steps": [{"id": "alias_check", "fn": "f", "input": {"x": 1}}]}
    plan = load_spec(raw)
    raw["steps"][0]["input"]["x"] = 2
    assert plan.raw["steps"][0]["input"]["x"] == 1
    assert load_spec({"steps": [{"id": "alias_check", "fn": "f", "input": {"x": 1}}]}) is plan


def test_step_ids_are_limited_in_form_and_length() -> None:
    assert "is not a valid step id" in one({"steps": [{"id": "a.b", "fn": "f"}]})
    assert "the limit is 128" in one({"steps": [{"id": "x" * 129, "fn": "f"}]})
    load_spec({"steps": [{"id": "x" * 128, "fn": "f"}]})
