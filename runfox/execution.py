"""Calling an executor safely: the one piece every worker harness shares.

``call_executor`` never raises because of the executor. An exception, a time-out,
a return value that is not a dict, or a dict that is not JSON all become an error
output ``{"ok": False, "error": {"type": ..., "message": ...}}`` that the graph
counts as a failed attempt. The worker lives on.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from .jsonvalue import as_output, error_output
from .results import DispatchJob

__all__ = ["Executor", "call_executor", "error_output", "run_job"]

#: The executor contract: ``(fn, inputs) -> dict``. It imports nothing of runfox.
Executor = Callable[[str, dict[str, Any]], Any]


def _invoke(executor: Executor, fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    try:
        output = executor(fn, inputs)
    except Exception as exc:  # the executor's failure is data, not a worker crash
        return error_output(type(exc).__name__, str(exc), traceback.format_exc(limit=20))
    return as_output(output, fn)


def call_executor(
    executor: Executor, fn: str, inputs: dict[str, Any], timeout: float | None = None
) -> dict[str, Any]:
    """Run ``executor(fn, inputs)`` and return a JSON output dict, never raising.

    With ``timeout``, the call runs in a daemon thread and a ``TimeoutError``
    output is returned when it overruns. Python cannot stop a thread, so the
    abandoned call may go on in the background; use process concurrency in the
    worker for executors that must be killed.
    """
    if timeout is None:
        return _invoke(executor, fn, inputs)
    box: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: box.append(_invoke(executor, fn, inputs)),
                              name=f"runfox-exec-{fn}", daemon=True)
    thread.start()
    thread.join(timeout)
    if box:
        return box[0]
    return error_output("TimeoutError", f"fn {fn!r} did not finish within {timeout:g}s")


def run_job(executor: Executor, job: DispatchJob) -> dict[str, Any]:
    """``call_executor`` for a job, with the job's own timeout."""
    return call_executor(executor, job.fn, job.inputs, job.timeout)
