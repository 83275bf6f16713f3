"""``SqlStore``: workflow records in SQL tables, written conditionally on ``version``.

A record is a header row in ``runfox_workflows`` plus one row per step in
``runfox_steps`` (see ``schema``). The three Store primitives:

- ``_write``: version 1 INSERTs the header and every step (a duplicate key is a
  ``ConflictError``). Later versions run ``UPDATE ... WHERE
  workflow_execution_id = :k AND version = :v - 1``; no row updated means
  another writer won (``ConflictError``). The header and the changed steps
  (``record.steps.changed_since(previous.steps)``, or all of them without
  ``previous``) are written in one transaction; the spec and inputs never again.
- ``_load``: the header, then the step rows written after the version the
  store already holds (records are immutable, so it keeps the last ones it
  saw): a transition on a large workflow reads what changed, not everything.
  The two reads need no snapshot: a step row newer than the header means a
  write landed in between, and the load simply runs again.
- ``_create_keyed``: the version-1 INSERTs plus a ``runfox_keys`` row in the
  same transaction; a duplicate key rolls everything back and the row's
  execution id is read and returned (the key's primary key decides races).
- ``_write_logged``: ``_write`` with the transition's history events inserted
  into ``runfox_history`` in the same transaction; ``_history`` reads them back
  (a row that does not decode becomes a ``corrupt`` event naming its key);
  ``_prune`` deletes finished executions with their steps, history, keys and
  jobs (``runfox_tasks``), ``batch`` executions per transaction.
- ``_list``: summaries from the header rows. A row that cannot be decoded is
  logged with its key and skipped; ``_load`` raises ``CorruptRecord`` for it.

Large values (``runfox.payloads``) go to ``runfox_payloads`` (``SqlPayloads``)
through the store's ``Offloader``: a record is packed before it is encoded and
unpacked after it is decoded, and the cache keeps the unpacked record, so a
blob is read once per process.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, case, delete, or_, select, update
from sqlalchemy.engine import Connection, Engine, Row

from ...errors import BackendError, ConflictError, CorruptRecord
from ...history import Event, corrupt_event
from ...records import StepRecord, WorkflowRecord, ordered_items
from ...status import WorkflowStatus
from ..payload_store import DEFAULT_OFFLOAD_BYTES, Offloader, offload_threshold
from ..store import ExecutionSummary, Store, key_matches
from .cache import SqlCache
from .database import Database, DatabaseUser, DuplicateRow
from .payloads import SqlPayloads
from .schedules import SqlScheduleStore
from .schema import history, keys, steps, tasks, workflows
from .workers import SqlWorkerRegistry

__all__ = ["SqlStore"]

logger = logging.getLogger("runfox.backend.sql")

# Statements are built once; SQLAlchemy then reuses their compiled form.
_HEAD = (workflows.c.version, workflows.c.status, workflows.c.updated_at,
         workflows.c.state, workflows.c.outcome)
_THIS = workflows.c.workflow_execution_id == bindparam("k")
_SELECT_HEAD = select(*_HEAD).where(_THIS)
_SELECT_FULL = select(*_HEAD, workflows.c.workflow_id, workflows.c.execution_id,
                      workflows.c.created_at, workflows.c.spec, workflows.c.inputs,
                      workflows.c.parent).where(_THIS)
_SELECT_STEPS = select(steps.c.step_id, steps.c.version, steps.c.data).where(
    steps.c.workflow_execution_id == bindparam("k"), steps.c.version > bindparam("since"))
_UPDATE_HEAD = (
    update(workflows).where(_THIS, workflows.c.version == bindparam("expected"))
    .values(version=bindparam("v"), status=bindparam("st"), updated_at=bindparam("at"),
            state=bindparam("state_json"), outcome=bindparam("outcome_json")))
_UPDATE_STEP = (
    update(steps).where(steps.c.workflow_execution_id == bindparam("k"),
                        steps.c.step_id == bindparam("sid"))
    .values(status=bindparam("st"), run_id=bindparam("run"), version=bindparam("v"),
            data=bindparam("data_json")))
_INSERT_HEAD = workflows.insert()
_INSERT_STEPS = steps.insert()
_INSERT_KEY = keys.insert()
_INSERT_EVENTS = history.insert()
_SELECT_EVENTS = (select(history.c.version, history.c.idx, history.c.data)
                  .where(history.c.workflow_execution_id == bindparam("k"))
                  .order_by(history.c.version, history.c.idx))
_SELECT_KEY = select(keys.c.workflow_execution_id).where(
    keys.c.idempotency_key == bindparam("key"))
_TORN_READS = 100


def dumps(value: Any) -> str:
    """Compact, ASCII-only JSON (any server character set can hold it)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class _RecordCache:
    """The most recently seen records, by key. Safe because records are immutable."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, WorkflowRecord] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> WorkflowRecord | None:
        with self._lock:
            record = self._items.get(key)
            if record is not None:
                self._items.move_to_end(key)
            return record

    def put(self, record: WorkflowRecord) -> None:
        if self._size <= 0:
            return
        key = record.workflow_execution_id
        with self._lock:
            held = self._items.get(key)
            if held is not None and held.version > record.version:
                return  # a slower thread must not replace a newer record
            self._items[key] = record
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


class SqlStore(DatabaseUser, Store):
    """Workflow records in SQLite, PostgreSQL or MySQL/MariaDB.

    Args:
        url: a SQLAlchemy URL: ``sqlite:///path/runfox.db``,
            ``postgresql+psycopg://user:pass@host/db``, ``mysql+pymysql://...``.
            ``postgresql://`` and ``mysql://`` get those drivers.
        engine: an existing ``Engine`` instead of ``url`` (not both). runfox does
            not dispose an engine it did not create.
        create_tables: create missing tables on first use; when false, the
            tables must exist (``backends/sql/*.sql``) with a matching version.
        cache_size: how many records to keep for incremental loads (0: none).
        busy_timeout: SQLite only: seconds a writer waits for the lock (30).
        sqlite_synchronous: SQLite only: ``PRAGMA synchronous`` (``NORMAL``: a
            power loss may undo the last commits but never corrupts the file;
            ``FULL``: every commit is flushed).
        engine_options: extra ``create_engine`` keywords (pool size ...).
        offload: values (step outputs and inputs, workflow inputs, outcome, each
            state key) whose JSON is over this many bytes are stored once in
            ``runfox_payloads`` and referenced; ``"off"`` or 0 never offloads.
            Default: ``$RUNFOX_OFFLOAD_BYTES``, else 256 KiB.

    Raises:
        ValueError: contradictory arguments (both ``url`` and ``engine`` ...).
        BackendError: the driver is missing or the database is unreachable or
            holds an unusable schema; the message names the masked URL.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        create_tables: bool = True,
        cache_size: int = 256,
        busy_timeout: float | None = None,
        sqlite_synchronous: str | None = None,
        engine_options: dict[str, Any] | None = None,
        offload: int | str | None = None,
        _database: Database | None = None,
    ) -> None:
        threshold = offload_threshold(offload, DEFAULT_OFFLOAD_BYTES)
        super().__init__(url, engine=engine, create_tables=create_tables,
                         busy_timeout=busy_timeout, sqlite_synchronous=sqlite_synchronous,
                         engine_options=engine_options, database=_database)
        self._cache = _RecordCache(cache_size)
        self._step_cache: SqlCache | None = None
        self._payloads = Offloader(SqlPayloads(self._db), threshold)

    keeps_history = True

    # -- write ------------------------------------------------------------------

    def _write(self, record: WorkflowRecord, previous: WorkflowRecord | None) -> None:
        self._write_logged(record, previous, ())

    def _write_logged(self, record: WorkflowRecord, previous: WorkflowRecord | None,
                      events: Sequence[Event]) -> None:
        kept, record = record, self._payloads.pack_record(record, previous)
        key = record.workflow_execution_id
        logged = [_event_params(e) for e in events]
        if record.version == 1:
            self._create(record, events=logged)
        else:
            changed = (record.steps.changed_since(previous.steps) if previous is not None
                       else list(record.steps))
            head = {"k": key, "expected": record.version - 1, "v": record.version,
                    "st": record.status.value, "at": record.updated_at,
                    "state_json": dumps(record.state), "outcome_json": dumps(record.outcome)}
            # Map items appear when their map step is claimed: those rows are new.
            old = previous.steps if previous is not None else None
            fresh = [sid for sid in changed if old is not None and sid not in old]
            if fresh:
                made = set(fresh)
                changed = [sid for sid in changed if sid not in made]
            inserts = [_step_row(key, record.steps[sid], record.version) for sid in fresh]
            rows = [_step_params(key, record.steps[sid], record.version) for sid in changed]

            def work(conn: Connection) -> None:
                if conn.execute(_UPDATE_HEAD, head).rowcount != 1:
                    raise ConflictError(f"{key}: the stored version is not "
                                        f"{record.version - 1}; another writer won")
                if rows:
                    conn.execute(_UPDATE_STEP, rows)
                if inserts:
                    conn.execute(_INSERT_STEPS, inserts)
                if logged:
                    conn.execute(_INSERT_EVENTS, logged)

            try:
                self._db.run(work, what=f"write workflow {key!r}")
            except ConflictError:
                self._cache.drop(key)
                raise
        self._cache.put(kept)

    def _create_keyed(self, record: WorkflowRecord, key: str) -> str | None:
        try:
            self._create(self._payloads.pack_record(record, None), key)
        except ConflictError:
            owner = self._key_owner(key)
            if owner is None:
                raise
            return owner
        self._cache.put(record)
        return None

    def _key_owner(self, key: str) -> str | None:
        row = self._db.run(lambda conn: conn.execute(_SELECT_KEY, {"key": key}).first(),
                           write=False, standalone=True, what=f"read idempotency key {key!r}")
        return None if row is None else str(row[0])

    def schedules(self) -> SqlScheduleStore:
        return SqlScheduleStore(self._db)

    def payloads(self) -> Offloader:
        """The ``Offloader`` over ``runfox_payloads`` (one object per store)."""
        return self._payloads

    def cache(self) -> SqlCache:
        """The step cache in ``runfox_cache`` (one object per store)."""
        if self._step_cache is None:
            self._step_cache = SqlCache(self._db)
        return self._step_cache

    def workers(self) -> SqlWorkerRegistry:
        return SqlWorkerRegistry(self._db)

    def _create(self, record: WorkflowRecord, idempotency_key: str | None = None,
                events: Sequence[dict[str, Any]] = ()) -> None:
        key = record.workflow_execution_id
        head = {
            "workflow_execution_id": key,
            "workflow_id": record.workflow_id,
            "execution_id": record.execution_id,
            "name": record.plan.name,
            "status": record.status.value,
            "version": record.version,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "spec": dumps(record.spec),
            "inputs": dumps(record.inputs),
            "state": dumps(record.state),
            "outcome": dumps(record.outcome),
            "parent": None if record.parent is None else dumps(record.parent),
        }
        rows = [_step_row(key, s, record.version) for s in record.steps.values()]

        def work(conn: Connection) -> None:
            if idempotency_key is not None:  # first: a racing creator stops here
                conn.execute(_INSERT_KEY, {"idempotency_key": idempotency_key,
                                           "workflow_execution_id": key,
                                           "created_at": record.created_at})
            conn.execute(_INSERT_HEAD, head)
            if rows:
                conn.execute(_INSERT_STEPS, rows)
            if events:
                conn.execute(_INSERT_EVENTS, list(events))

        try:
            self._db.run(work, what=f"create workflow {key!r}", duplicate_ok=True)
        except DuplicateRow as exc:
            raise ConflictError(f"{key}: a record with this key already exists") from exc

    # -- load -------------------------------------------------------------------

    def _load(self, workflow_execution_id: str) -> WorkflowRecord | None:
        key = workflow_execution_id
        cached = self._cache.get(key)

        def work(conn: Connection) -> tuple[Any, Sequence[Any], WorkflowRecord | None] | None:
            base = cached
            head = conn.execute(_SELECT_HEAD if base else _SELECT_FULL, {"k": key}).first()
            if head is None:
                return None
            if base is not None and head.version < base.version:  # the table was reset
                base = None
                head = conn.execute(_SELECT_FULL, {"k": key}).first()
                assert head is not None
            if base is not None and head.version == base.version:
                return head, (), base
            since = base.version if base is not None else 0
            return head, conn.execute(_SELECT_STEPS, {"k": key, "since": since}).all(), base

        for _ in range(_TORN_READS):
            found = self._db.run(work, write=False, standalone=True,
                                 what=f"load workflow {key!r}")
            if found is None or all(r.version <= found[0].version for r in found[1]):
                break
        else:  # pragma: no cover - needs a writer faster than every read
            raise BackendError(f"workflow {key!r} changed during each of {_TORN_READS} reads")
        if found is None:
            self._cache.drop(key)
            return None
        head, rows, base = found
        if base is not None and head.version == base.version:
            return base
        record = (_apply_delta(key, base, head, rows) if base is not None
                  else _decode_full(key, head, rows))
        record = self._payloads.unpack_record(record, base)
        self._cache.put(record)
        return record

    # -- history --------------------------------------------------------------------

    def _history(self, workflow_execution_id: str) -> list[Event]:
        key = workflow_execution_id
        rows = self._db.run(lambda conn: conn.execute(_SELECT_EVENTS, {"k": key}).all(),
                            write=False, what=f"read the history of {key!r}")
        events = []
        for row in rows:
            where = f"runfox_history({key}, version {row.version}, idx {row.idx})"
            try:
                events.append(Event.from_dict(json.loads(row.data)))
            except (TypeError, ValueError) as exc:
                events.append(corrupt_event(key, int(row.version), int(row.idx), where,
                                            f"{type(exc).__name__}: {exc}", str(row.data)))
        return events

    def _prune(self, before: float, statuses: frozenset[WorkflowStatus], batch: int) -> int:
        wanted = sorted(s.value for s in statuses)
        finished = (workflows.c.status.in_(wanted), workflows.c.updated_at < before)
        pick = (select(workflows.c.workflow_execution_id).where(*finished)
                .order_by(workflows.c.updated_at).limit(batch))
        removed = 0
        while True:
            def work(conn: Connection) -> int:
                ids = [row[0] for row in conn.execute(pick).all()]
                if ids:
                    for table in (history, steps, tasks, keys):
                        conn.execute(delete(table).where(
                            table.c.workflow_execution_id.in_(ids)))
                    conn.execute(delete(workflows).where(
                        workflows.c.workflow_execution_id.in_(ids), *finished))
                for key in ids:
                    self._cache.drop(key)
                return len(ids)

            count = self._db.run(work, what="prune finished workflows")
            removed += count
            if count < batch:
                return removed

    # -- list -------------------------------------------------------------------

    def _list(self, status: WorkflowStatus | None, limit: int) -> list[ExecutionSummary]:
        query = select(workflows.c.workflow_execution_id, workflows.c.name,
                       workflows.c.status, workflows.c.created_at, workflows.c.updated_at)
        if status is not None:
            query = query.where(workflows.c.status == status.value)
        query = query.order_by(workflows.c.created_at.desc()).limit(limit)
        rows = self._db.run(lambda conn: conn.execute(query).all(), write=False,
                            what="list workflows")
        summaries = []
        for row in rows:
            try:
                summaries.append(ExecutionSummary(row.workflow_execution_id, row.name,
                                                  WorkflowStatus(row.status),
                                                  float(row.created_at), float(row.updated_at)))
            except (TypeError, ValueError) as exc:
                logger.warning("skipping corrupt workflow row %r: %s",
                               row.workflow_execution_id, exc)
        return summaries

    def _find(self, prefix: str, limit: int) -> list[str]:
        """``LIKE 'prefix%'`` on the key and on the execution id, the exact key first.

        ``LIKE`` ignores case on SQLite and MySQL; ``key_matches`` keeps the
        answer the same as on every other store.
        """
        key = workflows.c.workflow_execution_id
        query = (select(key)
                 .where(or_(key.startswith(prefix, autoescape=True),
                            workflows.c.execution_id.startswith(prefix, autoescape=True)))
                 .order_by(case((key == prefix, 0), else_=1), workflows.c.created_at.desc())
                 .limit(limit))
        rows = self._db.run(lambda conn: conn.execute(query).all(), write=False,
                            what="find workflows by prefix")
        return [row[0] for row in rows if key_matches(row[0], prefix)]


def _event_params(event: Event) -> dict[str, Any]:
    return {"workflow_execution_id": event.workflow_execution_id, "version": event.version,
            "idx": event.index, "time": event.time, "type": event.type,
            "step_id": event.step_id, "run_id": event.run_id,
            "data": dumps(event.to_dict())}


def _step_row(key: str, step: StepRecord, version: int) -> dict[str, Any]:
    return {"workflow_execution_id": key, "step_id": step.id, "status": step.status.value,
            "run_id": step.run_id, "version": version, "data": dumps(step.to_dict())}


def _step_params(key: str, step: StepRecord, version: int) -> dict[str, Any]:
    return {"k": key, "sid": step.id, "st": step.status.value, "run": step.run_id,
            "v": version, "data_json": dumps(step.to_dict())}


def _column(key: str, name: str, raw: Any) -> Any:
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise CorruptRecord(key, f"column {name} is not JSON: {exc}") from exc


def _step_dicts(key: str, rows: Sequence[Row[Any]]) -> list[Mapping[str, Any]]:
    decoded: list[Mapping[str, Any]] = []
    for row in rows:
        data = _column(key, f"runfox_steps.data of step {row.step_id!r}", row.data)
        if not isinstance(data, dict) or data.get("id") != row.step_id:
            raise CorruptRecord(key, f"step row {row.step_id!r} does not hold that step")
        decoded.append(data)
    return decoded


def _decode_full(key: str, head: Row[Any], rows: Sequence[Row[Any]]) -> WorkflowRecord:
    data = {
        "workflow_id": head.workflow_id,
        "execution_id": head.execution_id,
        "version": head.version,
        "status": head.status,
        "created_at": head.created_at,
        "updated_at": head.updated_at,
        "spec": _column(key, "spec", head.spec),
        "inputs": _column(key, "inputs", head.inputs),
        "state": _column(key, "state", head.state),
        "outcome": _column(key, "outcome", head.outcome),
        "steps": _step_dicts(key, rows),
    }
    if head.parent is not None:
        data["parent"] = _column(key, "parent", head.parent)
    record = WorkflowRecord.from_dict(data)
    if record.workflow_execution_id != key:
        raise CorruptRecord(key, f"the row holds record {record.workflow_execution_id!r}")
    return record


def _apply_delta(key: str, base: WorkflowRecord, head: Row[Any], rows: Sequence[Row[Any]]
                 ) -> WorkflowRecord:
    """``base`` moved to the header's version with the step rows written since."""
    plan = base.plan
    try:
        changes: dict[str, StepRecord] = {}
        fresh: list[Mapping[str, Any]] = []  # items of a map claimed since ``base``
        for d in _step_dicts(key, rows):
            spec = plan.by_id.get(d["id"])
            if spec is not None:
                changes[d["id"]] = StepRecord.from_dict(d, list_output=spec.map is not None)
            elif d["id"] in base.steps:
                changes[d["id"]] = StepRecord.from_dict(d)
            else:
                fresh.append(d)
        steps = base.steps
        if fresh:
            steps = steps.extend(StepRecord.from_dict(d) for d in ordered_items(plan, fresh))
        return WorkflowRecord(
            workflow_id=base.workflow_id,
            execution_id=base.execution_id,
            spec=base.spec,
            inputs=base.inputs,
            state=_column(key, "state", head.state),
            steps=steps.replace(changes),
            status=WorkflowStatus(head.status),
            outcome=_column(key, "outcome", head.outcome),
            version=int(head.version),
            created_at=base.created_at,
            updated_at=float(head.updated_at),
            parent=base.parent,
            plan=plan,
        )  # ready/open/unmet are derived again from the merged steps
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRecord(key, f"{type(exc).__name__}: {exc}") from exc
