"""An executor and helpers for the CLI and multi-process tests, importable by subprocesses.

Every call appends ``<pid> start|end <tag> <step>`` to the file named by
``$RUNFOX_TEST_LOG`` (one ``write`` on an ``O_APPEND`` descriptor, so lines from
several processes do not interleave), which lets a test count executions.
"""

from __future__ import annotations

import os
import time
from typing import Any


def _log(event: str, inputs: dict[str, Any]) -> None:
    path = os.environ.get("RUNFOX_TEST_LOG")
    if not path:
        return
    line = f"{os.getpid()} {event} {inputs.get('tag', '-')} {inputs.get('step', '-')}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    _log("start", inputs)
    if fn == "slow":
        time.sleep(float(inputs.get("seconds", 1.0)))
    if fn == "boom":
        raise RuntimeError("boom")
    if fn in ("part", "slow"):
        output = {f"v{inputs['i']}": inputs["n"] * inputs["i"]}
    elif fn == "total":
        output = {"total": sum(v for k, v in inputs["state"].items() if k.startswith("v"))}
    elif fn == "echo":
        output = {k: v for k, v in inputs.items() if k not in ("tag", "step")}
    else:
        raise ValueError(f"unknown fn {fn!r}")
    _log("end", inputs)
    return output


def wide_spec(width: int, fn: str = "part", **extra: Any) -> dict[str, Any]:
    """``first`` -> ``width`` parallel parts -> ``total``: ``width + 2`` steps.

    The outcome is ``n * sum(range(width + 1))`` (parts 1..width, ``first`` is 0).
    """
    def step(i: int, **fields: Any) -> dict[str, Any]:
        return {"id": f"p{i}", "fn": fn, **fields,
                "input": {"i": i, "n": {"var": "input.n"}, "tag": {"var": "input.tag"},
                          "step": f"p{i}", **extra}}

    steps = [step(0) | {"fn": "part"}]
    steps += [step(i, depends_on=["p0"]) for i in range(1, width + 1)]
    steps.append({"id": "total", "fn": "total", "depends_on": [f"p{i}" for i in
                                                              range(1, width + 1)],
                  "input": {"state": {"var": "state"}, "tag": {"var": "input.tag"},
                            "step": "total"}})
    return {"name": f"wide-{width}", "steps": steps,
            "outputs": {"total": {"var": "steps.total.output.total"}}}


def apply_share(url: str, wf_id: str, jobs: list[dict[str, Any]], start: Any) -> None:
    """Child process of the racing test: apply ``jobs``' results once ``start`` is set."""
    from contract import fan_executor

    from runfox.backend.urls import backend_from_url

    backend = backend_from_url(url)
    try:
        start.wait(60)
        for job in jobs:
            output = fan_executor(job["fn"], job["inputs"])
            backend.on_step_result(wf_id, job["step_id"], output, job["run_id"])
    finally:
        backend.store.close()
        backend.runner.close()
