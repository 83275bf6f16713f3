"""``SqlScheduleStore``: schedules in ``runfox_schedules``, written on ``version``.

One row per schedule (see ``schema``): ``due_at`` is indexed, so ``_due`` is one
``SELECT ... WHERE due_at <= :now ORDER BY due_at LIMIT n``; a replacement is
``UPDATE ... WHERE name = :n AND version = :v - 1`` (no row updated: another
writer won). It shares the record store's ``Database`` (engine and pool).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection

from ...errors import ConflictError, CorruptRecord
from ...schedule import Schedule
from ..schedule_store import ScheduleStore, exists
from .database import Database, DuplicateRow
from .schema import schedules

__all__ = ["SqlScheduleStore"]

_COLUMNS = (schedules.c.name, schedules.c.version, schedules.c.spec, schedules.c.data)
_SELECT_ONE = select(*_COLUMNS).where(schedules.c.name == bindparam("n"))
_UPDATE = (update(schedules)
           .where(schedules.c.name == bindparam("n"),
                  schedules.c.version == bindparam("expected"))
           .values(version=bindparam("v"), due_at=bindparam("due"),
                   spec=bindparam("spec_json"), data=bindparam("data_json")))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _row_params(schedule: Schedule) -> dict[str, Any]:
    data = schedule.to_dict()
    spec = data.pop("spec")
    return {"v": schedule.version, "due": schedule.due_at, "spec_json": _dumps(spec),
            "data_json": _dumps(data)}


def _decode(row: Any) -> Schedule:
    try:
        data = json.loads(row.data)
        data["spec"] = json.loads(row.spec)
        data["name"] = row.name
        data["version"] = row.version
        return Schedule.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise CorruptRecord(f"schedule {row.name}", f"{type(exc).__name__}: {exc}") from exc


class SqlScheduleStore(ScheduleStore):
    """Schedules in the ``runfox_schedules`` table of ``database``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def _insert(self, schedule: Schedule) -> None:
        params = _row_params(schedule)
        row = {"name": schedule.name, "version": params["v"], "due_at": params["due"],
               "spec": params["spec_json"], "data": params["data_json"]}
        try:
            self._db.run(lambda conn: conn.execute(schedules.insert(), row),
                         what=f"add schedule {schedule.name!r}", duplicate_ok=True)
        except DuplicateRow as exc:
            raise exists(schedule.name) from exc

    def _get(self, name: str) -> Schedule | None:
        row = self._db.run(lambda conn: conn.execute(_SELECT_ONE, {"n": name}).first(),
                           write=False, standalone=True, what=f"read schedule {name!r}")
        return None if row is None else _decode(row)

    def _list(self) -> list[Schedule]:
        rows = self._db.run(lambda conn: conn.execute(select(*_COLUMNS)).all(),
                            write=False, standalone=True, what="list schedules")
        return [_decode(row) for row in rows]

    def _due(self, now: float, limit: int) -> list[Schedule]:
        query = (select(*_COLUMNS).where(schedules.c.due_at <= now)
                 .order_by(schedules.c.due_at, schedules.c.name).limit(limit))
        rows = self._db.run(lambda conn: conn.execute(query).all(),
                            write=False, standalone=True, what="find due schedules")
        return [_decode(row) for row in rows]

    def _replace(self, schedule: Schedule) -> None:
        params = {"n": schedule.name, "expected": schedule.version - 1, **_row_params(schedule)}

        def work(conn: Connection) -> None:
            if conn.execute(_UPDATE, params).rowcount != 1:
                raise ConflictError(f"schedule {schedule.name!r}: the stored version is not "
                                    f"{schedule.version - 1}; another writer won")

        self._db.run(work, what=f"write schedule {schedule.name!r}")

    def _delete(self, name: str) -> bool:
        query = delete(schedules).where(schedules.c.name == name)
        return bool(self._db.run(lambda conn: conn.execute(query).rowcount,
                                 what=f"remove schedule {name!r}"))
