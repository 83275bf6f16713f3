"""Concurrency slots: the ``runfox_slots`` table (schema 3).

One row per ``(slot_key, slot_no)``; see ``runfox.backend.sql.schema``. Written
out here, frozen, like the baseline. Created only if missing, so a creation cut
short (MySQL commits DDL statement by statement) completes when run again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from runfox.backend.sql.migrations import record_version

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}


def _tables() -> sa.MetaData:
    meta = sa.MetaData()
    sa.Table(
        "runfox_slots", meta,
        sa.Column("slot_key", sa.String(255), primary_key=True),
        sa.Column("slot_no", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("workflow_execution_id", sa.String(200), nullable=True),
        sa.Column("step_id", sa.String(255), nullable=True),
        sa.Column("run_id", sa.Integer, nullable=True),
        sa.Column("claim_token", sa.BigInteger, nullable=True),
        sa.Column("lease_end", sa.Double, nullable=True),
        sa.Index("ix_runfox_slots_holder", "workflow_execution_id", "step_id", "run_id"),
        **_MYSQL,
    )
    return meta


def upgrade() -> None:
    conn = op.get_bind()
    _tables().create_all(conn, checkfirst=True)
    record_version(conn, 3)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
