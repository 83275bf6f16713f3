"""The pure graph: every workflow transition as a function of a record.

Each function takes a ``WorkflowRecord`` (and the time ``now``, in epoch seconds)
and returns a new record plus a result. None of them does I/O, reads a clock or
mutates its argument, so any process anywhere can compute a transition and a
store can decide, with one conditional write, whether it wins.

- ``advance`` claims every ready step in one transition and returns their jobs.
- ``on_step_result`` applies one result. A result for a step that is not in
  progress, or that carries another ``run_id``, returns the record unchanged
  (the very same object) with ``Ignored``.
- ``apply_results`` applies many results in order, as one transition.
- ``cancel`` ends an execution; nothing is dispatched after it.
- The seed's single-purpose operations (``mark_in_progress`` ... ``reset_for_retry``)
  are here too, each a pure function, for callers that drive the graph by hand.

Failure model: an attempt failed when its output is not a JSON object, or says
``ok: false`` (what a worker reports when the executor raised or timed out).
Branches see the output first; if none fires, a failed attempt is retried while
``attempts < max_attempts`` (after the step's backoff) and the step's
``retry.on`` / ``retry.on_timeout`` filters allow its error type, else the step
fails. A ``WorkerLost`` attempt (a worker died holding the job) is retried at
once, even past ``max_attempts`` and whatever the filters say, until
``WORKER_LOST_CAP`` attempts in a row were lost.

What a failed step does to the workflow (``on_dependency_failure``, per step or
in ``defaults``; ``fail`` when not given):

- A step's failure ends the workflow at once (in-flight steps ``cancelled``,
  waiting ones ``skipped``, outcome ``{"step", "error", "attempts"}``) when one
  of its dependents has policy ``fail``, or, for a step with no dependents, when
  ``defaults.on_dependency_failure`` is ``fail`` (the end of the workflow counts
  as a dependent of every such step). With no policy written anywhere this is
  every failure: today's behaviour. Otherwise the step is ``failed`` with the
  error output as its output (``{"ok": false, "error", "error_type"}``) and
  everything else goes on.
- A failed or skipped step is *settled*, like a complete one: it counts as a met
  dependency. When the last dependency of a waiting step settles and one of them
  is not ``complete`` (failed, or skipped), the step runs if its policy is
  ``run`` (``steps.X.output`` is the failed step's error output; a skipped step
  has none) and is ``skipped`` otherwise. So a skipped dependency propagates the
  skip unless the dependent says ``run``, and a ``fail`` step reached only
  through skipped steps is skipped, not fatal.
- The workflow ends when no step is open (nothing more can run): ``failed`` if
  any step failed, with the first failure (by time, then spec order) under
  ``step``/``error``/``attempts`` and every failed step, in that order, under
  ``failed``; ``complete`` (``outputs`` resolved) otherwise. Skipped steps alone
  do not fail a workflow. ``failed`` is in the outcome of every failure of a
  plan that uses ``skip`` or ``run`` anywhere, and only there (other outcomes
  keep their earlier shape).

``max_parallel`` (top level) caps the steps of one execution in progress at
once: ``advance`` claims at most ``max_parallel - running`` steps, in spec order.

A transition never stops on the data it is given. An error that is a property
of the data (``DATA_ERRORS``: a rule that fails, a value JSON cannot hold, an
overflow, nesting too deep, a result too large for memory) fails the step whose
inputs, branches or outputs it came from. A record the graph cannot use at all is
ended by ``fail_execution`` / ``fail_defective``, which evaluate nothing.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from typing import Any

from .cache import CacheLookup, cache_key, is_fresh
from .errors import ExecutionStateError, ExpressionError, NotJSONError, UnknownStepError
from .expressions import compile_template, truthy
from .jsonvalue import as_output, error_output, json_clone, json_copy
from .records import (
    MapProgress,
    ProductsView,
    StepChanges,
    StepRecord,
    StepsView,
    WorkflowRecord,
    context_for,
)
from .results import (
    Cancelled,
    Complete,
    Dispatch,
    DispatchJob,
    Failed,
    Halt,
    Ignored,
    Pending,
    Result,
    StateChangeEvent,
)
from .spec import Branch, StepSpec, item_id, item_index, plan_step_id
from .status import StepStatus, WorkflowStatus

__all__ = [
    "DATA_ERRORS",
    "NOT_TARGETED",
    "WORKER_LOST_CAP",
    "StateChange",
    "advance",
    "apply_results",
    "cancel",
    "claim_timeouts",
    "error_of",
    "fail_defective",
    "fail_execution",
    "fail_steps",
    "invalidate",
    "item_id",
    "item_index",
    "mark_complete",
    "mark_halted",
    "mark_in_progress",
    "merge_workflow_state",
    "on_step_result",
    "plan_step_id",
    "redispatch",
    "redrive",
    "redrive_problem",
    "reset_for_retry",
    "reset_step",
    "restrict_to_targets",
    "terminal_result",
    "write_step_output",
    "write_workflow_outcome",
]

_WAITING = (StepStatus.READY, StepStatus.RETRY)

#: How many attempts of a step in a row may end in ``WorkerLost`` (the lease ran
#: out because the worker holding the job died or stalled) before the step fails
#: as a poison job. Below the cap a lost attempt is retried even when the step's
#: ``max_attempts`` is spent; it still counts against them.
WORKER_LOST_CAP = 5

#: Errors that come from the data an expression or a value is evaluated on, not
#: from the machine: evaluating the same record again raises them again, so they
#: fail the step at once instead of being retried. ``ExpressionError`` and
#: ``NotJSONError`` are ``ValueError``s; ``OverflowError`` and ``ZeroDivisionError``
#: are ``ArithmeticError``s. ``MemoryError`` is here because an expression that
#: builds a value too large for memory does so every time.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, ArithmeticError, LookupError, RecursionError, MemoryError)

#: (event, previous_state, new_state) for each state merge a transition made.
StateChange = tuple[StateChangeEvent | None, dict[str, Any], dict[str, Any]]


class _MapRefused(Exception):
    """A map step that cannot start (its list is no list, too many items failed to
    resolve): carries the step's error, handled like an input error."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


#: What stops one step's claim in ``advance`` without stopping the others.
_CLAIM_ERRORS: tuple[type[BaseException], ...] = (*DATA_ERRORS, _MapRefused)


