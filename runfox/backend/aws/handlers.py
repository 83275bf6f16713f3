"""Event-driven handlers: run jobs and drive workflows from SQS messages alone.

The pieces, each usable from Python and wired for Lambda by ``workers/aws_lambda.py``:

- ``ResultHandler``: applies results to an execution and claims what became ready
  in *one* transition (``Backend.apply_and_advance``), then dispatches the new
  jobs, closing the finished jobs' rows in the same request. When a failed
  attempt waits for its backoff, it arms a wake-up: an advance message delayed
  until the retry is due (SQS delays are capped at 15 minutes, so a handler that
  gets the message early sends it on again). When the execution ends by halting,
  failing or being cancelled, the jobs still queued are marked cancelled, so
  ``runfox worker`` deletes them unrun (the handlers check the record instead).
- ``JobHandler``: processes a batch of received messages. It reads each
  execution's record once, drops jobs the record no longer waits for (duplicates,
  superseded runs, finished or cancelled executions) without running them, runs
  the rest, and hands their outputs to the ``ResultHandler``: one transition per
  execution per batch, starting from the record it already read. Advance and
  result messages go to the ``ResultHandler`` too. It returns the ids of the
  messages that must stay on the queue: invalid ones and jobs no execution knows
  (they reach the dead-letter queue through the redrive policy), and ones whose
  processing failed (they are retried). It does not enforce concurrency limits
  (a step's ``concurrency``): Lambda hands it the batch, so there is no queue to
  leave a job on; the first job of each key logs a warning. Run such steps with
  ``runfox worker --backend aws://...``, whose ``take_pending_jobs`` claims slots.
- ``lambda_handler``: a Lambda handler for SQS events built on a ``JobHandler``,
  returning ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``
  (enable ``ReportBatchItemFailures`` on the event source mapping). It never
  raises: a malformed record is logged and reported by its ``messageId``.
- ``SQSConsumer``: feeds a queue to such a handler from any process, receiving and
  deleting messages the way Lambda's event source mapping does.
- ``sweep``: advances running executions and re-dispatches claims whose jobs
  were lost (a process that died between writing a claim and sending its job);
  run it on a schedule.
- ``schedule_tick``: fires the schedules that are due (``Schedules.tick``); an
  EventBridge rule invokes it every minute. Any number of concurrent or repeated
  invocations start one execution per fire time (see ``runfox.schedules``).

A job's result is applied straight to the record, so the record's run ids are
what make application exactly-once: a duplicate that arrives after the result is
dropped unrun, and one that runs at the same time as the original has its
result ignored.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import PayloadMissing, RecordTooLarge, WorkflowNotFound
from ...execution import Executor, error_output, run_job
from ...records import WorkflowRecord
from ...results import (
    Cancelled,
    Dispatch,
    DispatchJob,
    Failed,
    Halt,
    Ignored,
    Pending,
    Result,
    WorkResult,
)
from ...spec import plan_step_id
from ...status import StepStatus, WorkflowStatus
from ..base import Backend
from .messages import Advance, Invalid, Message, ResultMessage, parse
from .runner import SQSRunner

__all__ = ["JobHandler", "LambdaHandler", "ResultHandler", "SQSConsumer", "lambda_handler",
           "schedule_tick", "sweep"]

logger = logging.getLogger("runfox.backend.aws")

#: An advance message this many seconds early is sent on instead of acted upon.
_EARLY = 0.5

#: ``(workflow_execution_id, step_id, run_id)``: which job a result came from.
JobKey = tuple[str, str, int]


def _sqs_runner(backend: Backend) -> SQSRunner:
    runner = backend.runner
    if not isinstance(runner, SQSRunner):
        raise TypeError(f"the AWS handlers need a Backend whose runner is an SQSRunner, "
                        f"got {type(runner).__name__}")
    if runner.events_queue is None:
        raise ValueError("the AWS handlers send wake-ups to the runner's events_queue; "
                         "pass one to SQSRunner (a routing callable has no default)")
    return runner


class ResultHandler:
    """Applies results and advances executions; see the module docstring.

    Args:
        backend: a Backend whose runner is an ``SQSRunner``.

    Calling the handler, ``handler(wf_exec_id, step_id, output, run_id)``, applies
    one result and returns what ``advance`` returned.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.runner = _sqs_runner(backend)

    def __call__(self, workflow_execution_id: str, step_id: str, output: dict[str, Any],
                 run_id: int) -> Result:
        if isinstance(run_id, bool) or not isinstance(run_id, int):
            # Without its run, a stale result would be applied to whatever run is current.
            raise ValueError(f"a result needs the run id of its job, got {run_id!r}")
        return self.apply(workflow_execution_id, [WorkResult(step_id, output, run_id)],
                          completed=[(workflow_execution_id, step_id, run_id)])

    def apply(self, workflow_execution_id: str, results: Sequence[WorkResult] = (), *,
              completed: Sequence[JobKey] = (), woken: bool = False,
              loaded: WorkflowRecord | None = None) -> Result:
        """Apply ``results`` and advance in one transition; dispatch; arm a wake-up.

        Args:
            workflow_execution_id: the execution.
            results: results to apply (stale or repeated ones are ignored).
            completed: ``(workflow_execution_id, step_id, run_id)`` of the jobs
                these results came from; their rows are closed in the request that
                dispatches the next jobs.
            woken: this call answers an advance message, so a retry that is still
                waiting needs a new wake-up.
            loaded: the record as read earlier by the caller, to save a load
                (see ``Backend.transition``).

        Returns:
            What ``advance`` returned: ``Dispatch``, ``Pending`` or a terminal result.

        Raises:
            WorkflowNotFound: no such execution.
            BackendError: DynamoDB or SQS failed; nothing was lost, retry the call.
        """
        results = self.runner.open_results(results)  # referenced outputs, as values
        try:
            applied, nxt = self.backend.apply_and_advance(workflow_execution_id, results,
                                                          dispatch=False, loaded=loaded)
        except RecordTooLarge as exc:
            if not results:
                raise
            # The outputs cannot be stored: fail the attempts rather than retry forever.
            logger.warning("%s: %s; the attempts fail instead", workflow_execution_id, exc)
            failed = [WorkResult(r.step_id, error_output("RecordTooLarge", str(exc)), r.run_id)
                      for r in results]
            applied, nxt = self.backend.apply_and_advance(workflow_execution_id, failed,
                                                          dispatch=False)
        jobs = nxt.jobs if isinstance(nxt, Dispatch) else []
        if jobs:  # sub-workflow steps start child executions instead of queueing jobs
            jobs = self.backend.start_children(workflow_execution_id, jobs)
        if jobs or completed:
            self.runner.dispatch(workflow_execution_id, jobs, done=completed)
        if (isinstance(nxt, Pending) and nxt.retry_at is not None
                and (woken or any(isinstance(a, Pending | Ignored) for a in applied))):
            # A retry waits: this transition scheduled it, or an earlier wake-up or a
            # crash may have been lost. Another wake-up is harmless (advance is idempotent).
            self.runner.schedule_advance(workflow_execution_id, nxt.retry_at)
        if (isinstance(nxt, Halt | Failed | Cancelled)
                and not (applied and all(isinstance(a, Ignored) for a in applied))):
            self.runner.cancel(workflow_execution_id)
        return nxt

    def advance(self, workflow_execution_id: str, *, woken: bool = True) -> Result:
        """Apply the results waiting in the task table (if any) and advance."""
        return self.apply(workflow_execution_id, self.runner.gather(workflow_execution_id),
                          woken=woken)

    def handle_control(self, messages: Sequence[Advance | ResultMessage]) -> None:
        """Act on advance and result messages (``SQSRunner.on_control``)."""
        batch = _Batch()
        for message in messages:
            batch.add_control(message, "")
        for workflow_execution_id, group in batch.groups.items():
            self._settle(workflow_execution_id, group)

    def _settle(self, workflow_execution_id: str, group: _Group,
                loaded: WorkflowRecord | None = None) -> None:
        now = self.backend.clock()
        if not group.results and group.advances and all(
                a.not_before is not None and a.not_before - now > _EARLY for a in group.advances):
            # Woken early (SQS delays stop at 15 minutes): send the wake-up on.
            self.runner.schedule_advance(workflow_execution_id,
                                         min(a.not_before for a in group.advances
                                             if a.not_before is not None))
            return
        results = list(group.results)
        if group.advances:
            results += self.runner.gather(workflow_execution_id)
        self.apply(workflow_execution_id, results, completed=group.completed,
                   woken=bool(group.advances), loaded=loaded)


