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

import importlib
import os
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

from .jsonvalue import as_output, error_output
from .results import DispatchJob, Executor

if TYPE_CHECKING:
    from .backend.base import Backend

__all__ = [
    "Executor", "call_executor", "error_output", "invoke", "load_executor", "run_job",
    "serve_control",
]


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


def load_executor(ref: str) -> Executor:
    """Import ``"package.module:attr"`` and return the callable it names.

    Where the module is looked for: installed packages win. The current directory
    is searched too, so ``runfox worker --executor mypkg.steps:execute`` works
    from a project root, but *last*: it is appended to the end of ``sys.path``
    when it is not there already, never put in front. A module next to the spec
    (``./tasks.py`` for ``tasks:execute``) is therefore found only if no
    installed module has that name, and a stray ``./sqlalchemy.py`` can never
    replace the real one. (``python -m`` and ``python -c`` put the current
    directory first themselves; the ``runfox`` command does not.)

    Raises ``ValueError`` with a one-line reason when the reference is malformed,
    the module cannot be imported, or the attribute is missing or not callable.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"executor {ref!r} must look like 'package.module:function'")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # last: installed packages win
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"executor {ref!r}: cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"executor {ref!r}: module {module_name!r} has no attribute "
                             f"{attr!r}") from None
    if not callable(target):
        raise ValueError(f"executor {ref!r} is a {type(target).__name__}, not a callable")
    return target


def serve_control(backend: Backend) -> None:
    """Let the advance and result messages ``backend``'s runner receives drive workflows.

    An ``SQSRunner`` receives them mixed in with jobs (wake-ups for retries and
    results sent by the Lambda handlers) and hands them to its ``on_control``;
    the harness that takes the jobs (``Worker``, ``Workflow.run``) is what
    consumes them, so it calls this to wire a ``ResultHandler`` for ``backend``.
    A handler already set is kept; any other runner is left alone.
    """
    runner = backend.runner
    aws_runner = sys.modules.get("runfox.backend.aws.runner")
    if aws_runner is None or not isinstance(runner, aws_runner.SQSRunner):
        return  # no SQSRunner was ever built in this process, or this is not one
    if runner.on_control is None:
        from .backend.aws.handlers import ResultHandler

        runner.on_control = ResultHandler(backend).handle_control
