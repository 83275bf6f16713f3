"""The executor of the sub-workflow example: one function serves the parent (``total``,
``receipt``) and the child (``pack``, ``label``); no runfox import."""

from __future__ import annotations

from typing import Any

BOX_GRAMS = 1000


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run step function ``fn`` on its resolved ``inputs``; return its output."""
    if fn == "total":
        items = inputs["items"]
        return {"total": sum(i["price"] for i in items), "grams": sum(i["grams"] for i in items)}
    if fn == "pack":
        return {"boxes": -(-inputs["grams"] // BOX_GRAMS)}
    if fn == "label":
        street = "".join(ch for ch in inputs["address"].upper() if ch.isalnum())
        return {"tracking": f"TRK-{street[:6]}-{inputs['boxes']}"}
    if fn == "receipt":
        return {"text": f"paid {inputs['total'] / 100:.2f}, tracking {inputs['tracking']}"}
    raise ValueError(f"unknown step function {fn!r}")
