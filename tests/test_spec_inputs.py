"""Declared workflow inputs: the spec's ``inputs:`` block, checked when an execution is created.

Missing or wrong inputs are refused by ``Backend.create`` (so by ``Workflow.from_*``,
``runfox run`` and ``runfox start`` too), every problem at once, each naming its
input; defaults are filled in before the record is stored. Without an ``inputs:``
block every input is accepted, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import runfox as rfx
from runfox.cli import main
from runfox.cli.commands import parse_inputs
from runfox.errors import SpecError
from runfox.spec import compile_spec

STEPS = [{"id": "echo", "fn": "echo", "input": {"all": {"var": "input"}}}]

DECLARED: dict[str, Any] = {
    "name": "declared",
    "inputs": {
        "zip": {"type": "string", "description": "postal code, leading zeros kept"},
        "count": {"type": "integer", "default": 3, "description": "how many"},
        "mode": {"enum": ["fast", "safe"], "required": False},
        "ratio": {"type": "number", "required": False},
        "tags": {"type": "array", "default": []},
    },
    "steps": STEPS,
    "outputs": {"seen": {"var": "steps.echo.output.all"}},
}


def problems_of(exc: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


def test_defaults_are_filled_in_before_the_record_is_stored() -> None:
    backend = rfx.Backend()
    wf_id = backend.create(DECLARED, {"zip": "01234"})
    assert backend.load(wf_id).inputs == {"zip": "01234", "count": 3, "tags": []}


def test_missing_and_wrong_inputs_are_refused_all_at_once_each_named() -> None:
    backend = rfx.Backend()
    with pytest.raises(SpecError, match="invalid workflow inputs") as exc:
        backend.create(DECLARED, {"count": "3", "mode": "slow", "ratio": True, "tgas": ["x"]})
    assert problems_of(exc) == [
        "inputs.zip: missing: a required input (postal code, leading zeros kept)",
        'inputs.count: expected integer, got "3"',
        'inputs.mode: expected one of "fast", "safe", got "slow"',
        "inputs.ratio: expected number, got true",
        "inputs.tgas: not a declared input (did you mean 'tags'?); the spec declares: "
        "zip, count, mode, ratio, tags",
    ]
    assert exc.value.subject == "workflow inputs"
    assert backend.store.list_executions() == []  # nothing was stored


def test_a_forgotten_input_no_longer_reaches_the_executor() -> None:
    """The issue's case: without the declaration the step fails inside the executor."""
    calls: list[Any] = []

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        calls.append(inputs)
        return {"upper": inputs["zip"].upper()}

    spec = {"inputs": DECLARED["inputs"],
            "steps": [{"id": "s", "fn": "up", "input": {"zip": {"var": "input.zip"}}}]}
    with pytest.raises(SpecError, match=r"inputs\.zip: missing"):
        rfx.Workflow.from_dict(spec, rfx.Backend(executor=executor))
    assert calls == []


def test_numbers_integers_and_booleans_follow_json_schema() -> None:
    spec = compile_spec({"inputs": {"n": {"type": "integer"}, "x": {"type": "number"},
                                    "b": {"type": "boolean"}}, "steps": STEPS})
    assert spec.check_inputs({"n": 3.0, "x": 2, "b": False}) == {"n": 3.0, "x": 2, "b": False}
    with pytest.raises(SpecError) as exc:
        spec.check_inputs({"n": True, "x": "1", "b": 0})
    assert problems_of(exc) == ["inputs.n: expected integer, got true",
                                'inputs.x: expected number, got "1"',
                                "inputs.b: expected boolean, got 0"]


def test_without_an_inputs_block_any_inputs_are_accepted() -> None:
    backend = rfx.Backend()
    wf_id = backend.create({"steps": STEPS}, {"anything": [1, 2], "else": None})
    assert backend.load(wf_id).inputs == {"anything": [1, 2], "else": None}


