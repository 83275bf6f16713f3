"""The executor of the greeting example: plain functions, no runfox import."""

from __future__ import annotations

from typing import Any


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run step function ``fn`` on its resolved ``inputs``; return its output."""
    if fn == "greet":
        return {"text": f"hello, {inputs['name']}"}
    if fn == "shout":
        return {"text": inputs["text"].upper()}
    if fn == "count":
        return {"letters": sum(ch.isalpha() for ch in inputs["text"])}
    raise ValueError(f"unknown step function {fn!r}")
