"""Connections parked between units of work (``runfox.backend.sql.parked``).

- back-to-back units of one kind run on one connection: one pool checkout;
- a unit that failed on a database error gives its connection back to the pool;
  one that failed on its own error (a lost race) was rolled back and parks it;
- a connection parked too long, or before ``engine.dispose()``, goes back to the
  pool; ``release`` returns them all;
- threads never share a connection at the same time;
- pools runfox should not hold connections from (``NullPool``, small ones) park nothing;
- a parked connection the server killed costs a retry, not a failure;
- a forked child never uses its parent's parked connections.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, QueuePool
from sqldb import ADMIN_URLS, KINDS, scratch_database

from runfox.backend.sql import parked
from runfox.backend.sql.database import Database
from runfox.errors import BackendError


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    opened = Database.open(url)
    try:
        yield opened
    finally:
        opened.release()


def checkouts(engine: Engine) -> list[Any]:
    """Grows by one per pool checkout from now on."""
    seen: list[Any] = []
    event.listen(engine, "checkout", lambda *args: seen.append(args[0]))
    return seen


def raw(conn: Connection) -> Any:
    return conn.connection.driver_connection


def test_units_of_one_kind_share_one_checkout(db: Database) -> None:
    db.run(lambda conn: None)  # the first unit checks out
    seen = checkouts(db.engine)
    used = {id(db.run(raw)) for _ in range(20)}
    assert len(used) == 1 and seen == []
    # Another kind (a read) parks its own.
    assert db.run(raw, write=False) is not None
    assert id(db.run(raw)) in used


def test_a_database_error_returns_the_connection_own_errors_park_it(db: Database) -> None:
    db.run(raw)
    seen = checkouts(db.engine)
    with pytest.raises(BackendError):
        db.run(lambda conn: conn.execute(text("SELECT * FROM no_such_table")))
    kept = db.run(raw)
    assert len(seen) == 1  # the failed unit's went back to the pool: checked out again

    def lose(conn: Connection) -> None:
        conn.execute(text("INSERT INTO runfox_keys (idempotency_key, workflow_execution_id,"
                          " created_at) VALUES ('k', 'wf', 1.0)"))
        raise LookupError("lost a race")

    with pytest.raises(LookupError):
        db.run(lose)
    assert db.run(raw) is kept and len(seen) == 1  # rolled back and parked
    assert db.run(lambda conn: conn.execute(text("SELECT COUNT(*) FROM runfox_keys"))
                  .scalar()) == 0


def test_a_connection_parked_too_long_goes_back_to_the_pool(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    db.run(raw)
    monkeypatch.setattr(parked, "PARK_SECONDS", 0.0)
    seen = checkouts(db.engine)
    for _ in range(3):
        db.run(raw)
    assert len(seen) == 3


def test_nothing_parked_outlives_engine_dispose(db: Database) -> None:
    db.run(raw)
    db.run(raw, write=False)  # two kinds parked
    db.engine.dispose()  # e.g. to apply new connect-time settings
    seen = checkouts(db.engine)
    db.run(raw)
    assert len(seen) == 1
    # Both of the old pool went, before the new connection opened: an SQLite
    # file still open here would have lent it its (writable) descriptor.
    parked_now = list(db._parking._parked.values())
    assert len(parked_now) == 1 and parked_now[0][2] is db.engine.pool


def test_release_returns_every_parked_connection(url: str) -> None:
    engine = create_engine(url)  # a caller's engine: runfox leaves it open
    try:
        db = Database.open(engine=engine)
        db.run(raw)
        db.run(raw, write=False)
        pool: Any = engine.pool
        assert pool.checkedout() >= 1
        db.release()
        assert pool.checkedout() == 0
    finally:
        engine.dispose()


def test_threads_never_share_a_connection_at_once(db: Database) -> None:
    active: set[int] = set()
    clashes: list[int] = []
    lock = threading.Lock()

    def work(conn: Connection) -> None:
        key = id(raw(conn))
        with lock:
            if key in active:
                clashes.append(key)
            active.add(key)
        conn.execute(text("SELECT 1"))
        with lock:
            active.discard(key)

    def loop() -> None:
        for _ in range(100):
            db.run(work, write=False)
            db.run(work)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clashes == []


@pytest.mark.parametrize("options", [{"poolclass": NullPool},
                                     {"pool_size": 2, "max_overflow": 20},
                                     {"pool_pre_ping": True}])
def test_pools_runfox_should_not_hold_from_park_nothing(url: str, options: dict[str, Any]
                                                        ) -> None:
    engine = create_engine(url, **options)
    try:
        db = Database.open(engine=engine)
        try:
            assert not db._parking.enabled
            seen = checkouts(engine)
            db.run(raw)
            db.run(raw)
            assert len(seen) == 2
            if isinstance(engine.pool, QueuePool):
                assert engine.pool.checkedout() == 0
        finally:
            db.release()
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_parked_connection_the_server_killed_costs_a_retry(kind: str, tmp_path: Path
                                                             ) -> None:
    kill_sql, id_sql = {"postgresql": ("SELECT pg_terminate_backend({id}, 5000)",
                                       "SELECT pg_backend_pid()"),
                        "mysql": ("KILL {id}", "SELECT CONNECTION_ID()")}[kind]
    with scratch_database(kind, tmp_path) as made:
        db = Database.open(made)
        admin = create_engine(ADMIN_URLS[kind], isolation_level="AUTOCOMMIT")
        try:
            parked_id = db.run(lambda conn: conn.execute(text(id_sql)).scalar())
            with admin.connect() as other:
                other.execute(text(kill_sql.format(id=parked_id)))
            time.sleep(0.05)  # MariaDB's KILL returns before the connection is gone
            runs: list[Any] = []

            def work(conn: Connection) -> Any:
                runs.append(raw(conn))
                return conn.execute(text(id_sql)).scalar()

            assert db.run(work) != parked_id
            assert len(runs) == 2  # the parked one failed, a fresh one did it
        finally:
            admin.dispose()
            db.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_forgets_the_parents_parked_connections(db: Database) -> None:
    db.run(raw)
    assert db._parking._parked
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os._exit(0 if not db._parking._parked else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert db._parking._parked  # the parent keeps its own
    assert db.run(lambda conn: conn.execute(text("SELECT 1")).scalar()) == 1
