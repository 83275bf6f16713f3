"""The SQL store and runner: the contract suites on SQLite, PostgreSQL and MariaDB,
plus what is particular to SQL (corrupt rows, unreachable servers, schema version,
the seed's SqliteStore/SqliteRunner, several claimers and gatherers at once).

Every database is created for this module and dropped afterwards (``sqldb``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from contract import (
    BackendContract,
    CacheContract,
    RunnerContract,
    StoreContract,
    fan_executor,
    fan_spec,
    job,
    new_record,
)
from sqlalchemy import create_engine, func, select, update
from sqldb import KINDS, scratch_database, wipe

import runfox as rfx
from runfox.backend import Backend, InProcessWorker
from runfox.backend.sql import SqliteRunner, SqliteStore, SqlRunner, SqlStore, parts_from_url
from runfox.backend.sql.schema import SCHEMA_VERSION, schema_version, steps, tasks, workflows
from runfox.backend.urls import backend_from_url
from runfox.errors import BackendError, ConflictError, CorruptRecord
from runfox.records import StepRecord
from runfox.status import StepStatus, WorkflowStatus
from runfox.testing import WorkerRegistryContract, chain_spec

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", params=KINDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    with scratch_database(request.param, tmp_path_factory.mktemp("sql")) as url:
        yield url


@pytest.fixture
def store(database: str) -> Iterator[SqlStore]:
    store = SqlStore(database)
    wipe(store.engine)
    yield store
    store.close()


@pytest.fixture
def runner(database: str) -> Iterator[SqlRunner]:
    runner = SqlRunner(database)
    wipe(runner.engine)
    yield runner
    runner.close()


@pytest.fixture
def parts(database: str) -> Iterator[tuple[SqlStore, SqlRunner]]:
    store, runner = parts_from_url(database)
    wipe(store.engine)
    yield store, runner
    runner.close()
    store.close()


class TestSqlStore(StoreContract):
    @pytest.fixture
    def reopen(self, database: str) -> Iterator[Callable[[], SqlStore]]:
        """A new SqlStore on the same database: what another process would load."""
        opened: list[SqlStore] = []

        def make() -> SqlStore:
            opened.append(SqlStore(database))
            return opened[-1]

        yield make
        for store in opened:
            store.close()


class TestSqlRunner(RunnerContract):
    supports_leases = True


class TestSqlCache(CacheContract):
    pass


class TestSqlBackend(BackendContract):
    pass


class TestSqlWorkers(WorkerRegistryContract):
    pass


# -- the store ------------------------------------------------------------------------


def _corrupt(engine: Any, table: Any, where: Any, **values: Any) -> None:
    with engine.connect() as conn, conn.begin():
        conn.execute(update(table).where(where).values(**values))


def test_a_transition_writes_only_the_changed_steps(store: SqlStore) -> None:
    record = new_record(fan_spec(100), {"n": 1})
    store.write(record)
    backend = Backend(store=store)
    key = record.workflow_execution_id
    backend.advance(key)  # claims only root
    with store.engine.connect() as conn:
        versions = dict(conn.execute(select(steps.c.step_id, steps.c.version)
                                     .where(steps.c.workflow_execution_id == key)).all())
        spec_rows = conn.execute(select(func.count()).select_from(workflows)).scalar()
    assert versions["root"] == 2
    # The other steps are still as a new execution has them: neither the create
    # nor the claim wrote a row for them (schema 12), and they load as that.
    assert set(versions) == {"root"}
    assert spec_rows == 1
    fresh = SqlStore(engine=store.engine, cache_size=0).load(key)
    assert len(fresh.steps) == 102
    assert all(fresh.steps[s.id] == StepRecord(s.id) for s in fresh.plan.steps if s.id != "root")
    assert fresh.steps["root"].status is StepStatus.IN_PROGRESS


def test_incremental_load_matches_a_fresh_load(database: str, store: SqlStore) -> None:
    other = SqlStore(database, cache_size=0)  # another process: no shared cache
    try:
        backend = Backend(store=other, runner=rfx.backend.InProcessRunner(),
                          executor=fan_executor)
        wf_id = backend.create(fan_spec(70), {"n": 2})
        seen = store.load(wf_id)  # cached at version 1
        backend.advance(wf_id)
        backend.on_step_result(wf_id, "root", {"n": 2}, 0)
        backend.advance(wf_id)
        backend.on_step_result(wf_id, "leaf3", {"k3": 6}, 0)
        loaded = store.load(wf_id)  # reads only the rows written after version 1
        fresh = SqlStore(database, cache_size=0)
        try:
            assert loaded.version > seen.version
            assert loaded.to_dict() == fresh.load(wf_id).to_dict()
            assert loaded.ready == fresh.load(wf_id).ready
            assert loaded.open == fresh.load(wf_id).open
        finally:
            fresh.close()
    finally:
        other.close()


_LOOP = {"name": "fib", "steps": [
    {"id": "seed", "fn": "seed"},
    {"id": "iterate", "fn": "fib", "depends_on": ["seed"],
     "input": {"a": {"var": "state.a"}, "b": {"var": "state.b"}},
     "branch": [{"condition": {"<": [{"var": "state.b"}, 20]},
                 "action": {"set": "steps.iterate.status", "value": "ready"}},
                {"condition": True, "action": "complete"}]},
    {"id": "report", "fn": "report", "depends_on": ["iterate"],
     "input": {"b": {"var": "state.b"}}},
], "outputs": {"fib": {"var": "steps.report.output.b"}}}


def _fib(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "seed":
        return {"a": 0, "b": 1}
    if fn == "fib":
        return {"a": inputs["b"], "b": inputs["a"] + inputs["b"]}
    return {"b": inputs["b"]}


def test_steps_without_rows_load_and_write_like_steps_with_rows(
        database: str, store: SqlStore) -> None:
    """Schema 12: a step still in its initial state has no row until a write
    changes it. Transitions made by a store that reads every record afresh (no
    cache: each write's steps are upserted on a record read from rows) give the
    same records, step for step, as the in-memory store, a loop's resets (a
    reset step keeps its row) included."""
    other = SqlStore(database, cache_size=0)  # another process each time
    try:
        runner = rfx.backend.InProcessRunner()
        on_sql = rfx.Workflow.from_dict(_LOOP, Backend(store=other, runner=runner))
        on_sql.run(worker=InProcessWorker(runner, _fib), timeout=60)
        in_memory = rfx.Workflow.from_dict(_LOOP, Backend(executor=_fib))
        in_memory.run(timeout=60)
        sql, memory = on_sql.record, in_memory.record
        assert sql.status is memory.status is WorkflowStatus.COMPLETE
        assert sql.outcome == memory.outcome == {"fib": 21}
        assert sql.steps["iterate"].run_id == memory.steps["iterate"].run_id == 6

        def shape(record: Any) -> dict[str, Any]:
            return {s.id: (s.status, s.run_id, s.attempts, s.output)
                    for s in record.steps.values()}
        assert shape(sql) == shape(memory)
        assert shape(store.load(sql.workflow_execution_id)) == shape(memory)
        with store.engine.connect() as conn:
            stored = set(conn.execute(select(steps.c.step_id).where(
                steps.c.workflow_execution_id == sql.workflow_execution_id)).scalars())
        assert stored == {"seed", "iterate", "report"}  # each was written when it first changed
    finally:
        other.close()


def test_a_new_execution_writes_rows_only_for_the_steps_it_claims(store: SqlStore) -> None:
    backend = Backend(store=store, runner=SqlRunner(engine=store.engine))
    wf_id = backend.start(fan_spec(50), {"n": 1})  # claims root, the 51 others wait
    with store.engine.connect() as conn:
        stored = list(conn.execute(select(steps.c.step_id).where(
            steps.c.workflow_execution_id == wf_id)).scalars())
    assert stored == ["root"]
    loaded = SqlStore(engine=store.engine, cache_size=0).load(wf_id)
    assert loaded.steps["root"].status is StepStatus.IN_PROGRESS
    assert [s.id for s in loaded.steps.values()][:3] == ["root", "leaf0", "leaf1"]
    assert loaded.steps["leaf7"] == StepRecord("leaf7") and loaded.steps["leaf7"].unmet == 1


def test_only_a_step_in_its_initial_state_is_left_without_a_row() -> None:
    from runfox.backend.sql.store import _initial

    assert _initial(StepRecord("a"))
    changed = {"status": StepStatus.COMPLETE, "run_id": 1, "attempts": 1, "output": {},
               "error": {}, "started_at": 1.0, "finished_at": 1.0, "not_before": 1.0,
               "inputs": {}, "cached": True, "items": 0, "child": "k"}
    # A field StepRecord gains must be added here (and to ``_initial``).
    assert {f.name for f in dataclasses.fields(StepRecord) if f.compare} - {"id"} == set(changed)
    for name, value in changed.items():
        assert not _initial(StepRecord("a").evolve(**{name: value})), name


def test_the_spec_of_a_record_is_decoded_once_per_text(store: SqlStore) -> None:
    first, second = new_record(fan_spec(3)), new_record(fan_spec(3))
    other = new_record(chain_spec(3))
    for record in (first, second, other):
        store.write(record)
    reader = SqlStore(engine=store.engine, cache_size=0)
    a, b, c = (reader.load_shared(r.workflow_execution_id) for r in (first, second, other))
    assert a.spec is b.spec and a.spec == first.spec  # one text, one decoded spec
    assert c.spec == other.spec and c.spec is not a.spec
    public = reader.load(first.workflow_execution_id)  # a copy: changing it changes nothing
    public.spec["steps"].clear()
    assert reader.load_shared(second.workflow_execution_id).spec == first.spec
    _corrupt(store.engine, workflows,
             workflows.c.workflow_execution_id == second.workflow_execution_id, spec="{broken")
    with pytest.raises(CorruptRecord, match="spec"):
        reader.load_shared(second.workflow_execution_id)


def test_corrupt_rows_name_their_key_and_listing_skips_them(
        store: SqlStore, caplog: pytest.LogCaptureFixture) -> None:
    good, bad_json, bad_status, bad_step = (new_record(fan_spec(1), created_at=t)
                                            for t in (1.0, 2.0, 3.0, 4.0))
    for record in (good, bad_json, bad_status, bad_step):
        store.write(record)
    engine = store.engine
    key = workflows.c.workflow_execution_id
    _corrupt(engine, workflows, key == bad_json.workflow_execution_id, state="{not json")
    _corrupt(engine, workflows, key == bad_status.workflow_execution_id, status="exploded")
    # A new execution's steps have no rows yet (schema 12): the broken one is added.
    with engine.connect() as conn, conn.begin():
        conn.execute(steps.insert().values(
            workflow_execution_id=bad_step.workflow_execution_id, step_id="leaf0",
            status="ready", run_id=0, version=1, data="[1, 2"))
    reader = SqlStore(store.engine.url.render_as_string(hide_password=False))
    try:
        for record, detail in ((bad_json, "state"), (bad_status, "exploded"),
                               (bad_step, "leaf0")):
            with pytest.raises(CorruptRecord) as caught:
                reader.load(record.workflow_execution_id)
            assert caught.value.key == record.workflow_execution_id
            assert detail in str(caught.value)
        assert reader.load(good.workflow_execution_id) == good
        with caplog.at_level(logging.WARNING, logger="runfox.backend.sql"):
            listed = [s.workflow_execution_id for s in reader.list_executions()]
        assert bad_status.workflow_execution_id not in listed
        assert good.workflow_execution_id in listed
        assert bad_status.workflow_execution_id in caplog.text
    finally:
        reader.close()


def test_the_schema_version_is_recorded(store: SqlStore, database: str) -> None:
    with store.engine.connect() as conn:
        assert conn.execute(select(func.max(schema_version.c.version))).scalar() == \
            SCHEMA_VERSION
    engine = create_engine(database)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(schema_version.insert().values(version=SCHEMA_VERSION + 1,
                                                        applied_at=time.time()))
        with pytest.raises(BackendError, match="newer than this runfox"):
            SqlStore(database)
        with engine.connect() as conn, conn.begin():
            conn.execute(schema_version.delete().where(
                schema_version.c.version == SCHEMA_VERSION + 1))
        SqlStore(database).close()
    finally:
        engine.dispose()


# -- the runner ---------------------------------------------------------------------------


def test_claims_by_many_runners_never_overlap(database: str, runner: SqlRunner) -> None:
    runner.dispatch("wf#1", [job("wf#1", f"s{i}") for i in range(120)])
    runners = [SqlRunner(database) for _ in range(4)]
    taken: list[list[str]] = [[] for _ in runners]

    def claim(i: int) -> None:
        while True:
            jobs = runners[i].take_pending_jobs(limit=3, lease=60)
            if not jobs:
                return
            taken[i].extend(j.key for j in jobs)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(runners))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for r in runners:
        r.close()
    every = [key for keys in taken for key in keys]
    assert len(every) == len(set(every)) == 120


def test_concurrent_gatherers_get_each_result_once(database: str, runner: SqlRunner) -> None:
    runner.dispatch("wf#1", [job("wf#1", f"s{i}") for i in range(60)])
    jobs = runner.take_pending_jobs()
    gatherers = [SqlRunner(database) for _ in range(3)]
    got: list[list[str]] = [[] for _ in gatherers]
    submitted = threading.Event()

    def gather(i: int) -> None:
        while True:
            done = submitted.is_set()
            got[i].extend(r.step_id for r in gatherers[i].gather("wf#1"))
            if done:
                got[i].extend(r.step_id for r in gatherers[i].gather("wf#1"))
                return

    threads = [threading.Thread(target=gather, args=(i,)) for i in range(len(gatherers))]
    for thread in threads:
        thread.start()
    for j in jobs:
        assert runner.submit_work_result(j.workflow_execution_id, j.step_id, {"v": 1},
                                         j.run_id)
    submitted.set()
    for thread in threads:
        thread.join()
    for g in gatherers:
        g.close()
    every = [step for steps_ in got for step in steps_]
    assert sorted(every) == sorted(f"s{i}" for i in range(60))


def test_a_heartbeat_fails_once_another_worker_holds_the_job(
        database: str, runner: SqlRunner) -> None:
    runner.dispatch("wf#1", [job("wf#1", "a")])
    (first,) = runner.take_pending_jobs(lease=0.5)
    other = SqlRunner(database)
    try:
        again: list[rfx.DispatchJob] = []
        deadline = time.monotonic() + 20
        while not again and time.monotonic() < deadline:
            time.sleep(0.1)
            again = other.take_pending_jobs(lease=60)
        assert [j.key for j in again] == [first.key]
        assert runner.heartbeat(first, 60) is False
        assert other.heartbeat(again[0], 60) is True
    finally:
        other.close()


def test_a_job_whose_lease_keeps_expiring_becomes_an_error_result(database: str) -> None:
    runner = SqlRunner(database, max_deliveries=2)
    wipe(runner.engine)
    try:
        runner.dispatch("wf#1", [job("wf#1", "a")])
        deliveries = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            deliveries += len(runner.take_pending_jobs(lease=0.2))
            results = runner.gather("wf#1")
            if results:
                break
            time.sleep(0.05)
        assert deliveries == 2
        (result,) = results
        assert result.output["ok"] is False
        assert result.output["error_type"] == "LeaseExpired"
        assert result.run_id == 0
    finally:
        runner.close()


def test_release_does_not_count_as_a_delivery(database: str) -> None:
    runner = SqlRunner(database, max_deliveries=1)
    wipe(runner.engine)
    try:
        runner.dispatch("wf#1", [job("wf#1", "a")])
        for _ in range(3):
            (held,) = runner.take_pending_jobs(lease=60)
            runner.release(held)
        assert [j.key for j in runner.take_pending_jobs(lease=60)] == [held.key]
    finally:
        runner.close()


def test_seed_submit_without_run_id_and_late_results(runner: SqlRunner) -> None:
    runner.dispatch("wf#1", [job("wf#1", "a", run_id=2)])
    # the seed's external worker lists (without taking) and submits without a run_id
    (pending,) = runner.list_pending_jobs()
    assert runner.submit_work_result("wf#1", pending.step_id, {"v": 1}) is True
    assert runner.submit_work_result("wf#1", pending.step_id, {"v": 2}) is False
    assert [(r.step_id, r.run_id, r.output) for r in runner.gather("wf#1")] == [
        ("a", 2, {"v": 1})]
    # a result for a job the runner no longer knows is kept, once, for the graph to judge
    assert runner.submit_work_result("wf#1", "a", {"v": 3}, 2) is True
    assert runner.submit_work_result("wf#1", "a", {"v": 4}, 2) is False
    assert runner.submit_work_result("wf#1", "b", {"v": 5}) is True
    assert sorted((r.step_id, r.run_id) for r in runner.gather("wf#1")) == [
        ("a", 2), ("b", None)]


def test_output_that_is_not_json_becomes_an_error_result(runner: SqlRunner) -> None:
    runner.dispatch("wf#1", [job("wf#1", "a")])
    (held,) = runner.take_pending_jobs()
    assert runner.submit_work_result("wf#1", "a", {"when": object()}, held.run_id)
    (result,) = runner.gather("wf#1")
    assert result.output["ok"] is False and result.output["error_type"] == "InvalidOutput"


def test_corrupt_task_rows_are_reported_and_skipped(
        runner: SqlRunner, caplog: pytest.LogCaptureFixture) -> None:
    runner.dispatch("wf#1", [job("wf#1", "a"), job("wf#1", "b")])
    _corrupt(runner.engine, tasks, tasks.c.step_id == "a", payload="{broken")
    with caplog.at_level(logging.WARNING, logger="runfox.backend.sql"):
        assert [j.step_id for j in runner.list_pending_jobs()] == ["b"]
        assert [j.step_id for j in runner.take_pending_jobs()] == ["b"]
    assert "wf#1#a#0" in caplog.text
    assert runner.take_pending_jobs() == []  # the corrupt row was removed, not retried
    runner.submit_work_result("wf#1", "b", {"v": 1}, 0)
    _corrupt(runner.engine, tasks, tasks.c.step_id == "b", result="nope")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="runfox.backend.sql"):
        assert runner.gather("wf#1") == []
    assert "wf#1#b#0" in caplog.text


# -- construction and errors ------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://runfox:s3cret-pw@127.0.0.1:1/nothing",
    "mysql+pymysql://runfox:s3cret-pw@127.0.0.1:1/nothing",
])
def test_an_unreachable_server_fails_at_construction(url: str) -> None:
    with pytest.raises(BackendError) as caught:
        SqlStore(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "runfox:***@127.0.0.1:1" in message
    assert "refused" in message.lower() or "can't connect" in message.lower()


def test_a_missing_directory_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        SqliteStore(tmp_path / "no" / "such" / "dir.db")


def test_contradictory_arguments_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = create_engine(url)
    try:
        with pytest.raises(ValueError, match="exactly one"):
            SqlStore(url, engine=engine)
        with pytest.raises(ValueError, match="exactly one"):
            SqlRunner()
        with pytest.raises(ValueError, match="engine_options"):
            SqlStore(engine=engine, engine_options={"pool_size": 3})
        with pytest.raises(ValueError, match="in-memory"):
            SqlStore("sqlite://")
        with pytest.raises(ValueError, match="only apply to SQLite"):
            SqlStore("postgresql+psycopg://u@127.0.0.1:1/x", busy_timeout=3)
        with pytest.raises(ValueError, match="lease"):
            SqlRunner(url, lease=0)
    finally:
        engine.dispose()


def test_tables_must_exist_when_runfox_may_not_create_them(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no runfox tables"):
        SqlStore(f"sqlite:///{tmp_path / 'empty.db'}", create_tables=False)


def test_an_existing_engine_is_used_and_not_disposed(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'shared.db'}")
    store, runner = SqlStore(engine=engine), SqlRunner(engine=engine)
    backend = Backend(store=store, runner=runner, executor=fan_executor, poll_interval=0.01)
    wf = rfx.Workflow.from_dict(fan_spec(3), backend, {"n": 1})
    assert wf.run(worker=InProcessWorker(runner, fan_executor), timeout=60).outcome == {
        "total": 3}
    store.close()
    runner.close()
    with engine.connect() as conn:  # still usable: runfox did not dispose it
        assert conn.execute(select(func.count()).select_from(workflows)).scalar() == 1
    engine.dispose()


@pytest.mark.parametrize(("module", "url", "hint"), [
    ("sqlalchemy", "sqlite:///x.db", "pip install 'runfox[sql]'"),
    ("psycopg", "postgresql://u@127.0.0.1:1/x", "pip install 'runfox[postgres]'"),
    ("pymysql", "mysql://u@127.0.0.1:1/x", "pip install 'runfox[mysql]'"),
])
def test_a_missing_driver_names_the_install(tmp_path: Path, module: str, url: str,
                                            hint: str) -> None:
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from runfox.backend import SqlStore\n"
            "from runfox.errors import BackendError\n"
            f"try:\n    SqlStore({url!r})\n"
            "except BackendError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert hint in out


# -- the seed's names ---------------------------------------------------------------------------


def _external_worker(db: Path, stop: threading.Event) -> None:
    """The seed's external worker: list pending jobs, run them, submit results."""
    runner = SqliteRunner(db)
    try:
        while not stop.is_set():
            for j in runner.take_pending_jobs():
                runner.submit_work_result(j.workflow_execution_id, j.step_id,
                                          fan_executor(j.fn, j.inputs), j.run_id)
            stop.wait(0.02)
    finally:
        runner.close()


