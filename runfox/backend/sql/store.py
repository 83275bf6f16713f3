"""``SqlStore``: workflow records in SQL tables, written conditionally on ``version``.

A record is a header row in ``runfox_workflows`` plus one row per step in
``runfox_steps`` and one per shared-state key in ``runfox_state`` (see
``schema``). The three Store primitives:

- ``_write``: version 1 INSERTs the header, every step that is not in its
  initial state (ready, run 0, never attempted: a missing row reads as that,
  schema 12) and every state key (a duplicate key is a ``ConflictError``).
  Later versions run ``UPDATE ... WHERE workflow_execution_id = :k AND version
  = :v - 1``; no row updated means another writer won (``ConflictError``). The
  header, the changed steps (``record.steps.changed_since(previous.steps)``, or
  all of them without ``previous``; upserted where the step was in its initial
  state, so may have no row) and the state keys whose value object changed
  (``_state_params``) are written in one transaction; the spec and inputs never
  again. The header also gets ``due_at`` and ``retry_at`` (``due_times``), which
  ``due`` reads. ``prepare_writes`` writes several records with one statement of
  each kind (an ``executemany``); fewer headers updated than records is a lost race.
- ``_load``: the header, then the step and state rows written after the
  version the store already holds (records are immutable, so it keeps the last
  ones it saw, also after losing a race): a transition on a large workflow
  reads what changed, not everything. The reads need no snapshot: a row newer
  than the header means a write landed in between, and the load runs again.
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
- ``due``/``postpone``: the index of due executions for the sweep; ``unit_with``:
  ``Database.joint`` for a runner on the same database.

The record cache is filled only once a write commits (``Database.after_commit``),
so a joint unit that rolls back leaves no record behind that was never stored.

Large values (``runfox.payloads``) go to ``runfox_payloads`` (``SqlPayloads``)
through the store's ``Offloader``: a record is packed before it is encoded and
unpacked after it is decoded, and the cache keeps the unpacked record, so a
blob is read once per process.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, case, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import Insert

from ...errors import BackendError, ConflictError, CorruptRecord
from ...history import Event, corrupt_event
from ...jsonvalue import compact_json
from ...records import StepChanges, StepRecord, WorkflowRecord, ordered_items
from ...status import StepStatus, WorkflowStatus
from ..payload_store import DEFAULT_OFFLOAD_BYTES, Offloader, offload_threshold
from ..runner import Runner
from ..store import DueWork, ExecutionSummary, Store, UnitOfWork, key_matches, run_in_turn
from .cache import SqlCache
from .database import Database, DatabaseUser, DuplicateRow, HotStatement
from .payloads import SqlPayloads
from .schedules import SqlScheduleStore
from .schema import history, keys, state, steps, tasks, workflows
from .workers import SqlWorkerRegistry

__all__ = ["SqlStore"]

logger = logging.getLogger("runfox.backend.sql")

# Statements are built once; SQLAlchemy then reuses their compiled form.
_HEAD = (workflows.c.version, workflows.c.status, workflows.c.updated_at,
         workflows.c.outcome)
_THIS = workflows.c.workflow_execution_id == bindparam("k")
_SELECT_HEAD = select(*_HEAD).where(_THIS)
_FULL = (*_HEAD, workflows.c.workflow_id, workflows.c.execution_id, workflows.c.created_at,
         workflows.c.spec, workflows.c.inputs, workflows.c.state, workflows.c.parent)
_SELECT_FULL = select(*_FULL).where(_THIS)
_SELECT_STEPS = select(steps.c.step_id, steps.c.version, steps.c.data).where(
    steps.c.workflow_execution_id == bindparam("k"), steps.c.version > bindparam("since"))
_SELECT_STATE = select(state.c.name, state.c.version, state.c.value).where(
    state.c.workflow_execution_id == bindparam("k"), state.c.version > bindparam("since"))
#: How many executions' last written ``retry_at`` a store remembers.
_RETRY_NOTES = 10_000
#: ``load_shared_many`` reads at most this many records per statement; fewer are
#: padded to the next power of two, so a few compiled sizes serve every count.
_MANY = 32


def _select_many(size: int) -> tuple[Any, Any, Any]:
    """The header, step and state reads of ``size`` records (parameters ``k0``...)."""
    names: list[Any] = [bindparam(f"k{i}") for i in range(size)]
    return (select(workflows.c.workflow_execution_id, *_FULL)
            .where(workflows.c.workflow_execution_id.in_(names)),
            select(steps.c.workflow_execution_id, steps.c.step_id, steps.c.version,
                   steps.c.data).where(steps.c.workflow_execution_id.in_(names)),
            select(state.c.workflow_execution_id, state.c.name, state.c.version,
                   state.c.value).where(state.c.workflow_execution_id.in_(names)))


def _update_head(outcome: bool, status: bool, retry: bool) -> Any:
    """The header's conditional UPDATE, setting only the columns that change.

    A column left out of ``SET`` leaves its indexes alone: on SQLite each index
    an UPDATE names is a page written to the log on every step (the status and
    the retry index would otherwise be rewritten by each transition).
    """
    values: dict[str, Any] = {"version": bindparam("v"), "updated_at": bindparam("at"),
                              "due_at": bindparam("due")}
    if outcome:
        values["outcome"] = bindparam("outcome_json")
    if status:
        values["status"] = bindparam("st")
    if retry:
        values["retry_at"] = bindparam("retry")
    return (update(workflows).where(_THIS, workflows.c.version == bindparam("expected"))
            .values(**values))


_POSTPONE = (update(workflows).where(_THIS, workflows.c.version == bindparam("v"))
             .values(due_at=bindparam("due"), retry_at=bindparam("retry")))
_SELECT_DUE = (select(workflows.c.workflow_execution_id)
               .where(workflows.c.due_at <= bindparam("now"))
               .order_by(workflows.c.due_at).limit(bindparam("limit")))
# Executions with results waiting in the job table (``SqlRunner``'s "done" rows,
# submitted by workers that do not drive): due at once, whatever ``due_at`` says.
_RESULTS_WAITING = (select(tasks.c.workflow_execution_id).where(tasks.c.state == "done")
                    .distinct().limit(bindparam("limit")))
_NEXT_RETRY = select(func.min(workflows.c.retry_at)).where(
    workflows.c.retry_at > bindparam("now"))
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
_NO_STATE: dict[str, Any] = {}
#: The widest state key a ``runfox_state`` row holds (its ``name`` column).
MAX_STATE_KEY = 255
#: Bounds of how far ``postpone`` pushes an execution in which the sweep found
#: nothing to do: as long as it has been quiet, between these.
_RECHECK_MIN = 5.0
_RECHECK_MAX = 3600.0
#: Seconds after a write made in a joint unit (record, dispatch and ack in one
#: transaction) at which an execution with steps in progress falls due: their jobs
#: were queued in the same commit, so the look is only for a result lost by a
#: gatherer that died (``SqlRunner.gather`` deletes the rows it returns).
JOINT_GRACE = 3600.0


#: Compact, ASCII-only JSON (any server character set can hold it); the runner uses it too.
dumps = compact_json


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


class _Update:
    """One record's prepared update (``SqlStore.prepare_write``): its header's
    conditional UPDATE and the rows of its other statements, run when called, or
    with other records' by ``SqlStore.prepare_writes``."""

    __slots__ = ("head", "head_statement", "key", "logged", "record", "rows", "store",
                 "upserts", "values", "written")

    def __init__(self, store: SqlStore, key: str, head_statement: HotStatement,
                 head: dict[str, Any], rows: list[dict[str, Any]],
                 upserts: list[dict[str, Any]], values: list[dict[str, Any]],
                 logged: list[dict[str, Any]], written: tuple[int, float | None],
                 record: WorkflowRecord) -> None:
        self.store, self.key, self.head_statement, self.head = store, key, head_statement, head
        self.rows, self.upserts, self.values, self.logged = rows, upserts, values, logged
        self.written, self.record = written, record

    def __call__(self) -> None:
        self.store._run_updates([self])


