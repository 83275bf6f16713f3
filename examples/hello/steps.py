"""The executor for examples/hello/pipeline.yaml: plain functions, no runfox imports."""

from __future__ import annotations

from typing import Any


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "greet":
        return {"greeting": f"Hello, {inputs['name']}!"}
    if fn == "describe":
        text = str(inputs["text"])
        return {"letters": sum(c.isalpha() for c in text),
                "vowels": sum(c.lower() in "aeiou" for c in text)}
    if fn == "report":
        return {"message": f"{inputs['greeting']} Your name has {inputs['letters']} letters, "
                           f"{inputs['vowels']} of them vowels."}
    raise ValueError(f"unknown fn {fn!r}")
