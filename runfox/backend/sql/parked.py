"""Connections kept between units of work, instead of a pool round trip per unit.

Checking a SQLAlchemy ``Connection`` out of the pool and back in costs more CPU
than the transaction it carries on a fast database (measured on SQLite: 46 us
for an empty write unit, 13 us on a connection kept out of the pool). A worker
runs two units per step back to back, so ``Database.transaction`` parks the
connection of a unit that committed and the next unit of the same kind takes it.

What keeps that safe:

- One parked connection per kind of unit (a kind is a set of execution
  options: at most two per database), taken by one thread at a time: a parked
  connection belongs to no thread.
- Only from a ``QueuePool`` of at least four connections (the default is five
  plus ten overflow), so parking never holds more than half the pool; and not
  with ``pool_pre_ping``, whose check at checkout the caller asked for. Other
  pools (``NullPool``, ``StaticPool``, ``SingletonThreadPool``) keep their own
  rules.
- Only briefly: a connection parked longer than ``PARK_SECONDS`` goes back to
  the pool when next asked for, and a fresh checkout takes its place, so the
  pool's recycling (``pool_recycle``, connections older than a disconnect)
  applies to anything that sat idle. An idle worker parks at most one or two.
  Nor past ``engine.dispose()``: the first unit after it closes every connection
  parked from the old pool (which would only close them once garbage collected)
  before it opens a new one, as if they had been in the pool.
- Never after a failure: a unit that raised closes its connection (back to the
  pool, or discarded if it was invalidated). An outage (``Database.run``)
  sends every parked connection back too: they likely died with the others.
- ``clear`` before the engine is disposed (``Database.release``); in a forked
  child the parent's parked connections are left alone, never used or closed
  (their sockets are the parent's), as ``engine.dispose(close=False)`` does.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Hashable
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

__all__ = ["PARK_SECONDS", "Parking"]

#: How long a parked connection may wait for the next unit before it goes back
#: to the pool (a busy worker comes back within milliseconds).
PARK_SECONDS = 1.0

# Every Parking alive, to forget their connections in a forked child, and what
# a child forgot: kept referenced so that garbage collection never closes them.
_ALL: weakref.WeakSet[Parking] = weakref.WeakSet()
_ALL_LOCK = threading.Lock()
_FORGOTTEN: list[Any] = []


class Parking:
    """At most one parked ``Connection`` per kind of unit, for one engine."""

    def __init__(self, engine: Engine) -> None:
        pool: Any = engine.pool
        self.enabled = (isinstance(pool, QueuePool) and pool.size() >= 4
                        and not getattr(pool, "_pre_ping", False))
        self._engine = engine
        # kind -> (connection, parked at, the engine's pool then)
        self._parked: dict[Hashable, tuple[Connection, float, Any]] = {}
        with _ALL_LOCK:
            _ALL.add(self)

    def take(self, kind: Hashable, engine: Engine) -> Connection:
        """The connection parked for ``kind`` if it is fresh, else one from ``engine``."""
        parked = self._parked.pop(kind, None)  # atomic: only one thread gets it
        if parked is not None:
            conn, since, pool = parked
            if pool is not self._engine.pool:
                # Disposed since: every connection of the old pool goes before a
                # new one opens (an SQLite file still open in this process would
                # lend the new connection its descriptor, writable or not).
                self._close(conn, pool)
                self.clear()
            elif time.monotonic() - since < PARK_SECONDS and not conn.invalidated:
                return conn
            else:
                self._close(conn, pool)
        return engine.connect()

    def _close(self, conn: Connection, pool: Any) -> None:
        """Give ``conn`` back to its pool; close it if ``engine.dispose()`` ran since
        it was parked (the old pool would keep it open until garbage collection)."""
        if pool is not self._engine.pool:
            conn.invalidate()
        conn.close()

    def park(self, kind: Hashable, conn: Connection) -> None:
        """Keep ``conn`` (its unit committed) for the next unit of ``kind``, or
        close it when parking is off or another is parked already."""
        if self.enabled and not conn.invalidated and not conn.in_transaction():
            entry = (conn, time.monotonic(), self._engine.pool)
            if self._parked.setdefault(kind, entry) is entry:
                return
        conn.close()

    def clear(self) -> None:
        """Send every parked connection back to the pool."""
        while self._parked:
            try:
                _, (conn, _, pool) = self._parked.popitem()
            except KeyError:  # another thread took the last one
                return
            self._close(conn, pool)

    def _forget(self) -> None:
        """In a forked child: drop the parent's connections without touching them."""
        _FORGOTTEN.extend(self._parked.values())
        self._parked.clear()


def _forget_after_fork() -> None:
    for parking in list(_ALL):
        parking._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
