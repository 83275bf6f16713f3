"""Execution history: the event types, their JSON form, and how a transition yields them.

Pure: no I/O, no clock. The Backend calls ``events_between(old, new, context)``
with the record a transition loaded and the record it is about to write, and
hands the events to the store, which persists them in the same unit of work as
the record (``Store.write_shared(..., events=)``). Events are therefore derived
from the change itself, never reported separately by the graph: history and
record cannot disagree, and the graph stays untouched.

Every event names its execution, its place (``version``, the record version the
transition wrote, and ``index``, its position within that transition: together
the per-execution sequence, ``seq``), ``time`` (the transition's ``now``, or the
moment a worker reported for ``started``), ``type``, and, for step events, the
``step_id``, ``run_id`` and ``attempt``; ``details`` holds the rest. The
``created`` event (version 1) is not stored: it is built from the record's
header when history is read, since the record's creation *is* that event.

Types (``EVENT_TYPES``):

==================  =============================================================
``created``         the execution was stored (details: ``name``)
``claimed``         a step was claimed for a run and its job queued (details:
                    ``by``: the worker whose transition claimed it, when known)
``started``         a worker's executor began the run (only when the worker
                    reported timing; ``time`` is when it began, details ``worker``)
``completed``       a run succeeded (details: ``run_time`` from claim to result;
                    with worker timing also ``duration`` in the executor and
                    ``queued`` from claim to executor start, and ``worker``)
``failed``          a run failed (details: ``error_type``, ``message``,
                    ``final``: no retry follows)
``lease_expired``   a run's worker was lost (its lease ran out; the run failed
                    as ``WorkerLost``)
``retry_scheduled`` the step waits for another attempt (details: ``at``)
``reset``           a loop (``set`` branch) or a caller put the step back to ready
``halted``          a branch halted the workflow at this step
``skipped``         the step will not run (details: ``reason`` when recorded)
``cancelled``       a run was abandoned because the workflow ended
``cache_hit``       a step completed from the step cache, without a run
``workflow_ended``  the execution reached a final status (details: ``status``,
                    and ``error`` or ``reason`` when there is one)
``corrupt``         a stored event that could not be decoded (details: ``key``,
                    ``error``, ``stored``); never written, only read
==================  =============================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .records import StepRecord, WorkflowRecord
from .status import StepStatus, WorkflowStatus

__all__ = [
    "CACHE_HIT",
    "CANCELLED",
    "CLAIMED",
    "COMPLETED",
    "CORRUPT",
    "CREATED",
    "EVENT_TYPES",
    "FAILED",
    "HALTED",
    "LEASE_EXPIRED",
    "NO_CONTEXT",
    "RESET",
    "RETRY_SCHEDULED",
    "SKIPPED",
    "STARTED",
    "WORKFLOW_ENDED",
    "Event",
    "HistoryContext",
    "corrupt_event",
    "created_event",
    "events_between",
]

CREATED = "created"
CLAIMED = "claimed"
STARTED = "started"
COMPLETED = "completed"
FAILED = "failed"
LEASE_EXPIRED = "lease_expired"
RETRY_SCHEDULED = "retry_scheduled"
RESET = "reset"
HALTED = "halted"
SKIPPED = "skipped"
CANCELLED = "cancelled"
CACHE_HIT = "cache_hit"
WORKFLOW_ENDED = "workflow_ended"
CORRUPT = "corrupt"

EVENT_TYPES = frozenset({CREATED, CLAIMED, STARTED, COMPLETED, FAILED, LEASE_EXPIRED,
                         RETRY_SCHEDULED, RESET, HALTED, SKIPPED, CANCELLED, CACHE_HIT,
                         WORKFLOW_ENDED, CORRUPT})

#: The error type a worker records for a run whose lease ran out (``runfox.worker``).
_WORKER_LOST = "WorkerLost"


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of an execution's history. See the module docstring for the types."""

    workflow_execution_id: str
    version: int
    index: int
    time: float
    type: str
    step_id: str | None = None
    run_id: int | None = None
    attempt: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def seq(self) -> tuple[int, int]:
        """The place in the execution's history: ``(version, index)``, increasing."""
        return (self.version, self.index)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the stored ``data`` and ``runfox history --json``)."""
        data: dict[str, Any] = {"execution": self.workflow_execution_id,
                                "version": self.version, "index": self.index,
                                "time": self.time, "type": self.type}
        if self.step_id is not None:
            data["step_id"] = self.step_id
        if self.run_id is not None:
            data["run_id"] = self.run_id
        if self.attempt is not None:
            data["attempt"] = self.attempt
        if self.details:
            data["details"] = self.details
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The inverse of ``to_dict``; ``ValueError`` naming the field if it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an event must be an object, found {type(data).__name__}")
        try:
            execution, version, index = data["execution"], data["version"], data["index"]
            time, kind = data["time"], data["type"]
        except KeyError as exc:
            raise ValueError(f"an event needs {exc.args[0]!r}") from None
        checks = ((execution, str, "execution"), (kind, str, "type"),
                  (version, int, "version"), (index, int, "index"))
        for value, kind_of, name in checks:
            if not isinstance(value, kind_of) or isinstance(value, bool):
                raise ValueError(f"event field {name!r} must be {kind_of.__name__}, "
                                 f"found {type(value).__name__}")
        if not isinstance(time, int | float) or isinstance(time, bool):
            raise ValueError(f"event field 'time' must be a number, found {type(time).__name__}")
        details = data.get("details", {})
        if not isinstance(details, dict):
            raise ValueError("event field 'details' must be an object")
        step_id, run_id, attempt = data.get("step_id"), data.get("run_id"), data.get("attempt")
        if step_id is not None and not isinstance(step_id, str):
            raise ValueError("event field 'step_id' must be a string")
        for name, value in (("run_id", run_id), ("attempt", attempt)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"event field {name!r} must be an integer")
        return cls(execution, version, index, float(time), kind, step_id, run_id, attempt,
                   details)

    def describe(self) -> str:
        """One human line (``runfox history``), without the time."""
        where = f"{self.step_id} run {self.run_id}" if self.step_id is not None else "workflow"
        if self.attempt:
            where += f" attempt {self.attempt}"
        extra = ", ".join(f"{k}={_short(v)}" for k, v in self.details.items())
        return f"{self.type:<16} {where}" + (f"  ({extra})" if extra else "")


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


@dataclass(frozen=True, slots=True)
class HistoryContext:
    """What the caller of a transition knows that the records do not.

    ``worker``: the id of the worker (or driver) making the transition.
    ``timings``: per result ``(step_id, run_id)``, what the worker measured:
    ``started_at`` (epoch seconds the executor was called), ``duration``
    (seconds in the executor), ``worker`` (who ran it). All optional.
    """

    worker: str | None = None
    timings: Mapping[tuple[str, int | None], Mapping[str, Any]] = field(default_factory=dict)


NO_CONTEXT = HistoryContext()


def created_event(record: WorkflowRecord) -> Event:
    """The ``created`` event of ``record``'s execution, from its header."""
    return Event(record.workflow_execution_id, 1, 0, record.created_at, CREATED,
                 details={"name": record.plan.name})


