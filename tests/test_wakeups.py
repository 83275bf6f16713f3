"""Idle workers are woken when jobs are queued, instead of waiting out their poll.

Each worker here waits 30 s after every claim that found nothing (and sweeps
and fires schedules rarely), so a job it starts within a few seconds of its dispatch was started
because the runner woke it: in-process for the memory runner and for two SQL
runners of one process on one database, through ``PRAGMA data_version`` on
SQLite and ``LISTEN``/``NOTIFY`` on PostgreSQL (there the dispatching runner's
URL differs, so only the other connection's commit can reach the worker). The
PostgreSQL listener must also come back after its connection is killed. Bounds
are generous (10 s against a 30 s poll): the tests check that the wake-up
happens, not how fast.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqldb import scratch_database

import runfox as rfx
from runfox import worker as worker_module
from runfox.backend import Backend
from runfox.backend.runner import InProcessRunner
from runfox.backend.sql import listen, parts_from_url
from runfox.backend.sql.listen import signal_for
from runfox.results import DispatchJob
from runfox.worker import Worker

ONE_STEP = {"name": "one", "steps": [{"id": "only", "fn": "stamp"}]}
SOON = 10.0  # seconds; the worker's poll is 30 s


def stamp(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"started": time.time()}


@pytest.fixture(autouse=True)
def _slow_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every idle wait of a worker is its whole ``poll_interval`` (no short waits
    after work), so only a wake-up can start a job sooner."""
    monkeypatch.setattr(worker_module, "POLL_FIRST", 30.0)