class _SpecTexts:
    """The JSON of the specs this store wrote or read lately, kept both ways.

    Every execution's header holds its spec, which is the same for every start
    of one workflow: a start of a spec object seen before encodes nothing, and a
    load whose spec column holds a text seen before decodes nothing (the spec
    dict is shared: runfox never changes a record's spec, and ``Store.load``
    hands out copies). Plain dict operations, which the GIL keeps whole, so no
    lock; full, a table is emptied (``size`` specs in use at once is a lot).
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        # id(spec) -> (spec, text): the spec kept, so its id is not reused.
        self._texts: dict[int, tuple[dict[str, Any], str]] = {}
        self._specs: dict[str, dict[str, Any]] = {}  # text -> spec

    def text(self, spec: dict[str, Any]) -> str:
        """``dumps(spec)``, encoded once per spec object."""
        held = self._texts.get(id(spec))
        if held is not None and held[0] is spec:
            return held[1]
        text = dumps(spec)
        if len(self._texts) >= self._size:
            self._texts.clear()
        self._texts[id(spec)] = (spec, text)
        return text

    def spec(self, key: str, text: Any) -> Any:
        """The spec column ``text`` of execution ``key`` decoded, once per text."""
        spec = self._specs.get(text) if isinstance(text, str) else None
        if spec is None:
            spec = _column(key, "spec", text)
            if isinstance(spec, dict):
                if len(self._specs) >= self._size:
                    self._specs.clear()
                self._specs[text] = spec
        return spec


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
        claim_grace: seconds after a write with steps in progress at which the
            execution falls due for the sweep (a claimed step whose job was
            lost is dispatched again then, see ``Store.due``).

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
        claim_grace: float = 30.0,
        _database: Database | None = None,
    ) -> None:
        if claim_grace <= 0:
            raise ValueError("claim_grace must be > 0")
        threshold = offload_threshold(offload, DEFAULT_OFFLOAD_BYTES)
        super().__init__(url, engine=engine, create_tables=create_tables,
                         busy_timeout=busy_timeout, sqlite_synchronous=sqlite_synchronous,
                         engine_options=engine_options, database=_database)
        self._cache = _RecordCache(cache_size)
        self._specs = _SpecTexts()
        self._step_cache: SqlCache | None = None
        self._payloads = Offloader(SqlPayloads(self._db), threshold)
        self.claim_grace = claim_grace
        self._upsert_state = _state_upsert(self._db.dialect.name)
        # The statements of every transition, compiled once (see ``HotStatement``).
        hot = functools.partial(HotStatement, self._db)
        # By (outcome, status, retry_at) written: see ``_update_head``.
        self._hot_heads = {shape: hot(_update_head(*shape))
                           for shape in itertools.product((False, True), repeat=3)}
        # Per execution, the version and ``retry_at`` this store last wrote: the
        # next write of that version leaves ``retry_at`` out when it is the same.
        self._retry_written: dict[str, tuple[int, float | None]] = {}
        self._hot_step, self._hot_steps = hot(_UPDATE_STEP), hot(_INSERT_STEPS)
        self._hot_step_upsert = hot(_steps_upsert(self._db.dialect.name))
        self._hot_state, self._hot_events = hot(self._upsert_state), hot(_INSERT_EVENTS)
        self._hot_create = hot(_INSERT_HEAD)  # every start of an execution
        # and the reads of a load (a record this process has not cached, or a reload)
        self._hot_read_head, self._hot_read_full = hot(_SELECT_HEAD), hot(_SELECT_FULL)
        self._hot_read_steps, self._hot_read_state = hot(_SELECT_STEPS), hot(_SELECT_STATE)
        # and of ``load_shared_many``, by padded size
        self._hot_many: dict[int, tuple[HotStatement, ...]] = {}

    keeps_history = True
    tracks_due = True

    # -- write ------------------------------------------------------------------

    def _write(self, record: WorkflowRecord, previous: WorkflowRecord | None) -> None:
        self._write_logged(record, previous, ())

    def _write_logged(self, record: WorkflowRecord, previous: WorkflowRecord | None,
                      events: Sequence[Event]) -> None:
        self._prepare_logged(record, previous, events)()

    def prepare_write(self, record: WorkflowRecord, previous: WorkflowRecord | None = None,
                      events: Sequence[Event] = ()) -> Callable[[], None]:
        """``write_shared`` with the encoding done now and the statements when the
        returned function is called (see ``Store.prepare_write``)."""
        self._check_versions(record, previous)
        return self._prepare_logged(record, previous, events)

    def _prepare_logged(self, record: WorkflowRecord, previous: WorkflowRecord | None,
                        events: Sequence[Event]) -> Callable[[], None]:
        """The rows of a write built; the function that runs its statements."""
        kept = record
        with self._payloads.encoding_once():  # outputs, then their keys in the state
            if previous is None:
                record = self._payloads.pack_record(record, None)
            else:  # the state goes by changed key below (packing all of it is O(state))
                record = self._payloads.pack_record(record.evolve(state=_NO_STATE),
                                                    previous)
            values = (_state_params(record.workflow_execution_id, kept, previous,
                                    self._payloads.pack_json)
                      if record.version > 1 else [])
        key = record.workflow_execution_id
        logged = [_event_params(e) for e in events]
        if record.version == 1:
            create = self._prepare_create(record, events=logged)

            def created() -> None:
                create()
                self._db.after_commit(lambda: self._cache.put(kept))
            return created
        changed = (record.steps.changed_since(previous.steps) if previous is not None
                   else list(record.steps))
        # Inside a joint unit the claimed steps' jobs commit with the record:
        # only a gatherer dying with their results can lose them (JOINT_GRACE).
        due_at, retry_at = due_times(
            record, JOINT_GRACE if self._db.in_unit else self.claim_grace)
        head = {"k": key, "expected": record.version - 1, "v": record.version,
                "st": record.status.value, "at": record.updated_at,
                "due": due_at, "retry": retry_at}
        outcome = previous is None or record.outcome is not previous.outcome
        if outcome:
            head["outcome_json"] = dumps(record.outcome)
        # The stored row is ``previous`` (the UPDATE checks its version): its
        # status is that record's, and its retry_at is known if this store wrote it.
        status = previous is None or record.status is not previous.status
        retry = self._retry_written.get(key) != (record.version - 1, retry_at)
        update_head = self._hot_heads[outcome, status, retry]
        # A step that was in its initial state may have no row (see
        # ``_prepare_create``), nor has a map item that appeared with its map
        # step's claim. Changed steps are upserted, all of them, when one of them
        # may lack its row (one statement, not an UPDATE and an upsert), else
        # updated.
        old = previous.steps if previous is not None else None
        if old is None or any(sid not in old or _initial(old[sid]) for sid in changed):
            rows, upserts = [], [_step_row(key, record.steps[sid], record.version)
                                 for sid in changed]
        else:
            rows, upserts = [_step_params(key, record.steps[sid], record.version)
                             for sid in changed], []

        return _Update(self, key, update_head, head, rows, upserts, values, logged,
                       (record.version, retry_at), kept)

    def prepare_writes(self, items: Sequence[tuple[WorkflowRecord, WorkflowRecord | None,
                                                   Sequence[Event]]]) -> Callable[[], None]:
        """``Store.prepare_writes``: the records' statements run together, each kind
        once for all of them (one ``executemany``: on PostgreSQL and MariaDB one
        round trip instead of one per record). New records (version 1) are
        created first, then the headers' conditional UPDATEs go in the order
        given, so two units given keys in one order lock rows alike; rows fewer
        than records updated is a lost race (``ConflictError``) for the whole
        call."""
        writes = [self.prepare_write(*item) for item in items]
        updates = [w for w in writes if isinstance(w, _Update)]
        others = [w for w in writes if not isinstance(w, _Update)]
        if len(updates) < 2:
            return functools.partial(run_in_turn, writes)

        def write() -> None:
            for other in others:
                other()
            self._run_updates(updates)
        return write

    def _run_updates(self, updates: Sequence[_Update]) -> None:
        """Run the statements of ``updates`` (one or several records) in one unit."""
        def work(conn: Connection) -> None:
            # Runs of one header statement in the order given, one executemany each.
            run: list[_Update] = []
            for each in [*updates, None]:
                if run and (each is None or each.head_statement is not run[0].head_statement):
                    if run[0].head_statement.execute(conn, [u.head for u in run]) != len(run):
                        if len(run) == 1:
                            raise ConflictError(f"{run[0].key}: the stored version is not "
                                                f"{run[0].head['expected']}; another writer won")
                        names = ", ".join(repr(u.key) for u in run)
                        raise ConflictError(f"one of {names}: the stored version is not the "
                                            f"one before this write; another writer won")
                    run = []
                if each is not None:
                    run.append(each)
            for statement, part in ((self._hot_step, "rows"), (self._hot_step_upsert, "upserts"),
                                    (self._hot_state, "values"), (self._hot_events, "logged")):
                params = [p for u in updates for p in getattr(u, part)]
                if params:
                    statement.execute(conn, params)

        what = (f"write workflow {updates[0].key!r}" if len(updates) == 1
                else f"write {len(updates)} workflows")
        # A lost race keeps the cached records: each is still a version that was
        # stored, and the reload then reads only the rows written since.
        self._db.run(work, what=what)
        for each in updates:
            self._db.after_commit(functools.partial(self._written, each))

    def _written(self, update: _Update) -> None:
        self._note_retry(update.key, update.written)
        self._cache.put(update.record)

    def _note_retry(self, key: str, written: tuple[int, float | None]) -> None:
        if len(self._retry_written) >= _RETRY_NOTES:
            self._retry_written.clear()  # only a saving: forgetting costs one index write
        self._retry_written[key] = written

    def _create_keyed(self, record: WorkflowRecord, key: str) -> str | None:
        try:
            self._create(self._payloads.pack_record(record, None), key)
        except ConflictError:
            owner = self._key_owner(key)
            if owner is None:
                raise
            return owner
        self._db.after_commit(lambda: self._cache.put(record))
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
        self._prepare_create(record, idempotency_key, events)()

    def _prepare_create(self, record: WorkflowRecord, idempotency_key: str | None = None,
                        events: Sequence[dict[str, Any]] = ()) -> Callable[[], None]:
        """The rows of a new record built; the function that inserts them."""
        key = record.workflow_execution_id
        head: dict[str, Any] = {
            "workflow_execution_id": key,
            "workflow_id": record.workflow_id,
            "execution_id": record.execution_id,
            "name": record.plan.name,
            "status": record.status.value,
            "version": record.version,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "spec": self._specs.text(record.spec),
            "inputs": dumps(record.inputs),
            "state": "{}",  # the state is in runfox_state
            "outcome": dumps(record.outcome),
            "parent": None if record.parent is None else dumps(record.parent),
        }
        head["due_at"], head["retry_at"] = due_times(record, self.claim_grace)
        values = _state_params(key, record, None)
        # Steps still in their initial state get no row (schema 12): a missing row
        # reads as that step, and the write that first changes it inserts it. A
        # new execution of many steps writes the few it claims, not all of them.
        rows = [_step_row(key, s, record.version) for s in record.steps.values()
                if not _initial(s)]

        def work(conn: Connection) -> None:
            if idempotency_key is not None:  # first: a racing creator stops here
                conn.execute(_INSERT_KEY, {"idempotency_key": idempotency_key,
                                           "workflow_execution_id": key,
                                           "created_at": record.created_at})
            try:
                self._hot_create.execute(conn, head)
            except IntegrityError as exc:
                # The header's one unique key: the execution exists. A
                # ConflictError, also inside a joint unit (which it rolls back).
                raise ConflictError(f"{key}: a record with this key already exists") from exc
            if rows:
                self._hot_steps.execute(conn, rows)
            if values:
                self._hot_state.execute(conn, values)
            if events:
                self._hot_events.execute(conn, list(events))

        def create() -> None:
            try:
                self._db.run(work, what=f"create workflow {key!r}", duplicate_ok=True)
            except DuplicateRow as exc:
                raise ConflictError(f"{key}: a record with this key already exists") from exc
        return create

    # -- load -------------------------------------------------------------------

    def cached_record(self, workflow_execution_id: str) -> WorkflowRecord | None:
        """The record of that execution this store last wrote or loaded, if it
        is still in the cache; possibly stale (a ``loaded`` for ``transition``)."""
        return self._cache.get(workflow_execution_id)

    def load_shared_many(self, keys: Sequence[str]) -> dict[str, WorkflowRecord]:
        """``Store.load_shared_many``: the records this store holds no version of
        are read together, three statements for up to ``_MANY`` of them instead of
        three each; the others (and any whose rows changed between the reads) one
        by one, as ``load_shared`` reads them."""
        wanted = list(dict.fromkeys(keys))
        unseen = [key for key in wanted if self._cache.get(key) is None]
        cached = set(wanted).difference(unseen)
        alone = [key for key in wanted if key in cached]
        found: dict[str, WorkflowRecord] = {}
        for start in range(0, len(unseen), _MANY):
            chunk = unseen[start:start + _MANY]
            if len(chunk) == 1:
                alone.extend(chunk)
                continue
            reads = self._db.run(functools.partial(self._read_many, chunk), write=False,
                                 standalone=True, what=f"load {len(chunk)} workflows")
            for key in chunk:
                read = reads.get(key)
                if read is None:
                    continue  # no such record
                if not read.whole:
                    alone.append(key)  # a write landed between the reads
                    continue
                record = self._payloads.unpack_record(_decode_full(key, read, self._specs),
                                                      None)
                self._cache.put(record)
                found[key] = record
        for key in alone:
            loaded = self._load(key)
            if loaded is not None:
                found[key] = loaded
        return found

    def _read_many(self, chunk: list[str], conn: Connection) -> dict[str, _Read]:
        size = 2
        while size < len(chunk):
            size *= 2
        hot = self._hot_many.get(size)
        if hot is None:
            hot = self._hot_many[size] = tuple(HotStatement(self._db, statement)
                                               for statement in _select_many(size))
        params = {f"k{i}": chunk[i] if i < len(chunk) else "" for i in range(size)}
        heads = hot[0].rows(conn, params)
        if not heads:
            return {}
        step_rows: dict[str, list[Any]] = {}
        for row in hot[1].rows(conn, params):
            step_rows.setdefault(row.workflow_execution_id, []).append(row)
        state_rows: dict[str, list[Any]] = {}
        for row in hot[2].rows(conn, params):
            state_rows.setdefault(row.workflow_execution_id, []).append(row)
        return {head.workflow_execution_id: _Read(
            head, step_rows.get(head.workflow_execution_id, ()),
            state_rows.get(head.workflow_execution_id, ()), None) for head in heads}

    def _load(self, workflow_execution_id: str) -> WorkflowRecord | None:
        key = workflow_execution_id
        cached = self._cache.get(key)

        def work(conn: Connection) -> _Read | None:
            base = cached
            found = (self._hot_read_head if base else self._hot_read_full).rows(conn, {"k": key})
            if not found:
                return None
            head = found[0]
            if base is not None and head.version < base.version:  # the table was reset
                base = None
                head = self._hot_read_full.rows(conn, {"k": key})[0]
            if base is not None and head.version == base.version:
                return _Read(head, (), (), base)
            since = {"k": key, "since": base.version if base is not None else 0}
            return _Read(head, self._hot_read_steps.rows(conn, since),
                         self._hot_read_state.rows(conn, since), base)

        for _ in range(_TORN_READS):
            found = self._db.run(work, write=False, standalone=True,
                                 what=f"load workflow {key!r}")
            if found is None or found.whole:
                break
        else:  # pragma: no cover - needs a writer faster than every read
            raise BackendError(f"workflow {key!r} changed during each of {_TORN_READS} reads")
        if found is None:
            self._cache.drop(key)
            return None
        base = found.base
        if base is not None and found.head.version == base.version:
            return base
        record = (_apply_delta(key, found) if base is not None
                  else _decode_full(key, found, self._specs))
        record = self._payloads.unpack_record(record, base)
        self._cache.put(record)
        return record

    # -- due work -------------------------------------------------------------------

    def due(self, now: float, limit: int = 500) -> DueWork:
        """Executions whose ``due_at`` has passed, earliest first, from the index.

        ``due_at`` is computed by each write (``due_times``): the earliest waiting
        retry, the write itself when a step could be claimed at once, and
        ``claim_grace`` after it while steps are in progress. Executions with
        results waiting in a ``SqlRunner`` on this database (from workers that do
        not drive) come after them.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")

        def work(conn: Connection) -> DueWork:
            params = {"now": now, "limit": limit}
            keys = [row[0] for row in conn.execute(_SELECT_DUE, params)]
            if len(keys) < limit:
                seen = set(keys)
                keys.extend(k for (k,) in conn.execute(_RESULTS_WAITING, params)
                            if k not in seen)
            nxt = conn.execute(_NEXT_RETRY, {"now": now}).scalar()
            return DueWork(keys[:limit], None if nxt is None else float(nxt))

        return self._db.run(work, write=False, standalone=True, what="read due executions")

    def postpone(self, record: WorkflowRecord, now: float) -> None:
        """Move the execution's ``due_at`` past ``now`` unless it was written since
        ``record`` (no version bump: it changes no state)."""
        due_at, retry_at = postponed(record, now, self.claim_grace)
        self._retry_written.pop(record.workflow_execution_id, None)
        params = {"k": record.workflow_execution_id, "v": record.version, "due": due_at,
                  "retry": retry_at}
        self._db.run(lambda conn: conn.execute(_POSTPONE, params), standalone=True,
                     what=f"postpone workflow {record.workflow_execution_id!r}")

    @property
    def reloads_in_unit(self) -> bool:
        # SQLite: the unit holds the one write lock from BEGIN IMMEDIATE on.
        # (PostgreSQL's read committed would see the winner's rows too, but an
        # engine may be set to repeatable read; there the unit runs again.)
        return self._db.dialect.name == "sqlite"

    def unit_with(self, runner: Runner) -> UnitOfWork | None:
        """One transaction for this store and ``runner`` when they share the database
        (``parts_from_url``, or one engine): ``Database.joint``."""
        if isinstance(runner, DatabaseUser) and runner._db is self._db:
            return self._db.joint
        return None

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
                    for table in (history, steps, state, tasks, keys):
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


