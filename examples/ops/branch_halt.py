"""Branch and halt: a condition on a step's output stops the workflow early.

``check_stock`` compares the requested quantity with what the warehouse holds. Its
branch condition sees the step's output keys at the top level (``requested``,
``on_shelf``); when it is true the ``halt`` action ends the workflow at once with
the branch's ``result`` as the payload, and the steps that had not run yet are
skipped. The script runs the same spec twice: one order that halts and one that
goes through to the end.

Run from the repository root:  python examples/ops/branch_halt.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

SPEC = """
name: pick-and-pack
steps:
  - id: check_stock
    fn: check_stock
    input:
      sku: {"var": "input.sku"}
      quantity: {"var": "input.quantity"}
    branch:
      - condition: {">": [{"var": "requested"}, {"var": "on_shelf"}]}
        action: halt
        result:
          status: backordered
          sku: {"var": "input.sku"}
          short_by: {"-": [{"var": "requested"}, {"var": "on_shelf"}]}

  - id: reserve
    fn: reserve
    depends_on: [check_stock]
    input:
      sku: {"var": "input.sku"}
      quantity: {"var": "input.quantity"}

  - id: label
    fn: label
    depends_on: [reserve]
    input:
      reservation: {"var": "steps.reserve.output.reservation"}

outputs:
  status: packed
  reservation: {"var": "steps.reserve.output.reservation"}
  label: {"var": "steps.label.output.label"}
"""

SHELF = {"brass-hinge": 40, "oak-dowel": 6}


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "check_stock":
        return {"requested": inputs["quantity"], "on_shelf": SHELF.get(inputs["sku"], 0)}
    if fn == "reserve":
        return {"reservation": f"RSV-{inputs['sku'][:4].upper()}-{inputs['quantity']:03d}"}
    if fn == "label":
        return {"label": f"PARCEL/{inputs['reservation']}"}
    raise ValueError(f"unknown fn {fn!r}")


def run_order(backend: rfx.Backend, order: dict[str, Any]) -> None:
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs=order)
    result = wf.run()
    print(f"order {json.dumps(order, sort_keys=True)}")
    print(f"  result: {type(result).__name__} (workflow status {wf.status.value})")
    print(f"  steps: {json.dumps({k: v.value for k, v in wf.step_statuses.items()})}")
    print(f"  outcome: {json.dumps(result.outcome, sort_keys=True)}")


def main() -> None:
    backend = rfx.Backend(executor=execute)
    run_order(backend, {"sku": "oak-dowel", "quantity": 10})
    run_order(backend, {"sku": "brass-hinge", "quantity": 12})


if __name__ == "__main__":
    main()
