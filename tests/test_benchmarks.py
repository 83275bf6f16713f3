"""The benchmarks' own machinery: what they count and generate must be right.

Only the fast parts run here (SQLite, a few rows): the SQL counter, the raw
floor, and the open executions bench_scale.py writes straight into the tables,
which must load as ordinary running records with nothing due.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

bench_sql = pytest.importorskip("bench_sql")
bench_scale = pytest.importorskip("bench_scale")

from sqlalchemy import select  # noqa: E402

from runfox.backend import Backend  # noqa: E402
from runfox.backend.sql import parts_from_url  # noqa: E402
from runfox.backend.sql.schema import workflows  # noqa: E402
from runfox.status import StepStatus, WorkflowStatus  # noqa: E402


def test_statement_counter_counts_statements_and_transactions(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'count.db'}")
    counter = bench_sql.StatementCounter(engine)
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        conn.commit()
        conn.execute(text("SELECT x FROM t")).all()
        conn.rollback()
    counter.close()
    with engine.connect() as conn:  # not counted any more
        conn.execute(text("SELECT 1"))
    assert (counter.statements, counter.commits, counter.rollbacks) == (3, 1, 1)
    assert counter.by_verb() == {"CREATE": 1, "INSERT": 1, "SELECT": 1}
    engine.dispose()


def test_the_sqlite_floor_commits_transactions_of_a_transition_shape() -> None:
    # The floor process asserts that each header update hit its row; a wrong
    # shape ends it with a non-zero exit, which floor() raises on.
    rate = bench_sql.floor("sqlite", "", 2, 200)
    assert rate > 0


def test_generated_open_executions_load_as_running_records_with_nothing_due(
        tmp_path: Path) -> None:
    shapes = bench_scale.templates()
    store, runner = parts_from_url(f"sqlite:///{tmp_path / 'scale.db'}")
    try:
        backend = Backend(store=store, runner=runner)
        bench_scale.add_open(store.engine, shapes, 0, 6)
        with store.engine.connect() as conn:
            keys = [row[0] for row in conn.execute(select(workflows.c.workflow_execution_id))]
        assert len(set(keys)) == 6
        statuses = []
        for key in keys:
            record = backend.load(key)
            assert record.status is WorkflowStatus.IN_PROGRESS, key
            assert not record.defects, (key, record.defects)
            statuses.append(record.steps["a"].status)
        assert statuses.count(StepStatus.IN_PROGRESS) == 3
        assert statuses.count(StepStatus.RETRY) == 3
        assert runner.take_pending_jobs() == []  # in flight for a day: nothing to claim
    finally:
        runner.close()
        store.close()


def test_the_page_count_names_the_tables_a_step_writes(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    bench_profile = pytest.importorskip("bench_profile")
    bench_profile.pages(20, 10)
    out = capsys.readouterr().out
    assert "100 chain steps" in out
    commits = float(out.split(" commits")[0].rsplit(" ", 1)[1])
    assert 1.0 <= commits <= 1.05  # one per step (and a claim when the worker starts)
    rows = [line.split() for line in out.splitlines()[1:]]
    owners = {name for _, name in rows}
    # every step writes its header, its step rows, its history and its jobs
    assert {"runfox_workflows", "runfox_steps", "runfox_history", "runfox_tasks"} <= owners
    per_step = float(out.split(":")[1].split()[0])
    assert per_step == pytest.approx(sum(float(count) for count, _ in rows), abs=0.05)