@dataclass
class _Group:
    results: list[WorkResult] = field(default_factory=list)
    completed: list[JobKey] = field(default_factory=list)
    advances: list[Advance] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)


class _Batch:
    """Messages of one batch grouped by execution: one transition per execution."""

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {}

    def group(self, workflow_execution_id: str) -> _Group:
        return self.groups.setdefault(workflow_execution_id, _Group())

    def add_control(self, message: Advance | ResultMessage, message_id: str) -> None:
        group = self.group(message.workflow_execution_id)
        if isinstance(message, Advance):
            group.advances.append(message)
        else:
            group.results.append(WorkResult(message.step_id, message.output, message.run_id))
        group.message_ids.append(message_id)


class JobHandler:
    """Processes batches of received messages; see the module docstring.

    Args:
        backend: a Backend whose runner is an ``SQSRunner``.
        executor: ``(fn, inputs) -> dict``; ``None`` for a handler that only
            applies results and advance messages (jobs are then left on the queue).
        concurrency: jobs of one batch run on this many threads.
    """

    def __init__(self, backend: Backend, executor: Executor | None = None, *,
                 concurrency: int = 1) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.backend = backend
        self.runner = _sqs_runner(backend)
        self.results = ResultHandler(backend)
        self.executor = executor
        self.concurrency = concurrency
        self._unlimited: set[str] = set()  # concurrency keys warned about

    def _warn_unlimited(self, job: DispatchJob) -> None:
        key = job.concurrency_key
        if key is not None and key not in self._unlimited:
            self._unlimited.add(key)
            logger.warning("step %r has concurrency key %r (limit %s), but the Lambda job "
                           "handler does not enforce concurrency limits: its jobs run "
                           "without the limit (use runfox worker for such steps)",
                           job.step_id, key, job.concurrency_limit)

    def process(self, messages: Sequence[Message]) -> list[str]:
        """Handle a batch; return the ids of the messages that must stay on the queue."""
        failures: list[str] = []
        batch = _Batch()
        received: dict[str, list[tuple[Message, DispatchJob]]] = {}
        for message in messages:
            parsed = parse(message.body)
            if isinstance(parsed, Invalid):
                logger.warning("message %s is not a runfox message (%s); left for the "
                               "dead-letter queue", message.message_id, parsed.reason)
                failures.append(message.message_id)
            elif isinstance(parsed, DispatchJob):
                received.setdefault(parsed.workflow_execution_id, []).append((message, parsed))
            else:
                batch.add_control(parsed, message.message_id)
        loaded: dict[str, WorkflowRecord] = {}
        runnable: list[tuple[Message, DispatchJob]] = []
        repair: list[str] = []
        for workflow_execution_id, jobs in received.items():
            record = self._check(workflow_execution_id, jobs, runnable, failures, repair)
            if record is not None:
                loaded[workflow_execution_id] = record
        for (message, job), output in zip(runnable, self._run([j for _, j in runnable]),
                                          strict=True):
            group = batch.group(job.workflow_execution_id)
            group.results.append(WorkResult(job.step_id, output, job.run_id))
            group.completed.append((job.workflow_execution_id, job.step_id, job.run_id))
            group.message_ids.append(message.message_id)
        for workflow_execution_id, group in batch.groups.items():
            try:
                self.results._settle(workflow_execution_id, group,
                                     loaded.get(workflow_execution_id))
            except Exception as exc:
                (logger.warning if isinstance(exc, KeyError) else logger.exception)(
                    "could not apply messages %s to %s: %s", ", ".join(group.message_ids),
                    workflow_execution_id, exc)
                failures.extend(group.message_ids)
        for workflow_execution_id in repair:
            try:
                self.backend.redispatch_stale(workflow_execution_id, 0.0)
            except Exception:
                logger.exception("could not re-dispatch the claimed steps of %s",
                                 workflow_execution_id)
        return failures

    def _check(self, workflow_execution_id: str, jobs: list[tuple[Message, DispatchJob]],
               runnable: list[tuple[Message, DispatchJob]], failures: list[str],
               repair: list[str]) -> WorkflowRecord | None:
        """Read the record once; keep the jobs it is waiting for, drop or refuse the rest.

        A job the record does not know (no such execution or step, another fn)
        is refused: left for the dead-letter queue. A job whose step is no longer
        running that run (a duplicate, a superseded run, a finished or cancelled
        execution) is dropped without running. The record is returned for the
        transition that applies the results, which then needs no load of its own.

        A *redelivered* message whose result is already applied means the handler
        that applied it may have died before sending the next jobs: the execution
        goes on ``repair``, and its claimed steps are dispatched again (jobs whose
        rows exist are not sent twice).
        """
        try:
            record = self.backend.load_shared(workflow_execution_id)  # read-only check
        except WorkflowNotFound:
            for message, job in jobs:
                logger.warning("message %s names job %s of an execution that does not exist; "
                               "left for the dead-letter queue", message.message_id, job.key)
                failures.append(message.message_id)
            return None
        seen: set[str] = set()
        for message, job in jobs:
            spec = record.plan.by_id.get(plan_step_id(job.step_id))  # a map item: its step's
            if spec is None or spec.fn != job.fn or job.step_id not in record.steps:
                logger.warning("message %s names job %s, which %s; left for the dead-letter "
                               "queue", message.message_id, job.key,
                               "is not a step of that workflow" if spec is None
                               else f"runs {spec.fn!r}, not {job.fn!r}")
                failures.append(message.message_id)
                continue
            step = record.steps[job.step_id]
            if (record.status.is_terminal or step.status is not StepStatus.IN_PROGRESS
                    or step.run_id != job.run_id or job.key in seen):
                logger.info("message %s: job %s is not awaited (step %s, run %d); dropped "
                            "unrun", message.message_id, job.key, step.status.value,
                            step.run_id)
                if (message.receive_count > 1 and not record.status.is_terminal
                        and workflow_execution_id not in repair):
                    repair.append(workflow_execution_id)
                continue
            seen.add(job.key)
            self._warn_unlimited(job)
            if self.executor is None:
                logger.warning("message %s is job %s but this handler has no executor; left "
                               "on the queue", message.message_id, job.key)
                failures.append(message.message_id)
                continue
            runnable.append((message, job))
        return record

    def _run(self, jobs: list[DispatchJob]) -> list[dict[str, Any]]:
        assert self.executor is not None or not jobs
        executor = self.executor

        def one(job: DispatchJob) -> dict[str, Any]:
            try:
                job = self.runner.open_job(job)  # inputs given by reference, as values
            except PayloadMissing as exc:
                return error_output("PayloadMissing", f"the inputs of step {job.step_id!r}: "
                                                      f"{exc}")
            return run_job(executor, job)  # type: ignore[arg-type]

        if self.concurrency == 1 or len(jobs) <= 1:
            return [one(job) for job in jobs]
        with cf.ThreadPoolExecutor(min(self.concurrency, len(jobs)),
                                   thread_name_prefix="runfox-lambda") as pool:
            return list(pool.map(one, jobs))


LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_handler(backend: Backend, executor: Executor | None = None, *,
                   concurrency: int = 1) -> LambdaHandler:
    """A Lambda handler for SQS events that runs jobs and drives their workflows.

    The returned ``handler(event, context)`` reports partial batch failures as
    ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``: Lambda deletes
    the other messages. It never raises. A record that is not an SQS message (not
    an object, a body that is not a string, ...) is logged and reported by its
    ``messageId``, so it reaches the dead-letter queue; one without a
    ``messageId`` cannot be named in the response and is only logged. If the
    batch cannot be handled at all (AWS unreachable), every message is reported
    as failed.
    """
    jobs = JobHandler(backend, executor, concurrency=concurrency)

    def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        messages, failed = _read_records(event)
        try:
            failed += jobs.process(messages)
        except Exception:
            logger.exception("could not handle a batch of %d message(s)", len(messages))
            failed += [m.message_id for m in messages]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(failed)]}

    return handler


def _read_records(event: Any) -> tuple[list[Message], list[str]]:
    """The messages of a Lambda SQS event, and the ids of records that are not messages."""
    records = event.get("Records") if isinstance(event, dict) else None
    if records is None:
        records = []
    if not isinstance(records, list):
        logger.error("the event's Records is a %s, not a list; nothing to handle",
                     type(records).__name__)
        return [], []
    messages: list[Message] = []
    failed: list[str] = []
    for i, record in enumerate(records):
        try:
            messages.append(Message.from_lambda(record))
        except ValueError as exc:
            message_id = record.get("messageId") if isinstance(record, dict) else None
            if isinstance(message_id, str) and message_id:
                logger.warning("message %s is not an SQS message (%s); left for the "
                               "dead-letter queue", message_id, exc)
                failed.append(message_id)
            else:
                logger.error("record %d of the event is not an SQS message (%s) and has no "
                             "messageId to report it by; skipped", i, exc)
    return messages, failed