def _initial(step: StepRecord) -> bool:
    """The step is as a new execution has it (``StepRecord(step.id)``: ready, run
    0, never attempted): stored without a row, which reads back as exactly this.
    Field by field, as equality with a new ``StepRecord`` costs one per step of a
    new execution (``tests/test_sql_backend.py`` checks every compared field)."""
    return (step.status is StepStatus.READY and step.run_id == 0 and step.attempts == 0
            and step.output is None and step.error is None and step.started_at is None
            and step.finished_at is None and step.not_before is None
            and step.inputs is None and not step.cached and step.items is None
            and step.child is None)


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


class _Read:
    """What one load read: the header, the step and state rows newer than ``base``."""

    __slots__ = ("base", "head", "state_rows", "step_rows")

    def __init__(self, head: Row[Any], step_rows: Sequence[Any],
                 state_rows: Sequence[Any], base: WorkflowRecord | None) -> None:
        self.head, self.step_rows, self.state_rows, self.base = head, step_rows, state_rows, base

    @property
    def whole(self) -> bool:
        """No row is newer than the header: no write landed between the reads."""
        version = self.head.version
        return (all(r.version <= version for r in self.step_rows)
                and all(r.version <= version for r in self.state_rows))


def _merged_state(key: str, state: dict[str, Any], rows: Sequence[Row[Any]]
                  ) -> dict[str, Any]:
    """``state`` with the rows applied in version order (a NULL value removes the key).

    Unchanged keys keep their value objects, which is how the next write finds
    the keys that changed (by identity, ``_state_params``)."""
    if not rows:
        return state
    merged = dict(state)
    for row in sorted(rows, key=lambda r: r.version):
        if row.value is None:
            merged.pop(row.name, None)
        else:
            merged[row.name] = _column(key, f"runfox_state.value of {row.name!r}", row.value)
    return merged


