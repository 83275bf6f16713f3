"""The worker harness: claim jobs, run the executor, submit results, drive workflows.

``Worker`` works with any Runner (in-process, SQL, SQS). It is what ``runfox
worker`` runs and what a container or systemd unit deploys:

- Jobs are taken with a lease (the job's ``timeout`` when it has one, else
  ``lease``). While a job runs, a heartbeat thread extends its lease, so a live
  worker keeps its jobs and a dead one's jobs return to the queue.
- The executor runs on a pool of ``concurrency`` threads, or processes with
  ``processes=True`` (for CPU-bound executors; the executor must then be
  importable, given as ``"module:attr"``).
- The worker *drives*: it applies each result to the record and advances the
  workflow in one transition, dispatches the new jobs, then acknowledges the job
  (``Runner.ack``), so the result never makes a round trip through the queue. If
  the transition fails, the result is submitted to the runner instead, for a
  later gather. A workflow started elsewhere therefore reaches its end with only
  workers running. Every ``sweep_interval`` seconds it also advances running
  executions, which starts retries whose backoff has passed and re-dispatches
  steps whose jobs were lost between claim and dispatch.
- ``stop()`` stops claiming and lets running jobs finish; ``stop(release=True)``
  gives held jobs back at once. Call it from another thread, not from a signal
  handler running in the thread that runs ``run()`` (``threading.Event`` is not
  reentrant); ``runfox worker`` runs the loop in a thread and stops it from the
  main thread when SIGTERM or SIGINT arrives.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import RunfoxError
from .execution import Executor, error_output, run_job
from .results import DispatchJob
from .status import WorkflowStatus

if TYPE_CHECKING:
    from .backend.base import Backend

__all__ = ["Worker", "WorkerStats", "load_executor"]

logger = logging.getLogger("runfox.worker")

#: Extra seconds a job's lease runs past its timeout, so the harness can report
#: the time-out before the runner hands the job to someone else.
TIMEOUT_GRACE = 5.0


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


# Process pools import the executor once per child process.
_CHILD_EXECUTOR: Executor | None = None


def _child_init(ref: str) -> None:
    global _CHILD_EXECUTOR
    _CHILD_EXECUTOR = load_executor(ref)


def _child_run(job: DispatchJob) -> dict[str, Any]:
    assert _CHILD_EXECUTOR is not None
    return run_job(_CHILD_EXECUTOR, job)


@dataclass
class WorkerStats:
    """What a worker did: jobs run, failed attempts among them, drive errors."""

    jobs: int = 0
    failed: int = 0
    drive_errors: int = 0
    executed: list[str] = field(default_factory=list, repr=False)


class Worker:
    """Claims and runs jobs from ``backend.runner``; see the module docstring.

    Args:
        backend: the Backend whose runner and store the worker serves.
        executor: the ``(fn, inputs) -> dict`` callable, or ``"module:attr"``.
        concurrency: how many jobs run at once.
        processes: run jobs in a process pool instead of threads (``executor``
            must then be a ``"module:attr"`` string).
        lease: seconds a job is held without a heartbeat, for jobs with no timeout.
        poll_interval: seconds between claims when the queue is empty.
        drive: apply results and advance workflows after each job.
        sweep_interval: seconds between sweeps of running executions (``drive`` only).
        stale_after: seconds after which an in-progress step with no queued job is
            dispatched again by the sweep.
    """

    def __init__(
        self,
        backend: Backend,
        executor: Executor | str,
        *,
        concurrency: int = 1,
        processes: bool = False,
        lease: float = 60.0,
        poll_interval: float = 0.2,
        drive: bool = True,
        sweep_interval: float = 5.0,
        stale_after: float | None = None,
        name: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if lease <= 0:
            raise ValueError("lease must be > 0")
        if processes and not isinstance(executor, str):
            raise ValueError("processes=True needs the executor as a 'module:attr' string")
        self.backend = backend
        self.executor_ref = executor if isinstance(executor, str) else None
        self.executor: Executor = load_executor(executor) if isinstance(executor, str) \
            else executor
        self.concurrency = concurrency
        self.processes = processes
        self.lease = lease
        self.poll_interval = poll_interval
        self.drive = drive
        self.sweep_interval = sweep_interval
        self.stale_after = stale_after if stale_after is not None else max(2 * lease, 30.0)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._release = threading.Event()
        self._closed = threading.Event()
        self._held: dict[str, DispatchJob] = {}
        self._held_lock = threading.Lock()

    # -- control --------------------------------------------------------------

    def stop(self, release: bool = False) -> None:
        """Stop claiming. Running jobs finish, unless ``release`` gives them back now.

        Thread-safe, but not safe inside a signal handler that interrupted ``run``
        in the same thread; see the module docstring.
        """
        self._stop.set()
        if release:
            self._release.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def lease_for(self, job: DispatchJob) -> float:
        return job.timeout + TIMEOUT_GRACE if job.timeout else self.lease

    # -- claiming ---------------------------------------------------------------

    def claims(self, limit: int = 1, idle_timeout: float | None = None
               ) -> Iterator[DispatchJob | None]:
        """Yield claimed jobs as they come; ``None`` after ``idle_timeout`` idle seconds.

        Stops when ``stop()`` is called. Each yielded job is held (and heartbeated
        by ``run``) until its result is submitted.
        """
        idle_since = time.monotonic()
        while not self._stop.is_set():
            jobs = self.backend.runner.take_pending_jobs(limit=limit, lease=self.lease)
            if jobs:
                idle_since = time.monotonic()
                for job in jobs:
                    self._hold(job)
                    yield job
                continue
            if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                idle_since = time.monotonic()
                yield None
            self._stop.wait(self.poll_interval)

    def _hold(self, job: DispatchJob) -> None:
        with self._held_lock:
            self._held[job.key] = job
        if job.timeout and self.lease_for(job) > self.lease:
            self.backend.runner.heartbeat(job, self.lease_for(job))

    def _unhold(self, job: DispatchJob) -> None:
        with self._held_lock:
            self._held.pop(job.key, None)

    def _heartbeats(self) -> None:
        while True:
            with self._held_lock:
                held = list(self._held.values())
            interval = max(0.1, min([self.lease_for(j) for j in held] or [self.lease]) / 3)
            if self._closed.wait(interval):
                return
            for job in held:
                with self._held_lock:
                    if job.key not in self._held:
                        continue
                try:
                    if not self.backend.runner.heartbeat(job, self.lease_for(job)):
                        logger.warning("lost the lease on %s", job.key)
                except Exception:
                    logger.exception("heartbeat failed for %s", job.key)

    # -- running ------------------------------------------------------------------

    def _pool(self) -> cf.Executor:
        if self.processes:
            assert self.executor_ref is not None
            return cf.ProcessPoolExecutor(self.concurrency, initializer=_child_init,
                                          initargs=(self.executor_ref,))
        return cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="runfox-worker")

    def _submit(self, pool: cf.Executor, job: DispatchJob) -> cf.Future[dict[str, Any]]:
        if self.processes:
            return pool.submit(_child_run, job)
        return pool.submit(run_job, self.executor, job)

    def _finish(self, job: DispatchJob, future: cf.Future[dict[str, Any]]) -> None:
        try:
            output = future.result()
        except Exception as exc:  # a broken process pool, not the executor
            output = error_output(type(exc).__name__, f"worker pool failed: {exc}")
        self.stats.jobs += 1
        self.stats.executed.append(job.key)
        if output.get("ok") is False:
            self.stats.failed += 1
        try:
            if self.drive and self._apply(job, output):
                self._acknowledge(job, output)
            else:
                self._submit_result(job, output)
        finally:
            self._unhold(job)

    def _apply(self, job: DispatchJob, output: dict[str, Any]) -> bool:
        """Apply one result and advance, in one transition; ``False`` if that failed."""
        try:
            self.backend.apply_and_advance(job.workflow_execution_id,
                                           [(job.step_id, output, job.run_id)])
            return True
        except Exception as exc:
            self.stats.drive_errors += 1
            logger.warning("could not apply the result of %s (%s); submitting it instead",
                           job.key, exc)
            return False

    def _acknowledge(self, job: DispatchJob, output: dict[str, Any]) -> None:
        try:
            self.backend.runner.ack(job, output)
        except Exception:
            # The result is applied; if the job comes back after its lease, running
            # it again is harmless: the graph ignores the second result.
            logger.exception("could not acknowledge %s", job.key)

    def _submit_result(self, job: DispatchJob, output: dict[str, Any]) -> None:
        try:
            self.backend.runner.submit_work_result(job.workflow_execution_id, job.step_id,
                                                   output, job.run_id)
        except Exception:
            # The lease will expire and the job will run again; the worker lives on.
            logger.exception("could not submit the result of %s", job.key)
            self.stats.drive_errors += 1

    def drive_execution(self, workflow_execution_id: str) -> None:
        """Apply the execution's gathered results and advance it, in one transition."""
        try:
            results = self.backend.gather(workflow_execution_id)
            self.backend.apply_and_advance(workflow_execution_id, results)
        except RunfoxError as exc:
            self.stats.drive_errors += 1
            logger.warning("could not advance %s: %s", workflow_execution_id, exc)
        except Exception:
            self.stats.drive_errors += 1
            logger.exception("could not advance %s", workflow_execution_id)

    def sweep(self) -> int:
        """Advance every running execution once; return how many were looked at."""
        store = self.backend.store
        seen = 0
        for status in (WorkflowStatus.PENDING, WorkflowStatus.IN_PROGRESS):
            for summary in store.list_executions(status=status, limit=10_000):
                seen += 1
                self.drive_execution(summary.workflow_execution_id)
                try:
                    self.backend.redispatch_stale(summary.workflow_execution_id,
                                                  self.stale_after)
                except Exception:
                    logger.exception("re-dispatch failed for %s",
                                     summary.workflow_execution_id)
        return seen

    def run(self, *, idle_timeout: float | None = None, max_jobs: int | None = None
            ) -> WorkerStats:
        """Work until ``stop()``, ``idle_timeout`` idle seconds, or ``max_jobs`` jobs.

        Returns the stats. Exceptions from the executor never escape; errors from
        the store or runner while claiming do.
        """
        pool = self._pool()
        heart = threading.Thread(target=self._heartbeats, name="runfox-heartbeat", daemon=True)
        heart.start()
        running: dict[cf.Future[dict[str, Any]], DispatchJob] = {}
        last_sweep = 0.0
        idle_since = time.monotonic()
        claimed = 0
        try:
            while True:
                if self.drive and time.monotonic() - last_sweep >= self.sweep_interval:
                    last_sweep = time.monotonic()
                    self.sweep()
                free = self.concurrency - len(running)
                if max_jobs is not None:
                    free = min(free, max_jobs - claimed)
                jobs: list[DispatchJob] = []
                if free > 0 and not self._stop.is_set():
                    jobs = self.backend.runner.take_pending_jobs(limit=free, lease=self.lease)
                for job in jobs:
                    self._hold(job)
                    running[self._submit(pool, job)] = job
                claimed += len(jobs)
                if running:
                    idle_since = time.monotonic()
                    done, _ = cf.wait(list(running), timeout=0 if jobs else self.poll_interval,
                                      return_when=cf.FIRST_COMPLETED)
                    for future in done:
                        self._finish(running.pop(future), future)
                    if self._release.is_set():
                        break
                    continue
                if self._stop.is_set() or (max_jobs is not None and claimed >= max_jobs):
                    break
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    break
                if not jobs:
                    self._stop.wait(self.poll_interval)
        finally:
            self._stop.set()
            for future, job in running.items():
                if not future.done():
                    self.backend.runner.release(job)
                    self._unhold(job)
            pool.shutdown(wait=not self._release.is_set(), cancel_futures=True)
            self._closed.set()
            heart.join(timeout=1.0)
        return self.stats