class _Tx(StepChanges):
    """``StepChanges`` with the failure policies applied as steps settle."""

    __slots__ = ()

    def put(self, new: StepRecord) -> None:
        """Replace a step; settle what follows from it (counts, ready set, policies)."""
        self._put(new)
        while self._check:  # a worklist, not recursion: skips may cascade down long chains
            self._apply_policy(self._check.pop())

    def _apply_policy(self, step_id: str) -> None:
        """Skip a waiting step whose settled dependencies include one that is not complete.

        Unless its policy is ``run``. Costs the step's dependencies once each time
        it becomes ready, and only in a tolerant plan.
        """
        step = self.get(step_id)
        if step.status not in _WAITING or step.unmet:
            return
        spec = self.base.plan.by_id[step_id]
        if spec.on_dependency_failure == "run":
            return
        for dep in spec.depends_on:
            status = self.get(dep).status
            if status is not StepStatus.COMPLETE:
                self._put(step.evolve(
                    status=StepStatus.SKIPPED, not_before=None,
                    error=_error("DependencyFailed", f"dependency {dep!r} is {status.value}")))
                return


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def terminal_result(record: WorkflowRecord) -> Complete | Halt | Failed | Cancelled | None:
    """The result a finished record stands for, or ``None`` if it is still running."""
    status = record.status
    if status is WorkflowStatus.COMPLETE:
        return Complete(json_clone(record.outcome))
    if status is WorkflowStatus.HALTED:
        return Halt(json_clone(record.outcome))
    if status is WorkflowStatus.FAILED:
        return Failed(json_clone(record.outcome))
    if status is WorkflowStatus.CANCELLED:
        return Cancelled(json_clone(record.outcome))
    return None


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message}


