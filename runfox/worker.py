"""The worker harness: claim jobs, run the executor, submit results, drive workflows.

``Worker`` works with any Runner (in-process, SQL, SQS). It is what ``runfox
worker`` runs and what a container or systemd unit deploys:

- Jobs are taken with a lease of ``lease`` seconds (15 by default); a job whose
  step has a ``timeout`` holds the shorter of ``lease`` and ``timeout + 5``. A
  heartbeat thread renews the leases of held jobs every third of their lease,
  so a live worker keeps its jobs and a dead one's jobs return to the queue
  within about one lease.
- A job handed out again after its lease ran out (``DispatchJob.delivery > 1``)
  is not run: the worker reports the attempt as ``WorkerLost`` (the graph retries
  it under its poison-job cap, see ``runfox.graph.WORKER_LOST_CAP``).
- The executor runs on a pool of ``concurrency`` threads, or of process slots
  with ``processes=True`` (``runfox.pool``: a dead child fails only its job and
  is replaced; a timed-out job's process is killed). The executor must then be
  importable, given as ``"module:attr"``.
- The worker *drives*: it applies each result to the record and advances the
  workflow in one transition, dispatches the new jobs, then acknowledges the job
  (``Runner.ack``), so the result never makes a round trip through the queue.
  With a free slot it keeps the next job it dispatched (``Runner.dispatch_and_take``:
  on SQL the row is inserted already claimed, in the same commit), so a chain
  moves one commit per step; the other jobs are queued for any worker.
  Results that wait together (a worker with ``concurrency`` > 1 whose jobs
  finished while it recorded others) are recorded together where the store and
  the runner share a unit of work (SQL on one database): one commit for all of
  their records, dispatches and acknowledgements and the claim of the next jobs
  (``Backend.apply_and_take_many``); what cannot go that way (a record another
  worker changed meanwhile ...) is recorded per execution, then one at a time. If
  the transition fails, the result is submitted to the runner instead, for a
  later gather. A workflow started elsewhere therefore reaches its end with only
  workers running. Every ``sweep_interval`` seconds (and when a retry it knows
  of falls due) it also advances running executions, which starts retries whose
  backoff has passed and re-dispatches steps whose jobs were lost between claim
  and dispatch.
- Start jobs (``Backend.submit``) are not run: the worker creates their
  executions, all the start jobs of one claim in one unit of work
  (``Backend.start_submitted``), and the first jobs of those executions take the
  slots the start jobs were claimed for.
- Outages: an error from the store or runner (connection lost, server restart,
  locked, full or read-only database) never ends ``run``. It is logged once per
  outage (WARNING, then INFO with the duration when the backend answers again)
  and every call is retried with capped exponential backoff (0.2 s doubling to
  30 s, jittered). Results computed meanwhile are kept and applied (or
  submitted) once the backend is back; results are keyed by run, so a late one
  is never applied twice.
- ``runfox.context().cancelled``: each heartbeat round also loads the record of
  every execution it renewed a job for (``Store.load_shared``: one query per
  held execution per round; on SQL a header read when nothing changed) and sets
  the flag of each job whose execution has ended (cancelled, halted, failed,
  complete) or whose step is no longer in progress with the job's run. So the
  flag flips within a third of the job's lease. (``Runner.cancel`` only drops
  queued jobs, and a heartbeat still succeeds for a job of a cancelled
  execution, so the record is the one signal every backend gives.) A step's
  ``ctx.heartbeat()`` (thread and async steps) makes its job due at once and
  wakes the heartbeat thread, without blocking the step on the backend.
- Async steps (``runfox.execution.is_async``) run as coroutines on one event
  loop thread, up to ``concurrency`` at once together with sync ones
  (``runfox.pool.ThreadSlots``); in process slots each job's process runs its
  coroutine on its own loop.
- Live workers: a worker registers itself in the store's ``WorkerRegistry``
  (``Store.workers()``; id ``host:pid-<6 hex>``, host, pid, executor,
  concurrency, lease) when ``run`` starts, rewrites its row from the heartbeat
  thread every ``heartbeat_interval`` (a third of the lease) with the jobs it
  holds and when it claimed each, and removes it when ``run`` ends. ``runfox
  workers`` lists the rows and calls a worker dead once its row is older than two
  intervals. A store without a registry, or a failed registry call, never stops
  the worker (logged at DEBUG; the next beat registers again).
- One INFO line per job: execution, step, attempt, duration and outcome (``ok``
  or the error type; ``lost`` for a re-delivered job reported as
  ``WorkerLost``). ``metrics`` (``runfox.metrics.WorkerMetrics``) counts the same.
- ``stop()`` stops claiming and lets running jobs finish; ``stop(release=True)``
  gives held jobs back at once. Call it from another thread, not from a signal
  handler running in the thread that runs ``run()`` (``threading.Event`` is not
  reentrant); ``runfox worker`` runs the loop in a thread and stops it from the
  main thread when SIGTERM or SIGINT arrives.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import tracing
from .backend.base import split_starts
from .backend.store import Store
from .backend.workers import WorkerInfo
from .errors import BackendError, CorruptRecord, WorkflowNotFound
from .execution import Executor, error_output, load_executor, serve_control
from .pool import ProcessSlots, Slots, ThreadSlots
from .results import DispatchJob, Ignored, Pending, Result
from .schedules import Schedules
from .status import StepStatus

if TYPE_CHECKING:
    from .backend.base import Backend
    from .backend.workers import WorkerRegistry
    from .metrics import WorkerMetrics

__all__ = ["DEFAULT_LEASE", "Worker", "WorkerStats", "load_executor"]

logger = logging.getLogger("runfox.worker")

#: Seconds a claimed job is held between heartbeats, by default.
DEFAULT_LEASE = 15.0
#: Extra seconds a job's lease runs past its timeout, so the harness can report
#: the time-out before the runner hands the job to someone else.
TIMEOUT_GRACE = 5.0
#: Backoff between calls while the backend is unavailable: first and longest wait.
OUTAGE_FIRST_DELAY = 0.2
OUTAGE_MAX_DELAY = 30.0
#: Idle polling: the wait after a claim that found nothing starts here and
#: doubles with each further empty claim, up to ``Worker.poll_interval``; a
#: claim that finds work starts it again.
POLL_FIRST = 0.005
#: The longest idle wait between claims while the runner's wake-up hears other
#: processes' dispatches (PostgreSQL ``LISTEN``, the SQLite watcher), if
#: ``Worker.poll_interval`` is shorter: the poll then only finds jobs whose
#: lease ran out (a dead worker's). Not longer than the default poll: each
#: second more here is a second more before a killed worker's job runs again
#: (5 s, tried first, took bench_recovery's 15.1 s to 16.7 s at 2 s).
HEARD_POLL = 1.0
#: A sweep or regular schedule look due within this many seconds (at most a
#: quarter of its interval) is made in the round that runs now, so the loop does
#: not wake again a moment later for it.
ALIGN = 0.1
#: The shortest time between two looks for due schedules (or ``schedule_interval``
#: if shorter), however soon the next known fire falls due.
SCHEDULE_GAP = 1.0
#: While some slots run jobs and others are free, the loop looks for wake-ups
#: this often (a finished job ends the wait at once anyway).
WAKE_CHECK = 0.05
#: Failed deliveries after which a result that the backend keeps refusing, while
#: it accepts other calls, is dropped (its lease runs out; it comes back lost).
MAX_DELIVERY_FAILURES = 8


@dataclass
class WorkerStats:
    """What a worker did: jobs run, failed attempts among them, drive errors, jobs
    reported lost (re-delivered after a lease ran out), backend outages ridden out,
    start jobs (``Backend.submit``) done (their executions created, or found created)."""

    jobs: int = 0
    failed: int = 0
    drive_errors: int = 0
    lost: int = 0
    outages: int = 0
    started: int = 0
    executed: list[str] = field(default_factory=list, repr=False)



#: The most executions one sweep looks at (``Store.due``'s limit).
SWEEP_LIMIT = 10_000


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, BackendError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failure(exc: BaseException, what: str) -> str:
    """What failed: a ``BackendError`` names it already; anything else gets ``what``."""
    if isinstance(exc, BackendError) and str(exc).strip():
        return _reason(exc)
    return f"could not {what}: {_reason(exc)}"


#: Packages whose exceptions, if one escapes untranslated, mean the backend failed.
_DRIVERS = frozenset({"sqlite3", "sqlalchemy", "psycopg", "psycopg2", "pymysql", "MySQLdb",
                      "botocore", "boto3", "urllib3"})


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the backend cannot be used now (try again later), rather
    than that one execution cannot be advanced (a record that cannot be decoded, a
    transition that keeps conflicting, a result too large for its store)."""
    if isinstance(exc, CorruptRecord):
        return False
    return isinstance(exc, BackendError | OSError) or \
        type(exc).__module__.split(".")[0] in _DRIVERS