def _decode_full(key: str, found: _Read, specs: _SpecTexts) -> WorkflowRecord:
    head, rows = found.head, found.step_rows
    legacy = _column(key, "state", head.state)  # records written before schema 9
    data = {
        "workflow_id": head.workflow_id,
        "execution_id": head.execution_id,
        "version": head.version,
        "status": head.status,
        "created_at": head.created_at,
        "updated_at": head.updated_at,
        "spec": specs.spec(key, head.spec),
        "inputs": _column(key, "inputs", head.inputs),
        "state": (_merged_state(key, legacy, found.state_rows) if isinstance(legacy, dict)
                  else legacy),
        "outcome": _column(key, "outcome", head.outcome),
        "steps": _step_dicts(key, rows),
    }
    if head.parent is not None:
        data["parent"] = _column(key, "parent", head.parent)
    record = WorkflowRecord.from_dict(data)
    if record.workflow_execution_id != key:
        raise CorruptRecord(key, f"the row holds record {record.workflow_execution_id!r}")
    return record


def _apply_delta(key: str, found: _Read) -> WorkflowRecord:
    """The cached record moved to the header's version with the rows written since."""
    base, head = found.base, found.head
    assert base is not None
    plan = base.plan
    try:
        changes: dict[str, StepRecord] = {}
        fresh: list[Mapping[str, Any]] = []  # items of a map claimed since ``base``
        for d in _step_dicts(key, found.step_rows):
            spec = plan.by_id.get(d["id"])
            if spec is not None:
                changes[d["id"]] = StepRecord.from_dict(d, list_output=spec.map is not None)
            elif d["id"] in base.steps:
                changes[d["id"]] = StepRecord.from_dict(d)
            else:
                fresh.append(d)
        state = _merged_state(key, base.state, found.state_rows)
        status = WorkflowStatus(head.status)
        outcome = _column(key, "outcome", head.outcome)
        def plain(step: StepRecord) -> bool:  # no defect, not a map step
            spec = plan.by_id.get(step.id)
            return not step.defects and (spec is None or spec.map is None)

        if not fresh and not base.defects and all(map(plain, changes.values())):
            # The usual case (another worker's result, or a few of them): move the
            # derived counts and ready set along with the changed steps only,
            # instead of deriving them again over every step of the record.
            moved = StepChanges(base, resolve=False)
            for step in changes.values():
                moved.put(step)
            return moved.commit(state=state, status=status, outcome=outcome,
                                version=int(head.version), updated_at=float(head.updated_at))
        steps = base.steps
        if fresh:
            steps = steps.extend(StepRecord.from_dict(d) for d in ordered_items(plan, fresh))
        return WorkflowRecord(
            workflow_id=base.workflow_id,
            execution_id=base.execution_id,
            spec=base.spec,
            inputs=base.inputs,
            state=state,
            steps=steps.replace(changes),
            status=status,
            outcome=outcome,
            version=int(head.version),
            created_at=base.created_at,
            updated_at=float(head.updated_at),
            parent=base.parent,
            plan=plan,
        )  # ready/open/unmet are derived again from the merged steps
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRecord(key, f"{type(exc).__name__}: {exc}") from exc


