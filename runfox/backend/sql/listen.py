"""Waking idle workers when jobs are queued (``SqlRunner.watch_jobs``).

One ``JobSignal`` per database per process holds the wake-up callbacks of the
workers watching that database:

- every ``SqlRunner`` of the process on that database fires it after it queued
  jobs (``dispatch``, ``release``), so a worker in the same process starts a
  job the moment it is dispatched, on every database;
- on PostgreSQL a dispatch also sends ``NOTIFY runfox_jobs`` in its unit of
  work (so it is delivered when that commits), and while anyone watches, one
  thread per signal holds a connection of its own that ``LISTEN``s on the
  channel and fires the signal for each notification. A dispatch in any
  process then wakes every idle worker within a few milliseconds.

- SQLite has no notifications, but a connection's ``PRAGMA data_version``
  changes when any other connection commits: a thread looks at it (no lock, no
  disk read) and fires the signal on a change, so an idle worker also hears
  other processes' dispatches (and, harmlessly, their other writes). It looks
  every 25 ms after a change; while nothing changes, on Linux it looks when a
  file in the database's directory is written (``inotify``: the commit's write
  to the WAL), and otherwise every 0.1 s doubling to 2 s; without ``inotify``
  (other systems), every 25 ms doubling to 0.5 s, so there the first dispatch
  after a quiet spell is heard up to 0.5 s late.
  MariaDB has nothing of the kind: there, other processes' jobs are found by
  polling.

The signal is a hint: workers still poll (with backoff), because a job also
becomes claimable when a lease runs out. The listener survives the database
going away: it logs one WARNING, reconnects with capped, jittered backoff (0.2 s
doubling to 30 s), logs one INFO when it listens again, and then fires the
signal once, since jobs may have been dispatched while it was deaf. A
connection that stays quiet is checked with ``SELECT 1`` every
``KEEPALIVE`` seconds, so a silently dropped one is noticed too.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from ...urlmask import mask_url, url_secrets
from .dialects import JOBS_CHANNEL

__all__ = ["JobSignal", "Watch", "signal_for", "watchable"]

logger = logging.getLogger("runfox.backend.sql")

Wake = Callable[[], None]

#: Once the socket has something: how long psycopg reads notifications for.
DRAIN = 0.01
#: Seconds without a notification after which the listener checks its connection.
KEEPALIVE = 30.0
#: Seconds between looks at an SQLite file's ``data_version``: the first after a
#: change, and the longest, reached by doubling while nothing changes.
SQLITE_CHECK = 0.025
SQLITE_CHECK_MAX = 0.5
#: With ``inotify`` telling when the database's files are written: the longest
#: wait between looks while nothing is written (a safety net).
SQLITE_CHECK_QUIET = 2.0
#: Reconnect backoff: first and longest wait.
FIRST_DELAY, MAX_DELAY = 0.2, 30.0


class JobSignal:
    """The wake-up callbacks of the workers watching one database, in this process."""

    def __init__(self, url: str) -> None:
        self._display_url = mask_url(url)
        self._secrets = tuple(s for s in url_secrets(url) if s)
        self._lock = threading.Lock()
        self._wakes: dict[int, Wake] = {}
        self._next = 0
        self._listener: _Listener | None = None

    def add(self, wake: Wake, listen_with: Engine | None = None) -> Watch:
        """Call ``wake`` whenever the signal fires, until the returned ``Watch`` is
        called. ``listen_with``: an engine to hear other processes through (see
        ``watchable``; its thread starts with the first such watcher and stops
        with the last)."""
        with self._lock:
            number = self._next
            self._next += 1
            self._wakes[number] = wake
            if listen_with is not None and self._listener is None:
                kind = _SqliteWatcher if listen_with.dialect.name == "sqlite" else _Listener
                self._listener = kind(listen_with, self, self._display_url, self._secrets)

        def remove() -> None:
            with self._lock:
                self._wakes.pop(number, None)
                listener = self._listener if not self._wakes else None
                if listener is not None:
                    self._listener = None
            if listener is not None:
                listener.stop()

        return Watch(remove, self if listen_with is not None else None)

    @property
    def watched(self) -> bool:
        return bool(self._wakes)

    @property
    def listening(self) -> bool:
        """Whether a listener is connected and listening now."""
        listener = self._listener
        return listener is not None and listener.listening

    def fire(self) -> None:
        """Call every watcher's ``wake`` (each must be quick and must not block)."""
        for wake in list(self._wakes.values()):
            try:
                wake()
            except Exception:  # a watcher's bug must not stop a dispatch
                logger.debug("a job wake-up callback failed", exc_info=True)


