"""Calling an executor safely: the one piece every worker harness shares.

``call_executor`` never raises because of the executor. An exception (any
``BaseException``: ``SystemExit``, ``KeyboardInterrupt``, ``MemoryError``... are
reported under their own names), a time-out, a return value that is not a dict,
or a dict that is not JSON (or is nested too deeply to copy) all become an error
output ``{"ok": False, "error": "<message>", "error_type": "<Type>", "traceback"?}``
(the seed's executor pattern, with the type beside the message) that the graph
counts as a failed attempt. The worker lives on.

Around every call made for a job (``run_job``, ``arun_job``) the harness sets
``runfox.context()`` (``runfox.authoring.context``): the job's ids, a
cancellation flag the caller may set later, and a heartbeat callback.

Async executors. An executor is async for a given ``fn`` (``is_async``) when it
is itself a coroutine function, or when it has an ``is_async(fn)`` method that
says so (``runfox.Registry`` does, per step); the harness then awaits
``executor(fn, inputs)`` or ``executor.acall(fn, inputs)`` on an event loop
(``arun_job``) instead of calling it in a thread. A time-out cancels the
coroutine (``asyncio.timeout``). An awaitable returned by a sync call (an async
executor reached through ``invoke``) is run to its end on a new loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .authoring.aio import run_coroutine
from .authoring.context import Flag, StepContext, step_context
from .jsonvalue import as_output, error_output
from .results import DispatchJob, Executor

if TYPE_CHECKING:
    from .backend.base import Backend

__all__ = [
    "Executor", "acall_executor", "arun_job", "call_executor", "error_output", "invoke",
    "is_async", "job_context", "load_executor", "run_job", "serve_control",
]


def is_async(executor: Executor, fn: str) -> bool:
    """Whether the harness should await ``executor`` for ``fn`` on an event loop.

    True for a coroutine function (or an object whose ``__call__`` is one), or an
    executor whose ``is_async(fn)`` method returns true. Never raises: a failing
    ``is_async`` means "no", and the sync call reports whatever is wrong.
    """
    if _coroutine_executor(executor):
        return True
    check = getattr(executor, "is_async", None)
    if not callable(check) or not callable(getattr(executor, "acall", None)):
        return False
    try:
        return bool(check(fn))
    except Exception:
        return False


def _coroutine_executor(executor: Executor) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(executor) or \
        inspect.iscoroutinefunction(type(executor).__call__)


def job_context(job: DispatchJob, flag: Flag | None = None,
                beat: Callable[[], None] | None = None) -> StepContext:
    """The ``runfox.context()`` of ``job``: its ids, ``flag`` for ``cancelled``
    (a fresh, never-set one by default) and ``beat`` for ``heartbeat()``."""
    return StepContext(job.workflow_execution_id, job.step_id, job.run_id, job.attempt,
                       job.fn, **({"_flag": flag} if flag is not None else {}), _beat=beat)


def invoke(executor: Executor, fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Call the executor once, in this thread; return its output or an error output.

    Catches ``BaseException``: an executor that calls ``sys.exit()`` or raises
    ``KeyboardInterrupt`` fails its attempt, it does not stop the worker. (A real
    SIGINT reaches the main thread, which never runs an executor in a worker.)
    """
    try:
        output = executor(fn, inputs)
        if inspect.isawaitable(output):  # an async executor, called from sync code
            output = run_coroutine(_awaited(output))
    except BaseException as exc:  # the executor's failure is data, not a worker crash
        return _failed(exc)
    return _finish(output, fn)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _failed(exc: BaseException) -> dict[str, Any]:
    try:
        tb: str | None = traceback.format_exc(limit=20)
    except BaseException:  # e.g. MemoryError while formatting
        tb = None
    return error_output(type(exc).__name__, _describe(exc), tb)


def _finish(output: Any, fn: str) -> dict[str, Any]:
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
    ctx = contextvars.copy_context()  # runfox.context() in the call's own thread too
    thread = threading.Thread(target=lambda: box.append(ctx.run(invoke, executor, fn, inputs)),
                              name=f"runfox-exec-{fn}", daemon=True)
    thread.start()
    thread.join(timeout)
    if box:
        return box[0]
    return error_output("TimeoutError", f"fn {fn!r} did not finish within {timeout:g}s")


def run_job(executor: Executor, job: DispatchJob, flag: Flag | None = None,
            beat: Callable[[], None] | None = None) -> dict[str, Any]:
    """``call_executor`` for a job, with the job's own timeout and its
    ``runfox.context()`` (``job_context(job, flag, beat)``) set around the call."""
    with step_context(job_context(job, flag, beat)):
        return call_executor(executor, job.fn, job.inputs, job.timeout)


async def acall_executor(executor: Executor, fn: str, inputs: dict[str, Any],
                         timeout: float | None = None) -> dict[str, Any]:
    """``call_executor`` for an async executor, on the running loop; never raises.

    Awaits ``executor(fn, inputs)`` (a coroutine function) or
    ``executor.acall(fn, inputs)``. With ``timeout`` the coroutine is cancelled
    when it overruns and a ``TimeoutError`` output is returned. Every other
    exception, ``BaseException`` included, becomes an error output, caught inside
    this coroutine so the event loop never sees it.
    """
    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            if _coroutine_executor(executor):
                output = await executor(fn, inputs)
            else:
                output = await executor.acall(fn, inputs)  # type: ignore[attr-defined]
    except BaseException as exc:  # contained, as in invoke
        if limit.expired():
            return error_output("TimeoutError", f"fn {fn!r} did not finish within "
                                                f"{timeout:g}s; it was cancelled")
        return _failed(exc)
    return _finish(output, fn)


async def arun_job(executor: Executor, job: DispatchJob, flag: Flag | None = None,
                   beat: Callable[[], None] | None = None) -> dict[str, Any]:
    """``run_job`` for an async executor: awaited on the running loop, with the
    job's ``runfox.context()`` set in this task's context."""
    with step_context(job_context(job, flag, beat)):
        return await acall_executor(executor, job.fn, job.inputs, job.timeout)


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
