"""The executor of the chaos tests and benchmarks, importable by ``runfox worker``.

Every call appends ``<pid> start|end <tag> <step> <nonce>`` to ``$RUNFOX_TEST_LOG``
(one ``write`` on an ``O_APPEND`` descriptor, so lines from several processes do
not interleave). The output carries the same ``nonce``, so a test can check that
the result stored for a step came from a call that really finished.

``dag_spec`` builds the workflow: ``p0`` -> ``p1``..``p8`` -> ``total``, ten steps
whose outcome is exactly ``n * 36``.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from proctools import append_line

_CALLS = itertools.count()
WIDTH = 8


def _log(event: str, inputs: dict[str, Any], nonce: str) -> None:
    append_line(f"{os.getpid()} {event} {inputs.get('tag', '-')} {inputs.get('step', '-')} "
                f"{nonce}")


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    nonce = f"{os.getpid()}.{next(_CALLS)}"
    _log("start", inputs, nonce)
    time.sleep(float(inputs.get("seconds", 0.0)))
    step = inputs["step"]
    if fn == "part":
        output: dict[str, Any] = {f"v{inputs['i']}": inputs["n"] * inputs["i"]}
    elif fn == "total":
        output = {"total": sum(v for k, v in inputs["state"].items()
                               if k.startswith("v") and isinstance(v, int))}
    else:
        raise ValueError(f"unknown fn {fn!r}")
    output[f"nonce_{step}"] = nonce
    _log("end", inputs, nonce)
    return output


def dag_spec(seconds: float = 0.0, max_attempts: int = 3) -> dict[str, Any]:
    """``p0`` -> ``p1``..``p8`` -> ``total``; outcome ``{"total": n * 36}``."""
    def step(i: int, **fields: Any) -> dict[str, Any]:
        return {"id": f"p{i}", "fn": "part", **fields,
                "input": {"i": i, "n": {"var": "input.n"}, "tag": {"var": "input.tag"},
                          "step": f"p{i}", "seconds": seconds}}

    steps = [step(0)] + [step(i, depends_on=["p0"]) for i in range(1, WIDTH + 1)]
    steps.append({"id": "total", "fn": "total",
                  "depends_on": [f"p{i}" for i in range(1, WIDTH + 1)],
                  "input": {"state": {"var": "state"}, "tag": {"var": "input.tag"},
                            "step": "total", "seconds": seconds}})
    return {"name": "chaos", "defaults": {"max_attempts": max_attempts}, "steps": steps,
            "outputs": {"total": {"var": "steps.total.output.total"}}}


def expected_total(n: int) -> int:
    return n * sum(range(WIDTH + 1))
