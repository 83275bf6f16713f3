"""The JSON Schema of spec files agrees with the compiler, and the shipped file is current.

The schema is generated from the field tables the compiler reads
(``runfox.spec_schema``, ``runfox.actions``); this file checks, with the
``jsonschema`` package (a dev dependency only), that both accept every valid spec
(every spec in ``examples/`` and the specs of the test suite below) and both refuse
every spec of the bad-spec corpus. What a schema cannot say (cross-references,
expressions) is in ``COMPILER_ONLY_CASES``: the compiler refuses those and the
schema lets them through.
"""

from __future__ import annotations

import copy
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runfox.errors import SpecError
from runfox.spec import compile_spec, parse_yaml
from runfox.spec_schema import COMPILER_ONLY, json_schema, schema_text
from runfox.subflows import resolve_workflows

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "runfox" / "spec.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def schema_errors(spec: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in VALIDATOR.iter_errors(spec)]


def compiler_errors(spec: Any) -> list[str]:
    try:
        compile_spec(copy.deepcopy(spec))
    except SpecError as exc:
        return [str(p) for p in exc.problems]
    return []


# -- the valid corpus -------------------------------------------------------------------


def example_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every YAML spec under examples/ and every module-level ``SPEC`` of an example."""
    found = []
    for path in sorted((ROOT / "examples").rglob("*.y*ml")):
        raw = parse_yaml(path.read_text("utf-8"))  # sub-workflow files resolved, as loaded
        found.append((str(path.relative_to(ROOT)), resolve_workflows(raw, path.parent)))
    sys.path.insert(0, str(ROOT))
    try:
        for path in sorted((ROOT / "examples").rglob("*.py")):
            if path.name == "__init__.py":
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            spec = getattr(importlib.import_module(name), "SPEC", None)
            if isinstance(spec, str):
                spec = parse_yaml(spec)
            if isinstance(spec, dict):
                found.append((name, spec))
    finally:
        sys.path.remove(str(ROOT))
    return found


STEP = {"id": "a", "fn": "f"}

VALID: dict[str, dict[str, Any]] = {
    "minimal": {"steps": [STEP]},
    "everything": {
        "name": "all", "description": "every field", "version": "1.2", "metadata": {"k": 1},
        "inputs": {"zip": {"type": "string", "description": "postal code"},
                   "n": {"type": "integer", "default": 3},
                   "mode": {"enum": ["a", "b"], "required": False}},
        "defaults": {"max_attempts": 3, "timeout": 10,
                     "retry": {"backoff": "exponential", "delay": 1, "max_delay": 60,
                               "jitter": 0.2}},
        "steps": [
            {"id": "a", "fn": "f", "description": "first", "input": {"x": {"var": "input.n"}},
             "max_attempts": 2, "retry": "linear", "timeout": 0.5},
            {"id": "b", "fn": "g", "depends_on": "a", "retry": {"jitter": True},
             "branch": [
                 {"condition": {"<": [{"var": "n"}, 3]}, "action": {"set": "steps.b.status"}},
                 {"condition": {"var": "stop"}, "action": "halt", "result": {"why": "stop"},
                  "description": "stop early"},
                 {"condition": True, "action": "complete"},
             ]},
            {"id": "c-3", "fn": "h", "depends_on": ["a", "b"],
             "branch": [{"condition": False, "action": {"set": ["b", "steps.c-3.status"],
                                                        "value": "pending"}},
                        {"condition": True, "action": "complete"}]},
        ],
        "outputs": {"x": {"var": "steps.c-3.output.x"}},
    },
    "yaml empties are absent": {"defaults": None, "inputs": None, "outputs": None,
                                "steps": [{"id": "a", "fn": "f", "input": None,
                                           "depends_on": None, "branch": None,
                                           "max_attempts": None, "retry": None,
                                           "timeout": None}]},
    "a version number": {"version": 2, "steps": [STEP]},
    "an enum input of numbers": {"inputs": {"level": {"enum": [1, 2, 3], "default": 2}},
                                 "steps": [STEP]},
    "policies, filters and max_parallel": {
        "max_parallel": 2,
        "defaults": {"on_dependency_failure": "skip",
                     "retry": {"on": ["TimeoutError", "requests.exceptions.ConnectionError"]}},
        "steps": [{"id": "a", "fn": "f", "retry": {"on_timeout": False, "backoff": "fixed"}},
                  {"id": "b", "fn": "f", "depends_on": "a", "on_dependency_failure": "run"},
                  {"id": "c", "fn": "f", "depends_on": "b", "on_dependency_failure": "fail"}]},
    "policy and max_parallel empty": {"max_parallel": None, "defaults": {
        "on_dependency_failure": None}, "steps": [{**STEP, "on_dependency_failure": None}]},
    "concurrency limits": {
        "defaults": {"concurrency": {"key": "gpu", "limit": 2}},
        "steps": [STEP, {"id": "b", "fn": "f", "input": {"n": 1}, "concurrency": {
            "key": {"cat": ["customer-", {"var": "input.customer"}, "-",
                            {"var": "step_input.n"}]}, "limit": 1}},
                  {"id": "c", "fn": "f", "concurrency": None}]},
    "derived dependencies and products": {
        "steps": [{"id": "mesh", "fn": "f", "produces": ["mesh", "coords"]},
                  {"id": "solve", "fn": "f", "requires": ["mesh"],
                   "input": {"c": {"var": "products.coords"}}},
                  {"id": "plot", "fn": "f", "input": {"s": {"var": "steps.solve.output"}},
                   "produces": None, "requires": None},
                  {"id": "all", "fn": "f", "depends_on": ["plot"],
                   "input": {"every": {"vars": "$.steps.*.output"}}}],
        "outputs": {"mesh": {"var": "products.mesh"}}},
    "step cache": {
        "defaults": {"cache": {"version": 2, "max_age": 3600}},
        "steps": [{**STEP, "cache": True}, {"id": "b", "fn": "f", "cache": False},
                  {"id": "c", "fn": "f", "cache": {"version": "v3"}},
                  {"id": "d", "fn": "f", "cache": None}, {"id": "e", "fn": "f", "cache": {}}]},
    "step cache true in defaults": {"defaults": {"cache": True}, "steps": [STEP]},
}

# -- the bad-spec corpus: refused by both ------------------------------------------------

INVALID: dict[str, Any] = {
    "not a mapping": ["steps"],
    "no steps": {"name": "x"},
    "empty steps": {"steps": []},
    "steps not a list": {"steps": {"a": STEP}},
    "unknown top-level field": {"step": [STEP]},
    "name not a string": {"name": 5, "steps": [STEP]},
    "name too long": {"name": "n" * 256, "steps": [STEP]},
    "description not a string": {"description": ["x"], "steps": [STEP]},
    "metadata not a mapping": {"metadata": "x", "steps": [STEP]},
    "version a list": {"version": [1], "steps": [STEP]},
    "step not a mapping": {"steps": ["a"]},
    "step without id": {"steps": [{"fn": "f"}]},
    "step without fn": {"steps": [{"id": "a"}]},
    "empty fn": {"steps": [{"id": "a", "fn": ""}]},
    "bad step id": {"steps": [{"id": "a.b", "fn": "f"}]},
    "step id too long": {"steps": [{"id": "a" * 129, "fn": "f"}]},
    "unknown step field": {"steps": [{**STEP, "depend_on": ["x"]}]},
    "input not a mapping": {"steps": [{**STEP, "input": [1]}]},
    "depends_on a number": {"steps": [{**STEP, "depends_on": 3}]},
    "depends_on listed twice": {"steps": [{"id": "x", "fn": "f"},
                                          {**STEP, "depends_on": ["x", "x"]}]},
    "depends_on not strings": {"steps": [{**STEP, "depends_on": [1]}]},
    "max_attempts zero": {"steps": [{**STEP, "max_attempts": 0}]},
    "max_attempts a string": {"steps": [{**STEP, "max_attempts": "3"}]},
    "max_attempts a bool": {"steps": [{**STEP, "max_attempts": True}]},
    "timeout zero": {"steps": [{**STEP, "timeout": 0}]},
    "retry unknown backoff": {"steps": [{**STEP, "retry": "sometimes"}]},
    "retry unknown field": {"steps": [{**STEP, "retry": {"cap": 3}}]},
    "retry negative delay": {"steps": [{**STEP, "retry": {"delay": -1}}]},
    "retry jitter over 1": {"steps": [{**STEP, "retry": {"jitter": 2}}]},
    "retry a number": {"steps": [{**STEP, "retry": 3}]},
    "retry on not a list": {"steps": [{**STEP, "retry": {"on": "TimeoutError"}}]},
    "retry on empty": {"steps": [{**STEP, "retry": {"on": []}}]},
    "retry on not strings": {"steps": [{**STEP, "retry": {"on": [3]}}]},
    "retry on not a name": {"steps": [{**STEP, "retry": {"on": ["Time out"]}}]},
    "retry on_timeout not a bool": {"steps": [{**STEP, "retry": {"on_timeout": "no"}}]},
    "unknown policy": {"steps": [{**STEP, "on_dependency_failure": "run-anyway"}]},
    "unknown default policy": {"defaults": {"on_dependency_failure": "ignore"},
                               "steps": [STEP]},
    "policy not a string": {"steps": [{**STEP, "on_dependency_failure": True}]},
    "max_parallel zero": {"max_parallel": 0, "steps": [STEP]},
    "max_parallel a string": {"max_parallel": "2", "steps": [STEP]},
    "max_parallel a fraction": {"max_parallel": 1.5, "steps": [STEP]},
    "max_parallel a bool": {"max_parallel": True, "steps": [STEP]},
    "defaults not a mapping": {"defaults": [1], "steps": [STEP]},
    "defaults unknown field": {"defaults": {"retries": 3}, "steps": [STEP]},
    "defaults bad timeout": {"defaults": {"timeout": -1}, "steps": [STEP]},
    "branch not a list": {"steps": [{**STEP, "branch": {"condition": True}}]},
    "branch entry not a mapping": {"steps": [{**STEP, "branch": ["halt"]}]},
    "branch without condition": {"steps": [{**STEP, "branch": [{"action": "halt"}]}]},
    "branch without action": {"steps": [{**STEP, "branch": [{"condition": True}]}]},
    "branch unknown action": {"steps": [{**STEP, "branch": [{"condition": True,
                                                             "action": "explode"}]}]},
    "branch unknown field": {"steps": [{**STEP, "branch": [{"condition": True,
                                                            "action": "halt", "when": 1}]}]},
    "set target malformed": {"steps": [{**STEP, "branch": [
        {"condition": True, "action": {"set": "steps.a.output"}},
        {"condition": True, "action": "halt"}]}]},
    "set value not ready": {"steps": [{**STEP, "branch": [
        {"condition": True, "action": {"set": "a", "value": "complete"}},
        {"condition": True, "action": "halt"}]}]},
    "set unknown field": {"steps": [{**STEP, "branch": [
        {"condition": True, "action": {"set": "a", "to": "ready"}},
        {"condition": True, "action": "halt"}]}]},
    "inputs not a mapping": {"inputs": ["zip"], "steps": [STEP]},
    "input declaration not a mapping": {"inputs": {"zip": "string"}, "steps": [STEP]},
    "input unknown type": {"inputs": {"zip": {"type": "text"}}, "steps": [STEP]},
    "input unknown field": {"inputs": {"zip": {"requried": True}}, "steps": [STEP]},
    "input required not a bool": {"inputs": {"zip": {"required": "yes"}}, "steps": [STEP]},
    "input empty enum": {"inputs": {"zip": {"enum": []}}, "steps": [STEP]},
    "outputs not a mapping": {"outputs": [1], "steps": [STEP]},
    "concurrency not a mapping": {"steps": [{**STEP, "concurrency": "gpu"}]},
    "concurrency without limit": {"steps": [{**STEP, "concurrency": {"key": "gpu"}}]},
    "concurrency without key": {"steps": [{**STEP, "concurrency": {"limit": 2}}]},
    "concurrency limit zero": {"steps": [{**STEP, "concurrency": {"key": "g", "limit": 0}}]},
    "concurrency limit a string": {"steps": [{**STEP, "concurrency": {"key": "g",
                                                                      "limit": "2"}}]},
    "concurrency empty key": {"steps": [{**STEP, "concurrency": {"key": "", "limit": 1}}]},
    "concurrency key too long": {"steps": [{**STEP, "concurrency": {"key": "k" * 201,
                                                                    "limit": 1}}]},
    "concurrency key a number": {"steps": [{**STEP, "concurrency": {"key": 3, "limit": 1}}]},
    "produces not a list": {"steps": [{**STEP, "produces": "mesh"}]},
    "produces a dotted name": {"steps": [{**STEP, "produces": ["mesh.v1"]}]},
    "requires twice the same": {"steps": [{**STEP, "produces": ["m"]},
                                          {"id": "b", "fn": "f", "requires": ["m", "m"]}]},
    "concurrency unknown field": {"defaults": {"concurrency": {"key": "g", "limit": 1,
                                                               "per": "host"}},
                                  "steps": [STEP]},
    "cache a string": {"steps": [{**STEP, "cache": "yes"}]},
    "cache max_age zero": {"steps": [{**STEP, "cache": {"max_age": 0}}]},
    "cache max_age a string": {"defaults": {"cache": {"max_age": "1h"}}, "steps": [STEP]},
    "cache version a float": {"steps": [{**STEP, "cache": {"version": 1.5}}]},
    "cache version a list": {"steps": [{**STEP, "cache": {"version": [1]}}]},
    "cache unknown field": {"steps": [{**STEP, "cache": {"ttl": 60}}]},
}

# -- refused by the compiler only: what a schema cannot express -------------------------

COMPILER_ONLY_CASES: dict[str, dict[str, Any]] = {
    "depends_on an unknown step": {"steps": [{**STEP, "depends_on": ["ghost"]}]},
    "depends_on itself": {"steps": [{**STEP, "depends_on": ["a"]}]},
    "dependency cycle": {"steps": [{"id": "a", "fn": "f", "depends_on": "b"},
                                   {"id": "b", "fn": "f", "depends_on": "a"}]},
    "duplicate step ids": {"steps": [STEP, STEP]},
    "reference to an unknown step": {"steps": [{**STEP, "input": {"x": {"var":
                                                                        "steps.b.output"}}}]},
    "cycle of derived dependencies": {"steps": [
        {"id": "a", "fn": "f", "input": {"x": {"var": "steps.b.x"}}},
        {"id": "b", "fn": "f", "input": {"x": {"var": "steps.a.x"}}}]},
    "a product with two producers": {"steps": [{**STEP, "produces": ["m"]},
                                               {"id": "b", "fn": "f", "produces": ["m"]}]},
    "a required product nobody produces": {"steps": [{**STEP, "requires": ["m"]}]},
    "products.X read and not produced": {"steps": [{**STEP, "input": {
        "m": {"var": "products.m"}}}]},
    "a wildcard read without depends_on": {"steps": [
        STEP, {"id": "b", "fn": "f", "input": {"all": {"vars": "$.steps.*.output"}}}]},
    "malformed JSON Logic": {"steps": [{**STEP, "branch": [
        {"condition": {"no_such_op": [1]}, "action": "halt"}]}]},
    "set branch without an exit": {"steps": [{**STEP, "branch": [
        {"condition": True, "action": {"set": "a"}}]}]},
    "set target unknown": {"steps": [{**STEP, "branch": [
        {"condition": True, "action": {"set": "ghost"}}, {"condition": True, "action": "halt"}]}]},
    "input default of the wrong type": {"inputs": {"n": {"type": "integer", "default": "3"}},
                                        "steps": [STEP]},
    # JSON Schema counts 2.0 as an integer; the compiler wants an integer written as one.
    "max_attempts written as a float": {"steps": [{**STEP, "max_attempts": 2.0}]},
    "input required with a default": {"inputs": {"n": {"required": True, "default": 1}},
                                      "steps": [STEP]},
    "concurrency key reading a step": {"steps": [{**STEP, "concurrency": {
        "key": {"var": "steps.x.output"}, "limit": 1}}]},
    "concurrency key malformed": {"steps": [{**STEP, "concurrency": {
        "key": {"no_such_op": [1]}, "limit": 1}}]},
    "concurrency limit written as a float": {"steps": [{**STEP, "concurrency": {
        "key": "g", "limit": 2.0}}]},
}


@pytest.mark.parametrize(("name", "spec"), example_specs(), ids=[n for n, _ in example_specs()])
def test_the_schema_and_the_compiler_accept_every_example(name: str, spec: Any) -> None:
    assert compiler_errors(spec) == []
    assert schema_errors(spec) == []


def test_there_are_examples() -> None:
    names = [n for n, _ in example_specs()]
    assert "examples/greeting/workflow.yaml" in names and len(names) >= 10


@pytest.mark.parametrize("name", VALID)
def test_the_schema_and_the_compiler_accept_valid_specs(name: str) -> None:
    assert compiler_errors(VALID[name]) == []
    assert schema_errors(VALID[name]) == []


@pytest.mark.parametrize("name", INVALID)
def test_the_schema_and_the_compiler_refuse_the_bad_spec_corpus(name: str) -> None:
    assert compiler_errors(INVALID[name]), "the compiler accepted it"
    assert schema_errors(INVALID[name]), "the schema accepted it"


@pytest.mark.parametrize("name", COMPILER_ONLY_CASES)
def test_cross_references_are_the_compilers_alone(name: str) -> None:
    spec = COMPILER_ONLY_CASES[name]
    assert compiler_errors(spec), "the compiler accepted it"
    assert schema_errors(spec) == [], "the schema can say this: move it to INVALID"


def test_compiler_only_problems_are_documented() -> None:
    assert len(COMPILER_ONLY) >= 6 and all(isinstance(line, str) for line in COMPILER_ONLY)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema())


def test_the_shipped_file_is_the_generated_schema() -> None:
    """After changing a field table: ``runfox schema > runfox/spec.schema.json``."""
    assert SHIPPED.read_text(encoding="utf-8") == schema_text()


def test_the_shipped_file_is_package_data() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"spec.schema.json"' in pyproject.split("[tool.setuptools.package-data]")[1]
    assert "jsonschema" not in pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]


def test_runfox_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    from runfox.cli import main

    assert main(["schema"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json_schema() and err == ""


def test_runfox_schema_as_a_command() -> None:
    done = subprocess.run([sys.executable, "-m", "runfox.cli", "schema"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == SHIPPED.read_text(encoding="utf-8")
