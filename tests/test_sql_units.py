"""The SQL store's units of work, due index and per-key state (issue 13, items 1, 2, 4).

- a driving worker with a free slot commits once per step on every SQL database:
  one joint transaction applies the result, claims what became ready, queues
  its job already taken by the worker and acknowledges the finished job; only
  the chain's first job is claimed on its own (counted by a SQLAlchemy event
  listener);
- a joint unit that fails after the write leaves nothing written or dispatched;
- the sweep reads only due executions: open executions with nothing due cost nothing;
- a lost race keeps the cached record and reloads only newer rows;
- a state key is written only when its value changed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqldb import KINDS, scratch_database

from runfox.backend import SUBMITTED_STEP, Backend
from runfox.backend.sql import SqlRunner, SqlStore, parts_from_url
from runfox.backend.sql.schema import state, tasks, workflows
from runfox.errors import BackendError
from runfox.graph import advance
from runfox.results import Dispatch, Pending
from runfox.status import StepStatus, WorkflowStatus
from runfox.testing import bump, chain_spec, new_record
from runfox.worker import Worker


class Counter:
    """Statements and commits on an engine, from SQLAlchemy's events.

    ``write_commits`` counts the commits of transactions that ran an INSERT,
    UPDATE or DELETE (a read in autocommit, or a claim that found nothing, also
    ends in a COMMIT event but writes nothing)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements = 0
        self.commits = 0
        self.write_commits = 0
        self.texts: list[str] = []
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        with self._lock:
            self.statements += 1
            self.texts.append(statement.split(None, 1)[0].upper())
        if not statement.lstrip().upper().startswith("SELECT"):
            conn.info["runfox_dirty"] = True

    def _commit(self, conn: Any) -> None:
        with self._lock:
            self.commits += 1
            if conn.info.pop("runfox_dirty", False):
                self.write_commits += 1

    def _rollback(self, conn: Any) -> None:
        conn.info.pop("runfox_dirty", None)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)


def inc(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"x": inputs["x"] + 1}


@pytest.fixture
def parts(sql_parts: tuple[SqlStore, SqlRunner]) -> tuple[SqlStore, SqlRunner]:
    return sql_parts  # a store and a runner on each SQL database (conftest)


@pytest.mark.parametrize("kind", KINDS)
def test_a_driving_worker_commits_once_per_step(kind: str, tmp_path: Path) -> None:
    with scratch_database(kind, tmp_path) as url:
        _count_a_chain(kind, url)


@pytest.mark.parametrize("kind", KINDS)
def test_a_driving_worker_claims_the_next_queued_job_in_the_unit(kind: str,
                                                                 tmp_path: Path) -> None:
    # Ten one-step executions: their results dispatch nothing, so the room a
    # finished job leaves is filled from the queue inside the unit that applies
    # its result (Backend.apply_and_take): one commit per job, plus the first claim.
    with scratch_database(kind, tmp_path) as url:
        store, runner = parts_from_url(url)
        try:
            backend = Backend(store=store, runner=runner)
            one = {"steps": [{"id": "s", "fn": "inc", "input": {"x": {"var": "input.x"}}}]}
            ids = [backend.start(one, {"x": i}) for i in range(10)]
            counter = _counted_jobs(backend, store, 10)
            assert [backend.load(i).steps["s"].output for i in ids] == [
                {"x": i + 1} for i in range(10)]
            assert counter.write_commits == 10 + 1
        finally:
            runner.close()
            store.close()


def test_a_record_started_elsewhere_is_read_before_the_write_lock(tmp_path: Path) -> None:
    # SQLite has one write lock: a driving worker that meets an execution it has
    # not seen (started by another process) reads it first, outside its unit, so
    # the lock is held for the writes and the commit only.
    url = f"sqlite:///{tmp_path}/units.db"
    starter_store, starter_runner = parts_from_url(url)
    store, runner = parts_from_url(url)
    try:
        starter = Backend(store=starter_store, runner=starter_runner)
        one = {"steps": [{"id": "s", "fn": "inc", "input": {"x": {"var": "input.x"}}}]}
        ids = [starter.start(one, {"x": i}) for i in range(5)]
        backend = Backend(store=store, runner=runner)
        reads_under_lock: list[str] = []

        def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if (statement.lstrip().upper().startswith("SELECT")
                    and conn.get_execution_options().get("runfox_write")):
                reads_under_lock.append(" ".join(statement.split())[:80])

        event.listen(store.engine, "before_cursor_execute", watch)
        try:
            _counted_jobs(backend, store, 5)
        finally:
            event.remove(store.engine, "before_cursor_execute", watch)
        assert [starter.load(i).steps["s"].output for i in ids] == [
            {"x": i + 1} for i in range(5)]
        assert reads_under_lock == []
    finally:
        for closing in (runner, store, starter_runner, starter_store):
            closing.close()


