"""The SQL layer under real outages and size limits, and secrets kept out of sight.

Every condition here is real, produced on a real SQLite file or server, never a
mock of our storage:

- SQLite: a full disk (a small tmpfs filled up when this process may mount one,
  else ``PRAGMA max_page_count``, which makes SQLite itself report SQLITE_FULL);
  a read-only database (an immutable file via ``chattr +i``, which binds root
  too, else ``PRAGMA query_only``, which makes SQLite report SQLITE_READONLY);
  a ``database is locked`` storm (another connection holds ``BEGIN EXCLUSIVE``
  past the busy timeout); SQLite's length limit (lowered with ``setlimit``).
  Running as root, ``chmod 0400`` would not make anything read-only, hence these.
- PostgreSQL: connections killed with ``pg_terminate_backend`` mid-transaction;
  a private server restarted under a pool (see ``pgserver``); column and index
  size limits.
- MariaDB: connections killed with ``KILL``; an output over the server's
  ``max_allowed_packet``, both at the store and through a worker (the step fails
  naming the limit, not "the worker died or hung").

An outage must surface as ``BackendUnavailable`` saying the cause, a size limit as
``PayloadTooLarge`` naming the database and the limit, and the same objects must
work again once the condition is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgserver import private_postgres
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection
from sqldb import ADMIN_URLS, scratch_database

from runfox.backend import Backend
from runfox.backend.sql import parts_from_url
from runfox.backend.sql.database import Database
from runfox.backend.urls import mask_url, url_secrets
from runfox.errors import BackendError, BackendUnavailable, PayloadTooLarge, RecordTooLarge
from runfox.status import WorkflowStatus

ONE_STEP = {"name": "one", "steps": [{"id": "a", "fn": "echo", "input": {}}]}


@contextlib.contextmanager
def sql_backend(url: str, **options: Any) -> Iterator[Backend]:
    store, runner = parts_from_url(url, **options)
    try:
        yield Backend(store=store, runner=runner)
    finally:
        runner.close()
        store.close()


def started(backend: Backend) -> str:
    """A one-step workflow whose step ``a`` (run 0) is in progress."""
    wf_id = backend.create(ONE_STEP, {})
    backend.advance(wf_id)
    return wf_id


def on_connect(backend: Backend, setup: Callable[[sqlite3.Connection], object]) -> None:
    """Run ``setup`` on every new SQLite connection of ``backend``'s engine, and
    drop the pooled ones so that the next unit of work gets a new connection."""
    engine = backend.store.engine  # type: ignore[attr-defined]
    event.listen(engine, "connect", lambda raw, _record: setup(raw))
    engine.dispose()


# -- URLs and files ---------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:secret@db.example/app", "postgresql://u:***@db.example/app"),
    ("postgresql://u:p@ss@db.example/app", "postgresql://u:***@db.example/app"),
    ("postgresql://u:p@ss@w@rd@db.example:5432/app", "postgresql://u:***@db.example:5432/app"),
    ("postgresql://u:a/b?c@db.example/app", "postgresql://u:***@db.example/app"),
    ("mysql+pymysql://u:p@ss@[::1]:3306/app", "mysql+pymysql://u:***@[::1]:3306/app"),
    ("postgresql+psycopg://db.example/app?user=u&password=s3cret",
     "postgresql+psycopg://db.example/app?user=u&password=***"),
    ("postgresql://u:x@h/app?sslpassword=k1&sslmode=require",
     "postgresql://u:***@h/app?sslpassword=***&sslmode=require"),
    ("aws://?aws_secret_access_key=AKIA&region=eu-west-1",
     "aws://?aws_secret_access_key=***&region=eu-west-1"),
    ("mysql+pymysql://root@127.0.0.1:3306/test", "mysql+pymysql://root@127.0.0.1:3306/test"),
    ("sqlite:////var/lib/a@b/runfox.db", "sqlite:////var/lib/a@b/runfox.db"),
    ("memory://", "memory://"),
])
def test_mask_url_hides_every_password_form(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize("url", [
    "postgresql://u:p@ss@h/app",
    "postgresql://u:pw@h/app?application_name=me@example",
    "postgresql://u:a?b@c@h/app?password=q@r",
])
def test_mask_url_never_shows_any_piece_of_a_password(url: str) -> None:
    shown = mask_url(url)
    for secret in url_secrets(url):
        assert secret.rstrip("@") not in shown.replace("***", ""), (secret, shown)


def test_a_driver_message_quoting_a_password_tail_is_scrubbed(tmp_path: Path) -> None:
    # An unencoded @ makes SQLAlchemy take 'ss@nowhere.invalid' for the host; the
    # driver's message quotes it. Neither the URL nor the message may show 'ss@'.
    url = "postgresql+psycopg://u:p@ss@nowhere.invalid:1/db"
    with pytest.raises(BackendError) as caught:
        Database.open(url, engine_options={"connect_args": {"connect_timeout": 2}})
    message = str(caught.value)
    assert "p@ss" not in message and "ss@" not in message, message
    assert "u:***@" in message


def test_sqlite_files_are_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    old = os.umask(0o022)
    try:
        with sql_backend(f"sqlite:///{path}") as backend:
            wf_id = started(backend)
            backend.on_step_result(wf_id, "a", {"x": 1}, 0)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
    assert {"private.db", "private.db-wal", "private.db-shm"} <= set(modes), modes
    assert set(modes.values()) == {0o600}, {k: oct(v) for k, v in modes.items()}


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    sqlite3.connect(path).close()
    path.chmod(0o640)
    with sql_backend(f"sqlite:///{path}"):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# -- SQLite outages ------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 2 MB tmpfs, or ``None`` when this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # the last few bytes
        fd = os.open(filler, os.O_WRONLY | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * 512)
        except OSError:
            pass
        finally:
            os.close(fd)
    return filler


def test_a_full_disk_is_an_outage_that_passes(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        directory = disk or tmp_path
        with sql_backend(f"sqlite:///{directory / 'full.db'}") as backend:
            wf_id = started(backend)
            limits = {"pages": 1 << 30}
            if disk is not None:
                filler = fill(disk)
            else:  # SQLite's own page cap stands in for the disk
                filler = None
                on_connect(backend, lambda raw: raw.execute(
                    f"PRAGMA max_page_count = {limits['pages']}"))
                limits["pages"] = 64
                backend.store.engine.dispose()  # type: ignore[attr-defined]
            with pytest.raises(BackendUnavailable) as caught:
                backend.on_step_result(wf_id, "a", {"blob": "x" * 400_000}, 0)
            assert "disk full" in str(caught.value), caught.value
            assert caught.value.reason == "disk full"
            if filler is not None:
                filler.unlink()
            else:
                limits["pages"] = 1 << 30
                backend.store.engine.dispose()  # type: ignore[attr-defined]
            done = backend.on_step_result(wf_id, "a", {"blob": "x" * 400_000}, 0)
            assert backend.store.load(wf_id).status is WorkflowStatus.COMPLETE, done


def immutable(path: Path) -> bool:
    """``chattr +i`` ``path`` (binds root too); False when the file system refuses."""
    return shutil.which("chattr") is not None and subprocess.run(
        ["chattr", "+i", str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("how", ["immutable file", "query_only"])
def test_a_read_only_database_is_an_outage_that_passes(tmp_path: Path, how: str) -> None:
    path = tmp_path / "ro.db"
    with sql_backend(f"sqlite:///{path}") as backend:
        wf_id = started(backend)
        engine = backend.store.engine  # type: ignore[attr-defined]
        flags = {"read_only": True}
        if how == "immutable file":
            engine.dispose()  # open connections keep their writable descriptors
            if not immutable(path):
                pytest.skip("chattr +i is not available on this file system")
        else:
            on_connect(backend, lambda raw: raw.execute(
                f"PRAGMA query_only = {int(flags['read_only'])}"))
        try:
            with pytest.raises(BackendUnavailable) as caught:
                backend.on_step_result(wf_id, "a", {"x": 1}, 0)
        finally:
            if how == "immutable file":
                subprocess.run(["chattr", "-i", str(path)], check=True)
        assert "read-only" in str(caught.value), caught.value
        flags["read_only"] = False
        engine.dispose()
        backend.on_step_result(wf_id, "a", {"x": 1}, 0)
        assert backend.store.load(wf_id).status is WorkflowStatus.COMPLETE


def test_a_locked_database_storm_is_an_outage_that_passes(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with sql_backend(f"sqlite:///{path}", busy_timeout=0.3) as backend:
        wf_id = started(backend)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            t0 = time.monotonic()
            with pytest.raises(BackendUnavailable) as caught:
                backend.on_step_result(wf_id, "a", {"x": 1}, 0)
            assert time.monotonic() - t0 < 2  # gave up soon after the busy timeout
            assert "the database is locked" in str(caught.value), caught.value
            holder.rollback()
            backend.on_step_result(wf_id, "a", {"x": 1}, 0)
        finally:
            holder.close()
        assert backend.store.load(wf_id).status is WorkflowStatus.COMPLETE


def test_sqlite_length_limit_names_the_limit(tmp_path: Path) -> None:
    with sql_backend(f"sqlite:///{tmp_path / 'limit.db'}") as backend:
        wf_id = started(backend)
        on_connect(backend, lambda raw: raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100_000))
        with pytest.raises(PayloadTooLarge) as caught:
            backend.on_step_result(wf_id, "a", {"blob": "x" * 200_000}, 0)
        error = caught.value
        assert isinstance(error, RecordTooLarge)
        assert error.backend == "SQLite"
        assert "SQLITE_LIMIT_LENGTH" in str(error) and "100,000 bytes" in str(error), error
        assert "died or hung" not in str(error)


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with scratch_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def mysql_url(tmp_path: Path) -> Iterator[str]:
    with scratch_database("mysql", tmp_path) as url:
        yield url


@contextlib.contextmanager
def killing(kill_sql: str, id_sql: str, admin_url: str, times: int
            ) -> Iterator[Callable[[Connection], int]]:
    """A unit of work that kills its own connection from outside the first
    ``times`` times it runs, then uses it; returns how many times it ran."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    runs = {"n": 0}

    def work(conn: Connection) -> int:
        runs["n"] += 1
        own = conn.execute(text(id_sql)).scalar()
        if runs["n"] <= times:
            with admin.connect() as other:
                other.execute(text(kill_sql.format(id=own)))
            time.sleep(0.05)
        conn.execute(text("SELECT 1")).scalar()
        return runs["n"]

    try:
        yield work
    finally:
        admin.dispose()