def _state_params(key: str, record: WorkflowRecord, previous: WorkflowRecord | None,
                  text: Callable[[Any], str] = dumps) -> list[dict[str, Any]]:
    """Rows for the state keys whose value changed since ``previous``, by identity.

    The graph builds a new state dict only by merging (``{**state, **output}``),
    so an unchanged key keeps its value object and costs one dict lookup, not
    its JSON. A key ``previous`` had and ``record`` lacks gets a NULL row.
    ``text`` makes a value's column (``Offloader.pack_json``: offloaded, or
    the JSON measured for that).
    """
    new = record.state
    old: Mapping[str, Any] = previous.state if previous is not None else {}
    if new is old:
        return []
    missing = object()
    rows = []
    kept = 0
    for name, value in new.items():
        before = old.get(name, missing)
        if before is not missing:
            kept += 1
            if before is value:
                continue
        if len(name) > MAX_STATE_KEY:
            raise ValueError(f"{key}: state key {name[:40]!r}... is longer than "
                             f"{MAX_STATE_KEY} characters")
        rows.append({"workflow_execution_id": key, "name": name, "version": record.version,
                     "value": text(value)})
    if kept < len(old):
        rows.extend({"workflow_execution_id": key, "name": name, "version": record.version,
                     "value": None} for name in old if name not in new)
    return rows


