"""Authoring steps in Python: a registry that is an executor, and the step context.

- ``Registry`` (``registry.py``): ``@registry.step`` on functions, ``async def``
  functions and classes with ``run``; ``registry(fn, inputs)`` is an executor.
- ``binding.py``: inputs fill parameters by name, checked before the call
  (``BindingError``); return values are shaped into output dicts.
- ``context()`` (``context.py``): the running step's ids, ``cancelled`` and
  ``heartbeat()``, set by the worker harness.

This package imports nothing of runfox but its errors; the harness
(``runfox.execution``) imports it, never the other way round.
"""

from __future__ import annotations

from .binding import BindingError, RegistryError
from .context import NoStepContext, StepContext, context, current_or_none
from .registry import Registry, StepEntry, UnknownFunction

__all__ = [
    "BindingError",
    "NoStepContext",
    "Registry",
    "RegistryError",
    "StepContext",
    "StepEntry",
    "UnknownFunction",
    "context",
    "current_or_none",
]