class Watch:
    """The undo of ``JobSignal.add`` (call it to stop watching), which also says
    whether the watcher hears other processes' dispatches now (``listening``):
    a worker polls less often while it does (``runfox.worker``)."""

    def __init__(self, remove: Callable[[], None], signal: JobSignal | None) -> None:
        self._remove = remove
        self._signal = signal

    def __call__(self) -> None:
        self._remove()

    @property
    def listening(self) -> bool:
        """Whether a listener of other processes is connected now."""
        return self._signal is not None and self._signal.listening


_SIGNALS: dict[str, JobSignal] = {}
_SIGNALS_LOCK = threading.Lock()


def signal_for(engine: Engine) -> JobSignal:
    """The process's signal for the database ``engine`` connects to (by URL, so
    runners with engines of their own on one database share it)."""
    key = engine.url.render_as_string(hide_password=False)
    with _SIGNALS_LOCK:
        signal = _SIGNALS.get(key)
        if signal is None:
            signal = _SIGNALS[key] = JobSignal(key)
        return signal


class _Listener:
    """A thread ``LISTEN``ing on ``JOBS_CHANNEL`` over a connection of its own."""

    def __init__(self, engine: Engine, signal: JobSignal, display_url: str,
                 secrets: tuple[str, ...]) -> None:
        self._engine = engine
        self._secrets = secrets
        self._signal = signal
        self._display_url = display_url
        self._stop = threading.Event()
        # Rung by ``stop()`` so a ``select`` on the connection ends at once.
        self._bell, self._ringer = socket.socketpair()
        self._bell.setblocking(False)
        self._ringer.setblocking(False)
        self.listening = False
        self._thread = threading.Thread(target=self._run, name="runfox-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (the thread ends at once, or after the statement it
        runs); does not wait for it."""
        self._stop.set()
        with contextlib.suppress(OSError):  # full, or closed by the thread that ended
            self._ringer.send(b"\0")

    def _connect(self) -> Any:
        # From the engine, so its connect arguments and events apply; detached
        # from the pool, which must not hand this connection to anyone else, and
        # closed by the driver (the pool would try to roll a dead one back).
        raw = self._engine.raw_connection()
        conn: Any = raw.driver_connection  # before detach() forgets it
        raw.detach()
        try:
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"LISTEN {JOBS_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self, conn: Any) -> None:
        """Fire the signal per notification until stopped; raise if the connection fails.

        The thread sleeps in ``select`` on the connection's socket and on the
        stop bell, until the next keepalive at the latest (psycopg's own
        ``notifies(timeout=...)`` wakes every 0.1 s to look for interrupts), and
        reads notifications only once something arrived, or after a keepalive
        (whose reply may have brought some along)."""
        quiet_since = time.monotonic()
        drain = True  # notifications may have arrived with LISTEN's reply
        while not self._stop.is_set():
            if not drain:
                wait = max(0.0, quiet_since + KEEPALIVE - time.monotonic())
                ready = select.select([conn.fileno(), self._bell], [], [], wait)[0]
                drain = conn.fileno() in ready
            heard = False
            if drain:
                drain = False
                for _ in conn.notifies(timeout=DRAIN):
                    heard = True
                    self._signal.fire()
                    if self._stop.is_set():
                        break
            if heard:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE:
                conn.execute("SELECT 1")
                quiet_since = time.monotonic()
                drain = True

    def _run(self) -> None:
        delay = FIRST_DELAY
        down_since: float | None = None
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                self.listening = True
                if down_since is not None:
                    logger.info("listening for new jobs on %s again after %.1fs",
                                self._display_url, time.monotonic() - down_since)
                    down_since = None
                delay = FIRST_DELAY
                self._signal.fire()  # jobs may have been queued while nobody listened
                self._serve(conn)
            except Exception as exc:
                self.listening = False
                reason = " ".join(str(exc).split()) or type(exc).__name__
                for secret in self._secrets:
                    reason = reason.replace(secret, "***")
                if down_since is None:
                    down_since = time.monotonic()
                    logger.warning("cannot listen for new jobs on %s (%s); idle workers poll "
                                   "until it answers again", self._display_url, reason)
                else:
                    logger.debug("still cannot listen for new jobs: %s", reason)
                self._stop.wait(random.uniform(delay / 2, delay))
                delay = min(MAX_DELAY, delay * 2)
            finally:
                self.listening = False
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        logger.debug("closing the listening connection failed", exc_info=True)
        self._bell.close()
        self._ringer.close()


class _FileWrites:
    """Writes to the files of a directory on this host (an SQLite commit writes
    the database or its WAL), told by Linux ``inotify`` through the
    ``inotify_simple`` package: a descriptor that becomes readable on a write.
    ``OSError`` where there is none (another system, the package missing, or
    no inotify instance left).

    Heard only while ``armed``: a watch makes the kernel queue an event on every
    write any process makes there (dozens per commit), which a busy database
    would pay for on its hot path; the watcher arms it only while nothing changes.
    """

    def __init__(self, directory: Path) -> None:
        try:
            from inotify_simple import INotify, flags
        except ImportError as exc:  # not Linux, or installed without the sql extra
            raise OSError(f"inotify_simple is not available ({exc})") from exc
        try:
            self._inotify = INotify(nonblocking=True)
        except (AttributeError, OSError) as exc:  # AttributeError: a libc without inotify
            raise OSError(f"no inotify here ({exc})") from exc
        self._directory, self._mask = directory, flags.MODIFY
        self._watch: int | None = None
        try:
            self.arm()
        except OSError:
            self._inotify.close()
            raise

    @property
    def armed(self) -> bool:
        return self._watch is not None

    def arm(self) -> None:
        """Hear writes from now on."""
        if self._watch is None:
            self._watch = self._inotify.add_watch(self._directory, self._mask)

    def disarm(self) -> None:
        """Stop hearing writes (and forget those heard)."""
        if self._watch is not None:
            watch, self._watch = self._watch, None
            with contextlib.suppress(OSError):  # the directory went away: nothing to remove
                self._inotify.rm_watch(watch)
            self.clear()

    def fileno(self) -> int:
        return self._inotify.fileno()

    def clear(self) -> None:
        """Read and forget the events so far."""
        self._inotify.read(timeout=0)

    def close(self) -> None:
        self._inotify.close()


class _SqliteWatcher(_Listener):
    """SQLite has no notifications, but ``PRAGMA data_version`` on a connection
    changes whenever another connection (any process) commits a change: reading
    it is a look at the shared WAL index, no lock and no disk read. Looked at
    ``SQLITE_CHECK`` seconds after a change, and while nothing changes when a
    file of the database's directory is written (``inotify``, Linux) or,
    without that, backing off to ``SQLITE_CHECK_MAX`` (with it, to
    ``SQLITE_CHECK_QUIET``, in case a write goes unseen). A change fires the
    signal, and the worker's claim (which first looks without the write lock,
    see ``SqlRunner``) decides whether it was a job."""

    def _connect(self) -> Any:
        uri = Path(str(self._engine.url.database)).resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=1.0)
        try:
            conn.execute("PRAGMA data_version").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self, conn: Any) -> None:
        try:
            writes: _FileWrites | None = _FileWrites(
                Path(str(self._engine.url.database)).resolve().parent)
        except OSError as exc:
            logger.debug("the SQLite watcher polls with backoff: %s", exc)
            writes = None
        try:
            self._watch(conn, writes)
        finally:
            if writes is not None:
                writes.close()

    def _watch(self, conn: Any, writes: _FileWrites | None) -> None:
        longest = SQLITE_CHECK_MAX if writes is None else SQLITE_CHECK_QUIET
        seen = conn.execute("PRAGMA data_version").fetchone()[0]
        pause = SQLITE_CHECK
        soon = False  # look again after SQLITE_CHECK, not on a write
        look_now = False  # writes were just armed: look once more at once
        while True:
            written = False
            if look_now:
                look_now = False
            elif writes is None or soon or not writes.armed:
                if self._stop.wait(pause if writes is None else SQLITE_CHECK):
                    return
            else:
                ready = select.select([writes.fileno(), self._bell.fileno()], [], [], pause)[0]
                if self._bell.fileno() in ready or self._stop.is_set():
                    return
                written = writes.fileno() in ready
                if written:
                    writes.clear()
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != seen:
                seen = version
                pause = SQLITE_CHECK
                soon = True  # more usually follow: a busy database is polled, not
                if writes is not None:  # looked at per write (nor heard: see _FileWrites)
                    writes.disarm()
                self._signal.fire()
            elif writes is not None and not writes.armed:
                # Quiet now: hear writes, then look again, so a commit made
                # between this look and the watch is not missed.
                writes.arm()
                soon, look_now = False, True
            else:
                pause = min(pause * 2, longest)
                # A write whose commit was not visible yet (its WAL index is
                # updated after the write): look once more shortly.
                soon = written


def watchable(engine: Engine) -> bool:
    """Whether another process's commits can be heard on ``engine``'s database:
    PostgreSQL (``LISTEN``), or an SQLite file (``PRAGMA data_version``)."""
    if engine.dialect.name == "postgresql":
        return True
    path = engine.url.database
    return (engine.dialect.name == "sqlite" and bool(path) and path != ":memory:"
            and not str(path).startswith("file:"))
