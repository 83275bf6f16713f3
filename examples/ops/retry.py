"""Retry: a flaky step is attempted again, with backoff, until it succeeds or gives up.

The executor talks to a simulated service that is "down" for its first few calls
(deterministically: the number of outages is part of the input) and raises
``ConnectionError`` while it is. A raised exception, like an output with
``ok: false``, is a failed attempt. The step allows 4 attempts with exponential
backoff starting at 0.05 s, so the waits are 0.05 s, 0.1 s, 0.2 s.

The first run recovers on attempt 3. The second uses the same spec against a
service that stays down: the budget runs out and ``run()`` returns ``Failed``
naming the step and the last error.

Run from the repository root:  python examples/ops/retry.py
"""

from __future__ import annotations

import json
import time
from typing import Any

import runfox as rfx

SPEC = """
name: fetch-tide-table
steps:
  - id: fetch
    fn: fetch_tides
    input:
      port: {"var": "input.port"}
      outages: {"var": "input.outages"}
    max_attempts: 4
    retry: {backoff: exponential, delay: 0.05, max_delay: 1}
outputs:
  port: {"var": "steps.fetch.output.port"}
  high_water: {"var": "steps.fetch.output.high_water"}
"""

# One entry per call of the executor: (port, call number, start time, what happened).
# time.time() is the clock the Backend schedules retries with, so the gaps compare fairly.
CALLS: list[tuple[str, int, float, str]] = []


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn != "fetch_tides":
        raise ValueError(f"unknown fn {fn!r}")
    port = inputs["port"]
    number = 1 + sum(1 for c in CALLS if c[0] == port)
    if number <= inputs["outages"]:
        CALLS.append((port, number, time.time(), "refused"))
        raise ConnectionError(f"tide service refused call {number}")
    CALLS.append((port, number, time.time(), "answered"))
    return {"port": port, "high_water": ["05:42", "18:07"]}


def report(port: str, result: rfx.Complete | rfx.Halt | rfx.Failed | rfx.Cancelled) -> None:
    policy = rfx.RetryPolicy(backoff="exponential", delay=0.05, max_delay=1)
    calls = [c for c in CALLS if c[0] == port]
    for i, (_, number, started, what) in enumerate(calls):
        line = f"  attempt {number}: {what}"
        if i:
            planned = policy.delay_for(i)
            waited = started - calls[i - 1][2] >= planned
            line += f" (planned wait {planned:g} s, waited at least that: {waited})"
        print(line)
    print(f"  result: {type(result).__name__}")
    if isinstance(result, rfx.Failed):
        print(f"  failed step: {result.step_id}, attempts: {result.outcome['attempts']}")
        print(f"  error: {result.error['type']}: {result.error['message']}")
    else:
        print(f"  outcome: {json.dumps(result.outcome, sort_keys=True)}")


def main() -> None:
    backend = rfx.Backend(executor=execute)

    print("service down for 2 calls:")
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"port": "Kestrel Bay", "outages": 2})
    result = wf.run(timeout=10)
    report("Kestrel Bay", result)
    print(f"  attempts recorded on the step: {wf.record.steps['fetch'].attempts}")

    print("service down for 10 calls:")
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"port": "Gull Point", "outages": 10})
    report("Gull Point", wf.run(timeout=10))
    print(f"  workflow status: {wf.status.value}")


if __name__ == "__main__":
    main()
