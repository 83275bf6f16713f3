"""What differs between SQLite, PostgreSQL and MySQL/MariaDB, and nothing else.

The store and the runner are written once on SQLAlchemy Core. The few places
where the databases disagree live here, one small class per database:

- how a transaction starts: SQLite needs ``BEGIN IMMEDIATE`` for writers (so two
  writers queue on the busy timeout instead of failing to upgrade a read lock)
  and an explicit ``BEGIN`` for readers (so two SELECTs see one snapshot);
  PostgreSQL reads a record under ``REPEATABLE READ`` for the same reason;
- the database clock as epoch seconds (leases are measured on the server's
  clock, so workers on hosts with skewed clocks still agree);
- insert-if-absent (``ON CONFLICT DO NOTHING`` or ``ON DUPLICATE KEY UPDATE``);
- the lock that serialises table creation between processes;
- which driver errors are worth retrying (deadlocks, serialisation failures).

Job claims use ``SELECT ... FOR UPDATE SKIP LOCKED`` on every database: SQLite's
compiler leaves the clause out, and its single writer lock (taken by ``BEGIN
IMMEDIATE``) gives the same guarantee.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Double, Table, cast, event, extract, func, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
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

    def read_options(self) -> dict[str, Any]:
        """Execution options for a read that must see one consistent snapshot."""
        return {}

    def write_options(self) -> dict[str, Any]:
        """Execution options for a write transaction."""
        return {}

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

    def read_options(self) -> dict[str, Any]:
        # READ COMMITTED takes a new snapshot per statement; a record is read with
        # two (header, steps), which must agree.
        return {"isolation_level": "REPEATABLE READ"}


class MySQLDialect(Dialect):
    """MySQL and MariaDB (InnoDB). Reads rely on REPEATABLE READ, set on the engines
    runfox creates; a caller's own engine must not lower it."""

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
        args = getattr(exc.orig, "args", ())
        return bool(args) and args[0] in _MYSQL_RETRY


class SqliteDialect(Dialect):
    """SQLite in WAL mode, with transactions begun by runfox itself.

    The ``sqlite3`` module opens transactions lazily and never for SELECT, so a
    "begin" listener takes over (the recipe SQLAlchemy documents): readers get
    ``BEGIN`` (one snapshot), writers ``BEGIN IMMEDIATE`` (the write lock up
    front, waiting up to ``busy_timeout``).
    """

    name = "sqlite"

    def __init__(self, engine: Engine, busy_timeout: float = 30.0,
                 synchronous: str = "NORMAL") -> None:
        super().__init__(engine)
        self.busy_timeout_ms = int(busy_timeout * 1000)
        self.synchronous = synchronous

    def prepare(self) -> None:
        event.listen(self.engine, "begin", self._begin)

    def _begin(self, conn: Connection) -> None:
        pooled = conn.connection
        raw = pooled.driver_connection
        if not pooled.info.get("runfox_ready"):
            raw.isolation_level = None  # runfox issues BEGIN/COMMIT itself
            raw.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            raw.execute("PRAGMA journal_mode = WAL")
            raw.execute(f"PRAGMA synchronous = {self.synchronous}")
            pooled.info["runfox_ready"] = True
        raw.execute("BEGIN IMMEDIATE" if conn.get_execution_options().get("runfox_write")
                    else "BEGIN")

    def write_options(self) -> dict[str, Any]:
        return {"runfox_write": True}

    def now(self) -> ColumnElement[Any]:
        return (func.julianday("now") - 2440587.5) * 86400.0

    def insert_if_absent(self, table: Table) -> Insert:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table).on_conflict_do_nothing()

    @contextlib.contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        yield  # the write transaction (BEGIN IMMEDIATE) already excludes other writers

    def transient(self, exc: DBAPIError) -> bool:
        # "database is locked" after the busy timeout: worth one more try at most.
        return exc.connection_invalidated or "locked" in str(exc.orig)


def dialect_for(engine: Engine, **sqlite_options: Any) -> Dialect:
    """The ``Dialect`` for an engine; ``ValueError`` for a database runfox does not support."""
    name = engine.dialect.name
    if name == "sqlite":
        return SqliteDialect(engine, **sqlite_options)
    if name == "postgresql":
        return PostgresDialect(engine)
    if name in ("mysql", "mariadb"):
        return MySQLDialect(engine)
    raise ValueError(f"runfox does not support the {name!r} database "
                     "(SQLite, PostgreSQL and MySQL/MariaDB are supported)")
