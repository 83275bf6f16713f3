"""Schema migrations: a database made by the previous release is refused, upgraded by
``runfox db upgrade`` in place, and runs workflows; fresh databases start at the head;
newer ones are refused; concurrent creators and upgraders do not collide."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from contract import fan_executor, fan_spec
from sqlalchemy import create_engine, text
from sqldb import KINDS, scratch_database
from test_sql_ddl import describe, run_ddl

import runfox as rfx
from runfox.backend import Backend, InProcessWorker
from runfox.backend.sql import SqlStore, parts_from_url
from runfox.backend.sql.database import Database
from runfox.backend.sql.migrations import SCRIPT_DIR, VERSION_TABLE, script_heads
from runfox.backend.sql.schema import HEAD_REVISION, SCHEMA_VERSION, metadata
from runfox.cli import main
from runfox.errors import BackendError

PREVIOUS_DDL = Path(__file__).resolve().parent / "data" / "previous_ddl"


def execute(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def run_fan(url: str) -> None:
    store, runner = parts_from_url(url, create_tables=False)
    try:
        backend = Backend(store=store, runner=runner, poll_interval=0.01)
        wf = rfx.Workflow.from_dict(fan_spec(3), backend, {"n": 2})
        result = wf.run(worker=InProcessWorker(runner, fan_executor), timeout=60)
        assert result.outcome == {"total": 2 * sum(range(3))}
    finally:
        runner.close()
        store.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_database_from_the_previous_release_is_refused_then_upgraded_and_runs(
        kind: str, tmp_path: Path, capsys: Any) -> None:
    with scratch_database(kind, tmp_path) as old, scratch_database(kind, tmp_path) as fresh:
        run_ddl(kind, old, PREVIOUS_DDL)
        # A row the previous release wrote (its layout: see the DDL).
        spec = '{"name": "kept", "steps": [{"id": "a", "fn": "f"}]}'
        execute(old, "INSERT INTO runfox_workflows VALUES ('w#e', 'w', 'e', 'kept', "
                     f"'pending', 1, 1.0, 2.0, '{spec}', '{{}}', '{{}}', 'null')")

        # Any command, the worker included, refuses and names the command to run.
        code = main(["worker", "--backend", old, "--executor", "cli_executor:execute",
                     "--max-jobs", "1"])
        err = capsys.readouterr().err
        assert code == 4, err
        assert "runfox db upgrade --backend" in err and "no migration record" in err
        with pytest.raises(BackendError, match="runfox db upgrade"):
            parts_from_url(old)  # create_tables=True does not upgrade behind your back

        assert main(["db", "current", "--backend", old]) == 0
        assert "runfox db upgrade" in capsys.readouterr().out
        assert main(["db", "upgrade", "--backend", old]) == 0
        out = capsys.readouterr().out
        assert "upgraded from schema 1 (no migration record" in out
        assert f"to schema {SCHEMA_VERSION} (revision {HEAD_REVISION})" in out
        assert main(["db", "upgrade", "--backend", old]) == 0
        assert "already at" in capsys.readouterr().out

        SqlStore(fresh).close()
        assert describe(old) == describe(fresh)
        run_fan(old)
        store = SqlStore(old, create_tables=False)
        try:
            assert store.load("w#e").spec["name"] == "kept"
        finally:
            store.close()


def test_a_fresh_database_is_created_at_the_head(tmp_path: Path, capsys: Any) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    SqlStore(url).close()
    assert main(["db", "current", "--backend", url]) == 0
    assert capsys.readouterr().out.strip().endswith(
        f"schema {SCHEMA_VERSION} (revision {HEAD_REVISION}): current")


def test_db_upgrade_creates_an_empty_database(tmp_path: Path, capsys: Any) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["db", "upgrade", "--backend", url]) == 0
    assert "upgraded from no runfox tables to schema" in capsys.readouterr().out
    run_fan(url)


def test_create_tables_false_on_an_empty_database_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="runfox db upgrade --backend sqlite:///"):
        SqlStore(f"sqlite:///{tmp_path / 'none.db'}", create_tables=False)


@pytest.mark.parametrize("newer", [
    f"UPDATE {VERSION_TABLE} SET version_num = '9999'",
    f"DROP TABLE {VERSION_TABLE}; INSERT INTO runfox_schema VALUES (99, 0)",
])
def test_a_newer_schema_is_refused(newer: str, tmp_path: Path, capsys: Any) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    SqlStore(url).close()
    for statement in newer.split(";"):
        execute(url, statement)
    with pytest.raises(BackendError, match="newer runfox"):
        SqlStore(url)
    assert main(["list", "--backend", url]) == 4
    assert "install that release" in capsys.readouterr().err
    assert main(["db", "upgrade", "--backend", url]) == 4
    assert "newer than this runfox" in capsys.readouterr().err


def test_a_creation_cut_short_is_completed(tmp_path: Path) -> None:
    """MySQL commits DDL as it goes: a creator that died halfway left some tables."""
    url = f"sqlite:///{tmp_path / 'half.db'}"
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    execute(url, "runfox_schema".join(
        ("CREATE TABLE ", " (version INTEGER NOT NULL, applied_at DOUBLE NOT NULL, "
                          "PRIMARY KEY (version))")))
    SqlStore(url).close()
    SqlStore(fresh).close()
    assert describe(url) == describe(fresh)


def test_db_needs_a_sql_backend(capsys: Any) -> None:
    assert main(["db", "upgrade", "--backend", "memory://"]) == 2
    assert "SQL backends" in capsys.readouterr().err


def _chain_versions() -> list[int]:
    """The schema versions of the revisions, head first (revision NNNN makes NNNN)."""
    from alembic.script import ScriptDirectory

    found = [int(s.revision) for s in ScriptDirectory(str(SCRIPT_DIR)).walk_revisions()]
    assert found == sorted(found, reverse=True) and found[0] == SCHEMA_VERSION
    return found


def test_the_revisions_are_one_chain_ending_at_schema_version() -> None:
    """Revision NNNN makes schema NNNN; the head is SCHEMA_VERSION's."""
    from alembic.script import ScriptDirectory

    assert script_heads() == (HEAD_REVISION,)
    chain = [s.revision for s in ScriptDirectory(str(SCRIPT_DIR)).walk_revisions()]
    # Numbers may skip while branches of one round are merged (0003 -> 0006); they
    # only ever grow along the chain, which starts at 0001.
    assert chain == [f"{v:04d}" for v in _chain_versions()]
    assert chain[0] == HEAD_REVISION and chain[-1] == "0001"


