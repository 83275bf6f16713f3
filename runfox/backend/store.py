"""Store: where workflow records live.

The public methods (``load``, ``write``, ``list_executions``, ``find``) are implemented once
here; a technology implements three small primitives:

- ``_load(key)``: the record, or ``None``.
- ``_write(record, previous)``: store ``record`` only if the stored version is
  ``record.version - 1`` (or, for ``record.version == 1``, only if no record
  exists); otherwise raise ``ConflictError``. ``previous`` is the record as it was
  loaded, so an implementation can write only what changed
  (``record.steps.changed_since(previous.steps)``).
- ``_list(status, limit)``: summaries for ``runfox list``.

and may override ``_find(prefix, limit)`` (``find``: keys by prefix, for ids typed
at the command line) when the database can filter by prefix itself.

Idempotency keys (``create(record, key)``, behind ``Backend.create(..., key=)``)
need one more primitive, ``_create_keyed(record, key)``: store the version-1
``record`` and remember ``key -> record`` in one conditional write, unless
``key`` is taken, in which case store nothing and return the id it names. The
default refuses (a store written before keys existed keeps working without
them). Schedules (``runfox.schedules``) live in the store's database too:
``schedules()`` returns its ``ScheduleStore`` (default: none, ``BackendError``), and
so does the step cache: ``cache()`` returns its ``Cache`` (default: ``None``, no
cache: cached steps run every time, with a warning).


History (``runfox.history``): ``write_shared(record, previous, events)`` hands a
transition's events to the store, which keeps them in the same unit of work as
the record through ``_write_logged(record, previous, events)`` (one lock, one SQL
transaction, one DynamoDB transaction); ``history(key)`` reads them back through
``_history(key)``, and ``prune(before, statuses)`` removes finished executions
with their history through ``_prune``. A store that sets ``keeps_history`` implements
all three; the defaults keep no history (writes drop the events; ``history`` and
``prune`` raise ``BackendError``).

Due work (``Worker.sweep``): ``due(now, limit)`` names executions that may have
something to do by ``now`` without a result arriving (a retry whose backoff
passed, a step claimable but unclaimed, a claimed step whose job may have been
lost), and ``postpone(record, now)`` tells the store that a look at ``record``
found nothing, so ``due`` need not name it again soon. The defaults list every
running execution and forget nothing (what the sweep always did); the SQL
store keeps an index of due times written with each record (``tracks_due``), so a sweep's cost
follows the work that is due, not the executions that are open.

Joint units of work: ``unit_with(runner)`` returns a function that runs a
callable as one transaction spanning this store and ``runner`` when the two
share a database (SQL parts from one URL), else ``None``. The Backend then
writes a transition, dispatches its jobs and acknowledges the finished job in
one commit.

Isolation (the seed: ``load`` returns a copy isolated from the store, ``write``
persists a copy isolated from the caller) is done here too: ``load`` and ``write``
pass records through ``WorkflowRecord.isolated()``. The Backend's transitions use
``load_shared`` and ``write_shared`` instead, which skip the copy: a transition
never changes the record it loaded, and hands the record it builds to the store
and to nobody else. That is what keeps a transition's cost independent of the
record's size while an implementation keeps record objects (``InMemoryStore``, the
SQL store's cache). An implementation whose ``_load`` decodes a new record on
every call and whose ``_write`` keeps nothing of its argument may set
``isolates = True`` to skip the copies.

Large payloads (``runfox.payloads``): a store that offloads large values hands
out its ``Offloader`` with ``payloads()`` (default ``None``: values stay inline)
and packs records before encoding them and unpacks them after decoding, so
callers only ever see plain values.
"""

from __future__ import annotations

import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import BackendError, ConflictError, WorkflowNotFound
from ..history import Event, created_event
from ..records import WorkflowRecord
from ..status import WorkflowStatus
from .cache_store import Cache, InMemoryCache
from .payload_store import InMemoryPayloads, Offloader, offload_threshold
from .schedule_store import InMemoryScheduleStore, ScheduleStore
from .workers import InMemoryWorkerRegistry, WorkerRegistry

