"""Sub-workflow steps as the Backend drives them: claim, start, report, cancel, sweep.

The life of a ``workflow`` step (see ``runfox.subflows`` for the spec side):

1. **Claim.** ``graph.advance`` claims it like any step; in the same transition
   ``mark`` resolves the child's name (static, or the step's rule evaluated on the
   record) and records the child's key on the step (``StepRecord.child``). The key
   is deterministic: ``<child workflow_id>#sub-<digest of (parent key, step id,
   run id)>``. A name that resolves to nothing fails the step at once, without
   retries (``graph.fail_steps``), like an input error.
2. **Start.** Its job (``fn`` is ``workflow:<name>``) never reaches the runner:
   ``Children.start`` creates the child execution with the step's resolved
   ``input`` as its workflow inputs and ``parent = {"execution", "step", "run_id",
   "depth"}`` in its header, then advances it. Creating is idempotent: a create
   that finds the key taken means the child exists.
3. **Report.** When a transition ends an execution that has a ``parent``, the
   Backend applies the child's result to the parent step with the parent's
   ``run_id`` (``apply_and_advance``): the child's outcome when it completed, an
   error output (``ChildFailed``, ``ChildHalted``, ``ChildCancelled``) otherwise,
   so the step's retry and failure policies apply (a retry is a new run, so a new
   child). A stale report (an older run) changes nothing.
4. **Cancel.** When a parent ends (cancelled, failed, halted) while children run,
   those children are cancelled, recursively.
5. **Sweep.** A crash can fall between any two of these writes. The parent's
   sweep (``Backend.redispatch_stale``) hands its stale child jobs to ``start``,
   which creates a missing child, reports a child that already ended, and sweeps a
   running one in turn. No runner job is ever made for a child step.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import graph, limits
from ..errors import ConflictError, SpecError, WorkflowNotFound
from ..history import created_event
from ..jsonvalue import error_output, json_copy
from ..records import StepRecord, WorkflowRecord, context_for
from ..results import Cancelled, Complete, Dispatch, DispatchJob, Failed, Halt, Result
from ..spec import WORKFLOW_FN_PREFIX, StepSpec, spec_for, workflow_id_for
from ..status import StepStatus, WorkflowStatus
from ..subflows import child_execution_id, child_spec

if TYPE_CHECKING:
    from .base import Backend

__all__ = ["Children", "child_key", "child_output", "is_child_job", "mark", "plan_step_id"]

logger = logging.getLogger("runfox.backend")

_ITEM = re.compile(r"\[\d+\]$")


def plan_step_id(step_id: str) -> str:
    """The spec step of a job's step id: a map item ``X[3]`` belongs to step ``X``."""
    return _ITEM.sub("", step_id)


def is_child_job(job: DispatchJob) -> bool:
    """True for the job of a sub-workflow step (it starts a child, not an executor)."""
    return job.fn.startswith(WORKFLOW_FN_PREFIX)


#: (parent workflow_id, name) -> the child's workflow_id. A parent's workflow_id fixes
#: its table, so this never goes stale; it saves hashing the table on every claim.
_CHILD_IDS: dict[tuple[str, str], str] = {}
_CHILD_IDS_SIZE = 1024


def _child_workflow_id(parent: WorkflowRecord, name: str) -> str:
    key = (parent.workflow_id, name)
    found = _CHILD_IDS.get(key)
    if found is None:
        found = workflow_id_for(child_spec(parent.plan.workflows, name))
        if len(_CHILD_IDS) >= _CHILD_IDS_SIZE:
            _CHILD_IDS.clear()
        _CHILD_IDS[key] = found
    return found


def child_key(parent: WorkflowRecord, step_id: str, run_id: int, name: str) -> str:
    """The key of the child that run ``run_id`` of ``step_id`` starts from ``name``."""
    workflow_id = _child_workflow_id(parent, name)
    return f"{workflow_id}#{child_execution_id(parent.workflow_execution_id, step_id, run_id)}"


def _name(record: WorkflowRecord, spec: StepSpec, job: DispatchJob
          ) -> tuple[str | None, str | None]:
    """``(name, None)`` for the child a job starts, or ``(None, problem)``."""
    given = job.fn[len(WORKFLOW_FN_PREFIX):]
    if spec.workflow is not None:
        name: Any = spec.workflow
    elif given and given != "*":
        name = given
    else:
        assert spec.workflow_rule is not None
        try:
            name = spec.workflow_rule(context_for(record))
        except graph.DATA_ERRORS as exc:
            return None, f"step {spec.id!r} workflow: the rule failed: {exc}"
    table = record.plan.workflows
    if not isinstance(name, str) or name not in table:
        known = ", ".join(repr(k) for k in sorted(table)) or "none"
        return None, (f"step {spec.id!r} workflow: unknown workflow {name!r} (known: {known})")
    return name, None