PG_KILL = ("SELECT pg_terminate_backend({id})", "SELECT pg_backend_pid()")
MYSQL_KILL = ("KILL {id}", "SELECT CONNECTION_ID()")


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_connection_killed_mid_transaction_is_replaced(kind: str, tmp_path: Path) -> None:
    with scratch_database(kind, tmp_path) as url:
        kill_sql, id_sql = PG_KILL if kind == "postgresql" else MYSQL_KILL
        db = Database.open(url)
        try:
            # Killed once: the unit runs again on a fresh connection and succeeds.
            with killing(kill_sql, id_sql, ADMIN_URLS[kind], 1) as work:
                assert db.run(work) == 2
            # Killed on every try: BackendUnavailable saying the connection went.
            with killing(kill_sql, id_sql, ADMIN_URLS[kind], 99) as work, \
                    pytest.raises(BackendUnavailable) as caught:
                db.run(work, what="claim jobs")
            text_ = str(caught.value)
            assert text_.startswith("could not claim jobs on "), text_
            assert any(word in text_ for word in ("shutting down", "killed", "lost")), text_
            # And the pool is healthy afterwards.
            assert db.run(lambda conn: conn.execute(text("SELECT 1")).scalar()) == 1
        finally:
            db.release()


def test_postgres_size_limits_name_postgres_and_the_limit(pg_url: str) -> None:
    db = Database.open(pg_url)
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            db.run(lambda conn: conn.execute(text(
                "CREATE TEMP TABLE narrow (x varchar(5)); "
                "INSERT INTO narrow VALUES ('much too long')")))
        assert caught.value.backend == "PostgreSQL"
        assert "character varying(5)" in str(caught.value), caught.value

        def index_row(conn: Connection) -> None:
            conn.execute(text("CREATE TEMP TABLE wide (x text)"))
            conn.execute(text("CREATE INDEX wide_x ON wide (x)"))
            conn.execute(text("INSERT INTO wide SELECT string_agg(md5(i::text), '') "
                              "FROM generate_series(1, 400) AS i"))

        with pytest.raises(PayloadTooLarge) as caught:
            db.run(index_row)
        assert "index row" in str(caught.value), caught.value
        assert str(caught.value).startswith("PostgreSQL refused a statement: "), caught.value
    finally:
        db.release()