def test_seed_sqlite_store_and_runner_share_a_file_and_poll(tmp_path: Path) -> None:
    db = tmp_path / "workflow.db"
    backend = Backend(store=SqliteStore(str(db)), runner=SqliteRunner(str(db)),
                      poll_interval=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=_external_worker, args=(db, stop))
    thread.start()
    try:
        wf = rfx.Workflow.from_dict(fan_spec(20), backend, inputs={"n": 3})
        result = wf.run(timeout=120)  # no worker: polls gather()
    finally:
        stop.set()
        thread.join()
    assert isinstance(result, rfx.Complete)
    assert result.outcome == {"total": 3 * sum(range(20))}
    backend.store.close()
    backend.runner.close()


def test_seed_polling_run_with_a_worker_process(tmp_path: Path) -> None:
    db = tmp_path / "workflow.db"
    backend = backend_from_url(f"sqlite:///{db}")
    backend.poll_interval = 0.02
    env_path = f"{ROOT / 'tests'}:{ROOT}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "runfox.cli", "worker", "--backend", f"sqlite:///{db}",
         "--executor", "contract:fan_executor", "--no-drive", "--poll-interval", "0.02"],
        env={**os.environ, "PYTHONPATH": env_path}, stderr=subprocess.PIPE)
    try:
        wf = rfx.Workflow.from_dict(fan_spec(10), backend, inputs={"n": 2})
        assert wf.run(timeout=120).outcome == {"total": 2 * sum(range(10))}
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err.decode()
    backend.store.close()
    backend.runner.close()


