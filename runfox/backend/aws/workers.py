"""``DynamoWorkerRegistry``: live workers as items of the task table.

Every worker is one item of the task-table partition ``wf = "#workers"`` (no
execution id starts with ``#``), sorted by worker id (``sk``): ``heartbeat_at``
(N), ``data`` (S, JSON: host, pid, executor, concurrency, started, interval,
lease), ``jobs`` (S, JSON: held job key -> claimed at) and ``expires_at`` (N),
which the table's TTL reads: a worker killed without removing its item leaves it
for ``WORKER_TTL`` seconds after its last heartbeat (DynamoDB deletes expired
items within a few days; ``list`` skips nothing, readers mark it dead).

``beat`` is one ``UpdateItem`` conditional on the item existing; ``list`` one
strongly consistent ``Query`` of the partition.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Mapping
from typing import Any

from ...errors import CorruptRecord
from ..workers import WorkerInfo, WorkerRegistry
from ._boto import CONDITION_FAILED, all_pages, call, error_code
from ._codec import SharedTable

__all__ = ["WORKERS_PARTITION", "WORKER_TTL", "DynamoWorkerRegistry"]

logger = logging.getLogger("runfox.backend.aws")

#: The task-table partition holding the worker items.
WORKERS_PARTITION = "#workers"
#: Seconds a worker item outlives its last heartbeat (DynamoDB TTL).
WORKER_TTL = 86400


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


class DynamoWorkerRegistry(SharedTable, WorkerRegistry):
    """Worker items in the task table ``table`` via ``client`` (shared with the store)."""

    @staticmethod
    def _key(worker_id: str) -> dict[str, Any]:
        return {"wf": {"S": WORKERS_PARTITION}, "sk": {"S": worker_id}}

    def register(self, info: WorkerInfo) -> None:
        data = info.to_dict()
        jobs = data.pop("jobs")
        item = {**self._key(info.id), "heartbeat_at": _n(info.heartbeat_at),
                "data": {"S": json.dumps(data)}, "jobs": {"S": json.dumps(jobs)},
                "expires_at": {"N": str(int(info.heartbeat_at + WORKER_TTL))}}
        call(self.client, "put_item", self.table, TableName=self.table, Item=item)

    def beat(self, worker_id: str, now: float, jobs: Mapping[str, float]) -> bool:
        try:
            call(self.client, "update_item", self.table, passthrough=(CONDITION_FAILED,),
                 TableName=self.table, Key=self._key(worker_id),
                 UpdateExpression="SET heartbeat_at = :now, jobs = :jobs, expires_at = :exp",
                 ConditionExpression="attribute_exists(sk)",
                 ExpressionAttributeValues={":now": _n(now), ":jobs": {"S": json.dumps(dict(jobs))},
                                            ":exp": {"N": str(int(now + WORKER_TTL))}})
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            return False
        return True

    def remove(self, worker_id: str) -> None:
        call(self.client, "delete_item", self.table, TableName=self.table,
             Key=self._key(worker_id))

    def _items(self) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {"KeyConditionExpression": "wf = :wf",
                                  "ExpressionAttributeValues": {":wf": {"S": WORKERS_PARTITION}},
                                  "ConsistentRead": True}
        return all_pages(self.client, "query", self.table, params)

    def list(self) -> builtins.list[WorkerInfo]:
        found = []
        for item in self._items():
            worker_id = item.get("sk", {}).get("S", "?")
            try:
                data = json.loads(item["data"]["S"])
                data.update(id=worker_id, jobs=json.loads(item["jobs"]["S"]),
                            heartbeat_at=float(item["heartbeat_at"]["N"]))
                found.append(WorkerInfo.from_dict(data))
            except (KeyError, TypeError, ValueError, AttributeError, CorruptRecord) as exc:
                logger.warning("worker item %r skipped: %s", worker_id, exc)
        return found

    def prune(self, before: float) -> int:
        gone = 0
        for info in self.list():
            if info.heartbeat_at < before:
                self.remove(info.id)
                gone += 1
        return gone
