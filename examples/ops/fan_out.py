"""Fan-out: one step feeds several steps that run in parallel.

``load`` inspects a (pretend) photo; four ``resize_*`` steps each depend only on
``load``, so once it completes a single ``advance()`` claims all four and returns
them in one ``Dispatch``. The workflow is driven by hand here, the way an
event-driven service would drive it: advance, run the jobs, report each result
with ``on_step_result``, advance again. Each round prints how many jobs were
dispatched together and how many steps were in flight at that moment.

Run from the repository root:  python examples/ops/fan_out.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

WIDTHS = [160, 320, 640, 1280]

# Built as a dict: the parallel steps differ only in their target width.
SPEC: dict[str, Any] = {
    "name": "photo-renditions",
    "steps": [
        {"id": "load", "fn": "load_photo", "input": {"name": {"var": "input.photo"}}},
        *[
            {
                "id": f"resize_{w}",
                "fn": "resize",
                "depends_on": ["load"],
                "input": {
                    "target_width": w,
                    "width": {"var": "steps.load.output.width"},
                    "height": {"var": "steps.load.output.height"},
                },
            }
            for w in WIDTHS
        ],
    ],
    "outputs": {
        "photo": {"var": "steps.load.output.name"},
        "renditions": {"vars": "steps.*.output.size"},
    },
}


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "load_photo":
        return {"name": inputs["name"], "width": 4032, "height": 3024}
    if fn == "resize":
        w = inputs["target_width"]
        h = round(inputs["height"] * w / inputs["width"])
        return {"size": f"{w}x{h}"}
    raise ValueError(f"unknown fn {fn!r}")


def main() -> None:
    backend = rfx.Backend()  # no executor: this script runs the jobs itself
    wf = rfx.Workflow.from_dict(SPEC, backend, inputs={"photo": "harbour-at-dusk.jpg"})
    round_no = 0
    while True:
        result = wf.advance()
        if not isinstance(result, rfx.Dispatch):
            break
        round_no += 1
        names = ", ".join(job.step_id for job in result.jobs)
        print(f"round {round_no}: dispatched {len(result.jobs)} job(s) together: {names}")
        print(f"  in flight now: {wf.progress['in_progress']}")
        for job in result.jobs:
            output = execute(job.fn, job.inputs)
            wf.on_step_result(job.step_id, output, job.run_id)
    print(f"result: {type(result).__name__}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