def _counted_jobs(backend: Backend, store: SqlStore, jobs: int) -> Counter:
    """Run ``jobs`` jobs with one driving worker (one slot); the SQL it made."""
    counter = Counter(store.engine)
    worker = Worker(backend, inc, register=False, schedule_interval=None,
                    poll_interval=0.01, sweep_interval=3600.0)
    try:
        stats = worker.run(max_jobs=jobs, idle_timeout=30)
    finally:
        counter.close()
    assert stats.jobs == jobs
    return counter


def _count_a_chain(kind: str, url: str) -> None:
    store, runner = parts_from_url(url)
    try:
        backend = Backend(store=store, runner=runner)
        wf_id = backend.create(chain_spec(10), {"x": 0})
        backend.apply_and_advance(wf_id)  # claims s0 and dispatches its job
        counter = _counted_jobs(backend, store, 10)
        record = backend.load(wf_id)
        assert record.status is WorkflowStatus.COMPLETE and record.outcome == {"x": 10}
        print(f"\n10-step chain on {kind}, per step: {counter.statements / 10:.1f} statements, "
              f"{counter.commits / 10:.1f} commits, {counter.write_commits / 10:.1f} "
              "commits that wrote")
        # Ten joint units and the claim of s0; every later job was taken at dispatch.
        assert counter.write_commits == 10 + 1
    finally:
        runner.close()
        store.close()


def test_a_failure_after_the_write_rolls_the_whole_unit_back(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    store, runner = parts
    backend = Backend(store=store, runner=runner)
    wf_id = backend.create(chain_spec(2), {"x": 0})
    _, first = backend.apply_and_advance(wf_id)
    assert isinstance(first, Dispatch)
    job = runner.take_pending_jobs(1)[0]
    before = store.load(wf_id)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise BackendError("dispatch refused")

    runner.dispatch = broken  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="dispatch refused"):
        backend.apply_and_advance(wf_id, [("s0", {"x": 1}, 0)], ack=job)
    after = store.load(wf_id)
    assert after.version == before.version and after.to_dict() == before.to_dict()
    with store.engine.connect() as conn:
        states = conn.execute(select(tasks.c.step_id, tasks.c.state)).all()
    assert states == [("s0", "queued")]  # not acknowledged, nothing new queued
    del runner.dispatch
    _, nxt = backend.apply_and_advance(wf_id, [("s0", {"x": 1}, 0)], ack=job)
    assert isinstance(nxt, Dispatch) and [j.step_id for j in nxt.jobs] == ["s1"]
    with store.engine.connect() as conn:
        states = conn.execute(select(tasks.c.step_id, tasks.c.state)
                              .order_by(tasks.c.step_id)).all()
    assert states == [("s0", "acked"), ("s1", "queued")]


def test_the_sweep_reads_only_due_executions(parts: tuple[SqlStore, SqlRunner]) -> None:
    store, runner = parts
    clock = [1_800_000_000.0]
    backend = Backend(store=store, runner=runner, clock=lambda: clock[0])
    quiet = []
    for _ in range(30):  # open executions with a step running: nothing due for a while
        wf_id = backend.create(chain_spec(2), {"x": 0})
        backend.apply_and_advance(wf_id)
        quiet.append(wf_id)
    spec = {"name": "flaky", "steps": [
        {"id": "a", "fn": "work", "max_attempts": 2, "retry": {"delay": 10}}]}
    flaky = backend.create(spec)
    backend.apply_and_advance(flaky)
    clock[0] += 1
    _, nxt = backend.apply_and_advance(flaky, [("a", {"ok": False, "error": "x"}, 0)])
    assert isinstance(nxt, Pending)
    worker = Worker(backend, inc, register=False, schedule_interval=None)
    assert store.due(clock[0]).keys == []
    assert worker.sweep() == 0
    assert worker.retry_at == clock[0] + 10
    clock[0] += 11
    assert store.due(clock[0]).keys == [flaky]
    assert worker.sweep() == 1  # claims the retry
    assert store.load(flaky).steps["a"].run_id == 1
    clock[0] += 60  # within the grace of a joint write: nothing due
    assert worker.sweep() == 0
    clock[0] += 3600  # past it: every execution with a step running, once
    assert worker.sweep() == 31  # looked at: nothing to do, postponed
    assert worker.sweep() == 0
    assert store.due(clock[0] + 5).keys == []
    with store.engine.connect() as conn:
        due = conn.execute(select(func.count()).select_from(workflows)
                           .where(workflows.c.due_at <= clock[0] + 3601)).scalar()
    assert due == 31  # and again an hour later (quiet that long: the longest pause)
    versions = {store.load(k).version for k in quiet}
    assert versions == {2}  # postponing wrote no new version


