"""Idempotency keys and schedules: ``runfox_keys`` and ``runfox_schedules`` (schema 2).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from runfox.backend.sql.migrations import record_version

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}


def _tables() -> sa.MetaData:
    json_text = sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb")
    meta = sa.MetaData()
    sa.Table(
        "runfox_keys", meta,
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("workflow_execution_id", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        **_MYSQL,
    )
    sa.Table(
        "runfox_schedules", meta,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("due_at", sa.Double, nullable=True),
        sa.Column("spec", json_text, nullable=False),
        sa.Column("data", json_text, nullable=False),
        sa.Index("ix_runfox_schedules_due", "due_at"),
        **_MYSQL,
    )
    return meta


def upgrade() -> None:
    conn = op.get_bind()
    _tables().create_all(conn, checkfirst=True)  # completes a creation cut short (MySQL)
    record_version(conn, 2)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
