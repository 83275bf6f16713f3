"""Backend: the only place where workflow state changes.

Every operation is one transition: load the record, apply a pure function from
``runfox.graph``, write the result conditionally on the version that was loaded.
When another process wrote in between, the store raises ``ConflictError`` and the
Backend loads again and re-applies the function; the function is pure, so this is
always safe. State is written before jobs are dispatched, and no user code runs
while a write is in flight.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import graph
from ..cache import CacheLookup, cache_key
from ..errors import (
    BackendError,
    ConflictError,
    CorruptRecord,
    ExecutionStateError,
    NotJSONError,
    RecordTooLarge,
    SpecError,
    SpecProblem,
    UnknownStepError,
    WorkflowNotFound,
)
from ..history import NO_CONTEXT, Event, HistoryContext, created_event, events_between
from ..ids import (
    new_execution_id,
    split_workflow_execution_id,
    step_key,
    step_run_key,
)
from ..ids import workflow_execution_id as execution_key
from ..jsonvalue import error_output, json_clone, json_copy
from ..records import StepRecord, WorkflowRecord  # StepRecord: the seed's base.py exports it
from ..results import (
    Dispatch,
    DispatchJob,
    Executor,
    Ignored,
    InvalidJob,
    Result,
    StateChangeEvent,
    Terminal,
    WorkResult,
)
from ..spec import WorkflowSpec, spec_for
from ..status import WorkflowStatus
from ..subflows import resolve_workflows
from .cache_store import Cache
from .children import Children
from .children import claim as _claim_children
from .runner import InProcessRunner, JobState, Runner
from .store import FINISHED, PRUNE_BATCH, InMemoryStore, Store, UnitOfWork

__all__ = ["SUBMITTED_FN", "SUBMITTED_STEP", "Backend", "EventCallback", "StateChangeCallback",
           "StepRecord", "WorkflowRecord", "split_starts"]

logger = logging.getLogger("runfox.backend")

StateChangeCallback = Callable[..., None]
EventCallback = Callable[[Event], None]
Transition = Callable[[WorkflowRecord, float, list[graph.StateChange]], tuple[WorkflowRecord, Any]]


#: The step id of a start job (``Backend.submit``): no spec step has it (step ids
#: are letters, digits, ``_`` and ``-``), so a worker tells the job by it.
SUBMITTED_STEP = "@start"
#: The ``fn`` of a start job: it is not given to an executor.
SUBMITTED_FN = "runfox:start"

def split_starts(jobs: Sequence[DispatchJob]) -> tuple[list[DispatchJob], list[DispatchJob]]:
    """``(start jobs, the others)`` among ``jobs`` (see ``Backend.submit``)."""
    starts: list[DispatchJob] = []
    rest: list[DispatchJob] = []
    for job in jobs:
        (starts if job.step_id == SUBMITTED_STEP else rest).append(job)
    return starts, rest


#: Errors from a transition function that are not about the record: a lost race,
#: the store failing, a caller naming a step the workflow lacks.
_PASS_THROUGH = (ConflictError, BackendError, UnknownStepError, WorkflowNotFound)
#: Errors writing a record that the same record would raise again.
_UNWRITABLE = (RecordTooLarge, NotJSONError, ValueError, TypeError, RecursionError)


def _accepts_event(callback: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    positional = [p for p in parameters
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 4


def _timings(results: Sequence[Any]) -> dict[tuple[str, int | None], Any]:
    """What workers measured, per ``(step_id, run_id)``: a ``WorkResult``'s ``timing``
    attribute or a 4-tuple's fourth element (see ``HistoryContext``)."""
    found: dict[tuple[str, int | None], Any] = {}
    for item in results:
        timing = getattr(item, "timing", None)
        if timing is None and not isinstance(item, WorkResult) and len(item) == 4:
            timing = item[3]
            item = item[:3]
        if isinstance(timing, dict):
            found[(item[0], item[2] if len(item) > 2 else None)] = timing
    return found


def _conflict_pause(attempt: int) -> None:
    """A jittered pause before retrying a write that lost a race again."""
    time.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** min(attempt, 7))))


#: After a lost optimistic try, the transitions of that execution that start
#: inside the unit before trying again; and how many such executions are kept.
_CONTENDED_SKIP = 8
_CONTENDED_KEPT = 1024


class _AfterWrite(Exception):
    """Carries an error of a joint unit's ``then`` past the transition's handlers."""

    def cause(self) -> BaseException:
        """The error it carries, to raise in its place."""
        assert self.__cause__ is not None
        return self.__cause__


class _Put:
    """One cache entry to store once the record write has committed."""

    __slots__ = ("fn", "key", "output", "version")

    def __init__(self, key: str, output: dict[str, Any], fn: str, version: Any) -> None:
        self.key, self.output, self.fn, self.version = key, output, fn, version


@dataclass
class _Prepared:
    """One execution's part of ``Backend.apply_and_take_many``, computed before the unit."""

    index: int
    workflow_execution_id: str
    current: WorkflowRecord
    new: WorkflowRecord
    result: tuple[list[Result], Result]
    events: list[Event]
    changes: list[graph.StateChange]
    puts: list[_Put]
    triples: list[tuple[str, Any, int | None]]
    acks: list[DispatchJob]


def _output_of(job: DispatchJob, triples: Sequence[tuple[str, Any, int | None]]
               ) -> dict[str, Any]:
    """The output applied for ``job`` (what ``Runner.ack`` is given)."""
    for step_id, output, run_id in triples:
        if step_id == job.step_id and run_id in (job.run_id, None) and isinstance(output, dict):
            return output
    return {}


def _as_result_triples(results: Iterable[Any]) -> list[tuple[str, Any, int | None]]:
    triples = []
    for item in results:
        if isinstance(item, WorkResult):
            triples.append((item.step_id, item.output, item.run_id))
        elif len(item) in (3, 4):
            triples.append((item[0], item[1], item[2]))
        else:
            triples.append((item[0], item[1], None))
    return triples


