"""Accumulation: steps build up the shared ``state`` one field at a time.

Every step's output is merged into the workflow's shared state (the latest write
of a key wins). Later steps read what earlier ones wrote through ``state.*``
instead of naming the step that produced it, and so do the ``outputs``. An
``on_state_change`` callback prints what each merge added or changed.

Amounts are in cents so that the arithmetic stays exact.

Run from the repository root:  python examples/ops/accumulation.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

SPEC = """
name: workshop-invoice
steps:
  - id: price_items
    fn: price_items
    input:
      items: {"var": "input.items"}

  - id: discount
    fn: discount
    depends_on: [price_items]
    input:
      subtotal: {"var": "state.subtotal"}
      coupon: {"var": "input.coupon"}

  - id: shipping
    fn: shipping
    depends_on: [price_items]
    input:
      parcels: {"var": "state.parcels"}

  - id: tax
    fn: tax
    depends_on: [discount]
    input:
      taxable: {"-": [{"var": "state.subtotal"}, {"var": "state.discount"}]}

  - id: total
    fn: total
    depends_on: [tax, shipping]
    input:
      state: {"var": "state"}

outputs:
  subtotal: {"var": "state.subtotal"}
  discount: {"var": "state.discount"}
  shipping: {"var": "state.shipping"}
  tax: {"var": "state.tax"}
  total: {"var": "state.total"}
  last_stage: {"var": "state.stage"}
"""

PRICES = {"chisel": 1450, "mallet": 2200, "whetstone": 975, "apron": 3100}
COUPONS = {"SPRING10": 10, "FRIEND5": 5}  # percent off


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "price_items":
        items = inputs["items"]
        subtotal = sum(PRICES[name] * qty for name, qty in items.items())
        count = sum(items.values())
        return {"subtotal": subtotal, "parcels": (count + 2) // 3, "stage": "priced"}
    if fn == "discount":
        percent = COUPONS.get(inputs["coupon"] or "", 0)
        return {"discount": inputs["subtotal"] * percent // 100, "stage": "discounted"}
    if fn == "shipping":
        return {"shipping": 495 * inputs["parcels"], "stage": "shipping quoted"}
    if fn == "tax":
        return {"tax": inputs["taxable"] * 20 // 100, "stage": "taxed"}
    if fn == "total":
        s = inputs["state"]
        return {"total": s["subtotal"] - s["discount"] + s["tax"] + s["shipping"],
                "stage": "totalled"}
    raise ValueError(f"unknown fn {fn!r}")


def show_merge(wf_id: str, previous: dict[str, Any], new: dict[str, Any],
               event: Any) -> None:
    """on_state_change: print the keys one merge added or overwrote."""
    added = {k: v for k, v in new.items() if k not in previous}
    changed = {k: v for k, v in new.items() if k in previous and previous[k] != v}
    print(f"  {event.step_id:<12} added {json.dumps(added, sort_keys=True)}"
          f" changed {json.dumps(changed, sort_keys=True)}")


def main() -> None:
    backend = rfx.Backend(executor=execute, on_state_change=show_merge)
    order = {"items": {"chisel": 2, "mallet": 1, "whetstone": 3}, "coupon": "SPRING10"}
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs=order)
    print("state merges:")
    result = wf.run()
    print(f"final state: {json.dumps(wf.state, sort_keys=True)}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