def test_an_empty_inputs_block_accepts_no_inputs() -> None:
    spec = compile_spec({"inputs": {}, "steps": STEPS})
    assert spec.check_inputs({}) == {}
    with pytest.raises(SpecError, match="not a declared input; the spec declares: none"):
        spec.check_inputs({"x": 1})


def test_an_optional_input_without_default_stays_absent() -> None:
    spec = compile_spec({"inputs": {"m": {"type": "string", "required": False}},
                         "steps": STEPS})
    assert spec.check_inputs({}) == {}


@pytest.mark.parametrize(("declaration", "problem"), [
    ({"type": "text"}, "inputs.x.type: expected one of"),
    ({"type": "integer", "default": "3"}, 'inputs.x.default: expected integer, got "3"'),
    ({"enum": ["a", "b"], "default": "c"}, "inputs.x.default: expected one of"),
    ({"type": "string", "required": True, "default": "a"}, "inputs.x: required and has a "
                                                           "default"),
    ({"type": "string", "requried": True}, "inputs.x.requried: unknown field 'requried' "
                                           "(did you mean 'required'?)"),
    ({"enum": []}, "inputs.x.enum: needs at least 1 item(s)"),
    ({"required": "yes"}, 'inputs.x.required: expected boolean, got "yes"'),
    ("string", "inputs.x: must be a mapping"),
])
def test_bad_declarations_are_spec_errors(declaration: Any, problem: str) -> None:
    with pytest.raises(SpecError) as exc:
        compile_spec({"inputs": {"x": declaration}, "steps": STEPS})
    assert any(problem in p for p in problems_of(exc)), problems_of(exc)


def test_inputs_must_be_a_mapping() -> None:
    with pytest.raises(SpecError, match="inputs: must be a mapping"):
        compile_spec({"inputs": ["zip"], "steps": STEPS})


# -- the command line ----------------------------------------------------------------------


def test_string_inputs_keep_the_text_as_typed() -> None:
    typed = ["zip=12345", "version=1.10", "flag=true", "count=3"]
    assert parse_inputs(typed, None, {"zip", "version", "flag"}) == {
        "zip": "12345", "version": "1.10", "flag": "true", "count": 3}
    # Not declared as strings: JSON when it parses ("01234" is not JSON: a string anyway).
    assert parse_inputs([*typed, "code=01234"], None) == {
        "zip": 12345, "version": 1.1, "flag": True, "count": 3, "code": "01234"}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    monkeypatch.delenv("RUNFOX_EXECUTOR", raising=False)
    path = tmp_path / "wf.yaml"
    path.write_text(json.dumps(DECLARED), encoding="utf-8")
    return str(path)


def test_help_inputs_lists_the_declared_inputs_and_runs_nothing(
        capsys: pytest.CaptureFixture[str], spec_file: str, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "run", spec_file, "--help-inputs")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        f"inputs of {spec_file}:",
        "  zip    string                required    postal code, leading zeros kept",
        "  count  integer               default 3   how many",
        '  mode   one of "fast"|"safe"  optional',
        "  ratio  number                optional",
        "  tags   array                 default []",
    ]
    assert not (tmp_path / "runfox.db").exists()


def test_run_passes_declared_string_inputs_as_text(
        capsys: pytest.CaptureFixture[str], spec_file: str) -> None:
    code, out, err = run_cli(capsys, "run", spec_file, "--backend", "memory://", "--executor",
                             "cli_executor:execute", "-q", "--input", "zip=12345",
                             "--input", "count=4", "--input", "mode=safe")
    assert code == 0, err
    assert json.loads(out) == {"seen": {"zip": "12345", "count": 4, "mode": "safe",
                                        "tags": []}}


def test_run_refuses_bad_inputs_before_creating_anything(
        capsys: pytest.CaptureFixture[str], spec_file: str, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "start", spec_file, "--backend",
                             f"sqlite:///{tmp_path / 'x.db'}", "--input", "count=many")
    assert code == 2 and out == ""
    assert "invalid workflow inputs" in err and "inputs.zip: missing" in err
    assert 'inputs.count: expected integer, got "many"' in err
