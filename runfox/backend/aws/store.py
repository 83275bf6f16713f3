"""``DynamoDBStore``: workflow records in a DynamoDB table.

One item per execution, keyed by ``id`` (the ``workflow_execution_id``):

======================  ==========================================================
attribute               content
======================  ==========================================================
``id`` (S)              the key
``version`` (N)         the write condition: a write succeeds only if it is the
                        version loaded (``ConditionExpression``); version 1 is a
                        create and needs no item (``attribute_not_exists``)
``status``, ``name``,   copies for ``runfox list`` (the ``by_status`` index)
``created_at``,
``updated_at``
``fixed`` (S or B)      what never changes: spec, inputs, ids (JSON, written once)
``body`` (S or B)       everything else: state, outcome, steps, times (JSON)
======================  ==========================================================

``fixed`` and ``body`` are JSON text, zlib-compressed once they pass
``compress_over`` bytes. A transition rewrites ``body`` and the header only
(``UpdateItem``); spec and inputs are not sent again.

Size policy: a record is one item, so it must fit DynamoDB's 400 KB item limit.
Before writing, the store computes the item's size and refuses a record over
``max_item_bytes`` (default 400,000 bytes, under the limits of both AWS and moto)
with ``RecordTooLarge`` naming the execution and the size. Nothing is written,
so the stored record stays consistent. Splitting records over several items
would need multi-item transactions capped at 100 items and was left out; keep
large payloads in S3 and pass references.

Listing: with the ``by_status`` global secondary index (hash ``status``, range
``created_at``, projecting ``name`` and ``updated_at``) ``runfox list --status``
is one ``Query``. The index is written on every transition because
``updated_at`` is projected. Without the index the store falls back to a
``Scan`` of the whole table, which reads every record.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from ...errors import BackendError, ConflictError, CorruptRecord, RecordTooLarge
from ...records import WorkflowRecord
from ...status import WorkflowStatus
from ..store import ExecutionSummary, Store, key_matches
from ._boto import CONDITION_FAILED, call, error_code, make_client
from ._codec import COMPRESS_OVER, decode_json, encode_json, item_size

__all__ = ["DEFAULT_STATUS_INDEX", "DynamoDBStore"]

logger = logging.getLogger("runfox.backend.aws")

#: Name of the optional status index created by ``create_resources`` and the template.
DEFAULT_STATUS_INDEX = "by_status"

_FIXED_FIELDS = ("schema", "workflow_id", "execution_id", "spec", "inputs")
_FIXED_CACHE = 1024


class DynamoDBStore(Store):
    """Workflow records in a DynamoDB table, written conditionally on their version.

    Args:
        table: the table name; its key must be ``id`` (string, hash key).
        client: a ready ``boto3`` DynamoDB client (then give none of the settings below).
        session: a ``boto3.session.Session`` to build the client from.
        region_name: the AWS region (default: from the environment or profile).
        endpoint_url: the endpoint (default: ``AWS_ENDPOINT_URL`` or AWS itself).
        config: a ``botocore.config.Config`` merged over the default (standard retries).
        status_index: the global secondary index used by ``list_executions``; if
            the table lacks it, or it is ``None``, listing scans the table.
        max_item_bytes: the largest record item written; see the module docstring.
        compress_over: JSON payloads of at least this many bytes are compressed.
        verify: check at construction that the table exists and has the expected
            key, so a misconfiguration fails at start rather than mid-workflow.

    Raises:
        BackendError: (with ``verify``) no credentials, no such table, or a table
            with another key schema; the message names the table and what to do.
        ValueError: a client was given together with settings to build one.
    """

    #: Every load decodes a new record and every write encodes its argument at once
    #: (only the identity of spec and inputs is remembered, for a size cache), so
    #: the public load and write need no copy of their own.
    isolates = True

    def __init__(
        self,
        table: str = "runfox-workflows",
        *,
        client: Any = None,
        session: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        config: Any = None,
        status_index: str | None = DEFAULT_STATUS_INDEX,
        max_item_bytes: int = 400_000,
        compress_over: int | None = COMPRESS_OVER,
        verify: bool = True,
    ) -> None:
        if max_item_bytes <= 0:
            raise ValueError("max_item_bytes must be > 0")
        self.table = table
        self.client, self._owns_client = make_client(
            "dynamodb", client=client, session=session, region_name=region_name,
            endpoint_url=endpoint_url, config=config)
        self.max_item_bytes = max_item_bytes
        self.compress_over = compress_over
        self.status_index = status_index
        self._fixed_sizes: OrderedDict[str, tuple[Any, Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        if verify:
            self._verify()

    def __repr__(self) -> str:
        return f"DynamoDBStore(table={self.table!r})"

    def _verify(self) -> None:
        description = call(self.client, "describe_table", self.table,
                           TableName=self.table)["Table"]
        keys = [(k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", [])]
        if keys != [("id", "HASH")]:
            raise BackendError(f"DynamoDB table {self.table!r} has key schema {keys}; runfox "
                               "records need a table keyed by 'id' (string, hash key only): "
                               "create one with runfox.backend.aws.create_resources() or "
                               "backends/aws/template.yaml")
        indexes = {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}
        if self.status_index is not None and self.status_index not in indexes:
            logger.warning("table %r has no index %r: runfox list will scan the whole table",
                           self.table, self.status_index)
            self.status_index = None

    # -- encoding -----------------------------------------------------------------

    def _remember_fixed(self, key: str, record: WorkflowRecord, size: int) -> None:
        with self._lock:
            self._fixed_sizes[key] = (record.spec, record.inputs, size)
            self._fixed_sizes.move_to_end(key)
            while len(self._fixed_sizes) > _FIXED_CACHE:
                self._fixed_sizes.popitem(last=False)

    def _fixed_size(self, key: str, record: WorkflowRecord) -> int:
        """Bytes of the ``fixed`` attribute, without encoding spec and inputs again."""
        with self._lock:
            cached = self._fixed_sizes.get(key)
        if cached is not None and cached[0] is record.spec and cached[1] is record.inputs:
            return cached[2]
        size = item_size({"fixed": encode_json(_fixed_part(record.to_dict()),
                                               self.compress_over)})
        self._remember_fixed(key, record, size)
        return size

    def _check_size(self, key: str, size: int) -> None:
        if size > self.max_item_bytes:
            raise RecordTooLarge(
                f"workflow execution {key!r}: its record would be {size:,} bytes in DynamoDB, "
                f"over this store's limit of {self.max_item_bytes:,} bytes (DynamoDB caps an "
                "item at 400 KB); nothing was written. Keep large payloads out of inputs and "
                "step outputs (store them in S3 and pass references)")

    # -- Store primitives ---------------------------------------------------------------

    def _load(self, workflow_execution_id: str) -> WorkflowRecord | None:
        item = call(self.client, "get_item", self.table, TableName=self.table,
                    Key={"id": {"S": workflow_execution_id}}, ConsistentRead=True).get("Item")
        if item is None:
            return None
        try:
            data = {**decode_json(item["fixed"]), **decode_json(item["body"])}
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptRecord(workflow_execution_id,
                                f"undecodable DynamoDB item: {type(exc).__name__}: {exc}") from exc
        record = WorkflowRecord.from_dict(data)
        self._remember_fixed(workflow_execution_id, record, item_size({"fixed": item["fixed"]}))
        return record

    def _write(self, record: WorkflowRecord, previous: WorkflowRecord | None) -> None:
        key = record.workflow_execution_id
        data = record.to_dict()
        fixed = _fixed_part(data)  # removes the fixed fields from data
        header = {
            "version": {"N": str(record.version)},
            "status": {"S": record.status.value},
            "name": {"S": record.plan.name},
            "created_at": {"N": repr(float(record.created_at))},
            "updated_at": {"N": repr(float(record.updated_at))},
        }
        body = encode_json(data, self.compress_over)
        unchanged = (previous is not None and record.version > 1
                     and record.spec is previous.spec and record.inputs is previous.inputs)
        if unchanged:
            size = (self._fixed_size(key, record)
                    + item_size({"id": {"S": key}, **header, "body": body}))
            self._check_size(key, size)
            self._conditional(
                "update_item", key, record.version,
                Key={"id": {"S": key}},
                UpdateExpression=("SET #version = :version, #status = :status, "
                                  "#updated_at = :updated_at, #body = :body"),
                ConditionExpression="#version = :previous",
                ExpressionAttributeNames={"#version": "version", "#status": "status",
                                          "#updated_at": "updated_at", "#body": "body"},
                ExpressionAttributeValues={
                    ":version": header["version"], ":status": header["status"],
                    ":updated_at": header["updated_at"], ":body": body,
                    ":previous": {"N": str(record.version - 1)}},
            )
            return
        fixed_value = encode_json(fixed, self.compress_over)
        item = {"id": {"S": key}, **header, "fixed": fixed_value, "body": body}
        self._check_size(key, item_size(item))
        if record.version == 1:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(id)"}
        else:
            condition = {"ConditionExpression": "#version = :previous",
                         "ExpressionAttributeNames": {"#version": "version"},
                         "ExpressionAttributeValues": {
                             ":previous": {"N": str(record.version - 1)}}}
        self._conditional("put_item", key, record.version, Item=item, **condition)
        self._remember_fixed(key, record, item_size({"fixed": fixed_value}))

    def _conditional(self, operation: str, key: str, version: int, **params: Any) -> None:
        try:
            call(self.client, operation, self.table, passthrough=(CONDITION_FAILED,
                                                                  "ValidationException"),
                 TableName=self.table, **params)
        except Exception as exc:
            code = error_code(exc)
            if code == CONDITION_FAILED:
                expected = "no record" if version == 1 else f"version {version - 1}"
                raise ConflictError(f"{key}: the stored record is not {expected} "
                                    "(another process wrote first)") from exc
            if code == "ValidationException" and "size" in str(exc).lower():
                raise RecordTooLarge(f"workflow execution {key!r}: DynamoDB refused the "
                                     f"record as too large ({exc}); nothing was written") from exc
            if code == "ValidationException":
                raise BackendError(f"dynamodb {operation} on {self.table!r} failed: {exc}") \
                    from exc
            raise

    def _list(self, status: WorkflowStatus | None, limit: int) -> list[ExecutionSummary]:
        if limit <= 0:
            return []
        names = {"#id": "id", "#name": "name", "#status": "status", "#c": "created_at",
                 "#u": "updated_at"}
        projection = "#id, #name, #status, #c, #u"
        items: list[dict[str, Any]] = []
        if self.status_index is not None:
            for wanted in [status] if status is not None else list(WorkflowStatus):
                items.extend(self._paged("query", limit, IndexName=self.status_index,
                                         KeyConditionExpression="#status = :status",
                                         ExpressionAttributeValues={":status": {"S": wanted}},
                                         ExpressionAttributeNames=names,
                                         ProjectionExpression=projection,
                                         ScanIndexForward=False))
        else:
            params: dict[str, Any] = {"ProjectionExpression": projection,
                                      "ExpressionAttributeNames": names}
            if status is not None:
                params["FilterExpression"] = "#status = :status"
                params["ExpressionAttributeValues"] = {":status": {"S": status.value}}
            items = self._paged("scan", None, **params)
        summaries = [_summary(item) for item in items]
        summaries.sort(key=lambda s: s.created_at, reverse=True)
        return summaries[:limit]

    def _find(self, prefix: str, limit: int) -> list[str]:
        """One filtered scan (keys and creation times only): ``begins_with`` on the
        key, or on its execution-id part through ``contains('#' + prefix)``."""
        items = self._paged("scan", None,
                            ProjectionExpression="#id, #c",
                            ExpressionAttributeNames={"#id": "id", "#c": "created_at"},
                            FilterExpression="begins_with(#id, :p) OR contains(#id, :hp)",
                            ExpressionAttributeValues={":p": {"S": prefix},
                                                       ":hp": {"S": "#" + prefix}})
        found = [(item["id"]["S"], float(item.get("created_at", {}).get("N", 0)))
                 for item in items]
        found.sort(key=lambda pair: (pair[0] != prefix, -pair[1]))
        return [key for key, _ in found if key_matches(key, prefix)][:limit]

    def _paged(self, operation: str, limit: int | None, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            if limit is not None:
                params["Limit"] = limit - len(items)
            page = call(self.client, operation, self.table, TableName=self.table, **params)
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start or (limit is not None and len(items) >= limit):
                return items
            params["ExclusiveStartKey"] = start

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def _fixed_part(data: dict[str, Any]) -> dict[str, Any]:
    return {name: data.pop(name) for name in _FIXED_FIELDS}


def _summary(item: dict[str, Any]) -> ExecutionSummary:
    return ExecutionSummary(
        workflow_execution_id=item["id"]["S"],
        name=item.get("name", {}).get("S", ""),
        status=WorkflowStatus(item["status"]["S"]),
        created_at=float(item["created_at"]["N"]),
        updated_at=float(item.get("updated_at", item["created_at"])["N"]),
    )
