"""Limits on hostile input: how much work a small spec, rule or value may cost.

A few hundred bytes of YAML, JSON Logic or JSON can ask for billions of nodes, a
string that doubles on every step, or a structure nested deeper than Python's
stack. runfox refuses such input with a clear error naming the limit and the
place, instead of spending minutes, gigabytes or a ``RecursionError`` on it.

=====================  =============  ====================================================
limit                  default        what it bounds
=====================  =============  ====================================================
``spec_bytes``         10,000,000     size of a YAML spec (bytes), checked before parsing
``yaml_aliases``       10,000         nodes a YAML document may repeat through aliases
``depth``              100            nesting of specs, rules, inputs, outputs and state
``string_length``      1,000,000      characters of a string an expression produces
``list_length``        100,000        items of a list an expression produces, and JSON
                                      values a ``reduce`` accumulator may hold
``number_digits``      4,300          digits of a number an expression reads from a
                                      string or produces (Python's own int/str limit)
``workflow_depth``     8              nesting of sub-workflows: a parent at depth 0, its
                                      children at 1... (a chain of static references
                                      longer than this is refused when compiled; a
                                      child past it, from a dynamic name, fails its step)
=====================  =============  ====================================================

The defaults suit any workflow a person writes by hand or generates (a
100,000-step spec is about 5 MB). Change them in one of two ways:

- environment variables, read once when runfox is imported, so every worker
  process of a deployment agrees: ``RUNFOX_LIMIT_SPEC_BYTES``,
  ``RUNFOX_LIMIT_YAML_ALIASES``, ``RUNFOX_LIMIT_DEPTH``,
  ``RUNFOX_LIMIT_STRING_LENGTH``, ``RUNFOX_LIMIT_LIST_LENGTH``,
  ``RUNFOX_LIMIT_NUMBER_DIGITS``, ``RUNFOX_LIMIT_WORKFLOW_DEPTH`` (positive
  integers);
- ``runfox.limits.configure(depth=200, ...)`` in the process itself, which
  returns the previous limits (pass them back to ``configure(**asdict(old))``, or
  use ``restore(old)``, to undo).

Raising ``depth`` far above a few hundred risks ``RecursionError`` in code that
walks JSON recursively (``json``, drivers); the value is capped at 1,000.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

__all__ = ["DEFAULT", "Limits", "configure", "current", "restore"]

#: ``depth`` above this would meet Python's recursion limit in ``json`` and drivers.
MAX_DEPTH_CAP = 1000


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits runfox enforces on input; see the module docstring for each one."""

    spec_bytes: int = 10_000_000
    yaml_aliases: int = 10_000
    depth: int = 100
    string_length: int = 1_000_000
    list_length: int = 100_000
    number_digits: int = 4_300
    workflow_depth: int = 8

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {f.name} must be a positive integer, got {value!r}")
        if self.depth > MAX_DEPTH_CAP:
            raise ValueError(f"limit depth must be at most {MAX_DEPTH_CAP}, got {self.depth}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """The defaults, with any ``RUNFOX_LIMIT_<NAME>`` variable in ``env`` applied."""
        env = os.environ if env is None else env
        changes: dict[str, int] = {}
        for f in fields(cls):
            name = f"RUNFOX_LIMIT_{f.name.upper()}"
            text = env.get(name)
            if text is None or not text.strip():
                continue
            try:
                changes[f.name] = int(text.replace("_", "").replace(",", ""))
            except ValueError:
                raise ValueError(f"{name}={text!r} is not an integer") from None
        return cls(**changes)


#: The documented defaults (environment variables not applied).
DEFAULT = Limits()

_current: Limits = Limits.from_env()


def current() -> Limits:
    """The limits in force in this process."""
    return _current


def configure(**changes: int) -> Limits:
    """Change some limits for this process; returns the limits that were in force.

    ``configure(depth=200)`` keeps every other limit as it is. An unknown name or
    a value that is not a positive integer is a ``ValueError`` (or ``TypeError``).
    """
    global _current
    previous = _current
    _current = replace(_current, **changes)
    return previous


def restore(limits: Limits) -> None:
    """Put back limits returned by ``configure``."""
    global _current
    if not isinstance(limits, Limits):
        raise TypeError(f"expected Limits, got {type(limits).__name__}")
    _current = limits