def test_a_lost_race_keeps_the_cache_and_reloads_only_newer_rows(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    store, _ = parts
    other = SqlStore(engine=store.engine)
    try:
        v1 = new_record(chain_spec(3), {"x": 0})
        store.write(v1)
        v2 = bump(advance(v1, 10.0)[0], v1)
        store.write_shared(v2, previous=store.load_shared(v1.workflow_execution_id))
        assert other.load_shared(v1.workflow_execution_id).version == 2
        counter = Counter(store.engine)
        try:
            mine = store.load_shared(v1.workflow_execution_id)
            theirs = bump(mine.evolve(state={"a": 1}), mine)
            other.write_shared(theirs, previous=other.load_shared(v1.workflow_execution_id))
            lost = bump(mine.evolve(state={"b": 1}), mine)
            with pytest.raises(Exception, match="another writer won"):
                store.write_shared(lost, previous=mine)
            counter.texts.clear()
            reloaded = store.load_shared(v1.workflow_execution_id)
        finally:
            counter.close()
        assert reloaded.version == 3 and reloaded.state == {"a": 1}
        assert reloaded.spec is mine.spec  # built on the cached record, not decoded anew
        assert counter.texts.count("SELECT") == 3  # header, newer steps, newer state
    finally:
        other.close()


def test_only_changed_state_keys_are_written(parts: tuple[SqlStore, SqlRunner]) -> None:
    store, _ = parts
    big = {"blob": "x" * 10_000}
    v1 = new_record(chain_spec(2), {"x": 0}).evolve(state={"big": big, "n": 0})
    store.write(v1)
    key = v1.workflow_execution_id
    current = store.load_shared(key)
    for n in range(1, 4):
        nxt = bump(current.evolve(state={**current.state, "n": n}), current)
        store.write_shared(nxt, previous=current)
        current = store.load_shared(key)
    with store.engine.connect() as conn:
        rows = dict(conn.execute(select(state.c.name, state.c.version)
                                 .where(state.c.workflow_execution_id == key)).all())
    assert rows == {"big": 1, "n": 4}
    fresh = SqlStore(engine=store.engine)
    try:
        assert fresh.load(key).state == {"big": big, "n": 3}
    finally:
        fresh.close()


def test_a_record_from_before_schema_9_keeps_its_state_in_the_header(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    """Rows override the header's ``state`` column, which holds the whole state of
    records written before schema 9 (the migration copies nothing)."""
    store, _ = parts
    v1 = new_record(chain_spec(2), {"x": 0})
    store.write(v1)
    key = v1.workflow_execution_id
    with store.engine.begin() as conn:  # as a release before schema 9 left it
        conn.execute(workflows.update().where(workflows.c.workflow_execution_id == key)
                     .values(state='{"old": 1, "gone": 2}'))
    old = SqlStore(engine=store.engine)
    try:
        loaded = old.load_shared(key)
        assert loaded.state == {"old": 1, "gone": 2}
        state_now = {k: v for k, v in loaded.state.items() if k != "gone"}
        old.write_shared(bump(loaded.evolve(state={**state_now, "new": 3}), loaded),
                         previous=loaded)
    finally:
        old.close()
    fresh = SqlStore(engine=store.engine)
    try:
        assert fresh.load(key).state == {"old": 1, "new": 3}
    finally:
        fresh.close()


def test_results_submitted_by_workers_that_do_not_drive_are_due_at_once(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    store, runner = parts
    backend = Backend(store=store, runner=runner)
    wf_id = backend.create(chain_spec(2), {"x": 0})
    backend.apply_and_advance(wf_id)
    now = store.load(wf_id).updated_at
    assert store.due(now + 1).keys == []  # a step running: not due before the grace
    job = runner.take_pending_jobs(1)[0]
    assert runner.submit_work_result(wf_id, job.step_id, {"x": 1}, job.run_id)
    assert store.due(now + 1).keys == [wf_id]
    worker = Worker(backend, inc, register=False, schedule_interval=None)
    assert worker.sweep() == 1  # gathers, applies, claims s1
    assert store.load(wf_id).steps["s1"].status.value == "in_progress"
    assert store.due(now + 1).keys == []


def test_a_reload_moves_the_derived_counts_like_a_full_load(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    # Another writer settles steps of a fan-out; the cached record moves forward
    # with the changed rows only (runfox.records.StepChanges). Its ready set,
    # open and running counts and every step's unmet count must be those of a
    # record built from scratch from the same rows.
    from runfox.graph import apply_results
    from runfox.testing import fan_spec

    store, _ = parts
    other = SqlStore(engine=store.engine)
    fresh = SqlStore(engine=store.engine, cache_size=0)
    try:
        v1 = new_record(fan_spec(6), {"n": 1})
        store.write(v1)
        wf_id = v1.workflow_execution_id
        mine = store.load_shared(wf_id)
        theirs = other.load_shared(wf_id)
        for _ in range(3):  # claim, then settle a few steps at a time
            claimed = bump(advance(theirs, 10.0)[0], theirs)
            other.write_shared(claimed, previous=theirs)
            running = [s for s in claimed.steps.values() if s.status.value == "in_progress"]
            results = [(s.id, {"v": 1} if i % 2 else {"ok": False, "error": "x"}, s.run_id)
                       for i, s in enumerate(running[:3])]
            settled = bump(apply_results(claimed, results, 11.0, [])[0], claimed)
            other.write_shared(settled, previous=claimed)
            theirs = settled
            moved = store.load_shared(wf_id)
            assert moved.spec is mine.spec  # the delta path, not a full decode
            full = fresh.load_shared(wf_id)
            assert (moved.version, moved.ready, moved.open, moved.running) == (
                full.version, full.ready, full.open, full.running)
            assert {k: (s.status, s.unmet) for k, s in moved.steps.items()} == {
                k: (s.status, s.unmet) for k, s in full.steps.items()}
    finally:
        other.close()
        fresh.close()


def test_the_header_columns_follow_the_record_when_unchanged_ones_are_left_out(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    # Each write sets only the header columns that change (status and retry_at
    # are left out when they stay the same: an index write less on each step).
    # Whatever was left out, the row must still say what the record says.
    from runfox.backend.sql.store import due_times

    store, runner = parts
    backend = Backend(store=store, runner=runner)
    flaky = {"defaults": {"max_attempts": 3, "retry": {"backoff": "fixed", "delay": 30}},
             "steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "f", "depends_on": ["a"]}]}
    wf_id = backend.create(flaky, {})

    def row() -> tuple[str, float | None]:
        with store.engine.connect() as conn:
            found = conn.execute(select(workflows.c.status, workflows.c.retry_at)
                                 .where(workflows.c.workflow_execution_id == wf_id)).one()
        return found.status, found.retry_at

    def check() -> None:
        record = store.load(wf_id)
        assert row() == (record.status.value, due_times(record, 60.0)[1])

    backend.apply_and_advance(wf_id)  # pending -> in progress: status written
    check()
    failed = {"ok": False, "error": "boom"}
    backend.apply_and_advance(wf_id, [("a", failed, 0)])  # a retry waits: retry_at set
    check()
    assert row()[1] is not None
    retry_at = row()[1]
    backend.apply_and_advance(wf_id)  # nothing changes the retry: left out, still right
    check()
    assert row()[1] == retry_at
    later = retry_at + 1
    backend.clock = lambda: later  # type: ignore[method-assign]
    backend.apply_and_advance(wf_id)  # the retry is claimed: retry_at cleared
    check()
    assert row()[1] is None
    run = store.load(wf_id).steps["a"].run_id
    backend.apply_and_advance(wf_id, [("a", {"x": 1}, run)])
    backend.apply_and_advance(wf_id, [("b", {"y": 1}, 0)])
    check()
    assert row() == ("complete", None)


ONE_STEP = {"steps": [{"id": "s", "fn": "inc", "input": {"x": {"var": "input.x"}}}],
            "outputs": {"x": {"var": "steps.s.output.x"}}}


def _finished_jobs(backend: Backend, runner: SqlRunner, count: int
                   ) -> tuple[list[str], list[Any]]:
    """``count`` one-step executions started, their jobs taken, and for each the
    ``apply_and_take_many`` group that answers it."""
    ids = [backend.start(ONE_STEP, {"x": i}) for i in range(count)]
    jobs = runner.take_pending_jobs(limit=count, lease=60.0)
    assert sorted(j.workflow_execution_id for j in jobs) == sorted(ids)
    by_id = {j.workflow_execution_id: j for j in jobs}
    return ids, [(i, [("s", {"x": by_id[i].inputs["x"] + 1}, by_id[i].run_id)], [by_id[i]])
                 for i in ids]


def test_several_results_commit_once(parts: tuple[SqlStore, SqlRunner]) -> None:
    # Ten finished jobs of ten executions: their records, the acknowledgements
    # and the claim of the next jobs waiting go in one commit.
    store, runner = parts
    backend = Backend(store=store, runner=runner)
    ids, groups = _finished_jobs(backend, runner, 10)
    later = [backend.start(ONE_STEP, {"x": 100 + i}) for i in range(3)]
    counter = Counter(store.engine)
    try:
        done, taken = backend.apply_and_take_many(groups, limit=5, lease=60.0, worker="w")
    finally:
        counter.close()
    assert counter.write_commits == 1
    assert all(outcome is not None for outcome in done)
    assert sorted(j.workflow_execution_id for j in taken) == sorted(later)  # 3 of 5 asked
    assert [backend.load(i).outcome for i in ids] == [{"x": i + 1} for i in range(10)]
    with store.engine.connect() as conn:
        rows = conn.execute(select(tasks.c.workflow_execution_id, tasks.c.state,
                                   tasks.c.deliveries)).all()
    assert {wf: st for wf, st, _ in rows if wf in ids} == {i: "acked" for i in ids}
    assert {wf: n for wf, _, n in rows if wf in later} == {i: 1 for i in later}  # claimed
    for wf_id in ids:  # the history of each transition went in with it
        assert [e.type for e in backend.history(wf_id)][-2:] == ["completed", "workflow_ended"]


def test_start_jobs_claimed_together_are_created_in_one_commit(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    # Eight start jobs (Backend.submit) claimed together: their executions are
    # created with their first steps claimed, four of those jobs taken for the
    # caller and four queued, and the start jobs acknowledged, in one commit.
    # A start job delivered again among new ones rolls that unit back; one at a
    # time, it is only acknowledged and the new ones are created.
    store, runner = parts
    backend = Backend(store=store, runner=runner)
    ids = [backend.submit(ONE_STEP, {"x": i}) for i in range(8)]
    starts = runner.take_pending_jobs(limit=10, lease=60.0)
    assert sorted(j.workflow_execution_id for j in starts) == sorted(ids)
    assert {j.step_id for j in starts} == {SUBMITTED_STEP}
    counter = Counter(store.engine)
    try:
        taken = backend.start_submitted(starts, limit=4, lease=60.0)
    finally:
        counter.close()
    assert counter.write_commits == 1
    assert len(taken) == 4 and {j.step_id for j in taken} == {"s"}
    queued = runner.take_pending_jobs(limit=10, lease=60.0)
    assert sorted(j.workflow_execution_id for j in taken + queued) == sorted(ids)
    for i, wf_id in enumerate(ids):
        record = backend.load(wf_id)
        assert (record.version, record.inputs) == (1, {"x": i})
        assert record.steps["s"].status is StepStatus.IN_PROGRESS
    with store.engine.connect() as conn:
        states = conn.execute(select(tasks.c.state).where(
            tasks.c.step_id == SUBMITTED_STEP)).scalars().all()
    assert states == ["acked"] * 8
    more = [backend.submit(ONE_STEP, {"x": 100 + i}) for i in range(2)]
    fresh = runner.take_pending_jobs(limit=10, lease=60.0)
    assert sorted(j.workflow_execution_id for j in fresh) == sorted(more)
    assert backend.start_submitted([starts[0], *fresh], limit=0, lease=60.0) == []
    assert [backend.load(wf_id).inputs for wf_id in more] == [{"x": 100}, {"x": 101}]
    assert backend.load(ids[0]).version == 1
    assert sorted(j.workflow_execution_id for j in runner.take_pending_jobs(
        limit=10, lease=60.0)) == sorted(more)


def test_start_jobs_of_a_worker_that_died_come_back_and_start_once(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    # A worker claimed three start jobs and died before creating anything: when
    # their lease runs out another worker takes them (second delivery: not a lost
    # step, there is no step yet) and creates and runs each execution once.
    store, runner = parts
    backend = Backend(store=store, runner=runner)
    ids = [backend.submit(ONE_STEP, {"x": i}) for i in range(3)]
    assert len(runner.take_pending_jobs(limit=10, lease=0.3)) == 3  # and then nothing
    time.sleep(0.5)
    stats = Worker(backend, inc, lease=5.0, poll_interval=0.01,
                   concurrency=4).run(idle_timeout=0.5)
    assert (stats.started, stats.jobs, stats.lost) == (3, 3, 0)
    for i, wf_id in enumerate(ids):
        record = backend.load(wf_id)
        assert record.outcome == {"x": i + 1}
        assert (record.steps["s"].run_id, record.steps["s"].attempts) == (0, 1)
        assert [e.type for e in backend.history(wf_id)].count("created") == 1


def test_records_started_elsewhere_are_read_together(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    # Ten finished jobs of executions another process started: their records
    # are read in one header, one step and one state statement, not three each,
    # and decode to what a load of each gives; the unit that applies the results
    # writes them with one statement of each kind.
    store, runner = parts
    starter = Backend(store=SqlStore(engine=store.engine), runner=runner)
    ids, groups = _finished_jobs(starter, runner, 10)
    many = SqlStore(engine=store.engine, cache_size=0)
    counter = Counter(store.engine)
    try:
        found = many.load_shared_many(ids)
    finally:
        counter.close()
    assert counter.texts == ["SELECT"] * 3
    one = SqlStore(engine=store.engine, cache_size=0)
    assert {k: r.to_dict() for k, r in found.items()} == {k: one.load(k).to_dict() for k in ids}
    backend = Backend(store=SqlStore(engine=store.engine), runner=runner)
    counter = Counter(store.engine)
    try:
        done, _ = backend.apply_and_take_many(groups, limit=0, lease=60.0, worker="w")
    finally:
        counter.close()
    assert all(outcome is not None for outcome in done)
    assert counter.write_commits == 1
    assert counter.texts[:3] == ["SELECT"] * 3 and counter.texts.count("SELECT") < 10
    # and written together: the headers, the steps and the acknowledgements
    # (UPDATE), the state keys and the history events (INSERT) each in one
    # statement (an executemany) for the ten.
    assert counter.texts.count("UPDATE") == 3, counter.texts
    assert counter.texts.count("INSERT") == 2, counter.texts
    assert [backend.load(i).outcome for i in ids] == [{"x": i + 1} for i in range(10)]


def test_a_lost_race_among_several_results_leaves_them_all_to_apply_alone(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    # One of the records moved on elsewhere since this process cached it: the
    # unit rolls back whole (no record, ack or claim of it is kept), and each
    # group then goes through apply_and_take, which reloads what is stale.
    store, runner = parts
    backend = Backend(store=store, runner=runner)
    ids, groups = _finished_jobs(backend, runner, 4)
    elsewhere = Backend(store=SqlStore(engine=store.engine), runner=runner)
    try:
        elsewhere.write(elsewhere.load(ids[2]))  # a write this backend has not seen
        before = [elsewhere.load(i).version for i in ids]
        done, taken = backend.apply_and_take_many(groups, limit=5, lease=60.0)
        assert done == [None] * 4 and taken == []
        assert [elsewhere.load(i).version for i in ids] == before
        with store.engine.connect() as conn:  # still claimed, none acknowledged
            assert set(conn.execute(select(tasks.c.state, tasks.c.deliveries)).all()) == {
                ("queued", 1)}
        for wf_id, results, (job,) in groups:
            backend.apply_and_take(wf_id, results, limit=0, lease=60.0, ack=job)
        assert [backend.load(i).outcome for i in ids] == [{"x": i + 1} for i in range(4)]
    finally:
        elsewhere.store.close()


def test_a_worker_with_several_slots_records_finished_jobs_together(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    # Jobs that finish while the worker is busy wait for its next round, which
    # records all of them in one unit: fewer commits than jobs.
    store, runner = parts
    backend = Backend(store=store, runner=runner)
    ids = [backend.start(ONE_STEP, {"x": i}) for i in range(24)]
    counter = Counter(store.engine)
    worker = Worker(backend, inc, concurrency=8, register=False, schedule_interval=None,
                    poll_interval=0.01, sweep_interval=3600.0)
    try:
        stats = worker.run(max_jobs=24, idle_timeout=30)
    finally:
        counter.close()
    assert stats.jobs == 24 and stats.drive_errors == 0
    assert [backend.load(i).outcome for i in ids] == [{"x": i + 1} for i in range(24)]
    assert counter.write_commits < 24


def test_a_write_unit_takes_sqlites_lock_at_its_first_statement(tmp_path: Path) -> None:
    # The Python a unit runs before its first statement does not hold the
    # database's one write lock; from the first statement (a read included) to
    # the commit, it does.
    import sqlite3

    url = f"sqlite:///{tmp_path}/late.db"
    store, runner = parts_from_url(url)
    path = str(tmp_path / "late.db")
    seen: list[str] = []

    def can_write() -> str:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return "free"
        except sqlite3.OperationalError as exc:
            return "locked" if "locked" in str(exc) else str(exc)
        finally:
            other.close()

    def work() -> None:
        seen.append(can_write())
        store.load_shared(wf_id)  # a read inside the unit: the lock is taken first
        seen.append(can_write())

    try:
        backend = Backend(store=store, runner=runner)
        wf_id = backend.start(ONE_STEP, {"x": 1})
        unit = store.unit_with(runner)
        assert unit is not None
        store._cache.drop(wf_id)  # so the load reads
        unit(work)
        assert seen == ["free", "locked"]
        assert can_write() == "free"
        unit(lambda: seen.append("nothing"))  # a unit with no statement commits too
        assert can_write() == "free" and backend.load(wf_id).version >= 1
    finally:
        runner.close()
        store.close()


@pytest.mark.parametrize("committed", [False, True], ids=["before", "after-commit"])
def test_results_recorded_together_survive_an_outage(tmp_path: Path, committed: bool) -> None:
    # The unit recording several results fails as an outage does: before it wrote
    # anything, or after its commit (the answer lost on the way). The worker keeps
    # the results, marks them interrupted, and records them one at a time once the
    # backend answers: every workflow ends with its own result applied once, and no
    # executor call is repeated. (Jobs the lost unit had taken for the worker come
    # back when their lease runs out, as WorkerLost attempts that are run again: the
    # failure model of any lost commit.)
    from runfox.errors import BackendUnavailable

    store, runner = parts_from_url(f"sqlite:///{tmp_path}/outage.db")
    try:
        backend = Backend(store=store, runner=runner)
        ids = [backend.start(ONE_STEP, {"x": i}) for i in range(12)]
        real = backend.apply_and_take_many
        failures: list[int] = []
        calls: dict[int, int] = {}

        def flaky(*args: Any, **kwargs: Any) -> Any:
            if not failures:
                failures.append(1)
                if committed:
                    real(*args, **kwargs)
                raise BackendUnavailable("the database went away", "connection lost")
            return real(*args, **kwargs)

        def counted(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
            calls[inputs["x"]] = calls.get(inputs["x"], 0) + 1
            return inc(fn, inputs)

        backend.apply_and_take_many = flaky  # type: ignore[method-assign]
        worker = Worker(backend, counted, concurrency=4, lease=1.0, register=False,
                        schedule_interval=None, poll_interval=0.05, sweep_interval=0.5)
        worker.run(idle_timeout=4)
        assert failures == [1]
        assert calls == {i: 1 for i in range(12)}  # no executor call repeated
        assert [backend.load(i).outcome for i in ids] == [{"x": i + 1} for i in range(12)]
        for wf_id in ids:  # each result applied once
            assert [e.type for e in backend.history(wf_id)].count("completed") == 1
        with store.engine.connect() as conn:
            assert {st for (st,) in conn.execute(select(tasks.c.state))} == {"acked"}
    finally:
        runner.close()
        store.close()