class Backend:
    """Composes a Store and a Runner and owns every workflow lifecycle operation.

    Args:
        executor: optional ``(fn, inputs) -> dict``; when given, ``Workflow.run()``
            without a worker runs jobs in-process through it.
        store: where records live; defaults to ``InMemoryStore()``.
        runner: the job queue; defaults to ``InProcessRunner()``.
        poll_interval: seconds ``Workflow.run()`` sleeps between polls of a runner
            whose results come from other processes.
        on_state_change: called after each committed merge of a step output into
            the shared state as ``(workflow_execution_id, previous_state,
            new_state)``, plus a ``StateChangeEvent`` (``step_id``, ``run_id``,
            ``fn``; ``None`` for a direct ``merge_workflow_state``) if it takes a
            fourth argument. It must be quick and must not call back into the backend;
            an exception it raises is logged, not propagated.
        clock: the time source (epoch seconds) passed to the pure graph as ``now``.
        max_conflict_retries: how many times one operation reloads after losing a
            race before ``ConflictError`` is raised.
        cache: the step cache (``runfox.backend.cache_store.Cache``); defaults to
            the store's own (``store.cache()``). Without one, steps with ``cache``
            on run every time (a warning says so once).
    """

    def __init__(
        self,
        executor: Executor | None = None,
        store: Store | None = None,
        runner: Runner | None = None,
        *,
        poll_interval: float = 0.1,
        on_state_change: StateChangeCallback | None = None,
        clock: Callable[[], float] = time.time,
        max_conflict_retries: int = 1000,
        cache: Cache | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self.store: Store = store if store is not None else InMemoryStore()
        self.runner: Runner = runner if runner is not None else InProcessRunner()
        self.executor = executor
        self.poll_interval = poll_interval
        self._on_state_change = on_state_change
        self._event_arg = on_state_change is not None and _accepts_event(on_state_change)
        self.clock = clock
        self.max_conflict_retries = max_conflict_retries
        self._subscribers: tuple[tuple[EventCallback, frozenset[str] | None], ...] = ()
        self._subscribe_lock = threading.Lock()
        self.cache: Cache | None = cache if cache is not None else self.store.cache()
        self._warned_no_cache = False
        self._children = Children(self)
        self._unit = threading.local()  # .on: this thread is inside _in_unit
        # Executions whose last optimistic try lost a race: how many of their next
        # transitions skip it (``_in_unit``).
        self._contended: dict[str, int] = {}

    # The seed's private names, kept for code written against it.
    @property
    def _store(self) -> Store:
        return self.store

    @property
    def _runner(self) -> Runner:
        return self.runner

    def __repr__(self) -> str:
        return f"Backend(store={type(self.store).__name__}, runner={type(self.runner).__name__})"

    # ------------------------------------------------------------------
    # Keys
    # ------------------------------------------------------------------

    def workflow_execution_id(self, record: WorkflowRecord) -> str:
        """The store key of a record: ``{workflow_id}#{execution_id}``."""
        return record.workflow_execution_id

    def step_key(self, workflow_execution_id: str, step_id: str) -> str:
        return step_key(workflow_execution_id, step_id)

    def step_run_key(self, workflow_execution_id: str, step_id: str, run_id: int) -> str:
        return step_run_key(workflow_execution_id, step_id, run_id)

    # ------------------------------------------------------------------
    # The transition loop
    # ------------------------------------------------------------------

    def transition(self, workflow_execution_id: str, fn: Transition, *,
                   loaded: WorkflowRecord | None = None, oversize: str = "fail",
                   context: HistoryContext = NO_CONTEXT,
                   joint: tuple[UnitOfWork, Callable[[Any], None]] | None = None,
                   deferred: list[Callable[[], None]] | None = None) -> Any:
        """Load, apply ``fn(record, now, changes) -> (record, result)``, write; retry on conflict.

        ``oversize="raise"`` lets ``RecordTooLarge`` from the write reach the caller
        (the record is untouched) instead of failing the execution: for callers
        whose own output made the record too large.

        ``fn`` must be pure: it may run several times. When it returns the record
        it was given (the same object), nothing is written.

        ``loaded`` is a record of this execution the caller read earlier (to
        save a load). It is trusted no further than a load: if it is stale, the
        conditional write conflicts and the loop reloads; and a result that
        writes nothing is only returned once confirmed on a fresh load.

        A transition that cannot complete ends the execution instead of failing
        every time it is tried (see ``_unusable``): a loaded record with stored
        values of the wrong shape (``record.defects``) is failed with a
        ``CorruptRecord`` outcome before ``fn`` runs; and when ``fn`` raises, or
        its record cannot be written (not JSON, too large), the execution is
        failed with that error, its type and its place. ``fn`` then runs once more
        on the failed record, which gives its usual result (``Failed``,
        ``Ignored``). Errors of the store itself (``BackendError``), lost races
        and errors the caller asked for (``UnknownStepError``) propagate.

        ``joint``: ``(unit, then)``, ``unit`` from ``Store.unit_with``: the write
        of ``fn``'s record and ``then(result)`` run as one unit of work, so what
        ``then`` does (dispatch, ack) commits with the record or not at all. Only
        a write of ``fn``'s record is joined; ``then`` does not run when nothing
        is written or when the execution is failed instead.

        ``deferred``: the caller runs the whole transition inside a unit of work
        and commits it afterwards. History subscribers and ``on_state_change``
        are then appended to it (to be called after the commit), and a lost race
        raises ``ConflictError`` at once: the reload must happen in a new
        transaction (under MySQL's repeatable read, the same one would see the
        same version again), unless the store ``reloads_in_unit``: then the
        load and the write are simply tried again inside it.
        """
        if loaded is not None and loaded.workflow_execution_id != workflow_execution_id:
            raise ValueError(f"loaded is a record of {loaded.workflow_execution_id!r}, "
                             f"not {workflow_execution_id!r}")
        for attempt in range(self.max_conflict_retries + 1):
            reused = loaded is not None
            current = (loaded if loaded is not None
                       else self.store.load_shared(workflow_execution_id))
            loaded = None
            now = self.clock()
            changes: list[graph.StateChange] = []
            ended = False  # True when this write fails an execution that cannot go on
            if current.defects and not current.status.is_terminal:
                new, result = self._defective(current, now)
                ended = True
            else:
                try:
                    new, result = fn(current, now, changes)
                except _PASS_THROUGH:
                    raise
                except Exception as exc:
                    if reused or current.status.is_terminal:
                        if reused:
                            continue  # an old copy may be why: try a fresh load first
                        raise
                    new, result = self._unusable(current, exc, now)
                    ended = True
            if new is current:
                if reused:  # "nothing to do" may be an artefact of an old copy: check
                    continue
                return result
            if current.defects and not ended:  # a finished record: keep what is stored
                raise CorruptRecord(workflow_execution_id, "it has stored values of the wrong "
                                    f"shape ({current.defects[0].where}: "
                                    f"{current.defects[0].message}); writing would replace "
                                    "them")
            new = new.evolve(version=current.version + 1, updated_at=now)
            events = self._events(current, new, context)
            try:
                if joint is None or ended:
                    self.store.write_shared(new, previous=current, events=events)
                else:
                    self._write_joint(joint, new, current, events, result)
            except _AfterWrite as wrapped:
                raise wrapped.cause() from None
            except ConflictError:
                if deferred is not None:
                    if joint is None or not self.store.reloads_in_unit:
                        raise
                    continue  # reload in this transaction; no pause while in it
                if attempt >= 2:  # back off only once a race repeats
                    _conflict_pause(attempt)
                continue
            except _UNWRITABLE as exc:
                if ended or current.status.is_terminal or (
                        oversize == "raise" and isinstance(exc, RecordTooLarge)):
                    raise
                new, result = self._unusable(current, exc, now)
                ended = True
                new = new.evolve(version=current.version + 1, updated_at=now)
                events = self._events(current, new, context)
                try:
                    self.store.write_shared(new, previous=current, events=events)
                except ConflictError:
                    if deferred is not None:
                        raise
                    continue
            finished = new.status.is_terminal and not current.status.is_terminal
            if deferred is None:
                self._publish(events)
                if finished:
                    self._ended(current, new)
            else:
                if events:
                    deferred.append(functools.partial(self._publish, events))
                if finished:
                    deferred.append(functools.partial(self._ended, current, new))
            if ended:
                # The execution is now failed; fn on it gives the result its caller
                # expects (graph functions return Failed/Ignored for a finished record).
                loaded = new
                continue
            if deferred is None:
                self._notify(workflow_execution_id, changes)
            elif changes:
                deferred.append(functools.partial(self._notify, workflow_execution_id, changes))
            return result
        raise ConflictError(f"{workflow_execution_id}: gave up after "
                            f"{self.max_conflict_retries} conflicting writes")

    def _write_joint(self, joint: tuple[UnitOfWork, Callable[[Any], None]],
                     new: WorkflowRecord, current: WorkflowRecord, events: list[Event],
                     result: Any) -> None:
        """``write_shared`` and ``then(result)`` in one unit of work.

        An error after the record was written (from ``then`` or the commit) is
        no reason to fail the execution: it leaves as ``_AfterWrite``, which
        ``transition`` unwraps past its handlers."""
        unit, then = joint
        wrote: list[bool] = []

        def work() -> None:
            wrote.clear()  # the unit may run again after a rollback
            self.store.write_shared(new, previous=current, events=events)
            wrote.append(True)
            then(result)

        try:
            unit(work)
        except ConflictError:
            raise
        except Exception as exc:
            if wrote:
                raise _AfterWrite() from exc
            raise

    def _ended(self, before: WorkflowRecord, after: WorkflowRecord) -> None:
        """An execution just ended: cancel the children it still ran, and report its
        result to its parent step when it is a sub-workflow (``backend.children``)."""
        if before.plan.has_subworkflows and before.running:
            self._children.cancel_running(before)
        if after.parent is not None:
            self._children.report(after)

    def _dispatch(self, workflow_execution_id: str, jobs: Sequence[DispatchJob],
                  sweep: float | None = None, take: tuple[int, float] | None = None
                  ) -> list[DispatchJob]:
        """Every dispatch of claimed jobs: sub-workflow jobs start their children
        (``start_children``), the others go to the runner. ``take``: ``(limit,
        lease)``, take up to ``limit`` of them for the caller; returns those."""
        jobs = self.start_children(workflow_execution_id, jobs, sweep)
        if not jobs:
            return []
        if take is None or take[0] <= 0:
            self.runner.dispatch(workflow_execution_id, jobs)
            return []
        return self.runner.dispatch_and_take(workflow_execution_id, jobs, *take)

    def start_children(self, workflow_execution_id: str, jobs: Sequence[DispatchJob],
                       sweep: float | None = None) -> list[DispatchJob]:
        """Start the child executions of the sub-workflow jobs among ``jobs`` (idempotent:
        a child that exists is not created again); return the jobs for the runner.

        For callers that dispatch jobs themselves (the AWS result handler).
        ``sweep``: ``older_than`` of a sweep; a running child is swept too and an
        ended one reported to its parent (a crash may have fallen in between).
        """
        return self._children.start(workflow_execution_id, jobs, sweep)

    def drive_children(self, workflow_execution_id: str) -> int:
        """Gather and apply the results of the execution's running children (and
        theirs), for a driver whose gather sees one execution; returns how many."""
        return self._children.drive(workflow_execution_id)

    def _events(self, old: WorkflowRecord, new: WorkflowRecord, context: HistoryContext
                ) -> list[Event]:
        """The history of one write, when someone keeps or watches it."""
        if not self.store.keeps_history and not self._subscribers:
            return []
        return events_between(old, new, context)

    # ------------------------------------------------------------------
    # History and observers
    # ------------------------------------------------------------------

    def subscribe(self, callback: EventCallback, events: Iterable[str] | None = None
                  ) -> Callable[[], None]:
        """Call ``callback(event)`` after each commit, for every history event it makes.

        ``events``: the event types wanted (``runfox.history.EVENT_TYPES``); all
        when ``None``. In this process only, for transitions this ``Backend``
        makes. Callbacks run after the write, in the thread that made it, in
        order; one that raises is logged and the others still run. Returns a
        function that unsubscribes (calling it twice is harmless).
        ``on_state_change`` is unchanged by this.
        """
        wanted = None if events is None else frozenset(events)
        entry = (callback, wanted)
        with self._subscribe_lock:
            self._subscribers = (*self._subscribers, entry)

        def unsubscribe() -> None:
            with self._subscribe_lock:
                self._subscribers = tuple(e for e in self._subscribers if e is not entry)

        return unsubscribe

    def _publish(self, events: Sequence[Event]) -> None:
        subscribers = self._subscribers
        if not subscribers or not events:
            return
        for event in events:
            for callback, wanted in subscribers:
                if wanted is not None and event.type not in wanted:
                    continue
                try:
                    callback(event)
                except Exception:
                    logger.exception("a history subscriber raised on %s %s; ignored",
                                     event.workflow_execution_id, event.type)

    def history(self, workflow_execution_id: str) -> list[Event]:
        """The execution's history, oldest first (``Store.history``)."""
        return self.store.history(workflow_execution_id)

    def prune(self, before: float, statuses: Iterable[WorkflowStatus | str] = FINISHED,
              batch: int = PRUNE_BATCH) -> int:
        """Remove finished executions last written before ``before`` (``Store.prune``)."""
        return self.store.prune(before, statuses, batch)

    def _defective(self, record: WorkflowRecord, now: float) -> tuple[WorkflowRecord, Any]:
        """The failed record for an execution whose stored record has bad values."""
        new, result = graph.fail_defective(record, now)
        logger.error("execution %s failed: %s", record.workflow_execution_id,
                     new.outcome["error"]["message"])
        return new, result

    def _unusable(self, record: WorkflowRecord, exc: BaseException, now: float
                  ) -> tuple[WorkflowRecord, Any]:
        """The failed record for an execution whose transition raised ``exc``.

        The error is deterministic (the pure graph raised it on this record, or
        the record it built cannot be stored), so trying again would raise it
        again, and a worker would run the same executor again on every try.
        """
        error = graph.error_of(exc)
        logger.error("execution %s failed: its transition raised %s: %s (at %s)",
                     record.workflow_execution_id, type(exc).__name__, exc,
                     error.get("where", "?"), exc_info=exc)
        return graph.fail_execution(record, error, now)

    def _notify(self, workflow_execution_id: str, changes: list[graph.StateChange]) -> None:
        callback = self._on_state_change
        if callback is None or not changes:
            return
        for event, previous, new in changes:
            try:  # copies: the states stay shared with the stored record
                if self._event_arg:
                    callback(workflow_execution_id, json_clone(previous), json_clone(new), event)
                else:
                    callback(workflow_execution_id, json_clone(previous), json_clone(new))
            except Exception:
                logger.exception("on_state_change raised for %s; ignored", workflow_execution_id)

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def create(self, spec: dict[str, Any] | WorkflowSpec, inputs: dict[str, Any] | None = None,
               *, key: str | None = None) -> str:
        """Validate ``spec`` and ``inputs``, store a new execution, return its key.

        A spec mapping first gets its sub-workflows resolved (``runfox.subflows``:
        names registered with ``register_workflow``, files relative to the working
        directory) into its ``workflows`` table.

        ``key``: an idempotency key. While an execution created with that key
        exists, nothing new is created and its id is returned (one conditional
        write decides between racing callers: ``Store.create``).

        Raises:
            SpecError: the spec or the inputs are invalid; nothing was stored.
            ValueError: ``key`` is empty or too long.
        """
        return self._store_new(self._new_record(spec, inputs), key)

    def _store_new(self, record: WorkflowRecord, key: str | None) -> str:
        """Store a new record (under ``key``: unless one holds it); the key stored."""
        if key is not None:
            found = self.store.create(record, key)
            if found == record.workflow_execution_id:
                self._publish([created_event(record)])
            return found
        self.store.write_shared(record)  # spec and inputs are private copies already
        self._publish([created_event(record)])
        return record.workflow_execution_id

    def start(self, spec: dict[str, Any] | WorkflowSpec, inputs: dict[str, Any] | None = None,
              *, key: str | None = None) -> str:
        """``create``, then claim and dispatch the first steps (``apply_and_advance``);
        returns the execution's key. What ``Workflow.start`` does.

        Where the store and the runner share a unit of work (``Store.unit_with``:
        SQL with both on one database), the new record goes in with its first
        steps claimed and their jobs queued, in one commit. Otherwise, and for
        an idempotency ``key``, sub-workflows or cached steps, it is the two
        calls. With ``key``, an execution that already holds it is returned
        as it is, and nothing is dispatched for it.

        Raises:
            SpecError, ValueError: as ``create``; nothing was stored.
        """
        return self._start_record(self._new_record(spec, inputs), key)

    def _start_record(self, record: WorkflowRecord, key: str | None) -> str:
        """``start`` for a new record built (``_new_record``); its key."""
        unit = self.store.unit_with(self.runner)
        if key is None and unit is not None and self._starts_in_unit(record.plan):
            started = self._first_write(record, record.created_at)
            if started is not None:
                claimed, events, nxt = started

                def work() -> None:
                    self.store.write_shared(claimed, events=events)
                    if isinstance(nxt, Dispatch):
                        self._dispatch(record.workflow_execution_id, nxt.jobs)

                unit(work)
                self._publish([created_event(record), *events])
                return record.workflow_execution_id
        wf_id = self._store_new(record, key)
        if wf_id == record.workflow_execution_id:
            self.apply_and_advance(wf_id, loaded=record)
        return wf_id

    @staticmethod
    def _starts_in_unit(plan: WorkflowSpec) -> bool:
        """A new execution of ``plan`` whose first write needs no child executions
        and no cache reads."""
        return not plan.has_subworkflows and not plan.cached

    def _first_write(self, record: WorkflowRecord, now: float
                     ) -> tuple[WorkflowRecord, list[Event], Result] | None:
        """A new record with its first steps claimed (``graph.advance`` at ``now``),
        its history events and what advance returned; ``None`` when that first
        write would not go in one unit (it ended the execution, or changed the
        shared state)."""
        changes: list[graph.StateChange] = []
        claimed, nxt = graph.advance(record, now, changes=changes)
        if claimed.status.is_terminal or changes:
            return None
        return claimed, self._events(record, claimed, NO_CONTEXT), nxt

    # ------------------------------------------------------------------
    # Submitted starts: one queue row now, the execution when a worker takes it
    # ------------------------------------------------------------------

    def submit(self, spec: dict[str, Any] | WorkflowSpec,
               inputs: dict[str, Any] | None = None) -> str:
        """Queue the start of a new execution and return its key at once.

        The spec and the inputs are checked here, as ``start`` checks them (a
        ``SpecError`` stores nothing). Where the store and the runner share a
        unit of work (SQL with both on one database), what is stored is one
        job, a *start job* (step ``SUBMITTED_STEP``): the first worker that
        claims it creates the execution under the key returned here, claims its
        first steps and queues their jobs, in one commit with the job's
        acknowledgement (``start_submitted``; workers batch the start jobs they
        claim together). Until then the key is unknown to the store (``load``
        raises ``WorkflowNotFound``, ``list_executions`` does not show it); a
        start job delivered twice creates one execution. This is the cheap path
        for a producer that starts many executions and does not read them back
        at once (one row written instead of the record, its first claim, its
        history and its jobs).

        Elsewhere (memory, DynamoDB + SQS, a store and a runner on two
        databases), and for specs with sub-workflows or cached steps, it is
        ``start``: the execution is stored before this returns.

        Raises:
            SpecError, ValueError: as ``create``; nothing was queued.
        """
        plan, checked = self._checked(spec, inputs)
        if self.store.unit_with(self.runner) is None or not self._starts_in_unit(plan):
            return self._start_record(self._new_record(plan, checked), None)
        now = self.clock()
        key = execution_key(plan.workflow_id, new_execution_id(now))
        job = DispatchJob(key, SUBMITTED_STEP, SUBMITTED_FN,
                          {"spec": plan.raw, "inputs": checked, "created_at": now})
        self.runner.dispatch(key, [job])
        return key

    def start_submitted(self, jobs: Sequence[DispatchJob], *, limit: int = 0,
                        lease: float = 30.0) -> list[DispatchJob]:
        """Create the executions of claimed start jobs (``submit``) and acknowledge
        the jobs; returns the first-step jobs taken for the caller.

        Each execution is created with the key its job names, its first steps
        claimed and their jobs dispatched. Where the store and the runner share a
        unit of work, up to ``limit`` of those jobs are taken for the caller (held
        for ``lease`` seconds: a worker's free slots), the rest are queued, and
        all of ``jobs`` go in one commit; elsewhere each is started as ``start``
        does it, its jobs queued. A unit that finds one of the
        executions already created (a start job delivered again) is rolled back
        and the jobs go one at a time, where that one is only acknowledged. A
        job that cannot become an execution (its spec no longer compiles ...)
        is logged at ERROR and acknowledged: there is nothing to retry.
        """
        built: list[tuple[DispatchJob, WorkflowRecord]] = []
        for job in jobs:
            try:
                built.append((job, self._submitted_record(job)))
            except (SpecError, InvalidJob, ValueError, TypeError, KeyError) as exc:
                logger.error("start job %s cannot become an execution (%s); dropped",
                             job.key, exc)
                self.runner.ack(job, error_output(type(exc).__name__, str(exc)))
        unit = self.store.unit_with(self.runner)
        if len(built) > 1 and unit is not None:
            try:
                return self._start_together(built, unit, limit, lease)
            except ConflictError:
                pass  # one of them exists already: one at a time finds which
        taken: list[DispatchJob] = []
        for job, record in built:
            taken += self._start_together([(job, record)], unit, limit - len(taken), lease)
        return taken

    def queued_start(self, workflow_execution_id: str) -> JobState | None:
        """Where the start job of a submitted execution (``submit``) is while no
        worker has created the execution yet: ``queued`` or ``running``
        (``Runner.job_states``); ``None`` when there is no such job waiting (the
        execution exists, never was submitted, or the runner cannot say)."""
        found = self.runner.job_states(workflow_execution_id).get(
            step_run_key(workflow_execution_id, SUBMITTED_STEP, 0))
        return found if found is not None and found.state in ("queued", "running") else None

    def _submitted_record(self, job: DispatchJob) -> WorkflowRecord:
        """The new record a start job stands for (version 1, nothing run)."""
        workflow_id, execution_id = split_workflow_execution_id(job.workflow_execution_id)
        raw, inputs = job.inputs["spec"], job.inputs["inputs"]
        if not isinstance(raw, dict) or not isinstance(inputs, dict):
            raise InvalidJob("a start job needs a spec and inputs that are objects")
        plan = spec_for(raw)
        if plan.workflow_id != workflow_id:
            raise InvalidJob(f"the key names workflow {workflow_id!r}; its spec is "
                             f"{plan.workflow_id!r}")
        created = float(job.inputs["created_at"])
        return WorkflowRecord(workflow_id=plan.workflow_id, execution_id=execution_id,
                              spec=plan.raw, inputs=inputs, version=1, created_at=created,
                              updated_at=created, plan=plan)

    def _start_together(self, built: Sequence[tuple[DispatchJob, WorkflowRecord]],
                        unit: UnitOfWork | None, limit: int, lease: float
                        ) -> list[DispatchJob]:
        """Store ``built``'s records with their first claims and acknowledge their
        jobs: one unit; the jobs taken. Raises ``ConflictError`` when several
        were given and one execution existed; with one, that job is acknowledged."""
        now = self.clock()
        firsts = []
        for job, record in built:
            first = (self._first_write(record.evolve(updated_at=now), now)
                     if unit is not None and self._starts_in_unit(record.plan) else None)
            if first is None:  # no plain first claim: as ``start`` does it, alone
                with contextlib.suppress(ConflictError):  # created by an earlier delivery
                    self._start_record(record, None)
                self.runner.ack(job, {"ok": True})
                continue
            firsts.append((job, record, first))
        if not firsts:
            return []
        assert unit is not None
        taken: list[DispatchJob] = []

        def work() -> None:
            taken.clear()  # the unit may run again after a rollback
            self.store.prepare_writes([(claimed, None, events)
                                       for _, _, (claimed, events, _) in firsts])()
            for _, record, (_, _, nxt) in firsts:
                if isinstance(nxt, Dispatch):
                    room = limit - len(taken)
                    taken.extend(self._dispatch(record.workflow_execution_id, nxt.jobs,
                                                take=(room, lease) if room > 0 else None))
            self.runner.ack_many([(job, {"ok": True}) for job, _, _ in firsts])

        try:
            unit(work)
        except ConflictError:
            if len(firsts) > 1:
                raise
            self.runner.ack(firsts[0][0], {"ok": True})  # created by an earlier delivery
            return []
        for _, record, (_, events, _) in firsts:
            self._publish([created_event(record), *events])
        return taken

    def _new_record(self, spec: dict[str, Any] | WorkflowSpec,
                    inputs: dict[str, Any] | None) -> WorkflowRecord:
        """The record of a new execution (version 1, nothing run), inputs checked."""
        plan, inputs = self._checked(spec, inputs)
        now = self.clock()
        return WorkflowRecord(
            workflow_id=plan.workflow_id,
            execution_id=new_execution_id(now),
            spec=plan.raw,
            inputs=inputs,
            version=1,
            created_at=now,
            updated_at=now,
            plan=plan,
        )

    @staticmethod
    def _checked(spec: dict[str, Any] | WorkflowSpec, inputs: dict[str, Any] | None
                 ) -> tuple[WorkflowSpec, dict[str, Any]]:
        """The compiled spec and a private copy of the inputs, checked against it
        (its ``inputs:`` block, defaults filled in); ``SpecError`` if they do not fit."""
        plan = spec if isinstance(spec, WorkflowSpec) else spec_for(resolve_workflows(spec))
        try:
            inputs = json_copy(inputs or {}, "inputs")
        except NotJSONError as exc:
            raise SpecError([SpecProblem(exc.path, str(exc).split(": ", 1)[-1])],
                            subject="workflow inputs") from exc
        if not isinstance(inputs, dict):
            raise SpecError([SpecProblem("inputs", "workflow inputs must be a mapping")],
                            subject="workflow inputs")
        return plan, plan.check_inputs(inputs)

    def load(self, workflow_execution_id: str) -> WorkflowRecord:
        """The current record, a copy isolated from the store (``Store.load``).

        ``KeyError`` (``WorkflowNotFound``) if there is none.
        """
        return self.store.load(workflow_execution_id)

    def load_shared(self, workflow_execution_id: str) -> WorkflowRecord:
        """The current record without a copy, for reading only (``Store.load_shared``)."""
        return self.store.load_shared(workflow_execution_id)

    def write(self, record: WorkflowRecord) -> None:
        """Write a record changed by hand as the version after ``record.version``.

        Raises ``ConflictError`` if the stored version is no longer ``record.version``.
        """
        fresh = WorkflowRecord.from_dict(json_copy(record.to_dict()))  # isolate from the caller
        self.store.write_shared(fresh.evolve(version=record.version + 1,
                                             updated_at=self.clock()))

    def advance(self, workflow_execution_id: str) -> Result:
        """Claim every ready step (one write); return ``Dispatch``, ``Pending`` or the end.

        Steps with ``cache`` on are looked up first: a fresh hit completes in this same
        write without a job (see ``_claim``)."""
        lookup = self._lookup()
        return self.transition(workflow_execution_id,
                               lambda r, now, changes: self._claim(r, now, changes, lookup))

    def on_step_result(self, workflow_execution_id: str, step_id: str, output: Any,
                       run_id: int | None = None) -> Result:
        """Apply one result (see ``runfox.graph.on_step_result``)."""
        puts: list[_Put] = []

        def fn(r: WorkflowRecord, now: float, changes: list[graph.StateChange]
               ) -> tuple[WorkflowRecord, Result]:
            new, result = graph.on_step_result(r, step_id, output, run_id, now,
                                               changes=changes)
            puts[:] = self._cacheable(r, [(step_id, output, run_id)], [result])
            return new, result

        result = self.transition(workflow_execution_id, fn, oversize="raise")
        self._store_outputs(puts)
        return result

    def apply_results(self, workflow_execution_id: str, results: Iterable[Any]) -> list[Result]:
        """Apply many results as one transition; returns one result per input."""
        triples = _as_result_triples(results)
        if not triples:
            return []
        puts: list[_Put] = []

        def fn(r: WorkflowRecord, now: float, changes: list[graph.StateChange]
               ) -> tuple[WorkflowRecord, list[Result]]:
            new, applied = graph.apply_results(r, triples, now, changes)
            puts[:] = self._cacheable(r, triples, applied)
            return new, applied

        applied = self.transition(workflow_execution_id, fn)
        self._store_outputs(puts)
        return list(applied)

    # ------------------------------------------------------------------
    # The step cache (runfox.cache): looked up at claim, filled after a result
    # ------------------------------------------------------------------

    def _lookup(self) -> CacheLookup | None:
        """A fresh lookup for one operation (kept across its conflict retries), or
        ``None`` when there is no cache."""
        return CacheLookup() if self.cache is not None else None

    def _claim(self, record: WorkflowRecord, now: float, changes: list[graph.StateChange],
               lookup: CacheLookup | None) -> tuple[WorkflowRecord, Result]:
        """``graph.advance`` with the step cache: read the keys it wants, advance again
        from the record it returned, until it wants none; one write in the end.

        Reads are batched per round (``Cache.get_many``), and each round continues
        from the last record, so a cached chain costs one read per step, not a
        replay. Only plans with a cached step pay anything."""
        if record.plan.has_subworkflows:
            record, nxt = self._claim_cached(record, now, changes, lookup)
            return _claim_children(record, nxt, now, changes,
                                   lambda r: self._claim_cached(r, now, changes, lookup))
        return self._claim_cached(record, now, changes, lookup)

    def _claim_cached(self, record: WorkflowRecord, now: float,
                      changes: list[graph.StateChange], lookup: CacheLookup | None
                      ) -> tuple[WorkflowRecord, Result]:
        if not record.plan.cached:
            return graph.advance(record, now)
        if lookup is None:
            if not self._warned_no_cache:
                self._warned_no_cache = True
                logger.warning("%s: the spec caches steps but %s keeps no cache; they run "
                               "every time", record.workflow_execution_id,
                               type(self.store).__name__)
            return graph.advance(record, now)
        jobs: list[DispatchJob] = []
        while True:
            record, nxt = graph.advance(record, now, cache=lookup, changes=changes)
            if isinstance(nxt, Dispatch):
                jobs.extend(nxt.jobs)
            if not lookup.wanted or isinstance(nxt, Terminal):
                break
            wanted, lookup.wanted = lookup.wanted, []
            assert self.cache is not None
            found = self.cache.get_many(wanted)
            for key in wanted:
                lookup.entries[key] = found.get(key)
        if jobs and not isinstance(nxt, Terminal):
            nxt = Dispatch(jobs)
        return record, nxt

    def _cacheable(self, before: WorkflowRecord, triples: Sequence[tuple[str, Any, int | None]],
                   applied: Sequence[Result]) -> list[_Put]:
        """The successful outputs among ``applied`` results of steps with ``cache`` on,
        keyed by the inputs their step was claimed with (in ``before``)."""
        plan = before.plan
        if not plan.cached or self.cache is None:
            return []
        puts = []
        for (step_id, output, _), result in zip(triples, applied, strict=False):
            spec = plan.by_id.get(step_id)
            if spec is None or spec.cache is None or isinstance(result, Ignored) or \
                    not isinstance(output, dict) or output.get("ok") is False:
                continue
            step = before.steps[step_id]
            if step.inputs is None or step.cached:
                continue
            try:
                output = json_copy(output, "output")
            except NotJSONError:
                continue  # the graph failed this attempt (InvalidOutput)
            puts.append(_Put(cache_key(spec.fn, step.inputs, spec.cache.version), output,
                             spec.fn, spec.cache.version))
        return puts

    def _store_outputs(self, puts: Sequence[_Put]) -> None:
        """Put entries after the record write committed; a failing put is logged (the
        step has its output either way, and the next run just misses)."""
        if not puts or self.cache is None:
            return
        now = self.clock()
        for put in puts:
            try:
                self.cache.put(put.key, put.output, put.fn, put.version, now)
            except Exception as exc:  # the cache is an optimisation: never fail a result
                logger.warning("could not store cache entry %s for fn %r: %s", put.key,
                               put.fn, exc)

    def cache_keys(self, workflow_execution_id: str, step_ids: Iterable[str]) -> list[str]:
        """The cache keys of those steps with ``cache`` on, from the inputs they last ran
        with (``StepRecord.inputs``); steps that never ran have none."""
        record = self.store.load_shared(workflow_execution_id)
        keys = []
        for step_id in step_ids:
            spec = record.plan.by_id.get(step_id)
            step = record.steps.get(step_id)
            if spec is not None and spec.cache is not None and step is not None \
                    and step.inputs is not None:
                keys.append(cache_key(spec.fn, step.inputs, spec.cache.version))
        return keys

    def apply_and_take(
        self, workflow_execution_id: str, results: Iterable[Any], *, limit: int,
        lease: float, worker: str | None = None,
        ack: DispatchJob | Sequence[DispatchJob] | None = None,
    ) -> tuple[list[Result], Result, list[DispatchJob]]:
        """``apply_and_advance``, and take up to ``limit`` of the jobs it dispatches
        for the caller (``Runner.dispatch_and_take``, held for ``lease`` seconds).

        For a driving worker with free slots: the next step of a chain starts
        without a claim transaction. Where the store and the runner share a unit
        of work (SQL on one database), the room still left is filled from the
        queue in the same unit (``take_pending_jobs``: the oldest jobs waiting,
        of any execution), so the apply, dispatch, take, claim and ack are a
        single commit. Returns the outcomes, what ``advance`` returned, and the
        jobs taken (``[]`` where none could be: the caller then claims).
        ``ack``: as for ``apply_and_advance``, or several jobs (the results of
        several finished jobs of one execution, applied together).
        """
        return self._apply_and_advance(workflow_execution_id, results, dispatch=True,
                                       loaded=None, worker=worker, ack=ack,
                                       take=(limit, lease) if limit > 0 else None)

    def apply_and_advance(
        self, workflow_execution_id: str, results: Iterable[Any] = (), *, dispatch: bool = True,
        loaded: WorkflowRecord | None = None, worker: str | None = None,
        ack: DispatchJob | None = None,
    ) -> tuple[list[Result], Result]:
        """Apply results, then claim what became ready, in one transition; then dispatch.

        This is what a result handler does on every message: one load, one
        conditional write, one dispatch. Returns the per-result outcomes and what
        ``advance`` returned. ``loaded``: see ``transition``.

        ``ack``: the job whose result this applies; it is acknowledged
        (``Runner.ack``) once the result is applied. When the store and the
        runner share a database (``Store.unit_with``), the write, the dispatch
        and the ack are one transaction: one commit, and a lost race or a
        failure leaves none of them done. Otherwise they follow one another.

        For the history: ``worker`` names the caller; a result may carry what
        its worker measured (``started_at``, ``duration``, ``worker``) as a
        ``WorkResult.timing`` attribute or a fourth tuple element.
        """
        applied, nxt, _ = self._apply_and_advance(workflow_execution_id, results,
                                                  dispatch=dispatch, loaded=loaded,
                                                  worker=worker, ack=ack, take=None)
        return applied, nxt

    def _apply_and_advance(
        self, workflow_execution_id: str, results: Iterable[Any], *, dispatch: bool,
        loaded: WorkflowRecord | None, worker: str | None,
        ack: DispatchJob | Sequence[DispatchJob] | None, take: tuple[int, float] | None,
    ) -> tuple[list[Result], Result, list[DispatchJob]]:
        acks = [] if ack is None else [ack] if isinstance(ack, DispatchJob) else list(ack)
        results = list(results)
        triples = _as_result_triples(results)
        context = (HistoryContext(worker, _timings(results)) if worker is not None or any(
            len(r) == 4 or getattr(r, "timing", None) is not None for r in results)
            else NO_CONTEXT)
        lookup = self._lookup()
        puts: list[_Put] = []
        # A nested call (sub-workflow children started inside a unit) simply joins it.
        # Joint only when the jobs are dispatched in it: a claim whose jobs go
        # out later must keep the store's short grace for lost dispatches.
        unit = (self.store.unit_with(self.runner)
                if dispatch and not getattr(self._unit, "on", False) else None)
        joined: list[bool] = []  # set by a committed joint unit
        taken: list[DispatchJob] = []  # jobs dispatched and taken for the caller

        def then(result: tuple[list[Result], Result]) -> None:
            joined.clear()
            taken.clear()
            nxt = result[1]
            if dispatch and isinstance(nxt, Dispatch):
                taken[:] = self._dispatch(workflow_execution_id, nxt.jobs, take=take)
            if take is not None and len(taken) < take[0]:
                # Room left: the caller's next claim (the oldest waiting jobs, of
                # any execution) commits with this unit instead of after it.
                taken.extend(self.runner.take_pending_jobs(limit=take[0] - len(taken),
                                                           lease=take[1]))
            for job in acks:
                self.runner.ack(job, _output_of(job, triples))
            joined.append(True)

        joint = (unit, then) if unit is not None else None

        applying = self._applying(triples, lookup, puts)

        def step(r: WorkflowRecord, now: float, changes: list[graph.StateChange]
                 ) -> tuple[WorkflowRecord, tuple[list[Result], Result]]:
            joined.clear()
            return applying(r, now, changes)

        if joint is not None and loaded is None:
            # The record this process last wrote or read, without a read: the
            # unit's conditional write finds it stale (``ConflictError``), and
            # ``_in_unit`` then runs the unit again from a fresh load.
            loaded = self._last_seen(workflow_execution_id)
            if loaded is None and self._preload(workflow_execution_id):
                # Not seen yet (another process started it): read it before the
                # unit, so the unit (SQLite's one write lock) is not held for the read.
                try:
                    loaded = self.store.load_shared(workflow_execution_id)
                except Exception:  # the unit's own load raises it again, as before
                    loaded = None
        try:
            if joint is not None:
                try:
                    applied, nxt = self._in_unit(workflow_execution_id, step, joint,
                                                 loaded=loaded, context=context,
                                                 oversize="raise" if triples else "fail")
                except RecordTooLarge:
                    joint = None  # the usual path below sorts out which output it was
                    raise
            else:
                applied, nxt = self.transition(workflow_execution_id, step, loaded=loaded,
                                               oversize="raise" if triples else "fail",
                                               context=context)
        except RecordTooLarge as exc:
            # An output the store cannot hold fails its attempt with the store's
            # reason; the others are applied. One at a time, to find which it was.
            if len(triples) > 1:
                outcomes: list[Result] = []
                nxt = None
                for one in triples:
                    done, nxt = self.apply_and_advance(workflow_execution_id, [one],
                                                       dispatch=dispatch, worker=worker)
                    outcomes.extend(done)
                for job in acks:
                    self.runner.ack(job, _output_of(job, triples))
                return outcomes, nxt, []
            step_id, _, run_id = triples[0]
            logger.warning("%s: the result of step %r is too large to store: %s",
                           workflow_execution_id, step_id, exc)
            triples = [(step_id, error_output(type(exc).__name__, str(exc)), run_id)]
            applying = self._applying(triples, lookup, puts)  # ``step`` applies this now
            applied, nxt = self.transition(workflow_execution_id, step, context=context,
                                           joint=joint)
        self._store_outputs(puts)
        if not joined:  # no joint unit, or it wrote nothing: one call after the other
            taken.clear()
            if dispatch and isinstance(nxt, Dispatch):
                taken[:] = self._dispatch(workflow_execution_id, nxt.jobs, take=take)
            for job in acks:
                self.runner.ack(job, _output_of(job, triples))
        return applied, nxt, taken

    def _applying(self, triples: Sequence[tuple[str, Any, int | None]],
                  lookup: CacheLookup | None, puts: list[_Put]) -> Transition:
        """The transition that applies ``triples`` and claims what became ready; the
        cache entries it makes are left in ``puts`` (for ``_store_outputs``)."""

        def step(r: WorkflowRecord, now: float, changes: list[graph.StateChange]
                 ) -> tuple[WorkflowRecord, tuple[list[Result], Result]]:
            new, applied = graph.apply_results(r, triples, now, changes)
            puts[:] = self._cacheable(r, triples, applied) if triples else ()
            new, nxt = self._claim(new, now, changes, lookup)
            return new, (applied, nxt)

        return step

    def apply_and_take_many(
        self, groups: Sequence[tuple[str, Sequence[Any], Sequence[DispatchJob]]], *,
        limit: int, lease: float, worker: str | None = None,
    ) -> tuple[list[tuple[list[Result], Result] | None], list[DispatchJob]]:
        """Apply the results of several executions in one unit of work: one commit.

        For a worker holding several finished jobs at once. ``groups`` holds
        ``(workflow_execution_id, results, acks)``, one per execution: results as
        ``apply_and_advance`` takes them, and the jobs they answer (acknowledged
        in the unit). Each group's transition is computed outside the unit, from
        the record this process last saw (read first where it has none); the
        unit then writes every record, dispatches the jobs they made ready,
        acknowledges ``acks`` and takes up to ``limit`` jobs for the caller (those
        it dispatched first, then the oldest waiting), held for ``lease`` seconds.

        Returns, per group, ``(outcomes, what advance returned)`` as
        ``apply_and_advance`` does, or ``None`` for a group left unapplied, and
        the jobs taken. A group is left when its transition needs more than one
        plain try (the record is defective, finished, contended, or ``fn``
        raised); every group is left when the store and the runner share no unit
        of work (``Store.unit_with``) or when the unit did not commit (a lost race,
        a record it cannot write): nothing of it is then stored. The caller
        applies what was left one group at a time (``apply_and_take``), which
        deals with each of those cases. Errors of the store itself
        (``BackendUnavailable``) propagate; the unit was then rolled back, unless
        the commit itself was lost on its way (as for ``apply_and_advance``).
        """
        outcomes: list[tuple[list[Result], Result] | None] = [None] * len(groups)
        unit = (self.store.unit_with(self.runner)
                if not getattr(self._unit, "on", False) else None)
        if unit is None or not groups:
            return outcomes, []
        lookup = self._lookup()
        seen = self._read_unseen([g[0] for g in groups])
        ready = [p for p in (self._prepared(i, g, worker, lookup, seen)
                             for i, g in enumerate(groups)) if p is not None]
        if not ready:
            return outcomes, []
        taken: list[DispatchJob] = []

        def work() -> None:
            taken.clear()  # the unit may run again after a rollback
            # Every record encoded before the first statement (SQLite's write lock),
            # written in key order (two such units lock rows in the same order).
            # (SQL: each kind of statement once for all the records.)
            self.store.prepare_writes([(p.new, p.current, p.events) for p in
                                       sorted(ready, key=lambda p: p.workflow_execution_id)])()
            room = limit
            for p in ready:
                nxt = p.result[1]
                if isinstance(nxt, Dispatch):
                    got = self._dispatch(p.workflow_execution_id, nxt.jobs,
                                         take=(room, lease) if room > 0 else None)
                    taken.extend(got)
                    room -= len(got)
            self.runner.ack_many([(job, _output_of(job, p.triples))
                                  for p in ready for job in p.acks])
            if room > 0:
                taken.extend(self.runner.take_pending_jobs(limit=room, lease=lease))

        try:
            unit(work)
        except ConflictError:
            for p in ready:
                self._contend(p.workflow_execution_id)
            return outcomes, []
        except _UNWRITABLE:
            return outcomes, []
        for p in ready:
            self._written(p.current, p.new, p.events, p.changes)
            self._store_outputs(p.puts)
            outcomes[p.index] = p.result
        return outcomes, taken

    def _read_unseen(self, keys: list[str]) -> dict[str, WorkflowRecord]:
        """The records of ``keys`` this process has not seen, read together
        (``Store.load_shared_many``) when there are several; ``{}`` if that read
        failed: each is then read alone, where its error is reported."""
        unseen = [key for key in keys
                  if not self._contended.get(key, 0) and self._last_seen(key) is None]
        if len(unseen) < 2:
            return {}
        try:
            return self.store.load_shared_many(unseen)
        except Exception:  # only a saving: the single loads report it
            return {}

    def _prepared(self, index: int, group: tuple[str, Sequence[Any], Sequence[DispatchJob]],
                  worker: str | None, lookup: CacheLookup | None,
                  seen: dict[str, WorkflowRecord]) -> _Prepared | None:
        """One group of ``apply_and_take_many`` computed outside the unit, or ``None``
        when it needs the one-at-a-time path."""
        workflow_execution_id, results, acks = group
        if self._contended.get(workflow_execution_id, 0):
            return None
        current = seen.get(workflow_execution_id) or self._last_seen(workflow_execution_id)
        if current is None:
            try:
                current = self.store.load_shared(workflow_execution_id)
            except Exception:  # the one-at-a-time path loads it again and reports it
                return None
        triples = _as_result_triples(results)
        puts: list[_Put] = []
        tried = self._plain_try(current, self._applying(triples, lookup, puts),
                                HistoryContext(worker, _timings(list(results))))
        if tried is None:
            return None
        new, result, events, changes = tried
        return _Prepared(index, workflow_execution_id, current, new, result, events, changes,
                         puts, triples, list(acks))

    def _last_seen(self, workflow_execution_id: str) -> WorkflowRecord | None:
        """The record of that execution this process last wrote or read, without a
        read (``cached_record``, where the store keeps one); perhaps stale."""
        peek = getattr(self.store, "cached_record", None)
        return peek(workflow_execution_id) if peek is not None else None

    def _contend(self, workflow_execution_id: str) -> None:
        """``workflow_execution_id`` lost an optimistic try: its next few transitions
        start inside the unit (``_in_unit``)."""
        if len(self._contended) >= _CONTENDED_KEPT:
            self._contended.clear()
        self._contended[workflow_execution_id] = _CONTENDED_SKIP

    def _preload(self, workflow_execution_id: str) -> bool:
        """Whether a joint unit for a record this process has not cached should
        read it first, outside the unit: where the unit holds the database's
        only write lock (``Store.reloads_in_unit``, SQLite) and the record is
        not known to be contended (then the unit loads it, as a retry would)."""
        return (self.store.reloads_in_unit
                and not self._contended.get(workflow_execution_id, 0))

    def _in_unit(self, workflow_execution_id: str, fn: Transition,
                 joint: tuple[UnitOfWork, Callable[[Any], None]], *,
                 loaded: WorkflowRecord | None, context: HistoryContext, oversize: str
                 ) -> Any:
        """``transition`` as one unit of work: load, write and ``then`` in one
        transaction (one commit, and on SQLite no lost race at all: the unit
        holds the write lock from the load on). A lost race rolls it back and
        runs it again in a new transaction; callbacks run after the commit."""
        unit = joint[0]
        if loaded is not None:
            skip = self._contended.get(workflow_execution_id, 0)
            if skip:
                self._contended[workflow_execution_id] = skip - 1
            else:
                wrote, result = self._optimistic(workflow_execution_id, fn, joint, loaded,
                                                 context)
                if wrote:
                    return result
                # Lost (another writer moved the record on) or needs more than one
                # plain try: the next few transitions of it start inside the unit.
                self._contend(workflow_execution_id)
                loaded = None
        deferred: list[Callable[[], None]] = []
        first = [loaded]

        def whole() -> Any:
            deferred.clear()  # the unit may run again after a rollback
            return self.transition(workflow_execution_id, fn, loaded=first[0],
                                   oversize=oversize, context=context, joint=joint,
                                   deferred=deferred)

        for attempt in range(self.max_conflict_retries + 1):
            self._unit.on = True
            try:
                result = unit(whole)
            except ConflictError:
                first[0] = None
                if attempt >= 2:
                    _conflict_pause(attempt)
                continue
            finally:
                self._unit.on = False
            for callback in deferred:
                callback()
            return result
        raise ConflictError(f"{workflow_execution_id}: gave up after "
                            f"{self.max_conflict_retries} conflicting writes")

    def _optimistic(self, workflow_execution_id: str, fn: Transition,
                    joint: tuple[UnitOfWork, Callable[[Any], None]], current: WorkflowRecord,
                    context: HistoryContext) -> tuple[bool, Any]:
        """One try of ``fn`` on ``current`` (the record this process last saw)
        computed outside the unit of work; only its write and ``then`` run in
        one, so the unit (on SQLite: the database's one write lock) is held for
        the statements and the commit, not for the graph and the encoding.

        Returns ``(True, result)`` once written, or ``(False, None)`` when the
        locked path must run instead: the write lost a race (nothing of it is
        left), or this try would need more than one plain step (nothing to
        write, ``fn`` raised, a defect, a record it cannot write).
        """
        tried = self._plain_try(current, fn, context)
        if tried is None:
            return False, None
        new, result, events, changes = tried
        try:
            self._write_joint(joint, new, current, events, result)
        except _AfterWrite as wrapped:
            raise wrapped.cause() from None
        except (ConflictError, *_UNWRITABLE):
            return False, None
        self._written(current, new, events, changes)
        return True, result

    def _plain_try(self, current: WorkflowRecord, fn: Transition, context: HistoryContext
                   ) -> tuple[WorkflowRecord, Any, list[Event], list[graph.StateChange]] | None:
        """``fn`` on ``current`` as the next version, with its history: the record to
        write, ``fn``'s result, the events and the state changes; ``None`` when that
        needs more than one plain step (a defect or a finished record, ``fn`` raised,
        nothing to write), which ``transition`` sorts out."""
        if current.defects or current.status.is_terminal:
            return None
        now = self.clock()
        changes: list[graph.StateChange] = []
        try:
            new, result = fn(current, now, changes)
        except Exception:
            return None
        if new is current:
            return None
        new = new.evolve(version=current.version + 1, updated_at=now)
        return new, result, self._events(current, new, context), changes

    def _written(self, current: WorkflowRecord, new: WorkflowRecord, events: list[Event],
                 changes: list[graph.StateChange]) -> None:
        """After a plain try's write committed: subscribers, an ended execution's
        parent and children, ``on_state_change``."""
        self._publish(events)
        if new.status.is_terminal:
            self._ended(current, new)
        self._notify(current.workflow_execution_id, changes)

    def cancel(self, workflow_execution_id: str, reason: str | None = None) -> Result:
        """Cancel an execution: nothing more is dispatched and late results are ignored."""
        result = self.transition(workflow_execution_id,
                                 lambda r, now, _: graph.cancel(r, now, reason))
        self.runner.cancel(workflow_execution_id)
        return result

    def fail_execution(self, workflow_execution_id: str, error: dict[str, Any]) -> Result:
        """End a running execution as failed with outcome ``{"error": error}``.

        For a driver that cannot go on with an execution (``runfox run`` after an
        unexpected error): it ends somewhere visible instead of staying in
        progress with nobody driving it. A finished execution is left as it is;
        returns its terminal result either way.
        """
        error = json_copy(error, "error")
        return self.transition(workflow_execution_id,
                               lambda r, now, _: graph.fail_execution(r, error, now))

    def redispatch_stale(self, workflow_execution_id: str, older_than: float) -> list[DispatchJob]:
        """Dispatch again the jobs of steps claimed over ``older_than`` seconds ago.

        Covers a process that died between claiming steps and enqueueing them.
        Runners drop jobs they already have, so this never duplicates work that
        is queued or running. Reads without writing unless something must change:
        a step whose inputs no longer resolve is failed (``graph.redispatch``) and
        a defective record is failed, each by a transition, so that no sweep
        meets the same problem again.
        """
        record = self.store.load_shared(workflow_execution_id)
        new, result = graph.redispatch(record, self.clock(), older_than)
        if new is not record or (record.defects and not record.status.is_terminal):
            result = self.transition(
                workflow_execution_id,
                lambda r, now, _: graph.redispatch(r, now, older_than), loaded=record)
        jobs = list(result.jobs) if isinstance(result, Dispatch) else []
        if jobs:
            self._dispatch(workflow_execution_id, jobs, sweep=older_than)
        return jobs

    # ------------------------------------------------------------------
    # The seed's single-purpose operations, each one transition
    # ------------------------------------------------------------------

    def _simple(self, workflow_execution_id: str,
                fn: Callable[[WorkflowRecord, float], WorkflowRecord]) -> None:
        self.transition(workflow_execution_id, lambda r, now, _: (fn(r, now), None))

    def mark_in_progress(self, workflow_execution_id: str, step_id: str) -> None:
        self._simple(workflow_execution_id,
                     lambda r, now: graph.mark_in_progress(r, step_id, now))

    def mark_complete(self, workflow_execution_id: str, step_id: str) -> None:
        self._simple(workflow_execution_id, lambda r, now: graph.mark_complete(r, step_id, now))

    def mark_halted(self, workflow_execution_id: str, step_id: str) -> None:
        self._simple(workflow_execution_id, lambda r, now: graph.mark_halted(r, step_id, now))

    def write_step_output(self, workflow_execution_id: str, step_id: str,
                          output: dict[str, Any]) -> None:
        output = json_copy(output, "output")  # the caller's mistake: raise it, fail nothing
        self._simple(workflow_execution_id,
                     lambda r, now: graph.write_step_output(r, step_id, output))

    def merge_workflow_state(self, workflow_execution_id: str, output: dict[str, Any],
                             event: StateChangeEvent | None = None) -> None:
        """Latest-wins merge of ``output`` into the state; fires ``on_state_change``.

        A four-parameter callback gets ``event`` as its fourth argument: ``None``
        unless the caller names the step that caused the merge.
        """
        if not output:
            return
        output = json_copy(output, "output")  # the caller's mistake: raise it, fail nothing

        def merge(r: WorkflowRecord, now: float, changes: list[graph.StateChange]
                  ) -> tuple[WorkflowRecord, None]:
            new = graph.merge_workflow_state(r, output)
            changes.append((event, r.state, new.state))
            return new, None

        self.transition(workflow_execution_id, merge)

    def write_workflow_outcome(self, workflow_execution_id: str, outcome: Any) -> None:
        outcome = json_copy(outcome, "outcome")  # the caller's mistake: raise it, fail nothing
        self._simple(workflow_execution_id,
                     lambda r, now: graph.write_workflow_outcome(r, outcome))

    def reset_step(self, workflow_execution_id: str, step_id: str) -> None:
        """Make a step ready again; in a finished execution, ``invalidate`` it (the
        step and what is downstream reopen, the workflow is in progress again)."""
        self._simple(workflow_execution_id, lambda r, now: graph.reset_step(r, step_id, now))

    # ------------------------------------------------------------------
    # Targets, invalidation, redrive
    # ------------------------------------------------------------------

    def restrict_to_targets(self, workflow_execution_id: str, targets: Iterable[str]
                            ) -> list[str]:
        """Skip the waiting steps no target needs (``graph.restrict_to_targets``); returns
        their ids. ``UnknownStepError`` for an unknown target, nothing written."""
        wanted = [targets] if isinstance(targets, str) else list(targets)
        return list(self.transition(
            workflow_execution_id,
            lambda r, now, _: graph.restrict_to_targets(r, wanted, now)))

    def _reopen_and_claim(self, workflow_execution_id: str,
                          reopen: Callable[[WorkflowRecord, float], Any], *,
                          loaded: WorkflowRecord | None = None, dispatch: bool = True
                          ) -> list[str]:
        """One transition: ``reopen(record, now) -> (record, ids)``, then claim what is
        ready; dispatch the jobs. ``reopen`` returning the record unchanged writes nothing."""

        lookup = self._lookup()

        def fn(r: WorkflowRecord, now: float, changes: list[graph.StateChange]
               ) -> tuple[WorkflowRecord, Any]:
            new, reopened = reopen(r, now)
            if new is r:
                return r, (reopened, None)
            new, nxt = self._claim(new, now, changes, lookup)
            return new, (reopened, nxt)

        reopened, nxt = self.transition(workflow_execution_id, fn, loaded=loaded)
        if dispatch and isinstance(nxt, Dispatch):
            self._dispatch(workflow_execution_id, nxt.jobs)
        return list(reopened)

    def invalidate(self, workflow_execution_id: str, step_ids: str | Iterable[str], *,
                   dispatch: bool = True) -> list[str]:
        """Reopen the steps and everything downstream of them (``graph.invalidate``),
        claim and dispatch what is ready; returns the reopened ids.

        The cache entries of the steps it reopens (keys from the inputs they last ran
        with) are deleted first, so they run again instead of being served from the
        cache. ``UnknownStepError`` for a step the spec lacks: nothing is written.
        """
        record = self.store.load_shared(workflow_execution_id)
        ids = record.plan.known_steps([step_ids] if isinstance(step_ids, str) else step_ids)
        if record.plan.cached and self.cache is not None:
            reopening = graph.invalidate(record, ids, self.clock())[1]
            self.cache.delete(self.cache_keys(workflow_execution_id, reopening))
        return self._reopen_and_claim(
            workflow_execution_id, lambda r, now: graph.invalidate(r, ids, now),
            dispatch=dispatch)

    def redrive(self, workflow_execution_id: str, *, dispatch: bool = True) -> list[str]:
        """Continue a failed, cancelled or halted-on-error execution in place from the
        steps that did not complete (``graph.redrive``); returns the reopened ids.

        Idempotent under a race: two redrives of one ended record make one write;
        the loser finds the execution reopened since it read it and returns the same
        ids without writing. ``ExecutionStateError`` for a running, pending or
        complete execution (or one halted on a good output): nothing is written.
        """
        seen = self.store.load_shared(workflow_execution_id)
        problem = graph.redrive_problem(seen)
        if problem is not None:
            raise ExecutionStateError(problem)
        planned = graph.redrive(seen, seen.updated_at)[1]

        def reopen(r: WorkflowRecord, now: float) -> tuple[WorkflowRecord, list[str]]:
            if r.version != seen.version and graph.redrive_problem(r) is not None:
                return r, planned  # reopened by a concurrent redrive since `seen`
            return graph.redrive(r, now)

        return self._reopen_and_claim(workflow_execution_id, reopen, loaded=seen,
                                      dispatch=dispatch)

    def rerun(self, workflow_execution_id: str, inputs: dict[str, Any] | None = None) -> str:
        """Create a new execution of the same spec with the same inputs (``inputs``
        merged over them, then checked against the spec); returns its id. Nothing is
        dispatched: drive it as any new execution. With the step cache, its
        unchanged steps are served from the cache.

        ``WorkflowNotFound`` for an unknown id and ``SpecError`` for bad inputs: nothing
        is written either way.
        """
        record = self.store.load_shared(workflow_execution_id)
        merged = {**json_clone(record.inputs), **(inputs or {})}
        return self.create(record.plan, merged)

    def reset_for_retry(self, workflow_execution_id: str, step_id: str) -> None:
        self._simple(workflow_execution_id, lambda r, now: graph.reset_for_retry(r, step_id))

    # ------------------------------------------------------------------
    # Runner pass-throughs
    # ------------------------------------------------------------------

    def dispatch(self, workflow_execution_id: str, jobs: Sequence[DispatchJob]) -> None:
        """Send claimed jobs on: to the runner, or as child executions for
        sub-workflow steps."""
        self._dispatch(workflow_execution_id, jobs)

    def gather(self, workflow_execution_id: str) -> list[WorkResult]:
        return self.runner.gather(workflow_execution_id)

    def list_pending_jobs(self) -> list[DispatchJob]:
        return self.runner.list_pending_jobs()

    def take_pending_jobs(self, limit: int | None = None) -> list[DispatchJob]:
        """The runner's ``take_pending_jobs``, but start jobs (``submit``) are not
        handed out: their executions are created (``start_submitted``) and their
        first jobs taken in their place."""
        jobs = self.runner.take_pending_jobs(limit)
        starts, rest = split_starts(jobs)
        return rest + self.start_submitted(starts, limit=len(starts)) if starts else jobs

    def submit_work_result(self, workflow_execution_id: str, step_id: str,
                           output: dict[str, Any], run_id: int | None = None) -> bool:
        return self.runner.submit_work_result(workflow_execution_id, step_id, output, run_id)

    # Older spellings of the same operations.
    pending_tasks = list_pending_jobs
    take_tasks = take_pending_jobs
    submit_result = submit_work_result