@pytest.mark.parametrize("kind", KINDS)
def test_the_migrations_build_the_tables_schema_py_describes(kind: str, tmp_path: Path) -> None:
    with scratch_database(kind, tmp_path) as migrated, \
            scratch_database(kind, tmp_path) as declared:
        SqlStore(migrated).close()
        engine = create_engine(declared)
        try:
            metadata.create_all(engine)
        finally:
            engine.dispose()
        tables = describe(migrated)
        del tables[VERSION_TABLE]
        assert tables == describe(declared)


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_creators_and_upgraders_do_not_collide(kind: str, tmp_path: Path) -> None:
    with scratch_database(kind, tmp_path) as fresh, scratch_database(kind, tmp_path) as old:
        run_ddl(kind, old, PREVIOUS_DDL)
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def create() -> None:
            try:
                start.wait()
                Database.open(fresh).release()
            except BaseException as exc:
                errors.append(exc)

        def upgrade() -> None:
            try:
                start.wait()
                db = Database.open(old, check_schema=False)
                try:
                    db.upgrade_schema()
                finally:
                    db.release()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=f) for f in (create, upgrade) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert describe(fresh) == describe(old)
        for url in (fresh, old):
            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")
                                        ).scalars().all() == [HEAD_REVISION]
                    assert conn.execute(text("SELECT version FROM runfox_schema ORDER BY 1")
                                        ).scalars().all() == sorted(_chain_versions())
            finally:
                engine.dispose()
