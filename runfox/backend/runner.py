"""Runner: the job queue between the Backend and the workers.

The contract every runner keeps (the contract suite in ``tests/contract.py``
checks it):

- ``dispatch(wf_exec_id, jobs)`` enqueues jobs. A job is identified by
  ``(workflow_execution_id, step_id, run_id)``; dispatching the same job again
  while the runner still knows it adds nothing, so re-dispatching after a crash
  is always safe.
- ``list_pending_jobs()`` is a snapshot of jobs nobody holds; it changes nothing.
- ``take_pending_jobs(limit=None, lease=None)`` consumes jobs for a worker. A
  runner with leases (SQL, SQS) gives a taken job back to the queue when its lease
  expires without a result; ``heartbeat`` extends the lease, ``release`` gives
  the job back at once.
- ``submit_work_result(wf_exec_id, step_id, output, run_id=None)`` records a
  result; it returns ``False`` when a result for that job was already recorded.
- ``gather(wf_exec_id)`` returns the results not yet gathered for that execution,
  each as a ``WorkResult`` (which unpacks as the seed's ``(step_id, output)``),
  and never blocks.
- ``dispatch_and_take(wf_exec_id, jobs, limit, lease)`` enqueues and at once
  takes up to ``limit`` of the new jobs for the caller (a driving worker keeping
  the next step of its own execution, with no claim in between). Runners that
  cannot take them in the same unit of work take none: the default.
- ``ack(job, output)`` is for a worker that applied a job's result to the record
  itself: the runner forgets the job (it is not handed out again) and need not
  store the result.
- Concurrency slots: a job with a ``concurrency_key`` is handed out only while
  fewer than its ``concurrency_limit`` jobs with that key are taken and not yet
  finished, across every worker and execution using the runner's storage. A
  key's slots are numbered ``0..limit-1``: a job takes a free one when it is
  taken and frees it when it is acked, released or its result submitted, or (in
  runners with leases) when its lease runs out; a heartbeat extends the slot's
  lease with the job's. A job whose key is full stays queued, undelivered, for
  a later take. (Jobs with one key and different limits share the low-numbered
  slots: a job with limit ``n`` may take only slots ``0..n-1``.)

Wake-ups (optional): ``watch_jobs(wake)`` asks the runner to call ``wake()``
when jobs may have become claimable (a dispatch, a release), so an idle worker
can sleep long and still start a new job at once. It is a hint, never a
guarantee (leases run out silently, other processes may dispatch unheard):
callers keep polling, just less often. The default never calls ``wake``; the
in-process runner calls it on dispatch and release; the SQL runner on dispatch
and release in this process, and on PostgreSQL on a dispatch anywhere
(``LISTEN``/``NOTIFY``).

Inspection (``runfox status``, metrics), both optional and cheap:
``job_states(wf_exec_id)`` maps each job key of one execution the runner knows to
a ``JobState`` (queued, running with its lease end, done, acked; the default
knows nothing), and ``queue_depth()`` counts jobs waiting for a worker.

A worker harness (``runfox.inprocess.InProcessWorker``, ``runfox worker`` and
the Lambda handlers) takes jobs, calls the executor through
``runfox.execution.run_job`` and submits results. Harnesses import runners, never
the other way round.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..jsonvalue import json_copy
from ..results import DispatchJob, WorkResult, job_key

__all__ = ["InProcessRunner", "JobState", "Runner"]

QUEUED, RUNNING, DONE, ACKED = "queued", "running", "done", "acked"

logger = logging.getLogger("runfox.backend")


def _unwatch() -> None:
    """What ``Runner.watch_jobs`` returns when it watches nothing."""


@dataclass(frozen=True, slots=True)
class JobState:
    """Where one job is, as its runner knows it.

    ``state``: ``queued`` (waiting for a worker; ``deliveries > 0`` means an
    earlier lease ran out), ``running`` (held; ``lease_end`` is when the lease
    ends, epoch seconds, ``None`` for runners without leases), ``done`` (a result
    waits to be gathered) or ``acked`` (its worker applied the result).
    """

    state: str
    deliveries: int = 0
    lease_end: float | None = None


class Runner(ABC):
    """The job queue interface. See the module docstring for the contract."""

    @abstractmethod
    def dispatch(self, workflow_execution_id: str, jobs: Sequence[DispatchJob]) -> None:
        """Enqueue ``jobs``; a job the runner already has is not added again."""

    def dispatch_and_take(self, workflow_execution_id: str, jobs: Sequence[DispatchJob],
                          limit: int, lease: float) -> list[DispatchJob]:
        """Enqueue ``jobs`` and take up to ``limit`` of them for the caller at once.

        What a driving worker with free slots does with the jobs its own
        transition dispatched: it saves the claim that would fetch them back. A
        taken job is held exactly as one from ``take_pending_jobs(lease=lease)``
        (heartbeat, ack, release, and back to the queue when its lease runs
        out); the others wait for any worker. Jobs with a ``concurrency_key``
        are never taken here: their slots are handed out by claims. Only for
        jobs that are new, i.e. dispatched by the transition that claimed them
        (a run id seen for the first time).

        The default takes none (``dispatch``, then ``[]``): the caller claims as usual.
        """
        self.dispatch(workflow_execution_id, jobs)
        return []

    @abstractmethod
    def gather(self, workflow_execution_id: str) -> list[WorkResult]:
        """Results for this execution not returned before; ``[]`` if none. Never blocks."""

    @abstractmethod
    def list_pending_jobs(self) -> list[DispatchJob]:
        """Jobs waiting for a worker, without taking them."""

    @abstractmethod
    def take_pending_jobs(
        self, limit: int | None = None, lease: float | None = None
    ) -> list[DispatchJob]:
        """Take up to ``limit`` waiting jobs (all when ``None``) for execution.

        ``lease`` is how long, in seconds, the caller holds each job before the
        runner may hand it to another worker; runners without leases ignore it.
        """

    @abstractmethod
    def submit_work_result(
        self,
        workflow_execution_id: str,
        step_id: str,
        output: dict[str, Any],
        run_id: int | None = None,
    ) -> bool:
        """Record a result. ``False`` if that job's result was already recorded."""

    def heartbeat(self, job: DispatchJob, lease: float) -> bool:
        """Extend the lease on a taken job; ``False`` if it is no longer held."""
        return True

    def ack(self, job: DispatchJob, output: dict[str, Any]) -> None:
        """Forget a taken job whose result the caller has already applied.

        The default records the result as ``submit_work_result`` does, which is
        always correct (a later ``gather`` returns it and the graph ignores it as
        a duplicate); runners override it to drop the job without a result.
        """
        self.submit_work_result(job.workflow_execution_id, job.step_id, output, job.run_id)

    def ack_many(self, acks: Sequence[tuple[DispatchJob, dict[str, Any]]]) -> None:
        """``ack`` for several jobs, ``(job, output)`` each; a runner may send them
        together (SQL: one statement for all). By default, one ``ack`` each."""
        for job, output in acks:
            self.ack(job, output)

    def release(self, job: DispatchJob) -> None:
        """Give a taken job back to the queue without a result."""

    def watch_jobs(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` when jobs may have become claimable, until the returned
        function is called.

        ``wake`` may be called from any thread, must return quickly and never
        raise (setting a ``threading.Event`` is the intended use). A hint only:
        a caller must still poll for jobs whose lease ran out or that were
        dispatched where the runner cannot see. The default never calls it.
        """
        return _unwatch

    def cancel(self, workflow_execution_id: str) -> None:
        """Drop jobs of a cancelled execution that no worker has taken yet."""

    def close(self) -> None:
        """Release connections; the runner may not be used afterwards."""

    def job_states(self, workflow_execution_id: str) -> dict[str, JobState]:
        """Job key -> ``JobState`` for the jobs of one execution the runner knows.

        The default knows nothing (``{}``): callers then say "unknown"."""
        return {}

    def queue_depth(self) -> int:
        """How many jobs wait for a worker (default: ``len(list_pending_jobs())``)."""
        return len(self.list_pending_jobs())


#: How many acknowledged job keys ``InProcessRunner`` remembers.
_ACKED_KEPT = 100_000


class InProcessRunner(Runner):
    """Jobs and results in memory, for one process. Thread-safe.

    Inputs are copied on dispatch so an executor that mutates its inputs cannot
    reach into the stored record. Concurrency slots are a table of holders per
    key under the same lock as the queue; there are no leases, so a slot is held
    until its job is acked, released or has its result submitted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, DispatchJob] = {}
        self._taken: dict[str, DispatchJob] = {}
        self._done: set[str] = set()  # results submitted and not yet gathered
        self._results: dict[str, list[WorkResult]] = {}
        # Jobs acknowledged lately (insertion-ordered, capped): a stale re-dispatch
        # of one of them adds nothing.
        self._acked: dict[str, None] = {}
        # Concurrency slots: key -> {slot number: holding job key}, and the reverse.
        self._slots: dict[str, dict[int, str]] = {}
        self._slot_of: dict[str, tuple[str, int]] = {}
        self._wakes: dict[int, Callable[[], None]] = {}
        self._next_wake = 0

    def watch_jobs(self, wake: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            number = self._next_wake
            self._next_wake += 1
            self._wakes[number] = wake

        def remove() -> None:
            with self._lock:
                self._wakes.pop(number, None)

        return remove

    def _wake(self) -> None:
        """Tell the watchers that jobs were queued (the lock is not held)."""
        for wake in list(self._wakes.values()):
            try:
                wake()
            except Exception:  # a watcher's bug must not stop a dispatch
                logger.debug("a job wake-up callback failed", exc_info=True)

    def dispatch(self, workflow_execution_id: str, jobs: Sequence[DispatchJob]) -> None:
        self.dispatch_and_take(workflow_execution_id, jobs, 0, 0.0)

    def dispatch_and_take(self, workflow_execution_id: str, jobs: Sequence[DispatchJob],
                          limit: int, lease: float) -> list[DispatchJob]:
        taken: list[DispatchJob] = []
        queued = False
        with self._lock:
            for job in jobs:
                key = job.key
                if (key in self._pending or key in self._taken or key in self._done
                        or key in self._acked):
                    continue
                job = replace(job, inputs=json_copy(job.inputs), delivery=1)
                if len(taken) < limit and job.concurrency_key is None:
                    self._taken[key] = job
                    taken.append(job)
                else:
                    self._pending[key] = job
                    queued = True
        if queued and self._wakes:
            self._wake()
        return taken

    def list_pending_jobs(self) -> list[DispatchJob]:
        with self._lock:
            return list(self._pending.values())

    def take_pending_jobs(
        self, limit: int | None = None, lease: float | None = None
    ) -> list[DispatchJob]:
        with self._lock:
            taken: list[DispatchJob] = []
            for key, job in list(self._pending.items()):
                if limit is not None and len(taken) >= limit:
                    break
                if job.concurrency_key is not None and not self._take_slot(job):
                    continue  # its key is full: it stays queued
                del self._pending[key]
                self._taken[key] = job
                taken.append(job)
            return taken

    def _take_slot(self, job: DispatchJob) -> bool:
        """Give ``job`` a free slot of its key (the lock is held)."""
        assert job.concurrency_key is not None
        held = self._slots.setdefault(job.concurrency_key, {})
        free = next((n for n in range(job.concurrency_limit or 1) if n not in held), None)
        if free is None:
            return False
        held[free] = job.key
        self._slot_of[job.key] = (job.concurrency_key, free)
        return True

    def _free_slot(self, key: str) -> None:
        """Free the slot job ``key`` holds, if any (the lock is held)."""
        slot = self._slot_of.pop(key, None)
        if slot is not None:
            held = self._slots[slot[0]]
            held.pop(slot[1], None)
            if not held:
                del self._slots[slot[0]]

    def ack(self, job: DispatchJob, output: dict[str, Any]) -> None:
        with self._lock:
            self._taken.pop(job.key, None)
            self._pending.pop(job.key, None)
            self._free_slot(job.key)
            self._acked[job.key] = None
            if len(self._acked) > _ACKED_KEPT:
                del self._acked[next(iter(self._acked))]

    def release(self, job: DispatchJob) -> None:
        with self._lock:
            held = self._taken.pop(job.key, None)
            if held is not None:
                self._free_slot(job.key)
                self._pending[job.key] = held
        if held is not None and self._wakes:
            self._wake()

    def submit_work_result(
        self,
        workflow_execution_id: str,
        step_id: str,
        output: dict[str, Any],
        run_id: int | None = None,
    ) -> bool:
        with self._lock:
            if run_id is None:
                prefix = f"{workflow_execution_id}#{step_id}#"
                held = [k for k in self._taken if k.startswith(prefix)]
                key = held[0] if held else None
            else:
                key = job_key(workflow_execution_id, step_id, run_id)
            if key is not None:
                if key in self._done:
                    return False
                self._taken.pop(key, None)
                self._pending.pop(key, None)
                self._free_slot(key)
                self._done.add(key)
            self._results.setdefault(workflow_execution_id, []).append(
                WorkResult(step_id, output, run_id))
            return True

    def gather(self, workflow_execution_id: str) -> list[WorkResult]:
        with self._lock:
            results = self._results.pop(workflow_execution_id, [])
            prefix = f"{workflow_execution_id}#"
            for result in results:
                if result.run_id is not None:
                    self._done.discard(f"{prefix}{result.step_id}#{result.run_id}")
            return results

    def cancel(self, workflow_execution_id: str) -> None:
        prefix = f"{workflow_execution_id}#"
        with self._lock:
            for key in [k for k in self._pending if k.startswith(prefix)]:
                del self._pending[key]

    def job_states(self, workflow_execution_id: str) -> dict[str, JobState]:
        prefix = f"{workflow_execution_id}#"
        with self._lock:
            found = {k: JobState(QUEUED, j.delivery - 1) for k, j in self._pending.items()
                     if k.startswith(prefix)}
            found.update((k, JobState(RUNNING, j.delivery)) for k, j in self._taken.items()
                         if k.startswith(prefix))
            found.update((k, JobState(DONE)) for k in self._done if k.startswith(prefix))
            return found

    def queue_depth(self) -> int:
        with self._lock:
            return len(self._pending)