def sweep(backend: Backend, *, stale_after: float = 960.0, limit: int = 10_000) -> int:
    """Advance every running execution and re-dispatch claims older than ``stale_after``.

    The safety net of the event-driven mode (schedule it, e.g. every 5 minutes):
    it starts retries whose wake-up was lost and re-sends jobs whose process died
    between claiming and sending. A job is only sent again when its step was
    claimed over ``stale_after`` seconds ago *and* its row has waited
    ``resend_after`` seconds (the runner's setting); the default, 16 minutes, is
    longer than a Lambda function may run, so a job still running is never sent
    twice. Returns how many executions it looked at.
    """
    results = ResultHandler(backend)
    seen = 0
    for status in (WorkflowStatus.PENDING, WorkflowStatus.IN_PROGRESS):
        for summary in backend.store.list_executions(status=status, limit=limit):
            seen += 1
            wf = summary.workflow_execution_id
            try:
                results.advance(wf, woken=False)
                backend.redispatch_stale(wf, stale_after)
            except Exception:
                logger.exception("sweep could not advance %s", wf)
    return seen


def schedule_tick(backend: Backend, now: float | None = None, *, limit: int = 100
                  ) -> dict[str, Any]:
    """Fire every schedule due at ``now`` (default: the backend's clock).

    Returns ``{"fired": [{"schedule", "fire_time", "execution"}, ...]}``: the
    fires this call handled (a fire another invocation started is reported with
    the same execution). Schedules live in the task table, so the backend's
    store must know it (``parts_from_url`` sees to that).

    Raises:
        BackendError: DynamoDB or SQS failed; fires decided so far are kept and
            the next tick completes them.
    """
    from ...schedules import Schedules

    fires = Schedules(backend).tick(now, limit)
    return {"fired": [{"schedule": f.name, "fire_time": f.fire_time,
                       "execution": f.workflow_execution_id} for f in fires]}


