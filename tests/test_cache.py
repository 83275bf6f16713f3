"""The step cache beyond the shared suites: keys, purity, corrupt entries, a store
without a cache, the CLI, and the counting test across processes on one SQLite file.

The cache and rerun behaviour on every backend is in ``runfox.testing``
(``CacheContract``, ``BackendContract``), run by memory, SQLite, PostgreSQL, MariaDB
and DynamoDB.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from proctools import CLI
from sqlalchemy import update
from test_cli import child_env, cli, write_spec

from runfox import graph
from runfox.backend import Backend, InMemoryStore
from runfox.backend.sql import SqlStore
from runfox.backend.sql.schema import cache as cache_table
from runfox.cache import CacheEntry, CacheLookup, cache_key, is_fresh
from runfox.results import Complete, Dispatch, Pending
from runfox.testing import CountingExecutor, cached_chain_fan_spec, new_record
from runfox.workflow import Workflow

TESTS = Path(__file__).resolve().parent


def test_the_key_is_canonical_and_names_no_execution() -> None:
    one = cache_key("f", {"b": [1, {"y": 2, "x": 1}], "a": "é"}, 2)
    assert one == cache_key("f", {"a": "é", "b": [1, {"x": 1, "y": 2}]}, 2)
    assert len(one) == 64 and int(one, 16) >= 0
    assert one != cache_key("g", {"a": "é", "b": [1, {"x": 1, "y": 2}]}, 2)
    assert one != cache_key("f", {"a": "é", "b": [1, {"x": 1, "y": 2}]}, 3)
    assert cache_key("f", {"n": 1}) != cache_key("f", {"n": 1.5})
    assert cache_key("f", {}, None) != cache_key("f", {}, "None")


def test_freshness() -> None:
    assert is_fresh(100.0, 160.0, 60) and not is_fresh(100.0, 160.5, 60)
    assert is_fresh(0.0, 1e12, None)


def test_advance_asks_for_keys_and_stays_pure() -> None:
    record = new_record(cached_chain_fan_spec(), {"x": 0})
    lookup = CacheLookup()
    new, result = graph.advance(record, 1.0, cache=lookup)
    key_a = cache_key("a", {"x": 0})
    assert lookup.wanted == [key_a] and isinstance(result, Pending)
    assert new.steps["a"].status.value == "ready"  # left for the caller to look up
    lookup.wanted.clear()
    lookup.entries[key_a] = CacheEntry(key_a, "a", None, 0.5, {"v": 1})
    changes: list[graph.StateChange] = []
    again, result = graph.advance(new, 1.0, cache=lookup, changes=changes)
    assert again.steps["a"].cached and again.steps["a"].output == {"v": 1}
    assert lookup.wanted == [cache_key("b", {"x": 1})]  # the next one, in the same call
    assert [c[2] for c in changes] == [{"v": 1}]
    assert record.steps["a"].status.value == "ready"  # the argument is unchanged
    lookup.wanted.clear()
    lookup.entries[cache_key("b", {"x": 1})] = None  # a miss: claimed and dispatched
    third, result = graph.advance(again, 1.0, cache=lookup)
    assert isinstance(result, Dispatch) and [j.step_id for j in result.jobs] == ["b"]
    assert not third.steps["b"].cached


def test_a_store_without_a_cache_runs_cached_steps(caplog: pytest.LogCaptureFixture) -> None:
    class NoCache(InMemoryStore):
        def cache(self) -> None:  # type: ignore[override]
            return None

    counter = CountingExecutor()
    backend = Backend(store=NoCache(), executor=counter)
    assert backend.cache is None
    for _ in range(2):
        wf = Workflow.from_dict(cached_chain_fan_spec(), backend, inputs={"x": 0})
        with caplog.at_level(logging.WARNING, "runfox.backend"):
            assert isinstance(wf.run(timeout=10), Complete)
    assert counter.take() == dict.fromkeys("abcdef", 2)
    assert sum("keeps no cache" in r.message for r in caplog.records) == 1


def test_a_corrupt_entry_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        counter = CountingExecutor()
        backend = Backend(store=store, executor=counter)
        wf = Workflow.from_dict(cached_chain_fan_spec(), backend, inputs={"x": 0})
        assert isinstance(wf.run(timeout=10), Complete)
        counter.take()
        broken = cache_key("c", {"x": 2})
        with store.engine.begin() as conn:
            conn.execute(update(cache_table).where(cache_table.c.cache_key == broken)
                         .values(output="{not json"))
        with caplog.at_level(logging.WARNING, "runfox.cache"):
            rerun = wf.rerun(timeout=10)
        assert counter.take() == {"c": 1}  # d, e, f: same inputs, still cached
        assert rerun.ran == ["c"] and isinstance(rerun.result, Complete)
        assert any(broken in r.getMessage() for r in caplog.records)
        entry = backend.cache.get(broken) if backend.cache else None
        assert entry is not None and entry.output == {"v": 3}  # stored again, whole
    finally:
        store.close()


def test_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    spec = write_spec(tmp_path, cached_chain_fan_spec())
    code, out, _ = cli(capsys, "run", spec, "--executor", "cache_executor:execute",
                       "--input", "x=0", "--backend", db, "-q")
    assert code == 0 and json.loads(out) == {"d": 4, "e": 5, "f": 6}
    first = Backend(store=SqlStore(db)).store.list_executions()[0].workflow_execution_id
    code, out, err = cli(capsys, "rerun", first, "--executor", "cache_executor:execute",
                         "--input", "k=5", "--backend", db)
    report = json.loads(out)
    assert code == 0 and report["ran"] == ["e"] and report["cached"] == list("abcdf")
    assert report["outcome"] == {"d": 4, "e": 8, "f": 6} and "from the cache" in err
    code, out, _ = cli(capsys, "status", report["id"], "--backend", db)
    assert code == 0 and "(from the cache)" in out
    code, out, _ = cli(capsys, "cache", "list", "--json", "--backend", db)
    listed = json.loads(out)
    assert len(listed) == 7 and {e["fn"] for e in listed} == set("abcdef")
    key = cache_key("e", {"x": 3, "k": 5})
    code, out, _ = cli(capsys, "cache", "show", key, "--backend", db)
    assert code == 0 and json.loads(out)["output"] == {"v": 8}
    code, out, _ = cli(capsys, "cache", "clear", "--fn", "e", "--backend", db)
    assert json.loads(out) == {"deleted": 2}
    code, _, err = cli(capsys, "cache", "show", key, "--backend", db)
    assert code == 2 and "no cache entry" in err
    code, _, err = cli(capsys, "rerun", "nope", "--executor", "cache_executor:execute",
                       "--backend", db)
    assert code == 2 and "no execution matches" in err
    assert len(Backend(store=SqlStore(db)).store.list_executions()) == 2


def _calls(log: Path) -> dict[str, int]:
    calls: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().split():
            calls[line] = calls.get(line, 0) + 1
        log.unlink()
    return calls


def _run(args: list[str], env: dict[str, str], cwd: Path) -> Any:
    done = subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_counting_across_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    env = child_env(tmp_path)
    log = tmp_path / "calls.log"
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = write_spec(tmp_path, cached_chain_fan_spec())
    run = ["run", spec, "--executor", "cache_executor:execute", "--backend", db, "-q"]
    assert _run([*run, "--input", "x=0"], env, tmp_path) == {"d": 4, "e": 5, "f": 6}
    assert _calls(log) == dict.fromkeys("abcdef", 1)
    assert _run([*run, "--input", "x=0"], env, tmp_path) == {"d": 4, "e": 5, "f": 6}
    assert _calls(log) == {}  # a second process: every step from the file's cache
    assert _run([*run, "--input", "x=0", "--input", "k=5"], env, tmp_path)["e"] == 8
    assert _calls(log) == {"e": 1}
    store = SqlStore(db)
    try:
        first = store.list_executions()[-1].workflow_execution_id
        expected = store.load(first).plan.what_invalidates("c")
    finally:
        store.close()
    done = subprocess.run([sys.executable, str(TESTS / "cache_executor.py"), db, first, "c"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["reopened"] == expected == ["c", "d", "e", "f"]
    assert _calls(log) == dict.fromkeys(expected, 1)
    assert report["cached"] == [] and report["outcome"] == {"d": 4, "e": 5, "f": 6}
