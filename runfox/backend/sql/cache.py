"""``SqlCache``: the step cache in ``runfox_cache``, one row per key.

``get_many`` is one ``SELECT ... WHERE cache_key IN (...)`` per 500 keys. ``put``
is latest-wins in one unit of work: an ``UPDATE`` of the key's row, and when it
touched none an insert-if-absent (``ON CONFLICT DO NOTHING`` / a no-op ``ON
DUPLICATE KEY UPDATE``), so two writers of one key leave one whole row, never
two and never an error. A row that does not decode is a miss, logged with its
key. It shares the record store's ``Database`` (engine and pool).
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import Connection

from ...cache import CacheEntry
from ..cache_store import Cache, decode_entry
from .database import Database
from .schema import cache

__all__ = ["SqlCache"]

_BATCH = 500
_COLUMNS = (cache.c.cache_key, cache.c.fn, cache.c.version, cache.c.stored_at, cache.c.output)
_SELECT_MANY = select(*_COLUMNS).where(cache.c.cache_key.in_(bindparam("keys", expanding=True)))
_UPDATE = (update(cache).where(cache.c.cache_key == bindparam("k"))
           .values({"fn": bindparam("f"), "version": bindparam("ver"),
                    "stored_at": bindparam("at"), "output": bindparam("out")}))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _decode(row: Any) -> CacheEntry | None:
    return decode_entry(row.cache_key, row.fn, row.version, row.stored_at, row.output)


class SqlCache(Cache):
    """Cache entries in the ``runfox_cache`` table of ``database``."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._insert = database.dialect.insert_if_absent(cache)

    def __repr__(self) -> str:
        return f"SqlCache({self._db.display_url})"

    def _get_many(self, keys: builtins.list[str]) -> dict[str, CacheEntry]:
        found: dict[str, CacheEntry] = {}
        for start in range(0, len(keys), _BATCH):
            batch = keys[start:start + _BATCH]
            rows = self._db.run(lambda conn, b=batch: conn.execute(_SELECT_MANY,  # type: ignore[misc]
                                                                   {"keys": b}).all(),
                                write=False, standalone=True, what="read cache entries")
            for row in rows:
                entry = _decode(row)
                if entry is not None:
                    found[entry.key] = entry
        return found

    def _put(self, entry: CacheEntry) -> None:
        params = {"k": entry.key, "f": entry.fn, "ver": _dumps(entry.version),
                  "at": entry.stored_at, "out": _dumps(entry.output)}
        row = {"cache_key": entry.key, "fn": entry.fn, "version": params["ver"],
               "stored_at": entry.stored_at, "output": params["out"]}

        def work(conn: Connection) -> None:
            if conn.execute(_UPDATE, params).rowcount == 0:
                conn.execute(self._insert, row)

        self._db.run(work, what=f"store cache entry {entry.key}")

    def _list(self, fn: str | None) -> builtins.list[CacheEntry]:
        query = select(*_COLUMNS)
        if fn is not None:
            query = query.where(cache.c.fn == fn)
        rows = self._db.run(lambda conn: conn.execute(query).all(),
                            write=False, standalone=True, what="list cache entries")
        return [e for e in map(_decode, rows) if e is not None]

    def _delete(self, keys: builtins.list[str]) -> int:
        def work(conn: Connection) -> int:
            gone = 0
            for start in range(0, len(keys), _BATCH):
                statement = delete(cache).where(cache.c.cache_key.in_(keys[start:start + _BATCH]))
                gone += conn.execute(statement).rowcount
            return gone

        return int(self._db.run(work, what="delete cache entries"))

    def _clear(self, fn: str | None) -> int:
        statement = delete(cache)
        if fn is not None:
            statement = statement.where(cache.c.fn == fn)
        return int(self._db.run(lambda conn: conn.execute(statement).rowcount,
                                what="clear the cache"))

    def __len__(self) -> int:
        return int(self._db.run(
            lambda conn: conn.execute(select(func.count()).select_from(cache)).scalar_one(),
            write=False, standalone=True, what="count cache entries"))
