"""Products: dependencies derived from what steps produce and require (underworld3 style).

No step says ``depends_on``. A step declares the products it makes (``produces``)
and reads others with ``{"var": "products.NAME"}`` or lists them in ``requires``;
each product has one producer, and a step depends on the producers of what it
reads. A product's value is ``output[NAME]`` when the producer's output has that
key (``build_mesh`` makes two products, returned by name), else the whole output
(``make_solver``'s product ``solver``).

The script builds only the target ``evolve`` (and what it needs), shows the steps
``initial_temperature`` invalidates, invalidates it and lets the execution run
again: only those steps run a second time.

Run from the repository root:  python examples/products/convection.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

SPEC = """
name: convection
inputs:
  resolution: {type: integer, default: 5}
  iterations: {type: integer, default: 3}
steps:
  - id: build_mesh
    fn: build_mesh
    input: {resolution: {var: input.resolution}}
    produces: [mesh, coords]
  - id: initial_temperature
    fn: initial_temperature
    input: {coords: {var: products.coords}, hot: {var: [input.hot, 1.0]}}
    produces: [temperature_initial]
  - id: make_solver
    fn: make_solver
    requires: [mesh]
    input: {h: {var: products.mesh.h}}
    produces: [solver]
  - id: evolve
    fn: evolve
    input:
      solver: {var: products.solver}
      temperature: {var: products.temperature_initial}
      iterations: {var: input.iterations}
    produces: [evolution_log]
  - id: plot_mesh
    fn: plot_mesh
    input: {mesh: {var: products.mesh}}
    produces: [mesh_plot]
outputs:
  log: {var: products.evolution_log}
  plot: {var: products.mesh_plot}
"""

CALLS: list[str] = []


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """A toy 1-D heat problem; every step is deterministic."""
    CALLS.append(fn)
    if fn == "build_mesh":
        n = inputs["resolution"]
        return {"mesh": {"cells": n, "h": round(1 / n, 4)},
                "coords": [round((i + 0.5) / n, 4) for i in range(n)]}
    if fn == "initial_temperature":
        return {"temperature_initial": [round(inputs["hot"] * (1 - x), 4)
                                        for x in inputs["coords"]]}
    if fn == "make_solver":
        return {"kind": "explicit-diffusion", "weight": 0.25}
    if fn == "evolve":
        w = inputs["solver"]["weight"]
        t = list(inputs["temperature"])
        log = []
        for _ in range(inputs["iterations"]):
            t = [0.9 * (t[i] + w * (t[max(i - 1, 0)] - 2 * t[i] + t[min(i + 1, len(t) - 1)]))
                 for i in range(len(t))]  # diffusion, and 10% lost to the walls each step
            log.append(round(sum(t) / len(t), 4))
        return {"evolution_log": log}
    if fn == "plot_mesh":
        return {"mesh_plot": f"{inputs['mesh']['cells']} cells"}
    raise ValueError(f"unknown fn {fn!r}")


def main() -> None:
    plan = rfx.load_spec(SPEC)
    print("derived dependencies:")
    for step in plan.steps:
        print(f"  {step.id:<20} <- {', '.join(step.depends_on) or '-'}")
    backend = rfx.Backend(executor=execute)
    wf = rfx.Workflow.from_yaml(SPEC, backend)
    result = wf.run(targets=["evolve"])
    print(f"target evolve: {type(result).__name__}, ran {', '.join(CALLS)}")
    print(f"statuses: {json.dumps({k: v.value for k, v in wf.step_statuses.items()})}")
    print(f"evolve ran with: {json.dumps(wf.step_inputs('evolve'), sort_keys=True)}")
    print(f"what_invalidates(initial_temperature): {wf.what_invalidates('initial_temperature')}")
    CALLS.clear()
    reopened = wf.invalidate("initial_temperature")
    print(f"reopened: {reopened}; workflow {wf.status.value}")
    result = wf.run()
    print(f"rerun: {type(result).__name__}, ran {', '.join(CALLS)}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