def test_a_pool_recovers_after_a_server_restart() -> None:
    with private_postgres() as server, sql_backend(server.url) as backend:
        first = started(backend)
        # Restarted while idle: the first unit meets dead pooled connections,
        # which are replaced, and succeeds.
        server.stop()
        server.start()
        backend.on_step_result(first, "a", {"x": 1}, 0)
        assert backend.store.load(first).status is WorkflowStatus.COMPLETE
        # Down: BackendUnavailable in well under a second, saying why.
        server.stop()
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            backend.create(ONE_STEP, {})
        assert time.monotonic() - t0 < 3
        assert "connection refused" in str(caught.value) or "lost" in str(caught.value)
        # Back: the next call works.
        server.start()
        second = started(backend)
        backend.on_step_result(second, "a", {"x": 2}, 0)
        assert backend.store.load(second).status is WorkflowStatus.COMPLETE


# -- MariaDB ---------------------------------------------------------------------------


def test_mariadb_packet_limit_names_the_limit_and_the_server(mysql_url: str) -> None:
    with sql_backend(mysql_url) as backend:
        engine = backend.store.engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            limit = int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one())
            server = "MariaDB" if "mariadb" in str(
                conn.execute(text("SELECT VERSION()")).scalar()).lower() else "MySQL"
        if limit > 64 * 1024 * 1024:
            pytest.skip(f"max_allowed_packet is {limit:,} bytes; too big to exceed here")
        wf_id = started(backend)
        with pytest.raises(PayloadTooLarge) as caught:
            backend.on_step_result(wf_id, "a", {"blob": "x" * (limit + 1024 * 1024)}, 0)
        message = str(caught.value)
        assert message.startswith(f"{server} refused a "), message
        assert f"max_allowed_packet is {limit // (1024 * 1024)} MB" in message, message
        assert caught.value.backend == server
        assert "died or hung" not in message and "unreachable" not in message
        # The server dropped that connection; the next unit gets another.
        backend.on_step_result(wf_id, "a", {"small": 1}, 0)
        assert backend.store.load(wf_id).status is WorkflowStatus.COMPLETE


