"""Executors importable by reference ("executors:name") from worker processes."""

from __future__ import annotations

import os
import time
from typing import Any


def arithmetic(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "seed":
        return {"n": inputs["n"]}
    if fn == "leaf":
        return {f"k{inputs['i']}": inputs["i"] * inputs["n"], "pid": os.getpid()}
    if fn == "sink":
        return {"total": sum(v for k, v in inputs["state"].items() if k.startswith("k"))}
    if fn == "sleep":
        time.sleep(inputs.get("seconds", 0.1))
        return {"slept": True}
    raise ValueError(f"unknown fn {fn!r}")


NOT_CALLABLE = 42
