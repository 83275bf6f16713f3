"""Live workers: who runs jobs, since when, and what they hold right now.

Each ``runfox.worker.Worker`` registers one row when its loop starts, rewrites
it from its heartbeat thread every ``interval`` seconds (the time of the beat
and the jobs it holds, each with the time it claimed it), and removes it when it
stops cleanly. A worker killed with SIGKILL leaves its row behind; readers call
it *dead* once its last heartbeat is older than ``DEAD_AFTER`` intervals
(``WorkerInfo.dead``). Times are the worker's own clock (epoch seconds), so a
reader's clock skew against a worker shifts when it is seen dead by the skew.

``WorkerRegistry`` is the contract every backend keeps
(``runfox.testing.WorkerRegistryContract`` checks it); ``Store.workers()``
returns the one in the store's database:

- ``register(info)`` stores or replaces the row of ``info.id``;
- ``beat(worker_id, now, jobs)`` rewrites its heartbeat time and held jobs,
  ``False`` when the row is gone (the worker registers again);
- ``remove(worker_id)``; ``list()`` (any order); ``prune(before)`` removes
  rows whose last heartbeat is older than ``before`` and returns how many.

Rows are small (a few hundred bytes plus one entry per held job), written once
per interval per worker: the cost does not depend on how many jobs run.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import CorruptRecord

__all__ = ["DEAD_AFTER", "InMemoryWorkerRegistry", "WorkerInfo", "WorkerRegistry"]

#: A worker is dead when its last heartbeat is older than this many intervals.
DEAD_AFTER = 2.0


@dataclass(frozen=True)
class WorkerInfo:
    """One worker's row: identity, configuration, last heartbeat and held jobs.

    ``jobs`` maps each held job's key (``<execution>#<step>#<run>``) to when the
    worker claimed it. ``interval`` is the seconds between heartbeats of the row;
    ``lease`` the lease the worker claims jobs with.
    """

    id: str
    host: str
    pid: int
    executor: str | None
    concurrency: int
    started_at: float
    heartbeat_at: float
    interval: float
    lease: float
    jobs: Mapping[str, float] = field(default_factory=dict)

    def silent_for(self, now: float) -> float:
        """Seconds since the last heartbeat (never negative)."""
        return max(0.0, now - self.heartbeat_at)

    def dead(self, now: float) -> bool:
        """Whether the last heartbeat is older than ``DEAD_AFTER`` intervals."""
        return now - self.heartbeat_at > DEAD_AFTER * self.interval

    def beaten(self, now: float, jobs: Mapping[str, float]) -> WorkerInfo:
        return replace(self, heartbeat_at=now, jobs=dict(jobs))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "pid": self.pid, "executor": self.executor,
                "concurrency": self.concurrency, "started_at": self.started_at,
                "heartbeat_at": self.heartbeat_at, "interval": self.interval,
                "lease": self.lease, "jobs": dict(self.jobs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerInfo:
        """The row ``data`` holds. ``CorruptRecord`` naming the worker if it does not decode."""
        try:
            jobs = data.get("jobs") or {}
            if not isinstance(jobs, Mapping):
                raise TypeError("jobs is not an object")
            executor = data.get("executor")
            return cls(id=str(data["id"]), host=str(data["host"]), pid=int(data["pid"]),
                       executor=None if executor is None else str(executor),
                       concurrency=int(data["concurrency"]),
                       started_at=float(data["started_at"]),
                       heartbeat_at=float(data["heartbeat_at"]),
                       interval=float(data["interval"]), lease=float(data["lease"]),
                       jobs={str(k): float(v) for k, v in jobs.items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            name = data.get("id", "?") if isinstance(data, Mapping) else "?"
            raise CorruptRecord(f"worker {name}", f"{type(exc).__name__}: {exc}") from exc


class WorkerRegistry(ABC):
    """Where a backend keeps its live workers; see the module docstring."""

    @abstractmethod
    def register(self, info: WorkerInfo) -> None:
        """Store ``info`` (replacing a row with the same id)."""

    @abstractmethod
    def beat(self, worker_id: str, now: float, jobs: Mapping[str, float]) -> bool:
        """Record a heartbeat at ``now`` holding ``jobs``; ``False`` if the row is gone."""

    @abstractmethod
    def remove(self, worker_id: str) -> None:
        """Delete the row (nothing if there is none)."""

    @abstractmethod
    def list(self) -> list[WorkerInfo]:
        """Every row, live or dead."""

    @abstractmethod
    def prune(self, before: float) -> int:
        """Delete rows whose last heartbeat is older than ``before``; how many went."""

    def holders(self) -> dict[str, WorkerInfo]:
        """Job key -> the worker holding it (the most recent heartbeat wins)."""
        found: dict[str, WorkerInfo] = {}
        for info in sorted(self.list(), key=lambda w: w.heartbeat_at):
            for key in info.jobs:
                found[key] = info
        return found


class InMemoryWorkerRegistry(WorkerRegistry):
    """Rows in a dict, for one process (``InMemoryStore.workers()``). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, WorkerInfo] = {}

    def register(self, info: WorkerInfo) -> None:
        with self._lock:
            self._rows[info.id] = replace(info, jobs=dict(info.jobs))

    def beat(self, worker_id: str, now: float, jobs: Mapping[str, float]) -> bool:
        with self._lock:
            info = self._rows.get(worker_id)
            if info is None:
                return False
            self._rows[worker_id] = info.beaten(now, jobs)
            return True

    def remove(self, worker_id: str) -> None:
        with self._lock:
            self._rows.pop(worker_id, None)

    def list(self) -> list[WorkerInfo]:
        with self._lock:
            return list(self._rows.values())

    def prune(self, before: float) -> int:
        with self._lock:
            old = [k for k, w in self._rows.items() if w.heartbeat_at < before]
            for key in old:
                del self._rows[key]
            return len(old)
