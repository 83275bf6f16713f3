"""Several processes on one database, on SQLite, PostgreSQL and MariaDB.

- 3 ``runfox worker`` processes finish 50 workflows of 10 steps started with
  ``runfox start``: exact outcomes, and no step executed twice.
- A worker killed with SIGKILL in the middle of a job: the job comes back when its
  lease runs out, every workflow completes, no result is applied twice.
- 8 processes apply the results of one 50-wide fan-out at once: none is lost.

Each test gets a fresh database. The executor (``cli_executor``) appends a line
per call to a log file, which is how executions are counted.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_executor import apply_share, wide_spec
from contract import fan_spec
from sqldb import KINDS, scratch_database

from runfox.backend import Backend
from runfox.backend.sql import SqlStore, parts_from_url
from runfox.results import Dispatch
from runfox.status import StepStatus, WorkflowStatus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "runfox.cli"]


@pytest.fixture(params=KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as url:
        yield url


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOX_")}
    env["PYTHONPATH"] = f"{ROOT / 'tests'}{os.pathsep}{ROOT}"
    env["RUNFOX_TEST_LOG"] = str(tmp_path / "calls.log")
    return env


def start_workflows(url: str, spec: Path, env: dict[str, str], count: int,
                    *extra: str) -> dict[str, int]:
    """``runfox start`` ``count`` times (n = 1..count); returns id -> n."""
    def start(n: int) -> tuple[str, int]:
        done = subprocess.run([*CLI, "start", str(spec), "--backend", url, "--input",
                               f"n={n}", "--input", f"tag=w{n}", *extra], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1], n

    with cf.ThreadPoolExecutor(3) as pool:
        return dict(pool.map(start, range(1, count + 1)))


def start_workers(url: str, env: dict[str, str], count: int, lease: float
                  ) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([*CLI, "worker", "--backend", url, "--executor",
                              "cli_executor:execute", "--concurrency", "2", "--lease",
                              str(lease), "--poll-interval", "0.05", "--sweep-interval", "2"],
                             env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(count)]


def stop_workers(workers: list[subprocess.Popen[str]]) -> list[str]:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    errors = []
    for worker in workers:
        try:
            _, err = worker.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, err = worker.communicate()
        errors.append(err)
    return errors


def wait_until_finished(store: SqlStore, ids: dict[str, int], timeout: float = 420.0) -> None:
    """Until every execution of ``ids`` ended (one queued with ``--queue`` counts
    as running until a worker created it)."""
    def state(key: str) -> Any:
        try:
            return store.load(key)
        except KeyError:
            return None

    deadline = time.monotonic() + timeout
    while True:
        running = [i for i in ids if (r := state(i)) is None or not r.status.is_terminal]
        if not running:
            return
        if time.monotonic() > deadline:
            first = state(running[0])
            raise AssertionError(f"{len(running)} workflows still running, e.g. "
                                 f"{first.to_dict() if first else 'one not created yet'}")
        time.sleep(0.5)


def executions(tmp_path: Path) -> collections.Counter[tuple[str, str, str]]:
    """(event, tag, step) -> how many times it was logged."""
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for line in (tmp_path / "calls.log").read_text().splitlines():
        _, event, tag, step = line.split()
        counts[(event, tag, step)] += 1
    return counts


def check_outcomes(store: SqlStore, ids: dict[str, int], width: int, lost: int = 0) -> None:
    """Every workflow complete with its exact total. Each step took one attempt (no
    result applied twice, none failed), except up to ``lost`` steps whose worker was
    killed: their first attempt is a ``WorkerLost`` and the second one completed."""
    retried = 0
    for wf_id, n in ids.items():
        record = store.load(wf_id)
        assert record.status is WorkflowStatus.COMPLETE, record.to_dict()
        assert record.outcome == {"total": n * sum(range(width + 1))}
        for step in record.steps.values():
            if (step.run_id, step.attempts) == (1, 2):
                retried += 1
                assert step.status is StepStatus.COMPLETE
                continue
            assert (step.status, step.run_id, step.attempts) == (StepStatus.COMPLETE, 0, 1)
    assert retried <= lost


def test_three_workers_finish_fifty_workflows_once_each(db_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "ten.yaml"
    spec.write_text(json.dumps(wide_spec(8)))  # 10 steps; JSON is YAML
    env = env_for(tmp_path)
    workers = start_workers(db_url, env, 3, lease=60)
    store = SqlStore(db_url)
    try:
        ids = start_workflows(db_url, spec, env, 50)
        wait_until_finished(store, ids)
        check_outcomes(store, ids, 8)
    finally:
        errors = stop_workers(workers)
        store.close()
    assert [w.returncode for w in workers] == [0, 0, 0], errors
    counts = executions(tmp_path)
    steps = [f"p{i}" for i in range(9)] + ["total"]
    expected = {(event, f"w{n}", step) for n in range(1, 51) for step in steps
                for event in ("start", "end")}
    assert set(counts) == expected
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1]


def test_three_workers_start_queued_workflows_once_each(db_url: str, tmp_path: Path) -> None:
    # ``runfox start --queue`` writes a start job only; the workers create the
    # executions (several start jobs claimed together go in one commit) and run
    # them: each execution once, each step once.
    spec = tmp_path / "four.yaml"
    spec.write_text(json.dumps(wide_spec(2)))  # 4 steps
    env = env_for(tmp_path)
    store = SqlStore(db_url)
    workers: list[subprocess.Popen[str]] = []
    try:
        ids = start_workflows(db_url, spec, env, 30, "--queue")
        with pytest.raises(KeyError):
            store.load(next(iter(ids)))  # no worker yet: only the start job is stored
        workers = start_workers(db_url, env, 3, lease=60)
        wait_until_finished(store, ids)
        check_outcomes(store, ids, 2)
        assert {store.load(i).workflow_execution_id for i in ids} == set(ids)
    finally:
        errors = stop_workers(workers)
        store.close()
    assert [w.returncode for w in workers] == [0, 0, 0], errors
    counts = executions(tmp_path)
    steps = ["p0", "p1", "p2", "total"]
    assert set(counts) == {(event, f"w{n}", step) for n in range(1, 31) for step in steps
                           for event in ("start", "end")}
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1]


def test_a_killed_workers_job_comes_back_after_its_lease(db_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text(json.dumps(wide_spec(3, fn="slow", seconds=1.5)))
    env = env_for(tmp_path)
    workers = start_workers(db_url, env, 3, lease=2)
    store = SqlStore(db_url)
    try:
        ids = start_workflows(db_url, spec, env, 6)
        by_pid = {w.pid: w for w in workers}
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline:
            log = tmp_path / "calls.log"
            lines = log.read_text().splitlines() if log.exists() else []
            running: collections.Counter[tuple[int, str, str]] = collections.Counter()
            for line in lines:
                pid, event, tag, step = line.split()
                running[(int(pid), tag, step)] += 1 if event == "start" else -1
            busy = [key for key, open_ in running.items() if open_ > 0 and
                    key[2] != "p0" and key[0] in by_pid]
            if busy:
                victim = busy[0]
            else:
                time.sleep(0.02)
        assert victim is not None, "no worker ever ran a slow job"
        by_pid[victim[0]].send_signal(signal.SIGKILL)
        wait_until_finished(store, ids)
        check_outcomes(store, ids, 3, lost=2)  # the victim ran two jobs at most
    finally:
        stop_workers(workers)
        store.close()
    counts = executions(tmp_path)
    _, tag, step = victim
    assert counts[("start", tag, step)] >= 2  # run again by another worker
    assert counts[("end", tag, step)] >= 1


def test_eight_processes_apply_a_fan_out_without_losing_a_result(db_url: str) -> None:
    store, runner = parts_from_url(db_url)
    backend = Backend(store=store, runner=runner)
    try:
        wf_id = backend.create(fan_spec(50), {"n": 2})
        backend.advance(wf_id)
        backend.on_step_result(wf_id, "root", {"n": 2}, 0)
        dispatch = backend.advance(wf_id)
        assert isinstance(dispatch, Dispatch) and len(dispatch.jobs) == 50
        jobs: list[dict[str, Any]] = [j.to_dict() for j in dispatch.jobs]
        context = multiprocessing.get_context("spawn")
        go = context.Event()
        children = [context.Process(target=apply_share, args=(db_url, wf_id, jobs[i::8], go))
                    for i in range(8)]
        for child in children:
            child.start()
        go.set()
        for child in children:
            child.join(timeout=300)
        assert [c.exitcode for c in children] == [0] * 8
        record = store.load(wf_id)
        assert sorted(k for k in record.state if k.startswith("k")) == sorted(
            f"k{i}" for i in range(50))
        assert record.state == {"n": 2, **{f"k{i}": 2 * i for i in range(50)}}
        assert all(record.steps[f"leaf{i}"].status is StepStatus.COMPLETE for i in range(50))
        assert record.ready == frozenset({"sink"})
    finally:
        runner.close()
        store.close()
