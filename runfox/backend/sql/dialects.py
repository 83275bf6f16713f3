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
  a busy SQLite file, a dropped connection), which mean the database is out of
  reach for now (``Problem.OUTAGE``: refused or lost connections, a server
  shutting down, too many connections, a full disk, a read-only file), and
  which are a size limit (``Problem.TOO_LARGE``), named with the database's own
  name for it (``max_allowed_packet``, ``SQLITE_LIMIT_LENGTH`` ...).

Reads never need a snapshot: the store checks versions instead (see
``store``). Job claims (``claim_form``) are one statement where the database
allows: on PostgreSQL ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED
LIMIT n) ... RETURNING`` in autocommit, one round trip; on SQLite 3.35+
``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` inside ``BEGIN
IMMEDIATE`` (SQLite's compiler leaves ``SKIP LOCKED`` out, and its single
writer lock gives the same guarantee); MariaDB 10.11 has no ``UPDATE ...
RETURNING``, so there a claim is ``SELECT ... FOR UPDATE SKIP LOCKED`` and an
``UPDATE`` in one transaction (three round trips with the commit).
PostgreSQL also tells idle workers about new jobs: ``notify()`` is a ``NOTIFY``
sent in the dispatching unit, heard by ``runfox.backend.sql.listen``.
"""

from __future__ import annotations

import contextlib
import enum
import random
import sqlite3
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Double, Table, TextClause, cast, event, extract, func, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.expression import ColumnElement, Insert

__all__ = ["CLAIM_FROM", "CLAIM_IN", "CLAIM_SELECT", "JOBS_CHANNEL", "Diagnosis", "Dialect",
           "Problem", "dialect_for", "statement_size"]

#: The claim forms (``Dialect.claim_form``): ``UPDATE ... FROM (locked candidates)
#: RETURNING`` with the candidates' old lease and token; ``UPDATE ... WHERE id IN
#: (candidates) RETURNING``; ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE``.
CLAIM_FROM, CLAIM_IN, CLAIM_SELECT = "update-from", "update-in", "select-update"
#: The PostgreSQL channel a dispatch notifies and idle workers listen on.
JOBS_CHANNEL = "runfox_jobs"

# Driver error codes after which the whole transaction may simply run again.
_PG_RETRY = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_MYSQL_RETRY = frozenset({1205, 1213})  # lock wait timeout, deadlock
_SCHEMA_LOCK = "runfox_schema"

# PostgreSQL SQLSTATEs that mean "not now" (the reason is the key's meaning).
_PG_OUTAGE = {
    "57P01": "the server is shutting down (admin shutdown)",
    "57P02": "the server crashed (crash shutdown)",
    "57P03": "the server is starting up or shutting down",
    "57P05": "the connection was closed for being idle",
    "53300": "too many connections",
    "53100": "disk full",
    "53200": "the server is out of memory",
    "25006": "the database is read-only",
    "58030": "the server hit an I/O error",
}
# PostgreSQL SQLSTATEs that are a size limit.
_PG_TOO_LARGE = frozenset({"54000", "54001", "22001"})
# MySQL/MariaDB error numbers that mean "not now".
_MYSQL_OUTAGE = {
    2002: "cannot connect (no server at the socket)",
    2003: "connection refused",
    2005: "unknown host",
    2006: "the server has gone away",
    2013: "the connection was lost",
    2014: "the connection is out of sync",
    2055: "the connection was lost",
    1040: "too many connections",
    1053: "the server is shutting down",
    1927: "the connection was killed",
    4031: "the server closed an idle connection",
    1021: "disk full",
    1114: "a table is full (disk full?)",
    1290: "the server is read-only (--read-only)",
    1836: "the server is read-only",
    1792: "the transaction is read-only",
    1030: "the storage engine failed (disk full or read-only?)",
}
_MYSQL_PACKET = 1153  # ER_NET_PACKET_TOO_LARGE
_MYSQL_TOO_LARGE = frozenset({_MYSQL_PACKET, 1406, 1118, 1301})  # data too long, row size
# SQLite result codes (primary, from ``sqlite_errorname``) that mean "not now";
# SQLITE_BUSY and SQLITE_LOCKED are contention.
_SQLITE_OUTAGE = {
    "SQLITE_FULL": "disk full",
    "SQLITE_READONLY": "the database is read-only",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_IOERR": "disk I/O error",
    "SQLITE_PERM": "access denied",
    "SQLITE_NOLFS": "the file system cannot hold a file this large",
}


class Problem(enum.Enum):
    """What a driver error means for the unit of work that raised it."""

    #: Lost a race (deadlock, serialisation failure, a locked SQLite file):
    #: running the unit again soon should work.
    CONTENTION = "contention"
    #: The database is out of reach or cannot take writes now (refused or lost
    #: connection, restart, full disk, read-only): retry for longer.
    OUTAGE = "outage"
    #: A size limit: the same work fails the same way every time.
    TOO_LARGE = "too large"


@dataclass(frozen=True)
class Diagnosis:
    """A classified driver error: the ``problem``, the cause in a few words, and
    for ``TOO_LARGE`` the ``backend``'s name, its ``limit`` and the ``size`` sent."""

    problem: Problem
    cause: str
    backend: str = ""
    limit: str = ""
    size: int | None = None


def statement_size(statement: str | None, params: Any) -> int:
    """Roughly how many bytes a statement and its parameters take on the wire."""
    total = len((statement or "").encode("utf-8", "replace"))
    batches: Sequence[Any] = params if isinstance(params, list | tuple) else [params]
    for batch in batches:
        values = batch.values() if isinstance(batch, Mapping) else (
            batch if isinstance(batch, list | tuple) else [batch])
        for value in values:
            if isinstance(value, str):
                total += len(value.encode("utf-8", "replace"))
            elif isinstance(value, bytes | bytearray | memoryview):
                total += len(value)
    return total


def megabytes(size: int) -> str:
    """``size`` bytes for a person: ``17 MB``, ``1.5 MB``, ``195 kB``, ``900 bytes``."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} kB"
    mb = size / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 10 or mb == int(mb) else f"{mb:.1f} MB"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, newest first.

    A rollback that fails on a dead connection hides the error that killed it
    (MariaDB closes the connection after refusing an oversized packet), so the
    interesting error can sit in ``__context__``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _driver_errors(exc: BaseException) -> Iterator[tuple[DBAPIError | None, BaseException]]:
    """(SQLAlchemy wrapper or None, driver error) for every error in ``exc``'s chain."""
    for item in _chain(exc):
        if isinstance(item, DBAPIError):
            if item.orig is not None:
                yield item, item.orig
        else:
            yield None, item


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Dialect:
    """Default behaviour (PostgreSQL-like); subclasses override what differs."""

    name = "generic"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def prepare(self) -> None:
        """Install whatever the engine needs before its first transaction."""

    @contextlib.contextmanager
    def schema_session_lock(self) -> Iterator[None]:
        """Held around a whole schema unit, commit included, where ``schema_lock``
        (inside the unit's transaction) cannot be: MySQL's named locks."""
        yield

    def detach(self) -> None:
        """Undo ``prepare`` (the engine may outlive runfox's use of it)."""

    def begin_late(self, pooled: Any) -> None:
        """Open the transaction a unit of work put off until its first statement, if
        it did (``LATE_BEGIN`` in the pooled connection's ``info``; SQLite only)."""

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

    def claim_clock(self) -> ColumnElement[Any]:
        """The database clock for a claim's ``visible_at <= now``: constant within a
        statement, so an index can use it as a bound (``now`` may be volatile)."""
        return self.now()

    #: How a claim is written (see the module docstring and ``CLAIM_*``).
    claim_form = CLAIM_SELECT

    def notify(self) -> TextClause | None:
        """A statement telling listening workers that jobs were queued, or ``None``
        where the database has no such thing."""
        return None

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
        found = self.diagnose(exc)
        return found is not None and found.problem is not Problem.TOO_LARGE

    def outage_delay(self, attempt: int) -> float | None:
        """Like ``retry_delay``, for an outage: five jittered tries, about 0.6 s
        in all. A longer wait is the caller's (the worker loop's) business."""
        return random.uniform(0.0, 0.02 * 2 ** attempt) if attempt < 5 else None

    def diagnose(self, exc: DBAPIError) -> Diagnosis | None:
        """What ``exc`` means (see ``Problem``); ``None`` for any other error."""
        # A size limit anywhere in the chain explains the lost connection after it.
        found = [d for d in (self._diagnose_one(w, o) for w, o in _driver_errors(exc))
                 if d is not None]
        for diagnosis in found:
            if diagnosis.problem is Problem.TOO_LARGE:
                return diagnosis
        if found:
            return found[0]
        if exc.connection_invalidated:
            return Diagnosis(Problem.OUTAGE, "the connection was lost")
        return None

    def _diagnose_one(self, wrapper: DBAPIError | None, orig: BaseException
                      ) -> Diagnosis | None:
        """PostgreSQL (psycopg): by SQLSTATE; a connection error has none."""
        state = getattr(orig, "sqlstate", None)
        if state in _PG_RETRY:
            return Diagnosis(Problem.CONTENTION, "a deadlock or serialisation failure")
        if state in _PG_TOO_LARGE:
            size = statement_size(wrapper.statement, wrapper.params) if wrapper else None
            return Diagnosis(Problem.TOO_LARGE, _one_line(orig), "PostgreSQL",
                             _one_line(orig), size)
        if state in _PG_OUTAGE:
            return Diagnosis(Problem.OUTAGE, _PG_OUTAGE[state])
        if state is None and type(orig).__name__ in ("OperationalError", "InterfaceError"):
            text = str(orig).lower()
            if "refused" in text:
                return Diagnosis(Problem.OUTAGE, "connection refused")
            if "timeout" in text or "timed out" in text:
                return Diagnosis(Problem.OUTAGE, "connection timed out")
            if "closed" in text or "lost" in text or "terminat" in text:
                return Diagnosis(Problem.OUTAGE, "the connection was lost")
            if "resolve" in text or "name or service" in text:
                return Diagnosis(Problem.OUTAGE, "unknown host")
            if "connection" in text:
                return Diagnosis(Problem.OUTAGE, "cannot connect")
        return None


class PostgresDialect(Dialect):
    name = "postgresql"
    claim_form = CLAIM_FROM

    def claim_clock(self) -> ColumnElement[Any]:
        # clock_timestamp() is volatile: PostgreSQL would test it row by row
        # instead of bounding the index scan with it.
        return cast(extract("epoch", func.statement_timestamp()), Double)

    def notify(self) -> TextClause | None:
        return text(f"NOTIFY {JOBS_CHANNEL}")

    def options(self, write: bool, standalone: bool) -> dict[str, Any]:
        # psycopg switches autocommit without a round trip; PyMySQL would need two.
        return {"isolation_level": "AUTOCOMMIT"} if standalone else {}


class MySQLDialect(Dialect):
    """MySQL and MariaDB (InnoDB)."""

    name = "mysql"
    _max_packet: int | None = None

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
        # Taken by ``schema_session_lock`` around the whole unit instead: a lock
        # released inside the transaction would let the next creator read the
        # tables before this one's rows (the migration's version row) commit.
        yield

    @contextlib.contextmanager
    def schema_session_lock(self) -> Iterator[None]:
        # MySQL DDL is not transactional: a named lock, held on a connection of its
        # own until the schema unit has committed, serialises creators.
        with self.engine.connect() as conn:
            got = conn.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": _SCHEMA_LOCK}).scalar()
            if got != 1:
                raise TimeoutError("timed out waiting for the runfox schema lock")
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": _SCHEMA_LOCK})

    @property
    def server(self) -> str:
        """``MariaDB`` or ``MySQL``, as the server reported at connect."""
        return "MariaDB" if getattr(self.engine.dialect, "is_mariadb", False) else "MySQL"

    def max_packet(self) -> int | None:
        """The server's ``max_allowed_packet`` in bytes (asked when needed)."""
        if self._max_packet is None:
            try:
                with self.engine.connect() as conn:
                    self._max_packet = int(conn.execute(
                        text("SELECT @@max_allowed_packet")).scalar_one())
            except Exception:  # only used to word an error
                return None
        return self._max_packet

    def _packet_refused(self, size: int | None) -> Diagnosis:
        limit = self.max_packet()
        limit_text = (f"max_allowed_packet is {megabytes(limit)}" if limit
                      else "max_allowed_packet")
        return Diagnosis(Problem.TOO_LARGE, f"{self.server} refused a statement over "
                         "max_allowed_packet", self.server, limit_text, size)

    def _diagnose_one(self, wrapper: DBAPIError | None, orig: BaseException
                      ) -> Diagnosis | None:
        """MySQL/MariaDB (PyMySQL): by error number."""
        args: tuple[Any, ...] = getattr(orig, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        size = statement_size(wrapper.statement, wrapper.params) if wrapper else None
        if code in _MYSQL_RETRY:
            return Diagnosis(Problem.CONTENTION, "a deadlock or lock wait timeout")
        if code == _MYSQL_PACKET:
            return self._packet_refused(size)
        if code in _MYSQL_TOO_LARGE:
            return Diagnosis(Problem.TOO_LARGE, _one_line(orig), self.server,
                             _one_line(orig), size)
        if code in (2006, 2013, 2055) and size and size > 1024 * 1024:
            # The server may drop the connection before its 1153 reaches us.
            limit = self.max_packet()
            if limit is not None and size > limit:
                return self._packet_refused(size)
        if code in _MYSQL_OUTAGE:
            return Diagnosis(Problem.OUTAGE, _MYSQL_OUTAGE[code])
        if type(orig).__name__ == "InterfaceError":
            return Diagnosis(Problem.OUTAGE, "the connection is closed")
        return None


#: In a pooled connection's ``info``: a write unit has begun, but its
#: ``BEGIN IMMEDIATE`` waits for the unit's first statement (SQLite).
LATE_BEGIN = "runfox_late_begin"


class SqliteDialect(Dialect):
    """SQLite in WAL mode, with the transactions of runfox begun by runfox.

    A "begin" listener (the recipe SQLAlchemy documents for ``sqlite3``) gives
    runfox's writes ``BEGIN IMMEDIATE`` and lets its reads run in autocommit; it
    leaves every other transaction on the engine alone. The ``BEGIN IMMEDIATE``
    of a write goes just before its first statement (``LATE_BEGIN``): sent by
    ``HotStatement`` and by a ``before_execute`` listener (Core's ``execute``),
    or at once by ``begin_late`` (``schema_lock`` does so). SQLAlchemy's
    ``exec_driver_sql`` and reflection fire no ``before_execute``: inside a
    write unit they must come after a statement of those kinds, or after
    ``begin_late``, or they run outside its transaction. On first use a
    connection is switched to WAL. On an engine runfox created, the connection
    also gets ``PRAGMA synchronous`` and SQLite's busy handler is turned off (see
    the module docstring): ``busy_timeout`` then bounds runfox's own retries. A
    caller's engine keeps its own busy handler and ``synchronous`` unless those
    options are given.
    """

    name = "sqlite"
    # RETURNING arrived in SQLite 3.35.
    claim_form = CLAIM_IN if sqlite3.sqlite_version_info >= (3, 35) else CLAIM_SELECT

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
        event.listen(self.engine, "before_execute", self._before_execute)

    def detach(self) -> None:
        event.remove(self.engine, "begin", self._begin)
        event.remove(self.engine, "before_execute", self._before_execute)

    def _begin(self, conn: Connection) -> None:
        options = conn.get_execution_options()
        write = options.get("runfox_write")
        pooled = conn.connection
        # Left by a write unit that ran no statement (so sent no BEGIN): not this one's.
        pooled.info.pop(LATE_BEGIN, None)
        if not write and not options.get("runfox_read"):
            return  # a transaction of the engine's other users
        raw: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
        if not pooled.info.get("runfox_ready"):
            # Switching to WAL needs the file to itself: a new file's first
            # connections can find it locked, so this waits like BEGIN IMMEDIATE.
            for statement in ("PRAGMA journal_mode = WAL", *self._pragmas):
                self._execute_waiting(raw, statement)
            pooled.info["runfox_ready"] = True
        if write:
            # BEGIN IMMEDIATE goes just before the unit's first statement
            # (``begin_late``): the Python a unit runs before it (encoding the
            # record, building the rows) does not hold the database's one write lock.
            pooled.info[LATE_BEGIN] = True

    def begin_late(self, pooled: Any) -> None:
        if LATE_BEGIN not in pooled.info:
            return  # not a write unit, or its BEGIN was sent already
        # Waiting for the write lock here, rather than by running the whole unit
        # again, keeps a failed try down to one cheap statement. sqlite3 opens no
        # transaction of its own once it sees this one.
        self._execute_waiting(pooled.driver_connection, "BEGIN IMMEDIATE")
        del pooled.info[LATE_BEGIN]

    def _before_execute(self, conn: Connection, *_: Any) -> None:
        """A statement through Core: a write unit's BEGIN IMMEDIATE goes first."""
        self.begin_late(conn.connection)

    def _execute_waiting(self, raw: sqlite3.Connection, statement: str) -> None:
        """Run ``statement``, retrying while the file is locked, up to ``busy_timeout``."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                raw.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                delay = (self.retry_delay(attempt, time.monotonic() - started)
                         if "locked" in str(exc) else None)
                if delay is None:
                    # Wrapped as SQLAlchemy would, for Database.run to translate.
                    raise OperationalError(statement, None, exc) from exc
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
        # The write transaction's BEGIN IMMEDIATE excludes other writers: sent now,
        # before the schema is read (not at the unit's first statement).
        self.begin_late(conn.connection)
        yield

    def _diagnose_one(self, wrapper: DBAPIError | None, orig: BaseException
                      ) -> Diagnosis | None:
        """SQLite: by result code (``sqlite_errorname``, primary code only)."""
        name = getattr(orig, "sqlite_errorname", None)
        if not isinstance(name, str):
            if isinstance(orig, sqlite3.Error) and "locked" in str(orig):
                return Diagnosis(Problem.CONTENTION, "the database is locked")
            return None
        base = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
        if base in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return Diagnosis(Problem.CONTENTION, "the database is locked")
        if base == "SQLITE_TOOBIG":
            size = statement_size(wrapper.statement, wrapper.params) if wrapper else None
            return Diagnosis(Problem.TOO_LARGE, "string or blob too big", "SQLite",
                             f"its length limit (SQLITE_LIMIT_LENGTH) is {self.length_limit()}",
                             size)
        if base in _SQLITE_OUTAGE:
            return Diagnosis(Problem.OUTAGE, _SQLITE_OUTAGE[base])
        return None

    def length_limit(self) -> str:
        """SQLITE_LIMIT_LENGTH of this engine's connections, for an error message."""
        try:
            with self.engine.connect() as conn:
                raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
                return f"{raw.getlimit(sqlite3.SQLITE_LIMIT_LENGTH):,} bytes"
        except Exception:  # only used to word an error
            return "unknown"


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
