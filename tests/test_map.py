"""Map steps across processes, the map example, and map records in every store.

The contract tests for maps (ordered outputs, empty and non-list values,
``tolerate``, ``max_parallel``, retries per item, stale run ids, cancel and
redrive) are ``runfox.testing.MapContract``, run by every backend's
``BackendContract``. Here:

- A map of 50 items on SQLite, PostgreSQL and MariaDB with 3 ``runfox worker``
  processes, one killed with SIGKILL mid-run: the workflow completes with the exact
  outputs in order, and no item is applied twice (each item completed exactly once
  in the history, its stored output from a call that finished, the executor run at
  most once per attempt).
- The example ``examples/map_files/word_count.py``.
- ``StepMap.extend`` / ``changed_since`` and the JSON round trip of item records.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import proctools
import pytest
from map_executor import map_spec
from sqldb import KINDS, scratch_database

from runfox.backend import Backend
from runfox.backend.sql import SqlStore, parts_from_url
from runfox.cli import render
from runfox.graph import (
    advance,
    apply_results,
    item_index,
    on_step_result,
    plan_step_id,
    redispatch,
    reset_step,
)
from runfox.history import COMPLETED
from runfox.records import StepMap, StepRecord, WorkflowRecord
from runfox.results import Dispatch, Ignored
from runfox.spec import workflow_id_for
from runfox.status import StepStatus, WorkflowStatus

ROOT = Path(__file__).resolve().parent.parent
ITEMS = 50
LEASE = 3.0
FINISH_WITHIN = 90.0


def test_item_ids() -> None:
    assert (plan_step_id("each[12]"), item_index("each[12]")) == ("each", 12)
    assert (plan_step_id("each"), item_index("each")) == ("each", None)
    assert item_index("each[01]") is None and plan_step_id("each[x]") == "each[x]"


def test_step_map_extend_shares_chunks_and_reports_new_keys() -> None:
    base = StepMap.build([StepRecord(f"s{i}") for i in range(130)])
    grown = base.extend(StepRecord(f"x[{i}]") for i in range(70))
    assert len(grown) == 200 and list(grown)[130:132] == ["x[0]", "x[1]"]
    assert grown._chunks[0] is base._chunks[0] and grown._chunks[1] is base._chunks[1]
    assert grown.changed_since(base) == [f"x[{i}]" for i in range(70)]
    touched = grown.replace({"x[5]": StepRecord("x[5]", StepStatus.COMPLETE)})
    assert touched.changed_since(grown) == ["x[5]"]
    assert touched.changed_since(base) == [f"x[{i}]" for i in range(70)]
    assert grown.get("ghost") is None and grown["x[69]"].id == "x[69]"
    with pytest.raises(ValueError, match="already"):
        grown.extend([StepRecord("s1")])


def test_item_records_survive_json_and_keep_their_order() -> None:
    spec = map_spec(0.0)
    record = WorkflowRecord(workflow_id=workflow_id_for(spec), execution_id="e", spec=spec,
                            inputs={"n": 3})
    record, result = advance(record, 1.0)
    assert isinstance(result, Dispatch)
    record, _ = on_step_result(record, "ls", {"xs": [5, 6, 7]}, 0, 2.0)
    record, result = advance(record, 3.0)
    assert isinstance(result, Dispatch)
    assert [j.step_id for j in result.jobs] == ["each[0]", "each[1]", "each[2]"]
    assert result.jobs[1].inputs == {"x": 6, "index": 1, "seconds": 0.0}
    record, _ = on_step_result(record, "each[1]", {"y": 36}, 0, 4.0)
    data = record.to_dict()
    data["steps"].reverse()  # the stored order does not matter
    again = WorkflowRecord.from_dict(data)
    assert list(again.steps) == ["ls", "each", "each[0]", "each[1]", "each[2]"]
    assert again.maps["each"].running == 2 and again.maps["each"].settled == 1
    assert again.maps == record.maps
    bad = record.to_dict()
    bad["steps"][0]["output"] = [1]  # a list output is only for map steps
    assert WorkflowRecord.from_dict(bad).defects[0].where == "steps.ls.output"
    bad = record.to_dict()
    bad["steps"][1]["items"] = "three"
    assert WorkflowRecord.from_dict(bad).defects[0].where == "steps.each.items"


def _claimed_map(n: int, max_attempts: int = 3, **each: object) -> WorkflowRecord:
    """A record whose map step ``each`` (with ``each`` fields) is ready to be claimed
    with ``n`` items."""
    spec = map_spec(0.0, max_attempts)
    spec["steps"][1].update(each)
    record = WorkflowRecord(workflow_id=workflow_id_for(spec), execution_id="e", spec=spec,
                            inputs={"n": n})
    record, _ = advance(record, 1.0)
    record, _ = on_step_result(record, "ls", {"xs": list(range(n))}, 0, 2.0)
    return record


def test_status_shows_a_map_as_one_line_with_its_item_counts() -> None:
    record, _ = advance(_claimed_map(3, max_attempts=1, tolerate=1), 3.0)
    record, _ = apply_results(record, [("each[0]", {"y": 0}, 0),
                                       ("each[2]", {"ok": False, "error": "bad"}, 0)], 4.0)
    text = render.status_text(record)
    assert "each[" not in text
    line = next(line for line in text.splitlines() if line.startswith("each "))
    assert "in_progress" in line and line.endswith("items 2/3 done, 1 failed")
    data = render.status_json(record)
    assert data["steps"]["each"]["items"] == {"total": 3, "settled": 2, "complete": 1,
                                              "failed": 1, "in_progress": 1}
    assert data["progress"]["total"] == 2  # steps of the spec: ls and each
    assert "each[1]" in render.step_detail(record, "each[1]", as_json=False)


def test_reset_of_a_map_step_renews_its_items_and_ignores_old_results() -> None:
    record, first = advance(_claimed_map(3), 3.0)
    assert isinstance(first, Dispatch) and len(first.jobs) == 3
    record, _ = on_step_result(record, "each[0]", {"y": 0}, 0, 4.0)
    record = reset_step(record, "each", 5.0)
    assert record.steps["each"].items is None and "each" not in record.maps
    late, result = on_step_result(record, "each[1]", {"y": 1}, 0, 6.0)
    assert isinstance(result, Ignored) and late is record
    record, again = advance(record, 7.0)
    assert isinstance(again, Dispatch)
    assert [(j.step_id, j.run_id) for j in again.jobs] == [("each[0]", 1), ("each[1]", 1),
                                                          ("each[2]", 1)]
    stale, result = on_step_result(record, "each[2]", {"y": 4}, 0, 8.0)
    assert isinstance(result, Ignored) and stale is record


def test_redispatch_sends_the_jobs_of_items_in_progress_again() -> None:
    record, first = advance(_claimed_map(4, max_parallel=2), 3.0)
    assert isinstance(first, Dispatch)
    record, _ = on_step_result(record, "each[1]", {"y": 1}, 0, 4.0)
    same, again = redispatch(record, 100.0, older_than=10.0)
    assert same is record and isinstance(again, Dispatch)
    assert [(j.step_id, j.inputs["x"]) for j in again.jobs] == [("each[0]", 0)]
    record, nxt = advance(record, 5.0)  # each[1] done: one more may run
    assert isinstance(nxt, Dispatch) and [j.step_id for j in nxt.jobs] == ["each[2]"]
    _, again = redispatch(record, 100.0, older_than=10.0)
    assert isinstance(again, Dispatch)
    assert [(j.step_id, j.run_id) for j in again.jobs] == [("each[0]", 0), ("each[2]", 0)]


def test_items_do_not_count_toward_the_top_level_max_parallel() -> None:
    spec = map_spec(0.0)
    spec["steps"].append({"id": "side", "fn": "ls", "input": {"n": 1}})
    spec["max_parallel"] = 2
    record = WorkflowRecord(workflow_id=workflow_id_for(spec), execution_id="e", spec=spec,
                            inputs={"n": 5})
    record, first = advance(record, 1.0)
    assert isinstance(first, Dispatch) and [j.step_id for j in first.jobs] == ["ls", "side"]
    record, _ = on_step_result(record, "ls", {"xs": list(range(5))}, 0, 2.0)
    record, nxt = advance(record, 3.0)
    assert isinstance(nxt, Dispatch) and len(nxt.jobs) == 5  # the map counts once
    assert record.running == 2


def test_the_map_example_runs() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "examples/map_files/word_count.py"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [line.rstrip() for line in proc.stdout.splitlines()]
    assert "map step 'count': complete, 5 items" in lines
    assert "  [2] c-rain.txt       1 words" in lines
    assert ('outcome: {"files": 5, "first": "a-harbour.txt", "largest": "b-market.txt", '
            '"words": 30}') in lines


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as url:
        yield url


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOX_")}
    env["PYTHONPATH"] = f"{ROOT / 'tests'}{os.pathsep}{ROOT}"
    env["RUNFOX_TEST_LOG"] = str(tmp_path / "calls.log")
    return env


def _calls(tmp_path: Path) -> tuple[collections.Counter[int], dict[int, set[str]]]:
    """item index -> executor starts, and -> nonces of calls that finished."""
    starts: collections.Counter[int] = collections.Counter()
    ended: dict[int, set[str]] = collections.defaultdict(set)
    path = tmp_path / "calls.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) != 4:  # a worker killed in the middle of a write
            continue
        _, event, index, nonce = parts
        if event == "start":
            starts[int(index)] += 1
        else:
            ended[int(index)].add(nonce)
    return starts, ended


@pytest.mark.slow
def test_a_map_of_50_survives_a_worker_killed_mid_run(db_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path)
    log = tmp_path / "workers.log"
    store, runner = parts_from_url(db_url)
    backend = Backend(store=store, runner=runner)
    workers = [proctools.start_worker(db_url, env, log, "map_executor:execute",
                                      concurrency=2, lease=LEASE) for _ in range(3)]
    check = SqlStore(db_url)
    try:
        wf_id = backend.create(map_spec(seconds=0.15), {"n": ITEMS})
        backend.apply_and_advance(wf_id)
        t0 = time.monotonic()
        killed = False
        while True:
            record = check.load(wf_id)
            if record.status.is_terminal:
                break
            assert time.monotonic() - t0 < FINISH_WITHIN, (
                f"unfinished after {FINISH_WITHIN} s; worker log: {log.read_text()[-3000:]}")
            done = sum(1 for i in range(ITEMS)
                       if (s := record.steps.get(f"each[{i}]")) is not None
                       and s.status is StepStatus.COMPLETE)
            if not killed and done >= 10:
                workers[0].send_signal(signal.SIGKILL)  # holding jobs, most likely
                workers[0].wait()
                killed = True
            time.sleep(0.05)
        assert killed, "the map finished before a worker could be killed"
        record = check.load(wf_id)
        assert record.status is WorkflowStatus.COMPLETE, record.outcome
        ys = record.outcome["ys"]
        assert [(o["y"], o["index"]) for o in ys] == [(i * i, i) for i in range(ITEMS)]
        starts, ended = _calls(tmp_path)
        problems = []
        for i in range(ITEMS):
            item = record.steps[f"each[{i}]"]
            if item.status is not StepStatus.COMPLETE or item.run_id != item.attempts - 1:
                problems.append(f"item {i}: {item.status.value} run {item.run_id} after "
                                f"{item.attempts} attempts")
            if (item.output or {}).get("nonce") not in ended[i]:
                problems.append(f"item {i}: stored output from no finished call")
            if starts[i] > item.attempts:
                problems.append(f"item {i}: executor ran {starts[i]} times in "
                                f"{item.attempts} attempt(s)")
        completed = collections.Counter(e.step_id for e in backend.history(wf_id)
                                        if e.type == COMPLETED)
        problems.extend(f"{sid}: completed {n} times" for sid, n in completed.items() if n != 1)
        assert set(completed) == {"ls", "each", *(f"each[{i}]" for i in range(ITEMS))}
        assert not problems, problems[:20]
        print(f"\n{db_url.split(':')[0]}: map of {ITEMS} in {time.monotonic() - t0:.1f} s, "
              f"{sum(starts.values())} executor calls, "
              f"{sum(record.steps[f'each[{i}]'].attempts > 1 for i in range(ITEMS))} "
              "items retried")
    finally:
        proctools.stop_workers(workers)
        check.close()
        runner.close()
        store.close()


def test_spec_errors_name_the_place() -> None:
    from runfox.errors import SpecError
    from runfox.spec import compile_spec

    with pytest.raises(SpecError) as caught:
        compile_spec({"steps": [
            {"id": "a", "fn": "f", "input": {"x": {"var": "item.name"}}, "tolerate": 1},
            {"id": "m", "fn": "f", "map": [1], "max_parallel": 0, "tolerate": 1.5,
             "branch": [{"condition": True, "action": "complete"}]},
        ]})
    text = str(caught.value)
    assert "steps[0] 'a'.input.x: reads {var: item}, which only a map step has" in text
    assert "steps[0] 'a'.tolerate: applies to map steps only" in text
    assert "steps[1] 'm'.max_parallel: must be an integer >= 1" in text
    assert "steps[1] 'm'.tolerate: must be a count of items" in text
    assert "steps[1] 'm'.branch: a map step cannot have 'branch'" in text
    plan = compile_spec({"defaults": {"cache": True}, "steps": [
        {"id": "a", "fn": "f"}, {"id": "m", "fn": "f", "map": [1, 2], "tolerate": 0.5}]})
    assert plan.by_id["m"].cache is None and plan.by_id["a"].cache is not None
    assert plan.by_id["m"].tolerance(5) == 2 and plan.by_id["m"].tolerance(4) == 2
