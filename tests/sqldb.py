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

from conftest import KINDS as KINDS  # re-exported: the SQL tests import it from here
from conftest import need_service
from sqlalchemy import create_engine, delete
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from runfox.backend.sql.schema import metadata, schema_version

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
