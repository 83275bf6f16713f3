"""``SqlWorkerRegistry``: live workers in ``runfox_workers``, one row per worker.

``register`` deletes and inserts the row in one transaction; ``beat`` is one
``UPDATE`` (no row updated: the row is gone, the worker registers again); ``list``
one ``SELECT``. It shares the record store's ``Database`` (engine and pool).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection

from ...errors import CorruptRecord
from ..workers import WorkerInfo, WorkerRegistry
from .database import Database
from .schema import workers

__all__ = ["SqlWorkerRegistry"]

logger = logging.getLogger("runfox.backend.sql")

w = workers
_DELETE = delete(w).where(w.c.worker_id == bindparam("wid"))
_BEAT = (update(w).where(w.c.worker_id == bindparam("wid"))
         .values(heartbeat_at=bindparam("now"), data=bindparam("payload")))
_SELECT_ONE = select(w.c.data).where(w.c.worker_id == bindparam("wid"))


def _dumps(info: WorkerInfo) -> str:
    return json.dumps(info.to_dict(), separators=(",", ":"), allow_nan=False)


class SqlWorkerRegistry(WorkerRegistry):
    """Worker rows in the ``runfox_workers`` table of ``database``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def register(self, info: WorkerInfo) -> None:
        def work(conn: Connection) -> None:
            conn.execute(_DELETE, {"wid": info.id})
            conn.execute(w.insert(), {"worker_id": info.id, "heartbeat_at": info.heartbeat_at,
                                      "data": _dumps(info)})

        self._db.run(work, what=f"register worker {info.id!r}")

    def beat(self, worker_id: str, now: float, jobs: Mapping[str, float]) -> bool:
        def work(conn: Connection) -> bool:
            row = conn.execute(_SELECT_ONE, {"wid": worker_id}).first()
            if row is None:
                return False
            info = _decode(worker_id, row.data).beaten(now, jobs)
            return bool(conn.execute(_BEAT, {"wid": worker_id, "now": now,
                                             "payload": _dumps(info)}).rowcount)

        return bool(self._db.run(work, what=f"heartbeat worker {worker_id!r}"))

    def remove(self, worker_id: str) -> None:
        self._db.run(lambda conn: conn.execute(_DELETE, {"wid": worker_id}),
                     standalone=True, what=f"remove worker {worker_id!r}")

    def list(self) -> list[WorkerInfo]:
        rows = self._db.run(lambda conn: conn.execute(select(w.c.worker_id, w.c.data)).all(),
                            write=False, standalone=True, what="list workers")
        found = []
        for row in rows:
            try:
                found.append(_decode(row.worker_id, row.data))
            except CorruptRecord as exc:
                logger.warning("worker row %r skipped: %s", row.worker_id, exc)
        return found

    def prune(self, before: float) -> int:
        query = delete(w).where(w.c.heartbeat_at < before)
        return int(self._db.run(lambda conn: conn.execute(query).rowcount,
                                standalone=True, what="prune worker rows"))


def _decode(worker_id: str, text: Any) -> WorkerInfo:
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CorruptRecord(f"worker {worker_id}", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise CorruptRecord(f"worker {worker_id}", "the row's data is not a JSON object")
    return WorkerInfo.from_dict({**data, "id": worker_id})
