"""Invalidation and redrive across two backends on one SQLite file.

The per-backend behaviour (invalidate reruns exactly ``what_invalidates``, redrive
reruns only what did not complete, two racing redrives are one) is in
``runfox.testing.BackendContract``, which memory, SQLite, PostgreSQL, MariaDB and
DynamoDB run. Here: a second process's view (its own store on the same file)
invalidates or redrives, the first drives.
"""

from __future__ import annotations

from pathlib import Path

from runfox import Backend, Workflow
from runfox.backend.urls import parts_from_url
from runfox.results import Complete, Failed
from runfox.testing import CountingExecutor, chain_fan_spec


def _backend(url: str, executor: CountingExecutor | None = None) -> Backend:
    store, runner = parts_from_url(url)
    return Backend(store=store, runner=runner, executor=executor, poll_interval=0.01)


def test_invalidate_and_redrive_from_another_backend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runfox.db'}"
    counter = CountingExecutor()
    driver = _backend(url, counter)
    other = _backend(url)
    wf = Workflow.from_dict(chain_fan_spec(), driver, {"x": 0})
    assert isinstance(wf.run(timeout=60), Complete)
    counter.take()
    assert Workflow(wf.id, other).invalidate("c") == ["c", "d", "e", "f"]
    assert isinstance(wf.run(timeout=60), Complete)
    assert counter.take() == {"c": 1, "d": 1, "e": 1, "f": 1}

    counter.failing.add("a")
    assert Workflow(wf.id, other).invalidate("a") == ["a", "b", "c", "d", "e", "f"]
    assert isinstance(wf.run(timeout=60), Failed)
    counter.failing.clear()
    counter.take()
    assert Workflow(wf.id, other).redrive() == ["a", "b", "c", "d", "e", "f"]
    result = wf.run(timeout=60)
    assert isinstance(result, Complete) and result.outcome == {"d": 4, "e": 5, "f": 6}
    assert counter.take() == dict.fromkeys("abcdef", 1)
    for backend in (driver, other):
        backend.runner.close()
        backend.store.close()
