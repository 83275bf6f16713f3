"""One database as the SQL store and runner use it: engine, transactions, errors.

``Database.open`` turns a URL or an existing ``Engine`` into a ``Database``,
creating (or checking) the tables on the way, so a database that is unreachable
or misconfigured fails at construction, not in the middle of a workflow. The
store and runner built by ``parts_from_url`` share one ``Database`` and so one
connection pool.

Every unit of work goes through ``Database.run``: one transaction, retried a few
times on deadlocks and serialisation failures, with SQLAlchemy and driver errors
translated where they surface (the original stays available as ``__cause__``):

- a database out of reach for now (refused or lost connection, a server
  restarting, too many connections, a locked SQLite file, a full disk, a
  read-only file) is retried for about 0.6 s, then raised as
  ``BackendUnavailable`` with the cause in a few words. Waiting longer is the
  caller's choice: the worker loop retries these for as long as it runs.
- a size limit (MariaDB's ``max_allowed_packet``, SQLite's length limit,
  PostgreSQL's program limits and column widths) is ``PayloadTooLarge`` naming
  the database and the limit, at once: running it again would fail again.
- anything else is ``BackendError``.

Each names what runfox was doing and the URL with its password masked
(``runfox.urlmask.mask_url``); a driver's own message is scrubbed of the password too.

A joint unit (``Database.joint``) makes one transaction of several units: every
``run`` the same thread makes inside it, from the store or the runner, joins its
connection, and it is retried and translated as a whole. ``Backend`` uses it to
write a transition, dispatch and acknowledge in one commit.

A connection the server dropped is discarded, and SQLAlchemy then replaces every
connection of the pool older than it (its disconnect handling), so once a
restarted server is back the next unit of work gets a fresh connection.
Between units, the connection of the last one of each kind is parked for the
next (``parked.Parking``: a pool checkout cost more CPU than a unit); an outage
sends every parked connection back to the pool.

SQLite files that runfox creates are created with mode 0600 (owner only);
SQLite gives the ``-wal`` and ``-shm`` files the mode of the database file. An
existing file keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql.expression import Executable, Select

from ...errors import BackendError, BackendUnavailable, PayloadTooLarge
from ...urlmask import mask_url, url_secrets
from .dialects import LATE_BEGIN, Diagnosis, Dialect, Problem, dialect_for, megabytes
from .parked import Parking
from .schema import SchemaError, SchemaState, ensure_schema, read_state, upgrade_schema

__all__ = ["Database", "DatabaseUser", "DuplicateRow", "HotStatement"]

T = TypeVar("T")

# Installs that fix a missing driver, by the DBAPI module SQLAlchemy tried to import.
_DRIVER_HINTS = {
    "psycopg": "pip install 'runfox[postgres]'",
    "psycopg2": "pip install 'runfox[postgres]' and use postgresql+psycopg://",
    "pymysql": "pip install 'runfox[mysql]'",
    "MySQLdb": "pip install 'runfox[mysql]' and use mysql+pymysql://",
}
# A URL without a driver gets the one runfox's extras install.
_DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
                    "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}

# Where ``HotStatement`` keeps its cursor in a pooled connection's ``info``.
_CURSOR = "runfox_hot_cursor"
# The (dialect, driver) pairs whose connections ``HotStatement`` runs statements on.
_DIRECT_DRIVERS = frozenset({("sqlite", "pysqlite"), ("postgresql", "psycopg"),
                             ("mysql", "pymysql"), ("mariadb", "pymysql")})

# One Database per Engine: a store and a runner given the same engine must not
# install the SQLite transaction hooks twice.
_BY_ENGINE: weakref.WeakKeyDictionary[Engine, Database] = weakref.WeakKeyDictionary()
_BY_ENGINE_LOCK = threading.Lock()


class DuplicateRow(Exception):
    """An INSERT hit an existing unique key (raised by ``Database.run`` on request)."""


def _reason(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """The driver's message on one line, with any of ``secrets`` masked."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def normalise_url(url: str) -> str:
    """Give a driverless PostgreSQL/MySQL URL the driver runfox installs.

    ``postgresql://`` would otherwise mean psycopg2 and ``mysql://`` mysqlclient,
    neither of which ``runfox[postgres]`` / ``runfox[mysql]`` provides.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _DEFAULT_DRIVERS:
        return f"{_DEFAULT_DRIVERS[scheme.lower()]}://{rest}"
    return url


class Database:
    """An engine, its ``Dialect`` and the transaction helpers. Thread-safe.

    Use ``Database.open``; the constructor assumes a prepared engine.
    """

    def __init__(self, engine: Engine, dialect: Dialect, *, owns_engine: bool) -> None:
        self.engine = engine
        self.dialect = dialect
        self.owns_engine = owns_engine
        raw_url = engine.url.render_as_string(hide_password=False)
        self.display_url = mask_url(raw_url)
        self._secrets = url_secrets(raw_url)
        self._users = 0
        self._lock = threading.Lock()
        self._schema_checked = False
        # The connection of the joint unit of work this thread is inside (see
        # ``joint``), and what to do once it commits.
        self._local = threading.local()
        # One option engine (sharing the pool and event listeners) per set of
        # dialect options: setting them on each connection cost a call per unit.
        # With it, the kind of unit those options make (for ``Parking``).
        self._engines: dict[tuple[bool, bool], tuple[Engine, Hashable]] = {}
        # The connection of the last unit of each kind, for the next one.
        self._parking = Parking(engine)
        # A driver ``HotStatement`` may run statements on directly (see there).
        self.direct = (engine.dialect.name, engine.dialect.driver) in _DIRECT_DRIVERS

    # -- construction ---------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        create_tables: bool = True,
        busy_timeout: float | None = None,
        sqlite_synchronous: str | None = None,
        engine_options: dict[str, Any] | None = None,
        check_schema: bool = True,
    ) -> Database:
        """The ``Database`` for ``url`` or ``engine`` (exactly one), schema checked
        (unless ``check_schema`` is false: ``runfox db`` inspects and upgrades it).

        Raises:
            ValueError: contradictory or unsupported arguments.
            BackendError: the driver is missing, or the database cannot be
                reached or holds an unusable schema.
        """
        if (url is None) == (engine is None):
            raise ValueError("pass exactly one of url= and engine=")
        if engine is not None and engine_options:
            raise ValueError("engine_options configure an engine runfox creates; "
                             "configure your own engine before passing it")
        if engine is None:
            assert url is not None
            engine = _create_engine(url, busy_timeout, engine_options)
            owned = True
        else:
            owned = False
        sqlite_options = {k: v for k, v in (("busy_timeout", busy_timeout),
                                            ("synchronous", sqlite_synchronous))
                          if v is not None}
        if sqlite_options and engine.dialect.name != "sqlite":
            raise ValueError(f"{', '.join(sqlite_options)} only apply to SQLite, "
                             f"not {engine.dialect.name}")
        with _BY_ENGINE_LOCK:
            db = _BY_ENGINE.get(engine)
            if db is None:
                db = cls(engine, dialect_for(engine, owned, **sqlite_options),
                         owns_engine=owned)
                db.dialect.prepare()
                _BY_ENGINE[engine] = db
            db._users += 1
        try:
            if check_schema:
                db.ensure_schema(create_tables)
        except BaseException:
            db.release()
            raise
        return db

    def ensure_schema(self, create: bool) -> None:
        """Create or check the tables once per ``Database``; see ``schema.ensure_schema``."""
        with self._lock:
            if self._schema_checked:
                return
            try:
                with self._schema_session():
                    self.run(lambda conn: ensure_schema(conn, self.dialect, create,
                                                        self.display_url),
                             what="open the runfox database")
            except SchemaError as exc:
                raise BackendError(f"runfox database {self.display_url}: {exc}") from exc
            self._schema_checked = True

    @contextlib.contextmanager
    def _schema_session(self) -> Iterator[None]:
        """The dialect's ``schema_session_lock``, its errors worded like ``run``'s."""
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(self.dialect.schema_session_lock())
        except (SQLAlchemyError, TimeoutError) as exc:
            raise self.error("lock the runfox schema", exc) from exc
        with stack:
            yield

    def schema_state(self) -> SchemaState:
        """The schema version and revision the database holds (``runfox db current``)."""
        return self.run(read_state, write=False, what="read the runfox schema version")

    def upgrade_schema(self) -> tuple[SchemaState, SchemaState]:
        """Migrate the tables to this runfox's schema; the states before and after.

        Raises:
            BackendError: the database is newer than this runfox, or the
                migration failed (the database's error, as ``run`` words it).
        """
        with self._lock:
            try:
                with self._schema_session():
                    states = self.run(lambda conn: upgrade_schema(conn, self.dialect,
                                                                  self.display_url),
                                      what="upgrade the runfox schema")
            except SchemaError as exc:
                raise BackendError(f"runfox database {self.display_url}: {exc}") from exc
            self._schema_checked = True
            return states

    def acquire(self) -> Database:
        """Count one more user (a store or runner that will call ``release``)."""
        with _BY_ENGINE_LOCK:
            self._users += 1
        return self

    def release(self) -> None:
        """Drop one user; the last one disposes an engine runfox created, or
        detaches from a caller's engine."""
        with _BY_ENGINE_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            _BY_ENGINE.pop(self.engine, None)
            self.dialect.detach()
        self._parking.clear()
        if self.owns_engine:
            self.engine.dispose()

    # -- transactions -----------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, write: bool, standalone: bool = False) -> Iterator[Connection]:
        """A connection inside one unit of work, committed on success.

        ``standalone`` promises that each statement stands on its own: no
        transaction is needed around them.
        """
        joined = getattr(self._local, "conn", None)
        if joined is not None:
            yield joined
            return
        try:
            engine, kind = self._engines[(write, standalone)]
        except KeyError:
            options = self.dialect.options(write, standalone)
            engine = self.engine.execution_options(**options) if options else self.engine
            kind = tuple(sorted(options.items()))
            self._engines[(write, standalone)] = engine, kind
        # The last unit's connection of this kind if it is still fresh (see
        # ``Parking``): a pool checkout and check-in cost more than the unit.
        conn = self._parking.take(kind, engine)
        try:
            with conn.begin():
                yield conn
        except Exception as exc:
            # Rolled back. After a database error (or a failed rollback) the
            # connection goes back to the pool, which checks it; after an error
            # of ``work``'s own (a lost race ...) it is as good as after a commit.
            if isinstance(exc, SQLAlchemyError):
                conn.close()
            else:
                self._parking.park(kind, conn)
            raise
        except BaseException:
            conn.close()
            raise
        self._parking.park(kind, conn)

    def run(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool = True,
        standalone: bool = False,
        what: str = "query",
        duplicate_ok: bool = False,
    ) -> T:
        """Run ``work(conn)`` in one transaction and return what it returns.

        ``write``: ``work`` changes rows. ``standalone``: each of its statements
        stands on its own, so they may run without a surrounding transaction
        (see ``Dialect.options``).
        Deadlocks, serialisation failures and a busy SQLite file run the whole
        unit again as long as the dialect's ``retry_delay`` allows; an outage
        (see the module docstring) as long as its ``outage_delay`` allows.
        Exceptions that ``work`` raises itself (``ConflictError`` ...) roll the
        transaction back and propagate unchanged.

        Raises:
            DuplicateRow: an INSERT hit an existing key and ``duplicate_ok`` is set.
            BackendUnavailable: the database stayed out of reach (or locked)
                through the retries.
            PayloadTooLarge: a size limit of the database refused the work.
            BackendError: any other database error, naming ``what``, the URL and
                the driver's reason.
        """
        joined = getattr(self._local, "conn", None)
        if joined is not None:
            # Inside ``joint``: part of its transaction; its ``run`` retries and
            # translates errors for the whole unit.
            return work(joined)
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                with self.transaction(write, standalone) as conn:
                    return work(conn)
            except IntegrityError as exc:
                if duplicate_ok:
                    raise DuplicateRow(_reason(exc, self._secrets)) from exc
                raise self.error(what, exc) from exc
            except DBAPIError as exc:
                found = self.dialect.diagnose(exc)
                if found is None:
                    raise self.error(what, exc) from exc
                if found.problem is Problem.TOO_LARGE:
                    raise self.too_large(what, found) from exc
                if found.problem is Problem.CONTENTION:
                    delay = self.dialect.retry_delay(attempt, time.monotonic() - started)
                else:
                    # The parked connections likely went down with this one.
                    self._parking.clear()
                    delay = self.dialect.outage_delay(attempt)
                if delay is None:
                    raise self.unavailable(what, found, exc) from exc
                time.sleep(delay)
                attempt += 1
            except SQLAlchemyError as exc:
                raise self.error(what, exc) from exc

    def joint(self, work: Callable[[], T], *, what: str = "write") -> T:
        """Run ``work()`` as one unit of work: every ``run`` it makes (from any
        store or runner on this ``Database``, in this thread) joins one write
        transaction, committed when ``work`` returns and rolled back, all of it,
        when it raises. Retried and translated as ``run`` does; ``work`` must
        therefore be safe to run again (it is: nothing it did survives a
        rollback). Callbacks given to ``after_commit`` meanwhile run once the
        transaction committed, in order. Inside a unit already: ``work`` simply
        runs in it.
        """
        if getattr(self._local, "conn", None) is not None:
            return work()
        pending: list[Callable[[], None]] = []

        def unit(conn: Connection) -> T:
            pending.clear()  # a retried unit starts afresh
            self._local.conn, self._local.after = conn, pending
            try:
                return work()
            finally:
                self._local.conn = self._local.after = None

        result = self.run(unit, what=what)
        for callback in pending:
            callback()
        return result

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current unit commits; at once outside ``joint``."""
        pending = getattr(self._local, "after", None)
        if pending is None:
            callback()
        else:
            pending.append(callback)

    @property
    def in_unit(self) -> bool:
        """This thread is inside ``joint``."""
        return getattr(self._local, "conn", None) is not None

    def error(self, what: str, exc: BaseException) -> BackendError:
        """A ``BackendError`` for ``exc`` that names the URL and the driver's reason."""
        return BackendError(f"could not {what} on {self.display_url}: "
                            f"{_reason(exc, self._secrets)}")

    def unavailable(self, what: str, found: Diagnosis, exc: BaseException
                    ) -> BackendUnavailable:
        """A ``BackendUnavailable`` for an outage: the cause first, then the driver's words."""
        reason = _reason(exc, self._secrets)
        return BackendUnavailable(f"could not {what} on {self.display_url}: {found.cause} "
                                  f"({reason})", reason=found.cause)

    def too_large(self, what: str, found: Diagnosis) -> PayloadTooLarge:
        """A ``PayloadTooLarge`` naming the database, its limit and the size sent."""
        # The size is worth saying when it is what the limit refused.
        size = f" {megabytes(found.size)}" if found.size and found.size >= 65536 else ""
        return PayloadTooLarge(
            f"{found.backend} refused a{size} statement: {found.limit} "
            f"(could not {what} on {self.display_url})",
            backend=found.backend, limit=found.limit, size=found.size)


class HotStatement:
    """A statement run on every step (write a record, queue a job, acknowledge
    one), compiled once per set of parameter names instead of on each call.

    With the drivers runfox installs (``sqlite3``, psycopg 3, PyMySQL) it runs on
    the driver's connection under the SQLAlchemy connection it is given, inside
    the same transaction: no compilation, parameter processing, events or
    result setup per call (those were most of a step's CPU). The SQL is the
    dialect's own compilation, with its paramstyle (``?`` for SQLite,
    ``%(name)s`` for psycopg and PyMySQL), its casts and the values bound in the
    statement; a type with a bind or result processor has it applied as Core
    would. A driver error goes through SQLAlchemy's own error handling for the
    connection (``Connection._handle_dbapi_exception``): it is raised as
    ``DBAPIError`` (``IntegrityError``, ``OperationalError`` ...), a lost
    connection is invalidated together with the pool's older ones, and
    ``handle_error`` listeners run, so ``Database.run`` retries and translates
    it as usual. Anything not plain (expanding or post-compile parameters, a
    ``schema_translate_map``, another driver) is ``conn.execute`` as before;
    and so it is while anyone listens to ``before_cursor_execute`` or
    ``after_cursor_execute`` on the engine (tracing, statement counters), so
    they keep seeing every statement.

    For INSERT/UPDATE/DELETE: ``execute`` gives the row count; with RETURNING,
    ``rows`` gives the rows, as it does for a SELECT (a read on every load).
    """

    def __init__(self, db: Database, statement: Executable) -> None:
        self._db = db
        self._statement: Any = statement  # an INSERT, UPDATE or DELETE, or a SELECT
        self._select = isinstance(statement, Select)
        self._returns = self._select or getattr(statement, "_returning", ()) != ()
        self._row_type: Any = None
        # Per RETURNING column, what gives its type's result processor for the
        # type code the driver reports; and, from the first rows fetched, what
        # turns a driver row into a result row.
        self._result_processor: list[Callable[[Any, Any], Any]] = []
        self._make_row: Callable[[Any], Any] | None = None
        # By the parameter names (in their order): the SQL and what turns a dict
        # of parameters into the driver's (a tuple or a dict, by paramstyle), or
        # None where Core must run it.
        self._compiled: dict[tuple[str, ...], tuple[str, Callable[[Any], Any]] | None] = {}

    def _compile(self, names: tuple[str, ...]) -> tuple[str, Callable[[Any], Any]] | None:
        try:
            return self._compile_direct(names)
        except AttributeError:
            # The direct path reads a few SQLAlchemy internals (checked on 2.0 and
            # 2.1); a release that moved them gets Core's path, never an error.
            return None

    def _compile_direct(self, names: tuple[str, ...]
                        ) -> tuple[str, Callable[[Any], Any]] | None:
        dialect = self._db.engine.dialect
        # Compiled as for an executemany unless rows are wanted: a single-row
        # INSERT would otherwise RETURN its new primary key on PostgreSQL, for
        # ``inserted_primary_key``, which nobody here reads.
        compiled: Any = (self._statement.compile(dialect=dialect) if self._select else
                         self._statement.compile(dialect=dialect, column_keys=list(names),
                                                 for_executemany=not self._returns))
        # The driver's parameters: in order (``?``, ``%s``) or by name (``%(name)s``).
        keys = compiled.positiontup if compiled.positional else list(compiled.binds)
        rows = self._select or bool(compiled.returning)
        if (keys is None or compiled.literal_execute_params or compiled.post_compile_params
                or rows != self._returns or compiled._insertmanyvalues
                or any(bind.expanding for bind in compiled.binds.values())):
            return None
        Connection._handle_dbapi_exception  # noqa: B018  (the error path needs it)
        if self._returns:
            columns = compiled._result_columns
            self._result_processor = [column[3]._cached_result_processor
                                      for column in columns]
            self._row_type = namedtuple("Row", [column[0] for column in columns],  # type: ignore[misc]
                                        rename=True)
        given = set(names)
        # Per driver parameter: the caller's parameter, or a value bound in the
        # statement (``now()`` arguments, constants ...); then the type's bind
        # processor, if any.
        sources: list[tuple[str | None, Any, Any]] = []
        for key in keys:
            bind = compiled.binds[key]
            if key in given:
                name, const = key, None
            elif bind.required or bind.callable is not None:
                return None  # Core raises its error, or computes the value per call
            else:
                name, const = None, bind.effective_value
            sources.append((name, const, bind.type._cached_bind_processor(dialect)))
        escaped = compiled.escaped_bind_names or {}
        return compiled.string, _arguments(
            None if compiled.positional else [escaped.get(key, key) for key in keys],
            sources)

    def _plan(self, conn: Connection, params: dict[str, Any] | list[dict[str, Any]],
              many: bool) -> tuple[str, Callable[[Any], Any]] | None:
        """The compiled form for these parameter names, or None: run it through Core."""
        if (not self._db.direct or (many and not params)
                or (_has_events(conn) and (conn.dispatch.before_cursor_execute
                                           or conn.dispatch.after_cursor_execute))
                or not conn.in_transaction()
                or conn.get_execution_options().get("schema_translate_map")):
            # Listeners on the statements (tracing, counting) see every one: Core runs it.
            # Outside a transaction, Core begins one.
            return None
        first: dict[str, Any] = params[0] if isinstance(params, list) else params
        names = tuple(first)
        try:
            return self._compiled[names]
        except KeyError:
            plan = self._compiled[names] = self._compile(names)
            return plan

    def _run(self, conn: Connection, plan: tuple[str, Callable[[Any], Any]],
             params: Any, many: bool) -> Any:
        """Run ``plan`` on the driver's connection; its cursor, executed."""
        sql, arguments = plan
        # One cursor per driver connection, kept in the pool's per-connection
        # ``info`` (cleared when the connection is replaced): a new psycopg
        # cursor per statement cost a few microseconds.
        pooled = conn.connection
        if LATE_BEGIN in pooled.info:  # checked here too: no call per statement elsewhere
            self._db.dialect.begin_late(pooled)
        cursor: Any = pooled.info.get(_CURSOR)
        if cursor is None:
            cursor = pooled.info[_CURSOR] = pooled.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if many:
                cursor.executemany(sql, [arguments(p) for p in params])
            else:
                cursor.execute(sql, arguments(params))
        except BaseException as exc:
            del pooled.info[_CURSOR]  # SQLAlchemy's handling closes it
            if (isinstance(exc, self._db.engine.dialect.loaded_dbapi.Error)
                    or not isinstance(exc, Exception)):
                # As Core handles it: wrapped, listeners told, and a lost (or
                # interrupted) connection invalidated with the pool's older ones.
                conn._handle_dbapi_exception(exc, sql, params, cursor, None)
            raise
        return cursor

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        """Run a statement with RETURNING on ``conn``; its rows (named tuples, or
        SQLAlchemy's ``Row`` where Core ran it: both give columns as attributes)."""
        if not self._returns:
            raise TypeError("rows() is for a statement with RETURNING; use execute()")
        plan = self._plan(conn, params, False)
        if plan is None:
            return list(conn.execute(self._statement, params).all())
        cursor = self._run(conn, plan, params, False)
        found = cursor.fetchall()
        make = self._make_row
        if make is None:
            make = self._make_row = self._row_maker(cursor.description)
        return [make(values) for values in found]

    def _row_maker(self, description: Any) -> Callable[[Any], Any]:
        """What turns a driver row into a result row: a named tuple of the values
        after the result processors for the type codes in ``description`` (the
        ones Core would pick; none for runfox's column types)."""
        dialect = self._db.engine.dialect
        processors = [processor(dialect, described[1]) for processor, described
                      in zip(self._result_processor, description, strict=True)]
        make = self._row_type._make
        if all(process is None for process in processors):
            return make
        return lambda values: make([value if process is None else process(value)
                                    for process, value in zip(processors, values, strict=True)])

    def execute(self, conn: Connection, params: dict[str, Any] | list[dict[str, Any]]
                ) -> int:
        """Run with ``params`` (one dict, or a list of dicts with the same names
        for an ``executemany``) on ``conn``; the number of rows it changed."""
        if self._returns:
            raise TypeError("execute() is for a statement without RETURNING; use rows()")
        many = isinstance(params, list)
        plan = self._plan(conn, params, many)
        if plan is None:
            return int(conn.execute(self._statement, params).rowcount)
        if isinstance(params, list) and len(params) == 1:
            # As Core does: one row is an execute (psycopg would open a pipeline
            # for an executemany, for nothing).
            params, many = params[0], False
        cursor = self._run(conn, plan, params, many)
        return int(cursor.rowcount)


def _has_events(conn: Connection) -> bool:
    """Whether any listener may be on ``conn`` or its engine: SQLAlchemy's own
    quick test before it looks at its listeners (which costs a microsecond)."""
    return getattr(conn, "_has_events", True) or getattr(conn.engine, "_has_events", True)


def _arguments(names: list[str] | None, sources: list[tuple[str | None, Any, Any]]
               ) -> Callable[[Any], Any]:
    """What turns a dict of parameters into the driver's parameters.

    ``sources`` per driver parameter: the caller's name or None, else the
    constant, and a bind processor or None. ``names``: the driver's names for
    them (a named paramstyle), or None for a positional one (a tuple).
    """
    plain = all(process is None for _, _, process in sources)
    if names is None and plain and all(name is not None for name, _, _ in sources):
        order = tuple(name for name, _, _ in sources)

        def positional(values: Any) -> tuple:
            return tuple([values[name] for name in order])
        return positional
    if names is not None and plain and all(
            name is None or name == key for (name, _, _), key in zip(sources, names,
                                                                     strict=True)):
        # The caller's dict already names its values as the driver wants them
        # (drivers ignore keys the SQL does not use); only constants are added.
        constants = {key: const for (name, const, _), key in zip(sources, names, strict=True)
                     if name is None}
        if not constants:
            return lambda values: values
        return lambda values: {**values, **constants}

    def convert(values: Any) -> list[Any]:
        out = []
        for name, const, process in sources:
            value = const if name is None else values[name]
            out.append(value if process is None else process(value))
        return out
    if names is None:
        return lambda values: tuple(convert(values))
    return lambda values: dict(zip(names, convert(values), strict=True))


class DatabaseUser:
    """What ``SqlStore`` and ``SqlRunner`` share: a ``Database`` opened from a URL
    or an engine (see ``Database.open``), the engine, ``close``."""

    def __init__(
        self,
        url: str | None,
        *,
        engine: Engine | None,
        create_tables: bool,
        busy_timeout: float | None,
        sqlite_synchronous: str | None,
        engine_options: dict[str, Any] | None,
        database: Database | None,
    ) -> None:
        self._db = database if database is not None else Database.open(
            url, engine=engine, create_tables=create_tables, busy_timeout=busy_timeout,
            sqlite_synchronous=sqlite_synchronous, engine_options=engine_options)
        self._closed = False

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (one per database for parts from ``parts_from_url``)."""
        return self._db.engine

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._db.display_url!r})"

    def close(self) -> None:
        """Release the database; the last user disposes an engine runfox created."""
        if not self._closed:
            self._closed = True
            self._db.release()


def _create_engine(url: str, busy_timeout: float | None,
                   engine_options: dict[str, Any] | None) -> Engine:
    url = normalise_url(url)
    shown = mask_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {shown!r} ({exc})") from exc
    options: dict[str, Any] = dict(engine_options or {})
    connect_args: dict[str, Any] = dict(options.pop("connect_args", {}))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise ValueError("an in-memory SQLite database cannot be shared between a store, "
                             "a runner and workers; use a file (sqlite:///runfox.db) or "
                             "memory:// for a single-process in-memory backend")
        directory = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(directory):
            raise BackendError(f"could not open the runfox database on {shown}: "
                               f"directory {directory!r} does not exist")
        if not parsed.query.get("uri"):
            _create_private(database, shown)
        # Every unit of work ends in COMMIT or ROLLBACK (or never began: reads run
        # in autocommit), so the pool's rollback on check-in is wasted work.
        options.setdefault("pool_reset_on_return", None)
        # The busy handler covers opening the file; runfox's units retry by themselves.
        connect_args.setdefault("timeout", 30.0 if busy_timeout is None else busy_timeout)
    else:
        connect_args.setdefault("connect_timeout", 10)
        if backend in ("mysql", "mariadb") and "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    try:
        return create_engine(parsed, connect_args=connect_args, **options)
    except ModuleNotFoundError as exc:
        hint = _DRIVER_HINTS.get((exc.name or "").split(".")[0], "install its driver")
        raise BackendError(f"the database driver for {shown} is not installed "
                           f"({exc.name}): {hint}") from exc
    except (ArgumentError, TypeError) as exc:
        raise ValueError(f"cannot use database URL {shown!r}: {exc}") from exc


def _create_private(path: str, shown: str) -> None:
    """Create the SQLite file ``path`` empty with mode 0600 unless it exists.

    An empty file is a valid SQLite database; creating it here, rather than
    letting SQLite create it under the process umask, keeps other users out of
    the records and the job payloads. SQLite creates ``-wal`` and ``-shm`` with
    the mode of the database file, so they are 0600 too.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise BackendError(f"could not create the runfox database on {shown}: "
                           f"{exc.strerror or exc}") from exc
    os.close(fd)
