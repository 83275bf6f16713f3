"""``SQSRunner``: jobs on SQS queues, job and result rows in a DynamoDB task table.

How the Runner contract maps onto AWS (see ``runfox.backend.runner``):

- ``dispatch``: one conditional put per new job in the task table (one
  ``TransactWriteItems`` per 100 jobs), then one message per new job
  (``SendMessageBatch``, 10 per call). A job whose row exists is not sent again,
  unless its row has stayed ``pending`` (or ``done`` with the step still
  running) for ``resend_after`` seconds: then the process that sent it most
  likely died between the put and the send, or its result was lost, and the
  job is sent once more.
- ``take_pending_jobs(limit, lease)``: ``ReceiveMessage`` with
  ``VisibilityTimeout = lease``; each job is then marked taken in the task table
  (one transaction per batch). Messages of finished or cancelled jobs are
  deleted without being returned; messages that name no dispatched job, or are
  not runfox messages at all, are logged with their message id and left alone,
  so the queue's redrive policy moves them to the dead-letter queue.
- ``heartbeat``: ``ChangeMessageVisibility``; ``release``: visibility 0.
- ``submit_work_result``: marks the job row done and stores the result row in one
  transaction (conditional: a repeat returns ``False``), then deletes the message.
- ``gather``: reads the execution's result rows and deletes them conditionally,
  so each result goes to exactly one gatherer. Their outputs are
  ``jsonvalue.Decoded`` (decoded here: the graph need not copy them deeply).
- Concurrency limits (a job's ``concurrency_key``): before a received job is
  handed out, ``take_pending_jobs`` claims a slot of its key in the task table
  (``runfox.backend.aws.slots``: a holder list per key, written compare-and-set,
  each holder with a lease end). A job whose key is full is not handed out: its
  message is sent again with a delay of ``slot_wait`` seconds and the received
  copy deleted, so it comes back later with a fresh receive count (changing the
  visibility instead would count each refusal as a receive, and the queue's
  redrive policy would move a job that merely waited to the dead-letter queue).
  Its row stays ``pending``. ``ack``, ``submit_work_result`` and ``release`` free
  the slot, ``heartbeat`` renews its lease with the message's, and a slot whose
  holder stopped heartbeating counts no more once its lease ends. The Lambda
  ``JobHandler`` runs the jobs it is given without claiming slots (see NOTES.md).
- ``list_pending_jobs``: job rows in state ``pending`` (a ``Scan`` of the task
  table). Jobs taken by a worker that died show as taken until SQS hands them
  out again; jobs being run by the Lambda handlers (which check the workflow
  record instead of marking rows taken) show as pending until they finish.
- ``cancel``: pending job rows become ``cancelled``; their messages are deleted
  unrun when received.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ...errors import BackendError, PayloadMissing
from ...jsonvalue import decoded, error_output
from ...results import DispatchJob, WorkResult, job_key
from ..payload_store import Offloader
from ..runner import Runner
from ._boto import call, error_code, make_client
from ._codec import COMPRESS_OVER
from .messages import (
    Advance,
    Invalid,
    Message,
    Parsed,
    ResultMessage,
    advance_body,
    job_body,
    parse,
    result_body,
)
from .slots import SlotTable
from .tasks import DEFAULT_TASK_TTL, DEFAULT_TASKS_TABLE, TaskTable, Verdict, unique_jobs

__all__ = ["ControlHandler", "Delivery", "SQSRunner"]

logger = logging.getLogger("runfox.backend.aws")

#: Called with the advance and result messages a worker receives among its jobs.
ControlHandler = Callable[[Sequence[Advance | ResultMessage]], None]

_MAX_DELAY = 900  # SQS DelaySeconds upper bound
_SQS_BATCH = 10
_INVALID_HANDLE = ("ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue",
                   "AWS.SimpleQueueService.MessageNotInflight")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A received message, what it is, and (for a job) what the task table said."""

    message: Message
    parsed: Parsed
    verdict: Verdict | None = None

    @property
    def job(self) -> DispatchJob | None:
        return self.parsed if isinstance(self.parsed, DispatchJob) else None


def _job_key(message: Message) -> str | None:
    parsed = parse(message.body)
    return parsed.key if isinstance(parsed, DispatchJob) else None


def _visibility(seconds: float) -> int:
    return max(0, min(43_200, math.ceil(seconds)))


