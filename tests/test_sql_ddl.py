"""The hand-written DDL in backends/sql/ matches what runfox creates, and runfox
runs on a schema created from it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from contract import fan_executor, fan_spec
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqldb import KINDS, scratch_database

import runfox as rfx
from runfox.backend import Backend, InProcessWorker
from runfox.backend.sql import SqlStore, parts_from_url

DDL = Path(__file__).resolve().parent.parent / "backends" / "sql"
FILES = {"sqlite": "sqlite.sql", "postgresql": "postgresql.sql", "mysql": "mysql.sql"}


def run_ddl(kind: str, url: str, directory: Path = DDL) -> None:
    """Run ``directory``'s DDL file for ``kind`` on the empty database at ``url``."""
    script = (directory / FILES[kind]).read_text(encoding="utf-8")
    if kind == "sqlite":
        conn = sqlite3.connect(make_url(url).database)
        try:
            conn.executescript(script)
        finally:
            conn.close()
        return
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    statements = [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def describe(url: str) -> dict[str, Any]:
    """Tables, columns (type, nullability), keys and indexes, as the database reports them."""
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        tables = {}
        for name in sorted(insp.get_table_names()):
            tables[name] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"])
                            for c in insp.get_columns(name)],
                "primary_key": insp.get_pk_constraint(name)["constrained_columns"],
                "unique": sorted((u["name"], tuple(u["column_names"]))
                                 for u in insp.get_unique_constraints(name)),
                "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                  for i in insp.get_indexes(name)
                                  if not i["name"].startswith("uq_")),
            }
        return tables
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_the_ddl_matches_the_library_and_works(kind: str, tmp_path: Path) -> None:
    with scratch_database(kind, tmp_path) as by_library, \
            scratch_database(kind, tmp_path) as by_hand:
        SqlStore(by_library).close()
        run_ddl(kind, by_hand)
        assert describe(by_hand) == describe(by_library)
        assert set(describe(by_hand)) == {"runfox_schema", "runfox_steps", "runfox_tasks",
                                          "runfox_workflows", "runfox_alembic_version",
                                          "runfox_keys", "runfox_schedules", "runfox_slots",
                                          "runfox_history", "runfox_workers", "runfox_state",
                                          "runfox_cache", "runfox_payloads"}
        store, runner = parts_from_url(by_hand, create_tables=False)
        try:
            backend = Backend(store=store, runner=runner, poll_interval=0.01)
            wf = rfx.Workflow.from_dict(fan_spec(5), backend, {"n": 2})
            result = wf.run(worker=InProcessWorker(runner, fan_executor), timeout=60)
            assert result.outcome == {"total": 2 * sum(range(5))}
        finally:
            runner.close()
            store.close()
