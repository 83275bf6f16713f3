"""Concurrency slots in the task table: a conditional holder list per key.

One item per concurrency key, ``wf = "#slot#<key>"`` (no execution id starts
with ``#``), ``sk = "slot"``:

================  ===========================================================
attribute         content
================  ===========================================================
``holders`` (M)   job key -> lease end (epoch seconds) of each job holding a slot
``version`` (N)   bumped by every write; claims are compare-and-set on it
================  ===========================================================

``claim`` reads the item (strongly consistent), drops holders whose lease has
ended, and adds the job only if fewer than ``limit`` live holders remain, in
one ``PutItem`` conditional on the version it read (or on the item not
existing). Two claimers racing for the last slot cannot both win: the second
write finds another version and reads again. ``extend`` (heartbeat) and
``free`` change one holder and bump the version in one ``UpdateItem``, so a
claim computed from an older read fails instead of undoing them. A holder that
stops heartbeating (its process died) no longer counts once its lease ends.
"""

from __future__ import annotations

import random
import time
from typing import Any

from ...errors import BackendError
from ._boto import CONDITION_FAILED, call, error_code

__all__ = ["SlotTable"]

_ATTEMPTS = 50


def slot_key(concurrency_key: str) -> dict[str, Any]:
    return {"wf": {"S": f"#slot#{concurrency_key}"}, "sk": {"S": "slot"}}


class SlotTable:
    """Claims, extends and frees slots in the task table ``table``."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def _conditional(self, operation: str, **params: Any) -> bool:
        try:
            call(self.client, operation, self.table, passthrough=(CONDITION_FAILED,),
                 TableName=self.table, **params)
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            return False
        return True

    def holders(self, key: str) -> tuple[dict[str, float], int | None]:
        """The holders of ``key`` (expired ones included) and the item's version."""
        item = call(self.client, "get_item", self.table, TableName=self.table,
                    Key=slot_key(key), ConsistentRead=True).get("Item")
        if item is None:
            return {}, None
        held = {name: float(value["N"])
                for name, value in item.get("holders", {}).get("M", {}).items()}
        return held, int(item.get("version", {"N": "0"})["N"])

    def claim(self, key: str, limit: int, holder: str, lease_end: float, now: float) -> bool:
        """Take a slot of ``key`` for ``holder`` until ``lease_end``; ``False`` if full.

        A holder that holds a slot already keeps it (its lease is renewed).
        """
        for attempt in range(_ATTEMPTS):
            held, version = self.holders(key)
            live = {name: end for name, end in held.items() if end > now}
            if holder not in live and len(live) >= limit:
                return False
            live[holder] = lease_end
            item = {**slot_key(key), "holders": {"M": {
                name: {"N": repr(float(end))} for name, end in live.items()}},
                "version": {"N": str((version or 0) + 1)}}
            condition: dict[str, Any] = (
                {"ConditionExpression": "attribute_not_exists(sk)"} if version is None else
                {"ConditionExpression": "version = :v",
                 "ExpressionAttributeValues": {":v": {"N": str(version)}}})
            if self._conditional("put_item", Item=item, **condition):
                return True
            time.sleep(random.uniform(0, min(0.1, 0.002 * 2 ** attempt)))
        raise BackendError(f"concurrency slot {key!r} in {self.table!r}: gave up after "
                           f"{_ATTEMPTS} conflicting claims")

    def extend(self, key: str, holder: str, lease_end: float) -> bool:
        """Renew ``holder``'s lease; ``False`` if it holds no slot of ``key`` any more."""
        return self._conditional(
            "update_item", Key=slot_key(key),
            UpdateExpression="SET holders.#h = :end ADD version :one",
            ConditionExpression="attribute_exists(holders.#h)",
            ExpressionAttributeNames={"#h": holder},
            ExpressionAttributeValues={":end": {"N": repr(float(lease_end))},
                                       ":one": {"N": "1"}})

    def free(self, key: str, holder: str) -> None:
        """Give ``holder``'s slot of ``key`` back (nothing if it holds none)."""
        self._conditional(
            "update_item", Key=slot_key(key),
            UpdateExpression="REMOVE holders.#h ADD version :one",
            ConditionExpression="attribute_exists(holders.#h)",
            ExpressionAttributeNames={"#h": holder},
            ExpressionAttributeValues={":one": {"N": "1"}})
