"""What differs between SQLite, PostgreSQL and MySQL/MariaDB, and nothing else.

The store and the runner are written once on SQLAlchemy Core. The few places
where the databases disagree live here, one small class per database:

- how a unit of work runs (``options``): PostgreSQL runs standalone statements
  in autocommit (one round trip instead of BEGIN, statement, COMMIT); SQLite
  writers start with ``BEGIN IMMEDIATE`` (the write lock up front, so two
  writers queue instead of failing to upgrade a read lock) and readers run in
  autocommit;
- waiting for locks (``retry_delay``): SQLite's own busy handler sleeps 1, 2,
  5, 10 ... ms between tries, which stalls every process once a few of them
  contend; runfox retries itself with sub-millisecond jittered sleeps instead;
- the database clock as epoch seconds (leases are measured on the server's
  clock, so workers on hosts with skewed clocks still agree);
- insert-if-absent (``ON CONFLICT DO NOTHING`` or ``ON DUPLICATE KEY UPDATE``);
- the lock that serialises table creation between processes;
- which driver errors are worth retrying (deadlocks, serialisation failures,
  a busy SQLite file, a dropped connection).

Reads never need a snapshot: the store checks versions instead (see
``store``). Job claims use ``SELECT ... FOR UPDATE SKIP LOCKED`` on every
database: SQLite's compiler leaves the clause out, and its single writer lock
(taken by ``BEGIN IMMEDIATE``) gives the same guarantee.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
import zlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Double, Table, cast, event, extract, func, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.expression import ColumnElement, Insert

__all__ = ["Dialect", "dialect_for"]

# Driver error codes after which the whole transaction may simply run again.
_PG_RETRY = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_MYSQL_RETRY = frozenset({1205, 1213})  # lock wait timeout, deadlock
_SCHEMA_LOCK = "runfox_schema"


class Dialect:
    """Default behaviour (PostgreSQL-like); subclasses override what differs."""

    name = "generic"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def prepare(self) -> None:
        """Install whatever the engine needs before its first transaction."""

    def detach(self) -> None:
        """Undo ``prepare`` (the engine may outlive runfox's use of it)."""

    def options(self, write: bool, standalone: bool) -> dict[str, Any]:
        """Execution options for a unit of work.

        ``write``: it changes rows. ``standalone``: each statement stands on its
        own and needs no transaction around it.
        """
        return {}

    def retry_delay(self, attempt: int, waited: float) -> float | None:
        """Seconds to sleep before running a failed transient unit again; ``None``
        to give up. ``waited`` is the time spent on this unit so far."""
        return random.uniform(0.0, 0.02 * 2 ** attempt) if attempt < 5 else None

    def now(self) -> ColumnElement[Any]:
        """The database server's clock, as epoch seconds."""
        return cast(extract("epoch", func.clock_timestamp()), Double)

    def insert_if_absent(self, table: Table) -> Insert:
        """An INSERT that silently keeps an existing row with the same unique key."""
        from sqlalchemy.dialects.postgresql import insert

        return insert(table).on_conflict_do_nothing()

    @contextlib.contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        """Held while tables are checked and created, so processes do not race."""
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                     {"k": zlib.crc32(_SCHEMA_LOCK.encode())})
        yield

    def transient(self, exc: DBAPIError) -> bool:
        """True when running the transaction again may succeed."""
        if exc.connection_invalidated:
            return True
        return getattr(exc.orig, "sqlstate", None) in _PG_RETRY


class PostgresDialect(Dialect):
    name = "postgresql"

    def options(self, write: bool, standalone: bool) -> dict[str, Any]:
        # psycopg switches autocommit without a round trip; PyMySQL would need two.
        return {"isolation_level": "AUTOCOMMIT"} if standalone else {}


class MySQLDialect(Dialect):
    """MySQL and MariaDB (InnoDB)."""

    name = "mysql"

    def now(self) -> ColumnElement[Any]:
        return cast(func.unix_timestamp(func.now(6)), Double)

    def insert_if_absent(self, table: Table) -> Insert:
        from sqlalchemy.dialects.mysql import insert

        # A no-op update rather than INSERT IGNORE, which would also hide
        # truncation and other data errors.
        first_pk = next(iter(table.primary_key.columns))
        return insert(table).on_duplicate_key_update({first_pk.name: first_pk})

    @contextlib.contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        # MySQL DDL is not transactional: a named session lock serialises creators.
        got = conn.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": _SCHEMA_LOCK}).scalar()
        if got != 1:
            raise TimeoutError("timed out waiting for the runfox schema lock")
        try:
            yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": _SCHEMA_LOCK})

    def transient(self, exc: DBAPIError) -> bool:
        if exc.connection_invalidated:
            return True
        args: tuple[Any, ...] = getattr(exc.orig, "args", ())
        return bool(args) and args[0] in _MYSQL_RETRY


