"""Helpers the multi-process tests share: a log line per executor call, and workers.

``append_line`` writes one line to ``$RUNFOX_TEST_LOG`` with one ``write`` on an
``O_APPEND`` descriptor, so lines from several processes never interleave.
``start_worker`` starts a ``runfox worker`` process with short intervals and its
stderr in a file (a pipe nobody reads would block a chatty worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "runfox.cli"]


def append_line(line: str) -> None:
    """Append ``line`` and a newline to ``$RUNFOX_TEST_LOG``; nothing when it is unset."""
    path = os.environ.get("RUNFOX_TEST_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def start_worker(url: str, env: dict[str, str], log: Path, executor: str, *,
                 concurrency: int, lease: float) -> subprocess.Popen[bytes]:
    """A ``runfox worker`` on ``url`` running ``executor``, stderr appended to ``log``."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [*CLI, "worker", "--backend", url, "--executor", executor,
             "--concurrency", str(concurrency), "--lease", str(lease), "--poll-interval",
             "0.05", "--sweep-interval", "1", "--stale-after", "5"],
            env=env, stdout=subprocess.DEVNULL, stderr=err)


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM every worker still running, wait for each, SIGKILL one that outlasts
    ``timeout``: what each multi-process test's ``finally`` does."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
