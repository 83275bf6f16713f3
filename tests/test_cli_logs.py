"""The serving commands' log output (``runfox.cli.logs``): INFO lines written in
batches, a WARNING at once, nothing pending lost at shutdown."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from runfox.backend import Backend
from runfox.backend.sql import parts_from_url
from runfox.cli.logs import BATCH_LINES, BatchedHandler


class CountingStream(io.StringIO):
    """A stream that counts its writes (one per batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"runfox.test.logs.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_info_lines_are_written_together_within_the_interval() -> None:
    stream = CountingStream()
    handler = BatchedHandler(stream, interval=0.2)
    log = _logger(handler)
    for n in range(50):
        log.info("job %d ok", n)
    assert stream.getvalue() == ""  # nothing yet: the batch waits for its interval
    deadline = time.monotonic() + 5
    while stream.getvalue().count("\n") < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stream.getvalue().splitlines() == [f"job {n} ok" for n in range(50)]
    assert stream.writes <= 3  # one batch (or a few, if the interval fell inside)
    handler.close()


def test_a_warning_and_a_full_batch_are_written_at_once() -> None:
    stream = CountingStream()
    handler = BatchedHandler(stream, interval=60.0)
    log = _logger(handler)
    log.info("before")
    log.warning("lost the lease")
    assert stream.getvalue().splitlines() == ["before", "lost the lease"]
    for n in range(BATCH_LINES):
        log.info("job %d", n)
    assert stream.getvalue().count("\n") == 2 + BATCH_LINES
    log.info("pending")
    handler.flush()  # what logging.shutdown does at exit
    assert stream.getvalue().splitlines()[-1] == "pending"
    handler.close()


def test_a_worker_process_logs_its_last_lines_when_it_stops(tmp_path: Path) -> None:
    # ``runfox worker --max-jobs``: its job line and the "stopped" line come out
    # although it exits well inside the batching interval of its last line.
    url = f"sqlite:///{tmp_path}/logs.db"
    store, runner = parts_from_url(url)
    try:
        backend = Backend(store=store, runner=runner)
        backend.start({"steps": [{"id": "a", "fn": "sleep", "input": {"seconds": 0}}]})
    finally:
        runner.close()
        store.close()
    done = subprocess.run(
        [sys.executable, "-m", "runfox.cli", "worker", "--backend", url, "--executor",
         "executors:arithmetic", "--max-jobs", "1", "--poll-interval", "0.05"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), str(Path(__file__).parent.parent)])})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(" step a attempt 1: ok in " in line for line in lines), lines
    assert "stopped after 1 jobs" in lines[-1], lines
