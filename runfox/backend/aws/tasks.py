"""The task table: one row per job, one row per result not yet gathered.

The table is keyed by ``wf`` (hash: the ``workflow_execution_id``) and ``sk``
(range). Two kinds of rows share a partition, so one strongly consistent
``Query`` reads an execution's rows without touching any other execution:

``job#<step_id>#<run_id>``
    one per dispatched job: ``state`` (``pending`` -> ``taken`` -> ``done``, or
    ``cancelled``), the job JSON and its digest, the queue it went to, times. The
    conditional put on dispatch is what makes dispatch idempotent; the
    conditional update on receipt (``pending``/``taken`` -> ``taken``, digest
    equal) is what rejects a message that names no dispatched job, and skips a
    duplicate of a finished job or a job of a cancelled execution without running it.
``res#<step_id>#<run_id>``
    a result submitted with ``submit_work_result`` and not yet gathered. Gathering
    deletes it with a condition, so concurrent gatherers each get a result once.

Partitions whose ``wf`` starts with ``#`` are not executions (no execution id
does): ``#schedules`` holds the schedules (``runfox.backend.aws.schedules``) and
``#slot#<key>`` the holders of a concurrency key (``runfox.backend.aws.slots``).

Rows carry ``expires_at`` (epoch seconds) for DynamoDB's TTL, by default a day
past SQS's longest retention, so no message can outlive the row it refers to.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ...errors import BackendError
from ...results import DispatchJob, WorkResult
from ._boto import Refused, Transaction, all_pages, call, error_code
from ._codec import COMPRESS_OVER, decode_json, encode_json, item_size

__all__ = ["DEFAULT_TASKS_TABLE", "JobRow", "TaskTable", "Verdict"]

logger = logging.getLogger("runfox.backend.aws")

#: SQS keeps a message at most 14 days; rows outlive that by a day.
DEFAULT_TASK_TTL = 15 * 24 * 3600.0
#: The task table ``SQSRunner`` uses unless told otherwise; created when missing.
DEFAULT_TASKS_TABLE = "runfox-tasks"
#: Key schema and attribute types of the task table, and its TTL attribute.
TASKS_KEYS = [("wf", "HASH"), ("sk", "RANGE")]
TASKS_ATTRIBUTES = {"wf": "S", "sk": "S"}
TASKS_TTL_ATTRIBUTE = "expires_at"


class Verdict(StrEnum):
    """What receiving a job message found in the task table."""

    ACCEPTED = "accepted"      # run it
    DONE = "done"              # a result is already recorded: a duplicate, skip it
    CANCELLED = "cancelled"    # its execution was cancelled or ended: skip it
    UNKNOWN = "unknown"        # no such job was dispatched: leave for the DLQ
    MISMATCH = "mismatch"      # the body differs from what was dispatched: leave for the DLQ


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job row as stored (the subset runfox reads back)."""

    job: DispatchJob
    state: str
    queue_url: str
    created_at: float
    done_at: float | None


def job_sk(step_id: str, run_id: int) -> str:
    return f"job#{step_id}#{run_id}"


def result_sk(step_id: str, run_id: int | None) -> str:
    return f"res#{step_id}#{'-' if run_id is None else run_id}"


def digest(body: str) -> str:
    return hashlib.blake2b(body.encode("utf-8"), digest_size=16).hexdigest()


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value)) if isinstance(value, float) else str(value)}


def _key(wf: str, sk: str) -> dict[str, Any]:
    return {"wf": {"S": wf}, "sk": {"S": sk}}


