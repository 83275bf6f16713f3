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
would need multi-item transactions capped at 100 items and was left out.
Instead, with ``payloads`` (an ``Offloader`` over ``S3Payloads``, which an
``aws://`` URL sets up) every value over the offload threshold (32 KiB by
default) is stored once in S3 and the item keeps a reference
(``runfox.payloads``), so ``RecordTooLarge`` needs many medium-sized values;
its message names the setting to change.

Idempotency keys (``Store.create(record, key)``): one more item per key in the
same table, ``id = "key#<key>"`` with ``owner`` (the execution's id) and
``created_at``. Creating a keyed execution is one ``TransactWriteItems`` of two
puts, each conditional on ``attribute_not_exists(id)``: the record and the key
item are stored together or not at all, and of any number of racing creators
exactly one wins; a loser reads the owner from the refused key item. Execution
ids are ``<md5 hex>#<execution id>``, so no record id begins with ``key#``. Key
items have no ``status``, so the status index never holds them, and the
scanning paths of ``list_executions`` and ``find`` filter on
``attribute_exists(status)``.

Schedules (``schedules()``) live in the *task* table, which the store is told
about with ``tasks_table`` (``parts_from_url`` passes it); see
``runfox.backend.aws.schedules``.

History (``runfox.history``): a transition's events are stored as history items
in the same table, keyed ``~history~<key with # as ~>~<version>~<part>`` (so no
prefix of an execution key finds them), each holding up to ~300 KB of events as
JSON (``events``). They are put in the same ``TransactWriteItems`` as the
record's conditional write, so they exist exactly when the record version that
made them does. A transition whose events need more than 99 items (thousands of
steps claimed at once) writes the record first and then puts the items keyed
by version and part, so a retry overwrites rather than duplicates; if the
process dies in between, that transition's events are missing (documented, not
hidden: the history then jumps a version). ``_history`` reads the items with
``BatchGetItem`` by version (1..current); ``_prune`` queries the status index
(or scans) for finished executions and deletes record and history items with
``BatchWriteItem``. Jobs live in the task table, whose TTL removes them.

Listing: with the ``by_status`` global secondary index (hash ``status``, range
``created_at``, projecting ``name`` and ``updated_at``) ``runfox list --status``
is one ``Query``. The index is written on every transition because
``updated_at`` is projected. Without the index the store falls back to a
``Scan`` of the whole table, which reads every record.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ...errors import BackendError, ConflictError, CorruptRecord, RecordTooLarge
from ...history import Event, corrupt_event
from ...records import WorkflowRecord
from ...status import WorkflowStatus
from ..cache_store import Cache
from ..payload_store import OFFLOAD_ENV, Offloader
from ..schedule_store import ScheduleStore
from ..store import ExecutionSummary, Store, key_matches
from ..workers import WorkerRegistry
from ._boto import CONDITION_FAILED, call, error_code, make_client
from ._codec import COMPRESS_OVER, decode_json, dumps, encode_json, item_size

__all__ = ["DEFAULT_STATUS_INDEX", "DynamoDBStore"]

logger = logging.getLogger("runfox.backend.aws")

#: Name of the optional status index created by ``create_resources`` and the template.
DEFAULT_STATUS_INDEX = "by_status"

_FIXED_FIELDS = ("schema", "workflow_id", "execution_id", "spec", "inputs")
_FIXED_CACHE = 1024
#: Id prefix of idempotency-key items (no record id starts with it).
KEY_PREFIX = "key#"
#: Transactions tried when creating under a key keeps losing races.
_KEY_ATTEMPTS = 20
_RETRYABLE = {"None", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}

#: History items: the id prefix, the JSON bytes per item, items per transaction.
_HISTORY = "~history~"
_HISTORY_PART_BYTES = 300_000
_HISTORY_TX_PARTS = 99
_BATCH_GET = 100
_BATCH_WRITE = 25