def _upsert(table: Table, values: tuple[str, ...], dialect: str) -> Insert:
    """Insert a row of ``table``, or replace ``values`` of the row with its primary key."""
    index = [c.name for c in table.primary_key.columns]
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table)
        return lite.on_conflict_do_update(index_elements=index,
                                          set_={c: lite.excluded[c] for c in values})
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table)
        return pg.on_conflict_do_update(index_elements=index,
                                        set_={c: pg.excluded[c] for c in values})
    from sqlalchemy.dialects.mysql import insert as mysql_insert

    my = mysql_insert(table)
    return my.on_duplicate_key_update({c: my.inserted[c] for c in values})


def _state_upsert(dialect: str) -> Insert:
    """Insert a state row, or replace the version and value of the existing one."""
    return _upsert(state, ("version", "value"), dialect)


def _steps_upsert(dialect: str) -> Insert:
    """Insert a step row, or replace everything but its key in the existing one."""
    return _upsert(steps, ("status", "run_id", "version", "data"), dialect)


def due_times(record: WorkflowRecord, grace: float) -> tuple[float | None, float | None]:
    """``(due_at, retry_at)`` of a record as written: when the sweep should look
    at it, and its earliest waiting retry (``None``: none).

    Costs the ready set, not the record: a finished execution is never due; a
    pending one, or one with a step claimable now, is due at once (its write's
    time); a waiting retry is due at its ``not_before``; steps in progress make it
    due ``grace`` seconds after the write (their jobs may have been lost between
    claim and dispatch, or by a gatherer that died).
    """
    if record.status.is_terminal:
        return None, None
    written = record.updated_at
    if record.status is WorkflowStatus.PENDING:
        return written, None
    retry_at: float | None = None
    claimable = False
    steps = record.steps
    for step_id in record.ready:
        not_before = steps[step_id].not_before
        if not_before is None:
            claimable = True
        elif retry_at is None or not_before < retry_at:
            retry_at = not_before
    limit = record.plan.max_parallel
    if claimable and (limit is None or record.running < limit):
        return written, retry_at
    candidates = [t for t in (retry_at, written + grace if record.running else None)
                  if t is not None]
    return (min(candidates) if candidates else None), retry_at


def postponed(record: WorkflowRecord, now: float, grace: float
              ) -> tuple[float | None, float | None]:
    """``(due_at, retry_at)`` for a record the sweep looked at and left alone.

    Pushed forward by as long as the execution has been quiet (bounded by
    ``_RECHECK_MIN`` and ``_RECHECK_MAX``), so a long-running execution is looked
    at a few times per hour at most, never earlier than a retry that waits.
    """
    due_at, retry_at = due_times(record, grace)
    if due_at is None:
        return None, retry_at
    later = now + min(max(now - record.updated_at, _RECHECK_MIN), _RECHECK_MAX)
    if retry_at is not None and now < retry_at < later:
        later = retry_at
    return max(due_at, later), retry_at
