"""The runfox tables, and creating or checking them on first use.

Four tables, named ``runfox_*`` so they can share a database with an application:

- ``runfox_schema``: one row per schema version applied. Later releases read
  the highest version and migrate from it; a database newer than this runfox is
  refused rather than misread.
- ``runfox_workflows``: one header row per execution. The spec and the inputs
  are written once, at creation; a transition rewrites only ``status``,
  ``version``, ``updated_at``, ``state`` and ``outcome``.
- ``runfox_steps``: one row per step of an execution. A transition rewrites
  only the steps it changed; ``version`` is the record version that last wrote
  the row, which lets a reader that has version *n* fetch only newer rows.
- ``runfox_tasks``: the job queue. One row per job ``(workflow_execution_id,
  step_id, run_id)``; a job is claimable while ``state = 'queued'`` and
  ``visible_at`` has passed. A claim moves ``visible_at`` to the end of the
  lease and stamps a random ``claim_token`` that heartbeats and releases must
  match; a result turns the row ``done``, and ``gather`` deletes it.

JSON is stored as text (``LONGTEXT`` on MySQL), ASCII-escaped so any server
character set holds it. Keys compare case-sensitively on MySQL (``utf8mb4_bin``)
because step ids do. ``backends/sql/*.sql`` holds the same tables as
hand-written DDL for teams that manage schemas themselves.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.engine import Connection

from .dialects import Dialect

__all__ = ["SCHEMA_VERSION", "metadata", "schema_version", "steps", "tasks", "workflows"]

#: The layout these tables have; bump it (and add a migration) when they change.
SCHEMA_VERSION = 1

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}

JsonText = Text().with_variant(LONGTEXT(), "mysql", "mariadb")
ExecutionKey = String(200)  # {md5}#{timestamp}-{16 hex}: about 75 characters
StepId = String(255)

metadata = MetaData()

schema_version = Table(
    "runfox_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", Double, nullable=False),
    **_MYSQL,
)

workflows = Table(
    "runfox_workflows", metadata,
    Column("workflow_execution_id", ExecutionKey, primary_key=True),
    Column("workflow_id", String(64), nullable=False),
    Column("execution_id", String(100), nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("spec", JsonText, nullable=False),
    Column("inputs", JsonText, nullable=False),
    Column("state", JsonText, nullable=False),
    Column("outcome", JsonText, nullable=False),
    Index("ix_runfox_workflows_created", "created_at"),
    Index("ix_runfox_workflows_status", "status", "created_at"),
    **_MYSQL,
)

steps = Table(
    "runfox_steps", metadata,
    Column("workflow_execution_id", ExecutionKey, primary_key=True),
    Column("step_id", StepId, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("run_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", JsonText, nullable=False),
    Index("ix_runfox_steps_version", "workflow_execution_id", "version"),
    **_MYSQL,
)

tasks = Table(
    "runfox_tasks", metadata,
    # A surrogate id keeps claims first-in first-out and their UPDATEs cheap.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("workflow_execution_id", ExecutionKey, nullable=False),
    Column("step_id", StepId, nullable=False),
    Column("run_id", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("visible_at", Double, nullable=True),
    Column("deliveries", Integer, nullable=False),
    Column("claim_token", BigInteger, nullable=True),
    Column("payload", JsonText, nullable=False),
    Column("result", JsonText, nullable=True),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("workflow_execution_id", "step_id", "run_id", name="uq_runfox_tasks_job"),
    Index("ix_runfox_tasks_claim", "state", "visible_at"),
    **_MYSQL,
)


class SchemaError(Exception):
    """The database holds no runfox schema, or one this release cannot use."""


def ensure_schema(conn: Connection, dialect: Dialect, create: bool) -> int:
    """Create missing tables (when ``create``) and check the schema version.

    Runs under the dialect's schema lock, so processes starting together do not
    race to create the same table. Returns the version found or created.

    Raises:
        SchemaError: the tables are missing and ``create`` is false, or the
            database was written by a newer runfox, or no migration path exists.
    """
    with dialect.schema_lock(conn):
        if create:
            metadata.create_all(conn, checkfirst=True)
        elif not conn.dialect.has_table(conn, schema_version.name):
            raise SchemaError("no runfox tables (runfox_schema is missing); create them "
                              "with backends/sql/*.sql or let runfox create them "
                              "(create_tables=True)")
        found = conn.execute(select(func.max(schema_version.c.version))).scalar()
        if found is None:
            if not create:
                raise SchemaError("runfox_schema has no version row")
            conn.execute(schema_version.insert().values(version=SCHEMA_VERSION,
                                                        applied_at=time.time()))
            return SCHEMA_VERSION
        if found > SCHEMA_VERSION:
            raise SchemaError(f"the database has runfox schema version {found}, newer than "
                              f"this runfox understands ({SCHEMA_VERSION}); upgrade runfox")
        if found < SCHEMA_VERSION:  # pragma: no cover - no older layout exists yet
            raise SchemaError(f"no migration from runfox schema {found} to {SCHEMA_VERSION}")
        return int(found)
