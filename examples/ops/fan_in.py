"""Fan-in: parallel steps joined by one step that reads all of their outputs.

Three weather stations are read in parallel; ``combine`` depends on all three and
runs only when every one of them has completed. It collects the temperatures with
``vars``, runfox's JSONPath operator (``steps.*.output.celsius`` matches that
field in every step that has produced it), and the rainfall with one plain
``var`` per station, to show both ways of reading several outputs.

Run from the repository root:  python examples/ops/fan_in.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

SPEC = """
name: station-roundup
steps:
  - id: north_ridge
    fn: read_station
    input: {station: north_ridge}
  - id: river_mouth
    fn: read_station
    input: {station: river_mouth}
  - id: old_mill
    fn: read_station
    input: {station: old_mill}

  - id: combine
    fn: combine
    depends_on: [north_ridge, river_mouth, old_mill]
    input:
      stations: {"vars": "steps.*.output.station"}
      celsius: {"vars": "steps.*.output.celsius"}
      rain_mm:
        - {"var": "steps.north_ridge.output.rain_mm"}
        - {"var": "steps.river_mouth.output.rain_mm"}
        - {"var": "steps.old_mill.output.rain_mm"}

outputs:
  readings: {"var": "steps.combine.output.readings"}
  mean_celsius: {"var": "steps.combine.output.mean_celsius"}
  spread_celsius: {"var": "steps.combine.output.spread_celsius"}
  wettest: {"var": "steps.combine.output.wettest"}
"""

# What each (simulated) station reports: temperature in tenths of a degree, rain in mm.
STATIONS = {
    "north_ridge": (62, 4),
    "river_mouth": (118, 11),
    "old_mill": (97, 0),
}


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "read_station":
        tenths, rain = STATIONS[inputs["station"]]
        return {"station": inputs["station"], "celsius": tenths / 10, "rain_mm": rain}
    if fn == "combine":
        names, temps, rain = inputs["stations"], inputs["celsius"], inputs["rain_mm"]
        return {
            "readings": len(temps),
            "mean_celsius": round(sum(temps) / len(temps), 2),
            "spread_celsius": round(max(temps) - min(temps), 2),
            "wettest": names[rain.index(max(rain))],
        }
    raise ValueError(f"unknown fn {fn!r}")


def main() -> None:
    backend = rfx.Backend(executor=execute)
    wf = rfx.Workflow.from_yaml(SPEC, backend)
    rounds: list[int] = []
    result = wf.run(on_progress=lambda w: rounds.append(w.progress["in_progress"]))
    print(f"steps in flight at each round: {rounds}")
    for sid, step in wf.record.steps.items():
        if sid != "combine":
            print(f"  {sid:<12} {json.dumps(step.output, sort_keys=True)}")
    print(f"result: {type(result).__name__}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
