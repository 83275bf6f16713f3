"""Executors that misbehave, importable by reference ("fault_executors:faulty") from
worker processes: they exit, kill themselves, raise BaseExceptions, hang or return
outputs too deep to encode."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def deep(depth: int) -> dict[str, Any]:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return {"deep": value}


def faulty(fn: str, inputs: dict[str, Any]) -> Any:
    if "pidfile" in inputs:
        Path(inputs["pidfile"]).write_text(str(os.getpid()))
    if fn == "ok":
        return {"pid": os.getpid(), **inputs.get("out", {})}
    if fn == "exit":
        os._exit(inputs.get("code", 3))
    if fn == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fn == "sys_exit":
        sys.exit(inputs.get("code", 2))
    if fn == "interrupt":
        raise KeyboardInterrupt
    if fn == "sleep":
        time.sleep(inputs["seconds"])
        return {"slept": True}
    if fn == "deep":
        return deep(inputs["depth"])
    raise ValueError(f"unknown fn {fn!r}")