def mark(record: WorkflowRecord, jobs: Sequence[DispatchJob]
         ) -> tuple[WorkflowRecord, list[DispatchJob], list[tuple[str, dict[str, Any]]]]:
    """Resolve the children of claimed sub-workflow steps (pure; part of the claim).

    Returns the record with ``child`` set on those steps, the jobs (a child job's
    ``fn`` now names the resolved workflow) and the ``(step_id, error)`` of steps
    whose name did not resolve, for ``graph.fail_steps``.
    """
    marked: dict[str, StepRecord] = {}
    kept: list[DispatchJob] = []
    failures: list[tuple[str, dict[str, Any]]] = []
    for job in jobs:
        if not is_child_job(job):
            kept.append(job)
            continue
        spec = record.plan.by_id[plan_step_id(job.step_id)]
        name, problem = _name(record, spec, job)
        step = record.steps.get(job.step_id)
        if name is None:
            if step is None:  # not claimed in this record: its dispatch fails it
                kept.append(job)
            else:
                failures.append((job.step_id, {"type": "UnknownWorkflow", "message": problem}))
            continue
        if step is not None:
            marked[job.step_id] = step.evolve(
                child=child_key(record, job.step_id, job.run_id, name))
        kept.append(dataclasses.replace(job, fn=WORKFLOW_FN_PREFIX + name))
    if marked:
        record = record.evolve(steps=record.steps.replace(marked))
    return record, kept, failures


def _error_message(key: str, record: WorkflowRecord) -> tuple[str, str]:
    """The error type and message a parent step gets from a child that did not complete."""
    outcome = record.outcome if isinstance(record.outcome, dict) else {}
    if record.status is WorkflowStatus.FAILED:
        error = outcome.get("error")
        detail = ""
        if isinstance(error, dict):
            detail = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        if outcome.get("step") is not None:
            detail = f"step {outcome['step']!r} {detail}".rstrip()
        return "ChildFailed", f"sub-workflow {key} failed" + (f": {detail}" if detail else "")
    if record.status is WorkflowStatus.HALTED:
        return "ChildHalted", f"sub-workflow {key} halted"
    reason = outcome.get("reason")
    return "ChildCancelled", f"sub-workflow {key} was cancelled" + (
        f": {reason}" if reason else "")


def child_output(record: WorkflowRecord) -> dict[str, Any]:
    """The output a parent step gets from its ended child: the child's outcome (its
    ``outputs``) when it completed, else an error output naming the child."""
    key = record.workflow_execution_id
    if record.status is WorkflowStatus.COMPLETE:
        outcome = json_copy(record.outcome, "outcome")
        return outcome if isinstance(outcome, dict) else {"outcome": outcome}
    kind, message = _error_message(key, record)
    output = error_output(kind, message)
    output["child"] = key
    output["outcome"] = json_copy(record.outcome, "outcome")
    return output


