"""JSON Logic: the official suite, laziness, falsy data, vars and compile-time errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import runfox
from runfox.errors import ExpressionError
from runfox.expressions import compile_rule, compile_template, find_refs, is_rule, truthy

SUITE = Path(__file__).parent / "data" / "jsonlogic-tests.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "jsonlogic-tests.json"


def load_cases() -> list[tuple[Any, Any, Any]]:
    path = SHARED if SHARED.exists() else SUITE
    return [tuple(c) for c in json.loads(path.read_text()) if not isinstance(c, str)]


def same(a: Any, b: Any) -> bool:
    """JSON equality that tells booleans from numbers (True == 1 in Python)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


CASES = load_cases()


def test_the_suite_has_all_cases() -> None:
    assert len(CASES) == 277


@pytest.mark.parametrize(("rule", "data", "expected"), CASES,
                         ids=[json.dumps(c[0])[:60] for c in CASES])
def test_official_jsonlogic_suite(rule: Any, data: Any, expected: Any) -> None:
    assert same(runfox.evaluate(rule, data), expected)


def test_if_and_or_are_lazy() -> None:
    assert runfox.evaluate({"if": [True, 1, {"/": [1, 0]}]}) == 1
    assert runfox.evaluate({"?:": [False, {"/": [1, 0]}, 2]}) == 2
    assert runfox.evaluate({"and": [False, {"/": [1, 0]}]}) is False
    assert runfox.evaluate({"or": [1, {"/": [1, 0]}]}) == 1
    with pytest.raises(ExpressionError, match="division by zero"):
        runfox.evaluate({"if": [False, 1, {"/": [1, 0]}]})


def test_falsy_data_is_kept() -> None:
    assert runfox.evaluate({"var": ""}, 0) == 0
    assert runfox.evaluate({"var": ""}, "") == ""
    assert runfox.evaluate({"var": ""}, False) is False
    assert runfox.evaluate({"filter": [{"var": "xs"}, {">=": [{"var": ""}, 0]}]},
                           {"xs": [0.0, -1, 0, 2]}) == [0.0, 0, 2]
    assert runfox.evaluate({"map": [{"var": "xs"}, {"+": [{"var": ""}, 1]}]},
                           {"xs": [0.0, 0]}) == [1.0, 1]
    assert runfox.evaluate({"var": ["a", "dflt"]}, {"a": 0}) == 0
    assert runfox.evaluate({"var": ["a", "dflt"]}, {"a": None}) is None
    assert runfox.evaluate({"var": ["b", "dflt"]}, {"a": 0}) == "dflt"


def test_rules_nested_in_arrays_are_evaluated() -> None:
    assert runfox.evaluate([{"var": "a"}, {"+": [1, 1]}], {"a": 5}) == [5, 2]
    assert runfox.evaluate({"in": [{"var": "x"}, [{"var": "y"}, 3]]}, {"x": 2, "y": 2}) is True


def test_operators_missing_from_json_logic_path() -> None:
    data = {"xs": [1, 2, 3]}
    assert runfox.evaluate({"all": [{"var": "xs"}, {">": [{"var": ""}, 0]}]}, data) is True
    assert runfox.evaluate({"all": [[], {">": [{"var": ""}, 0]}]}) is False
    assert runfox.evaluate({"some": [{"var": "xs"}, {">": [{"var": ""}, 2]}]}, data) is True
    assert runfox.evaluate({"none": [{"var": "xs"}, {">": [{"var": ""}, 5]}]}, data) is True
    assert runfox.evaluate({"substr": ["jsonlogic", -5, 3]}) == "log"


def test_javascript_coercions() -> None:
    assert runfox.evaluate({"==": [1, "1"]}) is True
    assert runfox.evaluate({"==": [0, False]}) is True
    assert runfox.evaluate({"==": [None, 0]}) is False
    assert runfox.evaluate({"===": [1, 1.0]}) is True
    assert runfox.evaluate({"<": ["10", "9"]}) is True  # both strings: compared as strings
    assert runfox.evaluate({"<": [10, "9"]}) is False
    assert runfox.evaluate({"+": ["1.5", 1]}) == 2.5
    assert runfox.evaluate({"cat": ["a", 1.0, None, True]}) == "a1true"
    assert runfox.evaluate({"%": [-7, 3]}) == -1
    assert math.isnan(runfox.evaluate({"+": ["abc"]}))


def test_truthiness_follows_json_logic() -> None:
    assert [truthy(v) for v in ([], [0], {}, "", "0", 0, 0.0, None, float("nan"))] == [
        False, True, True, False, True, False, False, False, False]


def test_unknown_operator_is_a_compile_error() -> None:
    with pytest.raises(ExpressionError, match="unknown JSON Logic operator 'vr'"):
        compile_rule({"==": [{"vr": "x"}, 1]})


def test_vars_collects_every_match_and_keeps_falsy_values() -> None:
    data = {"steps": {"a": {"output": {"score": 0.0}}, "b": {"output": {"score": 0.9}}}}
    assert sorted(runfox.evaluate({"vars": "steps[*].output.score"}, data)) == [0.0, 0.9]
    assert sorted(runfox.evaluate({"vars": "steps.*.output.score"}, data)) == [0.0, 0.9]
    assert runfox.evaluate({"vars": ["$.steps.b.output.score"]}, data) == [0.9]
    assert runfox.evaluate({"vars": "steps.*.output.missing"}, data) == []


def test_vars_inside_other_operators() -> None:
    data = {"steps": {"a": {"output": {"score": 0.2}}, "b": {"output": {"score": 0.9}}}}
    rule = {"some": [{"vars": "steps.*.output.score"}, {">=": [{"var": ""}, 0.7]}]}
    assert runfox.evaluate(rule, data) is True
    total = {"reduce": [{"vars": "steps.*.output.score"},
                        {"+": [{"var": "accumulator"}, {"var": "current"}]}, 0]}
    assert runfox.evaluate(total, data) == pytest.approx(1.1)


def test_a_bad_vars_path_is_an_error_not_an_empty_list() -> None:
    with pytest.raises(ExpressionError, match="does not parse"):
        compile_rule({"vars": "steps[[.score"})
    with pytest.raises(ExpressionError, match="does not parse"):
        runfox.evaluate({"vars": {"cat": ["steps", "[["]}}, {})


def test_vars_path_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonpath_ng.ext

    calls = []
    real = jsonpath_ng.ext.parse
    monkeypatch.setattr(jsonpath_ng.ext, "parse", lambda p: calls.append(p) or real(p))
    compiled = compile_rule({"vars": "items[*].unique_path_for_this_test"})
    for i in range(50):
        compiled({"items": [{"unique_path_for_this_test": i}]})
    assert calls == ["items[*].unique_path_for_this_test"]


def test_templates_resolve_through_dicts_and_lists() -> None:
    template = {"a": {"var": "x"}, "b": [1, {"var": "y"}, {"c": {"var": "x"}}], "lit": {"k": 1}}
    assert compile_template(template)({"x": 0, "y": "z"}) == {
        "a": 0, "b": [1, "z", {"c": 0}], "lit": {"k": 1}}
    assert not is_rule({"name": "x"}) and is_rule({"var": "x"})


def test_find_refs_skips_scoped_logic() -> None:
    rule = {"and": [{"var": "steps.a.output.x"},
                    {"map": [{"vars": "steps.*.output"}, {"var": "inner.path"}]}]}
    assert list(find_refs(rule)) == [("var", "steps.a.output.x"), ("vars", "steps.*.output")]
