"""ScheduleStore: where schedules live, written conditionally on their version.

A store implements five primitives; the checks are here:

- ``_insert(schedule)``: store a new schedule (version 1); ``ScheduleExists`` if
  the name is taken.
- ``_get(name)``: the schedule, or ``None``.
- ``_list()``: every schedule (any order).
- ``_due(now, limit)``: up to ``limit`` schedules whose ``due_at`` is at most
  ``now``, earliest first: one query (an indexed column in SQL).
- ``_replace(schedule)``: store ``schedule`` only if the stored version is
  ``schedule.version - 1``, else ``ConflictError``.
- ``_delete(name)``: remove it; whether it was there.

``Store.schedules()`` hands out the one in the same database as the records.
"""

from __future__ import annotations

import builtins
import copy
import threading
from abc import ABC, abstractmethod

from ..errors import ConflictError
from ..schedule import Schedule, ScheduleExists, check_name

__all__ = ["InMemoryScheduleStore", "ScheduleStore"]


class ScheduleStore(ABC):
    """Durable schedules with compare-and-set writes (see the module docstring)."""

    def add(self, schedule: Schedule) -> None:
        """Store a new schedule (``version`` 1).

        Raises:
            ScheduleExists: (field ``name``) a schedule has that name.
        """
        check_name(schedule.name)
        if schedule.version != 1:
            raise ValueError(f"a new schedule is version 1, got {schedule.version}")
        self._insert(schedule)

    def get(self, name: str) -> Schedule | None:
        """The schedule called ``name``, or ``None``."""
        return self._get(name)

    def list(self) -> builtins.list[Schedule]:
        """Every schedule, by name."""
        return sorted(self._list(), key=lambda s: s.name)

    def due(self, now: float, limit: int = 100) -> builtins.list[Schedule]:
        """Schedules a tick at ``now`` must look at (``Schedule.due_at <= now``)."""
        return self._due(now, limit)

    def replace(self, schedule: Schedule) -> None:
        """Write ``schedule`` if the stored one is version ``schedule.version - 1``.

        Raises:
            ConflictError: another writer won, or the schedule was removed.
        """
        if schedule.version < 2:
            raise ValueError(f"a replacement is version 2 or more, got {schedule.version}")
        self._replace(schedule)

    def remove(self, name: str) -> bool:
        """Delete the schedule; ``False`` if there was none."""
        return self._delete(name)

    def close(self) -> None:
        """Release connections (a store sharing the record store's does nothing)."""

    @abstractmethod
    def _insert(self, schedule: Schedule) -> None: ...

    @abstractmethod
    def _get(self, name: str) -> Schedule | None: ...

    @abstractmethod
    def _list(self) -> builtins.list[Schedule]: ...

    @abstractmethod
    def _due(self, now: float, limit: int) -> builtins.list[Schedule]: ...

    @abstractmethod
    def _replace(self, schedule: Schedule) -> None: ...

    @abstractmethod
    def _delete(self, name: str) -> bool: ...


def exists(name: str) -> ScheduleExists:
    return ScheduleExists("name", f"a schedule called {name!r} exists already")


class InMemoryScheduleStore(ScheduleStore):
    """Schedules in a dict under a lock; copies in and out, like ``InMemoryStore``."""

    def __init__(self) -> None:
        self._items: dict[str, Schedule] = {}
        self._lock = threading.Lock()

    def _insert(self, schedule: Schedule) -> None:
        with self._lock:
            if schedule.name in self._items:
                raise exists(schedule.name)
            self._items[schedule.name] = copy.deepcopy(schedule)

    def _get(self, name: str) -> Schedule | None:
        found = self._items.get(name)
        return copy.deepcopy(found) if found is not None else None

    def _list(self) -> builtins.list[Schedule]:
        with self._lock:
            return [copy.deepcopy(s) for s in self._items.values()]

    def _due(self, now: float, limit: int) -> builtins.list[Schedule]:
        with self._lock:
            due = [s for s in self._items.values() if s.due_at is not None and s.due_at <= now]
        due.sort(key=lambda s: (s.due_at, s.name))
        return [copy.deepcopy(s) for s in due[:limit]]

    def _replace(self, schedule: Schedule) -> None:
        with self._lock:
            stored = self._items.get(schedule.name)
            found = 0 if stored is None else stored.version
            if found != schedule.version - 1:
                raise ConflictError(f"schedule {schedule.name!r}: stored version is {found}, "
                                    f"this write expected {schedule.version - 1}")
            self._items[schedule.name] = copy.deepcopy(schedule)

    def _delete(self, name: str) -> bool:
        with self._lock:
            return self._items.pop(name, None) is not None
