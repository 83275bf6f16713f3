"""``HotStatement``'s direct path on every SQL database runfox supports.

On SQLite (``sqlite3``), PostgreSQL (psycopg 3) and MariaDB (PyMySQL) a hot
statement runs on the driver's cursor, not through ``conn.execute``:

- it is taken (no Core execution happens for it), with the rows, row counts
  and constants bound in the statement that Core would give;
- a ``before_cursor_execute`` listener sends it back through Core, where the
  listener sees it;
- a driver error on the direct path becomes the same runfox error as on Core's
  (a duplicate key is ``DuplicateRow``, or the same ``BackendError``), and a
  connection killed under it is invalidated and the unit runs again on a new one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, create_engine, event, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqldb import ADMIN_URLS, KINDS, scratch_database

from runfox.backend.sql.database import Database, DuplicateRow, HotStatement
from runfox.backend.sql.schema import keys, tasks
from runfox.errors import BackendError, BackendUnavailable

KILL = {"postgresql": ("SELECT pg_terminate_backend({id}, 5000)", "SELECT pg_backend_pid()"),
        "mysql": ("KILL {id}", "SELECT CONNECTION_ID()")}


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with scratch_database(request.param, tmp_path) as url:
        opened = Database.open(url)
        try:
            yield opened
        finally:
            opened.release()


@contextlib.contextmanager
def core_executions(db: Database) -> Iterator[list[Any]]:
    """The statements run through ``conn.execute`` meanwhile (``before_execute``
    fires for Core only, and unlike a cursor listener leaves the direct path on)."""
    seen: list[Any] = []

    def listener(conn: Connection, statement: Any, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_execute", listener)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_execute", listener)


def key_rows(n: int, prefix: str = "k") -> list[dict[str, Any]]:
    return [{"idempotency_key": f"{prefix}{i}", "workflow_execution_id": f"wf{i}",
             "created_at": 1.5 + i} for i in range(n)]


def test_the_direct_path_runs_on_every_driver(db: Database) -> None:
    assert db.direct
    add = HotStatement(db, keys.insert())
    # A constant bound in the statement (the WHERE's literal) goes to the driver too.
    rename = HotStatement(db, update(keys).where(keys.c.idempotency_key == bindparam("key"),
                                                 keys.c.workflow_execution_id != "never")
                          .values(workflow_execution_id=bindparam("wf")))
    with core_executions(db) as core:
        db.run(lambda conn: add.execute(conn, key_rows(3)))
        assert db.run(lambda conn: add.execute(conn, key_rows(2, "m"))) == 2  # executemany
        assert db.run(lambda conn: rename.execute(conn, {"key": "k1", "wf": "moved"})) == 1
        assert db.run(lambda conn: rename.execute(conn, {"key": "nope", "wf": "x"})) == 0
    assert core == []
    assert all(plan is not None for plan in add._compiled.values())
    assert all(plan is not None for plan in rename._compiled.values())
    with db.engine.connect() as conn:
        found = conn.execute(select(keys.c.idempotency_key, keys.c.workflow_execution_id,
                                    keys.c.created_at).order_by(keys.c.idempotency_key)).all()
    assert [tuple(r) for r in found] == [("k0", "wf0", 1.5), ("k1", "moved", 2.5),
                                         ("k2", "wf2", 3.5), ("m0", "wf0", 1.5),
                                         ("m1", "wf1", 2.5)]


def test_returning_rows_come_back_as_core_gives_them(db: Database) -> None:
    if db.engine.dialect.name not in ("sqlite", "postgresql"):
        pytest.skip("MariaDB has no UPDATE ... RETURNING")
    with db.engine.connect() as conn, conn.begin():
        conn.execute(insert(tasks), [
            {"workflow_execution_id": "wf", "step_id": f"s{i}", "run_id": i, "state": "queued",
             "deliveries": 0, "payload": "{}", "created_at": 0.5, "visible_at": 2.25 + i}
            for i in range(3)])
    claim = (update(tasks).where(tasks.c.run_id >= bindparam("least"))
             .values(deliveries=tasks.c.deliveries + 1, claim_token=bindparam("token"))
             .returning(tasks.c.step_id, tasks.c.run_id, tasks.c.visible_at,
                        tasks.c.claim_token))
    hot = HotStatement(db, claim)
    with core_executions(db) as core:
        direct = db.run(lambda conn: hot.rows(conn, {"least": 1, "token": 7}))
    assert core == []
    with db.engine.connect() as conn, conn.begin():
        by_core = conn.execute(claim, {"least": 1, "token": 8}).all()
    assert sorted((r.step_id, r.run_id, r.visible_at, r.claim_token) for r in direct) == [
        ("s1", 1, 3.25, 7), ("s2", 2, 4.25, 7)]
    assert sorted(tuple(r) for r in direct) == sorted(
        (*r[:3], 7) for r in by_core)  # same columns, values and types as Core
    assert all(type(a) is type(b) for r, c in zip(sorted(direct), sorted(by_core), strict=True)
               for a, b in zip(r, c, strict=True))


def test_a_cursor_listener_sends_it_through_core(db: Database) -> None:
    add = HotStatement(db, keys.insert())
    # Planned already, on a connection now parked: the listener still counts.
    db.run(lambda conn: add.execute(conn, key_rows(1, "before")))
    assert list(add._compiled.values()) != [None]
    heard: list[str] = []

    def listener(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        heard.append(statement)

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        db.run(lambda conn: add.execute(conn, key_rows(1)))
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert [s for s in heard if "runfox_keys" in s]


def run_both_ways(db: Database, work: Callable[[Connection], Any], **options: Any
                  ) -> tuple[BaseException, BaseException]:
    """The error ``db.run(work)`` raises on the direct path, then through Core."""
    caught = []
    for listen in (False, True):
        listener = lambda *args: None  # noqa: E731
        if listen:
            event.listen(db.engine, "after_cursor_execute", listener)
        try:
            with pytest.raises(Exception) as raised:
                db.run(work, **options)
            caught.append(raised.value)
        finally:
            if listen:
                event.remove(db.engine, "after_cursor_execute", listener)
    return caught[0], caught[1]


def test_a_driver_error_is_the_same_runfox_error_as_through_core(db: Database) -> None:
    add = HotStatement(db, keys.insert())
    db.run(lambda conn: add.execute(conn, key_rows(1)))
    direct, core = run_both_ways(db, lambda conn: add.execute(conn, key_rows(1)),
                                 duplicate_ok=True)
    assert type(direct) is type(core) is DuplicateRow
    assert str(direct) == str(core)
    assert type(direct.__cause__) is type(core.__cause__)
    direct, core = run_both_ways(db, lambda conn: add.execute(conn, key_rows(1)),
                                 what="add a key")
    assert type(direct) is type(core) is BackendError
    assert str(direct) == str(core) and "could not add a key" in str(direct)


@contextlib.contextmanager
def killer(kind: str) -> Iterator[Callable[[Connection], None]]:
    """Kills a connection's server session from another connection."""
    kill_sql, id_sql = KILL[kind]
    admin = create_engine(ADMIN_URLS[kind], isolation_level="AUTOCOMMIT")

    def kill(conn: Connection) -> None:
        own = conn.execute(text(id_sql)).scalar()
        with admin.connect() as other:
            other.execute(text(kill_sql.format(id=own)))
        time.sleep(0.05)  # MariaDB's KILL returns before the connection is gone

    try:
        yield kill
    finally:
        admin.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_killed_connection_is_invalidated_and_the_unit_runs_again(
        kind: str, tmp_path: Path) -> None:
    with scratch_database(kind, tmp_path) as url, killer(kind) as kill:
        db = Database.open(url)
        try:
            add = HotStatement(db, keys.insert())
            # Straight on a connection: SQLAlchemy's DBAPIError, the connection invalidated.
            pool: Any = db.engine.pool
            before = pool._invalidate_time
            with db.engine.connect() as conn:
                unit = conn.begin()
                kill(conn)
                with pytest.raises(DBAPIError) as caught:
                    add.execute(conn, key_rows(1))
                assert caught.value.connection_invalidated
                assert conn.invalidated
                unit.rollback()
            # And the pool's older connections are due for replacement, as after Core.
            assert pool._invalidate_time > before
            assert add._compiled and all(p is not None for p in add._compiled.values())
            # In a unit: killed on the first run, run again on a new connection.
            runs = []

            def work(conn: Connection) -> int:
                runs.append(conn.connection.driver_connection)
                if len(runs) == 1:
                    kill(conn)
                return add.execute(conn, key_rows(1))

            assert db.run(work) == 1
            assert len(runs) == 2 and runs[0] is not runs[1]
            # Killed on every run: BackendUnavailable, then a healthy pool again.
            def always(conn: Connection) -> int:
                kill(conn)
                return add.execute(conn, key_rows(1, "x"))

            with pytest.raises(BackendUnavailable):
                db.run(always, what="add a key")
            assert db.run(lambda conn: add.execute(conn, key_rows(1, "y"))) == 1
        finally:
            db.release()