class Children:
    """The Backend's side of sub-workflows: start, report, cancel, drive (see module)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- start (and sweep) -----------------------------------------------------------

    def start(self, workflow_execution_id: str, jobs: Sequence[DispatchJob],
              sweep: float | None = None) -> list[DispatchJob]:
        """Start the children of the sub-workflow jobs among ``jobs``; return the others.

        ``sweep``: called from a sweep (``redispatch_stale``) with its ``older_than``;
        a child that already runs is then swept too, and one that already ended is
        reported to the parent.
        """
        mine = [job for job in jobs if is_child_job(job)]
        if not mine:
            return list(jobs)
        parent = self.backend.store.load_shared(workflow_execution_id)
        for job in mine:
            try:
                self._ensure(parent, job, sweep)
            except WorkflowNotFound:
                raise
            except Exception as exc:  # a sweep starts it again; the parent stays consistent
                logger.warning("%s: could not start the sub-workflow of step %r (run %s): "
                               "%s: %s", workflow_execution_id, job.step_id, job.run_id,
                               type(exc).__name__, exc)
        return [job for job in jobs if not is_child_job(job)]

    def _ensure(self, parent: WorkflowRecord, job: DispatchJob, sweep: float | None) -> None:
        if parent.status.is_terminal:
            return
        step = parent.steps.get(job.step_id)
        if step is not None and (step.status is not StepStatus.IN_PROGRESS
                                 or step.run_id != job.run_id):
            return  # a stale job: that run already ended
        spec = parent.plan.by_id[plan_step_id(job.step_id)]
        name, problem = _name(parent, spec, job) if step is None or step.child is None \
            else (self._name_of(parent, step.child), None)
        if name is None:
            self._fail(parent, job, "UnknownWorkflow", problem or "unknown workflow")
            return
        key = (step.child if step is not None and step.child is not None
               else child_key(parent, job.step_id, job.run_id, name))
        store = self.backend.store
        try:
            child = store.load_shared(key)
        except WorkflowNotFound:
            child = None
        if child is None:
            if self._create(parent, job, name, key):
                self.backend.apply_and_advance(key)
        elif child.status.is_terminal:
            self.report(child)
        elif sweep is not None:
            self.backend.redispatch_stale(key, sweep)

    @staticmethod
    def _name_of(parent: WorkflowRecord, key: str) -> str | None:
        """The table name whose child spec has the workflow id in ``key``."""
        workflow_id = key.partition("#")[0]
        for name in parent.plan.workflows:
            if _child_workflow_id(parent, name) == workflow_id:
                return name
        return None

    def _create(self, parent: WorkflowRecord, job: DispatchJob, name: str, key: str) -> bool:
        """Store the child execution; False when it cannot be (the step failed) or
        another process stored it first."""
        backend = self.backend
        depth = int((parent.parent or {}).get("depth", 0)) + 1
        limit = limits.current().workflow_depth
        if depth > limit:
            self._fail(parent, job, "WorkflowTooDeep",
                       f"step {job.step_id!r}: sub-workflow {name!r} would run at depth "
                       f"{depth}, over limits.workflow_depth ({limit})")
            return False
        try:
            plan = spec_for(child_spec(parent.plan.workflows, name))
            inputs = plan.check_inputs(json_copy(job.inputs, "inputs"))
        except SpecError as exc:
            self._fail(parent, job, "ChildInputError",
                       f"step {job.step_id!r}: sub-workflow {name!r}: {exc}")
            return False
        now = backend.clock()
        workflow_id, _, execution_id = key.partition("#")
        record = WorkflowRecord(
            workflow_id=workflow_id, execution_id=execution_id, spec=plan.raw, inputs=inputs,
            version=1, created_at=now, updated_at=now, plan=plan,
            parent={"execution": parent.workflow_execution_id, "step": job.step_id,
                    "run_id": job.run_id, "depth": depth})
        try:
            backend.store.write_shared(record)
        except ConflictError:
            return False  # created by another process (a racing sweep): it drives it
        backend._publish([created_event(record)])
        return True

    def _fail(self, parent: WorkflowRecord, job: DispatchJob, kind: str, message: str) -> None:
        """Fail the step's attempt with an error output (its retry policy applies)."""
        logger.warning("%s: %s", parent.workflow_execution_id, message)
        self.backend.apply_and_advance(parent.workflow_execution_id,
                                       [(job.step_id, error_output(kind, message), job.run_id)])

    # -- report, cancel -----------------------------------------------------------------

    def report(self, child: WorkflowRecord) -> None:
        """Apply an ended child's result to its parent step (stale ones change nothing)."""
        parent = child.parent
        if parent is None or not child.status.is_terminal:
            return
        try:
            self.backend.apply_and_advance(
                parent["execution"], [(parent["step"], child_output(child),
                                       parent.get("run_id"))])
        except WorkflowNotFound:
            logger.warning("%s: its parent %s is gone; its result is dropped",
                           child.workflow_execution_id, parent["execution"])
        except Exception as exc:  # the parent's sweep reports it again
            logger.warning("%s: could not report to its parent %s (%s: %s); the parent's "
                           "sweep will", child.workflow_execution_id, parent["execution"],
                           type(exc).__name__, exc)

    def cancel_running(self, before: WorkflowRecord) -> None:
        """Cancel the children that steps of ``before`` (a parent that just ended) ran."""
        for step in before.steps.values():
            if step.child is None or step.status is not StepStatus.IN_PROGRESS:
                continue
            try:
                self.backend.cancel(step.child, f"its parent {before.workflow_execution_id} "
                                                "ended")
            except WorkflowNotFound:
                pass  # never created: nothing runs
            except Exception as exc:
                logger.warning("%s: could not cancel sub-workflow %s: %s",
                               before.workflow_execution_id, step.child, exc)

    # -- driving them in-process ------------------------------------------------------------

    def drive(self, workflow_execution_id: str) -> int:
        """Gather and apply the results of the running children of an execution, and
        of theirs; returns how many results were applied. For ``Workflow.run``,
        whose own gather sees only its execution's results."""
        record = self.backend.store.load_shared(workflow_execution_id)
        if not record.plan.has_subworkflows:
            return 0
        applied = 0
        for step in record.steps.values():
            if step.child is None or step.status is not StepStatus.IN_PROGRESS:
                continue
            try:
                results = self.backend.gather(step.child)
                if results:
                    self.backend.apply_and_advance(step.child, results)
                    applied += len(results)
                applied += self.drive(step.child)
            except WorkflowNotFound:
                continue
        return applied


def claim(record: WorkflowRecord, nxt: Result, now: float, changes: list[Any],
          again: Any) -> tuple[WorkflowRecord, Result]:
    """The claim's sub-workflow part: ``mark`` the claimed child steps; fail those whose
    name resolves to nothing and claim what that made ready (``again(record)``, a
    claim without this part), until nothing more fails. A loop, not a recursion: a
    map with a small ``max_parallel`` may fail thousands of items this way."""
    if not isinstance(nxt, Dispatch):
        return record, nxt
    jobs: list[DispatchJob] = []
    while True:
        record, kept, failures = mark(record, nxt.jobs)
        jobs.extend(kept)
        if not failures:
            return record, Dispatch(jobs)
        record, ended = graph.fail_steps(record, failures, now)
        if ended is not None:
            return record, ended
        record, more = again(record)
        if isinstance(more, Complete | Halt | Failed | Cancelled):
            return record, more
        if not isinstance(more, Dispatch):
            return record, (Dispatch(jobs) if jobs else more)
        nxt = more