class SqliteDialect(Dialect):
    """SQLite in WAL mode, with the transactions of runfox begun by runfox.

    A "begin" listener (the recipe SQLAlchemy documents for ``sqlite3``) gives
    runfox's writes ``BEGIN IMMEDIATE`` and lets its reads run in autocommit; it
    leaves every other transaction on the engine alone. On first use a
    connection is switched to WAL. On an engine runfox created, the connection
    also gets ``PRAGMA synchronous`` and SQLite's busy handler is turned off (see
    the module docstring): ``busy_timeout`` then bounds runfox's own retries. A
    caller's engine keeps its own busy handler and ``synchronous`` unless those
    options are given.
    """

    name = "sqlite"

    def __init__(self, engine: Engine, busy_timeout: float | None = None,
                 synchronous: str | None = None, owned: bool = False) -> None:
        super().__init__(engine)
        self.busy_timeout = 30.0 if busy_timeout is None else busy_timeout
        self._pragmas = []
        if owned or synchronous is not None:
            self._pragmas.append(f"PRAGMA synchronous = {synchronous or 'NORMAL'}")
        if owned or busy_timeout is not None:
            self._pragmas.append("PRAGMA busy_timeout = 0")

    def prepare(self) -> None:
        event.listen(self.engine, "begin", self._begin)

    def detach(self) -> None:
        event.remove(self.engine, "begin", self._begin)

    def _begin(self, conn: Connection) -> None:
        options = conn.get_execution_options()
        write = options.get("runfox_write")
        if not write and not options.get("runfox_read"):
            return  # a transaction of the engine's other users
        pooled = conn.connection
        raw: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
        if not pooled.info.get("runfox_ready"):
            raw.execute("PRAGMA journal_mode = WAL")  # under the connection's busy handler
            for pragma in self._pragmas:
                raw.execute(pragma)
            pooled.info["runfox_ready"] = True
        if write:
            self._begin_immediate(raw)

    def _begin_immediate(self, raw: sqlite3.Connection) -> None:
        # Waiting for the write lock here, rather than by running the whole unit
        # again, keeps a failed try down to one cheap statement. sqlite3 opens no
        # transaction of its own once it sees this one.
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                delay = (self.retry_delay(attempt, time.monotonic() - started)
                         if "locked" in str(exc) else None)
                if delay is None:
                    # Wrapped as SQLAlchemy would, for Database.run to translate.
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            time.sleep(delay)
            attempt += 1

    def options(self, write: bool, standalone: bool) -> dict[str, Any]:
        return {"runfox_write": True} if write else {"runfox_read": True}

    def retry_delay(self, attempt: int, waited: float) -> float | None:
        if waited >= self.busy_timeout:
            return None
        return min(0.004, 0.0001 * 1.5 ** attempt) * random.uniform(0.5, 1.5)

    def now(self) -> ColumnElement[Any]:
        return (func.julianday("now") - 2440587.5) * 86400.0

    def insert_if_absent(self, table: Table) -> Insert:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table).on_conflict_do_nothing()

    @contextlib.contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        yield  # the write transaction (BEGIN IMMEDIATE) already excludes other writers

    def transient(self, exc: DBAPIError) -> bool:
        return exc.connection_invalidated or "locked" in str(exc.orig)


def dialect_for(engine: Engine, owned: bool = False, **sqlite_options: Any) -> Dialect:
    """The ``Dialect`` for an engine; ``ValueError`` for a database runfox does not support.

    ``owned``: runfox created the engine and may tune its connections.
    """
    name = engine.dialect.name
    if name == "sqlite":
        return SqliteDialect(engine, owned=owned, **sqlite_options)
    if name == "postgresql":
        return PostgresDialect(engine)
    if name in ("mysql", "mariadb"):
        return MySQLDialect(engine)
    raise ValueError(f"runfox does not support the {name!r} database "
                     "(SQLite, PostgreSQL and MySQL/MariaDB are supported)")