class TaskTable:
    """Conditional operations on the task table. Used by ``SQSRunner``; see the module doc."""

    def __init__(self, client: Any, table: str, *, ttl: float = DEFAULT_TASK_TTL,
                 compress_over: int | None = COMPRESS_OVER,
                 max_item_bytes: int = 400_000) -> None:
        self.client = client
        self.table = table
        self.ttl = ttl
        self.compress_over = compress_over
        self.max_item_bytes = max_item_bytes
        self.tx = Transaction(client, table)

    def verify(self, *, create: bool = False) -> None:
        """Fail now, naming the table, if it is missing or keyed differently.

        With ``create``, a missing table is created instead (``create``).
        """
        missing = "ResourceNotFoundException"
        try:
            description = call(self.client, "describe_table", self.table,
                               passthrough=(missing,) if create else (),
                               TableName=self.table)["Table"]
        except Exception as exc:
            if not create or error_code(exc) != missing:
                raise
            self.create()
            return
        keys = [(k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", [])]
        if keys != TASKS_KEYS:
            raise BackendError(f"DynamoDB table {self.table!r} has key schema {keys}; the "
                               "runfox task table needs hash key 'wf' and range key 'sk' "
                               "(strings): create it with runfox.backend.aws.create_resources() "
                               "or backends/aws/template.yaml")

    def create(self) -> None:
        """Create the table if it is missing (on demand, TTL on ``expires_at``); wait for it."""
        logger.info("creating the DynamoDB task table %r", self.table)
        try:
            call(self.client, "create_table", self.table,
                 passthrough=("ResourceInUseException",), TableName=self.table,
                 BillingMode="PAY_PER_REQUEST",
                 KeySchema=[{"AttributeName": n, "KeyType": k} for n, k in TASKS_KEYS],
                 AttributeDefinitions=[{"AttributeName": n, "AttributeType": t}
                                       for n, t in TASKS_ATTRIBUTES.items()])
        except Exception as exc:  # another process made it first
            if error_code(exc) != "ResourceInUseException":
                raise
        self.client.get_waiter("table_exists").wait(
            TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        try:
            call(self.client, "update_time_to_live", self.table,
                 passthrough=("ValidationException",), TableName=self.table,
                 TimeToLiveSpecification={"Enabled": True,
                                          "AttributeName": TASKS_TTL_ATTRIBUTE})
        except Exception as exc:  # already enabled
            if error_code(exc) != "ValidationException":
                raise

    # -- operations, as TransactWriteItems entries ------------------------------------

    def put_job_op(self, job: DispatchJob, body: str, queue_url: str, now: float
                   ) -> dict[str, Any]:
        """Create the row of a job unless it exists (then the stored row is returned)."""
        item = {**_key(job.workflow_execution_id, job_sk(job.step_id, job.run_id)),
                "state": {"S": "pending"}, "job": encode_json(job.to_dict(), self.compress_over),
                "digest": {"S": digest(body)}, "queue": {"S": queue_url},
                "created_at": _n(now), "expires_at": _n(int(now + self.ttl))}
        return {"Put": {"TableName": self.table, "Item": item,
                        "ConditionExpression": "attribute_not_exists(sk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}

    def accept_op(self, job: DispatchJob, body: str, now: float) -> dict[str, Any]:
        """Mark a received job taken if it is known, unfinished and matches its row."""
        return {"Update": {
            "TableName": self.table,
            "Key": _key(job.workflow_execution_id, job_sk(job.step_id, job.run_id)),
            "UpdateExpression": "SET #state = :taken, taken_at = :now ADD receives :one",
            "ConditionExpression": "#state IN (:pending, :taken) AND digest = :digest",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {":taken": {"S": "taken"}, ":pending": {"S": "pending"},
                                          ":now": _n(now), ":one": {"N": "1"},
                                          ":digest": {"S": digest(body)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}

    def done_op(self, job_key: tuple[str, str, int], now: float) -> dict[str, Any]:
        """Mark an existing job row done (its result was applied by a handler)."""
        wf, step_id, run_id = job_key
        return {"Update": {
            "TableName": self.table, "Key": _key(wf, job_sk(step_id, run_id)),
            "UpdateExpression": "SET #state = :done, done_at = :now",
            "ConditionExpression": "attribute_exists(sk)",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {":done": {"S": "done"}, ":now": _n(now)}}}

    # -- verdicts -------------------------------------------------------------------------

    @staticmethod
    def verdict(refused: Refused | None, body: str) -> Verdict:
        """Read the outcome of ``accept_op``."""
        if refused is None:
            return Verdict.ACCEPTED
        stored = refused.item
        if not stored:
            return Verdict.UNKNOWN
        if stored.get("digest", {}).get("S") != digest(body):
            return Verdict.MISMATCH
        state = stored.get("state", {}).get("S")
        return Verdict.DONE if state == "done" else Verdict.CANCELLED

    @staticmethod
    def row(item: dict[str, Any]) -> JobRow:
        done_at = item.get("done_at")
        return JobRow(DispatchJob.from_dict(decode_json(item["job"])),
                      item.get("state", {}).get("S", ""), item.get("queue", {}).get("S", ""),
                      float(item.get("created_at", {"N": "0"})["N"]),
                      float(done_at["N"]) if done_at else None)

    def reopen(self, row: JobRow, now: float) -> bool:
        """Set a stale ``pending``/``done`` row back to ``pending`` to send it again.

        Conditional on the row being as read, so of several processes re-dispatching
        the same job at once only one sends it. ``True`` if this call won.
        """
        job = row.job
        try:
            call(self.client, "update_item", self.table,
                 passthrough=("ConditionalCheckFailedException",),
                 TableName=self.table, Key=_key(job.workflow_execution_id,
                                                job_sk(job.step_id, job.run_id)),
                 UpdateExpression="SET #state = :pending, created_at = :now REMOVE done_at",
                 ConditionExpression="#state = :old AND created_at = :created",
                 ExpressionAttributeNames={"#state": "state"},
                 ExpressionAttributeValues={":pending": {"S": "pending"}, ":now": _n(now),
                                            ":old": {"S": row.state},
                                            ":created": _n(row.created_at)})
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") != \
                    "ConditionalCheckFailedException":
                raise
            return False
        return True

    def release(self, key: tuple[str, str, int]) -> None:
        """Show a taken job as pending again (after ``release``)."""
        wf, step_id, run_id = key
        self.tx.run([{"Update": {
            "TableName": self.table, "Key": _key(wf, job_sk(step_id, run_id)),
            "UpdateExpression": "SET #state = :pending",
            "ConditionExpression": "#state = :taken",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {":pending": {"S": "pending"},
                                          ":taken": {"S": "taken"}}}}])

    # -- results ----------------------------------------------------------------------------

    def result_item(self, wf: str, step_id: str, run_id: int | None,
                    output: dict[str, Any], now: float) -> dict[str, Any]:
        item = {**_key(wf, result_sk(step_id, run_id)), "step_id": {"S": step_id},
                "output": encode_json(output, self.compress_over),
                "submitted_at": _n(now), "expires_at": _n(int(now + self.ttl))}
        if run_id is not None:
            item["run_id"] = {"N": str(run_id)}
        return item

    def fits(self, item: dict[str, Any]) -> bool:
        return item_size(item) <= self.max_item_bytes

    def record_result(self, wf: str, step_id: str, run_id: int | None, item: dict[str, Any],
                      now: float) -> bool:
        """Mark the job done and store its result, atomically; ``False`` if already done."""
        done_row = {"Update": {
            "TableName": self.table,
            "Key": _key(wf, job_sk(step_id, run_id) if run_id is not None
                        else f"job#{step_id}#-"),
            "UpdateExpression": "SET #state = :done, done_at = :now, "
                                "expires_at = if_not_exists(expires_at, :expires)",
            "ConditionExpression": "attribute_not_exists(sk) OR #state <> :done",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {":done": {"S": "done"}, ":now": _n(now),
                                          ":expires": _n(int(now + self.ttl))}}}
        put = {"Put": {"TableName": self.table, "Item": item,
                       "ConditionExpression": "attribute_not_exists(sk)"}}
        return all(r is None for r in self.tx.run([done_row, put]))

    def pop_results(self, wf: str) -> list[WorkResult]:
        """Take the execution's un-gathered results; each goes to exactly one caller."""
        items = self.query(wf, "res#")
        decoded = []
        for item in items:
            try:
                run_id = int(item["run_id"]["N"]) if "run_id" in item else None
                decoded.append((item, WorkResult(item["step_id"]["S"], decode_json(item["output"]),
                                                 run_id)))
            except (KeyError, ValueError, TypeError) as exc:
                logger.error("result row %s/%s cannot be decoded (%s); left in place", wf,
                             item.get("sk", {}).get("S"), exc)
        if not decoded:
            return []
        refused = self.tx.run([{"Delete": {"TableName": self.table,
                                           "Key": _key(wf, item["sk"]["S"]),
                                           "ConditionExpression": "attribute_exists(sk)"}}
                               for item, _ in decoded])
        won = [(float(item["submitted_at"]["N"]), result)
               for (item, result), r in zip(decoded, refused, strict=True) if r is None]
        won.sort(key=lambda pair: pair[0])
        return [result for _, result in won]

    # -- reading -----------------------------------------------------------------------------

    def query(self, wf: str, prefix: str, state: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "KeyConditionExpression": "wf = :wf AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":wf": {"S": wf}, ":prefix": {"S": prefix}},
            "ConsistentRead": True}
        if state is not None:
            params["FilterExpression"] = "#state = :state"
            params["ExpressionAttributeNames"] = {"#state": "state"}
            params["ExpressionAttributeValues"][":state"] = {"S": state}
        return self._pages("query", params)

    def pending_rows(self) -> list[dict[str, Any]]:
        """Every job row in state ``pending`` (a ``Scan``: reads the whole table)."""
        return self._pages("scan", {
            "FilterExpression": "#state = :pending AND begins_with(sk, :job)",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {":pending": {"S": "pending"}, ":job": {"S": "job#"}},
            "ConsistentRead": True})

    def _pages(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return all_pages(self.client, operation, self.table, params)

    def cancel_pending(self, wf: str, now: float) -> int:
        """Mark the execution's pending jobs cancelled; returns how many."""
        rows = self.query(wf, "job#", state="pending")
        ops = [{"Update": {
            "TableName": self.table, "Key": _key(wf, row["sk"]["S"]),
            "UpdateExpression": "SET #state = :cancelled, cancelled_at = :now",
            "ConditionExpression": "#state = :pending",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {":cancelled": {"S": "cancelled"},
                                          ":pending": {"S": "pending"}, ":now": _n(now)}}}
            for row in rows]
        return sum(r is None for r in self.tx.run(ops))

    def job(self, wf: str, step_id: str, run_id: int) -> DispatchJob | None:
        """The job as dispatched (from its row), or ``None`` if it has no row."""
        item = call(self.client, "get_item", self.table, TableName=self.table,
                    Key=_key(wf, job_sk(step_id, run_id)), ConsistentRead=True).get("Item")
        return None if item is None else self.row(item).job

    def current_run(self, wf: str, step_id: str) -> int | None:
        """The newest unfinished run of a step, for results submitted without a run_id."""
        runs = []
        for item in self.query(wf, f"job#{step_id}#"):
            tail = item["sk"]["S"].rsplit("#", 1)[-1]
            if tail.isdigit() and item.get("state", {}).get("S") in ("pending", "taken"):
                runs.append(int(tail))
        return max(runs) if runs else None


def unique_jobs(jobs: Iterable[DispatchJob]) -> list[DispatchJob]:
    seen: dict[str, DispatchJob] = {}
    for job in jobs:
        seen.setdefault(job.key, job)
    return list(seen.values())

