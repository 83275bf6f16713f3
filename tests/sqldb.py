"""Scratch databases for the SQL tests: created per use, dropped afterwards.

``scratch_database(kind, directory)`` yields a URL to a new, empty database:
a file under ``directory`` for SQLite, or ``runfox_test_<random>`` on the
PostgreSQL / MariaDB servers (``$RUNFOX_TEST_POSTGRES`` / ``$RUNFOX_TEST_MYSQL``
override where they are). An unreachable server skips the test through
``need_service`` (or fails it when ``RUNFOX_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import KINDS as KINDS  # re-exported: the SQL tests import it from here
from conftest import need_service
from sqlalchemy import create_engine, delete
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from runfox.backend.sql.schema import metadata, schema_version
from runfox.records import WorkflowRecord

ADMIN_URLS = {
    "postgresql": os.environ.get("RUNFOX_TEST_POSTGRES",
                                 "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("RUNFOX_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def _admin_engine(kind: str) -> Engine:
    engine = create_engine(ADMIN_URLS[kind], isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        need_service(kind, f"{ADMIN_URLS[kind]} is unreachable: {exc.orig}")
    return engine


@contextlib.contextmanager
def scratch_database(kind: str, directory: Path) -> Iterator[str]:
    """A URL for a fresh empty database of ``kind``; dropped when the block ends."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / f'runfox-{secrets.token_hex(4)}.db'}"
        return
    admin = _admin_engine(kind)
    name = f"runfox_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield make_url(ADMIN_URLS[kind]).set(database=name).render_as_string(
                hide_password=False)
        finally:
            with admin.connect() as conn:
                if kind == "postgresql":
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                else:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    finally:
        admin.dispose()


def wipe(engine: Engine) -> None:
    """Delete every row of the runfox tables except the schema version."""
    with engine.connect() as conn, conn.begin():
        for table in reversed(metadata.sorted_tables):
            if table is not schema_version:
                conn.execute(delete(table))


def write_old_output_record(path: Path, output: dict[str, Any]) -> WorkflowRecord:
    """An execution in the SQLite file ``path`` (offloading over 1,000 bytes) whose
    root step finished with ``output``, stored as schema 10 and before stored it:
    the whole output as one blob, not per key. Returns its first record."""
    from runfox import payloads
    from runfox.backend.sql import SqlStore
    from runfox.graph import advance, on_step_result
    from runfox.testing import bump, fan_spec, new_record

    store = SqlStore(f"sqlite:///{path}", offload=1000)
    offloader = store.payloads()
    assert offloader is not None
    v1 = new_record(fan_spec(2), {"n": 1})
    store.write(v1)
    v2 = bump(advance(v1, 10.0)[0], v1)
    store.write(v2, previous=v1)
    v3 = bump(on_step_result(v2, "root", output, 0, 11.0)[0], v2)
    offloader.pack_record = lambda record, previous: payloads.pack_record(  # type: ignore[method-assign]
        record, previous, offloader.pack)  # the old rule: every output whole
    store.write(v3, previous=v2)
    store.close()
    return v1