def history_item_id(workflow_execution_id: str, version: int, part: int) -> str:
    """The id of a history item: never begins like an execution key or its id part."""
    return f"{_HISTORY}{workflow_execution_id.replace('#', '~')}~{version:012d}~{part}"


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
        tasks_table: the runner's task table, where schedules are kept
            (``schedules()``); without it the store keeps no schedules.
        payloads: where values over its threshold go (an ``Offloader``, usually
            over ``S3Payloads``); ``None``: every value stays in the item.

    Raises:
        BackendError: (with ``verify``) no credentials, no such table, or a table
            with another key schema; the message names the table and what to do.
        ValueError: a client was given together with settings to build one.
    """

    #: Every load decodes a new record and every write encodes its argument at once
    #: (only the identity of spec and inputs is remembered, for a size cache), so
    #: the public load and write need no copy of their own.
    isolates = True
    keeps_history = True

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
        tasks_table: str | None = None,
        payloads: Offloader | None = None,
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
        self.tasks_table = tasks_table
        self._schedules: ScheduleStore | None = None
        self._step_cache: Cache | None = None
        self._payloads = payloads
        # Unpacked values are shared with the offloader's cache: hand out copies.
        self.isolates = payloads is None  # type: ignore[misc]
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
            if self._payloads is None or self._payloads.threshold is None:
                fix = ("turn on offloading: give the aws:// URL a payload bucket (bucket=) "
                       f"and an offload threshold (offload=BYTES or {OFFLOAD_ENV}), so large "
                       "values go to S3 and the record keeps references")
            else:
                fix = (f"values over {self._payloads.threshold:,} bytes already go to S3; "
                       f"lower the offload threshold (aws:// URL offload=BYTES or "
                       f"{OFFLOAD_ENV}) or keep fewer values in one execution")
            raise RecordTooLarge(
                f"workflow execution {key!r}: its record would be {size:,} bytes in DynamoDB, "
                f"over this store's limit of {self.max_item_bytes:,} bytes (DynamoDB caps an "
                f"item at 400 KB); nothing was written. To fix it, {fix}")

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
        return self._payloads.unpack_record(record) if self._payloads is not None else record

    def _write(self, record: WorkflowRecord, previous: WorkflowRecord | None) -> None:
        self._write_logged(record, previous, ())

    def _write_logged(self, record: WorkflowRecord, previous: WorkflowRecord | None,
                      events: Sequence[Event]) -> None:
        kept, record = record, self._packed(record)
        key = record.workflow_execution_id
        parts = self._history_items(key, record.version, events) if events else []
        data = record.to_dict()
        fixed = _fixed_part(data)  # removes the fixed fields from data
        header = _header(record)
        body = encode_json(data, self.compress_over)
        unchanged = (previous is not None and record.version > 1
                     and kept.spec is previous.spec and kept.inputs is previous.inputs)
        if unchanged:
            size = (self._fixed_size(key, record)
                    + item_size({"id": {"S": key}, **header, "body": body}))
            self._check_size(key, size)
            self._logged(
                parts, "Update", key, record.version,
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
        item = self._full_item(key, header, fixed, body)
        if record.version == 1:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(id)"}
        else:
            condition = {"ConditionExpression": "#version = :previous",
                         "ExpressionAttributeNames": {"#version": "version"},
                         "ExpressionAttributeValues": {
                             ":previous": {"N": str(record.version - 1)}}}
        self._logged(parts, "Put", key, record.version, Item=item, **condition)
        self._remember_fixed(key, record, item_size({"fixed": item["fixed"]}))

    def _full_item(self, key: str, header: dict[str, Any], fixed: dict[str, Any],
                   body: dict[str, Any]) -> dict[str, Any]:
        """The whole item of a record, checked against ``max_item_bytes``."""
        item = {"id": {"S": key}, **header, "fixed": encode_json(fixed, self.compress_over),
                "body": body}
        self._check_size(key, item_size(item))
        return item

    def _packed(self, record: WorkflowRecord) -> WorkflowRecord:
        """``record`` with large values in S3 (every step: the item holds them all)."""
        return self._payloads.pack_record(record, None) if self._payloads is not None else record

    def payloads(self) -> Offloader | None:
        return self._payloads

    def _record_item(self, record: WorkflowRecord) -> dict[str, Any]:
        record = self._packed(record)
        data = record.to_dict()
        fixed = _fixed_part(data)
        return self._full_item(record.workflow_execution_id, _header(record), fixed,
                               encode_json(data, self.compress_over))

    # -- idempotency keys -------------------------------------------------------------

    def _create_keyed(self, record: WorkflowRecord, key: str) -> str | None:
        wf_id = record.workflow_execution_id
        item = self._record_item(record)
        key_item = {"id": {"S": KEY_PREFIX + key}, "owner": {"S": wf_id},
                    "created_at": {"N": repr(float(record.created_at))}}
        ops = [{"Put": {"TableName": self.table, "Item": item,
                        "ConditionExpression": "attribute_not_exists(id)"}},
               {"Put": {"TableName": self.table, "Item": key_item,
                        "ConditionExpression": "attribute_not_exists(id)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}]
        for attempt in range(_KEY_ATTEMPTS):
            reasons = self._transact(ops)
            if reasons is None:
                self._remember_fixed(wf_id, record, item_size({"fixed": item["fixed"]}))
                return None
            record_code, key_code = (r.get("Code") or "None" for r in reasons)
            if key_code == "ConditionalCheckFailed":
                owner = (reasons[1].get("Item") or {}).get("owner", {}).get("S")
                owner = owner or self._key_owner(key)
                if owner is not None:
                    return owner
            elif record_code == "ConditionalCheckFailed":
                raise ConflictError(f"{wf_id}: a record with this key already exists")
            elif not {record_code, key_code} <= _RETRYABLE:
                raise BackendError(f"dynamodb transact_write_items on {self.table!r} refused "
                                   f"idempotency key {key!r}: {record_code}/{key_code}")
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))
        raise BackendError(f"idempotency key {key!r} in {self.table!r}: gave up after "
                           f"{_KEY_ATTEMPTS} conflicting transactions")

    def _transact(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run one all-or-nothing transaction; ``None`` if applied, else its
        per-item cancellation reasons."""
        try:
            call(self.client, "transact_write_items", self.table,
                 passthrough=("TransactionCanceledException",), TransactItems=ops)
        except Exception as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if len(reasons) != len(ops):
                raise BackendError(f"dynamodb transact_write_items on {self.table!r} was "
                                   f"cancelled without per-item reasons: {exc}") from exc
            return list(reasons)
        return None

    def _key_owner(self, key: str) -> str | None:
        item = call(self.client, "get_item", self.table, TableName=self.table,
                    Key={"id": {"S": KEY_PREFIX + key}}, ConsistentRead=True).get("Item")
        return None if item is None else str(item["owner"]["S"])

    def schedules(self) -> ScheduleStore:
        """The schedules in the task table (``tasks_table``).

        Raises:
            BackendError: the store was built without ``tasks_table``.
        """
        if self.tasks_table is None:
            raise BackendError(f"{self!r} keeps no schedules: schedules live in the task "
                               "table; pass tasks_table= (an aws:// URL does)")
        with self._lock:
            if self._schedules is None:
                from .schedules import DynamoScheduleStore

                self._schedules = DynamoScheduleStore(self.client, self.tasks_table,
                                                      compress_over=self.compress_over)
            return self._schedules

    def _history_items(self, key: str, version: int, events: Sequence[Event]
                       ) -> list[dict[str, Any]]:
        """The history items of one write: events packed ~300 KB of JSON per item."""
        groups: list[list[dict[str, Any]]] = [[]]
        size = 0
        for event in events:
            data = event.to_dict()
            length = len(dumps(data))
            if groups[-1] and size + length > _HISTORY_PART_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(data)
            size += length
        items = []
        for part, group in enumerate(groups):
            item = {"id": {"S": history_item_id(key, version, part)},
                    "events": encode_json(group, self.compress_over)}
            if part == 0:
                item["parts"] = {"N": str(len(groups))}
            items.append(item)
        return items

    def _logged(self, parts: list[dict[str, Any]], kind: str, key: str, version: int,
                **params: Any) -> None:
        """The record's conditional write, with its history items when there are any."""
        operation = "update_item" if kind == "Update" else "put_item"
        if not parts or len(parts) > _HISTORY_TX_PARTS:
            self._conditional(operation, key, version, **params)
            for start in range(0, len(parts), _BATCH_WRITE):  # at least once, keyed
                self._batch_write([{"PutRequest": {"Item": item}}
                                   for item in parts[start:start + _BATCH_WRITE]])
            return
        actions = [{kind: {"TableName": self.table, **params}}]
        actions += [{"Put": {"TableName": self.table, "Item": item}} for item in parts]
        try:
            call(self.client, "transact_write_items", self.table,
                 passthrough=("TransactionCanceledException", "ValidationException"),
                 TransactItems=actions)
        except Exception as exc:
            code = error_code(exc)
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            first = (reasons[0].get("Code") if reasons else None) or ""
            if code == "TransactionCanceledException" and first == "ConditionalCheckFailed":
                expected = "no record" if version == 1 else f"version {version - 1}"
                raise ConflictError(f"{key}: the stored record is not {expected} "
                                    "(another process wrote first)") from exc
            if code == "TransactionCanceledException" and any(
                    r.get("Code") == "TransactionConflict" for r in reasons):
                raise ConflictError(f"{key}: a concurrent transaction wrote it") from exc
            if "size" in str(exc).lower():
                raise RecordTooLarge(f"workflow execution {key!r}: DynamoDB refused the "
                                     f"record as too large ({exc}); nothing was written") from exc
            raise BackendError(f"dynamodb transact_write_items on {self.table!r} failed: "
                               f"{exc}") from exc

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        pending = {self.table: requests}
        for _ in range(20):
            if not pending:
                return
            answer = call(self.client, "batch_write_item", self.table, RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
        raise BackendError(f"dynamodb batch_write_item on {self.table!r}: items stayed "
                           "unprocessed after 20 tries")

    def _batch_get(self, ids: list[str], projection: str | None = None
                   ) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _BATCH_GET):
            request: dict[str, Any] = {"Keys": [{"id": {"S": i}}
                                                for i in ids[start:start + _BATCH_GET]],
                                       "ConsistentRead": True}
            if projection is not None:
                request["ProjectionExpression"] = projection
                request["ExpressionAttributeNames"] = {"#id": "id", "#parts": "parts"}
            pending: dict[str, Any] = {self.table: request}
            for _ in range(20):
                answer = call(self.client, "batch_get_item", self.table, RequestItems=pending)
                for item in answer.get("Responses", {}).get(self.table, []):
                    found[item["id"]["S"]] = item
                pending = answer.get("UnprocessedKeys") or {}
                if not pending:
                    break
            else:
                raise BackendError(f"dynamodb batch_get_item on {self.table!r}: keys stayed "
                                   "unprocessed after 20 tries")
        return found

    def _history_ids(self, key: str, version: int, projection: str | None = None
                     ) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """Every history item id of ``key`` up to ``version``, and the items read."""
        firsts = self._batch_get([history_item_id(key, v, 0) for v in range(1, version + 1)],
                                 projection)
        extra = []
        for item_id, item in firsts.items():
            parts = int(item.get("parts", {}).get("N", "1"))
            stem = item_id.rsplit("~", 1)[0]
            extra += [f"{stem}~{p}" for p in range(1, parts)]
        items = dict(firsts)
        if extra:
            items.update(self._batch_get(extra, projection))
        return sorted(items), items

    def _history(self, workflow_execution_id: str) -> list[Event]:
        key = workflow_execution_id
        record = self._load(key)
        if record is None:
            return []
        _, items = self._history_ids(key, record.version)
        events: list[Event] = []
        for item_id, item in items.items():
            version = int(item_id.rsplit("~", 2)[1])
            try:
                stored = decode_json(item["events"])
                if not isinstance(stored, list):
                    raise ValueError(f"events must be a list, found {type(stored).__name__}")
            except (KeyError, ValueError, TypeError) as exc:
                events.append(corrupt_event(key, version, 0, item_id,
                                            f"{type(exc).__name__}: {exc}",
                                            repr(item.get("events"))[:1000]))
                continue
            for n, data in enumerate(stored):
                try:
                    events.append(Event.from_dict(data))
                except ValueError as exc:
                    events.append(corrupt_event(key, version, n, f"{item_id}[{n}]", str(exc),
                                                data))
        return events

    def _prune(self, before: float, statuses: frozenset[WorkflowStatus], batch: int) -> int:
        removed = 0
        names = {"#id": "id", "#status": "status", "#u": "updated_at"}
        for status in sorted(statuses):
            values = {":s": {"S": status.value}, ":before": {"N": repr(float(before))}}
            if self.status_index is not None:
                items = self._paged("query", None, IndexName=self.status_index,
                                    KeyConditionExpression="#status = :s",
                                    FilterExpression="#u < :before",
                                    ExpressionAttributeNames=names,
                                    ExpressionAttributeValues=values,
                                    ProjectionExpression="#id, #u")
            else:
                items = self._paged("scan", None,
                                    FilterExpression="#status = :s AND #u < :before",
                                    ExpressionAttributeNames=names,
                                    ExpressionAttributeValues=values,
                                    ProjectionExpression="#id, #u")
            for start in range(0, len(items), batch):
                for item in items[start:start + batch]:
                    removed += self._prune_one(item["id"]["S"], status, before)
        return removed

    def _prune_one(self, key: str, status: WorkflowStatus, before: float) -> int:
        """Delete one finished execution (if it still is) and then its history items."""
        head = call(self.client, "get_item", self.table, TableName=self.table,
                    Key={"id": {"S": key}}, ConsistentRead=True,
                    ProjectionExpression="#v", ExpressionAttributeNames={"#v": "version"}
                    ).get("Item")
        if head is None:
            return 0
        ids, _ = self._history_ids(key, int(head["version"]["N"]), "#id, #parts")
        try:
            call(self.client, "delete_item", self.table, passthrough=(CONDITION_FAILED,),
                 TableName=self.table, Key={"id": {"S": key}},
                 ConditionExpression="#status = :s AND #u < :before",
                 ExpressionAttributeNames={"#status": "status", "#u": "updated_at"},
                 ExpressionAttributeValues={":s": {"S": status.value},
                                            ":before": {"N": repr(float(before))}})
        except Exception as exc:
            if error_code(exc) == CONDITION_FAILED:
                return 0
            raise
        for start in range(0, len(ids), _BATCH_WRITE):
            self._batch_write([{"DeleteRequest": {"Key": {"id": {"S": i}}}}
                               for i in ids[start:start + _BATCH_WRITE]])
        return 1

    def workers(self) -> WorkerRegistry:
        """The live workers, in the ``#workers`` partition of the task table.

        Raises:
            BackendError: the store was built without ``tasks_table``.
        """
        if self.tasks_table is None:
            raise BackendError(f"{self!r} keeps no worker registry: it lives in the task "
                               "table; pass tasks_table= (an aws:// URL does)")
        from .workers import DynamoWorkerRegistry

        return DynamoWorkerRegistry(self.client, self.tasks_table)

    def cache(self) -> Cache:
        """The step cache: ``cache#<key>`` items in this table (``aws/cache.py``)."""
        with self._lock:
            if self._step_cache is None:
                from .cache import DynamoCache

                self._step_cache = DynamoCache(self.client, self.table,
                                               compress_over=self.compress_over)
            return self._step_cache

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
                                      "ExpressionAttributeNames": names,
                                      "FilterExpression": "attribute_exists(#status)"}
            if status is not None:  # key items have no status
                params["FilterExpression"] = "#status = :status"
                params["ExpressionAttributeValues"] = {":status": {"S": status.value}}
            items = self._paged("scan", None, **params)
        summaries = [_summary(item) for item in items if "status" in item]  # not history
        summaries.sort(key=lambda s: s.created_at, reverse=True)
        return summaries[:limit]

    def _find(self, prefix: str, limit: int) -> list[str]:
        """One filtered scan (keys and creation times only): ``begins_with`` on the
        key, or on its execution-id part through ``contains('#' + prefix)``; key
        items (no ``status``) are left out."""
        items = self._paged("scan", None,
                            ProjectionExpression="#id, #c",
                            ExpressionAttributeNames={"#id": "id", "#c": "created_at",
                                                      "#s": "status"},
                            FilterExpression="(begins_with(#id, :p) OR contains(#id, :hp)) "
                                             "AND attribute_exists(#s)",
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


def _header(record: WorkflowRecord) -> dict[str, Any]:
    return {
        "version": {"N": str(record.version)},
        "status": {"S": record.status.value},
        "name": {"S": record.plan.name},
        "created_at": {"N": repr(float(record.created_at))},
        "updated_at": {"N": repr(float(record.updated_at))},
    }


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
