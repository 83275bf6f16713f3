"""AWS Lambda entry points for runfox (a thin shell over ``runfox.backend.aws.entry``).

Package this file at the root of the function's zip next to runfox and your
executor module, then point the functions at:

- ``aws_lambda.handler``: the SQS event source of the job queue (enable
  ReportBatchItemFailures). Runs jobs, applies their results, dispatches what
  became ready, and acts on wake-up messages.
- ``aws_lambda.sweep``: a schedule (e.g. every 5 minutes); repairs executions
  whose process died between claiming a step and sending its job.
- ``aws_lambda.schedule_tick``: an EventBridge rule every minute; fires the
  runfox schedules that are due (``runfox schedule add ...``), each fire once.

Configuration is by environment variable: ``RUNFOX_BACKEND`` (an ``aws://`` URL),
``RUNFOX_EXECUTOR`` (``package.module:function``), ``RUNFOX_CONCURRENCY``,
``RUNFOX_STALE_AFTER``. ``backends/aws/template.yaml`` sets them.
"""

from __future__ import annotations

import threading
from typing import Any

from runfox.backend.aws.entry import EntryPoints, entry_points_from_env

_entry: EntryPoints | None = None
_lock = threading.Lock()


def _entry_points() -> EntryPoints:
    global _entry
    with _lock:
        if _entry is None:  # once per container, reused by warm invocations
            _entry = entry_points_from_env()
        return _entry


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """SQS batch in, ``{"batchItemFailures": [...]}`` out."""
    return _entry_points().jobs(event, context)


def sweep(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Scheduled repair pass over running executions."""
    return _entry_points().sweep(event, context)


def schedule_tick(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Fire the due schedules: ``{"fired": [{"schedule", "fire_time", "execution"}]}``."""
    return _entry_points().schedule_tick(event, context)