def test_a_duplicate_create_is_a_conflict_across_stores(database: str, store: SqlStore
                                                        ) -> None:
    record = new_record(fan_spec(2))
    store.write(record)
    other = SqlStore(database)
    try:
        with pytest.raises(ConflictError):
            other.write(record)
    finally:
        other.close()


def test_json_round_trip_is_exact(store: SqlStore) -> None:
    awkward = {"big": 2**62, "neg": -1.5e-300, "uni": "ünï \U0001f98a", "nested": {"": [None]},
               "quote": "'\"\\"}
    record = new_record(fan_spec(1), awkward)
    store.write(record)
    fresh = SqlStore(store.engine.url.render_as_string(hide_password=False), cache_size=0)
    try:
        assert json.dumps(fresh.load(record.workflow_execution_id).inputs,
                          sort_keys=True) == json.dumps(awkward, sort_keys=True)
    finally:
        fresh.close()


def test_another_runner_can_extend_or_release_a_running_lease(database: str,
                                                              runner: SqlRunner) -> None:
    runner.dispatch("wf#1", [job("wf#1", "a")])
    (held,) = runner.take_pending_jobs(lease=60)
    other = SqlRunner(database)  # e.g. a second process that never claimed it
    try:
        assert other.heartbeat(held, 60) is True  # the lease is running: extended
        other.release(held)
        assert [j.key for j in other.take_pending_jobs(lease=60)] == [held.key]
        assert runner.heartbeat(held, 60) is False  # the first claim is gone
        other.release(held)
        other.release(held)  # not held by anyone now: changes nothing
        (again,) = other.take_pending_jobs(lease=0.2)
        time.sleep(0.5)
        stranger = SqlRunner(database)
        try:
            assert stranger.heartbeat(again, 60) is False  # its lease ran out
        finally:
            stranger.close()
    finally:
        other.close()


def test_job_states_and_queue_depth(runner: SqlRunner) -> None:
    """`runfox status` reads where jobs are: queued, running until the lease end, acked."""
    jobs = [job("wf", "a"), job("wf", "b"), job("other", "c")]
    runner.dispatch("wf", jobs[:2])
    runner.dispatch("other", jobs[2:])
    assert runner.queue_depth() == 3
    states = runner.job_states("wf")
    assert {k: s.state for k, s in states.items()} == {"wf#a#0": "queued", "wf#b#0": "queued"}
    before = time.time()
    taken = runner.take_pending_jobs(limit=1, lease=30.0)
    assert runner.queue_depth() == 2
    held = runner.job_states(taken[0].workflow_execution_id)[taken[0].key]
    assert held.state == "running" and held.deliveries == 1
    assert held.lease_end is not None and before + 25 < held.lease_end < before + 40
    runner.ack(taken[0], {"ok": True})
    assert runner.job_states(taken[0].workflow_execution_id)[taken[0].key].state == "acked"