if TYPE_CHECKING:
    from .runner import Runner

__all__ = ["DUE_PAGE", "FINISHED", "MAX_KEY_LENGTH", "PRUNE_BATCH", "DueWork",
           "ExecutionSummary", "InMemoryStore", "Store", "UnitOfWork", "check_key",
           "key_matches", "run_in_turn"]

#: Runs a callable as one unit of work and returns what it returns (``Store.unit_with``).
UnitOfWork = Callable[[Callable[[], Any]], Any]
#: How many due executions ``Store.due`` returns by default.
DUE_PAGE = 500

#: The statuses ``Store.prune`` removes by default: every finished one.
FINISHED = frozenset(s for s in WorkflowStatus if s.is_terminal)
#: How many executions ``Store.prune`` removes per transaction by default.
PRUNE_BATCH = 500


@dataclass(frozen=True, slots=True)
class ExecutionSummary:
    """One line of ``runfox list``."""

    workflow_execution_id: str
    name: str
    status: WorkflowStatus
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class DueWork:
    """One page of ``Store.due``: execution keys, earliest due first, and the
    earliest waiting retry after ``now`` among all executions (``None``: none
    known, or the store does not track retries)."""

    keys: list[str]
    next_retry: float | None = None


class Store(ABC):
    """Durable persistence of ``WorkflowRecord`` with conditional writes."""

    #: True when ``_load`` builds a new record on every call and ``_write`` keeps
    #: no reference to its argument, so ``load``/``write`` need not copy.
    isolates: ClassVar[bool] = False
    #: True when the store persists history (``_write_logged``, ``_history``, ``_prune``).
    keeps_history: ClassVar[bool] = False
    #: True when ``due`` reads due times its writes keep and ``postpone`` moves them
    #: (the sweep then tells it what it found); False: ``due`` lists every running one.
    tracks_due: ClassVar[bool] = False

    @property
    def reloads_in_unit(self) -> bool:
        """Inside a unit of work (``unit_with``), a load after a lost race sees the
        winner's write, so the unit may reload and write again instead of rolling
        back (SQLite, which holds its write lock from the start). False by default,
        and wherever a transaction may keep one snapshot (repeatable read)."""
        return False

    def load(self, workflow_execution_id: str) -> WorkflowRecord:
        """The stored record, as a copy isolated from the store.

        Changing anything inside it (``record.state["x"] = 1``) changes neither
        the stored record nor what this or any store hands out next.

        Raises:
            WorkflowNotFound: (a ``KeyError``) no record has that key.
            CorruptRecord: the stored data cannot be decoded.
        """
        record = self.load_shared(workflow_execution_id)
        return record if self.isolates else record.isolated()

    def load_shared(self, workflow_execution_id: str) -> WorkflowRecord:
        """The stored record without a copy: possibly the object the store keeps.

        For runfox's transitions and read-only checks, which never change a
        record. Anything that could change it must use ``load``.

        Raises:
            WorkflowNotFound: (a ``KeyError``) no record has that key.
            CorruptRecord: the stored data cannot be decoded.
        """
        record = self._load(workflow_execution_id)
        if record is None:
            raise WorkflowNotFound(f"no workflow execution {workflow_execution_id!r}")
        return record

    def load_shared_many(self, keys: Sequence[str]) -> dict[str, WorkflowRecord]:
        """The stored records of ``keys``, as ``load_shared`` gives each: shared,
        for reading only. A key with no record is left out.

        For a worker holding results of several executions it has not read yet
        (``Backend.apply_and_take_many``). One ``load_shared`` per key by default;
        a store that can read several records in one round trip overrides it.

        Raises:
            CorruptRecord: a stored record cannot be decoded.
        """
        found: dict[str, WorkflowRecord] = {}
        for key in dict.fromkeys(keys):
            record = self._load(key)
            if record is not None:
                found[key] = record
        return found

    def write(self, record: WorkflowRecord, previous: WorkflowRecord | None = None) -> None:
        """Store a copy of ``record`` if nobody wrote since version ``record.version - 1``.

        The copy is isolated from the caller: changing ``record`` afterwards does
        not change what is stored. Version 1 creates the record and fails if one
        exists. ``previous``, when given, must be the record as loaded.

        Raises:
            ConflictError: the stored version is not ``record.version - 1``.
            ValueError: ``record.version`` is below 1, or ``previous`` is not the
                version before ``record``.
        """
        self._check_versions(record, previous)
        self._write(record if self.isolates else record.isolated(), previous)

    def write_shared(self, record: WorkflowRecord, previous: WorkflowRecord | None = None,
                     events: Sequence[Event] = ()) -> None:
        """``write`` without the copy, for a record nobody will change afterwards.

        The Backend's transitions write this way: ``record`` was built by the pure
        graph from ``previous`` (a ``load_shared`` record) and is handed over. With
        ``previous`` a store can write only the steps that changed
        (``record.steps.changed_since(previous.steps)``). ``events`` (the
        transition's history, ``runfox.history.events_between``) are stored with
        the record or not at all, by a store that ``keeps_history``.
        """
        self._check_versions(record, previous)
        if events and self.keeps_history:
            self._write_logged(record, previous, events)
        else:
            self._write(record, previous)

    def prepare_write(self, record: WorkflowRecord, previous: WorkflowRecord | None = None,
                      events: Sequence[Event] = ()) -> Callable[[], None]:
        """``write_shared`` in two parts: what needs no database now (checks, the
        encoding), the writing itself when the returned function is called.

        For a unit of work that writes several records: it prepares them all
        before its first statement, so a database lock the unit takes at its
        first statement (SQLite's) is held for the statements, not the encoding.
        A store that cannot split the work does all of it in the call.

        Raises:
            ValueError: as ``write_shared``, now or in the call.
        """
        self._check_versions(record, previous)
        return functools.partial(self.write_shared, record, previous, events)

    def prepare_writes(self, items: Sequence[tuple[WorkflowRecord, WorkflowRecord | None,
                                                   Sequence[Event]]]) -> Callable[[], None]:
        """``prepare_write`` for several records, ``(record, previous, events)`` each:
        all prepared now, all written when the returned function is called, in the
        order given. A store may run the statements of all of them together (SQL: one
        ``executemany`` per kind); a lost race of any of them then raises
        ``ConflictError`` for the call, inside a unit of work that undoes the others.
        By default, each record's write in turn.

        Raises:
            ValueError: as ``prepare_write``, now or in the call.
        """
        return functools.partial(run_in_turn, [self.prepare_write(*item) for item in items])

    def history(self, workflow_execution_id: str) -> list[Event]:
        """The execution's events in order: ``created``, then each transition's.

        A stored event that cannot be decoded comes back as a ``corrupt`` event
        naming where it is stored, in its place.

        Raises:
            WorkflowNotFound: no record has that key.
            BackendError: this store keeps no history.
        """
        if not self.keeps_history:
            raise BackendError(f"{type(self).__name__} keeps no execution history")
        record = self.load_shared(workflow_execution_id)
        events = self._history(workflow_execution_id)
        events.sort(key=lambda e: e.seq)
        return [created_event(record), *events]

    def prune(self, before: float, statuses: Iterable[WorkflowStatus | str] = FINISHED,
              batch: int = PRUNE_BATCH) -> int:
        """Remove finished executions last written before ``before`` (epoch seconds).

        Each goes with everything the store keeps of it: steps, history,
        idempotency key, and queued or finished jobs where they share the
        database. ``statuses`` (default: every finished one) must all be final;
        at most ``batch`` executions go per transaction. Returns how many went.

        Raises:
            ValueError: a status that is not final, or ``batch`` below 1.
            BackendError: this store cannot prune.
        """
        wanted = frozenset(WorkflowStatus(s) for s in statuses)
        running = sorted(s.value for s in wanted if not s.is_terminal)
        if running:
            raise ValueError(f"prune removes finished executions only; not {running}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if not wanted:
            return 0
        if not self.keeps_history:
            raise BackendError(f"{type(self).__name__} cannot prune executions")
        return self._prune(float(before), wanted, batch)

    def _write_logged(self, record: WorkflowRecord, previous: WorkflowRecord | None,
                      events: Sequence[Event]) -> None:
        """``_write`` plus ``events``, in one unit of work (stores that keep history)."""
        self._write(record, previous)

    def _history(self, workflow_execution_id: str) -> list[Event]:
        """The stored events of the execution (any order; ``corrupt`` for bad ones)."""
        return []

    def _prune(self, before: float, statuses: frozenset[WorkflowStatus], batch: int) -> int:
        return 0

    @staticmethod
    def _check_versions(record: WorkflowRecord, previous: WorkflowRecord | None) -> None:
        if record.version < 1:
            raise ValueError(f"record version must be >= 1 to be written, got {record.version}")
        if previous is not None and previous.version != record.version - 1:
            raise ValueError(f"previous is version {previous.version}, "
                             f"expected {record.version - 1}")

    def create(self, record: WorkflowRecord, key: str) -> str:
        """Store the new ``record`` under the idempotency ``key``; return the winning id.

        While an execution holds ``key``, nothing is stored and its id is
        returned; otherwise ``record`` is stored (as ``write`` would, version 1)
        together with the key, in one conditional write, and its id returned.
        Any number of processes may race: exactly one record is stored.

        Raises:
            ValueError: ``record`` is not version 1, or ``key`` is empty or longer
                than ``MAX_KEY_LENGTH`` characters.
            BackendError: this store keeps no keys.
        """
        if record.version != 1:
            raise ValueError(f"create needs a version-1 record, got version {record.version}")
        check_key(key)
        found = self._create_keyed(record if self.isolates else record.isolated(), key)
        return record.workflow_execution_id if found is None else found

    def key_owner(self, key: str) -> str | None:
        """The id of the execution holding idempotency ``key``, or ``None``."""
        check_key(key)
        return self._key_owner(key)

    def schedules(self) -> ScheduleStore:
        """The ``ScheduleStore`` in this store's database.

        Raises:
            BackendError: this kind of store keeps no schedules.
        """
        raise BackendError(f"{type(self).__name__} keeps no schedules")

    def workers(self) -> WorkerRegistry:
        """The ``WorkerRegistry`` (live workers) in this store's database.

        Raises:
            BackendError: this kind of store keeps no worker rows.
        """
        raise BackendError(f"{type(self).__name__} keeps no worker registry")

    def payloads(self) -> Offloader | None:
        """The ``Offloader`` this store packs large values with, or ``None`` (the
        default): this store keeps every value inside its records."""
        return None

    def cache(self) -> Cache | None:
        """The step cache kept beside the records (``runfox.backend.cache_store``), the
        same object on every call; ``None`` (the default): this store keeps none, and
        steps with ``cache`` on simply run."""
        return None

    def _create_keyed(self, record: WorkflowRecord, key: str) -> str | None:
        """Store ``record`` and ``key`` together unless ``key`` is taken.

        Returns ``None`` when stored, else the id holding ``key`` (nothing stored).
        """
        raise BackendError(f"{type(self).__name__} does not support idempotency keys")

    def _key_owner(self, key: str) -> str | None:
        raise BackendError(f"{type(self).__name__} does not support idempotency keys")

    def due(self, now: float, limit: int = DUE_PAGE) -> DueWork:
        """Executions that may have work due by ``now`` (epoch seconds), at most ``limit``.

        A sweep advances each and calls ``postpone`` for those where it found
        nothing to do. The default names every pending and in-progress
        execution (newest first) every time; a store with an index of due
        times overrides it (the SQL store). Naming an execution with nothing
        due is harmless, only slower.

        Raises:
            ValueError: ``limit`` is below 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        keys: list[str] = []
        for status in (WorkflowStatus.PENDING, WorkflowStatus.IN_PROGRESS):
            keys.extend(s.workflow_execution_id
                        for s in self._list(status, limit - len(keys)))
            if len(keys) >= limit:
                break
        return DueWork(keys[:limit])

    def postpone(self, record: WorkflowRecord, now: float) -> None:
        """A sweep looked at ``record`` at ``now`` and found nothing to do.

        A store with an index of due times moves the execution later (unless
        it was written since ``record``: a newer version has its own due time),
        without a new record version. The default does nothing.
        """

    def unit_with(self, runner: Runner) -> UnitOfWork | None:
        """A function running ``work()`` as one unit of work of this store and
        ``runner``, or ``None`` (the default) when they do not share one.

        Inside it, this store's writes and ``runner``'s calls commit together or
        not at all; what ``work`` returns is returned. The Backend uses it to
        write a transition, dispatch its jobs and acknowledge a job in one commit.
        """
        return None

    def list_executions(
        self, status: WorkflowStatus | str | None = None, limit: int = 100
    ) -> list[ExecutionSummary]:
        """Summaries of stored executions, newest first, optionally of one status."""
        return self._list(WorkflowStatus(status) if status is not None else None, limit)

    def find(self, prefix: str, limit: int = 10) -> list[str]:
        """Keys of stored executions that start with ``prefix``, newest first, at most ``limit``.

        ``prefix`` may begin the whole key (``<workflow_id>#<execution_id>``) or
        only its execution-id part (``20261130T...``), as people copy it; a key
        equal to ``prefix`` comes first. ``runfox status|cancel|graph`` resolve
        an id through this. The default reads every summary (``_list``); a store
        that can ask its database for the prefix overrides ``_find``.
        """
        if limit <= 0 or not prefix:
            return []
        return self._find(prefix, limit)[:limit]

    def close(self) -> None:
        """Release connections; the store may not be used afterwards."""

    def _find(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` keys matching ``prefix`` (``key_matches``): the key equal
        to ``prefix`` first if there is one, then newest first."""
        keys = [s.workflow_execution_id for s in self._list(None, _EVERYTHING)]
        found = [key for key in keys if key_matches(key, prefix)]
        found.sort(key=lambda key: key != prefix)  # stable: the rest stay newest first
        return found[:limit]

    @abstractmethod
    def _load(self, workflow_execution_id: str) -> WorkflowRecord | None: ...

    @abstractmethod
    def _write(self, record: WorkflowRecord, previous: WorkflowRecord | None) -> None: ...

    @abstractmethod
    def _list(self, status: WorkflowStatus | None, limit: int) -> list[ExecutionSummary]: ...


def run_in_turn(writes: Sequence[Callable[[], None]]) -> None:
    """Call each prepared write (``Store.prepare_write``) in order."""
    for write in writes:
        write()


#: ``_list``'s limit when ``_find`` needs every summary.
_EVERYTHING = 2**31 - 1


def key_matches(key: str, prefix: str) -> bool:
    """``key`` starts with ``prefix``, or its execution-id part (after ``#``) does."""
    return key.startswith(prefix) or key.partition("#")[2].startswith(prefix)


#: The longest idempotency key a store accepts (the SQL column's width).
MAX_KEY_LENGTH = 255


def check_key(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is a usable idempotency key."""
    if not isinstance(key, str) or not key:
        raise ValueError("key: an idempotency key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"key: an idempotency key is at most {MAX_KEY_LENGTH} characters, "
                         f"got {len(key)}")


def summary_of(record: WorkflowRecord) -> ExecutionSummary:
    return ExecutionSummary(record.workflow_execution_id, record.plan.name, record.status,
                            record.created_at, record.updated_at)


class InMemoryStore(Store):
    """Records in a dict, guarded by a lock. Thread-safe; gone when the process exits.

    ``offload``: with a threshold (bytes; default ``$RUNFOX_OFFLOAD_BYTES``, else
    none) larger values go to an ``InMemoryPayloads`` and records are kept packed,
    exactly as a database store keeps them; loads then unpack every time. Without
    one (the usual case) records are shared objects and nothing is copied.
    """

    keeps_history = True

    def __init__(self, *, offload: int | str | None = None) -> None:
        threshold = offload_threshold(offload, None)
        self._payloads = (Offloader(InMemoryPayloads(), threshold) if threshold is not None
                          else None)
        self._records: dict[str, WorkflowRecord] = {}
        self._events: dict[str, list[Event]] = {}
        self._keys: dict[str, str] = {}
        self._lock = threading.RLock()
        self._schedules = InMemoryScheduleStore()
        self._workers = InMemoryWorkerRegistry()
        self._cache = InMemoryCache()

    def _load(self, workflow_execution_id: str) -> WorkflowRecord | None:
        record = self._records.get(workflow_execution_id)
        if record is not None and self._payloads is not None:
            record = self._payloads.unpack_record(record)
        return record

    def _write(self, record: WorkflowRecord, previous: WorkflowRecord | None) -> None:
        key = record.workflow_execution_id
        with self._lock:
            stored = self._records.get(key)
            found = 0 if stored is None else stored.version
            if found != record.version - 1:
                raise ConflictError(f"{key}: stored version is {found}, "
                                    f"this write expected {record.version - 1}")
            if self._payloads is not None:  # every step: the stored record is all packed
                record = self._payloads.pack_record(record, None)
            self._records[key] = record

    def _write_logged(self, record: WorkflowRecord, previous: WorkflowRecord | None,
                      events: Sequence[Event]) -> None:
        # Through _write (the lock is re-entrant), so a subclass's _write still runs.
        with self._lock:
            self._write(record, previous)
            self._events.setdefault(record.workflow_execution_id, []).extend(events)

    def _history(self, workflow_execution_id: str) -> list[Event]:
        with self._lock:
            return list(self._events.get(workflow_execution_id, ()))

    def _prune(self, before: float, statuses: frozenset[WorkflowStatus], batch: int) -> int:
        removed = 0
        while True:
            with self._lock:
                doomed = [key for key, r in self._records.items()
                          if r.status in statuses and r.updated_at < before][:batch]
                for key in doomed:
                    del self._records[key]
                    self._events.pop(key, None)
                gone = set(doomed)
                for name in [k for k, owner in self._keys.items() if owner in gone]:
                    del self._keys[name]
            removed += len(doomed)
            if len(doomed) < batch:
                return removed

    def _create_keyed(self, record: WorkflowRecord, key: str) -> str | None:
        with self._lock:
            owner = self._keys.get(key)
            if owner is not None:
                return owner
            wf_id = record.workflow_execution_id
            if wf_id in self._records:
                raise ConflictError(f"{wf_id}: a record with this key already exists")
            if self._payloads is not None:
                record = self._payloads.pack_record(record, None)
            self._records[wf_id] = record
            self._keys[key] = wf_id
            return None

    def _key_owner(self, key: str) -> str | None:
        return self._keys.get(key)

    def schedules(self) -> ScheduleStore:
        return self._schedules

    def workers(self) -> WorkerRegistry:
        return self._workers

    def cache(self) -> Cache:
        return self._cache

    def payloads(self) -> Offloader | None:
        return self._payloads

    def _list(self, status: WorkflowStatus | None, limit: int) -> list[ExecutionSummary]:
        records = sorted(self._records.values(), key=lambda r: r.created_at, reverse=True)
        return [summary_of(r) for r in records if status is None or r.status is status][:limit]

    def __len__(self) -> int:
        return len(self._records)
