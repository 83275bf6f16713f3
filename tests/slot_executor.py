"""The executor of the concurrency-limit tests, importable by ``runfox worker``.

Every call appends ``<pid> start|end <step> <epoch seconds>`` to
``$RUNFOX_TEST_LOG`` (one ``write`` on an ``O_APPEND`` descriptor, so lines from
several processes do not interleave), sleeps ``inputs["seconds"]`` and returns
``{"step": ...}``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from proctools import append_line


def _log(event: str, step: str) -> None:
    append_line(f"{os.getpid()} {event} {step} {time.time():.6f}")


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    step = str(inputs["step"])
    _log("start", step)
    time.sleep(float(inputs.get("seconds", 0.0)))
    _log("end", step)
    return {"step": step}


def fan_spec(width: int, seconds: float, limit: int) -> dict[str, Any]:
    """``width`` independent steps sharing the ``gpu`` key with ``limit``."""
    return {
        "name": "gpu-fan",
        "defaults": {"max_attempts": 3, "concurrency": {"key": "gpu", "limit": limit}},
        "steps": [{"id": f"s{i}", "fn": "work", "input": {"step": f"s{i}", "seconds": seconds}}
                  for i in range(width)],
    }
