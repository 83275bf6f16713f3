"""Steps written with ``runfox.Registry``: sync, async and class steps in one registry.

Importable as ``authoring_steps:registry`` (tests on ``sys.path``) by ``runfox run``
and ``runfox worker`` subprocesses, and by ``ProcessSlots`` children.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import runfox

registry = runfox.Registry()


@registry.step
def add(x: int, y: int) -> int:
    """Sync, returns a non-dict: ``{"result": x + y}``."""
    return x + y


@registry.step(name="scale", version=2, cache=True)
async def scale_async(value: int, k: int = 1) -> dict[str, Any]:
    """Async; yields to the loop before answering."""
    await asyncio.sleep(0.01)
    return {"value": value * k}


@registry.step
class Describe:
    """A class step: configuration as class attributes, a new instance per call."""

    name = "describe"
    version = 1
    prefix = "total"

    def run(self, value: int) -> dict[str, Any]:
        return {"text": f"{self.prefix}={value}", "pid": os.getpid()}


@registry.step
def where(**kwargs: Any) -> dict[str, Any]:
    """Reports its runfox.context() and any extra inputs."""
    ctx = runfox.context()
    return {"execution": ctx.workflow_execution_id, "step": ctx.step_id,
            "run_id": ctx.run_id, "attempt": ctx.attempt, "fn": ctx.fn,
            "pid": os.getpid(), "extra": sorted(kwargs)}


@registry.step(name="where_async")
async def where_async() -> dict[str, Any]:
    ctx = runfox.context()
    await asyncio.sleep(0)
    return {"execution": ctx.workflow_execution_id, "step": ctx.step_id,
            "run_id": ctx.run_id, "attempt": ctx.attempt, "fn": ctx.fn}


@registry.step
def wait_for_cancel(limit: float = 20.0) -> dict[str, Any]:
    """Polls ``cancelled`` (with heartbeats) until it flips or ``limit`` seconds pass."""
    ctx = runfox.context()
    deadline = time.monotonic() + limit
    beats = 0
    while time.monotonic() < deadline:
        beats += 1
        if ctx.heartbeat():
            return {"cancelled": True, "beats": beats}
        time.sleep(0.02)
    return {"cancelled": False, "beats": beats}


@registry.step(name="wait_for_cancel_async")
async def wait_for_cancel_async(limit: float = 20.0) -> dict[str, Any]:
    ctx = runfox.context()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ctx.heartbeat():
            return {"cancelled": True}
        await asyncio.sleep(0.02)
    return {"cancelled": False}


@registry.step(name="slow_async")
async def slow_async(seconds: float) -> dict[str, Any]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@registry.step(name="exit_async")
async def exit_async() -> dict[str, Any]:
    raise SystemExit(3)
