"""Schedules and idempotent starts with several processes, on SQLite and PostgreSQL.

- 8 ``runfox start --key K`` processes at once: one execution, every process
  prints its id.
- 3 ``runfox worker`` processes fire a schedule ``every: 1s`` for about 10 s;
  one is killed with SIGKILL half-way. The executions are within one of the fire
  times that came due, and no fire time has two executions (each execution's
  idempotency key names its fire time).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqldb import scratch_database

from runfox.backend import Backend
from runfox.backend.sql import parts_from_url
from runfox.backend.sql.schema import keys

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "runfox.cli"]
SPEC = "name: tick\nsteps:\n  - id: a\n    fn: echo\n"


@pytest.fixture(params=("sqlite", "postgresql"))
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOX_")}
    env["PYTHONPATH"] = f"{ROOT / 'tests'}{os.pathsep}{ROOT}"
    env["RUNFOX_TEST_LOG"] = str(tmp_path / "calls.log")
    return env


def open_backend(url: str) -> Backend:
    store, runner = parts_from_url(url)
    return Backend(store=store, runner=runner)


def test_eight_processes_starting_with_one_key_make_one_execution(
        db_url: str, env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    open_backend(db_url).store.close()  # tables exist before the race

    def start(_: int) -> str:
        done = subprocess.run([*CLI, "start", str(spec), "--key", "order-123",
                               "--backend", db_url], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    with cf.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(start, range(8)))
    assert len(set(ids)) == 1
    backend = open_backend(db_url)
    try:
        assert [s.workflow_execution_id for s in backend.store.list_executions()] == ids[:1]
    finally:
        backend.store.close()
        backend.runner.close()


def test_three_workers_fire_every_second_once_despite_a_sigkill(
        db_url: str, env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    added = subprocess.run([*CLI, "schedule", "add", "tick", str(spec), "--every", "1s",
                            "--backend", db_url], env=env, capture_output=True, text=True,
                           timeout=60)
    assert added.returncode == 0, added.stderr
    backend = open_backend(db_url)
    try:
        anchor = backend.store.schedules().get("tick").trigger["anchor"]  # type: ignore[union-attr]
        workers = [subprocess.Popen([*CLI, "worker", "--backend", db_url, "--executor",
                                     "cli_executor:execute", "--poll-interval", "0.05",
                                     "--schedule-interval", "0.2", "--sweep-interval", "2"],
                                    env=env, stderr=subprocess.DEVNULL)
                   for _ in range(3)]
        try:
            time.sleep(5)
            workers[0].send_signal(signal.SIGKILL)
            time.sleep(5)
            paused = subprocess.run([*CLI, "schedule", "pause", "tick", "--backend", db_url],
                                    env=env, capture_output=True, text=True, timeout=60)
            assert paused.returncode == 0, paused.stderr
            stopped_at = time.time()
            time.sleep(1.5)  # fires decided before the pause are started
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(10)
        with backend.store.engine.connect() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(select(keys.c.idempotency_key,
                                       keys.c.workflow_execution_id)).all()
        executions = [s.workflow_execution_id
                      for s in backend.store.list_executions(limit=10_000)]
        fire_keys = [key for key, _ in rows if key.startswith("schedule:tick:")]
        assert len(set(fire_keys)) == len(fire_keys) == len(executions)
        assert sorted(wf for _, wf in rows) == sorted(executions)  # one key per execution
        due = int(stopped_at - anchor)  # fire times anchor + 1, + 2, ... up to the pause
        assert due >= 8
        assert abs(len(executions) - due) <= 1, (len(executions), due)
    finally:
        backend.store.close()
        backend.runner.close()
