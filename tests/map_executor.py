"""The executor of the multi-process map tests, importable by ``runfox worker``.

``ls`` lists ``input.n`` numbers; ``work`` squares one item after ``seconds`` of
sleep. Every ``work`` call appends ``<pid> start|end <index> <nonce>`` to
``$RUNFOX_TEST_LOG`` (``proctools.append_line``), and its output carries the nonce,
so a test can tell which call's result was stored and count calls per item.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from proctools import append_line

_CALLS = itertools.count()


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "ls":
        return {"xs": list(range(inputs["n"]))}
    if fn == "work":
        index = inputs["index"]
        nonce = f"{os.getpid()}.{next(_CALLS)}"
        append_line(f"{os.getpid()} start {index} {nonce}")
        time.sleep(float(inputs.get("seconds", 0.0)))
        append_line(f"{os.getpid()} end {index} {nonce}")
        return {"y": inputs["x"] * inputs["x"], "index": index, "nonce": nonce}
    raise ValueError(f"unknown fn {fn!r}")


def map_spec(seconds: float, max_attempts: int = 3) -> dict[str, Any]:
    """``ls`` -> ``each`` (a map over ``ls``'s list) -> ``done``."""
    return {"name": "map-kill", "steps": [
        {"id": "ls", "fn": "ls", "input": {"n": {"var": "input.n"}}},
        {"id": "each", "fn": "work", "map": {"var": "steps.ls.output.xs"},
         "max_attempts": max_attempts,
         "input": {"x": {"var": "item"}, "index": {"var": "index"}, "seconds": seconds}},
    ], "outputs": {"ys": {"var": "steps.each.output"}}}