def corrupt_event(workflow_execution_id: str, version: int, index: int, key: str,
                  error: str, stored: Any) -> Event:
    """What a reader returns for a stored event it cannot decode (``key``: where it is)."""
    return Event(workflow_execution_id, version, index, 0.0, CORRUPT,
                 details={"key": key, "error": error, "stored": stored})


def events_between(old: WorkflowRecord, new: WorkflowRecord,
                   context: HistoryContext = NO_CONTEXT) -> list[Event]:
    """The events of the transition from ``old`` to ``new`` (``new`` carries its version).

    Looks only at the steps that changed (``StepMap.changed_since``, identity
    compares by chunks of 64), so its cost follows the size of the change, not
    of the record.
    """
    if old is new:
        return []
    out: list[Event] = []
    now = new.updated_at
    key, version = new.workflow_execution_id, new.version
    old_steps, new_steps = old.steps, new.steps
    by = {"by": context.worker} if context.worker is not None else None
    for sid in new_steps.changed_since(old_steps):
        n = new_steps[sid]
        o = old_steps.get(sid)
        if o is None:  # an item made when its map step was claimed: events from its claim on
            if n.status is StepStatus.READY:
                continue
            o = StepRecord(sid, run_id=n.run_id)
        if n.status is StepStatus.IN_PROGRESS and o.status is not StepStatus.IN_PROGRESS:
            # the common case, a claim: no generator, no lookups
            out.append(Event(key, version, len(out), now, CLAIMED, sid, n.run_id, n.attempts,
                             dict(by) if by else {}))
            continue
        if (n.status is StepStatus.COMPLETE and o.status is StepStatus.IN_PROGRESS
                and not context.timings and context.worker is None):
            done = {} if o.started_at is None else {"run_time": round(now - o.started_at, 6)}
            out.append(Event(key, version, len(out), now, COMPLETED, sid, o.run_id, o.attempts,
                             done))
            continue
        for kind, run_id, attempt, details, at in _step_events(o, n, now, context):
            out.append(Event(key, version, len(out), at, kind, sid, run_id, attempt, details))
    if new.status is not old.status and new.status.is_terminal:
        out.append(Event(key, version, len(out), now, WORKFLOW_ENDED, details=_ending(new)))
    return out


_StepEvent = tuple[str, int, int, dict[str, Any], float]


