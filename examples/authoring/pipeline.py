"""``(x + y) * k`` with steps written as plain Python: ``runfox.Registry``.

The pyswark example, in runfox: three steps registered on one registry, which is
the executor itself (``Backend(executor=registry)``; on the command line
``runfox run spec.yaml --executor mypkg.steps:registry``):

- ``add`` is a plain function; its return value is not a dict, so the step's
  output is ``{"result": x + y}``;
- ``multiply`` is ``async def``: harnesses await it on an event loop;
- ``Report`` is a class step: configuration as class attributes, a new
  instance for every call, ``runfox.context()`` read inside ``run``.

Inputs fill parameters by name: a missing or unknown input fails the attempt
before the function is called (the last run shows it).

Every step is cached (``defaults: {cache: true}``), so ``wf.rerun()`` (pyswark's
``runner.rerun()``) is a new execution whose unchanged steps come from the step
cache without calling the registry; with ``k`` changed, only ``multiply`` and what
reads it run again. ``step_inputs``/``step_output`` are pyswark's
``getModelInput``/``getModelOutput``.

Run from the repository root:  python examples/authoring/pipeline.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import runfox as rfx

registry = rfx.Registry()


@registry.step
def add(x: float, y: float) -> float:
    return x + y


@registry.step(name="multiply", version=1)
async def multiply(value: float, k: float) -> dict[str, Any]:
    await asyncio.sleep(0)  # a real step would await I/O here
    return {"product": value * k}


@registry.step
class Report:
    name = "report"
    unit = "widgets"

    def run(self, total: float) -> dict[str, Any]:
        ctx = rfx.context()
        return {"line": f"{total:g} {self.unit}", "step": ctx.step_id, "attempt": ctx.attempt}


# No depends_on: each step depends on the steps its input reads.
SPEC = """
name: sum-then-scale
defaults: {cache: true}
steps:
  - id: add
    fn: add
    input: {x: {"var": "input.x"}, y: {"var": "input.y"}}
  - id: multiply
    fn: multiply
    input: {value: {"var": "steps.add.output.result"}, k: {"var": "input.k"}}
  - id: report
    fn: report
    input: {total: {"var": "steps.multiply.output.product"}}
outputs:
  total: {"var": "steps.multiply.output.product"}
  report: {"var": "steps.report.output"}
"""


def main() -> None:
    backend = rfx.Backend(executor=registry)
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"x": 2, "y": 3, "k": 4})
    result = wf.run(timeout=10)
    print(f"result: {type(result).__name__}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")
    print(f"multiply: {json.dumps(registry.describe('multiply'), sort_keys=True)}")
    print(f"ran: {', '.join(wf.steps_ran)}")
    print(f"input of add: {json.dumps(wf.step_inputs('add'), sort_keys=True)}, "
          f"output: {json.dumps(wf.step_output('add'), sort_keys=True)}")

    again = wf.rerun(timeout=10)
    print(f"rerun: {type(again.result).__name__}, ran [{', '.join(again.ran)}], "
          f"from the cache [{', '.join(again.cached)}], total {again.result.outcome['total']}")
    changed = wf.rerun({"k": 5}, timeout=10)
    print(f"rerun with k=5: ran [{', '.join(changed.ran)}], from the cache "
          f"[{', '.join(changed.cached)}], total {changed.result.outcome['total']}")

    broken = SPEC.replace('{x: {"var": "input.x"}, y: {"var": "input.y"}}',
                          '{x: {"var": "input.x"}, why: {"var": "input.y"}}')
    failed = rfx.Workflow.from_yaml(broken, backend, inputs={"x": 2, "y": 3, "k": 4}).run()
    print(f"with a misspelt input: {type(failed).__name__}")
    error = failed.outcome["error"]
    print(f"  {error['type']}: {error['message']}")


if __name__ == "__main__":
    main()
