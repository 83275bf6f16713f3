"""``SqlPayloads``: offloaded blobs in ``runfox_payloads``, one row per key.

Blobs are ASCII JSON (``runfox.payloads.encode``), kept in a text column. A put
is one insert-if-absent (``ON CONFLICT DO NOTHING`` / a no-op ``ON
DUPLICATE KEY UPDATE``): blobs are named by their content, so a key that exists
already holds the same bytes and two writers never disagree. It shares the
record store's ``Database`` (engine and pool); the blob is written in its own
short transaction before the record that refers to it, so a reader never finds
a reference whose blob is not yet committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection

from ..payload_store import PayloadStore
from .database import Database
from .schema import payloads

__all__ = ["SqlPayloads"]

_BATCH = 500
_SELECT = select(payloads.c.data).where(payloads.c.payload_key == bindparam("k"))


class SqlPayloads(PayloadStore):
    """Blobs in the ``runfox_payloads`` table of ``database``."""

    where = "runfox_payloads"

    def __init__(self, database: Database) -> None:
        self._db = database
        self._insert = database.dialect.insert_if_absent(payloads)

    def __repr__(self) -> str:
        return f"SqlPayloads({self._db.display_url})"

    def _put(self, key: str, blob: bytes) -> None:
        row = {"payload_key": key, "size": len(blob), "data": blob.decode("utf-8"),
               "created_at": time.time()}
        self._db.run(lambda conn: conn.execute(self._insert, row), what=f"store payload {key}")

    def _once_stored(self, callback: Callable[[], None]) -> None:
        # Inside a joint unit the insert commits (or rolls back) with the record.
        self._db.after_commit(callback)

    def _get(self, key: str) -> bytes | None:
        found: Any = self._db.run(lambda conn: conn.execute(_SELECT, {"k": key}).scalar(),
                                  write=False, standalone=True, what=f"read payload {key}")
        if found is None:
            return None
        return found.encode("utf-8") if isinstance(found, str) else bytes(found)

    def _delete(self, keys: list[str]) -> int:
        def work(conn: Connection) -> int:
            gone = 0
            for start in range(0, len(keys), _BATCH):
                statement = delete(payloads).where(
                    payloads.c.payload_key.in_(keys[start:start + _BATCH]))
                gone += conn.execute(statement).rowcount
            return gone

        return int(self._db.run(work, what="delete payloads"))
