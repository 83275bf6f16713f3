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
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from ..errors import BackendError, ConflictError, WorkflowNotFound
from ..records import WorkflowRecord
from ..status import WorkflowStatus
from .cache_store import Cache, InMemoryCache
from .schedule_store import InMemoryScheduleStore, ScheduleStore

__all__ = ["MAX_KEY_LENGTH", "ExecutionSummary", "InMemoryStore", "Store", "check_key",
           "key_matches"]


@dataclass(frozen=True, slots=True)
class ExecutionSummary:
    """One line of ``runfox list``."""

    workflow_execution_id: str
    name: str
    status: WorkflowStatus
    created_at: float
    updated_at: float


class Store(ABC):
    """Durable persistence of ``WorkflowRecord`` with conditional writes."""

    #: True when ``_load`` builds a new record on every call and ``_write`` keeps
    #: no reference to its argument, so ``load``/``write`` need not copy.
    isolates: ClassVar[bool] = False

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

    def write_shared(self, record: WorkflowRecord, previous: WorkflowRecord | None = None
                     ) -> None:
        """``write`` without the copy, for a record nobody will change afterwards.

        The Backend's transitions write this way: ``record`` was built by the pure
        graph from ``previous`` (a ``load_shared`` record) and is handed over. With
        ``previous`` a store can write only the steps that changed
        (``record.steps.changed_since(previous.steps)``).
        """
        self._check_versions(record, previous)
        self._write(record, previous)

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
    """Records in a dict, guarded by a lock. Thread-safe; gone when the process exits."""

    def __init__(self) -> None:
        self._records: dict[str, WorkflowRecord] = {}
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()
        self._schedules = InMemoryScheduleStore()
        self._cache = InMemoryCache()

    def _load(self, workflow_execution_id: str) -> WorkflowRecord | None:
        return self._records.get(workflow_execution_id)

    def _write(self, record: WorkflowRecord, previous: WorkflowRecord | None) -> None:
        key = record.workflow_execution_id
        with self._lock:
            stored = self._records.get(key)
            found = 0 if stored is None else stored.version
            if found != record.version - 1:
                raise ConflictError(f"{key}: stored version is {found}, "
                                    f"this write expected {record.version - 1}")
            self._records[key] = record

    def _create_keyed(self, record: WorkflowRecord, key: str) -> str | None:
        with self._lock:
            owner = self._keys.get(key)
            if owner is not None:
                return owner
            wf_id = record.workflow_execution_id
            if wf_id in self._records:
                raise ConflictError(f"{wf_id}: a record with this key already exists")
            self._records[wf_id] = record
            self._keys[key] = wf_id
            return None

    def _key_owner(self, key: str) -> str | None:
        return self._keys.get(key)

    def schedules(self) -> ScheduleStore:
        return self._schedules

    def cache(self) -> Cache:
        return self._cache

    def _list(self, status: WorkflowStatus | None, limit: int) -> list[ExecutionSummary]:
        records = sorted(self._records.values(), key=lambda r: r.created_at, reverse=True)
        return [summary_of(r) for r in records if status is None or r.status is status][:limit]

    def __len__(self) -> int:
        return len(self._records)