class SQSConsumer:
    """Feeds a queue to a Lambda-style handler, as Lambda's event source mapping does.

    Each poll receives up to ``batch_size`` messages (long polling for
    ``wait_time`` seconds), passes them to ``handler`` as an SQS event and
    deletes those not reported in ``batchItemFailures``. The messages stay
    invisible for ``visibility_timeout`` seconds while the handler runs: set it
    above the longest job.
    """

    def __init__(self, runner: SQSRunner, handler: LambdaHandler, *,
                 queue_url: str | None = None, batch_size: int = 10,
                 visibility_timeout: float = 30.0, wait_time: int = 20) -> None:
        url = queue_url or (runner.receive_queues[0] if runner.receive_queues else None)
        if url is None:
            raise ValueError("no queue to consume: pass queue_url")
        self.runner = runner
        self.handler = handler
        self.queue_url = url
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.wait_time = wait_time
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def poll(self) -> int:
        """One receive-handle-delete round; returns how many messages it handled."""
        messages = self.runner.receive(self.queue_url, self.batch_size,
                                       self.visibility_timeout, self.wait_time)
        if not messages:
            return 0
        response = self.handler({"Records": [m.to_lambda() for m in messages]}, None)
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        self.runner.delete([m for m in messages if m.message_id not in failed])
        return len(messages)

    def run(self, *, until: Callable[[], bool] | None = None,
            idle_timeout: float | None = None) -> int:
        """Poll until ``stop()``, ``until()`` is true, or ``idle_timeout`` idle seconds.

        Returns how many messages were handled.
        """
        handled = 0
        idle_since = time.monotonic()
        while not self._stop.is_set() and not (until is not None and until()):
            count = self.poll()
            handled += count
            if count:
                idle_since = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                break
        return handled

