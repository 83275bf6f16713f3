"""An executor for tests/test_derived.py's CLI tests (``derived_executor:execute``).

``add`` returns ``{"v": x + k}``; it fails (``ok: false``) while the file named by
its ``fail_if`` input exists, so a test can make a step fail and then recover.
"""

from __future__ import annotations

import os
from typing import Any


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn != "add":
        raise ValueError(f"unknown fn {fn!r}")
    flag = inputs.get("fail_if")
    if flag and os.path.exists(flag):
        return {"ok": False, "error": f"{flag} exists"}
    return {"v": inputs.get("x", 0) + inputs.get("k", 1)}
