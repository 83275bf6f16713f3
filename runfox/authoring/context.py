"""``runfox.context()``: who is running, inside a running step.

The worker harness (``runfox.execution.run_job`` and the pools) sets a
``StepContext`` in a ``contextvars.ContextVar`` around every executor call: in
the worker thread that runs the job, in the child process of a process slot
(rebuilt there from the job), and in the asyncio task of an async step. User
code reads it with ``runfox.context()``; a plain ``(fn, inputs)`` executor that
never asks is unaffected.

``cancelled`` becomes true when the execution is cancelled, halted or failed (or
the step was reset, so this run's result will be ignored) while the step runs.
The harness learns it on its heartbeat (see ``runfox.worker``) and sets the
context's flag; a long step polls ``ctx.cancelled`` and returns early. The flag
is only a request: the step's result is ignored either way.

``heartbeat()`` tells the harness the step is alive and asks it to renew the
lease and look at the execution now rather than at its next round; it returns
``cancelled``. Harnesses that cannot do that at once (a process slot, where the
parent beats on its own schedule; the in-process worker, which holds no lease)
make it a cheap no-op that still returns the flag.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import RunfoxError

__all__ = ["NoStepContext", "StepContext", "context", "current_or_none", "step_context"]


class Flag(Protocol):
    """What a cancellation flag offers: ``threading.Event`` and
    ``multiprocessing.Event`` both fit."""

    def is_set(self) -> bool: ...


class NoStepContext(RunfoxError, LookupError):
    """``runfox.context()`` was called outside a step the harness is running."""


@dataclass(frozen=True)
class StepContext:
    """The step being run, as the harness sees it.

    Attributes:
        workflow_execution_id: the execution the step belongs to.
        step_id: the step's id in the spec.
        run_id: the run this call is (grows on retries and loop resets).
        attempt: attempts of this step since it was last reset (1 for the first).
        fn: the ``fn`` the executor was called with.
    """

    workflow_execution_id: str
    step_id: str
    run_id: int
    attempt: int
    fn: str
    _flag: Flag = field(default_factory=threading.Event, repr=False, compare=False)
    _beat: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """Whether the execution ended (cancelled, halted, failed) or the step was
        reset while this call runs; its result will be ignored."""
        return self._flag.is_set()

    def heartbeat(self) -> bool:
        """Tell the harness the step is alive; return ``cancelled``.

        Where the harness can (thread and async slots of a ``Worker``), this
        renews the job's lease and checks the execution now. Never raises
        because of the backend: a failed check is the harness's to log.
        """
        if self._beat is not None:
            with contextlib.suppress(Exception):  # a step never fails because of it
                self._beat()
        return self.cancelled


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "runfox_step_context", default=None)


def context() -> StepContext:
    """The ``StepContext`` of the step running in this thread, process or task.

    Raises:
        NoStepContext: called outside a step run by a runfox harness (at import
            time, in a test calling the function directly, in a thread the
            step started without copying its context).
    """
    current = _current.get()
    if current is None:
        raise NoStepContext("runfox.context() is only available inside a step run by a "
                            "runfox worker (Workflow.run, runfox run, runfox worker); "
                            "threads a step starts itself need contextvars.copy_context()")
    return current


def current_or_none() -> StepContext | None:
    """Like ``context()`` but ``None`` outside a step (for code that runs both ways)."""
    return _current.get()


@contextmanager
def step_context(ctx: StepContext) -> Iterator[StepContext]:
    """Make ``ctx`` the current context for the body; restore the previous one after."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
