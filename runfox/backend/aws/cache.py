"""``DynamoCache``: the step cache as items of the workflows table.

Every entry is one item with ``id = "cache#<key>"`` (record ids are ``<md5
hex>#...`` and idempotency keys ``key#...``, so no other item starts with
``cache#``), carrying ``fn`` (S), ``version`` (S, JSON), ``stored_at`` (N) and
``output`` (JSON, compressed when large, as records are). The items have no
``status``, so the status index never holds them and the scans of ``list`` and
``find`` (which filter on ``attribute_exists(status)``) skip them.

``get_many`` is ``BatchGetItem`` (100 keys per request, strongly consistent,
unprocessed keys asked again); ``put`` an unconditional ``PutItem`` (latest wins;
DynamoDB writes an item whole); ``list`` and ``clear`` a filtered scan of the
table, billed for every item read: fine for inspecting and clearing by hand,
not for a hot path. An entry over DynamoDB's 400 KB item limit is refused by
DynamoDB and logged by the Backend (the step ran; the next run misses).
"""

from __future__ import annotations

import builtins
from typing import Any

from ...cache import CacheEntry
from ..cache_store import Cache, decode_entry
from ._boto import all_pages, call
from ._codec import SharedTable, decode_json, dumps, encode_json

__all__ = ["CACHE_PREFIX", "DynamoCache"]

#: The id prefix of cache items in the workflows table.
CACHE_PREFIX = "cache#"
_BATCH = 100


def _decode(item: dict[str, Any]) -> CacheEntry | None:
    key = item.get("id", {}).get("S", "?")[len(CACHE_PREFIX):]
    try:
        output = decode_json(item["output"])
        stored_at = float(item["stored_at"]["N"])
        fn = item["fn"]["S"]
        version = item["version"]["S"]
    except (KeyError, TypeError, ValueError) as exc:
        return decode_entry(key, None, None, None, f"unreadable item: {exc}")
    return decode_entry(key, fn, version, stored_at, output)


class DynamoCache(SharedTable, Cache):
    """Cache entries in the workflows table ``table`` (hash key ``id``) via ``client``.

    Shares the record store's client, so ``close`` does nothing.
    """

    @staticmethod
    def _key(key: str) -> dict[str, Any]:
        return {"id": {"S": CACHE_PREFIX + key}}

    def _get_many(self, keys: builtins.list[str]) -> dict[str, CacheEntry]:
        found: dict[str, CacheEntry] = {}
        for start in range(0, len(keys), _BATCH):
            request: dict[str, Any] = {self.table: {
                "Keys": [self._key(k) for k in keys[start:start + _BATCH]],
                "ConsistentRead": True}}
            while request:
                page = call(self.client, "batch_get_item", self.table, RequestItems=request)
                for item in page.get("Responses", {}).get(self.table, []):
                    entry = _decode(item)
                    if entry is not None:
                        found[entry.key] = entry
                request = page.get("UnprocessedKeys") or {}
        return found

    def _put(self, entry: CacheEntry) -> None:
        item = {**self._key(entry.key), "fn": {"S": entry.fn},
                "version": {"S": dumps(entry.version)},
                "stored_at": {"N": repr(float(entry.stored_at))},
                "output": encode_json(entry.output, self.compress_over)}
        call(self.client, "put_item", self.table, TableName=self.table, Item=item)

    def _scan(self, fn: str | None) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {
            "FilterExpression": "begins_with(#id, :p)",
            "ExpressionAttributeNames": {"#id": "id"},
            "ExpressionAttributeValues": {":p": {"S": CACHE_PREFIX}},
            "ConsistentRead": True}
        if fn is not None:
            params["FilterExpression"] += " AND #fn = :fn"
            params["ExpressionAttributeNames"]["#fn"] = "fn"
            params["ExpressionAttributeValues"][":fn"] = {"S": fn}
        return all_pages(self.client, "scan", self.table, params)

    def _list(self, fn: str | None) -> builtins.list[CacheEntry]:
        return [e for e in map(_decode, self._scan(fn)) if e is not None]

    def _delete(self, keys: builtins.list[str]) -> int:
        gone = 0
        for key in keys:
            old = call(self.client, "delete_item", self.table, TableName=self.table,
                       Key=self._key(key), ReturnValues="ALL_OLD")
            gone += bool(old.get("Attributes"))
        return gone

    def _clear(self, fn: str | None) -> int:
        keys = [item["id"]["S"][len(CACHE_PREFIX):] for item in self._scan(fn)]
        return self._delete(keys)
