"""The hot path of a driven step on SQL (issue 13 item 3: less Python per step).

- ``HotStatement`` runs a statement on the driver's connection on SQLite (and
  through Core elsewhere): same rows, same row counts, and a driver error still
  reaches ``Database.run`` as SQLAlchemy's (a duplicate key is ``DuplicateRow``);
- a joint unit writes from the store's cached record without reading it first:
  when another process moved the execution on, the write conflicts, the unit is
  rolled back and run again from a fresh load, and the result is applied once.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import bindparam, event, select, update

from runfox.backend import Backend
from runfox.backend.sql import SqlRunner, SqlStore
from runfox.backend.sql.database import DuplicateRow, HotStatement
from runfox.backend.sql.schema import keys, tasks
from runfox.results import Dispatch
from runfox.status import WorkflowStatus
from runfox.testing import bump, chain_spec


@pytest.fixture
def parts(sql_parts: tuple[SqlStore, SqlRunner]) -> tuple[SqlStore, SqlRunner]:
    return sql_parts  # a store and a runner on each SQL database (conftest)


def test_a_hot_statement_inserts_updates_and_reports_duplicates(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    store, _ = parts
    db = store._db
    insert = HotStatement(db, keys.insert())
    rename = HotStatement(db, update(keys).where(keys.c.idempotency_key == bindparam("key"))
                          .values(workflow_execution_id=bindparam("wf")))
    rows = [{"idempotency_key": f"k{i}", "workflow_execution_id": f"wf{i}",
             "created_at": 1.5 + i} for i in range(3)]
    db.run(lambda conn: insert.execute(conn, rows))
    assert db.run(lambda conn: rename.execute(conn, {"key": "k1", "wf": "moved"})) == 1
    assert db.run(lambda conn: rename.execute(conn, {"key": "nope", "wf": "x"})) == 0
    with pytest.raises(DuplicateRow):
        db.run(lambda conn: insert.execute(conn, rows[0]), duplicate_ok=True)
    with store.engine.connect() as conn:
        found = conn.execute(select(keys.c.idempotency_key, keys.c.workflow_execution_id,
                                    keys.c.created_at).order_by(keys.c.idempotency_key)).all()
    assert [tuple(r) for r in found] == [("k0", "wf0", 1.5), ("k1", "moved", 2.5),
                                         ("k2", "wf2", 3.5)]


def test_a_hot_statement_falls_back_to_core_without_the_internals_it_reads(
        parts: tuple[SqlStore, SqlRunner], monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLAlchemy release that moved an internal the direct path reads gets Core's
    path: the same rows, no AttributeError."""
    def moved(self: HotStatement, names: tuple[str, ...]) -> Any:
        raise AttributeError("'SQLCompiler' object has no attribute 'positiontup'")

    monkeypatch.setattr(HotStatement, "_compile_direct", moved)
    store, _ = parts
    db = store._db
    insert = HotStatement(db, keys.insert())
    db.run(lambda conn: insert.execute(conn, {"idempotency_key": "k", "created_at": 1.0,
                                              "workflow_execution_id": "wf"}))
    if store.engine.dialect.name == "sqlite":  # elsewhere Core runs it anyway
        assert list(insert._compiled.values()) == [None]  # tried, and fell back
    with store.engine.connect() as conn:
        assert conn.execute(select(keys.c.workflow_execution_id)).scalars().all() == ["wf"]


def test_a_stale_cached_record_conflicts_and_the_unit_reloads(
        parts: tuple[SqlStore, SqlRunner]) -> None:
    store, runner = parts
    mine = Backend(store=store, runner=runner)
    other_store = SqlStore(engine=store.engine)
    other_runner = SqlRunner(engine=store.engine)
    rollbacks: list[Any] = []
    listener = lambda conn: rollbacks.append(conn)  # noqa: E731
    try:
        theirs = Backend(store=other_store, runner=other_runner)
        wf_id = mine.create(chain_spec(3), {"x": 0})
        _, first = mine.apply_and_advance(wf_id)  # my store caches this version
        assert isinstance(first, Dispatch)
        cached = store.cached_record(wf_id)
        assert cached is not None
        # Another process applies s0: my cached record is now one version behind.
        job = runner.take_pending_jobs(1)[0]
        theirs.apply_and_advance(wf_id, [("s0", {"x": 1}, 0)], ack=job)
        assert other_store.load_shared(wf_id).version == cached.version + 1
        assert store.cached_record(wf_id) is cached
        # Its cached record does not run s1: applying s1 to it changes nothing,
        # which is only believed after a fresh load (in the same unit).
        job = runner.take_pending_jobs(1)[0]
        assert job.step_id == "s1"
        _, nxt = mine.apply_and_advance(wf_id, [("s1", {"x": 2}, 0)], ack=job)
        assert isinstance(nxt, Dispatch) and [j.step_id for j in nxt.jobs] == ["s2"]
        cached = store.cached_record(wf_id)
        assert cached is not None and cached.version == 4
        # Now a change that my cached record would not contradict: the other
        # store writes a state key. Applying s2 from the cache writes, conflicts,
        # and runs again from a fresh load, keeping their key.
        seen = other_store.load_shared(wf_id)
        other_store.write_shared(bump(seen.evolve(state={**seen.state, "a": 1}), seen),
                                 previous=seen)
        job = runner.take_pending_jobs(1)[0]
        event.listen(store.engine, "rollback", listener)
        try:
            mine.apply_and_advance(wf_id, [("s2", {"x": 3}, 0)], ack=job)
        finally:
            event.remove(store.engine, "rollback", listener)
        # The stale write lost. On SQLite it is written again inside the same
        # unit, from the rows written since (the unit holds the write lock); on
        # the servers the unit is rolled back and runs again.
        assert bool(rollbacks) is (not store.reloads_in_unit)
        record = store.load(wf_id)
        assert record.version == 6 and record.state.get("a") == 1
        assert [record.steps[s].output for s in ("s0", "s1", "s2")] == [
            {"x": 1}, {"x": 2}, {"x": 3}]
        assert record.status is WorkflowStatus.COMPLETE
        with store.engine.connect() as conn:
            states = conn.execute(select(tasks.c.step_id, tasks.c.state)
                                  .order_by(tasks.c.step_id)).all()
        assert [tuple(s) for s in states] == [("s0", "acked"), ("s1", "acked"),
                                              ("s2", "acked")]
    finally:
        other_runner.close()
        other_store.close()