def _check_output(output: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Validate and copy an executor output; return it and the error if the attempt failed.

    The copy is deep, except for a runner's gathered result (``jsonvalue.Decoded``):
    its values are checked where they are and shared (see ``jsonvalue.as_output``).

    A failed output is the seed's ``{"ok": False, "error": "<message>"}``, with
    ``error_type`` and ``traceback`` beside it when runfox built it
    (``jsonvalue.error_output``); the older ``"error": {"type", "message",
    "traceback"?, "details"?}`` is read too. Either way the step record's
    ``error`` is ``{"type", "message", "traceback"?, "details"?}``.
    """
    output = as_output(output)
    if output.get("ok") is not False:
        return output, None
    raw = output.get("error")
    if isinstance(raw, dict):
        error = {"type": str(raw.get("type", "Error")), "message": str(raw.get("message", ""))}
        extras: dict[str, Any] = raw
    elif raw is None:
        error = _error("Failed", "the step returned ok: false")
        extras = {}
    else:
        kind = output.get("error_type")
        error = _error(kind if isinstance(kind, str) and kind else "Error",
                       raw if isinstance(raw, str) else str(raw))
        extras = output
    for extra in ("traceback", "details"):
        if extra in extras:
            error[extra] = extras[extra]
    return output, error


def _terminate(
    tx: _Tx, status: WorkflowStatus, outcome: Any, now: float, **fields: Any
) -> WorkflowRecord:
    """End the workflow: in-flight steps are cancelled, waiting ones skipped."""
    tx.resolve = False
    for step_id, step in tx.base.steps.items():
        step = tx.get(step_id)
        if step.status is StepStatus.IN_PROGRESS:
            tx.put(step.evolve(status=StepStatus.CANCELLED, finished_at=now))
        elif step.status in _WAITING:
            tx.put(step.evolve(status=StepStatus.SKIPPED, not_before=None))
    return tx.commit(status=status, outcome=outcome, **fields)


def _fail(tx: _Tx, step: StepRecord, error: dict[str, Any], now: float,
          output: dict[str, Any] | None = None) -> tuple[WorkflowRecord, Result]:
    """The step failed for good: end the workflow, or go on if every dependent tolerates it.

    Returns the terminal ``Failed``, or ``None`` when the workflow goes on (and
    ``Failed``/``Complete`` from ``_finish`` when that failure left nothing open).
    """
    if tx.base.plan.ends_on_failure(step.id):
        tx.put(step.evolve(status=StepStatus.FAILED, error=error, finished_at=now,
                           output=output if output is not None else step.output))
        outcome = _failure_outcome(tx) if tx.base.plan.tolerant else \
            {"step": step.id, "error": error, "attempts": step.attempts}
        assert outcome is not None
        return _terminate(tx, WorkflowStatus.FAILED, outcome, now), Failed(json_clone(outcome))
    _fail_tolerated(tx, step, error, now, output)
    if tx.open == 0:
        return _finish(tx, now, tx.base.state)
    return tx.commit(), None


def _fail_tolerated(tx: _Tx, step: StepRecord, error: dict[str, Any], now: float,
                    output: dict[str, Any] | None = None) -> None:
    """Record a failure the workflow survives; the output is the error output."""
    if output is None or output.get("ok") is not False:
        output = error_output(error["type"], error["message"])
    tx.put(step.evolve(status=StepStatus.FAILED, error=error, finished_at=now, output=output))


def _failure_outcome(tx: _Tx) -> dict[str, Any] | None:
    """The failed outcome naming every failed step, or ``None`` when none failed.

    ``step``/``error``/``attempts`` are the first failure's (by time, then spec
    order), ``failed`` lists all of them in that order. Walks every step: once,
    when the workflow ends.
    """
    plan = tx.base.plan
    failed = [step for step in map(tx.get, plan.by_id) if step.status is StepStatus.FAILED]
    if not failed:
        return None
    failed.sort(key=lambda s: (s.finished_at or 0.0, plan.index[s.id]))
    entries = [{"step": s.id, "error": s.error, "attempts": s.attempts} for s in failed]
    return {**entries[0], "failed": entries}


def _finish(tx: _Tx, now: float, state: dict[str, Any]) -> tuple[WorkflowRecord, Result]:
    """No step is open: fail the workflow if a step failed, else resolve ``outputs``."""
    if tx.base.plan.tolerant:
        failure = _failure_outcome(tx)
        if failure is not None:
            return (tx.commit(state=state, status=WorkflowStatus.FAILED, outcome=failure),
                    Failed(json_clone(failure)))
    record = tx.commit(state=state)
    try:
        outcome = json_copy(record.plan.outputs(context_for(record)), "outputs")
    except DATA_ERRORS as exc:
        detail = str(exc) if isinstance(exc, NotJSONError) else f"outputs: {_describe(exc)}"
        outcome = {"error": _error("OutputError", detail)}  # a NotJSONError names its path
        return (record.evolve(status=WorkflowStatus.FAILED, outcome=outcome),
                Failed(json_clone(outcome)))
    return (record.evolve(status=WorkflowStatus.COMPLETE, outcome=outcome),
            Complete(json_clone(outcome)))


def _job(record: WorkflowRecord, spec: StepSpec, step: StepRecord, inputs: dict[str, Any],
         slot: str | None = None) -> DispatchJob:
    """The job for a claimed step; ``slot`` is its concurrency key (``_slot``)."""
    limit = spec.concurrency.limit if spec.concurrency is not None and slot is not None else None
    return DispatchJob(record.workflow_execution_id, spec.id, spec.fn, inputs, step.run_id,
                       step.attempts, spec.timeout, concurrency_key=slot,
                       concurrency_limit=limit)


def _slot(record: WorkflowRecord, spec: StepSpec, inputs: dict[str, Any]) -> str | None:
    """The step's concurrency key for these inputs, or ``None`` without a limit.

    Raises ``ExpressionError`` (a data error: the step fails) when the key rule
    gives no usable key."""
    if spec.concurrency is None:
        return None
    return spec.concurrency.key_for(record.inputs, inputs)


def _describe(exc: BaseException) -> str:
    """An exception as one phrase; runfox's own errors speak for themselves."""
    if isinstance(exc, ExpressionError | NotJSONError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resolve_inputs(spec: StepSpec, context: dict[str, Any]) -> dict[str, Any]:
    """A step's inputs, checked to be JSON (a job that cannot be sent is no job)."""
    inputs: dict[str, Any] = json_copy(spec.inputs(context), "inputs")
    return inputs


def _raw_inputs(record: WorkflowRecord, spec: StepSpec) -> dict[str, Any]:
    raw_steps = record.plan.raw.get("steps") or []
    raw = raw_steps[spec.index] if spec.index < len(raw_steps) else None
    if not isinstance(raw, dict) or raw.get("id") != spec.id:
        raw = next((s for s in raw_steps if isinstance(s, dict) and s.get("id") == spec.id), {})
    inputs = raw.get("input")
    return inputs if isinstance(inputs, dict) else {}


def _failing_input(record: WorkflowRecord, spec: StepSpec, context: dict[str, Any],
                   exc: BaseException) -> str | None:
    """The name of the input that raised ``exc``, when it can be found cheaply."""
    if isinstance(exc, NotJSONError):
        path = exc.path.removeprefix("inputs")
        name = path[1:].split(".", 1)[0].split("[", 1)[0] if path.startswith(".") else ""
        return name or None
    if isinstance(exc, MemoryError | RecursionError):
        return None  # evaluating again would cost as much again
    for name, template in _raw_inputs(record, spec).items():
        try:
            compile_template(template)(context)
        except DATA_ERRORS:
            return name
    return None


def _input_error(record: WorkflowRecord, spec: StepSpec, context: dict[str, Any],
                 exc: BaseException, when: str = "") -> dict[str, Any]:
    """The ``InputError`` for a step whose inputs raised ``exc``, naming the input."""
    name = _failing_input(record, spec, context, exc)
    detail = _describe(exc)
    if isinstance(exc, NotJSONError) and exc.path:
        detail = f"{str(exc)[len(exc.path) + 2:]} (at {exc.path})"
    place = f"input {name!r}" if name else "input"
    error = _error("InputError", f"step {spec.id!r} {place}{when}: {detail}")
    error["step"] = spec.id
    if name:
        error["field"] = name
    return error


# ---------------------------------------------------------------------------
# advance
# ---------------------------------------------------------------------------


def advance(record: WorkflowRecord, now: float, *, cache: CacheLookup | None = None,
            changes: list[StateChange] | None = None) -> tuple[WorkflowRecord, Result]:
    """Claim every step that is ready and due; return the new record and the result.

    Returns ``Dispatch(jobs)`` when steps were claimed, ``Pending(retry_at)`` when
    nothing is due yet, or the terminal result when the workflow has ended.

    ``cache`` (the step cache, ``runfox.cache``): a due step with ``cache`` on whose
    key has a fresh entry in ``cache.entries`` is claimed and completed with the
    stored output in this same transition, marked ``cached`` (its branches run on
    that output, as on any result; state merges go to ``changes``), and what it
    makes ready is claimed in turn. An entry that is ``None`` or stale is a miss:
    the step is claimed as usual. A key not in ``cache.entries`` is appended to
    ``cache.wanted`` and its step left ready for the caller to look the key up
    and call ``advance`` again. Without ``cache`` nothing is looked up.
    """
    finished = terminal_result(record)
    if finished is not None:
        return record, finished
    jobs: list[DispatchJob] = []
    deferred: set[str] = set()  # cached steps whose key the caller has not read yet
    while True:  # another round after an input error survived or a cache hit
        due, retry_at = _due(record, now)
        if deferred:
            due = [step_id for step_id in due if step_id not in deferred]
        if not due:
            break
        plan = record.plan
        steps = record.steps
        tx = _Tx(record)
        context = context_for(record)
        survived: list[tuple[StepRecord, dict[str, Any]]] = []
        hits: list[tuple[str, Any, int | None]] = []
        settled_maps = False  # a map step completed when claimed (no items to run)
        for step_id in due:
            spec = plan.by_id[step_id]
            step = steps[step_id]
            memo = (cache.resolved.pop((step_id, step.run_id), None)
                    if cache is not None and spec.cache is not None else None)
            try:
                if spec.map is not None:
                    map_error, done = _expand(tx, record, spec, step, context, now)
                    settled_maps = settled_maps or done
                    if map_error is None:
                        continue
                    raise _MapRefused(map_error)
                inputs = memo[0] if memo is not None else _resolve_inputs(spec, context)
                slot = _slot(record, spec, inputs)
            except _CLAIM_ERRORS as exc:
                error = exc.error if isinstance(exc, _MapRefused) else \
                    _input_error(record, spec, context, exc)
                if plan.ends_on_failure(step_id):
                    ending = _Tx(record)  # this round's claims are dropped, its failures kept
                    for failed, failure in survived:
                        _fail_tolerated(ending, failed, failure, now)
                    return _fail(ending, step, error, now)
                _fail_tolerated(tx, step, error, now)
                survived.append((step, error))
                continue
            stored: dict[str, Any] | None = None  # the output of a fresh cache entry
            if cache is not None and spec.cache is not None:
                key = memo[1] if memo is not None else cache_key(spec.fn, inputs,
                                                                 spec.cache.version)
                if key not in cache.entries:
                    cache.wanted.append(key)
                    cache.resolved[(step_id, step.run_id)] = (inputs, key)
                    deferred.add(step_id)
                    continue
                entry = cache.entries[key]
                if entry is not None and is_fresh(entry.stored_at, now, spec.cache.max_age):
                    stored = entry.output
            claimed = step.evolve(status=StepStatus.IN_PROGRESS, attempts=step.attempts + 1,
                                  started_at=now, finished_at=None, not_before=None,
                                  inputs=inputs, cached=stored is not None)
            tx.put(claimed)
            if stored is not None:
                hits.append((step_id, stored, claimed.run_id))  # _apply copies it
            else:
                jobs.append(_job(record, spec, claimed, inputs, slot))
        if tx.changes:  # a round that only deferred cached steps changes nothing
            record = tx.commit(status=WorkflowStatus.IN_PROGRESS)
        if hits:
            record, _ = apply_results(record, hits, now, changes)
            finished = terminal_result(record)
            if finished is not None:  # a hit ended it (the last step, or a branch)
                return record, finished
        if not survived and not hits and not settled_maps:
            break
    if record.maps:
        record, item_jobs, item_retry = _claim_items(record, now)
        jobs.extend(item_jobs)
        if item_retry is not None:
            retry_at = item_retry if retry_at is None else min(retry_at, item_retry)
    if jobs:
        return record, Dispatch(jobs)
    if record.open == 0:
        return _finish(_Tx(record), now, record.state)
    return record, Pending(retry_at)


# ---------------------------------------------------------------------------
# Map steps
# ---------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _map_error(spec: StepSpec, message: str) -> dict[str, Any]:
    error = _error("MapError", f"step {spec.id!r} field 'map': {message}")
    error["step"] = spec.id
    error["field"] = "map"
    return error


def _expand(tx: _Tx, record: WorkflowRecord, spec: StepSpec, step: StepRecord,
            context: dict[str, Any], now: float) -> tuple[dict[str, Any] | None, bool]:
    """Claim map step ``spec``: evaluate its list, create one item record per entry.

    Each item's inputs are resolved now, with ``item`` and ``index`` added to the
    context; an item whose inputs do not resolve is failed at once (a data error).
    Returns ``(error, settled)``: ``error`` when the step cannot start at all (the
    value is not a list, or more items failed than it tolerates), nothing then being
    changed; ``settled`` when the step completed at once (an empty list, or every
    item failed and that is tolerated). O(items), once per claim.
    """
    try:
        values = spec.map(context)  # type: ignore[misc]
    except DATA_ERRORS as exc:
        return _map_error(spec, _describe(exc)), False
    if not isinstance(values, list):
        return _map_error(spec, f"expected a JSON list, got {_json_type(values)}"), False
    total = len(values)
    claimed = step.evolve(status=StepStatus.IN_PROGRESS, attempts=step.attempts + 1,
                          started_at=now, finished_at=None, not_before=None, inputs=None,
                          output=None, error=None, items=total)
    if total == 0:
        tx.put(claimed.evolve(status=StepStatus.COMPLETE, output=[], finished_at=now))
        return None, True
    items: list[StepRecord] = []
    failed: list[int] = []
    for index, value in enumerate(values):
        iid = item_id(spec.id, index)
        old = tx.find(iid)
        run_id = old.run_id + 1 if old is not None else 0
        scope = {**context, "item": value, "index": index}
        try:
            inputs = _resolve_inputs(spec, scope)
            _slot(record, spec, inputs)
            items.append(StepRecord(iid, run_id=run_id, inputs=inputs))
        except DATA_ERRORS as exc:
            error = _input_error(record, spec, scope, exc)
            error["message"] = f"item {index} of {error['message']}"
            error["item"] = index
            items.append(StepRecord(iid, StepStatus.FAILED, run_id, 0, error_output(
                error["type"], error["message"]), error, finished_at=now))
            failed.append(index)
    allowed = spec.tolerance(total)
    if len(failed) > allowed:
        first = items[failed[0]].error or {}
        return _map_error(spec, f"{len(failed)} of {total} items failed (tolerates "
                                f"{allowed}); the first, item {failed[0]}: "
                                f"{first.get('message')}"), False
    tx.put(claimed)
    tx.start_map(spec.id, MapProgress(total))
    for item in items:
        tx.add_item(item)
    if len(failed) == total:
        tx.put(_map_output(tx, claimed, now))
        return None, True
    return None, False


def _map_output(tx: _Tx, parent: StepRecord, now: float) -> StepRecord:
    """The completed map step: its output is every item's output, in item order."""
    total = parent.items or 0
    outputs = [tx.get(item_id(parent.id, i)).output for i in range(total)]
    return parent.evolve(status=StepStatus.COMPLETE, output=outputs, error=None,
                         finished_at=now)


def _claim_items(record: WorkflowRecord, now: float
                 ) -> tuple[WorkflowRecord, list[DispatchJob], float | None]:
    """Claim the items that may run now: due retries first, then the next indices, up
    to each map's ``max_parallel``. Never scans a map's items."""
    plan = record.plan
    steps = record.steps
    tx: _Tx | None = None
    jobs: list[DispatchJob] = []
    retry_at: float | None = None
    for parent_id, progress in record.maps.items():
        spec = plan.by_id[parent_id]
        room = progress.total if spec.max_parallel is None else \
            spec.max_parallel - progress.running
        picks: list[int] = []
        for index in sorted(progress.waiting):
            not_before = steps[item_id(parent_id, index)].not_before
            if not_before is not None and not_before > now:
                retry_at = not_before if retry_at is None else min(retry_at, not_before)
            elif len(picks) < room:
                picks.append(index)
        nxt = progress.next
        while len(picks) < room and nxt < progress.total:
            picks.append(nxt)
            nxt += 1
        if not picks:
            continue
        tx = tx or _Tx(record)
        for index in picks:
            item = steps[item_id(parent_id, index)]
            claimed = item.evolve(status=StepStatus.IN_PROGRESS, attempts=item.attempts + 1,
                                  started_at=now, finished_at=None, not_before=None)
            tx.put(claimed)
            jobs.append(_item_job(record, spec, claimed))
    if tx is None:
        return record, jobs, retry_at
    return tx.commit(), jobs, retry_at


def _item_job(record: WorkflowRecord, spec: StepSpec, item: StepRecord) -> DispatchJob:
    inputs = item.inputs if item.inputs is not None else {}
    try:
        slot = _slot(record, spec, inputs)
    except DATA_ERRORS:  # checked when the item was made: the same inputs, the same key
        slot = None
    limit = spec.concurrency.limit if spec.concurrency is not None and slot is not None else None
    return DispatchJob(record.workflow_execution_id, item.id, spec.fn, inputs, item.run_id,
                       item.attempts, spec.timeout, concurrency_key=slot,
                       concurrency_limit=limit)


def _apply_item(record: WorkflowRecord, spec: StepSpec, step_id: str, index: int, output: Any,
                run_id: int | None, now: float) -> tuple[WorkflowRecord, Result]:
    """Apply the result of one attempt of item ``index`` of map step ``spec``.

    The rules of a step, per item: applied only when the item is in progress with
    that run id (and belongs to the map's current claim), retried with the step's
    retry policy and ``WorkerLost`` rule. Costs O(1) items, plus O(items) once when
    the last item settles (the output list) or the map fails (its other items are
    cancelled).
    """
    parent = record.steps[spec.id]
    progress = record.maps.get(spec.id)
    item = record.steps.get(step_id)
    if progress is None or item is None or index >= progress.total:
        return record, Ignored(f"item {step_id!r} is not awaited (map step {spec.id!r} is "
                               f"{parent.status.value})")
    if item.status is not StepStatus.IN_PROGRESS:
        return record, Ignored(f"step {step_id!r} is {item.status.value}, not in progress")
    if run_id is not None and run_id != item.run_id:
        return record, Ignored(f"step {step_id!r} result is for run {run_id}, "
                               f"the current run is {item.run_id}")
    output, error = _check_output(output)
    tx = _Tx(record)
    if error is None:
        tx.put(item.evolve(status=StepStatus.COMPLETE, output=output, error=None,
                           finished_at=now))
    else:
        lost = _count_lost(item, error)
        budget = item.attempts < spec.max_attempts and spec.retry.retries(error["type"])
        if budget or 0 < lost < WORKER_LOST_CAP:
            delay = 0.0 if lost else spec.retry.delay_for(
                item.attempts, f"{record.workflow_execution_id}#{step_id}#{item.run_id}")
            tx.put(item.evolve(status=StepStatus.RETRY, run_id=item.run_id + 1, error=error,
                               output=output, finished_at=now,
                               not_before=now + delay if delay else None))
            return tx.commit(), Pending(now + delay)
        if lost >= WORKER_LOST_CAP:
            error["message"] = (f"step {step_id!r} lost its worker {lost} times in a row; "
                                f"last: {error['message']}")
        if output.get("ok") is not False:
            output = error_output(error["type"], error["message"])
        tx.put(item.evolve(status=StepStatus.FAILED, output=output, error=error,
                           finished_at=now))
    return _settle(tx, spec, now)


def _settle(tx: _Tx, spec: StepSpec, now: float) -> tuple[WorkflowRecord, Result]:
    """After an item settled: fail the map when too many items failed, complete it
    when every item settled, else go on."""
    progress = tx.maps[spec.id]
    parent = tx.get(spec.id)
    allowed = spec.tolerance(progress.total)
    if progress.failed > allowed:
        first: tuple[int, StepRecord] | None = None
        for index in range(progress.total):  # once: the map ends here
            item = tx.get(item_id(spec.id, index))
            if item.status is StepStatus.FAILED and first is None:
                first = (index, item)
            elif item.status is StepStatus.IN_PROGRESS:
                tx.put(item.evolve(status=StepStatus.CANCELLED, finished_at=now))
            elif item.status in _WAITING:
                tx.put(item.evolve(status=StepStatus.SKIPPED, not_before=None))
        assert first is not None
        detail = (first[1].error or {}).get("message", "")
        error = _error("MapFailed", f"step {spec.id!r}: {progress.failed} of {progress.total} "
                                    f"items failed (tolerates {allowed}); the first, item "
                                    f"{first[0]}: {detail}")
        error["step"] = spec.id
        error["item"] = first[0]
        return _fail(tx, parent, error, now)
    if progress.settled < progress.total:
        return tx.commit(), None
    tx.put(_map_output(tx, parent, now))
    if tx.open == 0:
        record, result = _finish(tx, now, tx.base.state)
        return record, None if isinstance(result, Complete) else result
    return tx.commit(), None


def _due(record: WorkflowRecord, now: float) -> tuple[list[str], float | None]:
    """The ready steps that may be claimed now, in spec order, and the next retry time.

    At most ``max_parallel`` minus the steps in progress, when the spec sets it.
    """
    due: list[str] = []
    retry_at: float | None = None
    steps = record.steps
    for step_id in record.ready:
        not_before = steps[step_id].not_before
        if not_before is not None and not_before > now:
            retry_at = not_before if retry_at is None else min(retry_at, not_before)
        else:
            due.append(step_id)
    if due:
        due.sort(key=record.plan.index.__getitem__)
        limit = record.plan.max_parallel
        if limit is not None:
            del due[max(0, limit - record.running):]
    return due, retry_at


def redispatch(record: WorkflowRecord, now: float, older_than: float
               ) -> tuple[WorkflowRecord, Result]:
    """Jobs for steps claimed more than ``older_than`` seconds ago and still in progress.

    State is written before dispatch, so a process that dies between the two
    leaves a claimed step that no queue knows about. Dispatching these jobs again
    is safe because runners keep one job per ``(workflow_execution_id, step_id,
    run_id)``.

    Returns the same record with ``Dispatch(jobs)`` (possibly empty), the terminal
    result of a finished record, or, when a step's inputs no longer resolve (the
    data they read changed since the claim), the record with that step failed
    (``InputError``) and ``Failed``: a job that cannot be built would otherwise
    be looked for on every sweep, forever.
    """
    finished = terminal_result(record)
    if finished is not None:
        return record, finished
    jobs = []
    context = None
    tx = None  # failures the workflow survives
    for step in record.steps.values():
        if step.status is StepStatus.IN_PROGRESS and (step.started_at or 0) <= now - older_than:
            spec = record.plan.by_id.get(step.id)
            if spec is None or spec.map is not None:  # an item, or a map step (its items run)
                item = _awaited_item(record, step)
                if item is not None:
                    jobs.append(_item_job(record, item, step))
                continue
            context = context or context_for(record)
            try:
                inputs = _resolve_inputs(spec, context)
                slot = _slot(record, spec, inputs)
            except DATA_ERRORS as exc:
                error = _input_error(record, spec, context, exc, " on re-dispatch")
                tx = tx or _Tx(record)
                if record.plan.ends_on_failure(step.id):
                    return _fail(tx, step, error, now)
                _fail_tolerated(tx, step, error, now)
                continue
            jobs.append(_job(record, spec, step, inputs, slot))
    if tx is None:
        return record, Dispatch(jobs)
    if tx.open == 0:
        return _finish(tx, now, record.state)
    new, result = advance(tx.commit(), now)  # claim what the failures made ready
    if isinstance(result, Dispatch):
        return new, Dispatch(jobs + list(result.jobs))
    return new, Dispatch(jobs) if isinstance(result, Pending) else result


def _awaited_item(record: WorkflowRecord, step: StepRecord) -> StepSpec | None:
    """The map step of ``step`` when it is an item of a map in progress, else ``None``."""
    index = item_index(step.id)
    if index is None:
        return None
    parent = plan_step_id(step.id)
    progress = record.maps.get(parent)
    return record.plan.by_id[parent] if progress is not None and index < progress.total \
        else None


def claim_timeouts(record: WorkflowRecord, now: float, older_than: float) -> list[DispatchJob]:
    """The jobs ``redispatch`` would send; reads the record, changes nothing.

    When a step's inputs no longer resolve this returns no jobs: use
    ``redispatch`` (as ``Backend.redispatch_stale`` does) to fail that step.
    """
    _, result = redispatch(record, now, older_than)
    return list(result.jobs) if isinstance(result, Dispatch) else []


# ---------------------------------------------------------------------------
# on_step_result
# ---------------------------------------------------------------------------


def _branch_context(record: WorkflowRecord, step_id: str, output: dict[str, Any],
                    state: dict[str, Any]) -> dict[str, Any]:
    steps = StepsView(record.steps, (step_id, output))
    context = {"steps": steps, "input": record.inputs, "state": state}
    if record.plan.producers:
        context["products"] = ProductsView(steps, record.plan.producers)
    return {**context, **output}


def _fire(spec: StepSpec, context: dict[str, Any]) -> Branch | None:
    for branch in spec.branches:
        if truthy(branch.condition(context)):
            return branch
    return None


def _apply(
    record: WorkflowRecord,
    step_id: str,
    output: Any,
    run_id: int | None,
    now: float,
    changes: list[StateChange] | None,
) -> tuple[WorkflowRecord, Result]:
    if record.status.is_terminal:
        return record, Ignored(f"workflow is already {record.status.value}")
    spec = record.plan.by_id.get(step_id)
    if spec is None:
        index = item_index(step_id)
        parent = record.plan.by_id.get(plan_step_id(step_id)) if index is not None else None
        if parent is not None and parent.map is not None and index is not None:
            return _apply_item(record, parent, step_id, index, output, run_id, now)
        raise UnknownStepError(f"workflow {record.workflow_execution_id!r} has no step "
                               f"{step_id!r}")
    step = record.steps[step_id]
    if spec.map is not None and step.status is StepStatus.IN_PROGRESS:
        return record, Ignored(f"step {step_id!r} is a map step: its items have the results")
    if step.status is not StepStatus.IN_PROGRESS:
        return record, Ignored(f"step {step_id!r} is {step.status.value}, not in progress")
    if run_id is not None and run_id != step.run_id:
        return record, Ignored(f"step {step_id!r} result is for run {run_id}, "
                               f"the current run is {step.run_id}")

    output, error = _check_output(output)
    state = record.state
    merged = state if error is not None or not output else {**state, **output}
    tx = _Tx(record)

    branch = None
    payload: Any = {}
    if spec.branches:
        context = _branch_context(record, step_id, output, merged)
        try:
            branch = _fire(spec, context)
            payload = branch.result(context) if branch and branch.result else {}
            if branch is not None and branch.kind.keeps_result:
                payload = json_copy(payload)
        except DATA_ERRORS as exc:
            return _fail(tx, step, _error("BranchError",
                                          f"step {step_id!r} branch: {_describe(exc)}"),
                         now, output)

    if error is not None and (branch is None or not branch.kind.absorbs_error):
        lost = _count_lost(step, error)
        budget = step.attempts < spec.max_attempts and spec.retry.retries(error["type"])
        if budget or 0 < lost < WORKER_LOST_CAP:
            # A lost worker says nothing about the step: retry it at once.
            delay = 0.0 if lost else spec.retry.delay_for(
                step.attempts, f"{record.workflow_execution_id}#{step_id}#{step.run_id}")
            tx.put(step.evolve(status=StepStatus.RETRY, run_id=step.run_id + 1, error=error,
                               output=output, finished_at=now,
                               not_before=now + delay if delay else None))
            return tx.commit(), Pending(now + delay)
        if lost >= WORKER_LOST_CAP:
            error["message"] = (f"step {step_id!r} lost its worker {lost} times in a row (a "
                                f"poison job that kills or stalls every worker?); last: "
                                f"{error['message']}")
        return _fail(tx, step, error, now, output)

    if error is None and merged is not state and changes is not None:
        changes.append((StateChangeEvent(step_id, step.run_id, spec.fn), state, merged))

    if branch is not None:  # the action's kind decides (runfox.actions)
        applied = branch.kind.apply(_BranchOutcome(tx, record, step, output, error, now,
                                                   merged), branch.targets, payload)
        if applied is not None:
            return applied

    tx.put(step.evolve(status=StepStatus.COMPLETE, output=output, error=None, finished_at=now))
    if tx.open == 0:
        # The record completes in this transition, but the seed's on_step_result
        # returns None on a normal completion: Complete comes from the next advance.
        record, result = _finish(tx, now, merged)
        return record, None if isinstance(result, Complete) else result
    return tx.commit(state=merged), None


class _BranchOutcome:
    """What a fired branch's action may do to its step (``runfox.actions.BranchOutcome``)."""

    def __init__(self, tx: _Tx, record: WorkflowRecord, step: StepRecord, output: Any,
                 error: dict[str, Any] | None, now: float, merged: dict[str, Any]) -> None:
        self.tx, self.record, self.step = tx, record, step
        self.output, self.error, self.now, self.merged = output, error, now, merged

    def halt(self, payload: Any) -> tuple[WorkflowRecord, Result]:
        self.tx.put(self.step.evolve(status=StepStatus.HALTED, output=self.output,
                                     error=self.error, finished_at=self.now))
        return (_terminate(self.tx, WorkflowStatus.HALTED, payload, self.now,
                           state=self.merged), Halt(json_clone(payload)))

    def restart(self, targets: tuple[str, ...]) -> tuple[WorkflowRecord, Result]:
        _reset(self.tx, self.record.plan.descendants((*targets, self.step.id)))
        return self.tx.commit(state=self.merged), None


def _count_lost(step: StepRecord, error: dict[str, Any]) -> int:
    """For a ``WorkerLost`` error, record and return how many attempts in a row were lost.

    The count is kept in the error (``"lost": n``): one more than the previous
    attempt's when that was lost too, else 1. Any other error returns 0.
    """
    if error.get("type") != "WorkerLost":
        return 0
    previous = step.error
    before = previous.get("lost") if isinstance(previous, dict) and \
        previous.get("type") == "WorkerLost" else 0
    lost = (before if isinstance(before, int) and not isinstance(before, bool)
            and before > 0 else 0) + 1
    error["lost"] = lost
    return lost


def _reset(tx: _Tx, step_ids: Iterable[str]) -> None:
    for step_id in step_ids:
        step = tx.get(step_id)
        dispatched = step.status is not StepStatus.READY or step.attempts > 0
        tx.put(step.evolve(status=StepStatus.READY,
                           run_id=step.run_id + 1 if dispatched else step.run_id,
                           attempts=0, output=None, error=None, started_at=None,
                           finished_at=None, not_before=None, inputs=None, cached=False))


def on_step_result(
    record: WorkflowRecord,
    step_id: str,
    output: Any,
    run_id: int | None = None,
    now: float = 0.0,
    *,
    changes: list[StateChange] | None = None,
) -> tuple[WorkflowRecord, Result]:
    """Apply the result of one attempt of ``step_id``.

    ``run_id`` should be the ``run_id`` of the job that produced ``output``;
    ``None`` accepts a result for whatever run is in progress (the seed's
    behaviour, for callers that do not track runs).

    Returns ``(record, None)`` when the step completed normally, the last step
    included (the seed's contract: the record is then already complete, and
    ``Complete`` comes from the next ``advance``), ``Pending`` when a retry was
    scheduled, ``Halt`` when a branch halted, ``Failed`` when the workflow failed
    (the step's budget ran out, or the outputs did not resolve), or ``Ignored``
    (with the same record object) for a stale or duplicate result. Raises
    ``UnknownStepError`` for a step the workflow lacks. Each merge of the output
    into the shared state is appended to ``changes``.
    """
    return _apply(record, step_id, output, run_id, now, changes)


def apply_results(
    record: WorkflowRecord,
    results: Iterable[tuple[str, Any, int | None]],
    now: float,
    changes: list[StateChange] | None = None,
) -> tuple[WorkflowRecord, list[Result]]:
    """Apply ``(step_id, output, run_id)`` results in order, as one transition.

    State merges are appended to ``changes`` when it is given. A result for a step
    the workflow does not have is ``Ignored`` here rather than raised, so that one
    foreign message cannot block a batch.
    """
    outcomes: list[Result] = []
    for step_id, output, run_id in results:
        try:
            record, result = _apply(record, step_id, output, run_id, now, changes)
        except UnknownStepError as exc:
            result = Ignored(str(exc))
        outcomes.append(result)
    return record, outcomes


def cancel(record: WorkflowRecord, now: float, reason: str | None = None
           ) -> tuple[WorkflowRecord, Result]:
    """Cancel the execution. A finished workflow is returned unchanged with its result."""
    finished = terminal_result(record)
    if finished is not None:
        return record, finished
    outcome = {"cancelled": True, "reason": reason}
    return (_terminate(_Tx(record), WorkflowStatus.CANCELLED, outcome, now),
            Cancelled(json_clone(outcome)))


def error_of(exc: BaseException, where: str | None = None) -> dict[str, Any]:
    """An exception as a stored error: its real type, its message and its place.

    ``where`` defaults to the innermost frame of its traceback, such as
    ``graph.py:212 in _apply`` (the whole traceback belongs in a log, not in an
    outcome).
    """
    if where is None:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            where = f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
    error = _error(type(exc).__name__, str(exc) or type(exc).__name__)
    if where:
        error["where"] = where
    return error


def fail_execution(record: WorkflowRecord, error: dict[str, Any], now: float
                   ) -> tuple[WorkflowRecord, Result]:
    """End the execution as failed with outcome ``{"error": error}``, evaluating nothing.

    For a record the other transitions cannot handle (they raised, or it is
    defective): in-flight steps are cancelled and waiting ones skipped, as for any
    failure, and the history of the steps is kept. A finished record is returned
    unchanged with its result. Step defects are cleared; ``fail_defective`` keeps
    their stored values in the outcome.
    """
    finished = terminal_result(record)
    if finished is not None:
        return record, finished
    tx = _Tx(record)
    for step in record.steps.values():
        if step.defects:
            tx.put(step.evolve(defects=()))
    outcome = {"error": error}
    new = _terminate(tx, WorkflowStatus.FAILED, outcome, now, defects=())
    return new, Failed(json_clone(outcome))


def fail_defective(record: WorkflowRecord, now: float) -> tuple[WorkflowRecord, Result]:
    """Fail an execution whose stored record has values of the wrong shape.

    The outcome's error is a ``CorruptRecord`` naming the field (and step) of the
    first defect, with the stored value under ``stored``; every defect is listed
    under ``defects``. Nothing that was stored is lost: the bad values move from
    their fields (now neutral) into the outcome.
    """
    defects = record.defects
    if not defects:
        raise ValueError(f"record {record.workflow_execution_id!r} has no defects")
    first = defects[0]
    where = f"step {first.step!r} field {first.where}" if first.step else first.where
    more = f" (and {len(defects) - 1} more)" if len(defects) > 1 else ""
    error = _error("CorruptRecord", f"the stored record is unusable: {where}: "
                                    f"{first.message}{more}")
    error["where"] = first.where
    if first.step is not None:
        error["step"] = first.step
    error["stored"] = first.stored
    error["defects"] = [d.to_dict() for d in defects]
    return fail_execution(record, error, now)


# ---------------------------------------------------------------------------
# The seed's single-purpose operations, as pure functions
# ---------------------------------------------------------------------------


def _update_step(record: WorkflowRecord, step_id: str,
                 change: Callable[[StepRecord], StepRecord], **fields: Any) -> WorkflowRecord:
    if step_id not in record.steps:
        raise UnknownStepError(f"workflow {record.workflow_execution_id!r} has no step "
                               f"{step_id!r}")
    tx = _Tx(record)
    tx.put(change(record.steps[step_id]))
    return tx.commit(**fields)


def mark_in_progress(record: WorkflowRecord, step_id: str, now: float) -> WorkflowRecord:
    """Claim one step: ``in_progress``, one more attempt, started now."""
    return _update_step(
        record, step_id,
        lambda s: s.evolve(status=StepStatus.IN_PROGRESS, attempts=s.attempts + 1,
                           started_at=now, finished_at=None, not_before=None),
        status=WorkflowStatus.IN_PROGRESS,
    )


def mark_complete(record: WorkflowRecord, step_id: str, now: float) -> WorkflowRecord:
    return _update_step(record, step_id,
                        lambda s: s.evolve(status=StepStatus.COMPLETE, finished_at=now))


def mark_halted(record: WorkflowRecord, step_id: str, now: float) -> WorkflowRecord:
    return _update_step(record, step_id,
                        lambda s: s.evolve(status=StepStatus.HALTED, finished_at=now),
                        status=WorkflowStatus.HALTED)


def write_step_output(record: WorkflowRecord, step_id: str, output: dict[str, Any]
                      ) -> WorkflowRecord:
    output = json_copy(output)
    return _update_step(record, step_id, lambda s: s.evolve(output=output))


def merge_workflow_state(record: WorkflowRecord, output: dict[str, Any]) -> WorkflowRecord:
    """Latest-wins merge of ``output`` into the shared state (unchanged if empty)."""
    if not output:
        return record
    return record.evolve(state={**record.state, **json_copy(output)})


def write_workflow_outcome(record: WorkflowRecord, outcome: Any) -> WorkflowRecord:
    """Store the outcome; a halted workflow stays halted, any other becomes complete."""
    status = WorkflowStatus.HALTED if record.status is WorkflowStatus.HALTED \
        else WorkflowStatus.COMPLETE
    return record.evolve(outcome=json_copy(outcome), status=status)


def reset_step(record: WorkflowRecord, step_id: str, now: float | None = None
               ) -> WorkflowRecord:
    """Make a step ``ready`` again with a new ``run_id``; its output is cleared.

    In a finished execution this is ``invalidate(record, [step_id], now)``: the step
    and everything downstream of it are reopened and the workflow is ``in_progress``
    again (a ready step under a finished workflow would never run).
    """
    if record.status.is_terminal:
        return invalidate(record, [step_id], record.updated_at if now is None else now)[0]
    return _update_step(record, step_id,
                        lambda s: s.evolve(status=StepStatus.READY, run_id=s.run_id + 1,
                                           attempts=0, output=None, error=None, started_at=None,
                                           finished_at=None, not_before=None, inputs=None,
                                           cached=False))


def reset_for_retry(record: WorkflowRecord, step_id: str, not_before: float | None = None
                    ) -> WorkflowRecord:
    """Put a step in ``retry`` with a new ``run_id``, due at ``not_before``."""
    return _update_step(record, step_id,
                        lambda s: s.evolve(status=StepStatus.RETRY, run_id=s.run_id + 1,
                                           started_at=None, finished_at=None,
                                           not_before=not_before))


# ---------------------------------------------------------------------------
# Targets, invalidation, redrive
# ---------------------------------------------------------------------------

#: The error type of a step skipped because no target needs it (``restrict_to_targets``).
#: Such a step stays skipped through ``redrive`` and ``invalidate``.
NOT_TARGETED = "NotTargeted"


def _not_targeted(step: StepRecord) -> bool:
    return step.status is StepStatus.SKIPPED and isinstance(step.error, dict) and \
        step.error.get("type") == NOT_TARGETED


def restrict_to_targets(record: WorkflowRecord, targets: Iterable[str], now: float
                        ) -> tuple[WorkflowRecord, list[str]]:
    """Skip every waiting step that none of ``targets`` needs (``runfox run --target``).

    What a target needs is itself and its dependencies, transitively
    (``WorkflowSpec.needed_by``); the others that are still ``ready``/``retry`` become
    ``skipped`` with error type ``NOT_TARGETED``, so the execution ends when the
    targets (and what they need) have run, and ``outputs`` are resolved over the
    steps that ran (what reads a skipped step gets null). Steps already claimed or
    finished are left as they are; a finished execution is returned unchanged.
    Returns the record and the ids skipped, in spec order. ``UnknownStepError``
    for a target the spec lacks.
    """
    plan = record.plan
    needed = set(plan.needed_by(targets))
    if record.status.is_terminal:
        return record, []
    names = ", ".join(sorted(set(targets), key=plan.index.__getitem__))
    tx = _Tx(record)
    tx.resolve = False  # every dependent of a skipped step is skipped here too
    skipped = []
    for spec in plan.steps:
        step = record.steps[spec.id]
        if spec.id not in needed and step.status in _WAITING:
            tx.put(step.evolve(status=StepStatus.SKIPPED, not_before=None, error=_error(
                NOT_TARGETED, f"not needed by the target(s) {names}")))
            skipped.append(spec.id)
    return (tx.commit(), skipped) if skipped else (record, [])


def _reopen(record: WorkflowRecord, step_ids: Iterable[str], now: float
            ) -> tuple[WorkflowRecord, list[str]]:
    """Make ``step_ids`` ``ready`` again (new run ids, attempts, output, error and inputs
    cleared) and the workflow ``in_progress``; the result of a run in flight is then
    ignored (its run id is old). A step that never ran is left as it is. Dependency
    policies are applied again once every step is reopened. Returns the record (the
    same object when nothing changed) and the ids reopened, in spec order."""
    plan = record.plan
    tx = _Tx(record)
    tx.resolve = False  # decide policies once all are reopened, not in between
    reopened = []
    for step_id in sorted(set(step_ids), key=plan.index.__getitem__):
        step = tx.get(step_id)
        if step.status is StepStatus.READY and step.attempts == 0 and step.output is None:
            continue  # never ran: nothing to reopen
        tx.put(step.evolve(status=StepStatus.READY, run_id=step.run_id + 1, attempts=0,
                           output=None, error=None, started_at=None, finished_at=None,
                           not_before=None, inputs=None, cached=False))
        reopened.append(step_id)
    if not reopened:
        return record, []
    if plan.tolerant:
        tx.resolve = True
        for step_id in reopened:
            if tx.get(step_id).unmet == 0:
                tx._check.append(step_id)
        while tx._check:
            tx._apply_policy(tx._check.pop())
    if tx.open == 0:  # nothing left to run (everything reopened was skipped again)
        return _finish(tx, now, record.state)[0], reopened
    return tx.commit(status=WorkflowStatus.IN_PROGRESS, outcome=None), reopened


def redrive_problem(record: WorkflowRecord) -> str | None:
    """Why ``record`` cannot be redriven, or ``None`` when it can.

    A redrive continues an execution that ended ``failed``, ``cancelled``, or
    ``halted`` by a branch that fired on a failed attempt (the halted step has an
    error). A running, pending or complete execution, or one halted by a branch on
    a good output (a decision, not an accident), cannot be redriven.
    """
    status = record.status
    key = record.workflow_execution_id
    if not status.is_terminal:
        return (f"execution {key} is {status.value}: redrive continues an execution that "
                "ended (failed, cancelled, or halted on an error)")
    if status is WorkflowStatus.COMPLETE:
        return (f"execution {key} is complete: nothing to redrive (invalidate a step to run "
                "it again)")
    if status is WorkflowStatus.HALTED and not any(
            s.status is StepStatus.HALTED and s.error is not None for s in record.steps.values()):
        return (f"execution {key} was halted by a branch on a good output, not by an error: "
                "nothing to redrive")
    return None


def _redrivable(record: WorkflowRecord) -> list[str]:
    """The steps a redrive reopens: all that did not complete (failed, cancelled,
    skipped, halted on an error), except those skipped because no target needs them."""
    by_id = record.plan.by_id
    return [step.id for step in record.steps.values()
            if step.id in by_id and step.status is not StepStatus.COMPLETE
            and not _not_targeted(step)
            and not (step.status is StepStatus.HALTED and step.error is None)]


def redrive(record: WorkflowRecord, now: float) -> tuple[WorkflowRecord, list[str]]:
    """Continue an ended execution in place from the steps that did not complete.

    Completed steps keep their outputs; every other step (failed, cancelled,
    skipped, halted on an error; not those skipped by ``restrict_to_targets``) is
    ``ready`` again with a new run id and its attempts reset, and the workflow is
    ``in_progress`` with no outcome. The shared state is kept. Raises
    ``ExecutionStateError`` (see ``redrive_problem``) for an execution that cannot
    be redriven. Returns the record and the reopened ids, in spec order.
    """
    problem = redrive_problem(record)
    if problem is not None:
        raise ExecutionStateError(problem)
    return _reopen(record, _redrivable(record), now)


def invalidate(record: WorkflowRecord, step_ids: Iterable[str], now: float
               ) -> tuple[WorkflowRecord, list[str]]:
    """Reopen ``step_ids`` and everything downstream of them (``what_invalidates``).

    Works on a running or a finished execution: the steps become ``ready`` with new
    run ids and no output, and the workflow is ``in_progress`` again, so drivers
    run them (results of the old runs still in flight are ignored). Steps skipped
    because no target needs them stay skipped. In an execution that ended without
    completing (failed, cancelled, halted) every step that did not complete is
    reopened too, as by ``redrive``: otherwise it could complete with steps that
    never ran. A step named that the spec lacks is ``UnknownStepError`` (nothing
    changes). Returns the record and the reopened ids, in spec order.
    """
    plan = record.plan
    named = plan.known_steps(step_ids)
    reopen = [sid for sid in plan.descendants(named)
              if sid in named or not _not_targeted(record.steps[sid])]
    if record.status.is_terminal and record.status is not WorkflowStatus.COMPLETE:
        reopen.extend(_redrivable(record))
    return _reopen(record, reopen, now)


def fail_steps(record: WorkflowRecord, failures: Iterable[tuple[str, dict[str, Any]]],
               now: float) -> tuple[WorkflowRecord, Result | None]:
    """Fail claimed steps for good, without retries, as an ``InputError`` does.

    For problems no retry can mend, found by the caller at claim time (a
    sub-workflow name that resolves to nothing). ``failures`` holds ``(step_id,
    error)`` with ``error`` as in ``StepRecord.error`` (``{"type", "message"}``).
    Returns the new record and the terminal result when a failure ended the
    workflow (or left nothing open), else ``None``.
    """
    tx = _Tx(record)
    new: WorkflowRecord = record
    for step_id, error in failures:
        index = item_index(step_id)
        spec = record.plan.by_id.get(plan_step_id(step_id)) if index is not None else None
        if spec is not None:  # a map item: it counts against the map's tolerance
            item = tx.get(step_id)
            tx.put(item.evolve(status=StepStatus.FAILED, error=error, finished_at=now,
                               output=error_output(error["type"], error["message"])))
            new, result = _settle(tx, spec, now)
        else:
            new, result = _fail(tx, tx.get(step_id), error, now)
        if result is not None:
            return new, result
    return new, None