def _error_type(output: dict[str, Any]) -> str:
    """The error type of a failed output in either shape (``error_type``, or
    ``error: {"type": ...}``); ``Error`` when it names none."""
    error = output.get("error")
    if isinstance(error, dict) and isinstance(error.get("type"), str):
        return str(error["type"])
    return "Error"


def _retry_time(result: Result) -> float | None:
    return result.retry_at if isinstance(result, Pending) else None


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class _Outage:
    """The backend's availability as the worker saw it: one WARNING when an outage
    starts, one INFO when it ends, and the backoff between calls meanwhile.
    Shared by the loop and the heartbeat thread."""

    def __init__(self, stats: WorkerStats) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0
        self._stats = stats

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, what: str, backoff: bool = True) -> float:
        """Note a failed call; return the jittered seconds to wait before the next one.

        ``backoff=False`` (heartbeats, which keep their own pace) does not lengthen
        the wait of the loop.
        """
        with self._lock:
            if backoff:
                self._failures += 1
            if self._since is None:
                self._since = time.monotonic()
                self._stats.outages += 1
                logger.warning("backend unavailable (%s); retrying with backoff until it "
                               "answers", _failure(exc, what))
            else:
                logger.debug("backend still unavailable (%s)", _failure(exc, what))
            delay = min(OUTAGE_MAX_DELAY,
                        OUTAGE_FIRST_DELAY * 2.0 ** min(max(self._failures - 1, 0), 16))
        return random.uniform(delay / 2, delay)

    def recovered(self) -> None:
        """Every call of a round succeeded: end the outage, if there was one."""
        with self._lock:
            since, self._since, self._failures = self._since, None, 0
        if since is not None:
            logger.info("backend reachable again after %.1fs", time.monotonic() - since)


def _nothing() -> None:
    """The undo of a watch that never started."""


APPLY, ACK, SUBMIT = "apply", "ack", "submit"


@dataclass
class _Result:
    """A result on its way to the record: applied (then acknowledged) or submitted.

    ``job`` is the job it answers, still held; ``None`` for a result gathered from
    the runner by a sweep. ``refused`` counts rounds in which the backend took
    other calls but not this one. ``interrupted``: an attempt to apply it failed
    part-way, perhaps after the record was written but before the next jobs were
    dispatched.
    """

    workflow_execution_id: str
    step_id: str
    output: dict[str, Any]
    run_id: int | None
    job: DispatchJob | None
    stage: str = APPLY
    refused: int = 0
    interrupted: bool = False
    #: What the worker measured, for the history: ``started_at`` (epoch),
    #: ``duration`` (seconds in the executor) and ``worker``.
    timing: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.job.key if self.job is not None else \
            f"{self.workflow_execution_id}#{self.step_id}#{self.run_id}"


def _result_tuple(item: _Result) -> tuple[Any, ...]:
    """``item`` as ``Backend.apply_and_advance`` takes a result (with its timing)."""
    result: tuple[Any, ...] = (item.step_id, item.output, item.run_id)
    return result if item.timing is None else (*result, item.timing)