@contextlib.contextmanager
def idle_worker(backend: Backend) -> Iterator[Worker]:
    """A slow-polling worker on ``backend`` in a thread, stopped when the block ends."""
    worker = Worker(backend, stamp, poll_interval=30.0, sweep_interval=60.0,
                    schedule_interval=None, register=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # its first claims found nothing: it is in a long wait now
        yield worker
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive(), "the worker did not stop"
    assert worker.stats.failed == 0


@contextlib.contextmanager
def sqlite_worker_and_client(path: Path) -> Iterator[Backend]:
    """An idle worker on the SQLite file ``path``, listening, and a client Backend
    on it under another URL: the client's dispatches do not fire the worker's
    in-process signal, so only the watcher can wake the worker."""
    url = f"sqlite:///{path}"
    store, runner = parts_from_url(url)
    client_store, client_runner = parts_from_url(f"{url}?timeout=20")
    try:
        with idle_worker(Backend(store=store, runner=runner)):
            _listening(url)
            yield Backend(store=client_store, runner=client_runner)
    finally:
        for part in (store, runner, client_store, client_runner):
            part.close()


def started_within(backend: Backend, seconds: float) -> float:
    """Dispatch a one-step workflow; seconds until its job started (fails after ``seconds``)."""
    wf_id = backend.create(rfx.load_spec(ONE_STEP), {})
    sent = time.time()
    backend.apply_and_advance(wf_id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record = backend.load(wf_id)
        if record.status.value == "complete":
            return float(record.steps["only"].output["started"]) - sent
        time.sleep(0.02)
    raise AssertionError(f"the job of {wf_id} did not start within {seconds:g}s of its "
                         "dispatch: the idle worker was not woken")


def test_the_memory_runner_wakes_an_idle_worker() -> None:
    backend = Backend(runner=InProcessRunner())
    with idle_worker(backend):
        for _ in range(3):
            assert started_within(backend, SOON) < SOON


def test_a_watch_ends_when_undone() -> None:
    runner = InProcessRunner()
    calls: list[int] = []
    undo = runner.watch_jobs(lambda: calls.append(1))
    runner.dispatch("wf", [DispatchJob("wf", "a", "f", {})])
    undo()
    runner.dispatch("wf", [DispatchJob("wf", "b", "f", {})])
    assert calls == [1]


@pytest.mark.parametrize("kind", ["sqlite", "mysql"])
def test_sql_runners_of_one_process_wake_its_idle_worker(kind: str, tmp_path: Path) -> None:
    with scratch_database(kind, tmp_path) as url:
        store, runner = parts_from_url(url)
        client_store, client_runner = parts_from_url(url)  # engines of their own
        try:
            with idle_worker(Backend(store=store, runner=runner)):
                client = Backend(store=client_store, runner=client_runner)
                for _ in range(2):
                    assert started_within(client, SOON) < SOON
        finally:
            for part in (store, runner, client_store, client_runner):
                part.close()


def test_another_connection_s_commit_wakes_an_idle_sqlite_worker(tmp_path: Path) -> None:
    """The client's URL differs, so its dispatches do not fire the worker's
    in-process signal: only the ``data_version`` watcher can wake the worker."""
    with sqlite_worker_and_client(tmp_path / "wake.db") as client:
        for _ in range(3):
            assert started_within(client, SOON) < SOON


def _listening(url: str, timeout: float = 10.0) -> None:
    signal = signal_for(create_engine(url))
    deadline = time.monotonic() + timeout
    while not signal.listening:
        assert time.monotonic() < deadline, "the listener did not connect"
        time.sleep(0.02)


def test_postgresql_notify_wakes_an_idle_worker_and_survives_a_lost_connection(
        tmp_path: Path) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        # The client's URL differs, so its dispatches do not fire the worker's
        # in-process signal: only NOTIFY can wake the worker.
        client_url = make_url(url).update_query_dict(
            {"application_name": "runfox-test-client"}).render_as_string(hide_password=False)
        store, runner = parts_from_url(url)
        client_store, client_runner = parts_from_url(client_url)
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with idle_worker(Backend(store=store, runner=runner)):
                _listening(url)
                client = Backend(store=client_store, runner=client_runner)
                for _ in range(2):
                    assert started_within(client, SOON) < SOON
                # Kill the listener's connection (what a server restart does to it).
                with admin.connect() as conn:
                    killed = conn.execute(text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'LISTEN%'")).all()
                assert killed, "no listening connection was found"
                time.sleep(0.3)
                _listening(url)
                for _ in range(2):
                    assert started_within(client, SOON) < SOON
        finally:
            admin.dispose()
            for part in (store, runner, client_store, client_runner):
                part.close()


def _switches(native_id: int) -> int:
    """Context switches so far of this process's thread ``native_id`` (Linux)."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def _thread(name: str) -> threading.Thread:
    found = [t for t in threading.enumerate() if t.name == name]
    assert len(found) == 1, [t.name for t in threading.enumerate()]
    return found[0]


def _wakeups(thread: threading.Thread, seconds: float) -> int:
    assert thread.native_id is not None
    before = _switches(thread.native_id)
    time.sleep(seconds)
    return _switches(thread.native_id) - before


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(),
                                reason="counts context switches in /proc")


@needs_proc
@pytest.mark.parametrize("inotify", [True, False])
def test_the_sqlite_watcher_backs_off_while_nothing_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inotify: bool) -> None:
    """A quiet database is looked at every 0.5 s at most, not every 50 ms (with
    ``inotify``, when its files are written, and every 2 s), and a commit after
    the quiet spell still wakes the worker within that."""
    if not inotify:
        def unavailable(directory: Path) -> None:
            raise OSError("no inotify in this test")
        monkeypatch.setattr(listen, "_FileWrites", unavailable)
    elif sys.platform.startswith("linux"):
        listen._FileWrites(tmp_path).close()  # installed with the sql extra: not a fallback
    with sqlite_worker_and_client(tmp_path / "quiet.db") as client:
        time.sleep(2.0)  # backed off by now
        # 4 looks in 2 s (40 at 50 ms); a few more for the GIL and the scheduler.
        assert _wakeups(_thread("runfox-listen"), 2.0) <= 12
        # The longest look without inotify, and slack (with it: when written).
        assert started_within(client, SOON) < (0.5 if inotify else 0.5 + 1.0)


@needs_proc
def test_the_postgresql_listener_sleeps_until_a_notification(tmp_path: Path) -> None:
    """Between notifications the listener thread sleeps in ``select`` (psycopg's
    ``notifies(timeout=...)`` would wake it ten times a second); stopping it is
    still immediate."""
    with scratch_database("postgresql", tmp_path) as url:
        store, runner = parts_from_url(url)
        try:
            with idle_worker(Backend(store=store, runner=runner)):
                _listening(url)
                listener = _thread("runfox-listen")
                assert _wakeups(listener, 2.0) <= 4  # was about 20
                assert started_within(Backend(store=store, runner=runner), SOON) < SOON
            listener.join(2.0)  # the worker's watch was undone: the thread ends at once
            assert not listener.is_alive()
        finally:
            store.close()
            runner.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")
def test_file_writes_are_heard_only_while_armed(tmp_path: Path) -> None:
    """The watcher arms its inotify watch only while the database is quiet: an
    armed watch costs every writer in the directory an event per write."""
    import select

    writes = listen._FileWrites(tmp_path)
    try:
        def heard() -> bool:
            return bool(select.select([writes.fileno()], [], [], 0.2)[0])

        assert writes.armed  # armed when made
        (tmp_path / "a").write_bytes(b"x")
        assert heard()
        writes.clear()
        assert not heard()
        writes.disarm()
        assert not writes.armed
        (tmp_path / "a").write_bytes(b"y")
        assert not heard()  # a write while disarmed makes no event
        writes.arm()
        (tmp_path / "a").write_bytes(b"z")
        assert heard()
    finally:
        writes.close()
