"""Limits on hostile input (runfox.limits): each refusal names the limit and the place.

The bombs here used to cost seconds, gigabytes or a ``RecursionError``; the time
bounds are generous (they guard against the old behaviour, not measure speed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runfox as rfx
from runfox import limits
from runfox.errors import ExpressionError, NotJSONError, SpecError
from runfox.expressions import compile_template, evaluate
from runfox.jsonvalue import as_output, json_copy
from runfox.spec import MAX_NAME_LENGTH, compile_spec, load_spec, parse_yaml

ACC = {"var": "accumulator"}


@pytest.fixture
def restore_limits() -> Iterator[None]:
    previous = limits.current()
    yield
    limits.restore(previous)


def laughs(levels: int, width: int) -> str:
    """The billion laughs: each level lists the one before ``width`` times."""
    lines = [f"a0: &a0 [{','.join(['lol'] * width)}]"]
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def problems(exc: pytest.ExceptionInfo[SpecError]) -> list[tuple[str, str]]:
    return [(p.where, p.message) for p in exc.value.problems]


# -- YAML -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("levels", "width", "size"), [(9, 9, 423), (10, 10, 600)])
def test_a_yaml_alias_bomb_is_refused_at_once(levels: int, width: int, size: int) -> None:
    text = laughs(levels, width)
    assert len(text) <= size  # as small as the bombs in the report
    start = time.perf_counter()
    with pytest.raises(SpecError) as exc:
        parse_yaml(text, "bomb.yaml")
    assert time.perf_counter() - start < 2  # was 13 s for the first, forever for the second
    ((where, message),) = problems(exc)
    assert where == "bomb.yaml:1:1"
    assert "aliases expand the document" in message and "RUNFOX_LIMIT_YAML_ALIASES" in message


def test_a_bomb_of_a_hundred_quintillion_laughs_is_refused_too() -> None:
    with pytest.raises(SpecError, match="expand the document by 123,456,790,123,456,790,090 "):
        parse_yaml(laughs(20, 10))


def test_ordinary_aliases_are_allowed() -> None:
    steps = "\n".join(f"  - {{id: s{i}, fn: f, retry: *r, input: *in}}" for i in range(2000))
    text = ("defaults: {retry: &r {backoff: fixed, delay: 1}}\n"
            "x: &in {a: 1, b: [1, 2, 3]}\n" f"steps:\n{steps}\n")
    data = parse_yaml(text)
    assert len(data["steps"]) == 2000 and data["steps"][1999]["input"] == {"a": 1, "b": [1, 2, 3]}


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(SpecError) as exc:
        parse_yaml("steps: &s [*s]\n", "loop.yaml")
    ((where, message),) = problems(exc)
    assert where == "loop.yaml:1:8" and "contains it" in message


@pytest.mark.parametrize(("text", "where"), [
    ("steps: " + "[" * 900 + "]" * 900, "deep.yaml:1:107"),
    ("steps:\n" + "- " * 900 + "x\n", "deep.yaml:2:199"),
    ("a:\n" + "".join(" " * i + "a:\n" for i in range(1, 900)), "deep.yaml:101:101"),
    ("steps:\n" + "- " * 3000 + "x\n", "deep.yaml:2:"),  # libyaml stops at 1,000 levels
    ("steps: " + "{a: " * 5000 + "}" * 5000, "deep.yaml:1:"),
])
def test_deep_yaml_is_a_spec_error_with_its_place(text: str, where: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_yaml(text, "deep.yaml")
    ((place, message),) = problems(exc)
    assert place.startswith(where) and place != "deep.yaml:1:1"
    assert "nest" in message and "depth" in message


def test_a_spec_over_the_size_limit_is_refused_before_parsing(
        tmp_path: Path, restore_limits: None) -> None:
    limits.configure(spec_bytes=1000)
    text = "steps: [" + ", ".join(["{id: a, fn: f}"] * 100) + "]\n"
    with pytest.raises(SpecError) as exc:
        parse_yaml(text, "big.yaml")
    ((where, message),) = problems(exc)
    assert where == "big.yaml" and "over the limit of 1,000" in message
    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="RUNFOX_LIMIT_SPEC_BYTES"):
        load_spec(path)


def test_libyaml_is_used_when_installed() -> None:
    import yaml

    from runfox import spec

    if getattr(yaml, "__with_libyaml__", False):
        assert issubclass(spec._SpecLoader, yaml.CSafeLoader)


def test_duplicate_keys_are_still_refused() -> None:
    with pytest.raises(SpecError, match="duplicate key 'id'"):
        parse_yaml("steps:\n  - {id: a, id: b, fn: f}\n")


# -- specs, rules and values given as Python objects ---------------------------------------------


def nested(depth: int, leaf: Any = 1, key: str = "a") -> Any:
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def test_a_deep_dict_spec_is_a_spec_error_not_a_recursion_error() -> None:
    spec = {"steps": [{"id": "s", "fn": "f", "input": {"x": nested(5000)}}]}
    with pytest.raises(SpecError) as exc:
        rfx.load_spec(spec)
    ((where, message),) = problems(exc)
    assert where.startswith("spec.steps[0].input.x.a.a") and "100 levels" in message


def test_a_deep_rule_is_a_spec_error_with_its_place() -> None:
    rule: Any = 1
    for _ in range(3000):
        rule = {"+": [rule, 1]}
    spec = {"steps": [{"id": "s", "fn": "f", "input": {"x": rule}}]}
    with pytest.raises(SpecError) as exc:
        compile_spec(spec)
    ((where, message),) = problems(exc)
    assert where.startswith("spec.steps[0].input.x.+[0]") and "depth limit" in message
    with pytest.raises(ExpressionError, match="nested more than 100 levels"):
        evaluate(rule)
    with pytest.raises(ExpressionError, match="nested more than 100 levels"):
        compile_template({"x": [rule]})


def test_a_cyclic_spec_is_a_spec_error() -> None:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    with pytest.raises(SpecError, match="levels deep"):
        rfx.load_spec({"steps": [{"id": "s", "fn": "f", "input": loop}]})


def test_deep_inputs_are_refused_with_their_path() -> None:
    backend = rfx.Backend()
    spec = {"steps": [{"id": "s", "fn": "f"}]}
    with pytest.raises(SpecError) as exc:
        backend.create(spec, {"data": nested(3000)})
    ((where, message),) = problems(exc)
    assert where.startswith("inputs.data.a.a") and "100 levels deep" in message


def test_json_copy_refuses_depth_over_the_limit_and_names_it(restore_limits: None) -> None:
    assert json_copy(nested(99)) == nested(99)
    with pytest.raises(NotJSONError) as exc:
        json_copy(nested(101, key="k"), "$state")
    assert exc.value.path == "$state" + ".k" * 100
    assert "nested more than 100 levels deep" in str(exc.value)
    assert "RUNFOX_LIMIT_DEPTH" in str(exc.value)
    limits.configure(depth=200)
    assert json_copy(nested(150)) == nested(150)
    assert json_copy(nested(150), max_depth=200) == nested(150)
    with pytest.raises(NotJSONError):
        json_copy(nested(150), max_depth=100)



def test_json_copy_isolates_converts_subclasses_and_names_bad_values() -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    class Colour(enum.StrEnum):
        RED = "red"

    value = {"a": [1, 2.5, None, True, "s", (1, {"b": []})], "n": {"m": {}}}
    copied = json_copy(value)
    assert copied == {"a": [1, 2.5, None, True, "s", [1, {"b": []}]], "n": {"m": {}}}
    assert copied["a"] is not value["a"] and copied["n"]["m"] is not value["n"]["m"]
    converted = json_copy({"level": Level.HIGH, "colour": [Colour.RED]})
    assert converted == {"level": 3, "colour": ["red"]}
    assert type(converted["level"]) is int and type(converted["colour"][0]) is str
    for bad, path in (({"x": [1, float("nan")]}, "$.x[1]"), ({"x": {2: 1}}, "$.x"),
                      ({"x": [object()]}, "$.x[0]")):
        with pytest.raises(NotJSONError) as exc:
            json_copy(bad)
        assert exc.value.path == path

def test_a_deep_executor_output_is_an_invalid_output() -> None:
    output = as_output({"x": nested(5000)}, "deep")
    assert output["ok"] is False and output["error_type"] == "InvalidOutput"
    assert "deep" in output["error"]
    assert "levels deep" in output["error"]


def test_a_name_longer_than_a_column_is_a_spec_error() -> None:
    spec: dict[str, Any] = {"name": "n" * (MAX_NAME_LENGTH + 1), "steps": [{"id": "s", "fn": "f"}]}
    with pytest.raises(SpecError) as exc:
        compile_spec(spec)
    assert problems(exc) == [("name", "the name is 256 characters long; the limit is 255 "
                                      "(what SQL backends can store)")]
    spec["name"] = "n" * MAX_NAME_LENGTH
    assert compile_spec(spec).name == spec["name"]


# -- expressions ------------------------------------------------------------------------------


def test_the_doubling_reduce_cat_rule_stops_at_the_string_limit() -> None:
    rule = {"reduce": [list(range(64)), {"cat": [ACC, ACC]}, "0123456789abcdef"]}
    start = time.perf_counter()
    with pytest.raises(ExpressionError) as exc:
        evaluate(rule)
    assert time.perf_counter() - start < 2
    assert str(exc.value).startswith("cat:") and "limit of 1,000,000" in str(exc.value)
    assert "RUNFOX_LIMIT_STRING_LENGTH" in str(exc.value)


@pytest.mark.parametrize(("logic", "start", "op"), [
    ({"merge": [ACC, ACC]}, [1], "merge"),
    ([ACC, ACC], 1, "reduce"),  # doubles by reference: nothing is copied
    ({"merge": [[ACC], [ACC]]}, 1, "reduce"),
])
def test_doubling_lists_stop_at_the_list_limit(logic: Any, start: Any, op: str) -> None:
    began = time.perf_counter()
    with pytest.raises(ExpressionError) as exc:
        evaluate({"reduce": [list(range(100)), logic, start]})
    assert time.perf_counter() - began < 2
    assert str(exc.value).startswith(f"{op}:") and "RUNFOX_LIMIT_LIST_LENGTH" in str(exc.value)


def test_converting_a_doubled_list_to_a_string_stops_at_the_string_limit() -> None:
    doubled = evaluate({"reduce": [list(range(12)), [ACC, ACC], "x" * 1000]})
    with pytest.raises(ExpressionError, match="array to string"):
        evaluate({"cat": [{"var": "d"}, "!"]}, {"d": doubled})


def test_a_reduce_accumulator_nested_past_the_depth_limit_is_refused() -> None:
    with pytest.raises(ExpressionError, match="accumulator is nested more than 100"):
        evaluate({"reduce": [list(range(500)), [ACC], 1]})


def test_map_results_are_bounded(restore_limits: None) -> None:
    limits.configure(list_length=10)
    assert evaluate({"map": [list(range(10)), {"+": [{"var": ""}, 1]}]}) == list(range(1, 11))
    with pytest.raises(ExpressionError, match=r"map: .* 11 items"):
        evaluate({"map": [list(range(11)), {"var": ""}]})


def test_repeated_multiplication_stops_at_the_digit_limit() -> None:
    with pytest.raises(ExpressionError, match=r"'\*': .*RUNFOX_LIMIT_NUMBER_DIGITS"):
        evaluate({"reduce": [list(range(64)), {"*": [ACC, ACC]}, 10]})


def test_comparing_a_16000_digit_string_is_quick() -> None:
    digits = "1" * 16_000
    start = time.perf_counter()
    # Not a number: NaN, found in linear time (the old regex took 5 s here).
    assert evaluate({"<": [{"var": "x"}, 5]}, {"x": digits + "x"}) is False
    assert evaluate({"<": [{"var": "x"}, 5]}, {"x": "1" * 8_000 + "." + "1" * 8_000 + "x"}) \
        is False
    # A number with more digits than the limit: refused, naming it.
    with pytest.raises(ExpressionError, match="16,000 characters, over the limit of 4,300"):
        evaluate({"<": [{"var": "x"}, 5]}, {"x": digits})
    with pytest.raises(ExpressionError, match="RUNFOX_LIMIT_NUMBER_DIGITS"):
        evaluate({"+": [{"var": "x"}, 1]}, {"x": digits})
    assert time.perf_counter() - start < 2
    assert evaluate({"<": [{"var": "x"}, 5]}, {"x": "4" * 10 + "e-9"}) is True


def test_data_nested_too_deeply_to_evaluate_is_an_expression_error() -> None:
    deep: Any = []
    for _ in range(50_000):
        deep = [deep, 1]
    with pytest.raises(ExpressionError, match="nest too deeply"):
        evaluate({"cat": [{"var": "d"}]}, {"d": deep})


def test_log_writes_at_debug_not_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="runfox.expressions"):
        assert evaluate({"log": "a secret input"}) == "a secret input"
    assert "a secret input" not in caplog.text
    with caplog.at_level(logging.DEBUG, logger="runfox.expressions"):
        evaluate({"log": "a secret input"})
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


# -- the limits themselves ----------------------------------------------------------------------


def test_defaults_are_documented_and_configurable(restore_limits: None) -> None:
    documented = limits.Limits(spec_bytes=10_000_000, yaml_aliases=10_000, depth=100,
                               string_length=1_000_000, list_length=100_000,
                               number_digits=4_300, workflow_depth=8)
    assert documented == limits.DEFAULT
    for name in ("spec_bytes", "yaml_aliases", "depth", "string_length", "list_length",
                 "number_digits", "workflow_depth"):
        assert f"``{name}``" in (limits.__doc__ or "")
        assert f"RUNFOX_LIMIT_{name.upper()}" in (limits.__doc__ or "")
    previous = limits.configure(string_length=10)
    assert previous.string_length == 1_000_000 and limits.current().string_length == 10
    assert limits.current().depth == previous.depth
    with pytest.raises(ExpressionError, match="limit of 10"):
        evaluate({"cat": ["hello", " world"]})
    limits.restore(previous)
    assert evaluate({"cat": ["hello", " world"]}) == "hello world"


def test_limits_from_the_environment() -> None:
    assert limits.Limits.from_env({"RUNFOX_LIMIT_DEPTH": "200",
                                   "RUNFOX_LIMIT_STRING_LENGTH": "2_000_000"}) == limits.Limits(
        depth=200, string_length=2_000_000)
    with pytest.raises(ValueError, match="RUNFOX_LIMIT_DEPTH='deep' is not an integer"):
        limits.Limits.from_env({"RUNFOX_LIMIT_DEPTH": "deep"})
    with pytest.raises(ValueError, match="positive integer"):
        limits.Limits.from_env({"RUNFOX_LIMIT_LIST_LENGTH": "0"})
    with pytest.raises(ValueError, match="at most 1000"):
        limits.Limits(depth=5000)
    with pytest.raises(TypeError):
        limits.configure(no_such_limit=1)
