"""Fibonacci as a fixed DAG: two seed steps and one ``add`` step per further term.

The spec is generated in Python: ``f0`` and ``f1`` are seeds with no
dependencies, and every ``fN`` after them depends on ``f(N-2)`` and ``f(N-1)`` and
adds their outputs. The seeds run together in the first round; after that the
chain allows one step per round. The outputs collect every term in spec order
with a ``vars`` JSONPath.

Run from the repository root:  python examples/uses/fibonacci.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

LAST = 15  # compute F(0) .. F(LAST)


def build_spec(last: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"id": "f0", "fn": "seed", "input": {"value": 0}},
        {"id": "f1", "fn": "seed", "input": {"value": 1}},
    ]
    for n in range(2, last + 1):
        steps.append({
            "id": f"f{n}",
            "fn": "add",
            "depends_on": [f"f{n - 2}", f"f{n - 1}"],
            "input": {
                "a": {"var": f"steps.f{n - 2}.output.value"},
                "b": {"var": f"steps.f{n - 1}.output.value"},
            },
        })
    return {
        "name": f"fibonacci-to-{last}",
        "steps": steps,
        "outputs": {
            "sequence": {"vars": "steps.*.output.value"},
            "last": {"var": f"steps.f{last}.output.value"},
        },
    }


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "seed":
        return {"value": inputs["value"]}
    if fn == "add":
        return {"value": inputs["a"] + inputs["b"]}
    raise ValueError(f"unknown fn {fn!r}")


def main() -> None:
    spec = build_spec(LAST)
    print("spec:")
    for step in spec["steps"][:4]:
        print(f"  {step['id']:>3}: fn={step['fn']:<4} depends_on={step.get('depends_on', [])}")
    print(f"  ... {len(spec['steps'])} steps in all")

    backend = rfx.Backend(executor=execute)
    wf = rfx.Workflow.from_dict(spec, backend)
    widths: list[int] = []
    result = wf.run(on_progress=lambda w: widths.append(w.progress["in_progress"]))
    print(f"rounds: {len(widths)}, steps per round: {widths}")
    print(f"result: {type(result).__name__}")
    print(f"F({LAST}) = {result.outcome['last']}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
