"""``DynamoScheduleStore``: schedules as items of the task table.

Every schedule is one item in a partition of its own in the task table
(``wf = "#schedules"``; no execution id starts with ``#``), sorted by name
(``sk = <name>``):

==================  ==========================================================
attribute           content
==================  ==========================================================
``version`` (N)     the write condition: ``replace`` succeeds only if the stored
                    version is the one before (``ConditionExpression``)
``due_at`` (N)      ``Schedule.due_at``; absent when the schedule is not due
                    (paused, or an ``at`` that has fired)
``spec`` (S or B)   the stored spec (JSON, compressed when large)
``data`` (S or B)   everything else (trigger, inputs, policies, pending fires)
==================  ==========================================================

Finding due schedules (``due``) is one strongly consistent ``Query`` of that
partition with the filter ``due_at <= now``. The cost, chosen knowingly: a
query is billed for every item it reads before the filter, so each tick reads
all schedules (one read unit per 4 KB of schedule items, rounded up per
request page of 1 MB), whether due or not. With tens or hundreds of schedules,
and ticks once a minute (the ``schedule_tick`` Lambda) or once per worker loop,
that is a few read units per tick. Thousands of schedules would want a second,
small item per schedule keyed by its due time (``sk = due#<time>#<name>``) so
the query reads only what is due; that costs two extra writes per fire and was
left out. The schedule items carry no ``expires_at``, so the table's TTL never
removes them.
"""

from __future__ import annotations

import builtins
from typing import Any

from ...errors import ConflictError, CorruptRecord
from ...schedule import Schedule
from ..schedule_store import ScheduleStore, exists
from ._boto import CONDITION_FAILED, all_pages, call, error_code
from ._codec import SharedTable, decode_json, encode_json

__all__ = ["SCHEDULES_PARTITION", "DynamoScheduleStore"]

#: The task-table partition holding the schedules.
SCHEDULES_PARTITION = "#schedules"


class DynamoScheduleStore(SharedTable, ScheduleStore):
    """Schedules in the task table ``table`` (hash ``wf``, range ``sk``) via ``client``.

    Shares the record store's client, so ``close`` does nothing.
    """

    @staticmethod
    def _key(name: str) -> dict[str, Any]:
        return {"wf": {"S": SCHEDULES_PARTITION}, "sk": {"S": name}}

    def _item(self, schedule: Schedule) -> dict[str, Any]:
        data = schedule.to_dict()
        spec = data.pop("spec")
        item = {**self._key(schedule.name), "version": {"N": str(schedule.version)},
                "spec": encode_json(spec, self.compress_over),
                "data": encode_json(data, self.compress_over)}
        if schedule.due_at is not None:
            item["due_at"] = {"N": repr(float(schedule.due_at))}
        return item

    @staticmethod
    def _decode(item: dict[str, Any]) -> Schedule:
        name = item.get("sk", {}).get("S", "?")
        try:
            data = decode_json(item["data"])
            data["spec"] = decode_json(item["spec"])
            data["name"] = name
            data["version"] = int(item["version"]["N"])
            return Schedule.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRecord(f"schedule {name}", f"{type(exc).__name__}: {exc}") from exc

    def _put(self, schedule: Schedule, **condition: Any) -> bool:
        """A conditional put; ``False`` when the condition failed."""
        try:
            call(self.client, "put_item", self.table, passthrough=(CONDITION_FAILED,),
                 TableName=self.table, Item=self._item(schedule), **condition)
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            return False
        return True

    def _insert(self, schedule: Schedule) -> None:
        if not self._put(schedule, ConditionExpression="attribute_not_exists(sk)"):
            raise exists(schedule.name)

    def _get(self, name: str) -> Schedule | None:
        item = call(self.client, "get_item", self.table, TableName=self.table,
                    Key=self._key(name), ConsistentRead=True).get("Item")
        return None if item is None else self._decode(item)

    def _query(self, **extra: Any) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {
            "KeyConditionExpression": "wf = :wf",
            "ExpressionAttributeValues": {":wf": {"S": SCHEDULES_PARTITION}},
            "ConsistentRead": True}
        for name, value in extra.items():
            if isinstance(value, dict) and isinstance(params.get(name), dict):
                params[name] = {**params[name], **value}
            else:
                params[name] = value
        return all_pages(self.client, "query", self.table, params)

    def _list(self) -> builtins.list[Schedule]:
        return [self._decode(item) for item in self._query()]

    def _due(self, now: float, limit: int) -> builtins.list[Schedule]:
        items = self._query(FilterExpression="due_at <= :now",
                            ExpressionAttributeValues={":now": {"N": repr(float(now))}})
        due = [self._decode(item) for item in items]
        due.sort(key=lambda s: (s.due_at or 0.0, s.name))
        return due[:limit]

    def _replace(self, schedule: Schedule) -> None:
        if not self._put(schedule, ConditionExpression="version = :previous",
                         ExpressionAttributeValues={
                             ":previous": {"N": str(schedule.version - 1)}}):
            raise ConflictError(f"schedule {schedule.name!r}: the stored version is not "
                                f"{schedule.version - 1}; another writer won")

    def _delete(self, name: str) -> bool:
        old = call(self.client, "delete_item", self.table, TableName=self.table,
                   Key=self._key(name), ReturnValues="ALL_OLD")
        return bool(old.get("Attributes"))
