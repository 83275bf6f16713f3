"""Identifiers and composite keys.

- ``workflow_id``: MD5 of the canonical spec JSON, the same for every execution of
  one definition.
- ``execution_id``: UTC timestamp to the microsecond plus 64 random bits, so ids
  sort by start time and 100,000 executions started in one second collide with a
  probability below 1e-9.
- ``workflow_execution_id``: ``{workflow_id}#{execution_id}``, the store key.
"""

from __future__ import annotations

import datetime as _dt
import secrets

from .results import job_key
from .spec import workflow_id_for

__all__ = [
    "new_execution_id",
    "split_workflow_execution_id",
    "step_key",
    "step_run_key",
    "workflow_execution_id",
    "workflow_id_for",
]


def new_execution_id(now: float | None = None) -> str:
    moment = (_dt.datetime.now(_dt.UTC) if now is None
              else _dt.datetime.fromtimestamp(now, _dt.UTC))
    return f"{moment:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(8)}"


def workflow_execution_id(workflow_id: str, execution_id: str) -> str:
    return f"{workflow_id}#{execution_id}"


def split_workflow_execution_id(key: str) -> tuple[str, str]:
    """``(workflow_id, execution_id)``; ``ValueError`` if ``key`` has no ``#``."""
    workflow_id, sep, execution_id = key.partition("#")
    if not sep or not workflow_id or not execution_id:
        raise ValueError(f"{key!r} is not a workflow_execution_id ('<workflow_id>#<execution_id>')")
    return workflow_id, execution_id


def step_key(workflow_execution_id: str, step_id: str) -> str:
    return f"{workflow_execution_id}#{step_id}"


def step_run_key(workflow_execution_id: str, step_id: str, run_id: int) -> str:
    return job_key(workflow_execution_id, step_id, run_id)
