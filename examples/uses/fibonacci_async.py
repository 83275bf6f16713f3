"""Fibonacci as a loop, driven asynchronously: a worker thread executes, the caller polls.

The same numbers as ``fibonacci.py``, computed by one step that goes round a loop:
``next`` reads the last two terms from the shared state, appends the next one, and
its ``set`` branch sends it round again until the requested term is reached.

Nothing here runs jobs in the calling thread. The Backend has no executor; its
in-process runner is the queue between two threads:

- a ``runfox.worker.Worker`` in a background thread takes jobs from the queue,
  runs the executor on its own thread pool and submits the results;
- the main thread calls ``wf.run()`` with no worker, which dispatches ready steps,
  polls the runner for results every ``poll_interval`` and applies them.

The executor records the thread it ran on, so the script can show that every job
ran off the main thread.

Run from the repository root:  python examples/uses/fibonacci_async.py
"""

from __future__ import annotations

import json
import threading
from typing import Any

import runfox as rfx
from runfox.worker import Worker

SPEC = """
name: fibonacci-loop
steps:
  - id: seed
    fn: seed
    input: {first: 0, second: 1}

  - id: next
    fn: next_term
    depends_on: [seed]
    input:
      terms: {"var": "state.terms"}
    branch:
      - condition: {"<": [{"var": "count"}, {"+": [{"var": "input.last"}, 1]}]}
        action: {set: steps.next.status, value: ready}
      - condition: true
        action: complete

outputs:
  last: {"var": "state.latest"}
  terms: {"var": "state.terms"}
"""

RAN_ON: list[str] = []  # the thread that ran each job, in order


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    RAN_ON.append(threading.current_thread().name)
    if fn == "seed":
        terms = [inputs["first"], inputs["second"]]
    elif fn == "next_term":
        old = inputs["terms"]
        terms = [*old, old[-2] + old[-1]]
    else:
        raise ValueError(f"unknown fn {fn!r}")
    return {"terms": terms, "count": len(terms), "latest": terms[-1]}


def main() -> None:
    backend = rfx.Backend(poll_interval=0.01)  # no executor: run() only polls
    worker = Worker(backend, execute, concurrency=1, poll_interval=0.005, drive=False,
                    name="fib-worker")
    worker_thread = threading.Thread(target=worker.run, name="worker-loop", daemon=True)
    worker_thread.start()

    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"last": 20})
    try:
        result = wf.run(timeout=20)
    finally:
        worker.stop()
        worker_thread.join(timeout=5)

    print(f"result: {type(result).__name__}")
    print(f"F(20) = {result.outcome['last']}")
    print(f"jobs run by the worker: {worker.stats.jobs}")
    print(f"'next' went round the loop {wf.record.steps['next'].run_id + 1} times")
    print(f"jobs run on the main thread: {RAN_ON.count(threading.main_thread().name)}")
    print(f"worker thread still alive: {worker_thread.is_alive()}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
