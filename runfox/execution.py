"""Calling an executor safely: the one piece every worker harness shares.

``call_executor`` never raises because of the executor. An exception (any
``BaseException``: ``SystemExit``, ``KeyboardInterrupt``, ``MemoryError``... are
reported under their own names), a time-out, a return value that is not a dict,
or a dict that is not JSON (or is nested too deeply to copy) all become an error
output ``{"ok": False, "error": "<message>", "error_type": "<Type>", "traceback"?}``
(the seed's executor pattern, with the type beside the message) that the graph
counts as a failed attempt. The worker lives on.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from .jsonvalue import as_output, error_output
from .results import DispatchJob

__all__ = ["Executor", "call_executor", "error_output", "invoke", "run_job"]

#: The executor contract: ``(fn, inputs) -> dict``. It imports nothing of runfox.
Executor = Callable[[str, dict[str, Any]], Any]


def invoke(executor: Executor, fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Call the executor once, in this thread; return its output or an error output.

    Catches ``BaseException``: an executor that calls ``sys.exit()`` or raises
    ``KeyboardInterrupt`` fails its attempt, it does not stop the worker. (A real
    SIGINT reaches the main thread, which never runs an executor in a worker.)
    """
    try:
        output = executor(fn, inputs)
    except BaseException as exc:  # the executor's failure is data, not a worker crash
        try:
            tb: str | None = traceback.format_exc(limit=20)
        except BaseException:  # e.g. MemoryError while formatting
            tb = None
        return error_output(type(exc).__name__, _describe(exc), tb)
    try:
        return as_output(output, fn)
    except (RecursionError, MemoryError) as exc:
        return error_output("InvalidOutput", f"the output for fn {fn!r} cannot be copied as "
                                             f"JSON: it is nested too deeply or too large "
                                             f"({type(exc).__name__}: {exc})")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, SystemExit):
        return f"the executor called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt) and not text:
        return "the executor raised KeyboardInterrupt"
    return text


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
        return invoke(executor, fn, inputs)
    box: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: box.append(invoke(executor, fn, inputs)),
                              name=f"runfox-exec-{fn}", daemon=True)
    thread.start()
    thread.join(timeout)
    if box:
        return box[0]
    return error_output("TimeoutError", f"fn {fn!r} did not finish within {timeout:g}s")


def run_job(executor: Executor, job: DispatchJob) -> dict[str, Any]:
    """``call_executor`` for a job, with the job's own timeout."""
    return call_executor(executor, job.fn, job.inputs, job.timeout)