class Worker:
    """Claims and runs jobs from ``backend.runner``; see the module docstring.

    Args:
        backend: the Backend whose runner and store the worker serves.
        executor: the ``(fn, inputs) -> dict`` callable, or ``"module:attr"``.
        concurrency: how many jobs run at once.
        processes: run jobs in process slots instead of threads (``executor``
            must then be a ``"module:attr"`` string).
        lease: seconds a job is held without a heartbeat (a step with a
            ``timeout`` holds ``min(lease, timeout + 5)``); heartbeats come every
            third of it.
        poll_interval: the longest wait, in seconds, between claims while the queue
            stays empty. Waits start at ``POLL_FIRST`` (5 ms) after a claim that
            found nothing and double up to this; a runner's wake-up
            (``Runner.watch_jobs``: a dispatch in this process, or on PostgreSQL
            and SQLite files in any) ends a wait at once. While the runner hears
            other processes that way, waits double up to ``HEARD_POLL`` (1 s)
            if this is shorter: the poll then only finds jobs whose lease ran out.
        drive: apply results and advance workflows after each job.
        sweep_interval: seconds between sweeps of running executions (``drive`` only).
        stale_after: seconds after which an in-progress step with no queued job is
            dispatched again by the sweep.
        name: how the worker names itself in logs (default ``host:pid``).
        schedule_interval: the longest time, in seconds, between looks for due
            schedules (``runfox.schedules``): so a schedule added or changed by
            another process fires at most this late. Each look (one indexed query)
            is followed by one more that reads when the first schedule falls due
            before the next look, and the worker looks again then (no sooner than
            ``SCHEDULE_GAP`` after the last look). ``None`` fires no
            schedules. Only with ``drive``.
        register: keep a row in the store's worker registry while ``run`` runs.
        metrics: counters to update per job (``runfox.metrics.WorkerMetrics``).
    """

    def __init__(
        self,
        backend: Backend,
        executor: Executor | str,
        *,
        concurrency: int = 1,
        processes: bool = False,
        lease: float = DEFAULT_LEASE,
        poll_interval: float = 1.0,
        drive: bool = True,
        sweep_interval: float = 5.0,
        stale_after: float | None = None,
        name: str | None = None,
        schedule_interval: float | None = 5.0,
        register: bool = True,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if lease <= 0:
            raise ValueError("lease must be > 0")
        if processes and not isinstance(executor, str):
            raise ValueError("processes=True needs the executor as a 'module:attr' string")
        self.backend = backend
        serve_control(backend)  # wake-ups and results an SQS runner receives
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
        #: The worker's id in the registry: its name and a random suffix.
        self.id = f"{self.name}-{secrets.token_hex(3)}"
        #: Seconds between heartbeats of the worker's registry row.
        self.heartbeat_interval = lease / 3
        self.register = register
        self.metrics = metrics
        self.started_at = time.time()
        self._registry: WorkerRegistry | None = None
        self._registered = False
        self._registry_live = False  # between the start and the end of ``run``
        self._next_registry_beat = 0.0  # monotonic
        # Held jobs: when each was claimed (epoch, for the registry) and started
        # (monotonic, for the per-job log line).
        self._claimed_at: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self.stats = WorkerStats()
        self._stop = threading.Event()
        # Ends an idle wait: stop(), or the runner saying jobs were queued.
        self._alarm = threading.Event()
        self._poll_wait = POLL_FIRST  # the next idle wait (see POLL_FIRST)
        self._release = threading.Event()
        self._closed = threading.Event()
        self._outage = _Outage(self.stats)
        self._backoff_until = 0.0  # monotonic; no backend call before it
        # Held jobs (claimed, result not yet recorded), when each was last
        # heartbeated, those whose lease another claim took, and those being
        # acknowledged or submitted (a failing heartbeat there is expected).
        self._held: dict[str, DispatchJob] = {}
        self._beats: dict[str, float] = {}
        self._lost: set[str] = set()
        self._settling: set[str] = set()
        self._held_lock = threading.Lock()
        self._results: list[_Result] = []
        # While a round records results: free slots the next jobs those results
        # dispatch may be taken into at once, and the jobs so taken (``_apply``).
        self._room = 0
        self._taken: list[DispatchJob] = []
        self._retry_at: float | None = None
        self._joint_known: bool | None = None
        # Executions whose advance failed part-way: their claimed steps may lack jobs.
        self._interrupted: set[str] = set()
        self.schedule_interval = schedule_interval if drive else None
        self._schedules: Schedules | None = None
        self._last_tick = -float("inf")
        # The pool of the running loop (the heartbeat thread sets cancelled flags
        # through it), the jobs flagged so far, and the heartbeat thread's wake-up.
        self._active: Slots | None = None
        self._flagged: set[str] = set()
        self._wake = threading.Event()
        # The heartbeat thread sleeps until the next registry beat because it
        # held no job; ``_hold`` then wakes it (under ``_held_lock``).
        self._heart_resting = False
        # The earliest due time (backend clock) of the schedules the last look
        # saw; ``None``: none (or not looked yet).
        self._next_fire: float | None = None
        # Whether other processes' dispatches wake this worker now (the runner's
        # watch says so); ``None`` while not watching.
        self._hearing: Callable[[], bool] | None = None

    # -- control --------------------------------------------------------------

    def stop(self, release: bool = False) -> None:
        """Stop claiming. Running jobs finish, unless ``release`` gives them back now.

        Thread-safe, but not safe inside a signal handler that interrupted ``run``
        in the same thread; see the module docstring.
        """
        self._stop.set()
        if release:
            self._release.set()
        self._alarm.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def retry_at(self) -> float | None:
        """The earliest retry (epoch seconds) this worker knows is waiting, or ``None``."""
        return self._retry_at

    def lease_for(self, job: DispatchJob) -> float:
        """The lease ``job`` is held with: ``min(lease, timeout + 5)``, or ``lease``."""
        return min(self.lease, job.timeout + TIMEOUT_GRACE) if job.timeout else self.lease

    # -- claiming ---------------------------------------------------------------

    def claims(self, limit: int = 1, idle_timeout: float | None = None
               ) -> Iterator[DispatchJob | None]:
        """Yield claimed jobs as they come; ``None`` after ``idle_timeout`` idle seconds.

        Stops when ``stop()`` is called. Each yielded job is held (and heartbeated
        by ``run``) until its result is submitted. Outages are ridden out as in
        ``run``. A job with ``delivery > 1`` is yielded as it is; the caller decides.
        """
        idle_since = time.monotonic()
        unwatch = self._watch_jobs()
        try:
            while not self._stop.is_set():
                wait = self._backoff_until - time.monotonic()
                if wait > 0:
                    self._stop.wait(min(wait, max(self.poll_interval, 0.05)))
                    idle_since = time.monotonic()
                    continue
                self._alarm.clear()
                jobs, ok = self._claim(limit)
                if ok:
                    self._outage.recovered()
                self._polled(bool(jobs))
                if jobs:
                    idle_since = time.monotonic()
                    yield from jobs
                    continue
                idle_for = time.monotonic() - idle_since
                if idle_timeout is not None and idle_for >= idle_timeout:
                    idle_since = time.monotonic()
                    yield None
                    continue
                wait = min(self._poll_wait, self._poll_ceiling())
                if idle_timeout is not None:
                    wait = min(wait, idle_timeout - idle_for)
                if not self._stop.is_set():
                    self._alarm.wait(wait)
        finally:
            unwatch()

    def _watch_jobs(self) -> Callable[[], None]:
        """Ask the runner to end idle waits when jobs are queued; returns the undo.

        An undo with a ``listening`` attribute (``runfox.backend.sql.listen.Watch``)
        says whether other processes' dispatches are heard now: while they are,
        idle claims back off up to ``HEARD_POLL`` instead of ``poll_interval``."""
        try:
            undo = self.backend.runner.watch_jobs(self._alarm.set)
        except Exception as exc:  # only a hint: polling still finds every job
            logger.debug("the runner cannot wake this worker (%s); polling only", _reason(exc))
            return _nothing
        if hasattr(undo, "listening"):
            self._hearing = lambda: bool(undo.listening)

        def unwatch() -> None:
            self._hearing = None
            undo()

        return unwatch

    def _poll_ceiling(self) -> float:
        """The longest idle wait between claims (see ``HEARD_POLL``)."""
        hearing = self._hearing
        if hearing is not None and hearing():
            return max(self.poll_interval, HEARD_POLL)
        return self.poll_interval

    def _polled(self, found: bool) -> None:
        """After a claim: wait briefly again if it found work, else twice as long."""
        self._poll_wait = POLL_FIRST if found else min(self._poll_wait * 2, self._poll_ceiling())

    def _hit(self, exc: BaseException, what: str) -> None:
        """A backend call of the loop failed: log (once per outage) and back off."""
        self._backoff_until = time.monotonic() + self._outage.failed(exc, what)

    def _claim(self, limit: int) -> tuple[list[DispatchJob], bool]:
        """Claim and hold up to ``limit`` jobs; ``False`` if a backend call failed."""
        try:
            jobs = self.backend.runner.take_pending_jobs(limit=limit, lease=self.lease)
        except Exception as exc:
            self._hit(exc, "claim jobs")
            return [], False
        ok = True
        for job in jobs:
            ok = self._hold(job) and ok
        return jobs, ok

    def _hold(self, job: DispatchJob) -> bool:
        """Hold a claimed job: heartbeat it from now on, with its own lease."""
        with self._held_lock:
            self._held[job.key] = job
            self._beats[job.key] = time.monotonic()
            self._claimed_at[job.key] = time.time()
            rouse, self._heart_resting = self._heart_resting, False
        if rouse:
            self._wake.set()
        lease = self.lease_for(job)
        if lease == self.lease:
            return True
        try:  # the claim used the worker's lease; this job's own is shorter
            if not self.backend.runner.heartbeat(job, lease):
                self._lease_lost(job)
        except Exception as exc:
            self._hit(exc, f"set the lease of {job.key}")
            return False
        return True

    def _unhold(self, job: DispatchJob) -> None:
        with self._held_lock:
            self._held.pop(job.key, None)
            self._beats.pop(job.key, None)
            self._claimed_at.pop(job.key, None)
            self._started.pop(job.key, None)
            self._lost.discard(job.key)
            self._settling.discard(job.key)
            self._flagged.discard(job.key)

    def _lease_lost(self, job: DispatchJob) -> None:
        with self._held_lock:
            if job.key not in self._held or job.key in self._settling or job.key in self._lost:
                return
            self._lost.add(job.key)
        logger.warning("lost the lease on %s (it ran out or another worker claimed the job); "
                       "its result will still be offered and is ignored if it is stale",
                       job.key)

    # -- heartbeats -----------------------------------------------------------------

    def _heartbeats(self) -> None:
        """Renew the lease of every held job every third of it, until ``run`` ends.

        Nothing stops this thread but the end of ``run``: a failed heartbeat is an
        outage (logged once) and the next one comes on time.
        """
        while True:
            try:
                wait = self._next_beat()
            except Exception:
                wait = 0.5
            self._wake.wait(wait)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self._beat()
            except Exception:  # never let the thread die; the next round tries again
                logger.exception("heartbeat round failed")
            if time.monotonic() >= self._next_registry_beat:
                self._registry_beat()

    def _next_beat(self) -> float:
        """Seconds until the next lease or registry beat. While jobs are held, at
        most 0.5 s; with none, until the registry beat (``_hold`` wakes the thread
        sooner, so a new job's first beat is on time)."""
        now = time.monotonic()
        with self._held_lock:
            due = [self._beats[k] + self.lease_for(j) / 3 - now
                   for k, j in self._held.items() if k not in self._lost]
            self._heart_resting = not self._held
        registry = self._next_registry_beat - now
        if not due:
            return max(0.01, registry)
        return min(0.5, max(0.01, min(*due, registry)))

    # -- the registry row ------------------------------------------------------------

    def info(self) -> WorkerInfo:
        """This worker's registry row as of now."""
        with self._held_lock:
            jobs = dict(self._claimed_at)
        return WorkerInfo(id=self.id, host=socket.gethostname(), pid=os.getpid(),
                          executor=self.executor_ref or getattr(self.executor, "__qualname__",
                                                                None),
                          concurrency=self.concurrency, started_at=self.started_at,
                          heartbeat_at=time.time(), interval=self.heartbeat_interval,
                          lease=self.lease, jobs=jobs)

    def _open_registry(self) -> WorkerRegistry | None:
        if self._registry is None and self.register:
            try:
                self._registry = self.backend.store.workers()
            except BackendError as exc:
                logger.debug("worker %s not registered: %s", self.id, exc)
                self.register = False
        return self._registry

    def _registry_beat(self) -> None:
        """Register, or rewrite the row's heartbeat and held jobs; never raises."""
        self._next_registry_beat = time.monotonic() + self.heartbeat_interval
        registry = self._open_registry() if self._registry_live else None
        if registry is None:
            return
        try:
            info = self.info()
            if not self._registered or not registry.beat(self.id, info.heartbeat_at, info.jobs):
                registry.register(info)
                self._registered = True
        except Exception as exc:  # the lease heartbeats report outages; this is a view
            logger.debug("worker %s: registry heartbeat failed: %s", self.id, _reason(exc))

    def _deregister(self) -> None:
        self._registry_live = False
        if self._registry is None or not self._registered:
            return
        try:
            self._registry.remove(self.id)
        except Exception as exc:
            logger.debug("worker %s: could not remove its registry row: %s", self.id,
                         _reason(exc))
        self._registered = False

    def _beat(self) -> None:
        now = time.monotonic()
        with self._held_lock:
            due = [j for k, j in self._held.items() if k not in self._lost
                   and self._beats[k] + self.lease_for(j) / 3 <= now]
            for job in due:
                self._beats[job.key] = now
        renewed: list[DispatchJob] = []
        for job in due:
            with self._held_lock:
                if job.key not in self._held:
                    continue
            try:
                kept = self.backend.runner.heartbeat(job, self.lease_for(job))
            except Exception as exc:
                self._outage.failed(exc, f"extend the lease of {job.key}", backoff=False)
                continue
            if not kept:
                self._lease_lost(job)
            else:
                renewed.append(job)
        self._watch(renewed)

    def _watch(self, jobs: list[DispatchJob]) -> None:
        """Set ``runfox.context().cancelled`` for those of ``jobs`` whose execution
        ended or whose step moved on (one record load per execution).

        Only jobs whose lease was just renewed are looked at, and a failed load is
        skipped quietly: the lease is what outages are about, this is a hint.
        """
        slots = self._active
        if slots is None or not jobs:
            return
        by_execution: dict[str, list[DispatchJob]] = {}
        for job in jobs:
            by_execution.setdefault(job.workflow_execution_id, []).append(job)
        for wf_id, held in by_execution.items():
            try:
                record = self.backend.store.load_shared(wf_id)
            except WorkflowNotFound:
                record = None
            except Exception as exc:  # best effort: the next round looks again
                logger.debug("could not check the status of %s: %s", wf_id, _reason(exc))
                continue
            for job in held:
                step = record.steps.get(job.step_id) if record is not None else None
                if record is not None and not record.status.is_terminal \
                        and step is not None and step.status is StepStatus.IN_PROGRESS \
                        and step.run_id == job.run_id:
                    continue
                with self._held_lock:
                    if job.key not in self._held or job.key in self._flagged:
                        continue
                    self._flagged.add(job.key)
                logger.info("%s: the execution %s while the step runs; setting its "
                            "cancelled flag", job.key,
                            f"is {record.status.value}" if record is not None
                            and record.status.is_terminal else "moved on"
                            if record is not None else "is gone")
                slots.cancel(job.key)

    def _step_beat(self, job: DispatchJob) -> None:
        """``ctx.heartbeat()`` of a running step: make its job due and wake the
        heartbeat thread (the step does not wait for the backend)."""
        with self._held_lock:
            if job.key not in self._held:
                return
            self._beats[job.key] = -float("inf")
        self._wake.set()

    # -- results ---------------------------------------------------------------------

    def _launch(self, slots: Slots, job: DispatchJob) -> None:
        """Run a claimed job, or report it lost when its lease ran out before."""
        if job.delivery <= 1:
            with self._held_lock:
                self._started[job.key] = time.monotonic()
            slots.start(job)
            return
        self.stats.lost += 1
        logger.info("job %s step %s attempt %d: lost (delivery %d) in 0.000s",
                    job.workflow_execution_id, job.step_id, job.attempt, job.delivery)
        if self.metrics is not None:
            self.metrics.job_lost(job.fn)
        message = (f"job {job.key} was handed out again (delivery {job.delivery}): the lease "
                   f"ran out on delivery {job.delivery - 1} (the worker holding it died or "
                   "stopped heartbeating)")
        logger.warning("%s; reporting the attempt as WorkerLost instead of running it", message)
        self._queue_result(job, error_output("WorkerLost", message))

    def _finished(self, job: DispatchJob, output: dict[str, Any]) -> None:
        self.stats.jobs += 1
        self.stats.executed.append(job.key)
        failed = output.get("ok") is False
        if failed:
            self.stats.failed += 1
        with self._held_lock:
            started = self._started.pop(job.key, None)
        seconds = time.monotonic() - started if started is not None else 0.0
        error_type = str(output.get("error_type") or _error_type(output)) if failed else None
        logger.info("job %s step %s attempt %d: %s in %.3fs", job.workflow_execution_id,
                    job.step_id, job.attempt, f"error {error_type}" if failed else "ok",
                    seconds)
        if self.metrics is not None:
            self.metrics.job_finished(job.fn, error_type, seconds)
        timing: dict[str, Any] | None = None
        if started is not None:
            began = time.time() - seconds
            timing = {"started_at": began, "duration": round(seconds, 6), "worker": self.id}
            tracing.record_job(job, began, seconds, self.id, error_type)
        self._queue_result(job, output, timing)

    def _queue_result(self, job: DispatchJob, output: dict[str, Any],
                      timing: dict[str, Any] | None = None) -> None:
        self._results.append(_Result(job.workflow_execution_id, job.step_id, output,
                                     job.run_id, job, APPLY if self.drive else SUBMIT,
                                     timing=timing))

    def _settle(self) -> _Result | None:
        """Record the waiting results in order; return the one the backend refused.

        Several results waiting at once (a worker with more than one slot) are
        applied together first, in one unit of work (``_settle_together``)."""
        if len(self._results) > 1 and self.drive and self._joint():
            try:
                self._settle_together()
            except Exception as exc:
                self._hit(exc, f"record {len(self._results)} results")
                return self._results[0]
        while self._results:
            item = self._results[0]
            try:
                self._record(item)
            except Exception as exc:
                self._hit(exc, f"record the result of {item.key}")
                return item
            self._results.pop(0)
            if item.job is not None:
                self._unhold(item.job)
        return None

    def _settle_together(self) -> None:
        """Apply the waiting results of finished jobs in one unit of work: one commit
        for all of them, grouped by execution (``Backend.apply_and_take_many``).

        What it could not apply stays in ``_results`` for ``_record``, one at a
        time. Raises while the backend is unavailable; the results are then
        marked ``interrupted``, as ``_apply`` does.
        """
        batch = [item for item in self._results
                 if item.stage == APPLY and item.job is not None and not item.interrupted]
        if len(batch) < 2:
            return
        groups: dict[str, list[_Result]] = {}
        for item in batch:
            groups.setdefault(item.workflow_execution_id, []).append(item)
            assert item.job is not None
            self._settle_job(item.job)
        args = [(wf_id, [_result_tuple(item) for item in items],
                 [item.job for item in items if item.job is not None])
                for wf_id, items in groups.items()]
        try:
            outcomes, taken = self.backend.apply_and_take_many(
                args, limit=self._room, lease=self.lease, worker=self.id)
        except Exception as exc:
            if not _unavailable(exc):
                logger.warning("could not record %d results together (%s); one at a time",
                               len(batch), _reason(exc))
                return
            for item in batch:
                item.interrupted = True
            raise
        self._took(taken)
        done: set[int] = set()

        def applied(items: list[_Result], nxt: Any) -> None:
            self._note_retry(_retry_time(nxt))
            for item in items:
                done.add(id(item))
                if item.job is not None:
                    self._unhold(item.job)

        left = []
        for (wf_id, items), outcome in zip(groups.items(), outcomes, strict=True):
            if outcome is not None:
                applied(items, outcome[1])
            elif len(items) > 1:
                left.append((wf_id, items))
        try:
            # Several results of one execution that could not go with the others
            # (its record was contended): still one unit for all of them.
            for wf_id, items in left:
                try:
                    _, nxt, taken = self.backend.apply_and_take(
                        wf_id, [_result_tuple(item) for item in items], limit=self._room,
                        lease=self.lease, worker=self.id,
                        ack=[item.job for item in items if item.job is not None])
                except Exception as exc:
                    if _unavailable(exc):
                        for item in items:
                            item.interrupted = True
                        raise
                    continue  # one at a time sorts out which result it was
                self._took(taken)
                applied(items, nxt)
        finally:
            if done:
                self._results = [item for item in self._results if id(item) not in done]

    def _took(self, taken: list[DispatchJob]) -> None:
        """Jobs a unit that recorded results took for this worker's free slots."""
        self._room -= len(taken)
        for job in taken:
            self._hold(job)
        self._taken += taken

    def _record(self, item: _Result) -> None:
        """Take ``item`` one stage further; raises while the backend is unavailable."""
        runner = self.backend.runner
        if item.stage == APPLY:
            if not self._apply(item):
                return
            item.stage = ACK
            if item.job is not None and self._joint():
                self._settle_job(item.job)
                return  # acknowledged with the write, in one transaction
        if item.job is None:
            return
        self._settle_job(item.job)
        if item.stage == ACK:
            runner.ack(item.job, item.output)
        else:
            runner.submit_work_result(item.workflow_execution_id, item.step_id, item.output,
                                      item.run_id)

    def _apply(self, item: _Result) -> bool:
        """Apply ``item`` and advance; ``False`` if it was dealt with otherwise.

        Raises while the backend is unavailable (the item is tried again later).
        A result the record cannot take for another reason is submitted to the
        runner instead (a later gather retries it), or dropped if it came from
        one.
        """
        wf_id = item.workflow_execution_id
        try:
            result = _result_tuple(item)
            ack = item.job if self._joint() else None
            if ack is not None:
                self._settle_job(ack)
            # The jobs this result makes ready (or others waiting) may start here at
            # once, taken in the same unit of work instead of claimed after it; with
            # no room left this is ``apply_and_advance``.
            applied, nxt, taken = self.backend.apply_and_take(
                wf_id, [result], limit=self._room, lease=self.lease, worker=self.id, ack=ack)
            self._took(taken)
        except Exception as exc:
            if _unavailable(exc):
                item.interrupted = True
                raise
            self.stats.drive_errors += 1
            if item.job is None:
                logger.warning("could not apply a gathered result of %s (%s); dropped",
                               item.key, _reason(exc))
                return False
            self._settle_job(item.job)
            self.backend.runner.submit_work_result(wf_id, item.step_id, item.output,
                                                   item.run_id)
            logger.warning("could not apply the result of %s (%s); submitted it instead",
                           item.key, _reason(exc))
            return False
        self._note_retry(_retry_time(nxt))
        if item.interrupted and applied and isinstance(applied[0], Ignored):
            # The interrupted try wrote the record; its dispatch may never have
            # happened. Jobs already queued are not duplicated by this.
            self.backend.redispatch_stale(wf_id, 0.0)
        return True

    def _joint(self) -> bool:
        """The store and runner share a unit of work (``Store.unit_with``): the
        backend acknowledges a job in the transaction that applies its result."""
        if self._joint_known is None:
            backend = self.backend
            self._joint_known = backend.store.unit_with(backend.runner) is not None
        return self._joint_known

    def _settle_job(self, job: DispatchJob) -> None:
        with self._held_lock:
            self._settling.add(job.key)

    def _refused(self, item: _Result) -> None:
        """The backend took a claim but not ``item``: after a few such rounds, drop it."""
        item.refused += 1
        if item.refused < MAX_DELIVERY_FAILURES or not self._results \
                or self._results[0] is not item:
            return
        self._results.pop(0)
        self.stats.drive_errors += 1
        logger.error("giving up on the result of %s: the backend refused it %d times while "
                     "taking other calls; the job comes back when its lease runs out",
                     item.key, item.refused)
        if item.job is not None:
            self._unhold(item.job)

    def _note_retry(self, retry_at: float | None) -> None:
        self._retry_at = _earliest(self._retry_at, retry_at)

    # -- driving -------------------------------------------------------------------

    def _drive(self, workflow_execution_id: str) -> Result:
        results = self.backend.gather(workflow_execution_id)
        try:
            _, nxt = self.backend.apply_and_advance(workflow_execution_id, results)
        except Exception as exc:
            if _unavailable(exc):
                # Gathered results are no longer in the runner: keep them. And the
                # record may have been written without its jobs being dispatched.
                self._results.extend(_Result(workflow_execution_id, r.step_id, r.output,
                                             r.run_id, None, interrupted=True)
                                     for r in results)
                self._interrupted.add(workflow_execution_id)
            raise
        return nxt

    def drive_execution(self, workflow_execution_id: str) -> Result | None:
        """Apply the execution's gathered results and advance it, in one transition.

        Returns what ``advance`` returned (``Pending(retry_at)`` tells when a retry
        falls due), or ``None`` when that failed (logged, counted in
        ``stats.drive_errors``).
        """
        try:
            return self._drive(workflow_execution_id)
        except Exception as exc:
            self.stats.drive_errors += 1
            logger.warning("could not advance %s: %s", workflow_execution_id, _reason(exc))
            return None

    def sweep(self) -> int:
        """Advance the running executions that have work due; return how many were looked at.

        The store names them (``Store.due``: on SQL an index of due times written
        with each record, so the cost follows what is due, not how many
        executions are open; elsewhere every running execution). Each is driven
        (gathered results applied, retries whose backoff passed claimed) and its
        stale claims dispatched again; one where that changed nothing is
        ``postpone``d, so the next sweeps do not look at it again soon.

        Records the earliest retry waiting (``retry_at``). Raises when the
        backend is unavailable (``run`` then backs off); an execution that
        cannot be advanced for another reason is logged and skipped.
        """
        for wf_id in list(self._interrupted):  # an earlier sweep stopped part-way
            self.backend.redispatch_stale(wf_id, 0.0)
            self._interrupted.discard(wf_id)
        store = self.backend.store
        now = self.backend.clock()
        if store.tracks_due and not self._joint():
            # Results may wait in a runner elsewhere, which the store's index
            # does not see: look at every running execution, as stores without one.
            due = Store.due(store, now, SWEEP_LIMIT)
        else:
            due = store.due(now, SWEEP_LIMIT)
        retry_at = due.next_retry
        for wf_id in due.keys:
            try:
                retry_at = _earliest(retry_at, self._sweep_one(wf_id, now))
            except Exception as exc:
                if _unavailable(exc):
                    raise
                self.stats.drive_errors += 1
                logger.warning("could not advance %s: %s", wf_id, _reason(exc))
        self._retry_at = retry_at
        return len(due.keys)

    def _sweep_one(self, wf_id: str, now: float) -> float | None:
        """Drive one due execution and re-dispatch its stale claims; postpone it when
        that wrote nothing. Returns when its next retry falls due."""
        store = self.backend.store
        before = store.load_shared(wf_id).version if store.tracks_due else None
        retry_at = _retry_time(self._drive(wf_id))
        try:
            self.backend.redispatch_stale(wf_id, self.stale_after)
        except Exception as exc:
            if _unavailable(exc):
                raise
            logger.warning("re-dispatch failed for %s: %s", wf_id, _reason(exc))
        if before is not None:
            after = store.load_shared(wf_id)
            if after.version == before:
                store.postpone(after, now)
        return retry_at

    def fire_schedules(self) -> int:
        """Fire the schedules due now (``Schedules.tick``); return how many fires.

        A store that keeps no schedules turns this off for the worker's life.
        """
        self._last_tick = time.monotonic()
        if self._schedules is None:
            try:
                self._schedules = Schedules(self.backend)
            except BackendError as exc:
                logger.info("no schedules fired by this worker: %s", exc)
                self.schedule_interval = None
                return 0
        self._next_fire = None  # until read: look again after ``schedule_interval``
        fired = self._schedules.tick()
        for fire in fired:
            logger.info("schedule %r fired %s", fire.name, fire.workflow_execution_id)
        # The next due time, if it comes before the next look anyway: the first of
        # the due schedules in that window (every store returns them earliest first).
        horizon = self.backend.clock() + (self.schedule_interval or 0.0)
        times = [s.due_at for s in self._schedules.store.due(horizon, 1) if s.due_at is not None]
        self._next_fire = min(times, default=None)
        return len(fired)

    def _next_tick(self) -> float | None:
        """When (monotonic) the next look for due schedules is due, or ``None``."""
        interval = self.schedule_interval
        if interval is None:
            return None
        due = self._last_tick + interval
        if self._next_fire is not None:
            fire = time.monotonic() + self._next_fire - self.backend.clock()
            due = min(due, max(fire, self._last_tick + min(interval, SCHEDULE_GAP)))
        return due

    def _tick_due(self) -> bool:
        """Whether to look for due schedules now: the regular look (up to ``ALIGN``
        early, to share a wake-up with a sweep), or a known fire time that came."""
        interval = self.schedule_interval
        if interval is None:
            return False
        since = time.monotonic() - self._last_tick
        if since >= interval - min(ALIGN, interval / 4):
            return True
        return self._next_fire is not None and self.backend.clock() >= self._next_fire \
            and since >= min(interval, SCHEDULE_GAP)

    def _sweep_due(self, last_sweep: float) -> bool:
        since = time.monotonic() - last_sweep
        if since >= self.sweep_interval - min(ALIGN, self.sweep_interval / 4):
            return True
        return self._retry_at is not None and self.backend.clock() >= self._retry_at \
            and since >= max(self.poll_interval, 0.05)

    # -- the loop ------------------------------------------------------------------

    def _slots(self) -> Slots:
        if self.processes:
            assert self.executor_ref is not None
            return ProcessSlots(self.executor_ref, self.concurrency)
        return ThreadSlots(self.executor, self.concurrency, on_beat=self._step_beat)

    def run(self, *, idle_timeout: float | None = None, max_jobs: int | None = None
            ) -> WorkerStats:
        """Work until ``stop()``, ``idle_timeout`` idle seconds, or ``max_jobs`` jobs.

        Returns the stats. Exceptions from the executor never escape, and errors
        from the store or runner are ridden out (see the module docstring). The
        worker is idle when it holds no job and no result, the queue was empty
        for ``idle_timeout`` seconds, and no retry it knows of is waiting (with
        ``drive``, the sweep sees every running execution's retries).
        """
        slots = self._slots()
        self._active = slots
        self._closed.clear()
        self._wake.clear()
        self._registry_live = True
        self._registry_beat()
        heart = threading.Thread(target=self._heartbeats, name="runfox-heartbeat", daemon=True)
        heart.start()
        last_sweep = -float("inf")
        idle_since = time.monotonic()
        claimed = 0
        unwatch = self._watch_jobs()
        try:
            while not self._release.is_set():
                for job, output in slots.wait(0):
                    self._finished(job, output)
                jobs: list[DispatchJob] = []
                if time.monotonic() >= self._backoff_until:
                    sweep = self.drive and self._sweep_due(last_sweep)
                    if sweep:
                        last_sweep = time.monotonic()
                    free = 0 if self._stop.is_set() else slots.size - slots.busy
                    if max_jobs is not None:
                        free = min(free, max_jobs - claimed)
                    self._alarm.clear()  # a wake-up from now on ends the next wait
                    jobs = self._round(free, sweep)
                    if free > 0:
                        self._polled(bool(jobs))
                    jobs = self._start_submitted(jobs, free)
                    for job in jobs:
                        self._launch(slots, job)
                    claimed += len(jobs)
                now = time.monotonic()
                if jobs or slots.busy or self._results or self._outage.down:
                    idle_since = now
                elif self._done(max_jobs, claimed, idle_timeout, now - idle_since):
                    break
                slots_full = slots.busy >= slots.size
                wait = 0.0 if jobs and not slots_full else self._wait_time(slots_full)
                left = None if idle_timeout is None else idle_timeout - (now - idle_since)
                if left is not None and left > 0 and not slots.busy:
                    wait = min(wait, left + 0.001)  # stop on time, not a poll later
                # A long idle wait must not delay the next sweep or schedule tick
                # (one already overdue, held back by an outage, does not shorten it).
                for due in ((last_sweep + self.sweep_interval) if self.drive else None,
                            self._next_tick()):
                    if due is not None and due > now:
                        wait = min(wait, due - now)
                self._pause(slots, wait)
        finally:
            unwatch()
            self._shutdown(slots)
            self._active = None
            self._closed.set()
            self._wake.set()
            heart.join(timeout=1.0)
            self._deregister()
        return self.stats

    def _round(self, free: int, sweep: bool) -> list[DispatchJob]:
        """One round of backend calls: record waiting results, sweep, claim up to ``free``.

        Recording a result may take the jobs it dispatches into free slots at
        once (``Backend.apply_and_take``); the claim then asks only for the rest.

        A round in which every call succeeded ends an outage. The claim is made
        even when an earlier call failed: it is what keeps jobs moving, and it
        tells an outage (the claim fails too) from a result the backend will
        never take (see ``_refused``).
        """
        touched = bool(self._results) or sweep
        self._room = free
        try:
            refused = self._settle()
        finally:
            free, self._room = self._room, 0
        jobs, self._taken = self._taken, []
        healthy = refused is None
        if healthy and sweep:
            try:
                self.sweep()
            except Exception as exc:
                self._hit(exc, "sweep running executions")
                healthy = False
        if healthy and self._tick_due():
            touched = True
            try:
                self.fire_schedules()
            except Exception as exc:
                self._hit(exc, "fire due schedules")
                healthy = False
        if free > 0:
            touched = True
            claimed, ok = self._claim(free)
            jobs += claimed
            if ok and refused is not None:
                self._refused(refused)
            healthy = healthy and ok
        if healthy and touched:
            self._outage.recovered()
        return jobs

    def _start_submitted(self, jobs: list[DispatchJob], free: int) -> list[DispatchJob]:
        """``jobs`` with their start jobs (``Backend.submit``) done here instead of
        run: their executions are created together (``Backend.start_submitted``)
        and their first jobs fill the slots the start jobs were claimed for. If
        that fails the start jobs are let go (no longer heartbeated): their
        leases run out and they come back, for this worker or another."""
        starts, rest = split_starts(jobs)
        if not starts:
            return jobs
        began = time.monotonic()
        try:
            taken = self.backend.start_submitted(starts, limit=max(free - len(rest), 0),
                                                 lease=self.lease)
        except Exception as exc:
            self._hit(exc, f"start {len(starts)} submitted executions")
            taken = []
        else:
            self.stats.started += len(starts)
            logger.info("started %d submitted execution(s) (%s%s) in %.3fs", len(starts),
                        starts[0].workflow_execution_id, ", ..." if len(starts) > 1 else "",
                        time.monotonic() - began)
        for job in starts:
            self._unhold(job)
        for job in taken:
            self._hold(job)
        return rest + taken

    def _done(self, max_jobs: int | None, claimed: int, idle_timeout: float | None,
              idle_for: float) -> bool:
        """Whether a worker holding nothing may stop: stopped, ``max_jobs`` reached, or
        idle (never while a retry this worker knows of waits)."""
        if self._stop.is_set() or (max_jobs is not None and claimed >= max_jobs):
            return True
        return idle_timeout is not None and idle_for >= idle_timeout and self._retry_at is None

    def _wait_time(self, full: bool = False) -> float:
        """How long the loop may sleep: until the next claim, backoff end or due retry.

        ``full``: every slot is busy, so there is no claim to make before a job
        finishes (which ends the wait anyway)."""
        # With every slot busy the wait ends when a job finishes, but
        # ``stop(release=True)`` does not end it: keep it at ``poll_interval``.
        wait = self.poll_interval if full else min(self._poll_wait, self._poll_ceiling())
        backoff = self._backoff_until - time.monotonic()
        if backoff > 0:
            return min(max(wait, 0.05), backoff)
        if self._results:
            return 0.0
        if self._retry_at is not None:
            wait = min(wait, max(0.01, self._retry_at - self.backend.clock()))
        return wait

    def _pause(self, slots: Slots, wait: float) -> None:
        """Sleep up to ``wait``; a finished job, ``stop()`` or (with free slots) a
        wake-up from the runner ends it early."""
        if slots.busy and (slots.busy >= slots.size or wait <= WAKE_CHECK):
            for job, output in slots.wait(wait):
                self._finished(job, output)
        elif slots.busy:
            end = time.monotonic() + wait
            while True:
                finished = slots.wait(min(WAKE_CHECK, max(0.0, end - time.monotonic())))
                for job, output in finished:
                    self._finished(job, output)
                if finished or self._alarm.is_set() or time.monotonic() >= end:
                    return
        elif wait > 0 and not self._stop.is_set():
            self._alarm.wait(wait)

    def _shutdown(self, slots: Slots) -> None:
        """Give back jobs still running, record what can be recorded, close the pool."""
        self._stop.set()
        release = self._release.is_set()
        for job in slots.running():
            try:
                self.backend.runner.release(job)
            except Exception as exc:
                logger.warning("could not release %s (%s); it comes back when its lease "
                               "runs out", job.key, _reason(exc))
            self._unhold(job)
        slots.close(wait=not release)
        if self._results:
            self._settle()  # one more try
        if self._results:
            logger.warning("stopping with %d result(s) not recorded (the backend is "
                           "unavailable); their jobs come back when their leases run out",
                           len(self._results))
            for item in self._results:
                if item.job is not None:
                    self._unhold(item.job)
            self._results.clear()
