"""Single step: the smallest useful workflow.

One step runs through the executor; the workflow's ``outputs`` map the fields of
that step's output into the outcome that ``run()`` returns.

Run from the repository root:  python examples/ops/single_step.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

SPEC = """
name: measure-a-line
steps:
  - id: measure
    fn: measure_text
    input:
      text: {"var": "input.line"}
outputs:
  words: {"var": "steps.measure.output.words"}
  letters: {"var": "steps.measure.output.letters"}
  longest: {"var": "steps.measure.output.longest"}
"""


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The executor: a plain function from a name and inputs to a JSON dict."""
    if fn == "measure_text":
        words = inputs["text"].split()
        return {
            "words": len(words),
            "letters": sum(ch.isalpha() for ch in inputs["text"]),
            "longest": max(words, key=len),
        }
    raise ValueError(f"unknown fn {fn!r}")


def main() -> None:
    backend = rfx.Backend(executor=execute)
    line = "the kettle sang twice before anyone noticed"
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"line": line})
    result = wf.run()
    print(f"input: {line!r}")
    print(f"result: {type(result).__name__}")
    print(f"status: {wf.status.value}")
    print(f"steps: {json.dumps({k: v.value for k, v in wf.step_statuses.items()})}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
