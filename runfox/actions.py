"""Branch action kinds: the one table that says what a branch may do.

A step's ``branch`` entries pair a JSON Logic ``condition`` with an ``action``.
Each kind of action is one ``ActionKind`` in ``ACTIONS``; the compiler
(``runfox.spec``), the JSON Schema (``runfox.spec_schema``) and the graph
(``runfox.graph``) all read this table and nothing else, so the three cannot
drift apart.

Checklist for adding an action kind (everything is here unless noted):

1. Write its ``schema``: the JSON Schema of the ``action:`` value.
2. Write ``matches`` (does a raw ``action:`` value mean this kind?) and
   ``parse`` (check it, report problems with their place, return the step ids
   it names; the compiler checks that those steps exist).
3. Write ``apply(outcome, targets, payload)`` with the ``BranchOutcome``
   methods; return ``None`` to let the step complete as usual. Only an outcome
   the graph cannot yet express needs a new method on ``BranchOutcome`` and on
   ``graph._BranchOutcome``.
4. Set the flags: ``absorbs_error`` (a failed attempt still takes this branch
   instead of being retried), ``keeps_result`` (``result`` is stored, so it is
   copied as JSON when the branch fires), ``exits``/``loops`` (a step with a
   looping branch needs an exiting one).
5. Add it to ``ACTIONS``; regenerate the shipped schema
   (``runfox schema > runfox/spec.schema.json``; a test compares them); describe
   it in README's spec section; test it in ``tests/test_graph.py`` and in the
   corpus of ``tests/test_spec_schema.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ACTIONS", "ActionKind", "BranchOutcome", "action_kind", "expected_actions"]

#: ``report(where, message)``: how ``parse`` reports a problem.
Report = Callable[[str, str], None]

_SET_TARGET_RE = re.compile(r"^steps\.([^.]+)\.status$")
#: The pattern of one set target, for the schema: ``steps.<id>.status`` or a bare id.
SET_TARGET_PATTERN = r"^(steps\.[^.]+\.status|[^.]+)$"
SET_VALUES = ("ready", "pending")


class BranchOutcome(Protocol):
    """What an action can make of the step whose branch fired (``graph`` implements it)."""

    def halt(self, payload: Any) -> Any:
        """Halt the step and the workflow with ``payload`` as the outcome."""

    def restart(self, targets: tuple[str, ...]) -> Any:
        """Reset ``targets``, the step itself and everything downstream to ``ready``."""


@dataclass(frozen=True, slots=True)
class ActionKind:
    """One kind of branch action. See the module docstring for what each part is for."""

    name: str
    shape: str  # how the action is written, for messages and the schema's description
    description: str
    schema: Mapping[str, Any]
    matches: Callable[[Any], bool]
    parse: Callable[[Any, str, Report], tuple[str, ...]]
    apply: Callable[[BranchOutcome, tuple[str, ...], Any], Any]
    absorbs_error: bool
    keeps_result: bool = False
    exits: bool = False
    loops: bool = False


def _no_targets(action: Any, where: str, report: Report) -> tuple[str, ...]:
    return ()


def _parse_set(action: Any, where: str, report: Report) -> tuple[str, ...]:
    raw = action.get("set")
    items = raw if isinstance(raw, list) else [raw]
    targets = []
    for item in items:
        match = _SET_TARGET_RE.match(item) if isinstance(item, str) else None
        if match:
            targets.append(match.group(1))
        elif isinstance(item, str) and item and "." not in item:
            targets.append(item)
        else:
            report(f"{where}.set", f"set target must be 'steps.<id>.status', got {item!r}")
    value = action.get("value", "ready")
    if value not in SET_VALUES:
        report(f"{where}.value", f"a set action can only make a step 'ready', got {value!r}")
    for key in action:
        if key not in _SET_SCHEMA["properties"]:
            report(f"{where}.{key}", f"unknown field {key!r}; expected one of set, value")
    return tuple(targets)


_SET_TARGET_SCHEMA = {"type": "string", "pattern": SET_TARGET_PATTERN,
                      "description": "steps.<id>.status (or the bare step id)"}
_SET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "set": {"description": "the step(s) to run again",
                "anyOf": [_SET_TARGET_SCHEMA,
                          {"type": "array", "items": _SET_TARGET_SCHEMA}]},
        "value": {"enum": list(SET_VALUES), "default": "ready",
                  "description": "the status to set (pending reads as ready)"},
    },
    "required": ["set"],
    "additionalProperties": False,
}

ACTIONS: tuple[ActionKind, ...] = (
    ActionKind(
        name="halt", shape="halt",
        description="stop the workflow as halted; the branch's result is its outcome",
        schema={"const": "halt"},
        matches=lambda action: action == "halt",
        parse=_no_targets,
        apply=lambda outcome, targets, payload: outcome.halt(payload),
        absorbs_error=True, keeps_result=True, exits=True,
    ),
    ActionKind(
        name="complete", shape="complete",
        description="complete the step (a loop exit); the workflow goes on",
        schema={"const": "complete"},
        matches=lambda action: action == "complete",
        parse=_no_targets,
        apply=lambda outcome, targets, payload: None,
        absorbs_error=True, exits=True,
    ),
    ActionKind(
        name="set", shape="{set: steps.<id>.status, value: ready}",
        description="run the named steps again, with this step and all downstream (a loop)",
        schema=_SET_SCHEMA,
        matches=lambda action: isinstance(action, dict) and "set" in action,
        parse=_parse_set,
        apply=lambda outcome, targets, payload: outcome.restart(targets),
        absorbs_error=False, loops=True,
    ),
)

_BY_NAME = {kind.name: kind for kind in ACTIONS}


def action_kind(name: str) -> ActionKind:
    """The kind called ``name`` (``KeyError`` if there is none)."""
    return _BY_NAME[name]


def expected_actions() -> str:
    """``halt, complete or {set: ...}``: the action shapes, for messages."""
    shapes = [kind.shape for kind in ACTIONS]
    return ", ".join(shapes[:-1]) + " or " + shapes[-1] if len(shapes) > 1 else shapes[0]
