"""Execution history: the ``runfox_history`` table (schema 4).

One row per event, keyed by ``(workflow_execution_id, version, idx)``; see
``runfox.backend.sql.schema`` and ``runfox.history``. Written out here, frozen,
like the baseline. Created only if missing, so a creation cut short (MySQL
commits DDL statement by statement) completes when run again. Executions that
ran before this revision have no stored events; their history is the
``created`` event alone.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from runfox.backend.sql.migrations import record_version

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}


def _tables() -> sa.MetaData:
    json_text = sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb")
    meta = sa.MetaData()
    sa.Table(
        "runfox_history", meta,
        sa.Column("workflow_execution_id", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("step_id", sa.String(255), nullable=True),
        sa.Column("run_id", sa.Integer, nullable=True),
        sa.Column("data", json_text, nullable=False),
        **_MYSQL,
    )
    return meta


def upgrade() -> None:
    conn = op.get_bind()
    _tables().create_all(conn, checkfirst=True)
    record_version(conn, 4)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
