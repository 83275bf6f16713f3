"""Lambda entry points configured by environment variables.

``workers/aws_lambda.py`` is a thin shell over ``entry_points_from_env``; the
variables it reads:

======================  ===============================================================
variable                meaning
======================  ===============================================================
``RUNFOX_BACKEND``      an ``aws://`` URL (see ``runfox.backend.aws.config``); required
``RUNFOX_EXECUTOR``     the executor as ``package.module:function``; without it the
                        function only applies results and wake-ups
``RUNFOX_CONCURRENCY``  jobs of one batch run on this many threads (1)
``RUNFOX_STALE_AFTER``  seconds after which ``sweep`` re-sends a claimed step's job (960)
======================  ===============================================================

The backend is built once per Lambda container (on the first invocation) and
reused by later invocations, as Lambda recommends for clients.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...execution import load_executor
from ..base import Backend
from .config import parts_from_url
from .handlers import LambdaHandler, lambda_handler, schedule_tick, sweep

__all__ = ["EntryPoints", "entry_points_from_env"]


@dataclass(frozen=True, slots=True)
class EntryPoints:
    """The Lambda handlers of one deployment."""

    backend: Backend
    #: For the SQS event source mapping of the job queue (ReportBatchItemFailures on).
    jobs: LambdaHandler
    #: For a schedule (EventBridge): ``{"swept": <executions looked at>}``.
    sweep: Callable[[dict[str, Any], Any], dict[str, Any]]
    #: For an EventBridge rule every minute: fires due schedules, ``{"fired": [...]}``.
    schedule_tick: Callable[[dict[str, Any], Any], dict[str, Any]]


def _number(environ: Mapping[str, str], name: str, default: str, kind: type) -> Any:
    text = environ.get(name, default)
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None


def entry_points_from_env(environ: Mapping[str, str] | None = None) -> EntryPoints:
    """Build the handlers from ``environ`` (default: ``os.environ``).

    Raises:
        ValueError: a variable is missing or malformed (the message names it).
        BackendError: the tables or queue do not exist, or there are no credentials.
    """
    env = os.environ if environ is None else environ
    url = env.get("RUNFOX_BACKEND", "")
    if not url.lower().startswith("aws:"):
        raise ValueError("set RUNFOX_BACKEND to an aws:// URL, e.g. aws://?prefix=runfox "
                         f"(got {url!r})")
    executor_ref = env.get("RUNFOX_EXECUTOR") or None
    executor = load_executor(executor_ref) if executor_ref else None
    concurrency = _number(env, "RUNFOX_CONCURRENCY", "1", int)
    stale_after = _number(env, "RUNFOX_STALE_AFTER", "960", float)
    store, runner = parts_from_url(url)
    backend = Backend(store=store, runner=runner)

    def sweep_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return {"swept": sweep(backend, stale_after=stale_after)}

    def tick_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return schedule_tick(backend)

    return EntryPoints(backend, lambda_handler(backend, executor, concurrency=concurrency),
                       sweep_handler, tick_handler)
