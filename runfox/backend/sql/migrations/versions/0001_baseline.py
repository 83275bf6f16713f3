"""Baseline: the four tables of every runfox release before migrations (schema 1).

The tables are written out here, frozen, rather than taken from ``schema.py``,
whose tables follow the newest revision. Each is created only if missing, so
this revision also completes a database whose creation was cut short (MySQL
commits DDL statement by statement), and is a no-op on a database that an
earlier runfox created: it only gains the version table.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from runfox.backend.sql.migrations import record_version

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}


def _tables() -> sa.MetaData:
    json_text = sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb")
    key = sa.String(200)
    step_id = sa.String(255)
    meta = sa.MetaData()
    sa.Table(
        "runfox_schema", meta,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("applied_at", sa.Double, nullable=False),
        **_MYSQL,
    )
    sa.Table(
        "runfox_workflows", meta,
        sa.Column("workflow_execution_id", key, primary_key=True),
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("execution_id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("spec", json_text, nullable=False),
        sa.Column("inputs", json_text, nullable=False),
        sa.Column("state", json_text, nullable=False),
        sa.Column("outcome", json_text, nullable=False),
        sa.Index("ix_runfox_workflows_created", "created_at"),
        sa.Index("ix_runfox_workflows_status", "status", "created_at"),
        **_MYSQL,
    )
    sa.Table(
        "runfox_steps", meta,
        sa.Column("workflow_execution_id", key, primary_key=True),
        sa.Column("step_id", step_id, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("data", json_text, nullable=False),
        sa.Index("ix_runfox_steps_version", "workflow_execution_id", "version"),
        **_MYSQL,
    )
    sa.Table(
        "runfox_tasks", meta,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("workflow_execution_id", key, nullable=False),
        sa.Column("step_id", step_id, nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("visible_at", sa.Double, nullable=True),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("claim_token", sa.BigInteger, nullable=True),
        sa.Column("payload", json_text, nullable=False),
        sa.Column("result", json_text, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.UniqueConstraint("workflow_execution_id", "step_id", "run_id",
                            name="uq_runfox_tasks_job"),
        sa.Index("ix_runfox_tasks_claim", "state", "visible_at"),
        **_MYSQL,
    )
    return meta


def upgrade() -> None:
    conn = op.get_bind()
    _tables().create_all(conn, checkfirst=True)
    record_version(conn, 1)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
