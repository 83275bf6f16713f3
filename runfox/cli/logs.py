"""Log output for the long-running commands (``runfox worker``, ``runfox scheduler``).

A worker logs one INFO line per job. Written one ``write`` at a time to a pipe
(journald, docker, a supervisor, a test harness), every line wakes the reader
and costs a system call: measured at about a fifth of a busy worker's
throughput on SQLite. ``BatchedHandler`` collects lines and writes them
together at most ``interval`` seconds later; a WARNING or worse, and a full
batch, are written at once, and so is everything pending when logging shuts
down (``logging.shutdown`` flushes handlers at exit). Lines can only be lost
with the process itself (SIGKILL), and then at most ``interval`` of INFO lines.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

__all__ = ["BatchedHandler", "lean_records"]

def lean_records() -> None:
    """Make log records without the caller's file and line, thread and process
    names: the CLI's format shows none of them, and looking up the caller walks
    the stack on every record (the Python logging HOWTO's "Optimization")."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


#: Lines written at once when a batch reaches this many.
BATCH_LINES = 512


class BatchedHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """A ``StreamHandler`` that writes INFO and DEBUG lines in batches."""

    def __init__(self, stream: TextIO, interval: float = 0.2) -> None:
        super().__init__(stream)
        self.interval = interval
        self._pending: list[str] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None  # started by the first batched line

    def emit(self, record: logging.LogRecord) -> None:
        # ``Handler.handle`` holds ``self.lock`` around this call.
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or len(self._pending) >= BATCH_LINES:
            self._write()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="runfox-logs",
                                            daemon=True)
            self._thread.start()
        self._wake.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        """Write what is pending (the lock is held)."""
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stream: as StreamHandler, do not raise
            pass

    def _serve(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)  # gather the lines of this interval
            self._wake.clear()
            self.flush()