class SQSRunner(Runner):
    """Jobs on SQS, idempotence and results in a DynamoDB task table.

    Args:
        queue: where jobs go: a queue URL, a queue name (looked up once), or a
            callable ``job -> queue URL`` to route by ``fn``.
        queue_url: the seed's name for ``queue`` (``SQSRunner(queue_url=...)``);
            give one of the two.
        tasks_table: the task table (hash key ``wf``, range key ``sk``, strings).
        create_tasks_table: create the task table when it is missing (checked
            with ``verify``). Default: only for the default ``runfox-tasks``, so
            the seed's ``SQSRunner(queue_url=...)`` works on a fresh account; a
            named table is expected to exist (a typo is an error, not a new table).
        receive_queues: the queues ``take_pending_jobs`` reads (default: ``queue``
            when it is a URL or name; required with a routing callable).
        events_queue: where advance (wake-up) and result messages go (default:
            ``queue`` when it is a URL or name).
        sqs_client, dynamodb_client: ready boto3 clients (then give none of
            ``session``, ``region_name``, ``endpoint_url``, ``config``).
        session, region_name, endpoint_url, config: how to build the clients
            (default: boto3's credential chain, ``AWS_ENDPOINT_URL``, the
            configured region, standard retries).
        lease: seconds a taken job stays invisible when ``take_pending_jobs`` is
            given no lease.
        wait_time: ``ReceiveMessage`` long-poll seconds (0-20) for
            ``take_pending_jobs``; 0 returns at once.
        resend_after: seconds after which re-dispatching a job whose row is
            still ``pending`` (or ``done`` while the step still runs) sends it again.
        task_ttl: seconds task rows live (DynamoDB TTL on ``expires_at``).
        max_message_bytes: the largest message body sent (SQS's limit is 256 KiB
            or, on current AWS, 1 MiB).
        on_control: handles advance and result messages that ``take_pending_jobs``
            receives (the harnesses wire a result handler: ``runfox.execution.serve_control``).
        verify: check at construction that the table and queues exist.
        clock: epoch seconds, for row times and delays.

        slot_wait: seconds a job whose concurrency key is full waits before it is
            offered again (its message is re-sent with this delay; 0 to 900).
        payloads: where job inputs and result outputs over its threshold go (an
            ``Offloader``, usually the store's), so a job with large inputs fits
            an SQS message and a task row; ``None``: everything travels inline.

    Concurrency limits are enforced by ``take_pending_jobs`` (see the module
    docstring); a full key's jobs stay queued.

    Raises:
        BackendError: (with ``verify``) no credentials, a missing table or queue;
            the message names it and says what to do.
        ValueError: contradictory arguments.
    """

    def __init__(
        self,
        queue: str | Callable[[DispatchJob], str] | None = None,
        *,
        queue_url: str | None = None,
        tasks_table: str = DEFAULT_TASKS_TABLE,
        create_tasks_table: bool | None = None,
        receive_queues: Sequence[str] | None = None,
        events_queue: str | None = None,
        sqs_client: Any = None,
        dynamodb_client: Any = None,
        session: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        config: Any = None,
        lease: float = 30.0,
        wait_time: int = 0,
        resend_after: float = 300.0,
        task_ttl: float = DEFAULT_TASK_TTL,
        max_message_bytes: int = 262_144,
        compress_over: int | None = COMPRESS_OVER,
        on_control: ControlHandler | None = None,
        verify: bool = True,
        clock: Callable[[], float] = time.time,
        slot_wait: float = 2.0,
        payloads: Offloader | None = None,
    ) -> None:
        self.payloads = payloads
        if (queue is None) == (queue_url is None):
            raise TypeError("SQSRunner needs exactly one of queue and queue_url (where jobs "
                            "go: a queue URL or name)")
        queue = queue if queue is not None else queue_url
        assert queue is not None
        if lease <= 0:
            raise ValueError("lease must be > 0")
        if not 0 <= slot_wait <= _MAX_DELAY:
            raise ValueError(f"slot_wait must be between 0 and {_MAX_DELAY} seconds")
        if not 0 <= wait_time <= 20:
            raise ValueError("wait_time must be between 0 and 20 seconds")
        settings = {"session": session, "region_name": region_name,
                    "endpoint_url": endpoint_url, "config": config}
        if (sqs_client is not None and dynamodb_client is not None
                and any(v is not None for v in settings.values())):
            raise ValueError("both clients were given; session, region_name, endpoint_url "
                             "and config would be ignored")
        self.sqs, self._owns_sqs = make_client("sqs", client=sqs_client, **(
            settings if sqs_client is None else {}))
        self.dynamodb, self._owns_dynamodb = make_client("dynamodb", client=dynamodb_client, **(
            settings if dynamodb_client is None else {}))
        self.tasks = TaskTable(self.dynamodb, tasks_table, ttl=task_ttl,
                               compress_over=compress_over)
        self.lease = lease
        self.wait_time = wait_time
        self.resend_after = resend_after
        self.max_message_bytes = max_message_bytes
        self.on_control = on_control
        self.clock = clock
        self.slot_wait = slot_wait
        self.slots = SlotTable(self.dynamodb, tasks_table)
        self._route: Callable[[DispatchJob], str] | None = None
        self.queue_url: str | None = None
        if callable(queue):
            self._route = queue
        else:
            self.queue_url = self._resolve(queue)
        if receive_queues is not None:
            self.receive_queues = [self._resolve(q) for q in receive_queues]
        elif self.queue_url is not None:
            self.receive_queues = [self.queue_url]
        else:
            raise ValueError("with a routing callable as queue, pass receive_queues (the "
                             "queues this runner takes jobs from)")
        self.events_queue = self._resolve(events_queue) if events_queue else self.queue_url
        self._held: dict[str, tuple[DispatchJob, str, str]] = {}
        self._lock = threading.Lock()
        if verify:
            self.tasks.verify(create=create_tasks_table if create_tasks_table is not None
                              else tasks_table == DEFAULT_TASKS_TABLE)
            known = {*self.receive_queues, self.queue_url, self.events_queue}
            for url in sorted(u for u in known if u is not None):
                call(self.sqs, "get_queue_attributes", url, QueueUrl=url,
                     AttributeNames=["QueueArn"])

    def __repr__(self) -> str:
        return f"SQSRunner(queue={self.queue_url or self._route!r}, " \
               f"tasks_table={self.tasks.table!r})"

    def _resolve(self, queue: str) -> str:
        if queue.startswith(("https://", "http://")):
            return queue
        url: str = call(self.sqs, "get_queue_url", queue, QueueName=queue)["QueueUrl"]
        return url

    def queue_for(self, job: DispatchJob) -> str:
        """The queue URL a job is sent to."""
        if self._route is None:
            assert self.queue_url is not None
            return self.queue_url
        return self._route(job)

    # -- SQS primitives ------------------------------------------------------------------

    def send(self, entries: Sequence[tuple[str, str, int]], what: str = "message") -> None:
        """Send ``(queue_url, body, delay_seconds)`` entries, 10 per request per queue.

        Raises:
            BackendError: a body is over ``max_message_bytes``, or SQS refused an
                entry twice.
        """
        by_queue: dict[str, list[tuple[str, int]]] = {}
        for url, body, delay in entries:
            size = len(body.encode("utf-8"))
            if size > self.max_message_bytes:
                raise BackendError(f"{what} is {size:,} bytes, over the SQS message limit of "
                                   f"{self.max_message_bytes:,}: keep step inputs small "
                                   "(pass references to S3 objects)")
            by_queue.setdefault(url, []).append((body, delay))
        for url, items in by_queue.items():
            for start in range(0, len(items), _SQS_BATCH):
                batch = {str(i): item for i, item in enumerate(items[start:start + _SQS_BATCH])}
                for _ in range(2):
                    response = call(self.sqs, "send_message_batch", url, QueueUrl=url, Entries=[
                        {"Id": i, "MessageBody": body, "DelaySeconds": delay}
                        for i, (body, delay) in batch.items()])
                    failed = response.get("Failed") or []
                    batch = {f["Id"]: batch[f["Id"]] for f in failed}
                    if not batch:
                        break
                if batch:
                    reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in failed)
                    raise BackendError(f"SQS refused {len(batch)} {what}(s) for {url}: {reasons}")

    def receive(self, queue_url: str, max_messages: int = 10, lease: float | None = None,
                wait_time: int | None = None) -> list[Message]:
        """Receive up to ``max_messages`` (at most 10) messages, invisible for ``lease`` s."""
        response = call(self.sqs, "receive_message", queue_url, QueueUrl=queue_url,
                        MaxNumberOfMessages=max(1, min(_SQS_BATCH, max_messages)),
                        VisibilityTimeout=_visibility(self.lease if lease is None else lease),
                        WaitTimeSeconds=self.wait_time if wait_time is None else wait_time,
                        MessageSystemAttributeNames=["ApproximateReceiveCount"])
        return [Message.from_sqs(raw, queue_url) for raw in response.get("Messages", [])]

    def delete(self, messages: Sequence[Message]) -> None:
        """Delete received messages (10 per request); a failure is logged, not raised.

        A message that could not be deleted comes back after its visibility
        timeout and is then recognised as finished by the task table.
        """
        by_queue: dict[str, list[Message]] = {}
        for message in messages:
            by_queue.setdefault(message.queue_url, []).append(message)
        for url, items in by_queue.items():
            for start in range(0, len(items), _SQS_BATCH):
                chunk = items[start:start + _SQS_BATCH]
                if len(chunk) == 1:
                    try:
                        call(self.sqs, "delete_message", url, QueueUrl=url,
                             ReceiptHandle=chunk[0].receipt_handle)
                    except BackendError as exc:
                        logger.warning("could not delete message %s: %s",
                                       chunk[0].message_id, exc)
                    continue
                response = call(self.sqs, "delete_message_batch", url, QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                    for i, m in enumerate(chunk)])
                for failure in response.get("Failed") or []:
                    logger.warning("could not delete message %s: %s",
                                   chunk[int(failure["Id"])].message_id, failure.get("Code"))

    def change_visibility(self, message: Message, seconds: float) -> bool:
        """Set a received message's visibility; ``False`` if it is no longer held."""
        try:
            call(self.sqs, "change_message_visibility", message.queue_url,
                 passthrough=_INVALID_HANDLE, QueueUrl=message.queue_url,
                 ReceiptHandle=message.receipt_handle, VisibilityTimeout=_visibility(seconds))
        except Exception as exc:
            if error_code(exc) in _INVALID_HANDLE:
                return False
            raise
        return True

    # -- receiving: classify and mark taken ------------------------------------------------

    def accept(self, messages: Sequence[Message]) -> list[Delivery]:
        """Classify received messages and mark their jobs taken in the task table.

        One request for the whole batch (a transaction) in the usual case. Jobs
        come back with a ``Verdict``; invalid messages, and jobs that are unknown
        or differ from what was dispatched, are logged here with their message id.
        A job received twice in one batch is ``DONE`` for the second copy.
        """
        now = self.clock()
        deliveries: list[Delivery | None] = []
        ops, slots, bodies = [], [], []
        seen: set[str] = set()
        for message in messages:
            parsed = parse(message.body)
            if isinstance(parsed, DispatchJob):
                if parsed.key in seen:
                    deliveries.append(Delivery(message, parsed, Verdict.DONE))
                    continue
                seen.add(parsed.key)
                body = job_body(parsed)
                ops.append(self.tasks.accept_op(parsed, body, now))
                slots.append((len(deliveries), message, parsed))
                bodies.append(body)
                deliveries.append(None)
                continue
            if isinstance(parsed, Invalid):
                logger.warning("message %s is not a runfox message (%s); left for the "
                               "dead-letter queue", message.message_id, parsed.reason)
            deliveries.append(Delivery(message, parsed))
        for (index, message, job), refused, body in zip(slots, self.tasks.tx.run(ops), bodies,
                                                        strict=True):
            verdict = self.tasks.verdict(refused, body)
            if verdict in (Verdict.UNKNOWN, Verdict.MISMATCH):
                logger.warning("message %s names job %s, which %s; left for the dead-letter "
                               "queue", message.message_id, job.key,
                               "was never dispatched (or its row expired)"
                               if verdict is Verdict.UNKNOWN else
                               "differs from the job that was dispatched")
            deliveries[index] = Delivery(message, job, verdict)
        return [d for d in deliveries if d is not None]

    # -- the Runner contract ---------------------------------------------------------------

    def dispatch(self, workflow_execution_id: str, jobs: Sequence[DispatchJob], *,
                 done: Sequence[tuple[str, str, int]] = ()) -> None:
        """Enqueue new jobs; optionally mark jobs finished in the same request.

        ``done`` holds ``(workflow_execution_id, step_id, run_id)`` keys: it is how
        a result handler, which applied results straight to the record, closes
        their job rows without an extra request.

        Raises:
            BackendError: a job's message is too large (nothing of it is written),
                or AWS failed.
        """
        now = self.clock()
        jobs = [self._pack_job(job) for job in unique_jobs(jobs)]
        bodies = [job_body(job) for job in jobs]
        queues = [self.queue_for(job) for job in jobs]
        for job, body in zip(jobs, bodies, strict=True):
            if len(body.encode("utf-8")) > self.max_message_bytes:
                raise BackendError(f"job {job.key}: its message is {len(body.encode()):,} bytes, "
                                   f"over the SQS limit of {self.max_message_bytes:,}; keep step "
                                   "inputs small (pass references to S3 objects)")
        ops = [self.tasks.put_job_op(job, body, url, now)
               for job, body, url in zip(jobs, bodies, queues, strict=True)]
        ops += [self.tasks.done_op(key, now) for key in dict.fromkeys(done)]
        refused = self.tasks.tx.run(ops)
        outgoing = []
        for job, body, url, outcome in zip(jobs, bodies, queues, refused[:len(jobs)],
                                           strict=True):
            if outcome is None:
                outgoing.append((url, body, 0))
            elif outcome.item and self._stale(outcome.item, now):
                row = self.tasks.row(outcome.item)
                if self.tasks.reopen(row, now):
                    logger.info("job %s was %s for over %ss: sending it again", job.key,
                                row.state, self.resend_after)
                    outgoing.append((row.queue_url or url, body, 0))
        self.send(outgoing, "job message")

    def _stale(self, item: dict[str, Any], now: float) -> bool:
        state = item.get("state", {}).get("S")
        since = item.get("done_at" if state == "done" else "created_at", {}).get("N")
        return state in ("pending", "done") and since is not None and \
            float(since) <= now - self.resend_after

    def take_pending_jobs(self, limit: int | None = None, lease: float | None = None
                          ) -> list[DispatchJob]:
        """Receive up to ``limit`` jobs (all visible ones when ``None``, up to 1,000).

        Each is invisible to other consumers for ``lease`` seconds (default:
        the runner's ``lease``) unless ``heartbeat`` extends it.
        """
        lease = self.lease if lease is None else lease
        taken: list[DispatchJob] = []
        cap = 1000 if limit is None else limit
        deferred: set[str] = set()  # keys of jobs put back for a full slot in this call
        for url in self.receive_queues:
            first = True
            while len(taken) < cap:
                messages = self.receive(url, cap - len(taken), lease,
                                        None if first else 0)
                first = False
                if not messages:
                    break
                # Only jobs already put back in this call came back (slot_wait 0):
                # put them back once more and stop, rather than spin on them.
                again = all(_job_key(m) in deferred for m in messages)
                taken.extend(self._take(messages, lease, deferred))
                if again:
                    break
        return taken

    def _claim_slots(self, messages: Sequence[Message], lease: float, deferred: set[str]
                     ) -> tuple[list[Message], set[str]]:
        """Claim a slot for each keyed job; put back those whose key is full.

        Returns the messages to accept and the ids of those that claimed a slot.
        """
        now = self.clock()
        admitted: list[Message] = []
        claimed: set[str] = set()
        claimed_jobs: set[str] = set()
        waiting: list[Message] = []
        for message in messages:
            parsed = parse(message.body)
            if (not isinstance(parsed, DispatchJob) or parsed.concurrency_key is None
                    or not parsed.concurrency_limit or parsed.key in claimed_jobs):
                admitted.append(message)
            elif self.slots.claim(parsed.concurrency_key, parsed.concurrency_limit,
                                  parsed.key, now + lease, now):
                admitted.append(message)
                claimed.add(message.message_id)
                claimed_jobs.add(parsed.key)
            else:
                waiting.append(message)
                deferred.add(parsed.key)
        if waiting:  # send again, delayed, then drop the received copies
            self.send([(m.queue_url, m.body, _visibility(self.slot_wait)) for m in waiting],
                      "job message")
            self.delete(waiting)
        return admitted, claimed

    def _free_slot(self, job: DispatchJob) -> None:
        if job.concurrency_key is not None and job.concurrency_limit:
            self.slots.free(job.concurrency_key, job.key)

    def _take(self, messages: Sequence[Message], lease: float | None = None,
              deferred: set[str] | None = None) -> list[DispatchJob]:
        admitted, claimed = self._claim_slots(
            messages, self.lease if lease is None else lease,
            set() if deferred is None else deferred)
        jobs, finished, control = [], [], []
        for delivery in self.accept(admitted):
            job = delivery.job
            if (job is not None and delivery.message.message_id in claimed
                    and delivery.verdict is not Verdict.ACCEPTED):
                self._free_slot(job)  # claimed for a job that will not run
            if job is not None and delivery.verdict is Verdict.ACCEPTED:
                with self._lock:
                    self._held[job.key] = (job, delivery.message.queue_url,
                                           delivery.message.receipt_handle)
                opened = self._open_or_fail(job)
                if opened is not None:
                    jobs.append(opened)
            elif job is not None and delivery.verdict in (Verdict.DONE, Verdict.CANCELLED):
                finished.append(delivery.message)
            elif isinstance(delivery.parsed, Advance | ResultMessage):
                control.append(delivery)
        if control and self.on_control is None:
            logger.warning("%d advance/result message(s) received but this runner has no "
                           "on_control handler; left on the queue", len(control))
        elif control:
            assert self.on_control is not None
            try:
                self.on_control([d.parsed for d in control])  # type: ignore[misc]
                finished.extend(d.message for d in control)
            except Exception:
                logger.exception("handling advance/result messages failed; they will be "
                                 "received again")
        self.delete(finished)
        return jobs

    def _held_message(self, key: str, pop: bool = False) -> tuple[DispatchJob, Message] | None:
        with self._lock:
            held = self._held.pop(key, None) if pop else self._held.get(key)
        if held is None:
            return None
        job, url, handle = held
        return job, Message("", "", handle, url)

    def heartbeat(self, job: DispatchJob, lease: float) -> bool:
        held = self._held_message(job.key)
        if held is None:
            return False
        kept = held[0]
        if (kept.concurrency_key is not None and kept.concurrency_limit
                and not self.slots.extend(kept.concurrency_key, kept.key,
                                          self.clock() + lease)):
            self._held_message(job.key, pop=True)  # its slot lapsed: another job has it
            return False
        if self.change_visibility(held[1], lease):
            return True
        self._held_message(job.key, pop=True)
        return False

    def release(self, job: DispatchJob) -> None:
        held = self._held_message(job.key, pop=True)
        if held is None:
            return
        self._free_slot(held[0])
        self.change_visibility(held[1], 0)
        self.tasks.release((job.workflow_execution_id, job.step_id, job.run_id))

    def submit_work_result(self, workflow_execution_id: str, step_id: str,
                           output: dict[str, Any], run_id: int | None = None) -> bool:
        """Record a result once; ``False`` if one was already recorded for that job.

        An output over the offload threshold goes to the payload store and the
        row holds its reference. An output still too large for a DynamoDB item
        is replaced by an error output (``RecordTooLarge``), so the attempt fails
        instead of being retried forever.
        """
        output = self._pack_output(output)
        if run_id is None:
            with self._lock:
                prefix = f"{workflow_execution_id}#{step_id}#"
                held = [j.run_id for k, (j, _, _) in self._held.items() if k.startswith(prefix)]
            run_id = held[0] if held else self.tasks.current_run(workflow_execution_id, step_id)
        now = self.clock()
        item = self.tasks.result_item(workflow_execution_id, step_id, run_id, output, now)
        if not self.tasks.fits(item):
            message = (f"the output of step {step_id!r} (run {run_id}) is too large to store "
                       f"in DynamoDB (over {self.tasks.max_item_bytes:,} bytes); turn on "
                       "offloading to S3 (aws:// URL bucket= and offload=BYTES)")
            logger.warning("%s: %s", workflow_execution_id, message)
            item = self.tasks.result_item(workflow_execution_id, step_id, run_id,
                                          error_output("RecordTooLarge", message), now)
        recorded = self.tasks.record_result(workflow_execution_id, step_id, run_id, item, now)
        if run_id is not None:
            held_message = self._held_message(job_key(workflow_execution_id, step_id, run_id),
                                              pop=True)
            if held_message is not None:
                self._free_slot(held_message[0])
                self.delete([held_message[1]])
            else:  # taken by another process: the job row says which slot it holds
                stored = self.tasks.job(workflow_execution_id, step_id, run_id)
                if stored is not None:
                    self._free_slot(stored)
        return recorded

    def ack(self, job: DispatchJob, output: dict[str, Any]) -> None:
        """Close the job row and delete the message; the result is applied, not stored."""
        self.tasks.tx.run([self.tasks.done_op(
            (job.workflow_execution_id, job.step_id, job.run_id), self.clock())])
        held_message = self._held_message(job.key, pop=True)
        self._free_slot(held_message[0] if held_message is not None else job)
        if held_message is not None:
            self.delete([held_message[1]])

    def gather(self, workflow_execution_id: str) -> list[WorkResult]:
        # Decoded from their rows here: the graph checks them without a deep copy.
        # (Results that arrive as messages, or through ``ResultHandler``, are not
        # marked: they are copied as before.)
        return [WorkResult(r.step_id, decoded(r.output), r.run_id)
                for r in self.open_results(self.tasks.pop_results(workflow_execution_id))]

    # -- payloads by reference ------------------------------------------------------------

    def _pack_job(self, job: DispatchJob) -> DispatchJob:
        if self.payloads is None:
            return job
        inputs = self.payloads.pack(job.inputs)
        return job if inputs is job.inputs else replace(job, inputs=inputs)

    def _pack_output(self, output: dict[str, Any]) -> dict[str, Any]:
        return output if self.payloads is None else self.payloads.pack_output(output)

    def open_job(self, job: DispatchJob) -> DispatchJob:
        """``job`` with its inputs as the executor must see them (a reference
        replaced by its value).

        Raises:
            PayloadMissing: the inputs are a reference to a blob that is gone.
        """
        if self.payloads is None:
            return job
        inputs = self.payloads.unpack(job.inputs)
        return job if inputs is job.inputs else replace(job, inputs=inputs)

    def open_results(self, results: Sequence[WorkResult]) -> list[WorkResult]:
        """``results`` with referenced outputs (whole, or values of their top-level
        keys) replaced by their values; an output whose blob is gone becomes an
        error output naming the key (the attempt fails)."""
        if self.payloads is None:
            return list(results)
        opened = []
        for result in results:
            step_id, output = result
            try:
                value = self.payloads.unpack_output(output)
            except PayloadMissing as exc:
                logger.error("result of step %r: %s", step_id, exc)
                value = error_output("PayloadMissing", f"the output of step {step_id!r}: {exc}")
            opened.append(result if value is output else WorkResult(step_id, value,
                                                                    result.run_id))
        return opened

    def _open_or_fail(self, job: DispatchJob) -> DispatchJob | None:
        """``open_job``; a job whose inputs are gone gets an error result instead."""
        try:
            return self.open_job(job)
        except PayloadMissing as exc:
            logger.error("job %s: %s; its attempt fails", job.key, exc)
            self.submit_work_result(job.workflow_execution_id, job.step_id, error_output(
                "PayloadMissing", f"the inputs of step {job.step_id!r}: {exc}"), job.run_id)
            return None

    def list_pending_jobs(self) -> list[DispatchJob]:
        """Jobs dispatched and not taken (job rows in state ``pending``; a table ``Scan``)."""
        return [self.tasks.row(item).job for item in self.tasks.pending_rows()]

    def cancel(self, workflow_execution_id: str) -> None:
        self.tasks.cancel_pending(workflow_execution_id, self.clock())

    # -- events: wake-ups and results as messages ---------------------------------------------

    def _events_url(self) -> str:
        if self.events_queue is None:
            raise BackendError("this SQSRunner has no events queue: pass events_queue (with a "
                               "routing callable as queue there is no default)")
        return self.events_queue

    def schedule_advance(self, workflow_execution_id: str, not_before: float | None = None
                         ) -> None:
        """Ask a handler to advance the execution now, or at ``not_before`` (epoch s).

        SQS delays a message by 15 minutes at most; a handler that receives the
        message early sends it again for the remaining time.
        """
        delay = 0 if not_before is None else min(_MAX_DELAY, max(
            0, math.ceil(not_before - self.clock())))
        self.send([(self._events_url(), advance_body(workflow_execution_id, not_before), delay)],
                  "advance message")

    def send_result(self, workflow_execution_id: str, step_id: str, output: dict[str, Any],
                    run_id: int | None = None) -> None:
        """Report a result as a message, for a handler to apply (workers outside AWS)."""
        self.send([(self._events_url(), result_body(workflow_execution_id, step_id,
                                                    self._pack_output(output), run_id), 0)],
                  "result message")

    def close(self) -> None:
        if self._owns_sqs:
            self.sqs.close()
        if self._owns_dynamodb:
            self.dynamodb.close()