def _step_events(o: StepRecord, n: StepRecord, now: float, context: HistoryContext
                 ) -> Iterator[_StepEvent]:
    """What happened to one step between ``o`` and ``n``."""
    status = n.status
    was_running = o.status is StepStatus.IN_PROGRESS
    if status is StepStatus.IN_PROGRESS:
        if was_running and o.run_id == n.run_id:
            return  # the same run, re-dispatched or otherwise touched
        if was_running:  # ended and claimed again within one transition
            yield from _run_ended(o, n, now, context)
        details: dict[str, Any] = {}
        if context.worker is not None:
            details["by"] = context.worker
        yield CLAIMED, n.run_id, n.attempts, details, now
        return
    if was_running and (status is not StepStatus.CANCELLED and status is not StepStatus.SKIPPED):
        yield from _run_ended(o, n, now, context)
        return
    if status is o.status and n.run_id == o.run_id:
        return  # output written by hand, counters rebuilt...
    if status is StepStatus.CANCELLED:
        yield CANCELLED, o.run_id, o.attempts, {}, now
    elif status is StepStatus.SKIPPED:
        details = {}
        if n.error and n.error.get("type"):
            details["reason"] = n.error.get("type")
            if n.error.get("message"):
                details["message"] = n.error["message"]
        yield SKIPPED, n.run_id, n.attempts, details, now
    elif status is StepStatus.READY:
        yield RESET, n.run_id, n.attempts, {"from": o.status.value}, now
    elif status is StepStatus.FAILED:  # failed without running: inputs, re-dispatch
        yield FAILED, n.run_id, n.attempts, {**_error(n), "final": True}, now
    elif status is StepStatus.RETRY:
        yield RETRY_SCHEDULED, n.run_id, n.attempts + 1, {"at": n.not_before or now}, now
    elif status is StepStatus.COMPLETE:
        # Completed without a run of its own: served from the step cache (or by hand).
        yield (CACHE_HIT if n.cached else COMPLETED), n.run_id, n.attempts, {}, now
    elif status is StepStatus.HALTED:
        yield HALTED, n.run_id, n.attempts, {}, now


def _run_ended(o: StepRecord, n: StepRecord, now: float, context: HistoryContext
               ) -> Iterator[_StepEvent]:
    """The events of run ``o.run_id`` ending, and of what became of the step."""
    run, attempt = o.run_id, o.attempts
    timing = context.timings.get((o.id, run)) or context.timings.get((o.id, None)) or {}
    worker = timing.get("worker", context.worker)
    started = timing.get("started_at")
    if isinstance(started, int | float) and not isinstance(started, bool):
        yield STARTED, run, attempt, ({"worker": worker} if worker else {}), float(started)
    status = n.status
    error = n.error if n.run_id != run or status is not StepStatus.COMPLETE else None
    if status is StepStatus.COMPLETE or (status is StepStatus.READY and n.error is None) \
            or (status is StepStatus.HALTED and n.error is None):
        details: dict[str, Any] = {}
        if o.started_at is not None:
            details["run_time"] = round(now - o.started_at, 6)
        duration = timing.get("duration")
        if isinstance(duration, int | float) and not isinstance(duration, bool):
            details["duration"] = duration
        if isinstance(started, int | float) and o.started_at is not None:
            details["queued"] = round(max(0.0, started - o.started_at), 6)
        if worker:
            details["worker"] = worker
        yield COMPLETED, run, attempt, details, now
        if status is StepStatus.HALTED:
            yield HALTED, run, attempt, {}, now
        elif status is StepStatus.READY:
            yield RESET, n.run_id, n.attempts, {"from": "branch"}, now
        return
    if error is None:  # in_progress -> something without an error (e.g. a hand reset)
        yield RESET, n.run_id, n.attempts, {"from": o.status.value}, now
        return
    final = status is StepStatus.FAILED or status is StepStatus.HALTED
    details = _error(n)
    if worker:
        details["worker"] = worker
    if details.get("error_type") == _WORKER_LOST:
        yield LEASE_EXPIRED, run, attempt, {**details, "final": final}, now
    else:
        yield FAILED, run, attempt, {**details, "final": final}, now
    if status is StepStatus.HALTED:  # a branch halted on the error
        yield HALTED, run, attempt, {}, now
    elif status is StepStatus.RETRY or status is StepStatus.IN_PROGRESS:
        # waiting, or claimed again at once in this transition; attempt: the retry's
        yield RETRY_SCHEDULED, n.run_id, attempt + 1, {"at": n.not_before or now}, now


def _error(step: StepRecord) -> dict[str, Any]:
    error = step.error or {}
    return {"error_type": str(error.get("type", "Error")),
            "message": str(error.get("message", ""))}


def _ending(record: WorkflowRecord) -> dict[str, Any]:
    details: dict[str, Any] = {"status": record.status.value}
    outcome = record.outcome
    if isinstance(outcome, dict):
        error = outcome.get("error")
        if record.status is WorkflowStatus.FAILED and error is not None:
            if isinstance(error, dict):
                details["error"] = {k: error[k] for k in ("type", "message") if k in error}
            else:
                details["error"] = _short(error, 500)
            if outcome.get("step") is not None:
                details["step"] = outcome["step"]
        if record.status is WorkflowStatus.CANCELLED and outcome.get("reason") is not None:
            details["reason"] = outcome["reason"]
    return details
