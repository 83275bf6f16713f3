"""Workflow: a stateless handle on one execution.

A ``Workflow`` holds a ``workflow_execution_id`` and a ``Backend`` and nothing
else. Every property and method loads the current record from the backend, so
two handles with the same id and backend are interchangeable, in one process or
in many. The graph functions it drives live in ``runfox.graph`` and are
re-exported here for code written against the seed's layout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import BackendUnavailable
from .execution import serve_control
from .graph import advance, on_step_result
from .history import Event
from .inprocess import InProcessWorker
from .jsonvalue import json_clone
from .records import StepRecord, WorkflowRecord, item_counts, progress_counts
from .results import Dispatch, Pending, Result, Terminal
from .spec import WorkflowSpec, load_spec, parse_yaml
from .status import StepStatus, WorkflowStatus

if TYPE_CHECKING:
    from .backend.base import Backend

__all__ = ["Rerun", "Worker", "Workflow", "advance", "on_step_result"]

logger = logging.getLogger("runfox.workflow")

#: The longest ``Workflow.run`` waits between tries while its backend is unavailable.
_OUTAGE_MAX_WAIT = 5.0


class Worker(Protocol):
    """Anything ``Workflow.run`` can drive: runs pending jobs, returns how many."""

    def run(self, workflow_execution_id: str | None = None) -> int: ...


class _Outage:
    """Backoff and logging while ``Workflow.run`` cannot reach its backend."""

    def __init__(self, workflow_execution_id: str) -> None:
        self.workflow_execution_id = workflow_execution_id
        self.since = time.monotonic()
        self.tries = 0

    def failed(self, exc: BaseException) -> float:
        """Log the first failure of an outage; return how long to wait before the next try."""
        if self.tries == 0:
            logger.warning("%s: backend unavailable (%s); retrying with backoff",
                           self.workflow_execution_id, exc)
        self.tries += 1
        return min(_OUTAGE_MAX_WAIT, 0.1 * 2 ** min(self.tries, 10)) * random.uniform(0.5, 1.0)

    def ended(self) -> None:
        logger.info("%s: backend reachable again after %.1f s", self.workflow_execution_id,
                    time.monotonic() - self.since)


@dataclass(frozen=True)
class Rerun:
    """What ``Workflow.rerun`` did: the new execution, its terminal result, and which
    steps ran (called the executor) and which came from the step cache, in spec order.
    Steps in neither were skipped or never reached."""

    workflow: Workflow
    result: Terminal
    ran: list[str]
    cached: list[str]


class Workflow:
    """A handle on one workflow execution stored in a ``Backend``."""

    __slots__ = ("backend", "id")

    def __init__(self, workflow_execution_id: str, backend: Backend) -> None:
        self.id = workflow_execution_id
        self.backend = backend

    # -- construction -------------------------------------------------------

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | WorkflowSpec, backend: Backend,
                  inputs: dict[str, Any] | None = None, *, key: str | None = None
                  ) -> Workflow:
        """Create a new execution of ``spec``. ``SpecError`` if it is invalid.

        ``key``: an idempotency key; while an execution with it exists, that
        execution is returned instead of a new one (``Backend.create``).
        """
        plan = spec if isinstance(spec, WorkflowSpec) else load_spec(spec)
        return cls(backend.create(plan, inputs, key=key), backend)

    @classmethod
    def from_yaml(cls, text: str, backend: Backend, inputs: dict[str, Any] | None = None,
                  *, key: str | None = None) -> Workflow:
        """Create a new execution from YAML text (not a path; see ``from_file``)."""
        return cls.from_dict(parse_yaml(text), backend, inputs, key=key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], backend: Backend,
                  inputs: dict[str, Any] | None = None, *, key: str | None = None
                  ) -> Workflow:
        """Create a new execution from a YAML file; errors name the file and line."""
        return cls.from_dict(load_spec(Path(path)), backend, inputs, key=key)

    @classmethod
    def start(cls, spec: Mapping[str, Any] | WorkflowSpec | str | os.PathLike[str],
              backend: Backend, inputs: dict[str, Any] | None = None, *,
              key: str | None = None) -> Workflow:
        """Create an execution (a spec mapping or a YAML file path) and dispatch its
        first jobs, for workers to run; returns the handle.

        With ``key``, an execution holding that key is returned as it is
        (nothing new is created or dispatched).
        """
        plan = spec if isinstance(spec, (Mapping, WorkflowSpec)) else Path(spec)
        compiled = plan if isinstance(plan, WorkflowSpec) else load_spec(plan)
        if key is not None:
            existing = backend.store.key_owner(key)
            if existing is not None:
                return cls(existing, backend)
        return cls(backend.start(compiled, inputs, key=key), backend)

    @classmethod
    def resume(cls, workflow_execution_id: str, backend: Backend) -> Workflow:
        """A handle on an existing execution. ``KeyError`` if there is none."""
        backend.load_shared(workflow_execution_id)
        return cls(workflow_execution_id, backend)

    # -- driving ------------------------------------------------------------

    def advance(self) -> Result:
        """Claim every ready step; ``Dispatch``, ``Pending`` or the terminal result."""
        return self.backend.advance(self.id)

    def on_step_result(self, step_id: str, output: Any, run_id: int | None = None) -> Result:
        """Apply one step result; see ``runfox.graph.on_step_result``."""
        return self.backend.on_step_result(self.id, step_id, output, run_id)

    def cancel(self, reason: str | None = None) -> Result:
        """Cancel the execution; returns ``Cancelled`` (or the result it had already)."""
        return self.backend.cancel(self.id, reason)

    def run(
        self,
        worker: Worker | None = None,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Workflow], None] | None = None,
        targets: Iterable[str] | None = None,
    ) -> Terminal:
        """Drive the execution to its end and return the terminal result.

        ``targets``: run only what these steps need (``Backend.restrict_to_targets``:
        the other waiting steps are skipped first, and ``outputs`` that read them get
        null). ``UnknownStepError`` for a target the spec lacks.

        Each round applies every gathered result and claims what became ready in
        one transition, dispatches the jobs, lets ``worker`` (or the backend's own
        executor) run them, and gathers results. With no worker at all, results
        come from other processes and ``run`` polls every ``poll_interval``.
        When only a retry is waiting, it sleeps until the retry is due.

        While the backend is unavailable (``BackendUnavailable``: a database
        restart, a lock storm) it logs once, waits with backoff and tries again.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first; the execution
        is left as it is and can be resumed.
        """
        backend = self.backend
        if targets is not None:
            backend.restrict_to_targets(self.id, targets)
        if worker is None and backend.executor is not None:
            worker = InProcessWorker(backend.runner, backend.executor)
        serve_control(backend)  # wake-ups and results an SQS runner receives
        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[Any] = []
        idle_since: float | None = None
        last_sweep = 0.0
        # Claimed steps whose jobs no queue holds (a crash between claim and dispatch,
        # or a restart with an in-process runner) are dispatched again once the
        # execution has been idle this long; runners drop jobs they already hold.
        stale_after = 0.0 if worker is not None else 30.0
        outage: _Outage | None = None
        # Sub-workflow steps run child executions, whose results this loop applies too.
        children: bool | None = None
        while True:
            try:
                if children is None:
                    children = backend.load_shared(self.id).plan.has_subworkflows
                _, nxt = backend.apply_and_advance(self.id, results)
                results = []
                if isinstance(nxt, Terminal):
                    return nxt
                if on_progress is not None:
                    on_progress(self)
                ran = worker.run(self.id) if worker is not None else 0
                if children:
                    ran += backend.drive_children(self.id)
                results = backend.gather(self.id)
            except BackendUnavailable as exc:
                # A database restart or a lock storm: keep what was gathered, wait
                # and try again (until the deadline); workers ride it out too.
                outage = outage or _Outage(self.id)
                wait = outage.failed(exc)
                if deadline is not None:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"workflow {self.id} did not finish within "
                                           f"{timeout}s (the backend is unavailable: "
                                           f"{exc})") from exc
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                time.sleep(wait)
                continue
            if outage is not None:
                outage.ended()
                outage = None
            now = time.monotonic()
            if results or ran or isinstance(nxt, Dispatch):
                idle_since = None
                if results:
                    continue
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"workflow {self.id} did not finish within {timeout}s")
            idle_since = idle_since if idle_since is not None else now
            if now - idle_since >= stale_after and now - last_sweep >= max(stale_after, 1.0):
                last_sweep = now
                with contextlib.suppress(BackendUnavailable):  # tried again next time
                    backend.redispatch_stale(self.id, stale_after)
            wait = backend.poll_interval
            if isinstance(nxt, Pending) and nxt.retry_at is not None:
                wait = max(0.0, nxt.retry_at - backend.clock())
                if worker is None:
                    wait = min(wait, backend.poll_interval)
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            time.sleep(wait)

    # -- invalidation and redrive -------------------------------------------

    def what_invalidates(self, step: str) -> list[str]:
        """The step and every step downstream of it (by dependencies, derived ones and
        products included), in spec order: what ``invalidate(step)`` reopens."""
        return self.backend.load_shared(self.id).plan.what_invalidates(step)

    def invalidate(self, step: str | Iterable[str]) -> list[str]:
        """Reopen ``step`` (or several) and everything downstream of it, in a running or
        finished execution; the workflow is ``in_progress`` again and the reopened steps
        are dispatched (``run()`` drives them). Returns the reopened ids.
        ``UnknownStepError`` for an unknown step, nothing written."""
        return self.backend.invalidate(self.id, step)

    def redrive(self) -> list[str]:
        """Continue a failed, cancelled or halted-on-error execution from the steps that
        did not complete, keeping the completed ones; returns the reopened ids
        (``Backend.redrive``). ``ExecutionStateError`` for a running or complete one."""
        return self.backend.redrive(self.id)

    def rerun(self, inputs: dict[str, Any] | None = None, *, worker: Worker | None = None,
              timeout: float | None = None) -> Rerun:
        """Run a new execution of the same spec with the same inputs (``inputs`` merged
        over them) to its end, like pyswark's ``rerun``: with the step cache, steps
        whose fn and resolved inputs did not change are served from it instead of
        running. This execution is left as it is. ``WorkflowNotFound`` for an
        unknown id and ``SpecError`` for bad inputs: nothing is written."""
        new = Workflow(self.backend.rerun(self.id, inputs), self.backend)
        result = new.run(worker, timeout=timeout)
        return Rerun(new, result, new.steps_ran, new.steps_cached)

    # -- inspection ---------------------------------------------------------

    @property
    def steps_cached(self) -> list[str]:
        """The steps whose output came from the step cache, in spec order."""
        return [s.id for s in self.backend.load_shared(self.id).steps.values() if s.cached]

    @property
    def steps_ran(self) -> list[str]:
        """The steps that were sent to an executor (started, not from the cache), in spec
        order."""
        return [s.id for s in self.backend.load_shared(self.id).steps.values()
                if s.started_at is not None and not s.cached]

    def _step(self, step: str) -> StepRecord:
        record = self.backend.load(self.id)
        record.plan.known_steps([step])
        return record.steps[step]

    def step_inputs(self, step: str) -> dict[str, Any] | None:
        """The resolved inputs the step's last run was sent (``None`` before its first
        claim, or after a reset); a copy. ``UnknownStepError`` for an unknown step."""
        return self._step(step).inputs

    def step_output(self, step: str) -> dict[str, Any] | None:
        """The step's output (``None`` until it has one); a copy."""
        return self._step(step).output

    @property
    def record(self) -> WorkflowRecord:
        """The current record, a copy isolated from the store (changes stay in it)."""
        return self.backend.load(self.id)

    @property
    def status(self) -> WorkflowStatus:
        return self.backend.load_shared(self.id).status

    @property
    def outcome(self) -> Any:
        """The resolved outcome once the execution has ended, else ``None``."""
        return json_clone(self.backend.load_shared(self.id).outcome)

    @property
    def state(self) -> dict[str, Any]:
        """A copy of the shared state."""
        return json_clone(self.backend.load_shared(self.id).state)

    @property
    def step_statuses(self) -> dict[str, StepStatus]:
        """The status of each step of the spec, in spec order. A map step's items
        (``X[i]``) are not listed: see ``item_counts``, or ``record.steps``."""
        record = self.backend.load_shared(self.id)
        return {spec.id: record.steps[spec.id].status for spec in record.plan.steps}

    @property
    def progress(self) -> dict[str, int]:
        """How many steps of the spec are in each status, plus ``total``; a map step
        counts once, whatever its item count (``item_counts`` has the items)."""
        return progress_counts(self.backend.load_shared(self.id))

    def item_counts(self, step: str) -> dict[str, int] | None:
        """The items of map step ``step``: ``total``, ``settled``, ``complete``,
        ``failed`` and ``in_progress``; ``None`` before the step is claimed (or for a
        step without ``map``). ``UnknownStepError`` for an unknown step."""
        record = self.backend.load_shared(self.id)
        record.plan.known_steps([step])
        return item_counts(record, step)

    @property
    def step_durations(self) -> dict[str, float]:
        """Seconds per started step; a running step is measured up to now."""
        record = self.backend.load_shared(self.id)
        now = self.backend.clock()
        return {
            s.id: (s.finished_at if s.finished_at is not None else now) - s.started_at
            for s in record.steps.values() if s.started_at is not None
        }

    def history(self) -> list[Event]:
        """The execution's history, oldest first (``runfox.history``; ``Backend.history``)."""
        return self.backend.history(self.id)

    @property
    def elapsed(self) -> float:
        """Seconds from the first step start to the last step end (or now); 0 if none ran."""
        record = self.backend.load_shared(self.id)
        starts = [s.started_at for s in record.steps.values() if s.started_at is not None]
        if not starts:
            return 0.0
        running = any(s.status is StepStatus.IN_PROGRESS for s in record.steps.values())
        ends = [s.finished_at for s in record.steps.values() if s.finished_at is not None]
        end = self.backend.clock() if running or not ends else max(ends)
        return max(0.0, end - min(starts))

    def __repr__(self) -> str:
        return f"Workflow(id={self.id!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Workflow):
            return self.id == other.id and self.backend is other.backend
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)