def test_a_worker_fails_the_step_when_mariadb_refuses_its_output(mysql_url: str) -> None:
    """The whole path: a worker's result over max_allowed_packet fails the attempt
    with an error naming the limit and the server, not "the worker died or hung".

    Needs the worker to turn ``RecordTooLarge`` from applying a result into an
    error output for that run (the worker loop's part of issue 7).
    """
    from runfox.worker import Worker

    with sql_backend(mysql_url, lease=1.0) as backend:
        engine = backend.store.engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            limit = int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one())
        if limit > 64 * 1024 * 1024:
            pytest.skip(f"max_allowed_packet is {limit:,} bytes; too big to exceed here")
        wf_id = backend.create(ONE_STEP, {})
        backend.apply_and_advance(wf_id)
        worker = Worker(backend, lambda fn, inputs: {"blob": "x" * (limit + 1024 * 1024)},
                        lease=1.0, poll_interval=0.05, sweep_interval=0.5)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        try:
            deadline = time.monotonic() + 30
            while not backend.store.load(wf_id).status.is_terminal:
                assert time.monotonic() < deadline, backend.store.load(wf_id).to_dict()
                time.sleep(0.1)
        finally:
            worker.stop(release=True)
            runner.join(timeout=10)
        record = backend.store.load(wf_id)
        assert record.status is WorkflowStatus.FAILED
        error = record.steps["a"].error or {}
        assert "max_allowed_packet" in str(error.get("message")), error
        assert "died or hung" not in str(error.get("message")), error
