"""Chaos: workers killed at random, and a database server stopped mid-run.

- 100 workflows of 10 steps, 3 ``runfox worker`` processes on SQLite and on
  PostgreSQL (a fresh database each), one worker killed with SIGKILL every 1-2 s
  and replaced: every workflow completes with its exact outcome, and no result is
  applied twice.
- No supervisor: a private PostgreSQL server (started by the test with
  ``pg_ctl``, never the shared one) is stopped for 5 s in the middle of a run of
  100 workflows with 3 workers; every workflow completes once it is back, and the
  three workers are still the same live processes.

"No result applied twice" is checked on the records and on the executor's log
(``chaos_executor``): every step is complete with ``run_id == attempts - 1`` (one
run per attempt, none skipped or repeated); the output stored for a step carries
the nonce of an executor call for that step that finished; and the executor ran a
step at most once per attempt (a redelivered job whose lease ran out is a lost
worker, a failed attempt, not a second run of the same attempt).

Steps have ``max_attempts: 3``: a killed worker's job counts as a failed attempt
(``WorkerLost``), with the poison-job cap beyond the budget.

Each test is bounded by a hard alarm (``HARD_LIMIT``) besides its own deadline.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import proctools
import pytest
from chaos_executor import dag_spec, expected_total
from pgserver import PrivateServer, private_postgres
from sqldb import scratch_database

from runfox.backend import Backend
from runfox.backend.sql import SqlStore, parts_from_url
from runfox.errors import BackendError
from runfox.status import StepStatus, WorkflowStatus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = 100
HARD_LIMIT = 170  # seconds, per test
FINISH_WITHIN = 120  # seconds, from the first workflow started
LEASE = 3.0  # short, so killed workers' jobs come back within the test's time


class HardTimeout(Exception):
    """The test ran past ``HARD_LIMIT``."""


@pytest.fixture(autouse=True)
def hard_limit() -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise HardTimeout(f"chaos test ran over its hard limit of {HARD_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HARD_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOX_")}
    env["PYTHONPATH"] = f"{ROOT / 'tests'}{os.pathsep}{ROOT}"
    env["RUNFOX_TEST_LOG"] = str(tmp_path / "calls.log")
    return env


def start_worker(url: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return proctools.start_worker(url, env, log, "chaos_executor:execute", concurrency=2,
                                  lease=LEASE)


def stop_all(workers: list[subprocess.Popen[bytes]]) -> None:
    proctools.stop_workers(workers)


def start_workflows(url: str, count: int) -> dict[str, int]:
    """``count`` executions (n = 1..count), first jobs dispatched; id -> n."""
    store, runner = parts_from_url(url)
    backend = Backend(store=store, runner=runner)
    spec = dag_spec(seconds=0.05)
    ids = {}
    try:
        for n in range(1, count + 1):
            wf_id = backend.create(spec, {"n": n, "tag": f"w{n}"})
            backend.apply_and_advance(wf_id)
            ids[wf_id] = n
    finally:
        runner.close()
        store.close()
    return ids


def unfinished(store: SqlStore, ids: dict[str, int]) -> list[str]:
    try:
        return [i for i in ids if not store.load(i).status.is_terminal]
    except BackendError:  # the server may be down right now
        return list(ids)


def executor_calls(tmp_path: Path) -> tuple[collections.Counter[tuple[str, str]],
                                            dict[tuple[str, str], set[str]]]:
    """(tag, step) -> executor starts, and -> nonces of calls that finished."""
    starts: collections.Counter[tuple[str, str]] = collections.Counter()
    ended: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for line in (tmp_path / "calls.log").read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:  # a worker killed in the middle of a write
            continue
        _, event, tag, step, nonce = parts
        if event == "start":
            starts[(tag, step)] += 1
        else:
            ended[(tag, step)].add(nonce)
    return starts, ended


def check_all(store: SqlStore, ids: dict[str, int], tmp_path: Path) -> dict[str, Any]:
    """Exact outcomes and no result applied twice; returns a few counts."""
    starts, ended = executor_calls(tmp_path)
    problems: list[str] = []
    retried = 0
    for wf_id, n in ids.items():
        record = store.load(wf_id)
        tag = f"w{n}"
        if record.status is not WorkflowStatus.COMPLETE:
            problems.append(f"{tag}: {record.status.value}: {record.outcome}")
            continue
        if record.outcome != {"total": expected_total(n)}:
            problems.append(f"{tag}: outcome {record.outcome}")
        for step in record.steps.values():
            key = (tag, step.id)
            retried += step.attempts > 1
            if step.status is not StepStatus.COMPLETE or step.run_id != step.attempts - 1:
                problems.append(f"{tag}.{step.id}: {step.status.value} run {step.run_id} "
                                f"after {step.attempts} attempts")
            nonce = (step.output or {}).get(f"nonce_{step.id}")
            if nonce not in ended[key]:
                problems.append(f"{tag}.{step.id}: stored nonce {nonce!r} from no finished call")
            if starts[key] > step.attempts:
                problems.append(f"{tag}.{step.id}: executor ran {starts[key]} times in "
                                f"{step.attempts} attempt(s)")
    assert not problems, f"{len(problems)} problem(s): {problems[:20]}"
    return {"steps retried": retried, "executor calls": sum(starts.values())}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as url:
        yield url


def test_workers_killed_every_second_or_two(db_url: str, tmp_path: Path) -> None:
    env = env_for(tmp_path)
    log = tmp_path / "workers.log"
    workers = [start_worker(db_url, env, log) for _ in range(3)]
    killed = 0
    store = SqlStore(db_url)
    rng = random.Random(7)
    try:
        t0 = time.monotonic()
        ids = start_workflows(db_url, WORKFLOWS)
        next_kill = time.monotonic() + rng.uniform(1, 2)
        while unfinished(store, ids):
            now = time.monotonic()
            assert now - t0 < FINISH_WITHIN, (
                f"{len(unfinished(store, ids))} of {WORKFLOWS} unfinished after "
                f"{FINISH_WITHIN} s with {killed} kills; worker log tail: "
                f"{log.read_text()[-3000:]}")
            if now >= next_kill:
                victim = rng.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = start_worker(db_url, env, log)
                killed += 1
                next_kill = now + rng.uniform(1, 2)
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        print(f"\n{db_url.split(':')[0]}: {WORKFLOWS} workflows in {elapsed:.1f} s, "
              f"{killed} workers killed")
        assert killed >= 3
        print(check_all(store, ids, tmp_path))
    finally:
        stop_all(workers)
        store.close()


def test_a_private_postgres_stopped_for_five_seconds(tmp_path: Path) -> None:
    with private_postgres() as server:
        run_through_an_outage(server, tmp_path)


def run_through_an_outage(server: PrivateServer, tmp_path: Path) -> None:
    env = env_for(tmp_path)
    log = tmp_path / "workers.log"
    url = server.url
    workers = [start_worker(url, env, log) for _ in range(3)]
    store = SqlStore(url)
    stopped_at = restarted_at = None
    try:
        t0 = time.monotonic()
        ids = start_workflows(url, WORKFLOWS)
        while len(unfinished(store, ids)) > 0.6 * WORKFLOWS:
            assert time.monotonic() - t0 < 60, "the run never got going"
            time.sleep(0.1)
        server.stop("fast")
        stopped_at = time.monotonic() - t0
        time.sleep(5)
        server.start()
        restarted_at = time.monotonic() - t0
        alive_then = [w.poll() is None for w in workers]
        while unfinished(store, ids):
            assert time.monotonic() - t0 < FINISH_WITHIN, (
                f"{len(unfinished(store, ids))} of {WORKFLOWS} unfinished; workers "
                f"alive: {[w.poll() is None for w in workers]}; worker log tail: "
                f"{log.read_text()[-3000:]}")
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        alive = [w.poll() is None for w in workers]
        assert alive_then == alive == [True, True, True], (
            f"workers alive at restart {alive_then}, at the end {alive}: "
            f"{log.read_text()[-3000:]}")
        print(f"\nprivate postgres stopped at {stopped_at:.1f} s, back at "
              f"{restarted_at:.1f} s; all {WORKFLOWS} done at {elapsed:.1f} s")
        print(check_all(store, ids, tmp_path))
    finally:
        stop_all(workers)
        with contextlib.suppress(Exception):
            store.close()
    assert [w.returncode for w in workers] == [0, 0, 0], log.read_text()[-3000:]
