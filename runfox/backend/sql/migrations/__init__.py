"""runfox's schema migrations: Alembic revisions shipped inside the package.

Users never see Alembic's configuration: ``upgrade`` builds the ``Config`` in
code, points it at this directory and hands Alembic the caller's connection, so
the migration runs inside runfox's own transaction and schema lock (see
``schema.upgrade_schema``). Alembic records the revision in its own table,
``runfox_alembic_version``, named so it cannot collide with an application's
``alembic_version`` in a shared database.

Revision ``NNNN`` brings the tables to schema version ``NNNN`` (``0001`` is the
baseline: the tables of every runfox before migrations) and adds that version's
row to ``runfox_schema``, the table older runfox releases read to refuse a
database newer than they know. Adding a revision:

1. write ``versions/NNNN_<what>.py`` with ``down_revision`` the previous head;
   use ``op`` (Alembic operations), never ``schema.metadata`` (it moves on);
   end with ``record_version(NNNN)``;
2. change ``schema.py``'s tables to match and set ``SCHEMA_VERSION = NNNN``;
3. update ``backends/sql/*.sql`` (tests/test_sql_ddl.py and
   tests/test_migrations.py check all three agree).

Alembic is imported only when a migration runs: opening a database that is
already at the head needs SQLAlchemy alone.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import Column, Double, Integer, MetaData, Table, select
from sqlalchemy.engine import Connection

__all__ = ["SCRIPT_DIR", "VERSION_TABLE", "record_version", "revision_name", "upgrade"]

#: Where the revisions live (``env.py`` and ``versions/``).
SCRIPT_DIR = Path(__file__).resolve().parent

#: Alembic's version table, under a runfox name.
VERSION_TABLE = "runfox_alembic_version"

# Alembic's ``context`` and ``op`` are module-level proxies: one migration at a time
# per process. Taken after the database's schema lock and released before it, so
# it adds no lock-order cycle.
_ONE_AT_A_TIME = threading.Lock()

# runfox_schema as every revision sees it (it never changes shape).
_versions = Table(
    "runfox_schema", MetaData(),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", Double, nullable=False),
)


def revision_name(version: int) -> str:
    """The Alembic revision id that brings the tables to schema ``version``."""
    return f"{version:04d}"


def record_version(conn: Connection, version: int) -> None:
    """Add ``version``'s row to ``runfox_schema`` unless it is there already."""
    present = conn.execute(select(_versions.c.version)
                           .where(_versions.c.version == version)).first()
    if present is None:
        conn.execute(_versions.insert().values(version=version, applied_at=time.time()))


def upgrade(conn: Connection, target: str = "head") -> None:
    """Run the revisions after the database's current one up to ``target``.

    ``conn`` must be inside a transaction: Alembic then leaves committing to the
    caller. Raises ``ModuleNotFoundError`` (name ``alembic``) without Alembic.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_DIR).replace("%", "%%"))
    config.attributes["connection"] = conn
    with _ONE_AT_A_TIME:
        command.upgrade(config, target)


def script_heads() -> tuple[str, ...]:
    """The head revision(s) of the scripts (one; tests check)."""
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory(str(SCRIPT_DIR)).get_heads())
